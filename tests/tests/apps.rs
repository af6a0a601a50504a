//! Real chat apps and browsers, each run twice side by side on one display: the host copy first,
//! then a Doppel clone as the same user (issue #5). For each app:
//!
//! - the host copy shows its window;
//! - a control: a plain second launch does not make a second instance (it hands off to the
//!   first, or refuses), so a second instance through Doppel proves something;
//! - `doppel run` shows the clone's window, and both keep running;
//! - the clone's state is inside the profile, not in the user's real home;
//! - a screenshot (`artifacts/<tag>-two-instances.png`) shows every instance's window drawn;
//! - `doppel stop` and killing the host copy leave no process of the test user behind.
//!
//! Windows are told apart by process: a window's `_NET_WM_PID` names its process, and each
//! instance runs in its own mount namespace (the host copy in the test's own).
//!
//! Needs root (it creates the test user and runs Xvfb), the apps (scripts/deps.sh test), Xvfb,
//! xdotool, xprop, xauth, dbus-daemon, imagemagick, and what `doppel run` needs (pasta).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/display.rs"]
mod display;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{Env, User};
use display::{terminate, Display, SessionBus};

/// How long an app may take to show a window on a busy 2-core machine.
const WINDOW_TIMEOUT: Duration = Duration::from_secs(60);
const USER: &str = "doppel-e2e-apps";
const SCREEN: (u32, u32) = (1600, 1000);

struct App {
    /// Names the logs and the screenshot in `artifacts/`.
    tag: &'static str,
    /// The recipe in `profiles/` (`doppel create --app`).
    recipe: &'static str,
    program: &'static str,
    host_args: &'static [&'static str],
    /// Regex on the WM_CLASS instance name of the app's main windows, host's and clone's alike.
    res_name: &'static str,
    /// How many of those a fresh instance shows.
    windows: usize,
    /// The recipe gives the clone's windows the class `org.doppel.Doppel.<id>`.
    class_switch: bool,
    /// The control's arguments: a second plain launch with them must exit without adding a
    /// window. None where the app has no single-instance behaviour.
    control: Option<&'static [&'static str]>,
}

const CHROMIUM: App = App {
    tag: "chromium",
    recipe: "chromium",
    program: "chromium",
    host_args: &["--no-first-run", "--password-store=basic"],
    res_name: "^chromium$",
    windows: 1,
    class_switch: true,
    // ProcessSingleton: "Opening in existing browser session.", and the URL opens as a tab in
    // the first copy's window (without one, the first copy would open a new window).
    control: Some(&["about:blank"]),
};

const FIREFOX: App = App {
    tag: "firefox-esr",
    recipe: "firefox",
    program: "firefox-esr",
    host_args: &[],
    res_name: "^Navigator$",
    windows: 1,
    class_switch: true,
    // Mozilla remoting over the session bus: the URL opens as a tab in the first copy.
    control: Some(&["about:blank"]),
};

const DINO: App = App {
    tag: "dino-im",
    recipe: "dino",
    program: "dino-im",
    host_args: &[],
    res_name: "^dino-im$",
    windows: 1,
    class_switch: false,
    // GApplication uniqueness: the second copy activates the first (im.dino.Dino) and exits.
    control: Some(&[]),
};

const HEXCHAT: App = App {
    tag: "hexchat",
    recipe: "hexchat",
    program: "hexchat",
    host_args: &[],
    res_name: "^hexchat$",
    windows: 1,
    class_switch: true,
    // HexChat has no single-instance behaviour unless asked (--existing): a second plain copy
    // with the same home simply starts. So no control; the test still checks that the clone's
    // configuration is its own.
    control: None,
};

const PIDGIN: App = App {
    tag: "pidgin",
    recipe: "pidgin",
    program: "pidgin",
    host_args: &[],
    res_name: "^Pidgin$",
    // Accounts and Buddy List.
    windows: 2,
    class_switch: false,
    // libpurple owns im.pidgin.purple.PurpleService; a second copy says "another libpurple
    // client is already running" and exits.
    control: Some(&[]),
};

