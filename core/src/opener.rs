//! `xdg-open` inside a clone. A clone must not open a link by starting a browser inside its own
//! sandbox (a fresh, empty browser profile, in the clone's home): the link belongs in the
//! person's browser on the host. The sandbox mounts the `doppel` binary as `xdg-open`, first in
//! `PATH` and over the host's `/usr/bin/xdg-open`; run under that name it hands its argument to
//! the desktop through the OpenURI portal (`org.freedesktop.portal.OpenURI`), which the clone's
//! session-bus proxy lets through, and waits for the portal's answer as `gio open` does.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

/// The name under which the `doppel` binary acts as the opener.
pub const SHIM_NAME: &str = "xdg-open";

/// Where, inside the sandbox's runtime dir, the opener is mounted (this directory goes first in
/// the clone's `PATH`).
pub const SHIM_DIR: &str = "doppel/bin";

const PORTAL: &str = "org.freedesktop.portal.Desktop";
const PORTAL_PATH: &str = "/org/freedesktop/portal/desktop";
const OPEN_URI: &str = "org.freedesktop.portal.OpenURI";

/// How long to wait for the portal's answer: it may show the person an app chooser first.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

// xdg-open's exit codes (xdg-utils), which callers may test.
const EXIT_SYNTAX: u8 = 1;
const EXIT_NO_FILE: u8 = 2;
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
    /// A URI with a scheme other than `file:` (`https:`, `mailto:`, `tg:`…).
    Uri(String),
    /// A local file or directory.
    File(PathBuf),
}

/// Reads xdg-open's argument the way xdg-utils does: a `file://` URI or a path is a file, any
/// other `scheme:` is a URI.
pub fn target(arg: &str) -> Result<Target, String> {
    if arg.is_empty() {
        return Err("xdg-open: the file or URL is empty".into());
    }
    if let Some(rest) = arg.strip_prefix("file://") {
        // file:///path or file://localhost/path; percent-escapes decoded.
        let path = rest.strip_prefix("localhost").unwrap_or(rest);
        if !path.starts_with('/') {
            return Err(format!(
                "xdg-open: {arg} names a file on another host; only local files can be opened"
            ));
        }
        return Ok(Target::File(PathBuf::from(percent_decode(path)?)));
    }
    if has_scheme(arg) && !Path::new(arg).exists() {
        return Ok(Target::Uri(arg.to_owned()));
    }
    Ok(Target::File(PathBuf::from(arg)))
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

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("xdg-open: {s} has a broken %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("xdg-open: {s} is not UTF-8 once decoded"))
}

/// The portal request path a call with `token` answers on, for the connection `unique` name.
fn request_path(unique: &str, token: &str) -> String {
    let sender = unique.trim_start_matches(':').replace('.', "_");
    format!("/org/freedesktop/portal/desktop/request/{sender}/{token}")
}

/// Runs as `xdg-open <file | URL>`; returns xdg-open's exit status.
pub fn main(args: &[OsString]) -> ExitCode {
    let usage = "usage: xdg-open { file | URL }\n\
                 Inside a Doppel clone this opens the file or URL on the desktop (in your \
                 browser or the app you chose there), through the OpenURI portal.";
    let arg = match args {
        [a] => a.to_string_lossy().into_owned(),
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(EXIT_SYNTAX);
        }
    };
    match arg.as_str() {
        "--help" | "-h" | "--manual" => {
            println!("{usage}");
            return ExitCode::SUCCESS;
        }
        "--version" => {
            println!("xdg-open (Doppel {})", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let target = match target(&arg) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_SYNTAX);
        }
    };
    match open(&target) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("xdg-open: {msg}");
            ExitCode::from(code)
        }
    }
}

/// Asks the portal to open `target` and waits for its answer.
pub fn open(target: &Target) -> Result<(), (u8, String)> {
    let conn = zbus::blocking::Connection::session().map_err(|e| {
        (
            EXIT_NO_TOOL,
            format!("cannot reach the session bus ({e}); the clone was started without one"),
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
    let reply: zbus::Result<OwnedObjectPath> = match target {
        Target::Uri(uri) => proxy.call("OpenURI", &("", uri.as_str(), options)),
        Target::File(path) => {
            let fd = open_path(path)?;
            // A directory too: the portal opens it with the app for inode/directory.
            proxy.call("OpenFile", &("", zbus::zvariant::Fd::from(&fd), options))
        }
    };
    let handle = reply.map_err(portal_error)?;

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
    match rx.recv_timeout(ANSWER_TIMEOUT) {
        Ok(0) => Ok(()),
        Ok(1) => Err((EXIT_FAILED, "opening was cancelled".into())),
        Ok(_) => Err((
            EXIT_FAILED,
            "the desktop could not open it (the portal reported an error; is there an app for \
             it on the host?)"
                .into(),
        )),
        // The request was made; the portal may still be waiting on the person.
        Err(_) => Ok(()),
    }
}

fn open_path(path: &Path) -> Result<OwnedFd, (u8, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                EXIT_NO_FILE
            } else {
                EXIT_FAILED
            };
            (code, format!("cannot open {}: {e}", path.display()))
        })
}

fn portal_error(e: zbus::Error) -> (u8, String) {
    let unknown = matches!(&e, zbus::Error::MethodError(name, _, _)
        if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
            || name.as_str() == "org.freedesktop.DBus.Error.UnknownInterface"
            || name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod");
    if unknown {
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

    #[test]
    fn urls_and_files_are_told_apart_as_xdg_open_does() {
        assert_eq!(
            target("https://example.org/a?b=c").unwrap(),
            Target::Uri("https://example.org/a?b=c".into())
        );
        assert_eq!(
            target("tg://login?token=x").unwrap(),
            Target::Uri("tg://login?token=x".into())
        );
        assert_eq!(
            target("mailto:ana@example.org").unwrap(),
            Target::Uri("mailto:ana@example.org".into())
        );
        assert_eq!(
            target("file:///tmp/a%20b.txt").unwrap(),
            Target::File("/tmp/a b.txt".into())
        );
        assert_eq!(
            target("file://localhost/etc/hosts").unwrap(),
            Target::File("/etc/hosts".into())
        );
        assert_eq!(
            target("notes.txt").unwrap(),
            Target::File("notes.txt".into())
        );
        assert_eq!(target("C:x").unwrap(), Target::File("C:x".into()));
        assert!(target("file://server/share/x").is_err());
        assert!(target("file:///bad%zz").is_err());
        assert!(target("").is_err());
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
        assert!(!invoked_as_shim(None));
    }
}
