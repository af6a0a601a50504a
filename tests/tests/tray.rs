//! The tray, for real: `doppel-gui` run as an unprivileged user under Xvfb, on a private
//! session bus where this test plays the desktop's tray host (an
//! `org.kde.StatusNotifierWatcher` written with zbus). The item must register; its dbusmenu
//! must list the profiles (made by the CLI, in different states) with their states; "Launch"
//! in it must start a profile and "Stop" stop it; closing the window must keep Doppel in the
//! tray, and the tray icon's click bring the window back; with the setting off, closing quits.
//!
//! Needs root (it creates the test user and runs Xvfb), Xvfb, xdotool, xauth and dbus-daemon;
//! the profiles run `sleep` through `doppel run`, with what that needs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/display.rs"]
mod display;

use std::collections::HashMap;
use std::fs;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zbus::blocking::Connection;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use common::{Env, User};
use display::{terminate, Display, SessionBus};

const WATCHER: &str = "org.kde.StatusNotifierWatcher";
const ITEM: &str = "org.kde.StatusNotifierItem";
const MENU: &str = "com.canonical.dbusmenu";

fn can_run() -> bool {
    common::require(common::is_root(), "the tray test needs root (sudo)")
        && [
            "Xvfb",
            "xdotool",
            "xauth",
            "xdpyinfo",
            "dbus-daemon",
            "sleep",
        ]
        .iter()
        .all(|c| common::require(common::have(c), &format!("{c} is not installed")))
}

/// A StatusNotifierWatcher that also says a host is there: what a desktop panel provides.
#[derive(Default)]
struct Watcher {
    items: Arc<Mutex<Vec<String>>>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    async fn register_status_notifier_item(
        &self,
        service: String,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) {
        // As KDE's watcher: a bare object path means "on the caller's connection".
        let entry = match header.sender() {
            Some(sender) if service.starts_with('/') => format!("{sender}{service}"),
            _ => service,
        };
        self.items.lock().unwrap().push(entry.clone());
        let _ = Self::status_notifier_item_registered(&emitter, &entry).await;
    }

    async fn register_status_notifier_host(&self, _service: String) {}

    #[zbus(property)]
    async fn registered_status_notifier_items(&self) -> Vec<String> {
        self.items.lock().unwrap().clone()
    }

    #[zbus(property)]
    async fn is_status_notifier_host_registered(&self) -> bool {
        true
    }

    #[zbus(property)]
    async fn protocol_version(&self) -> i32 {
        0
    }

    #[zbus(signal)]
    async fn status_notifier_item_registered(
        emitter: &SignalEmitter<'_>,
        service: &str,
    ) -> zbus::Result<()>;
}

/// One line of the tray menu, as dbusmenu reports it.
#[derive(Debug)]
struct Entry {
    id: i32,
    label: String,
    enabled: bool,
}

type RawLayout = (i32, HashMap<String, OwnedValue>, Vec<OwnedValue>);

/// The tray item, seen from the host: its bus name and object paths.
struct Item<'a> {
    conn: &'a Connection,
    name: String,
    path: String,
    menu: OwnedObjectPath,
}