const TELEGRAM: App = App {
    tag: "telegram-desktop",
    recipe: "telegram-desktop",
    program: "telegram-desktop",
    host_args: &[],
    res_name: "^telegram-desktop$",
    windows: 1,
    class_switch: false,
    // Hands its command line to the first copy through a socket and exits.
    control: Some(&[]),
};

#[test]
fn chromium_clone_runs_beside_host_copy() {
    clones_beside_host(&CHROMIUM, &["work"]);
}

#[test]
fn firefox_esr_clone_runs_beside_host_copy() {
    clones_beside_host(&FIREFOX, &["work"]);
}

#[test]
fn dino_clone_runs_beside_host_copy() {
    clones_beside_host(&DINO, &["work"]);
}

#[test]
fn hexchat_clone_runs_beside_host_copy() {
    clones_beside_host(&HEXCHAT, &["work"]);
}

#[test]
fn pidgin_clone_runs_beside_host_copy() {
    clones_beside_host(&PIDGIN, &["work"]);
}

/// Two clones of one app at once, plus the host copy: three instances.
#[test]
fn two_telegram_clones_run_beside_host_copy() {
    clones_beside_host(&TELEGRAM, &["a", "b"]);
}

/// One test at a time: they share the test user (its `~/.Xauthority`, its home), and two
/// browsers starting at once on a small machine make timing flaky.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn can_run(app: &App) -> bool {
    common::require(common::is_root(), "the app e2e tests need root")
        && common::require(
            common::have(app.program),
            &format!("{} is not installed (scripts/deps.sh test)", app.program),
        )
        && [
            "Xvfb",
            "xdotool",
            "xprop",
            "xauth",
            "xdpyinfo",
            "dbus-daemon",
            "import",
            "convert",
            "pgrep",
        ]
        .iter()
        .all(|c| common::require(common::have(c), &format!("{c} is not installed")))
}

/// The recipe's state paths, relative to the home, for the default XDG base dirs.
fn state_paths(recipe: &str) -> Vec<String> {
    let path = common::workspace_root().join(format!("profiles/{recipe}.toml"));
    let text = fs::read_to_string(&path).unwrap();
    let start = text.find("state_paths = [").expect("no state_paths") + 15;
    let list = &text[start..start + text[start..].find(']').unwrap()];
    list.split('"')
        .skip(1)
        .step_by(2)
        .map(|p| {
            [
                ("$XDG_CONFIG_HOME/", ".config/"),
                ("$XDG_DATA_HOME/", ".local/share/"),
                ("$XDG_CACHE_HOME/", ".cache/"),
                ("~/", ""),
            ]
            .iter()
            .find_map(|(from, to)| p.strip_prefix(from).map(|rest| format!("{to}{rest}")))
            .unwrap_or_else(|| panic!("{recipe}: unexpected state path {p}"))
        })
        .collect()
}

/// A visible top-level window of the app.
#[derive(Debug)]
struct Win {
    id: u64,
    class: String,
    #[allow(dead_code)] // shown in the logs, through Debug
    title: String,
    pid: Option<u32>,
    /// The mount namespace of its process: one per instance.
    mnt: String,
}

fn mnt_ns(pid: u32) -> String {
    fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| format!("(pid {pid} gone)"))
}

