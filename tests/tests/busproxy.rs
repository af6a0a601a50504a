//! Doppel's session-bus proxy against a real dbus-daemon: clones own the host copy's names side
//! by side, see and call only what their rules allow, pass file descriptors, have their
//! notifications labelled (and get the actions back), and their tray items do not collide.
//!
//! Needs dbus-daemon (package dbus-daemon); no root, no display.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbus::blocking::{fdo::DBusProxy, Connection};
use zbus::zvariant::{OwnedFd, OwnedValue};

fn have_dbus_daemon() -> bool {
    let found = Command::new("dbus-daemon")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "dbus-daemon is missing (package dbus-daemon)"
        );
        eprintln!("skipping: dbus-daemon is not installed (package dbus-daemon)");
    }
    found
}

/// A private session bus.
struct Bus {
    child: Child,
    address: String,
    dir: tempfile::TempDir,
}

impl Bus {
    fn start() -> Bus {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}/bus", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Bus {
            child,
            address: line.trim().to_owned(),
            dir,
        }
    }

    fn connect(&self) -> Connection {
        zbus::blocking::connection::Builder::address(self.address.as_str())
            .unwrap()
            .build()
            .unwrap()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running doppel-bus-proxy for profile `id`.
struct Proxy {
    child: Child,
    address: String,
    _ready: std::fs::File,
}

fn proxy_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("doppel-bus-proxy");
    assert!(
        p.exists(),
        "{} is missing: build the workspace first",
        p.display()
    );
    p
}

impl Proxy {
    fn start(bus: &Bus, id: &str, label: &str, rules: &[&str]) -> Proxy {
        let socket = bus.dir.path().join(format!("proxy-{id}"));
        let (r, w) = nix::unistd::pipe().unwrap();
        let wfd = w.as_raw_fd();
        let mut cmd = Command::new(proxy_bin());
        cmd.arg(&bus.address)
            .arg(&socket)
            .args(rules)
            .arg(format!("--suffix=Doppel_{id}"))
            .arg(format!("--label={label}"))
            .arg(format!("--desktop-entry=org.doppel.Doppel.{id}"))
            .arg(format!("--fd={wfd}"));
        // SAFETY: clears FD_CLOEXEC on one descriptor between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if libc::fcntl(wfd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(w);
        let mut ready = std::fs::File::from(r);
        let mut b = [0u8; 1];
        ready.read_exact(&mut b).unwrap();
        Proxy {
            child,
            address: format!("unix:path={}", socket.display()),
            _ready: ready,
        }
    }

