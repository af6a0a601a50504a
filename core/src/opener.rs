//! `xdg-open` inside a clone. A clone must not open a link by starting a browser inside its own
//! sandbox (a fresh, empty browser profile, in the clone's home): the link belongs in the
//! person's browser on the host. The sandbox mounts the `doppel` binary as `xdg-open`, first in
//! `PATH` and over the host's `/usr/bin/xdg-open`; run under that name it hands a URL to the
//! desktop through the OpenURI portal (`org.freedesktop.portal.OpenURI`), which the clone's
//! session-bus proxy lets through, and waits for the portal's answer as `gio open` does.
//!
//! Local files stay inside: the portal checks that the path it is given names the same file on
//! the host, which a file of the clone's private home or `/tmp` never does. They go to the host's
//! own `xdg-open`, which the sandbox also mounts, as `xdg-open.host` beside the opener, so the
//! clone opens them with its own apps as before.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

/// The name under which the `doppel` binary acts as the opener.
pub const SHIM_NAME: &str = "xdg-open";

/// The host's own `xdg-open`, mounted beside the opener for local files.
pub const HOST_OPENER: &str = "xdg-open.host";

/// Where, inside the sandbox's runtime dir, the opener is mounted (this directory goes first in
/// the clone's `PATH`).
pub const SHIM_DIR: &str = "doppel/bin";

const PORTAL: &str = "org.freedesktop.portal.Desktop";
const PORTAL_PATH: &str = "/org/freedesktop/portal/desktop";
const OPEN_URI: &str = "org.freedesktop.portal.OpenURI";

/// How long the portal may take to accept the request (it may have to be started first).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for the portal's answer: it may show the person an app chooser first, and
/// leaving before the answer would make the portal drop the request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

// xdg-open's exit codes (xdg-utils), which callers may test.
const EXIT_SYNTAX: u8 = 1;
const EXIT_NO_TOOL: u8 = 3;
const EXIT_FAILED: u8 = 4;

/// Whether this process was started as the opener (its argv\[0\] is `xdg-open`).
pub fn invoked_as_shim(argv0: Option<&OsString>) -> bool {
    argv0
        .map(Path::new)
        .and_then(Path::file_name)
        .is_some_and(|n| n == SHIM_NAME)
}

/// What `xdg-open` was asked to open.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// A URI with a scheme other than `file:` (`https:`, `mailto:`, `tg:`…): for the host.
    Uri(String),
    /// A local file or directory, as a path or a `file:` URI: for the clone's own apps.
    Local,
}

/// Reads xdg-open's argument the way xdg-utils does: a `file:` URI or anything that is not
/// `scheme:…` (or that exists as a path) is local, any other `scheme:` is a URI.
pub fn target(arg: &OsStr) -> Target {
    match arg.to_str() {
        Some(s) if has_scheme(s) && !s.starts_with("file:") && !Path::new(s).exists() => {
            Target::Uri(s.to_owned())
        }
        _ => Target::Local,
    }
}