fn windows(d: &Display, res_name: &str) -> Vec<Win> {
    let out = |prog: &str, args: &[&str]| {
        let o = d.root_command(prog).args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    out(
        "xdotool",
        &["search", "--onlyvisible", "--classname", res_name],
    )
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .map(|id: u64| {
        let w = id.to_string();
        // WM_CLASS(STRING) = "chromium", "Chromium"
        let class = out("xprop", &["-id", &w, "WM_CLASS"])
            .split('"')
            .nth(3)
            .unwrap_or("")
            .to_owned();
        let pid = d.window_pid(id);
        Win {
            id,
            class,
            title: out("xdotool", &["getwindowname", &w]),
            pid,
            mnt: pid.map_or_else(|| "(no pid)".into(), mnt_ns),
        }
    })
    .collect()
}

/// The app's windows grouped by instance (mount namespace).
fn instances(d: &Display, app: &App) -> BTreeMap<String, Vec<Win>> {
    let mut by = BTreeMap::<String, Vec<Win>>::new();
    for w in windows(d, app.res_name) {
        by.entry(w.mnt.clone()).or_default().push(w);
    }
    by
}

/// Copies a child's pipe into a log file, in the background.
fn drain(pipe: Option<impl Read + Send + 'static>, file: PathBuf) {
    if let Some(mut p) = pipe {
        std::thread::spawn(move || {
            if let Ok(mut f) = fs::File::create(&file) {
                let _ = std::io::copy(&mut p, &mut f);
            }
        });
    }
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(40)..].join("\n")
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    common::wait_until(timeout, || child.try_wait().unwrap().is_some())
}