    fn connect(&self) -> Connection {
        zbus::blocking::connection::Builder::address(self.address.as_str())
            .unwrap()
            .build()
            .unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host_names(bus: &Bus) -> Vec<String> {
    let c = bus.connect();
    DBusProxy::new(&c)
        .unwrap()
        .list_names()
        .unwrap()
        .into_iter()
        .map(|n| n.to_string())
        .collect()
}

fn request(c: &Connection, name: &str) -> Result<u32, zbus::Error> {
    let reply = c.call_method(
        Some("org.freedesktop.DBus"),
        "/org/freedesktop/DBus",
        Some("org.freedesktop.DBus"),
        "RequestName",
        &(name, 4u32),
    )?;
    reply.body().deserialize::<u32>()
}

fn error_name(e: zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        other => format!("{other}"),
    }
}

#[test]
fn clones_own_the_host_copys_name_side_by_side() {
    if !have_dbus_daemon() {
        return;
    }
    let bus = Bus::start();
    let host = bus.connect();
    assert_eq!(request(&host, "im.dino.Dino").unwrap(), 1);
    let rules = ["--own=im.dino.Dino"];
    let work = Proxy::start(&bus, "work", "Dino (Work)", &rules);
    let home = Proxy::start(&bus, "home", "Dino (Home)", &rules);
    let (cw, ch) = (work.connect(), home.connect());
    // Without the proxy each would be told the name is taken (3) and hand off to the host copy.
    assert_eq!(
        request(&cw, "im.dino.Dino").unwrap(),
        1,
        "the clone is primary"
    );
    assert_eq!(
        request(&ch, "im.dino.Dino").unwrap(),
        1,
        "so is a second clone"
    );
    let names = host_names(&bus);
    for n in [
        "im.dino.Dino",
        "im.dino.Dino.Doppel_work",
        "im.dino.Dino.Doppel_home",
    ] {
        assert!(
            names.iter().any(|x| x == n),
            "{n} not on the host bus: {names:?}"
        );
    }
    // The clone sees its own name as the one it asked for, owned by itself.
    let d = DBusProxy::new(&cw).unwrap();
    let owner = d
        .get_name_owner("im.dino.Dino".try_into().unwrap())
        .unwrap();
    assert_eq!(owner.as_str(), cw.unique_name().unwrap().as_str());
    let seen: Vec<String> = d
        .list_names()
        .unwrap()
        .into_iter()
        .map(|n| n.to_string())
        .collect();
    assert!(seen.contains(&"im.dino.Dino".to_owned()), "{seen:?}");
    assert!(
        !seen.iter().any(|n| n.contains("Doppel_home")),
        "a clone sees another: {seen:?}"
    );
}

#[test]
fn rules_hide_and_refuse_and_eavesdropping_is_refused() {
    if !have_dbus_daemon() {
        return;
    }
    let bus = Bus::start();
    let host = bus.connect();
    assert_eq!(request(&host, "org.doppel.Secret").unwrap(), 1);
    let p = Proxy::start(&bus, "work", "X (Work)", &["--own=org.example.App"]);
    let c = p.connect();
    let d = DBusProxy::new(&c).unwrap();
    assert!(!d
        .name_has_owner("org.doppel.Secret".try_into().unwrap())
        .unwrap());
    let names: Vec<String> = d
        .list_names()
        .unwrap()
        .into_iter()
        .map(|n| n.to_string())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n == "org.doppel.Secret" || n == host.unique_name().unwrap().as_str()),
        "{names:?}"
    );
    let denied = "org.freedesktop.DBus.Error.AccessDenied";
    let call = c.call_method(
        Some("org.doppel.Secret"),
        "/",
        Some("org.freedesktop.DBus.Peer"),
        "Ping",
        &(),
    );
    assert_eq!(error_name(call.unwrap_err()), denied);
    assert_eq!(
        error_name(request(&c, "org.doppel.Other").unwrap_err()),
        denied
    );
    let monitor = c.call_method(
        Some("org.freedesktop.DBus"),
        "/org/freedesktop/DBus",
        Some("org.freedesktop.DBus.Monitoring"),
        "BecomeMonitor",
        &(Vec::<String>::new(), 0u32),
    );
    assert_eq!(error_name(monitor.unwrap_err()), denied);
    let eavesdrop = c.call_method(
        Some("org.freedesktop.DBus"),
        "/org/freedesktop/DBus",
        Some("org.freedesktop.DBus"),
        "AddMatch",
        &("type='method_call',eavesdrop='true'",),
    );
    assert_eq!(error_name(eavesdrop.unwrap_err()), denied);
    // Control: the same calls straight on the bus are not refused, so the proxy did it.
    assert!(host
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "AddMatch",
            &("type='signal',eavesdrop='true'",)
        )
        .is_ok());
}

/// A service on the host bus the clone may talk to.
struct TestService {
    signalled: Arc<Mutex<u32>>,
}

#[zbus::interface(name = "org.doppel.Test")]
impl TestService {
    fn echo(&self, s: String) -> String {
        s
    }

    fn read_fd(&self, fd: OwnedFd) -> String {
        let mut f = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        s
    }

    fn calls(&self) -> u32 {
        *self.signalled.lock().unwrap()
    }
}

