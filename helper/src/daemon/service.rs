//! The `org.doppel.Helper1` interface. Each method: note activity, find the caller's uid from
//! the bus's credentials, ask polkit for the method's own action with the caller's bus name as
//! subject, validate, then act for that uid only. Errors map to D-Bus errors here, in one place.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use zbus::message::Header;
use zbus::{fdo, interface};

use super::config::Limits;
use super::polkit::{self, Verdict};
use super::volume::{self, Caller, VolError};
use doppel_helper::wire::{action_for, VolumeInfo};

/// The D-Bus errors of the helper: bad arguments, not authorised, and failures kept apart.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.doppel.Helper1.Error")]
pub enum HelperError {
    #[zbus(error)]
    ZBus(zbus::Error),
    InvalidArgument(String),
    NotAuthorized(String),
    NotFound(String),
    Exists(String),
    Busy(String),
    LimitExceeded(String),
    WrongKey(String),
    Failed(String),
}

impl From<VolError> for HelperError {
    fn from(e: VolError) -> Self {
        match e {
            VolError::InvalidArgument(m) => HelperError::InvalidArgument(m),
            VolError::NotFound(m) => HelperError::NotFound(m),
            VolError::Exists(m) => HelperError::Exists(m),
            VolError::Busy(m) => HelperError::Busy(m),
            VolError::LimitExceeded(m) => HelperError::LimitExceeded(m),
            VolError::WrongKey(m) => HelperError::WrongKey(m),
            VolError::Failed(m) => HelperError::Failed(m),
        }
    }
}

/// Activity bookkeeping for the idle exit.
#[derive(Default)]
pub struct Activity {
    last: AtomicU64,
    running: AtomicUsize,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Activity {
    /// Starts the idle clock now.
    pub fn new() -> Self {
        let a = Activity::default();
        a.last.store(now(), Ordering::SeqCst);
        a
    }

    /// Seconds since the last call ended, or 0 while one runs.
    pub fn idle_secs(&self) -> u64 {
        if self.running.load(Ordering::SeqCst) > 0 {
            return 0;
        }
        now().saturating_sub(self.last.load(Ordering::SeqCst))
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.running.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last.store(now(), Ordering::SeqCst);
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The object served at `/org/doppel/Helper1`.
pub struct Helper {
    pub limits: Limits,
    pub activity: Arc<Activity>,
}

impl Helper {
    /// Authorises `method` for the sender of `hdr`; returns the caller.
    async fn authorize(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        method: &str,
    ) -> Result<Caller, HelperError> {
        let sender = hdr
            .sender()
            .ok_or_else(|| HelperError::NotAuthorized("the call has no sender".into()))?
            .to_string();
        // Deny by default: a method without its own action is not callable.
        let action = action_for(method)
            .ok_or_else(|| HelperError::NotAuthorized(format!("{method} has no polkit action")))?;
        let dbus = fdo::DBusProxy::new(conn).await.map_err(HelperError::ZBus)?;
        let name = zbus::names::BusName::try_from(sender.as_str())
            .map_err(|e| HelperError::InvalidArgument(e.to_string()))?;
        let uid = dbus
            .get_connection_unix_user(name.clone())
            .await
            .map_err(|e| HelperError::Failed(format!("cannot identify the caller: {e}")))?;
        let pid_gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw())
            .ok_or_else(|| {
                HelperError::Failed(format!("uid {uid} is not in the passwd database"))
            })?;
        match polkit::check(conn, &sender, action).await {
            Verdict::Yes => Ok(Caller { uid, gid: pid_gid }),
            Verdict::No => Err(HelperError::NotAuthorized(format!(
                "not authorized to {} (polkit action {action}); ask your administrator, or run \
                 Doppel from an active desktop session",
                describe(method)
            ))),
            Verdict::Unavailable(e) if e.contains("not registered") => {
                Err(HelperError::NotAuthorized(format!(
                    "polkit does not know the action {action}: install Doppel's polkit policy \
                     (org.doppel.policy in /usr/share/polkit-1/actions/) ({e})"
                )))
            }
            Verdict::Unavailable(e) => Err(HelperError::NotAuthorized(format!(
                "polkit could not be asked ({e}); is polkitd running? (systemctl status polkit)"
            ))),
        }
    }
}

fn describe(method: &str) -> &'static str {
    match method {
        "CreateVolume" => "create an encrypted volume",
        "Unlock" => "unlock a volume",
        "Lock" => "lock a volume",
        "DeleteVolume" => "delete a volume",
        "GrowVolume" => "grow a volume",
        "Status" => "list your volumes",
        "MountOverlay" => "mount a copy-on-write home",
        "UnmountOverlay" => "unmount a copy-on-write home",
        "Recover" => "clean up after a crash",
        _ => "do that",
    }
}

#[interface(name = "org.doppel.Helper1")]
impl Helper {
    async fn create_volume(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        id: String,
        size: u64,
        key: Vec<u8>,
    ) -> Result<String, HelperError> {
        let _busy = self.activity.begin();
        let caller = self.authorize(conn, &hdr, "CreateVolume").await?;
        Ok(volume::create(
            caller,
            &id,
            size,
            &zeroizing(key),
            &self.limits,
        )?)
    }

    async fn unlock(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        id: String,
        key: Vec<u8>,
    ) -> Result<String, HelperError> {
        let _busy = self.activity.begin();
        let caller = self.authorize(conn, &hdr, "Unlock").await?;
        Ok(volume::unlock(caller, &id, &zeroizing(key))?)
    }

    async fn lock(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        id: String,
    ) -> Result<(), HelperError> {
        let _busy = self.activity.begin();
        let caller = self.authorize(conn, &hdr, "Lock").await?;
        Ok(volume::lock(caller, &id)?)
    }

    async fn delete_volume(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        id: String,
    ) -> Result<(), HelperError> {
        let _busy = self.activity.begin();
        let caller = self.authorize(conn, &hdr, "DeleteVolume").await?;
        Ok(volume::delete(caller, &id)?)
    }

    async fn grow_volume(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        id: String,
        size: u64,
    ) -> Result<(), HelperError> {
        let _busy = self.activity.begin();
        let caller = self.authorize(conn, &hdr, "GrowVolume").await?;
        Ok(volume::grow(caller, &id, size, &self.limits)?)
    }

    async fn status(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<VolumeInfo>, HelperError> {
        let _busy = self.activity.begin();
        let caller = self.authorize(conn, &hdr, "Status").await?;
        Ok(volume::status(caller)?)
    }

    async fn mount_overlay(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        id: String,
    ) -> Result<String, HelperError> {
        let _busy = self.activity.begin();
        let caller = self.authorize(conn, &hdr, "MountOverlay").await?;
        Ok(volume::mount_overlay(caller, &id)?)
    }

    async fn unmount_overlay(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        id: String,
    ) -> Result<(), HelperError> {
        let _busy = self.activity.begin();
        let caller = self.authorize(conn, &hdr, "UnmountOverlay").await?;
        Ok(volume::unmount_overlay(caller, &id)?)
    }

    async fn recover(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<String>, HelperError> {
        let _busy = self.activity.begin();
        let caller = self.authorize(conn, &hdr, "Recover").await?;
        Ok(volume::recover(caller)?)
    }
}

/// Wipes a received key when it goes out of scope.
struct Zeroizing(Vec<u8>);

impl std::ops::Deref for Zeroizing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Zeroizing {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: a volatile write to a valid byte of our own buffer.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

fn zeroizing(v: Vec<u8>) -> Zeroizing {
    Zeroizing(v)
}