fn alive(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

/// SIGTERM to the process group led by `child`, SIGKILL to what is left after 10 s; reaps it.
fn kill_group(child: &mut Child) {
    let pg = -(child.id() as libc::pid_t);
    // SAFETY: kill has no memory-safety preconditions.
    let signal = |sig| unsafe { libc::kill(pg, sig) == 0 };
    signal(libc::SIGTERM);
    if !common::wait_until(Duration::from_secs(10), || {
        let _ = child.try_wait();
        !signal(0)
    }) {
        signal(libc::SIGKILL);
    }
    let _ = child.wait();
}

/// The test user's processes, as "pid command" lines.
fn processes_of(user: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-a", "-u", user])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Unique colours in a part of an image (imagemagick).
fn colours(shot: &Path, x: u32, width: u32) -> u32 {
    let out = Command::new("convert")
        .arg(shot)
        .args([
            "-crop",
            &format!("{width}x{}+{x}+0", SCREEN.1),
            "+repage",
            "-format",
            "%k",
            "info:",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Everything a test started; dropping it (also on a failed assertion) stops and removes it
/// all: the clones, the host copy, the profiles, then the bus and the display (fields drop
/// after `drop` runs, in declaration order).
struct Session<'a> {
    env: &'a Env,
    tag: &'static str,
    created: Vec<String>,
    runs: Vec<Child>,
    host: Option<Child>,
    _bus: SessionBus,
    display: Display,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        eprintln!("[{}] cleanup", self.tag);
        for id in &self.created {
            let out = self.env.doppel(&["stop", id, "--timeout", "10"]);
            if !out.status.success() {
                eprintln!("[{}] doppel stop {id}: {}", self.tag, common::stderr(&out));
            }
        }
        for c in &mut self.runs {
            terminate(c, Duration::from_secs(10));
        }
        if let Some(mut c) = self.host.take() {
            kill_group(&mut c);
        }
        for id in &self.created {
            let out = self.env.doppel(&["delete", id, "--yes"]);
            if !out.status.success() {
                eprintln!(
                    "[{}] doppel delete {id}: {}",
                    self.tag,
                    common::stderr(&out)
                );
            }
        }
    }
}

/// The host copy, then a control, then a clone per id in `ids` (started at once), all on one
/// display and session bus, as one user.
fn clones_beside_host(app: &App, ids: &[&str]) {
    if !can_run(app) {
        return;
    }
    // Held to the end, past the check that nothing is left (it drops after `s`).
    let _serial = serial();
    let t0 = Instant::now();
    let tag = app.tag;
    let log = |msg: &str| eprintln!("[{tag} {:5.1}s] {msg}", t0.elapsed().as_secs_f64());
    let art = common::artifacts();

    let user = User::get(USER);
    // An earlier test that failed may still be winding down.
    common::wait_until(Duration::from_secs(20), || processes_of(USER).is_empty());
    common::clear_stale_telegram_files();
    let left = processes_of(USER);
    assert!(
        left.is_empty(),
        "{USER} already runs processes (left over from an earlier run?):\n{}",
        left.join("\n")
    );
    // A fresh account every time: every run sees the same first-run windows, and no profile
    // is left from an earlier test.
    let paths = state_paths(app.recipe);
    for p in paths
        .iter()
        .chain([&".config/doppel".into(), &".local/share/doppel".into()])
    {
        let _ = fs::remove_dir_all(user.home.join(p));
    }

    let display = Display::start(&user, tag, &format!("{}x{}", SCREEN.0, SCREEN.1));
    let bus = SessionBus::start(&user, tag);
    log(&format!(
        "Xvfb on {}, session bus at {}",
        display.name, bus.address
    ));
    let [(dk, dv), (xk, xv)] = display.env();
    let mut env = Env::new(user, tag)
        .with(dk, dv)
        .with(xk, xv)
        .with("DBUS_SESSION_BUS_ADDRESS", bus.address.clone());
    // Doppel and the apps run with the default XDG base dirs, as for most people: the host
    // copy keeps its state in ~/.config etc., the profiles are in ~/.config/doppel and
    // ~/.local/share/doppel, and the clone sees the default dirs inside its own home.
    env.vars
        .retain(|(k, _)| !matches!(*k, "XDG_CONFIG_HOME" | "XDG_DATA_HOME"));
    let real_home = env.user.home.clone();
    let profile_home = |id: &str| {
        real_home
            .join(".local/share/doppel/profiles")
            .join(id)
            .join("home")
    };
    let session_env: Vec<(&str, String)> = env.vars.iter().map(|(k, v)| (*k, v.clone())).collect();
    let plain = |args: &[&str], logname: &str| {
        let out = fs::File::create(art.join(logname)).unwrap();
        let mut argv = vec![app.program];
        argv.extend_from_slice(args);
        env.user
            .command(&session_env, &argv)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap()
    };
    let mut s = Session {
        env: &env,
        tag,
        created: Vec::new(),
        runs: Vec::new(),
        host: None,
        _bus: bus,
        display,
    };
    let host_mnt = mnt_ns(std::process::id());

    // 1. The host copy.
    let host_log = art.join(format!("{tag}-host.log"));
    s.host = Some(plain(app.host_args, &format!("{tag}-host.log")));
    let up = common::wait_until(WINDOW_TIMEOUT, || {
        instances(&s.display, app)
            .get(&host_mnt)
            .is_some_and(|w| w.len() >= app.windows)
            || !alive(s.host.as_mut().unwrap())
    });
    assert!(
        alive(s.host.as_mut().unwrap()),
        "the host {} exited before showing a window; log:\n{}",
        app.program,
        tail(&host_log)
    );
    assert!(
        up,
        "the host {} showed no window in {WINDOW_TIMEOUT:?}; log:\n{}",
        app.program,
        tail(&host_log)
    );
    // Let it finish starting (first-run windows, its single-instance socket or bus name).
    std::thread::sleep(Duration::from_secs(3));
    let host_windows = instances(&s.display, app).remove(&host_mnt).unwrap();
    log(&format!("host copy up: {host_windows:?}"));

    // 2. The control: a second plain launch hands off or refuses, and adds no window.
    if let Some(args) = app.control {
        let control_log = art.join(format!("{tag}-control.log"));
        let mut second = plain(args, &format!("{tag}-control.log"));
        let exited = wait_exit(&mut second, Duration::from_secs(30));
        if !exited {
            kill_group(&mut second);
        }
        assert!(
            exited,
            "control: a second plain {} still runs after 30 s, so it does not hand off to the \
             first and this test would prove nothing; log:\n{}",
            app.program,
            tail(&control_log)
        );
        log(&format!(
            "control: the second plain copy exited by itself ({}): {}",
            second.wait().unwrap(),
            tail(&control_log).lines().last().unwrap_or("")
        ));
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            alive(s.host.as_mut().unwrap()),
            "the host copy died after the control"
        );
        let after = instances(&s.display, app);
        assert_eq!(
            after.len(),
            1,
            "control: another instance showed windows: {after:?}"
        );
        assert_eq!(
            after[&host_mnt].len(),
            host_windows.len(),
            "control: the second launch changed the host's windows: {after:?}"
        );
    }
    let before: Vec<bool> = paths.iter().map(|p| real_home.join(p).exists()).collect();

    // 3. The clones, started at once.
    for id in ids {
        common::ok(&env.doppel(&["create", id, "--app", app.recipe, "--network", "none"]));
        s.created.push(id.to_string());
    }
    for id in ids {
        let mut run = env.spawn_doppel(&["run", id]);
        drain(run.stderr.take(), art.join(format!("{tag}-{id}-run.log")));
        drain(
            run.stdout.take(),
            art.join(format!("{tag}-{id}-run.stdout")),
        );
        s.runs.push(run);
    }
    log(&format!("doppel run {ids:?} started"));
    let run_logs = || {
        ids.iter()
            .map(|id| {
                let p = art.join(format!("{tag}-{id}-run.log"));
                format!("doppel run {id} stderr ({}):\n{}", p.display(), tail(&p))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let want = 1 + ids.len();
    let timeout = WINDOW_TIMEOUT + Duration::from_secs(30) * (ids.len() as u32 - 1);
    let up = common::wait_until(timeout, || {
        let all = instances(&s.display, app);
        (all.len() >= want && all.values().all(|w| w.len() >= app.windows))
            || !s.runs.iter_mut().all(alive)
    });
    assert!(
        s.runs.iter_mut().all(alive),
        "a doppel run exited before its window appeared;\n{}",
        run_logs()
    );
    assert!(
        up,
        "not {want} instances with windows within {timeout:?}: {:?};\n{}",
        instances(&s.display, app),
        run_logs()
    );
    log(&format!(
        "{want} instances have windows; letting them settle"
    ));
    std::thread::sleep(Duration::from_secs(5));

    // 4. All run, apart.
    assert!(
        alive(s.host.as_mut().unwrap()),
        "the host copy exited after the clones started"
    );
    assert!(
        s.runs.iter_mut().all(alive),
        "a doppel run exited;\n{}",
        run_logs()
    );
    let list = common::ok(&env.doppel(&["list"]));
    log(&format!("doppel list: {}", list.trim()));
    for id in ids {
        assert!(
            list.contains(&format!("{id}: running")),
            "{id} is not running:\n{list}"
        );
    }
    let all = instances(&s.display, app);
    assert_eq!(all.len(), want, "instances with windows: {all:?}");
    assert!(
        all.contains_key(&host_mnt),
        "the host copy's windows are gone: {all:?}"
    );
    for (mnt, wins) in &all {
        log(&format!("instance {mnt}: {wins:?}"));
        assert!(
            wins.iter().all(|w| w.pid.is_some()),
            "a window without _NET_WM_PID: {wins:?}"
        );
    }
    if app.class_switch {
        let mut classes: Vec<&str> = all
            .iter()
            .filter(|(mnt, _)| **mnt != host_mnt)
            .flat_map(|(_, wins)| wins.iter().map(|w| w.class.as_str()))
            .collect();
        classes.sort();
        classes.dedup();
        let mut expected: Vec<String> = ids
            .iter()
            .map(|id| format!("org.doppel.Doppel.{id}"))
            .collect();
        expected.sort();
        assert_eq!(classes, expected, "the clones' window classes");
        assert!(
            host_windows
                .iter()
                .all(|w| !w.class.starts_with("org.doppel.")),
            "the host copy's window has a clone's class: {host_windows:?}"
        );
    }

    // 5. Each clone's state is in its profile, not in the real home.
    for id in ids {
        let home = profile_home(id);
        let found: Vec<&String> = paths.iter().filter(|p| home.join(p).is_dir()).collect();
        log(&format!("{id}: state in the profile: {found:?}"));
        assert!(
            !found.is_empty(),
            "clone {id} has none of {paths:?} in {}",
            home.display()
        );
        assert!(
            fs::read_dir(home.join(found[0])).unwrap().next().is_some(),
            "clone {id}'s {} is empty",
            found[0]
        );
        for p in found {
            let (a, b) = (home.join(p), real_home.join(p));
            if let Ok(host) = fs::metadata(&b) {
                let clone = fs::metadata(&a).unwrap();
                assert!(
                    (host.dev(), host.ino()) != (clone.dev(), clone.ino()),
                    "{} is the host's {}",
                    a.display(),
                    b.display()
                );
            }
        }
    }
    for (p, existed) in paths.iter().zip(&before) {
        assert!(
            *existed || !real_home.join(p).exists(),
            "~/{p} appeared in the real home while the clones ran"
        );
    }

    // 6. The screenshot: one column per instance, host first, each with something drawn.
    let columns: Vec<&Vec<Win>> = std::iter::once(&all[&host_mnt])
        .chain(all.iter().filter(|(m, _)| **m != host_mnt).map(|(_, w)| w))
        .collect();
    let width = SCREEN.0 / columns.len() as u32;
    for (i, wins) in columns.iter().enumerate() {
        // Windows of one instance one above the other.
        let height = (SCREEN.1 - 20) / wins.len() as u32;
        for (j, w) in wins.iter().enumerate() {
            let (x, y) = (i as u32 * width + 10, j as u32 * height + 10);
            s.display
                .place(w.id, x as i32, y as i32, width - 20, height - 20);
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let shot = art.join(format!(
        "{tag}-{}-instances.png",
        if want == 2 { "two" } else { "three" }
    ));
    s.display.screenshot(&shot);
    for i in 0..columns.len() as u32 {
        let n = colours(&shot, i * width, width);
        log(&format!("screenshot column {i}: {n} colours"));
        assert!(
            n >= 16,
            "{}: column {i} (of {:?}) is blank ({n} colours)",
            shot.display(),
            columns[i as usize]
        );
    }
    log(&format!("screenshot {}", shot.display()));

    // 7. Stop the clones; the host copy is untouched. Then stop everything.
    for id in ids {
        common::ok(&env.doppel(&["stop", id]));
    }
    for (id, run) in ids.iter().zip(&mut s.runs) {
        assert!(
            wait_exit(run, Duration::from_secs(20)),
            "doppel run {id} still runs 20 s after doppel stop"
        );
    }
    let gone = common::wait_until(Duration::from_secs(10), || {
        instances(&s.display, app).len() == 1
    });
    assert!(
        gone,
        "clone windows left after stop: {:?}",
        instances(&s.display, app)
    );
    assert!(
        alive(s.host.as_mut().unwrap()),
        "the host copy exited when the clones stopped"
    );
    let list = common::ok(&env.doppel(&["list"]));
    for id in ids {
        assert!(
            list.contains(&format!("{id}: stopped")),
            "after stop:\n{list}"
        );
    }
    log("clones stopped, host copy still runs; cleaning up");
    drop(s);

    let clean = common::wait_until(Duration::from_secs(15), || processes_of(USER).is_empty());
    let left = processes_of(USER);
    if !clean {
        // Leave nothing for the next test.
        for l in &left {
            let pid: i32 = l.split(' ').next().unwrap().parse().unwrap();
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    assert!(
        clean,
        "processes of {USER} left behind:\n{}",
        left.join("\n")
    );
    log("done");
}
