//! The window, for real: `doppel-gui` run as an unprivileged user under Xvfb with a private
//! session bus, its window found, measured and photographed (into `artifacts/`), with no
//! profiles and with profiles in different states made by the CLI.
//!
//! Needs root (it creates the test user and runs Xvfb), Xvfb, xdotool, xwininfo, xauth,
//! dbus-daemon and imagemagick; the running profile needs what `doppel run` needs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/display.rs"]
mod display;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use common::{Env, User};
use display::{terminate, Display, SessionBus};

/// The window's default size, as set in gui/src/window.rs.
const WINDOW_SIZE: (u32, u32) = (720, 560);

fn can_run() -> bool {
    common::require(common::is_root(), "the GUI test needs root (sudo)")
        && [
            "Xvfb",
            "xdotool",
            "xwininfo",
            "xauth",
            "dbus-daemon",
            "import",
            "convert",
        ]
        .iter()
        .all(|c| common::require(common::have(c), &format!("{c} is not installed")))
}

/// `doppel-gui`, copied next to the staged `doppel` (where it looks for it), once.
fn staged_gui() -> &'static Path {
    static GUI: OnceLock<PathBuf> = OnceLock::new();
    GUI.get_or_init(|| common::stage_program("doppel-gui"))
}

fn gui_env(env: &Env, display: &Display, bus: &SessionBus) -> Vec<(&'static str, String)> {
    let mut vars: Vec<(&str, String)> = env.vars.clone();
    vars.extend(display.env());
    vars.push(("DBUS_SESSION_BUS_ADDRESS", bus.address.clone()));
    vars.push(("GDK_BACKEND", "x11".into()));
    // Xvfb has no GL; the cairo renderer draws the same widgets.
    vars.push(("GSK_RENDERER", "cairo".into()));
    vars.push(("NO_AT_BRIDGE", "1".into()));
    vars
}

/// A display, a session bus and a running `doppel-gui`, torn down in reverse order.
struct Session {
    gui: Child,
    display: Display,
    bus: SessionBus,
    window: u64,
    _serial: MutexGuard<'static, ()>,
}

