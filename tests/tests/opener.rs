//! `xdg-open` inside a clone reaches the host through the OpenURI portal: a link the clone opens
//! goes to the person's browser on the host, not to a browser started inside the sandbox.
//!
//! The portal here is a stand-in on a private session bus (zbus): it records `OpenURI` and
//! `OpenFile` calls and answers on the request object as xdg-desktop-portal does. The clone
//! runs `xdg-open` by name (PATH), by the host's path `/usr/bin/xdg-open` when the host has
//! one, for a URL, a login link and a file of its own; then once more with no portal on the bus,
//! where it must fail with xdg-open's "tool not found" status and say what to install.
//!
//! Needs root (it creates the test user) and dbus-daemon; the profile runs `sh` through
//! `doppel run`, with what that needs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/display.rs"]
mod display;

use std::collections::HashMap;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};

use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedFd, OwnedObjectPath, OwnedValue};

use common::{ok, Env, User};
use display::SessionBus;

const PORTAL: &str = "org.freedesktop.portal.Desktop";
const PORTAL_PATH: &str = "/org/freedesktop/portal/desktop";

fn can_run() -> bool {
    common::require(common::is_root(), "the opener test needs root (sudo)")
        && ["dbus-daemon", "sh"]
            .iter()
            .all(|c| common::require(common::have(c), &format!("{c} is not installed")))
}

/// What the stand-in portal was asked: ("OpenURI", uri) or ("OpenFile", the file's path as the
/// descriptor it was handed resolves).
type Calls = Arc<Mutex<Vec<(String, String)>>>;

struct OpenUri {
    calls: Calls,
    n: u32,
}

impl OpenUri {
    /// The request object the answer comes on: from the caller's handle_token, as the portal
    /// does it, so that the caller can listen before it asks.
    fn request(&mut self, header: &Header<'_>, options: &HashMap<String, OwnedValue>) -> String {
        self.n += 1;
        let sender = header
            .sender()
            .map(|s| s.trim_start_matches(':').replace('.', "_"))
            .unwrap_or_default();
        let token = options
            .get("handle_token")
            .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
            .unwrap_or_else(|| format!("t{}", self.n));
        format!("{PORTAL_PATH}/request/{sender}/{token}")
    }

    async fn answer(emitter: &SignalEmitter<'_>, path: &str, dest: Option<String>) {
        let conn = emitter.connection();
        let body: (u32, HashMap<String, OwnedValue>) = (0, HashMap::new());
        let _ = conn
            .emit_signal(
                dest.as_deref(),
                path,
                "org.freedesktop.portal.Request",
                "Response",
                &body,
            )
            .await;
    }
}

#[zbus::interface(name = "org.freedesktop.portal.OpenURI")]
impl OpenUri {
    #[zbus(name = "OpenURI")]
    async fn open_uri(
        &mut self,
        _parent: String,
        uri: String,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        self.calls.lock().unwrap().push(("OpenURI".into(), uri));
        let path = self.request(&header, &options);
        let dest = header.sender().map(|s| s.to_string());
        // The answer goes out after the reply, as the real portal's does.
        let conn = zbus::blocking::Connection::from(emitter.connection().clone());
        let p = path.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let body: (u32, HashMap<String, OwnedValue>) = (0, HashMap::new());
            let _ = conn.emit_signal(
                dest.as_deref(),
                p.as_str(),
                "org.freedesktop.portal.Request",
                "Response",
                &body,
            );
        });
        Ok(ObjectPath::try_from(path).unwrap().into())
    }

    async fn open_file(
        &mut self,
        _parent: String,
        fd: OwnedFd,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let file = std::fs::read_link(format!("/proc/self/fd/{raw}"))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("(unreadable: {e})"));
        self.calls.lock().unwrap().push(("OpenFile".into(), file));
        let path = self.request(&header, &options);
        let dest = header.sender().map(|s| s.to_string());
        // This one answers before its reply: the caller listens before it asks.
        Self::answer(&emitter, &path, dest).await;
        Ok(ObjectPath::try_from(path).unwrap().into())
    }

    #[zbus(property, name = "version")]
    fn version(&self) -> u32 {
        4
    }
}

