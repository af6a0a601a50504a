//! `xdg-open` inside a clone: a URL reaches the host through the OpenURI portal (the person's
//! browser, not a browser started inside the sandbox), a local file opens with the clone's own
//! apps through the host's xdg-open, which the sandbox keeps beside the opener.
//!
//! The portal here is a stand-in on a private session bus (zbus): it records calls and answers
//! on the request object as xdg-desktop-portal does: after its reply, or (for a URL with
//! `early`) before it, and with the response code a URL asks for (`answer=1` cancelled,
//! `answer=2` failed). The clone runs `xdg-open` by name (PATH) and by the host's path
//! `/usr/bin/xdg-open` when the host has one; then once more with no portal on the bus, where it
//! must fail with xdg-open's "tool not found" status and say what to install.
//!
//! Needs root (it creates the test user) and dbus-daemon; the profile runs `sh` through
//! `doppel run`, with what that needs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/display.rs"]
mod display;

use std::collections::HashMap;
use std::fs;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

    async fn answer(emitter: &SignalEmitter<'_>, path: &str, dest: Option<String>, code: u32) {
        let conn = emitter.connection();
        let body: (u32, HashMap<String, OwnedValue>) = (code, HashMap::new());
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

/// The response code a test URL asks for.
fn code_for(uri: &str) -> u32 {
    if uri.contains("answer=1") {
        1
    } else if uri.contains("answer=2") {
        2
    } else {
        0
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
        let code = code_for(&uri);
        let early = uri.contains("early");
        self.calls.lock().unwrap().push(("OpenURI".into(), uri));
        let path = self.request(&header, &options);
        let dest = header.sender().map(|s| s.to_string());
        if early {
            // Before the reply: the caller must already be listening.
            Self::answer(&emitter, &path, dest, code).await;
            return Ok(ObjectPath::try_from(path).unwrap().into());
        }
        // After the reply, as the real portal does.
        let conn = zbus::blocking::Connection::from(emitter.connection().clone());
        let p = path.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let body: (u32, HashMap<String, OwnedValue>) = (code, HashMap::new());
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
        Self::answer(&emitter, &path, dest, 0).await;
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
    let host_xdg_open = fs::symlink_metadata("/usr/bin/xdg-open").is_ok_and(|m| m.is_file());
    if !common::require(
        host_xdg_open,
        "the host has no /usr/bin/xdg-open (install xdg-utils)",
    ) {
        return;
    }

    let (conn, calls) = portal(&bus);
    // Local files: a viewer of the clone's own, made the default for text/plain inside the
    // clone the way a desktop does it, records what it was asked to open. DISPLAY only tells the
    // host's xdg-open that there is a desktop.
    let script = r#"
        command -v xdg-open
        xdg-open 'https://example.org/doppel?from=clone'; echo "url=$?"
        xdg-open 'https://example.org/early'; echo "early=$?"
        xdg-open 'https://example.org/x?answer=2'; echo "failed=$?"
        xdg-open 'https://example.org/x?answer=1'; echo "cancelled=$?"
        xdg-open -x; echo "option=$?"
        /usr/bin/xdg-open 'tg://resolve?domain=doppel'; echo "abs=$?"
        data="${XDG_DATA_HOME:-$HOME/.local/share}"; config="${XDG_CONFIG_HOME:-$HOME/.config}"
        mkdir -p "$data/applications" "$config"
        printf '#!/bin/sh
echo "$1" > "$HOME/opened-inside"
' > "$HOME/viewer"
        chmod +x "$HOME/viewer"
        printf '[Desktop Entry]
Type=Application
Name=Viewer
Exec=%s %%f
MimeType=text/plain;
'             "$HOME/viewer" > "$data/applications/doppel-viewer.desktop"
        printf '[Default Applications]
text/plain=doppel-viewer.desktop
' > "$config/mimeapps.list"
        echo note > "$HOME/clone-note.txt"
        DISPLAY=:0 xdg-open "file://$HOME/clone-note.txt"; echo "file=$?"
        sleep 1; echo "inside=$(cat "$HOME/opened-inside")"
        xdg-open "$HOME/missing.txt"; echo "missing=$?"
    "#;
    let started = Instant::now();
    let out = run_sh(&env, &bus, id, script);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(out.status.success(), "{report}");
    // Every answer was seen: none of the calls waited out the answer timeout.
    assert!(took < Duration::from_secs(60), "took {took:?}: {report}");
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.ends_with("/doppel/bin/xdg-open"),
        "xdg-open is not Doppel's opener first in PATH: {report}"
    );
    for want in [
        "url=0",
        "early=0",
        "failed=4",
        "cancelled=4",
        "option=1",
        "abs=0",
        "file=0",
        "missing=2",
    ] {
        assert!(stdout.lines().any(|l| l == want), "no {want}: {report}");
    }
    assert!(
        stdout.contains("inside=") && stdout.contains("/clone-note.txt"),
        "the clone's own viewer did not get the file: {report}"
    );
    assert!(
        stderr.contains("missing.txt"),
        "a missing file is not named: {report}"
    );

    let calls = calls.lock().unwrap().clone();
    eprintln!("the portal saw: {calls:?}");
    let uris: Vec<&str> = calls
        .iter()
        .filter(|(m, _)| m == "OpenURI")
        .map(|(_, u)| u.as_str())
        .collect();
    assert_eq!(
        uris,
        [
            "https://example.org/doppel?from=clone",
            "https://example.org/early",
            "https://example.org/x?answer=2",
            "https://example.org/x?answer=1",
            "tg://resolve?domain=doppel",
        ],
        "{calls:?}"
    );
    assert!(
        calls.iter().all(|(m, _)| m == "OpenURI"),
        "a local file went to the host's portal: {calls:?}"
    );
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