impl<'a> Item<'a> {
    /// The item registered as `entry` ("name" or "name/path", as the watcher stores it).
    fn new(conn: &'a Connection, entry: &str) -> Item<'a> {
        let (name, path) = match entry.find('/') {
            Some(i) => (entry[..i].to_owned(), entry[i..].to_owned()),
            None => (entry.to_owned(), "/StatusNotifierItem".to_owned()),
        };
        let mut item = Item {
            conn,
            name,
            path,
            menu: OwnedObjectPath::default(),
        };
        item.menu = item.property("Menu").try_into().unwrap();
        item
    }

    fn property(&self, name: &str) -> OwnedValue {
        let reply = self
            .conn
            .call_method(
                Some(self.name.as_str()),
                self.path.as_str(),
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(ITEM, name),
            )
            .unwrap_or_else(|e| panic!("Get {ITEM}.{name} on {}: {e}", self.name));
        reply.body().deserialize::<OwnedValue>().unwrap()
    }

    fn string_property(&self, name: &str) -> String {
        String::try_from(self.property(name)).unwrap()
    }

    /// The menu, flattened in order (separators left out).
    fn menu(&self) -> Vec<Entry> {
        let reply = self
            .conn
            .call_method(
                Some(self.name.as_str()),
                &self.menu,
                Some(MENU),
                "GetLayout",
                &(0i32, -1i32, Vec::<String>::new()),
            )
            .unwrap();
        let (_revision, root): (u32, RawLayout) = reply.body().deserialize().unwrap();
        let mut out = Vec::new();
        flatten(root, &mut out);
        out
    }

    /// Clicks the item labelled `label` in the section whose heading contains `section`.
    fn click(&self, section: &str, label: &str) {
        let menu = self.menu();
        let start = menu
            .iter()
            .position(|e| e.label.contains(section))
            .unwrap_or_else(|| panic!("no section {section:?} in the tray menu: {menu:#?}"));
        // The section runs until the next heading ("Name — State").
        let entry = menu[start + 1..]
            .iter()
            .take_while(|e| !e.label.contains(" — "))
            .find(|e| e.label == label)
            .unwrap_or_else(|| {
                panic!("no {label:?} under {section:?} in the tray menu: {menu:#?}")
            });
        assert!(entry.enabled, "{label:?} is disabled: {menu:#?}");
        self.conn
            .call_method(
                Some(self.name.as_str()),
                &self.menu,
                Some(MENU),
                "Event",
                &(entry.id, "clicked", Value::from(0i32), 0u32),
            )
            .unwrap();
    }

    /// A left click on the icon.
    fn activate(&self) {
        self.conn
            .call_method(
                Some(self.name.as_str()),
                self.path.as_str(),
                Some(ITEM),
                "Activate",
                &(0i32, 0i32),
            )
            .unwrap();
    }

    fn labels(&self) -> Vec<String> {
        self.menu().into_iter().map(|e| e.label).collect()
    }
}

fn flatten(node: RawLayout, out: &mut Vec<Entry>) {
    let (id, props, children) = node;
    let text = |k: &str| {
        props
            .get(k)
            .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
    };
    let enabled = props
        .get("enabled")
        .and_then(|v| bool::try_from(v).ok())
        .unwrap_or(true);
    // The root (id 0) has no label; separators have a type and no label.
    if id != 0 && text("type").as_deref() != Some("separator") {
        out.push(Entry {
            id,
            label: text("label").unwrap_or_default(),
            enabled,
        });
    }
    for c in children {
        flatten(RawLayout::try_from(c).unwrap(), out);
    }
}

/// `doppel-gui`, copied next to the staged `doppel` (where it looks for it).
fn press(d: &Display, window: u64, keys: &str) {
    let _ = d
        .root_command("xdotool")
        .args(["windowfocus", "--sync", &window.to_string()])
        .status();
    let st = d
        .root_command("xdotool")
        .args(["key", keys])
        .status()
        .unwrap();
    assert!(st.success(), "xdotool key {keys} failed");
}

/// Stops what the test started, whatever happened to it.
struct Cleanup<'a> {
    env: &'a Env,
    children: Vec<Child>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for id in ["work", "personal"] {
            let _ = self.env.doppel(&["stop", id]);
        }
        for c in &mut self.children {
            terminate(c, Duration::from_secs(5));
        }
    }
}