/// Serves the stand-in portal on `bus`; keep the connection while it should answer.
fn portal(bus: &SessionBus) -> (zbus::blocking::Connection, Calls) {
    let calls: Calls = Arc::default();
    let conn = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .serve_at(
            PORTAL_PATH,
            OpenUri {
                calls: Arc::clone(&calls),
                n: 0,
            },
        )
        .unwrap()
        .name(PORTAL)
        .unwrap()
        .build()
        .expect("cannot serve the stand-in portal on the test's session bus");
    (conn, calls)
}

/// `doppel run <id> -- sh -c SCRIPT` as the test user on `bus`.
fn run_sh(env: &Env, bus: &SessionBus, id: &str, script: &str) -> Output {
    let mut vars: Vec<(&str, String)> = env.vars.iter().map(|(k, v)| (*k, v.clone())).collect();
    vars.push(("DBUS_SESSION_BUS_ADDRESS", bus.address.clone()));
    let exe = common::staged().doppel.display().to_string();
    env.user
        .command(&vars, &[exe.as_str(), "run", id, "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn xdg_open_in_a_clone_goes_to_the_host_through_the_portal() {
    if !can_run() {
        return;
    }
    let id = "opener";
    let env = Env::new(User::get("doppel-e2e-open"), "opener");
    ok(&env.doppel(&[
        "create",
        id,
        "--app",
        "sh",
        "--name",
        "Links",
        "--network",
        "none",
    ]));
    let bus = SessionBus::start_allowing_root(&env.user, "opener");
    let host_xdg_open = std::path::Path::new("/usr/bin/xdg-open").is_file();

    let (conn, calls) = portal(&bus);
    let mut script = String::from(
        "command -v xdg-open; \
         xdg-open 'https://example.org/doppel?from=clone'; echo \"url=$?\"; \
         echo note > \"$HOME/clone-note.txt\"; \
         xdg-open \"file://$HOME/clone-note.txt\"; echo \"file=$?\"; \
         xdg-open \"$HOME/missing.txt\"; echo \"missing=$?\"; ",
    );
    if host_xdg_open {
        script.push_str("/usr/bin/xdg-open 'tg://resolve?domain=doppel'; echo \"abs=$?\"; ");
    } else {
        eprintln!("NOTE: this host has no /usr/bin/xdg-open; only the PATH shim is tried");
    }
    let out = run_sh(&env, &bus, id, &script);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(out.status.success(), "{report}");
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.ends_with("/doppel/bin/xdg-open"),
        "xdg-open is not Doppel's opener first in PATH: {report}"
    );
    for want in ["url=0", "file=0", "missing=2"] {
        assert!(stdout.contains(want), "no {want}: {report}");
    }
    assert!(
        stderr.contains("missing.txt"),
        "a missing file is not named: {report}"
    );
    if host_xdg_open {
        assert!(stdout.contains("abs=0"), "no abs=0: {report}");
    }

    let calls = calls.lock().unwrap().clone();
    eprintln!("the portal saw: {calls:?}");
    assert_eq!(
        calls[0],
        (
            "OpenURI".to_owned(),
            "https://example.org/doppel?from=clone".to_owned()
        ),
        "{calls:?}"
    );
    assert_eq!(calls[1].0, "OpenFile", "{calls:?}");
    assert!(
        calls[1].1.ends_with("/clone-note.txt"),
        "the portal got another file: {calls:?}"
    );
    if host_xdg_open {
        assert_eq!(
            calls[2],
            (
                "OpenURI".to_owned(),
                "tg://resolve?domain=doppel".to_owned()
            ),
            "{calls:?}"
        );
    }
    assert_eq!(calls.len(), if host_xdg_open { 3 } else { 2 }, "{calls:?}");
    // No portal: xdg-open says so, with xdg-open's status for a missing tool.
    drop(conn);
    let out = run_sh(
        &env,
        &bus,
        id,
        "xdg-open https://example.org/; echo \"rc=$?\"",
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stdout.contains("rc=3"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("xdg-desktop-portal"),
        "the error does not say what to install:\n{stderr}"
    );
}
