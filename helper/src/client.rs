//! The client side: how `doppel-core` calls the helper over the system bus (or the bus named by
//! `DBUS_SYSTEM_BUS_ADDRESS`, which tests use).

use crate::wire::{VolumeInfo, BUS_NAME, ERROR_PREFIX, INTERFACE, OBJECT_PATH};

#[zbus::proxy(
    interface = "org.doppel.Helper1",
    default_service = "org.doppel.Helper1",
    default_path = "/org/doppel/Helper1",
    gen_async = false,
    gen_blocking = true,
    blocking_name = "Helper1ProxyBlocking"
)]
trait Helper1 {
    fn create_volume(&self, id: &str, size: u64, key: &[u8]) -> zbus::Result<String>;
    fn unlock(&self, id: &str, key: &[u8]) -> zbus::Result<String>;
    fn lock(&self, id: &str) -> zbus::Result<()>;
    fn delete_volume(&self, id: &str) -> zbus::Result<()>;
    fn grow_volume(&self, id: &str, size: u64) -> zbus::Result<()>;
    fn status(&self) -> zbus::Result<Vec<VolumeInfo>>;
    fn mount_overlay(&self, id: &str) -> zbus::Result<String>;
    fn unmount_overlay(&self, id: &str) -> zbus::Result<()>;
    fn recover(&self) -> zbus::Result<Vec<String>>;
}

/// What kind of refusal or failure the helper reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The helper is not installed or not reachable.
    Unavailable,
    /// Bad arguments (a malformed id, a size out of range…).
    InvalidArgument,
    /// polkit said no.
    NotAuthorized,
    /// No such volume.
    NotFound,
    /// The volume exists already.
    Exists,
    /// In use, or another operation on it is under way.
    Busy,
    /// Over the per-user limits of /etc/doppel/helper.toml.
    LimitExceeded,
    /// The key does not open this volume.
    WrongKey,
    /// Anything else.
    Failed,
}

/// An error from calling the helper, with the message a person can act on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct HelperError {
    pub kind: ErrorKind,
    pub message: String,
}

impl HelperError {
    fn unavailable(detail: &str) -> Self {
        HelperError {
            kind: ErrorKind::Unavailable,
            message: format!(
                "Doppel's privileged helper ({BUS_NAME}) is not available ({detail}); encrypted \
                 storage and the copy-on-write home need it: install Doppel's package, which \
                 ships doppel-helper with its D-Bus and polkit files"
            ),
        }
    }
}

impl From<zbus::Error> for HelperError {
    fn from(e: zbus::Error) -> Self {
        match e {
            zbus::Error::MethodError(name, msg, _) => {
                let name = name.as_str();
                let message = msg.unwrap_or_else(|| name.to_owned());
                let kind = match name
                    .strip_prefix(ERROR_PREFIX)
                    .map(|s| s.trim_start_matches('.'))
                {
                    Some("InvalidArgument") => ErrorKind::InvalidArgument,
                    Some("NotAuthorized") => ErrorKind::NotAuthorized,
                    Some("NotFound") => ErrorKind::NotFound,
                    Some("Exists") => ErrorKind::Exists,
                    Some("Busy") => ErrorKind::Busy,
                    Some("LimitExceeded") => ErrorKind::LimitExceeded,
                    Some("WrongKey") => ErrorKind::WrongKey,
                    Some(_) => ErrorKind::Failed,
                    None => match name {
                        "org.freedesktop.DBus.Error.ServiceUnknown"
                        | "org.freedesktop.DBus.Error.NameHasNoOwner"
                        | "org.freedesktop.DBus.Error.Spawn.ServiceNotFound" => {
                            return HelperError::unavailable(&message)
                        }
                        "org.freedesktop.DBus.Error.AccessDenied" => ErrorKind::NotAuthorized,
                        _ => ErrorKind::Failed,
                    },
                };
                HelperError { kind, message }
            }
            other => HelperError::unavailable(&other.to_string()),
        }
    }
}

/// A connection to the helper.
pub struct Helper {
    proxy: Helper1ProxyBlocking<'static>,
}

/// Result of a helper call.
pub type Result<T> = std::result::Result<T, HelperError>;

impl Helper {
    /// Connects to the system bus (or `DBUS_SYSTEM_BUS_ADDRESS`).
    pub fn connect() -> Result<Self> {
        let conn = zbus::blocking::Connection::system()
            .map_err(|e| HelperError::unavailable(&format!("no system bus: {e}")))?;
        let proxy = Helper1ProxyBlocking::builder(&conn)
            .destination(BUS_NAME)
            .and_then(|b| b.path(OBJECT_PATH))
            .and_then(|b| b.interface(INTERFACE))
            .and_then(|b| b.cache_properties(zbus::proxy::CacheProperties::No).build())
            .map_err(|e| HelperError::unavailable(&e.to_string()))?;
        Ok(Helper { proxy })
    }

    /// Creates an encrypted volume of `size` bytes for profile `id`, sealed with `key`, and
    /// leaves it unlocked; returns its mount point.
    pub fn create_volume(&self, id: &str, size: u64, key: &[u8]) -> Result<String> {
        Ok(self.proxy.create_volume(id, size, key)?)
    }

    /// Attaches, mounts and unlocks the volume of `id`; returns its mount point.
    pub fn unlock(&self, id: &str, key: &[u8]) -> Result<String> {
        Ok(self.proxy.unlock(id, key)?)
    }

    /// Removes the key, unmounts and detaches the volume of `id`.
    pub fn lock(&self, id: &str) -> Result<()> {
        Ok(self.proxy.lock(id)?)
    }

    /// Deletes the (locked) volume of `id`.
    pub fn delete_volume(&self, id: &str) -> Result<()> {
        Ok(self.proxy.delete_volume(id)?)
    }

    /// Grows the (locked) volume of `id` to `size` bytes.
    pub fn grow_volume(&self, id: &str, size: u64) -> Result<()> {
        Ok(self.proxy.grow_volume(id, size)?)
    }

    /// The caller's volumes.
    pub fn status(&self) -> Result<Vec<VolumeInfo>> {
        Ok(self.proxy.status()?)
    }

    /// Mounts the copy-on-write home of `id`; returns its path.
    pub fn mount_overlay(&self, id: &str) -> Result<String> {
        Ok(self.proxy.mount_overlay(id)?)
    }

    /// Unmounts the copy-on-write home of `id`.
    pub fn unmount_overlay(&self, id: &str) -> Result<()> {
        Ok(self.proxy.unmount_overlay(id)?)
    }

    /// Cleans up stale mounts and loop devices of the caller's volumes; returns what was done.
    pub fn recover(&self) -> Result<Vec<String>> {
        Ok(self.proxy.recover()?)
    }
}
