//! The clone's systemd user scope: how xdg-desktop-portal learns which app is calling.
//!
//! For an app that is not a Flatpak or a Snap, xdg-desktop-portal reads the app id from the
//! caller's systemd user unit, `app[-<launcher>]-<AppID>-<RANDOM>.scope`, and uses it only if
//! `<AppID>.desktop` is installed. The portal sees the peer of its D-Bus connection, which for a
//! clone is the session-bus proxy, so the monitor moves *itself* into a new scope
//! `app-doppel-<escaped app id>-<random>.scope` before it starts the proxy, pasta and the app:
//! they inherit its cgroup, and the portal sees the clone (`org.doppel.Doppel.<id>`, whose
//! launcher Doppel writes when the profile is created) as an app of its own.
//!
//! The scope comes from the systemd user manager (`StartTransientUnit` on the session bus).
//! Without one (no systemd, a container, a session bus started by hand) the clone runs all the
//! same; portals then see it as the host app or as no app at all.

use std::sync::mpsc;
use std::time::Duration;

use zbus::blocking::{Connection, MessageIterator};
use zbus::zvariant::{OwnedObjectPath, Value};

/// The user manager's bus name, object and interface.
const SYSTEMD: &str = "org.freedesktop.systemd1";
const SYSTEMD_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// How long systemd gets to create the scope (it takes milliseconds when it is healthy).
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The launcher part of the unit name: `app-doppel-…`.
pub const LAUNCHER: &str = "doppel";

/// The longest unit name systemd accepts.
const UNIT_NAME_MAX: usize = 255;

/// What became of the attempt to enter a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This process now runs in the named scope.
    Entered(String),
    /// There is no systemd user manager on the session bus (or no session bus): the normal case
    /// on systems without systemd. Carries why, for `doppel doctor`.
    NoUserManager(String),
    /// There is a user manager, but the scope could not be made. Carries what went wrong.
    Failed(String),
}

/// Escapes `s` for use in a systemd unit name, as `systemd-escape` does: ASCII letters,
/// digits, `:`, `_` and `.` (but not a leading `.`) stay, `/` becomes `-`, and every other byte
/// becomes `\xNN`. Escaping `-` is what lets the portal find where the app id ends.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i > 0 => out.push('.'),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// `app-doppel-<escaped app id>-<random>.scope`. `random` must be ASCII letters and digits,
/// which is what the portal expects after the last `-`.
pub fn unit_name(app_id: &str, random: &str) -> String {
    format!("app-{LAUNCHER}-{}-{random}.scope", escape(app_id))
}

/// 16 random hex digits, so two launches never ask for the same unit.
fn random_suffix() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No randomness from the kernel: the pid and the time are unique enough on one machine.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        b[..4].copy_from_slice(&std::process::id().to_be_bytes());
        b[4..].copy_from_slice(&nanos.to_be_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Connects to the session bus and says whether the systemd user manager is on it.
fn connect() -> Result<Connection, Outcome> {
    let conn = zbus::blocking::connection::Builder::session()
        .and_then(|b| b.method_timeout(TIMEOUT).build())
        .map_err(|e| Outcome::NoUserManager(format!("no session bus to ask: {e}")))?;
    let reply = conn
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "NameHasOwner",
            &(SYSTEMD,),
        )
        .and_then(|r| r.body().deserialize::<bool>());
    match reply {
        Ok(true) => Ok(conn),
        Ok(false) => Err(Outcome::NoUserManager(format!(
            "{SYSTEMD} is not on the session bus"
        ))),
        Err(e) => Err(Outcome::Failed(format!(
            "cannot ask the session bus whether {SYSTEMD} is there: {e}"
        ))),
    }
}

/// Whether a systemd user manager answers on the session bus: `Ok`, or why not (for
/// `doppel doctor`).
pub fn probe() -> Result<(), Outcome> {
    connect().map(drop)
}