#[test]
fn talk_names_are_callable_and_descriptors_pass() {
    if !have_dbus_daemon() {
        return;
    }
    let bus = Bus::start();
    let service = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name("org.doppel.Test")
        .unwrap()
        .serve_at(
            "/test",
            TestService {
                signalled: Arc::default(),
            },
        )
        .unwrap()
        .build()
        .unwrap();
    let p = Proxy::start(&bus, "work", "X (Work)", &["--talk=org.doppel.Test"]);
    let c = p.connect();
    let r = c
        .call_method(
            Some("org.doppel.Test"),
            "/test",
            Some("org.doppel.Test"),
            "Echo",
            &("hello",),
        )
        .unwrap();
    assert_eq!(r.body().deserialize::<String>().unwrap(), "hello");
    let (rd, wr) = nix::unistd::pipe().unwrap();
    std::fs::File::from(wr)
        .write_all(b"through the proxy")
        .unwrap();
    let r = c
        .call_method(
            Some("org.doppel.Test"),
            "/test",
            Some("org.doppel.Test"),
            "ReadFd",
            &(zbus::zvariant::Fd::from(&rd),),
        )
        .unwrap();
    assert_eq!(
        r.body().deserialize::<String>().unwrap(),
        "through the proxy"
    );
    // Its signals reach the clone.
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.doppel.Test")
        .unwrap()
        .build();
    let mut signals = zbus::blocking::MessageIterator::for_match_rule(rule, &c, None).unwrap();
    service
        .emit_signal(None::<()>, "/test", "org.doppel.Test", "Changed", &("x",))
        .unwrap();
    let got = signals.next().unwrap().unwrap();
    assert_eq!(got.header().member().unwrap().as_str(), "Changed");
}

/// What the notification server was sent: app name and hints, per notification.
type Seen = Arc<Mutex<Vec<(String, HashMap<String, OwnedValue>)>>>;

/// A notification server that records what it is sent.
#[derive(Clone, Default)]
struct Notifications {
    seen: Seen,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        _summary: String,
        _body: String,
        _actions: Vec<String>,
        hints: HashMap<String, OwnedValue>,
        _timeout: i32,
    ) -> u32 {
        self.seen.lock().unwrap().push((app_name, hints));
        7
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["actions".into(), "body".into()]
    }
}

#[test]
fn notifications_carry_the_profile_and_actions_come_back() {
    if !have_dbus_daemon() {
        return;
    }
    let bus = Bus::start();
    let server = Notifications::default();
    let conn = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name("org.freedesktop.Notifications")
        .unwrap()
        .serve_at("/org/freedesktop/Notifications", server.clone())
        .unwrap()
        .build()
        .unwrap();
    let p = Proxy::start(
        &bus,
        "work",
        "Test Chat (Work)",
        &["--talk=org.freedesktop.Notifications"],
    );
    let c = p.connect();
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface("org.freedesktop.Notifications")
        .unwrap()
        .member("ActionInvoked")
        .unwrap()
        .build();
    let mut actions = zbus::blocking::MessageIterator::for_match_rule(rule, &c, None).unwrap();
    let reply = c
        .call_method(
            Some("org.freedesktop.Notifications"),
            "/org/freedesktop/Notifications",
            Some("org.freedesktop.Notifications"),
            "Notify",
            &(
                "Test Chat",
                0u32,
                "",
                "New message",
                "hi",
                vec!["default", "Open"],
                HashMap::<String, OwnedValue>::new(),
                -1i32,
            ),
        )
        .unwrap();
    let id: u32 = reply.body().deserialize().unwrap();
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].0, "Test Chat (Work)",
        "the app name carries the profile"
    );
    assert_eq!(
        String::try_from(seen[0].1["desktop-entry"].clone()).unwrap(),
        "org.doppel.Doppel.work"
    );
    // The person clicks: the server broadcasts ActionInvoked, and the clone hears it.
    conn.emit_signal(
        None::<()>,
        "/org/freedesktop/Notifications",
        "org.freedesktop.Notifications",
        "ActionInvoked",
        &(id, "default"),
    )
    .unwrap();
    let got = actions.next().unwrap().unwrap();
    let (gid, key): (u32, String) = got.body().deserialize().unwrap();
    assert_eq!((gid, key.as_str()), (7, "default"));
}