/// `scheme:` as RFC 3986 spells it, at least two characters (so `C:` is not one).
fn has_scheme(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    scheme.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// The portal request path a call with `token` answers on, for the connection `unique` name.
fn request_path(unique: &str, token: &str) -> String {
    let sender = unique.trim_start_matches(':').replace('.', "_");
    format!("/org/freedesktop/portal/desktop/request/{sender}/{token}")
}

/// Runs as `xdg-open <file | URL>`; returns xdg-open's exit status.
pub fn main(args: &[OsString]) -> ExitCode {
    let usage = "usage: xdg-open { file | URL }\n\
                 Inside a Doppel clone this opens a URL on the desktop (in your browser or the \
                 app you chose there) through the OpenURI portal, and a file with the clone's \
                 own apps.";
    let arg = match args {
        [a] => a,
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(EXIT_SYNTAX);
        }
    };
    match arg.to_str() {
        Some("--help" | "-h" | "--manual") => {
            println!("{usage}");
            return ExitCode::SUCCESS;
        }
        Some("--version") => {
            println!("xdg-open (Doppel {})", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ if arg.as_encoded_bytes().starts_with(b"-") => {
            eprintln!(
                "xdg-open: unexpected option '{}'\n{usage}",
                arg.to_string_lossy()
            );
            return ExitCode::from(EXIT_SYNTAX);
        }
        _ => {}
    }
    match target(arg) {
        Target::Uri(uri) => match open_uri(&uri) {
            Ok(()) => ExitCode::SUCCESS,
            Err((code, msg)) => {
                eprintln!("xdg-open: {msg}");
                ExitCode::from(code)
            }
        },
        Target::Local => open_inside(arg),
    }
}

/// The host's `xdg-open` as the sandbox mounts it, if it does.
fn host_opener() -> Option<PathBuf> {
    let run = std::env::var_os("XDG_RUNTIME_DIR")?;
    let p = Path::new(&run).join(SHIM_DIR).join(HOST_OPENER);
    p.is_file().then_some(p)
}

/// Opens a local file with the clone's own apps: the host's `xdg-open` takes over this process,
/// so its exit status is the caller's.
fn open_inside(arg: &OsStr) -> ExitCode {
    let Some(real) = host_opener() else {
        eprintln!(
            "xdg-open: this clone has no xdg-open for local files (the host has none at \
             /usr/bin/xdg-open); install xdg-utils on the host and restart the clone"
        );
        return ExitCode::from(EXIT_NO_TOOL);
    };
    let err = std::process::Command::new(&real)
        .arg0(SHIM_NAME)
        .arg(arg)
        .exec();
    eprintln!("xdg-open: cannot run {}: {err}", real.display());
    ExitCode::from(EXIT_NO_TOOL)
}

/// Asks the portal to open `uri` and waits for its answer.
pub fn open_uri(uri: &str) -> Result<(), (u8, String)> {
    let conn = zbus::blocking::connection::Builder::session()
        .map(|b| b.method_timeout(CALL_TIMEOUT))
        .and_then(|b| b.build())
        .map_err(|e| {
            (
                EXIT_NO_TOOL,
                format!(
                    "cannot reach the session bus ({e}); restart the clone from your desktop \
                     session"
                ),
            )
        })?;
    let unique = conn
        .unique_name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    let token = format!("doppel_open_{}", std::process::id());
    let expected = request_path(&unique, &token);

    // Listen for the answer before asking, so that it cannot be missed.
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.freedesktop.portal.Request")
        .and_then(|r| r.member("Response"))
        .map(|r| r.build())
        .map_err(|e| (EXIT_FAILED, format!("cannot listen for the portal: {e}")))?;
    let answers = zbus::blocking::MessageIterator::for_match_rule(rule, &conn, Some(8))
        .map_err(|e| (EXIT_FAILED, format!("cannot listen for the portal: {e}")))?;

    let mut options: HashMap<&str, Value<'_>> = HashMap::new();
    options.insert("handle_token", Value::from(token.as_str()));
    let proxy = zbus::blocking::Proxy::new(&conn, PORTAL, PORTAL_PATH, OPEN_URI)
        .map_err(|e| (EXIT_FAILED, format!("cannot reach the OpenURI portal: {e}")))?;
    let handle: OwnedObjectPath = proxy
        .call("OpenURI", &("", uri, options))
        .map_err(portal_error)?;

    let (tx, rx) = mpsc::channel();
    let wanted = [expected, handle.as_str().to_owned()];
    std::thread::spawn(move || {
        for msg in answers {
            let Ok(msg) = msg else { break };
            let header = msg.header();
            let path = header.path().map(|p| p.as_str().to_owned());
            if !path.is_some_and(|p| wanted.contains(&p)) {
                continue;
            }
            let code = msg
                .body()
                .deserialize::<(u32, HashMap<String, OwnedValue>)>()
                .map(|(c, _)| c)
                .unwrap_or(2);
            let _ = tx.send(code);
            break;
        }
    });
    answer(rx.recv_timeout(ANSWER_TIMEOUT))
}

/// xdg-open's outcome from the portal's answer (or its absence).
fn answer(got: Result<u32, mpsc::RecvTimeoutError>) -> Result<(), (u8, String)> {
    match got {
        Ok(0) => Ok(()),
        Ok(1) => Err((EXIT_FAILED, "opening was cancelled".into())),
        Ok(_) => Err((
            EXIT_FAILED,
            "the desktop could not open it (the portal answered with an error: is there an \
             app for this kind of link on the host?)"
                .into(),
        )),
        // Accepted and still pending: the person may be choosing an app.
        Err(mpsc::RecvTimeoutError::Timeout) => Ok(()),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err((
            EXIT_FAILED,
            "lost the connection to the portal before it answered; try again".into(),
        )),
    }
}

/// Whether a D-Bus error means that no portal runs or can be started.
fn portal_missing(name: &str) -> bool {
    name.starts_with("org.freedesktop.DBus.Error.Spawn.")
        || matches!(
            name,
            "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
                | "org.freedesktop.DBus.Error.UnknownInterface"
                | "org.freedesktop.DBus.Error.UnknownMethod"
                | "org.freedesktop.DBus.Error.UnknownObject"
                | "org.freedesktop.DBus.Error.TimedOut"
                | "org.freedesktop.DBus.Error.NoReply"
        )
}

fn portal_error(e: zbus::Error) -> (u8, String) {
    let missing = match &e {
        zbus::Error::MethodError(name, _, _) => portal_missing(name.as_str()),
        _ => false,
    };
    if missing {
        (
            EXIT_NO_TOOL,
            format!(
                "the desktop's OpenURI portal is not available ({e}); install \
                 xdg-desktop-portal and a backend for your desktop (xdg-desktop-portal-gtk, \
                 -gnome or -kde) on the host"
            ),
        )
    } else {
        (EXIT_FAILED, format!("the OpenURI portal refused: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        target(OsStr::new(s))
    }

    #[test]
    fn urls_go_to_the_host_and_local_files_stay_inside() {
        assert_eq!(
            t("https://example.org/a?b=c"),
            Target::Uri("https://example.org/a?b=c".into())
        );
        assert_eq!(
            t("tg://login?token=x"),
            Target::Uri("tg://login?token=x".into())
        );
        assert_eq!(
            t("mailto:ana@example.org"),
            Target::Uri("mailto:ana@example.org".into())
        );
        assert_eq!(t("file:///tmp/a%20b.txt#top"), Target::Local);
        assert_eq!(t("file:/etc/hosts"), Target::Local);
        assert_eq!(t("notes.txt"), Target::Local);
        assert_eq!(t("/home/ana/report.pdf"), Target::Local);
        assert_eq!(t("C:x"), Target::Local);
        // A file whose name looks like a URL is still the file.
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("http:x");
        std::fs::write(&odd, "").unwrap();
        assert_eq!(target(odd.as_os_str()), Target::Local);
        // Not UTF-8: a path.
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(target(OsStr::from_bytes(b"caf\xe9.txt")), Target::Local);
    }

    #[test]
    fn the_request_path_follows_the_portal_convention() {
        assert_eq!(
            request_path(":1.42", "t1"),
            "/org/freedesktop/portal/desktop/request/1_42/t1"
        );
    }

    #[test]
    fn only_the_name_xdg_open_selects_the_opener() {
        assert!(invoked_as_shim(Some(
            &"/run/user/1000/doppel/bin/xdg-open".into()
        )));
        assert!(invoked_as_shim(Some(&"xdg-open".into())));
        assert!(!invoked_as_shim(Some(&"/usr/bin/doppel".into())));
        assert!(!invoked_as_shim(Some(&"xdg-open.host".into())));
        assert!(!invoked_as_shim(None));
    }

    #[test]
    fn the_portals_answer_becomes_xdg_opens_status() {
        assert!(answer(Ok(0)).is_ok());
        assert_eq!(answer(Ok(1)).unwrap_err().0, EXIT_FAILED);
        assert_eq!(answer(Ok(2)).unwrap_err().0, EXIT_FAILED);
        assert!(answer(Err(mpsc::RecvTimeoutError::Timeout)).is_ok());
        assert_eq!(
            answer(Err(mpsc::RecvTimeoutError::Disconnected))
                .unwrap_err()
                .0,
            EXIT_FAILED
        );
    }

    #[test]
    fn a_portal_that_cannot_start_is_a_missing_tool() {
        for name in [
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "org.freedesktop.DBus.Error.Spawn.ChildExited",
            "org.freedesktop.DBus.Error.TimedOut",
            "org.freedesktop.DBus.Error.NoReply",
        ] {
            assert!(portal_missing(name), "{name}");
        }
        assert!(!portal_missing("org.freedesktop.DBus.Error.AccessDenied"));
        assert!(!portal_missing("org.freedesktop.portal.Error.NotAllowed"));
    }
}