/// Moves this process into a new transient scope named for `app_id`, described as
/// `description` (what `systemctl --user status` shows), and waits until systemd has made it.
///
/// Call it before starting anything that should be in the scope (children inherit it), and
/// after the monitor has blocked its signals: the D-Bus client starts threads.
pub fn enter(app_id: &str, description: &str) -> Outcome {
    let unit = unit_name(app_id, &random_suffix());
    if unit.len() > UNIT_NAME_MAX {
        return Outcome::Failed(format!(
            "the unit name for {app_id} would be {} bytes long, more than systemd's {UNIT_NAME_MAX} \
             (each '-' in a profile id takes four); a profile with a shorter id or fewer '-' \
             avoids this",
            unit.len()
        ));
    }
    let conn = match connect() {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    match start_and_wait(&conn, &unit, description) {
        Ok(()) => Outcome::Entered(unit),
        Err(e) => {
            // Ends the wait for JobRemoved too, should it still be going.
            let _ = conn.close();
            match e {
                StartError::Gone => {
                    Outcome::NoUserManager(format!("{SYSTEMD} left the session bus"))
                }
                StartError::Other(e) => Outcome::Failed(e),
            }
        }
    }
}

enum StartError {
    /// The user manager went away between the check and the call.
    Gone,
    Other(String),
}

fn start_and_wait(conn: &Connection, unit: &str, description: &str) -> Result<(), StartError> {
    let other = |what: &str, e: zbus::Error| StartError::Other(format!("{what}: {e}"));
    // Listen before asking: the job may finish before the reply to StartTransientUnit arrives.
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(SYSTEMD)
        .and_then(|b| b.path(SYSTEMD_PATH))
        .and_then(|b| b.interface(MANAGER))
        .and_then(|b| b.member("JobRemoved"))
        .map(|b| b.build())
        .map_err(|e| other("cannot listen for systemd's JobRemoved", e))?;
    let signals = MessageIterator::for_match_rule(rule, conn, Some(64))
        .map_err(|e| other("cannot listen for systemd's JobRemoved", e))?;

    let pid = std::process::id();
    let properties: Vec<(&str, Value<'_>)> = vec![
        ("Description", Value::from(description)),
        ("PIDs", Value::from(vec![pid])),
        ("CollectMode", Value::from("inactive-or-failed")),
    ];
    let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
    let reply = conn.call_method(
        Some(SYSTEMD),
        SYSTEMD_PATH,
        Some(MANAGER),
        "StartTransientUnit",
        &(unit, "fail", properties, aux),
    );
    let job: OwnedObjectPath = match reply.and_then(|r| r.body().deserialize()) {
        Ok(job) => job,
        Err(zbus::Error::MethodError(name, _, _))
            if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
                || name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
        {
            return Err(StartError::Gone);
        }
        Err(e) => return Err(other(&format!("systemd refused to start {unit}"), e)),
    };

    // The signal comes on the connection's own thread; wait for it on another one, with a
    // timeout. That thread ends when it has seen our job or the connection closes.
    let (tx, rx) = mpsc::sync_channel(1);
    let wanted = job.clone();
    std::thread::Builder::new()
        .name("doppel-scope".into())
        .spawn(move || {
            for msg in signals {
                let Ok(msg) = msg else { return };
                let Ok((_id, path, _unit, result)) =
                    msg.body()
                        .deserialize::<(u32, OwnedObjectPath, String, String)>()
                else {
                    continue;
                };
                if path == wanted {
                    let _ = tx.send(result);
                    return;
                }
            }
        })
        .map_err(|e| StartError::Other(format!("cannot start a thread: {e}")))?;
    match rx.recv_timeout(TIMEOUT) {
        Ok(result) if result == "done" => Ok(()),
        Ok(result) => Err(StartError::Other(format!(
            "systemd's job to start {unit} ended with \"{result}\" (`journalctl --user` may say \
             why)"
        ))),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(StartError::Other(format!(
            "systemd did not finish starting {unit} within {} s",
            TIMEOUT.as_secs()
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(StartError::Other(format!(
            "the session bus closed before systemd had started {unit}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The app id xdg-desktop-portal reads from a scope name (`xdp-app-info-host.c`): after
    /// `app-` an optional launcher of letters and digits followed by `-`, then the app id, then
    /// `-` and letters and digits, then `.scope`; the app id is then unescaped.
    fn portal_app_id(unit: &str) -> Option<String> {
        let body = unit.strip_prefix("app-")?.strip_suffix(".scope")?;
        let split = |s: &str| -> Option<String> {
            let (id, random) = s.rsplit_once('-')?;
            (!id.is_empty() && random.bytes().all(|b| b.is_ascii_alphanumeric()))
                .then(|| unescape(id))
        };
        let launcher_end = body
            .find('-')
            .filter(|&i| i > 0 && body[..i].bytes().all(|b| b.is_ascii_alphanumeric()));
        launcher_end
            .and_then(|i| split(&body[i + 1..]))
            .or_else(|| split(body))
    }

    fn unescape(s: &str) -> String {
        let mut out = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() {
                if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn escaping_follows_systemd() {
        assert_eq!(escape("org.doppel.Doppel.work"), "org.doppel.Doppel.work");
        assert_eq!(
            escape("org.doppel.Doppel.work-2"),
            "org.doppel.Doppel.work\\x2d2"
        );
        assert_eq!(escape("a:b_c"), "a:b_c");
        assert_eq!(escape(".hidden"), "\\x2ehidden");
        assert_eq!(escape("a/b"), "a-b");
        assert_eq!(escape("a b"), "a\\x20b");
        assert_eq!(escape("é"), "\\xc3\\xa9");
    }

    #[test]
    fn unit_names_have_the_portals_format() {
        let unit = unit_name("org.doppel.Doppel.work", "0123abcd");
        assert_eq!(unit, "app-doppel-org.doppel.Doppel.work-0123abcd.scope");
        assert_eq!(
            portal_app_id(&unit).as_deref(),
            Some("org.doppel.Doppel.work")
        );
    }

    #[test]
    fn a_profile_id_with_dashes_comes_back_whole() {
        let unit = unit_name("org.doppel.Doppel.my-work-2", "ff00");
        assert_eq!(
            unit,
            "app-doppel-org.doppel.Doppel.my\\x2dwork\\x2d2-ff00.scope"
        );
        assert_eq!(
            portal_app_id(&unit).as_deref(),
            Some("org.doppel.Doppel.my-work-2")
        );
        // Unescaped, a leading "<letters>-" would be taken for the launcher.
        assert_eq!(
            portal_app_id("app-my-work-ff00.scope").as_deref(),
            Some("work")
        );
        let unit = format!("app-{}-ff00.scope", escape("my-work"));
        assert_eq!(portal_app_id(&unit).as_deref(), Some("my-work"));
    }

    #[test]
    fn random_suffixes_are_hex_and_differ() {
        let a = random_suffix();
        let b = random_suffix();
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn an_overlong_name_is_refused_before_any_bus_call() {
        let id = format!("org.doppel.Doppel.a{}", "-".repeat(62));
        match enter(&id, "test") {
            Outcome::Failed(e) => assert!(e.contains("bytes long"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