/// One test at a time: both share the test user's `~/.Xauthority`, which concurrent `xauth`
/// runs can corrupt, and two GTK starts at once on a small machine make timing flaky.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Session {
    fn start(env: &Env, tag: &str, serial: MutexGuard<'static, ()>) -> Session {
        let gui_bin = staged_gui();
        let display = Display::start(&env.user, tag, "1024x768");
        let bus = SessionBus::start(&env.user, tag);
        let vars = gui_env(env, &display, &bus);
        let log = common::artifacts().join(format!("{tag}-gui.log"));
        let out = fs::File::create(&log).unwrap();
        let mut gui = env
            .user
            .command(&vars, &[gui_bin.as_os_str()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut found = Vec::new();
        let up = common::wait_until(Duration::from_secs(30), || {
            found = display.windows_named("Doppel");
            !found.is_empty() || gui.try_wait().ok().flatten().is_some()
        });
        if !up || found.is_empty() {
            let st = gui.try_wait().ok().flatten();
            terminate(&mut gui, Duration::from_secs(5));
            panic!(
                "no Doppel window appeared (exit: {st:?}); log:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        // Let it draw, and let one refresh from core pass.
        std::thread::sleep(Duration::from_millis(2500));
        Session {
            gui,
            display,
            bus,
            window: found[0],
            _serial: serial,
        }
    }

    fn size(&self) -> (u32, u32) {
        let info = self.display.window_info(self.window);
        let field = |name: &str| -> u32 {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in xwininfo output:\n{info}"))
        };
        (field("Width:"), field("Height:"))
    }

    /// Photographs the window into `artifacts/<name>` and checks that it is not blank.
    fn screenshot(&self, name: &str) -> PathBuf {
        let path = common::artifacts().join(name);
        let out = self
            .display
            .root_command("import")
            .args(["-window", &self.window.to_string()])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let colours = distinct_colours(&path);
        assert!(
            colours > 16,
            "{} looks blank: only {colours} distinct colours",
            path.display()
        );
        path
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        terminate(&mut self.gui, Duration::from_secs(5));
    }
}

fn distinct_colours(png: &Path) -> u64 {
    let out = std::process::Command::new("convert")
        .arg(png)
        .args(["-format", "%k", "info:"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn empty_window_has_its_size_and_an_empty_state() {
    if !can_run() {
        return;
    }
    let serial = serial();
    let env = Env::new(User::get("doppeltest"), "gui-empty");
    let s = Session::start(&env, "gui-empty", serial);
    assert_eq!(s.size(), WINDOW_SIZE, "the window's default size");
    s.screenshot("gui-empty.png");
    // Ctrl+N opens the new-profile dialog, which lists the installed apps.
    let _ = s
        .display
        .root_command("xdotool")
        .args(["windowfocus", "--sync", &s.window.to_string()])
        .status();
    let _ = s
        .display
        .root_command("xdotool")
        .args(["key", "ctrl+n"])
        .status();
    let mut dialogs = Vec::new();
    let opened = common::wait_until(Duration::from_secs(10), || {
        dialogs = s.display.windows_named("New Profile");
        !dialogs.is_empty()
    });
    assert!(opened, "Ctrl+N did not open the New Profile dialog");
    std::thread::sleep(Duration::from_millis(2000));
    let path = common::artifacts().join("gui-new-profile.png");
    let st = s
        .display
        .root_command("import")
        .args(["-window", &dialogs[0].to_string()])
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(distinct_colours(&path) > 16, "the dialog looks blank");
}

#[test]
fn profiles_in_different_states_are_listed() {
    if !can_run() {
        return;
    }
    let serial = serial();
    let env = Env::new(User::get("doppeltest"), "gui-profiles");
    for (id, app, name, color) in [
        ("work", "org.telegram.desktop", "Work", "#3584e4"),
        ("personal", "org.telegram.desktop", "Personal", "#e01b24"),
        ("photos", "sh", "Photos", "#33d17a"),
    ] {
        common::ok(&env.doppel(&["create", id, "--app", app, "--name", name, "--color", color]));
    }
    // A locked profile without the helper: an encrypted profile whose volume is not mounted
    // is what core calls locked.
    let file = env.root.join("config/doppel/profiles/photos.toml");
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.contains("encrypted = false"), "{text}");
    fs::write(&file, text.replace("encrypted = false", "encrypted = true")).unwrap();

    let mut running =
        env.spawn_doppel(&["run", "personal", "--network", "none", "--", "sleep", "600"]);
    let up = common::wait_until(Duration::from_secs(20), || {
        common::ok(&env.doppel(&["list"])).contains("personal: running")
    });
    if !up {
        terminate(&mut running, Duration::from_secs(5));
        let out = running.wait_with_output().unwrap();
        panic!(
            "doppel run personal did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list = common::ok(&env.doppel(&["list"]));
    assert!(list.contains("photos: locked"), "{list}");
    assert!(list.contains("work: stopped"), "{list}");

    let s = Session::start(&env, "gui-profiles", serial);
    assert_eq!(s.size(), WINDOW_SIZE, "the window's default size");
    let with_running = s.screenshot("gui-profiles.png");

    // The CLI stops the running one: the window follows within a second or two.
    common::ok(&env.doppel(&["stop", "personal"]));
    let _ = running.wait();
    std::thread::sleep(Duration::from_millis(2500));
    let after = s.screenshot("gui-profiles-stopped.png");
    assert!(
        fs::read(&with_running).unwrap() != fs::read(&after).unwrap(),
        "the window did not change after `doppel stop` (compare {} and {})",
        with_running.display(),
        after.display()
    );

    // The unlock dialog, opened the way the row's Unlock button does: the app's exported
    // `unlock` action, here called over the session bus.
    let out = env
        .user
        .command(
            &[("DBUS_SESSION_BUS_ADDRESS", s.bus.address.clone())],
            &[
                "gdbus",
                "call",
                "--session",
                "--dest",
                "org.doppel.Doppel",
                "--object-path",
                "/org/doppel/Doppel",
                "--method",
                "org.gtk.Actions.Activate",
                "unlock",
                "[<'photos'>]",
                "{}",
            ],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "activating app.unlock failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut dialogs = Vec::new();
    let opened = common::wait_until(Duration::from_secs(10), || {
        dialogs = s.display.windows_named("Unlock Profile");
        !dialogs.is_empty()
    });
    assert!(opened, "app.unlock did not open the Unlock Profile dialog");
    std::thread::sleep(Duration::from_millis(1500));
    let path = common::artifacts().join("gui-unlock.png");
    let st = s
        .display
        .root_command("import")
        .args(["-window", &dialogs[0].to_string()])
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        distinct_colours(&path) > 16,
        "the unlock dialog looks blank"
    );
    let info = s.display.window_info(dialogs[0]);
    assert!(
        info.contains("Width: 420"),
        "the unlock dialog is not 420 pixels wide:\n{info}"
    );
}

/// The threads' backtraces from each core file in `dir` (which are then removed), read with
/// gdb when it is installed; empty when there are none.
fn backtraces(exe: &Path, dir: &Path) -> String {
    let mut text = String::new();
    for core in fs::read_dir(dir).unwrap().flatten() {
        if !core.file_name().to_string_lossy().starts_with("core") {
            continue;
        }
        let out = std::process::Command::new("gdb")
            .args(["-q", "-batch", "-ex", "thread apply all bt"])
            .arg(exe)
            .arg(core.path())
            .output();
        match out {
            Ok(o) => {
                text.push_str("\n--- backtrace of the crash (gdb) ---\n");
                text.push_str(&String::from_utf8_lossy(&o.stdout));
            }
            Err(e) => text.push_str(&format!("\n(a core file was left; gdb: {e})\n")),
        }
        let _ = fs::remove_file(core.path());
    }
    text
}

/// The driver (tests/src/gui_driver.rs), copied next to the staged `doppel`, where both it and
/// the window look for the CLI.
fn staged_driver() -> PathBuf {
    let dst = common::staged().dir.join("doppel-gui-driver");
    fs::copy(env!("CARGO_BIN_EXE_doppel-gui-driver"), &dst).unwrap();
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).unwrap();
    dst
}

#[test]
fn the_window_creates_launches_stops_renames_and_deletes_a_profile() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let env = Env::new(User::get("doppeltest"), "gui-driven");
    // The app to pick: a desktop entry of the user's own for a program that only waits, so
    // that the clone starts fast and needs no display of its own.
    env.user.write_file(
        &format!(
            "{}/applications/doppel-sleeper.desktop",
            env.root
                .join("data")
                .strip_prefix(&env.user.home)
                .unwrap()
                .display()
        ),
        "[Desktop Entry]\nType=Application\nName=Doppel Sleeper\n\
         Exec=sleep 600\nIcon=utilities-terminal\n",
    );
    let shots = env.root.join("shots");
    fs::create_dir_all(&shots).unwrap();
    common::chown(&shots, env.user.uid, env.user.gid);
    // A clone a failed earlier run left behind would hold the instance lock of "driven".
    let _ = std::process::Command::new("pkill")
        .args(["-u", &env.user.name, "-f", "doppel run driven"])
        .status();
    common::wait_until(Duration::from_secs(10), || {
        !std::process::Command::new("pgrep")
            .args(["-u", &env.user.name, "-f", "doppel run driven"])
            .status()
            .is_ok_and(|s| s.success())
    });
    let driver = staged_driver();
    let display = Display::start(&env.user, "gui-driven", "1024x768");
    let bus = SessionBus::start(&env.user, "gui-driven");
    let vars = gui_env(&env, &display, &bus);
    let cores = env.root.join("cores");
    fs::create_dir_all(&cores).unwrap();
    common::chown(&cores, env.user.uid, env.user.gid);
    let log = common::artifacts().join("gui-driven.log");
    let out = fs::File::create(&log).unwrap();
    let mut cmd = env.user.command(
        &vars,
        &[
            driver.as_os_str(),
            "Doppel Sleeper".as_ref(),
            shots.as_os_str(),
        ],
    );
    // A crash leaves a core file here (with the kernel's plain `core` pattern), read below.
    cmd.current_dir(&cores);
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let unlimited = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &unlimited);
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let ended = common::wait_until(Duration::from_secs(300), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !ended {
        terminate(&mut child, Duration::from_secs(5));
    }
    let status = child.wait().unwrap();
    for shot in fs::read_dir(&shots).unwrap().flatten() {
        let _ = fs::copy(shot.path(), common::artifacts().join(shot.file_name()));
    }
    let mut transcript = fs::read_to_string(&log).unwrap_or_default();
    transcript.push_str(&backtraces(&driver, &cores));
    if !status.success() {
        // The clone outlives the window; do not leave it to the next run.
        let _ = env.doppel(&["stop", "driven"]);
    }
    assert!(
        ended && status.success(),
        "the driven window failed ({status}):\n{transcript}"
    );
    for step in [
        "the CLI sees \"driven: stopped\"",
        "the CLI sees \"driven: running\"",
        "the CLI sees \"(Renamed)\"",
        "deleted",
    ] {
        assert!(transcript.contains(step), "no step {step:?}:\n{transcript}");
    }
    let list = common::ok(&env.doppel(&["list"]));
    assert!(
        !list.contains("driven"),
        "the deleted profile is still listed:\n{list}"
    );
    drop(display);
}