#[test]
fn tray_lists_profiles_launches_one_and_keeps_doppel_when_closed() {
    if !can_run() {
        return;
    }
    let env = Env::new(User::get("doppeltest"), "tray");
    for (id, name) in [
        ("work", "Work"),
        ("personal", "Personal"),
        ("photos", "Photos"),
    ] {
        common::ok(&env.doppel(&[
            "create",
            id,
            "--app",
            "sh",
            "--name",
            name,
            "--network",
            "none",
        ]));
    }
    let profiles = env.root.join("config/doppel/profiles");
    // "work" runs something that lasts, so that a launch from the tray can be seen.
    let file = profiles.join("work.toml");
    let text = fs::read_to_string(&file).unwrap();
    let edited: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("command = ") {
                "command = [\"sleep\", \"600\"]".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert!(edited.iter().any(|l| l.contains("sleep")), "{text}");
    fs::write(&file, edited.join("\n") + "\n").unwrap();
    // Locked without the helper: an encrypted profile whose volume is not mounted.
    let file = profiles.join("photos.toml");
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.contains("encrypted = false"), "{text}");
    fs::write(&file, text.replace("encrypted = false", "encrypted = true")).unwrap();

    let mut cleanup = Cleanup {
        env: &env,
        children: Vec::new(),
    };
    cleanup
        .children
        .push(env.spawn_doppel(&["run", "personal", "--", "sleep", "600"]));
    let up = common::wait_until(Duration::from_secs(20), || {
        common::ok(&env.doppel(&["list"])).contains("personal: running")
    });
    assert!(up, "doppel run personal did not start");

    let display = Display::start(&env.user, "tray", "1024x768");
    let bus = SessionBus::start_allowing_root(&env.user, "tray");
    let watcher = Watcher::default();
    let items = Arc::clone(&watcher.items);
    let host = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .serve_at("/StatusNotifierWatcher", watcher)
        .unwrap()
        .name(WATCHER)
        .unwrap()
        .build()
        .expect("cannot connect to the test's session bus as root");

    let mut vars: Vec<(&str, String)> = env.vars.iter().map(|(k, v)| (*k, v.clone())).collect();
    vars.extend(display.env());
    vars.push(("DBUS_SESSION_BUS_ADDRESS", bus.address.clone()));
    vars.push(("GDK_BACKEND", "x11".into()));
    vars.push(("GSK_RENDERER", "cairo".into()));
    vars.push(("NO_AT_BRIDGE", "1".into()));
    let log = common::artifacts().join("tray-gui.log");
    let out = fs::File::create(&log).unwrap();
    let gui = env
        .user
        .command(&vars, &[common::stage_program("doppel-gui").as_os_str()])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    cleanup.children.push(gui);
    let gui_log = || fs::read_to_string(&log).unwrap_or_default();

    // The item registers with the host.
    let registered = common::wait_until(Duration::from_secs(30), || {
        !items.lock().unwrap().is_empty()
    });
    assert!(registered, "no tray item registered; log:\n{}", gui_log());
    let entry = items.lock().unwrap()[0].clone();
    let item = Item::new(&host, &entry);
    assert_eq!(item.string_property("Id"), "org.doppel.Doppel");
    assert_eq!(item.string_property("Title"), "Doppel");
    // Drawn pixmaps too, for a host whose icon theme lacks Doppel's icon (not installed).
    let pixmaps: Vec<(i32, i32, Vec<u8>)> = item.property("IconPixmap").try_into().unwrap();
    assert!(
        pixmaps
            .iter()
            .any(|(w, h, data)| *w > 0 && data.len() == (w * h * 4) as usize),
        "no usable icon pixmap: {:?}",
        pixmaps
            .iter()
            .map(|(w, h, d)| (w, h, d.len()))
            .collect::<Vec<_>>()
    );

    // Its menu lists every profile with its state, then the general items.
    let mut labels = Vec::new();
    let listed = common::wait_until(Duration::from_secs(10), || {
        labels = item.labels();
        labels.iter().any(|l| l.contains("(Work) — "))
    });
    assert!(listed, "the tray menu lists no profiles: {labels:#?}");
    eprintln!("tray menu: {labels:#?}");
    for (name, state) in [
        ("(Work)", "Stopped"),
        ("(Personal)", "Running"),
        ("(Photos)", "Locked"),
    ] {
        assert!(
            labels
                .iter()
                .any(|l| l.ends_with(&format!("{name} — {state}"))),
            "no {name} — {state} in the tray menu: {labels:#?}"
        );
    }
    for general in ["Lock All", "Open Doppel", "Quit"] {
        assert!(
            labels.iter().any(|l| l == general),
            "no {general}: {labels:#?}"
        );
    }

    // "Launch" under Work starts it, and the menu follows.
    item.click("(Work) — ", "Launch");
    let running = common::wait_until(Duration::from_secs(30), || {
        common::ok(&env.doppel(&["list"])).contains("work: running")
    });
    assert!(
        running,
        "Launch in the tray did not start work: {}\nlog:\n{}",
        common::ok(&env.doppel(&["list"])),
        gui_log()
    );
    let followed = common::wait_until(Duration::from_secs(10), || {
        item.labels()
            .iter()
            .any(|l| l.ends_with("(Work) — Running"))
    });
    assert!(
        followed,
        "the tray menu did not follow: {:#?}",
        item.labels()
    );

    // "Stop" under Work stops it.
    item.click("(Work) — Running", "Stop");
    let stopped = common::wait_until(Duration::from_secs(30), || {
        common::ok(&env.doppel(&["list"])).contains("work: stopped")
    });
    assert!(
        stopped,
        "Stop in the tray did not stop work: {}",
        common::ok(&env.doppel(&["list"]))
    );

    // Closing the window (Ctrl+W) keeps Doppel in the tray; a click on the icon brings it back.
    let mut windows = Vec::new();
    let shown = common::wait_until(Duration::from_secs(10), || {
        windows = display.windows_named("Doppel");
        !windows.is_empty()
    });
    assert!(shown, "no Doppel window; log:\n{}", gui_log());
    press(&display, windows[0], "ctrl+w");
    let hidden = common::wait_until(Duration::from_secs(10), || {
        display.windows_named("Doppel").is_empty()
    });
    assert!(hidden, "Ctrl+W did not hide the window");
    std::thread::sleep(Duration::from_millis(500));
    let gui = cleanup.children.last_mut().unwrap();
    assert!(
        gui.try_wait().unwrap().is_none(),
        "doppel-gui quit instead of staying in the tray; log:\n{}",
        gui_log()
    );
    item.activate();
    let back = common::wait_until(Duration::from_secs(10), || {
        windows = display.windows_named("Doppel");
        !windows.is_empty()
    });
    assert!(
        back,
        "a click on the tray icon did not bring the window back"
    );

    // With the setting off (as the menu's checkbox sets it), closing quits.
    host.call_method(
        Some("org.doppel.Doppel"),
        "/org/doppel/Doppel",
        Some("org.gtk.Actions"),
        "SetState",
        &(
            "close-to-tray",
            Value::from(false),
            HashMap::<&str, Value>::new(),
        ),
    )
    .unwrap();
    let saved = env.root.join("config/doppel/gui.toml");
    let written = common::wait_until(Duration::from_secs(5), || {
        fs::read_to_string(&saved).is_ok_and(|t| t.contains("close_to_tray = false"))
    });
    assert!(written, "the setting was not saved to {}", saved.display());
    press(&display, windows[0], "ctrl+w");
    let gui = cleanup.children.last_mut().unwrap();
    let quit = common::wait_until(Duration::from_secs(10), || {
        gui.try_wait().unwrap().is_some()
    });
    assert!(quit, "closing the window did not quit with the setting off");
    let status = gui.wait().unwrap();
    assert!(
        status.success(),
        "doppel-gui exited with {status}; log:\n{}",
        gui_log()
    );
}