/// A tray watcher that records the items registered with it.
#[derive(Clone, Default)]
struct Watcher {
    items: Arc<Mutex<Vec<String>>>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    fn register_status_notifier_item(&self, service: String) {
        self.items.lock().unwrap().push(service);
    }

    #[zbus(property)]
    fn is_status_notifier_host_registered(&self) -> bool {
        true
    }
}

/// Run as a separate process by [`tray_items_of_clones_and_host_do_not_collide`] (a tray item
/// is named after its process, so each needs its own): owns the PID-shaped name the app gives,
/// registers it with the watcher, says READY and waits for its stdin to close.
#[test]
fn tray_item_process() {
    let Ok(address) = std::env::var("DOPPEL_TEST_TRAY_ADDRESS") else {
        return; // run only as the child of the test below
    };
    let name = std::env::var("DOPPEL_TEST_TRAY_NAME").unwrap();
    let c = zbus::blocking::connection::Builder::address(address.as_str())
        .unwrap()
        .build()
        .unwrap();
    let code = request(&c, &name).unwrap();
    c.call_method(
        Some("org.kde.StatusNotifierWatcher"),
        "/StatusNotifierWatcher",
        Some("org.kde.StatusNotifierWatcher"),
        "RegisterStatusNotifierItem",
        &(name.as_str(),),
    )
    .unwrap();
    println!("READY {code}");
    let _ = std::io::stdout().flush();
    let mut s = String::new();
    let _ = std::io::stdin().read_to_string(&mut s);
}

fn tray_item(address: &str, name: &str) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tray_item_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DOPPEL_TEST_TRAY_ADDRESS", address)
        .env("DOPPEL_TEST_TRAY_NAME", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let start = Instant::now();
    let mut line = String::new();
    while start.elapsed() < Duration::from_secs(20) {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // libtest may have written "test tray_item_process ... " on the same line first.
        if let Some(code) = line.trim().split("READY ").nth(1) {
            assert_eq!(code, "1", "{name} was not owned through {address}");
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the tray item process for {name} did not get ready");
}

#[test]
fn tray_items_of_clones_and_host_do_not_collide() {
    if !have_dbus_daemon() {
        return;
    }
    let bus = Bus::start();
    let watcher = Watcher::default();
    let _w = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name("org.kde.StatusNotifierWatcher")
        .unwrap()
        .serve_at("/StatusNotifierWatcher", watcher.clone())
        .unwrap()
        .build()
        .unwrap();
    let rules = [
        "--talk=org.kde.StatusNotifierWatcher",
        "--own=org.kde.StatusNotifierItem-*",
    ];
    let a = Proxy::start(&bus, "work", "A (Work)", &rules);
    let b = Proxy::start(&bus, "home", "A (Home)", &rules);
    // Inside a PID namespace both clones' apps have the same small PID, hence the same name.
    let inside = "org.kde.StatusNotifierItem-2-1";
    let mut kids = vec![
        tray_item(&bus.address, "org.kde.StatusNotifierItem-999999-1"),
        tray_item(&a.address, inside),
        tray_item(&b.address, inside),
    ];
    let items = watcher.items.lock().unwrap().clone();
    assert_eq!(items.len(), 3, "{items:?}");
    let mut unique = items.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "tray items collide: {items:?}");
    let names = host_names(&bus);
    for i in &items {
        assert!(i.starts_with("org.kde.StatusNotifierItem-"), "{i}");
        assert!(
            names.contains(i),
            "{i} is not owned on the host bus: {names:?}"
        );
    }
    for k in &mut kids {
        drop(k.stdin.take());
        let _ = k.wait();
    }
}
