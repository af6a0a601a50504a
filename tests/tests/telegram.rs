//! Telegram Desktop, for real: a host copy and a Doppel clone run side by side on one display,
//! and a `tg://` link opened with `doppel open` reaches the clone at its login screen.
//!
//! Without Doppel a second `telegram-desktop` hands itself to the first and exits (checked here
//! as a control), so two visible Telegram windows prove the clone is a separate instance. The
//! clone must also keep its account inside its profile and leave the host's account alone.
//!
//! Needs root (it creates the test user and runs Xvfb), telegram-desktop, Xvfb, xdotool, xauth,
//! dbus-daemon, imagemagick, plus what Doppel itself needs for the recipe (xdg-dbus-proxy, pasta).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/display.rs"]
mod display;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Env, User};
use display::{terminate, Display, SessionBus};

const CLASS: &str = "TelegramDesktop";
const ID: &str = "tg";

fn log(t0: Instant, msg: &str) {
    eprintln!("[telegram {:5.1}s] {msg}", t0.elapsed().as_secs_f64());
}

/// Files below `dir`, recursively, as relative path → size.
fn snapshot(dir: &Path) -> BTreeMap<String, u64> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if m.is_dir() {
                out.insert(format!("{rel}/"), 0);
                walk(base, &p, out);
            } else {
                out.insert(rel, m.len());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn names(s: &BTreeMap<String, u64>) -> BTreeSet<String> {
    s.keys().cloned().collect()
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

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ns(pid: u32, kind: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Everything the test started; dropping it (also on a failed assertion) stops and removes it
/// all: the clone, the host Telegram, the profile, then the bus and the display (fields drop
/// after `drop` runs, in declaration order).
struct Session<'a> {
    env: &'a Env,
    created: bool,
    run: Option<Child>,
    host: Option<Child>,
    bus: SessionBus,
    display: Display,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        eprintln!("[telegram] cleanup");
        if self.created {
            let out = self.env.doppel(&["stop", ID, "--timeout", "10"]);
            if !out.status.success() {
                eprintln!(
                    "[telegram] cleanup: doppel stop {ID} failed: {}",
                    common::stderr(&out)
                );
            }
        }
        if let Some(mut c) = self.run.take() {
            terminate(&mut c, Duration::from_secs(10));
        }
        if let Some(mut c) = self.host.take() {
            terminate(&mut c, Duration::from_secs(10));
        }
        if self.created {
            let out = self.env.doppel(&["delete", ID, "--yes"]);
            if !out.status.success() {
                eprintln!(
                    "[telegram] cleanup: doppel delete {ID} failed: {}",
                    common::stderr(&out)
                );
            }
        }
    }
}

#[test]
fn telegram_clone_runs_beside_host_copy() {
    if !common::require(common::is_root(), "the Telegram e2e test needs root")
        || !common::require(
            common::have("telegram-desktop"),
            "telegram-desktop is not installed",
        )
        || !common::require(common::have("Xvfb"), "Xvfb is not installed (xvfb)")
        || !common::require(common::have("xdotool"), "xdotool is not installed")
        || !common::require(common::have("xauth"), "xauth is not installed")
        || !common::require(common::have("dbus-daemon"), "dbus-daemon is not installed")
        || !common::require(
            common::have("import"),
            "import is not installed (imagemagick)",
        )
        || !common::require(
            common::have("xdpyinfo"),
            "xdpyinfo is not installed (x11-utils)",
        )
    {
        return;
    }
    let t0 = Instant::now();
    let art = common::artifacts();

    let user = User::get("doppel-e2e-tg");
    let running = std::process::Command::new("pgrep")
        .args(["-u", &user.name, "-x", "telegram-deskto"])
        .output()
        .unwrap();
    assert!(
        running.stdout.is_empty(),
        "a telegram-desktop of {} is already running (left over from an earlier run?): pids {}",
        user.name,
        String::from_utf8_lossy(&running.stdout).trim()
    );
    // Start from a fresh host account, so every run sees the same first-run window.
    let host_dir = user.home.join(".local/share/TelegramDesktop");
    common::clear_stale_telegram_files();
    let _ = fs::remove_dir_all(&host_dir);

    let display = Display::start(&user, "telegram", "1600x1000");
    log(t0, &format!("Xvfb up on {}", display.name));
    let bus = SessionBus::start(&user, "telegram");
    log(t0, &format!("session bus at {}", bus.address));

    let [(dk, dv), (xk, xv)] = display.env();
    let mut env = Env::new(user, "telegram")
        .with(dk, dv)
        .with(xk, xv)
        .with("DBUS_SESSION_BUS_ADDRESS", bus.address.clone());
    // Like most people, run Doppel without XDG_DATA_HOME. The sandbox passes on an
    // XDG_DATA_HOME that lies below $HOME, and Telegram's account dir (and the name of its
    // single-instance socket, an md5 of that path) follows it: with the harness's
    // ~/e2e-telegram/data the clone would use another path than the host copy and so never
    // meet it, and the test would prove nothing. Profiles then live in the test user's
    // ~/.local/share/doppel, which the test clears first and deletes at the end.
    env.vars.retain(|(k, _)| *k != "XDG_DATA_HOME");
    let doppel_data = env.user.home.join(".local/share/doppel");
    let _ = fs::remove_dir_all(&doppel_data);
    let profile_data = doppel_data.join("profiles").join(ID);
    let mut s = Session {
        env: &env,
        created: false,
        run: None,
        host: None,
        bus,
        display,
    };
    // The host copy gets the session (display, bus) but not the test's XDG dirs, so its
    // account sits where it does for a person: ~/.local/share/TelegramDesktop.
    let session_env: Vec<(&str, String)> = s
        .display
        .env()
        .into_iter()
        .chain([("DBUS_SESSION_BUS_ADDRESS", s.bus.address.clone())])
        .collect();
    let plain_telegram = |logname: &str| {
        let log = fs::File::create(art.join(logname)).unwrap();
        env.user
            .command(&session_env, &["telegram-desktop"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start telegram-desktop")
    };

    // 1. The host copy.
    let host = plain_telegram("telegram-host.log");
    let host_pid = host.id();
    s.host = Some(host);
    log(
        t0,
        &format!("host telegram-desktop started (pid {host_pid})"),
    );
    let up = common::wait_until(Duration::from_secs(90), || {
        !s.display.windows(CLASS).is_empty()
            || s.host.as_mut().unwrap().try_wait().unwrap().is_some()
    });
    let st = s.host.as_mut().unwrap().try_wait().unwrap();
    assert!(
        st.is_none(),
        "host telegram-desktop exited ({st:?}) before showing a window; log:\n{}",
        tail(&art.join("telegram-host.log"), 30)
    );
    assert!(
        up,
        "host telegram-desktop showed no window in 90 s; log:\n{}",
        tail(&art.join("telegram-host.log"), 30)
    );
    let host_windows = s.display.windows(CLASS);
    log(t0, &format!("host window(s) visible: {host_windows:?}"));

    // 2. Control: without Doppel a second copy hands off to the first and exits.
    let mut second = plain_telegram("telegram-control.log");
    let st = wait_exit(&mut second, Duration::from_secs(20));
    if st.is_none() {
        terminate(&mut second, Duration::from_secs(5));
    }
    let st = st.unwrap_or_else(|| {
        panic!(
            "control: a second plain telegram-desktop did not exit within 20 s, so it does not \
             hand off to the first here and this test would prove nothing; log:\n{}",
            tail(&art.join("telegram-control.log"), 30)
        )
    });
    log(
        t0,
        &format!("control: second plain copy exited by itself ({st})"),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        s.host.as_mut().unwrap().try_wait().unwrap().is_none(),
        "host Telegram died after the control launch"
    );
    let after_control = s.display.windows(CLASS);
    log(
        t0,
        &format!(
            "after the control: {} visible window(s)",
            after_control.len()
        ),
    );
    assert_eq!(
        after_control.len(),
        host_windows.len(),
        "the control launch changed the number of visible Telegram windows"
    );
    let host_before = snapshot(&host_dir);
    assert!(
        !host_before.is_empty(),
        "the host Telegram wrote nothing to {}",
        host_dir.display()
    );
    log(
        t0,
        &format!("host account dir: {} entries", host_before.len()),
    );

    // 3. The clone.
    let out = env.doppel(&["create", ID, "--app", "telegram-desktop", "--name", "Work"]);
    common::ok(&out);
    s.created = true;
    log(
        t0,
        &format!(
            "doppel create: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        ),
    );
    let mut run = env.spawn_doppel(&["run", ID]);
    let run_log = art.join("telegram-doppel-run.log");
    let run_out = art.join("telegram-doppel-run.stdout");
    drain(run.stderr.take(), run_log.clone());
    drain(run.stdout.take(), run_out);
    s.run = Some(run);
    log(t0, "doppel run tg started");
    let want = host_windows.len() + 1;
    let two = common::wait_until(Duration::from_secs(90), || {
        s.display.windows(CLASS).len() >= want
            || s.run.as_mut().unwrap().try_wait().unwrap().is_some()
    });
    let st = s.run.as_mut().unwrap().try_wait().unwrap();
    assert!(
        st.is_none(),
        "doppel run {ID} exited ({st:?}) before a second Telegram window appeared; stderr:\n{}",
        tail(&run_log, 40)
    );
    assert!(
        two,
        "no second Telegram window within 90 s (visible: {:?}); doppel run stderr:\n{}",
        s.display.windows(CLASS),
        tail(&run_log, 40)
    );
    log(t0, "second Telegram window visible; letting it settle");
    std::thread::sleep(Duration::from_secs(5));

    // 4. Both run, apart.
    assert!(
        s.host.as_mut().unwrap().try_wait().unwrap().is_none(),
        "host Telegram exited after the clone started"
    );
    let st = s.run.as_mut().unwrap().try_wait().unwrap();
    assert!(
        st.is_none(),
        "doppel run {ID} exited ({st:?}); stderr:\n{}",
        tail(&run_log, 40)
    );
    let list = common::ok(&env.doppel(&["list"]));
    log(t0, &format!("doppel list: {}", list.trim()));
    assert!(
        list.contains(&format!("{ID}: running")),
        "doppel list does not say {ID} runs:\n{list}"
    );
    let windows = s.display.windows(CLASS);
    assert!(
        windows.len() >= 2,
        "expected at least 2 visible Telegram windows, found {windows:?}"
    );
    let host_ns = ns(host_pid, "net");
    let mut clone_pids = BTreeSet::new();
    for w in &windows {
        let pid = s.display.window_pid(*w);
        let geometry: Vec<String> = s
            .display
            .window_info(*w)
            .lines()
            .filter(|l| {
                l.contains("Absolute upper-left") || l.contains("Width") || l.contains("Height")
            })
            .map(|l| l.trim().to_owned())
            .collect();
        log(
            t0,
            &format!("window {w}: pid {pid:?}, {}", geometry.join(", ")),
        );
        if let Some(p) = pid {
            if p != host_pid {
                clone_pids.insert(p);
            }
        }
    }
    assert!(
        !clone_pids.is_empty(),
        "every visible Telegram window belongs to the host process {host_pid}"
    );
    for p in &clone_pids {
        let (net, mnt) = (ns(*p, "net"), ns(*p, "mnt"));
        log(t0, &format!("clone window pid {p}: {net}, {mnt}"));
        assert_ne!(
            net, host_ns,
            "clone pid {p} shares the host's network namespace"
        );
        assert_ne!(
            mnt,
            ns(host_pid, "mnt"),
            "clone pid {p} shares the host's mount namespace"
        );
    }

    let clone_dir = profile_data.join("home/.local/share/TelegramDesktop");
    assert!(
        clone_dir.is_dir(),
        "the clone's account dir {} does not exist; the profile home holds:\n{:#?}",
        clone_dir.display(),
        snapshot(&profile_data.join("home"))
            .keys()
            .collect::<Vec<_>>()
    );
    log(
        t0,
        &format!(
            "clone account dir {}: {} entries",
            clone_dir.display(),
            snapshot(&clone_dir).len()
        ),
    );
    let host_after = snapshot(&host_dir);
    let (before, after) = (names(&host_before), names(&host_after));
    let added: Vec<_> = after.difference(&before).collect();
    let removed: Vec<_> = before.difference(&after).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "the host account dir changed while the clone ran: added {added:?}, removed {removed:?}"
    );
    let resized: Vec<_> = host_after
        .iter()
        .filter(|(k, v)| host_before.get(*k).is_some_and(|b| b != *v))
        .map(|(k, _)| k)
        .collect();
    log(
        t0,
        &format!(
            "host account dir: same {} names; resized by the host itself: {resized:?}",
            after.len()
        ),
    );

    // 4b. A login link reaches the clone at its login screen, not the host copy. A tg://socks
    // link is one the login screen acts on (it asks whether to enable that proxy); the copy of
    // Telegram that `doppel open` starts inside the clone writes, in the clone's account dir, a
    // start log naming the link and saying it handed it to the instance already running there.
    let port = 20_000 + std::process::id() % 40_000;
    let link = format!("tg://socks?server=10.9.8.7&port={port}");
    let start_logs_with = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("log_start"))
                    .filter_map(|e| fs::read_to_string(e.path()).ok())
                    .filter(|t| t.contains(&link))
                    .collect()
            })
            .unwrap_or_default()
    };
    let out = env.doppel(&["open", &link]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    log(t0, &format!("doppel open {link}: {}", said.trim()));
    common::ok(&out);
    let mut forwarded = Vec::new();
    let reached = common::wait_until(Duration::from_secs(30), || {
        forwarded = start_logs_with(&clone_dir);
        forwarded
            .iter()
            .any(|t| t.contains("this is not the first application instance"))
    });
    assert!(
        reached,
        "the link did not reach the clone's running Telegram; start logs naming it in {}: {forwarded:#?}",
        clone_dir.display()
    );
    let cmdline = forwarded
        .iter()
        .flat_map(|t| t.lines())
        .find(|l| l.contains("Command line:"))
        .unwrap_or_default();
    log(t0, &format!("in the clone: {cmdline}"));
    assert!(
        cmdline.contains(&format!("-- {link}")),
        "Telegram was not given the link after `--`, so it would drop it: {cmdline}"
    );
    assert!(
        start_logs_with(&host_dir).is_empty(),
        "the link went to the host copy too"
    );
    assert!(
        s.host.as_mut().unwrap().try_wait().unwrap().is_none(),
        "host Telegram exited after the link"
    );
    std::thread::sleep(Duration::from_secs(2));
    let shot = art.join("telegram-link-in-clone.png");
    s.display.screenshot(&shot);
    log(
        t0,
        &format!("screenshot {} (the proxy question)", shot.display()),
    );

    // Without a window manager both windows open at the same spot, one hiding the other: put
    // the host's on the left and the clone's on the right for the screenshot.
    for w in &windows {
        let x = match s.display.window_pid(*w) {
            Some(p) if p == host_pid => 20,
            _ => 810,
        };
        s.display.place(*w, x, 60, 770, 880);
    }
    std::thread::sleep(Duration::from_secs(2));
    let shot = art.join("telegram-two-instances.png");
    let size = s.display.screenshot(&shot);
    log(t0, &format!("screenshot {} ({size} bytes)", shot.display()));
    assert!(
        size > 20_000,
        "screenshot {} is only {size} bytes",
        shot.display()
    );

    // 5. Stop the clone; the host copy is untouched.
    let out = env.doppel(&["stop", ID]);
    log(
        t0,
        &format!(
            "doppel stop: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        ),
    );
    common::ok(&out);
    let st = wait_exit(s.run.as_mut().unwrap(), Duration::from_secs(20));
    assert!(
        st.is_some(),
        "doppel run {ID} still runs 20 s after doppel stop"
    );
    log(t0, &format!("doppel run exited: {}", st.unwrap()));
    s.run = None;
    let list = common::ok(&env.doppel(&["list"]));
    assert!(
        list.contains(&format!("{ID}: stopped")),
        "doppel list after stop:\n{list}"
    );
    let gone = common::wait_until(Duration::from_secs(10), || {
        s.display.windows(CLASS).len() == host_windows.len()
    });
    assert!(
        gone,
        "the clone's window is still visible after stop: {:?}",
        s.display.windows(CLASS)
    );
    assert!(
        s.host.as_mut().unwrap().try_wait().unwrap().is_none(),
        "host Telegram exited when the clone was stopped"
    );
    log(t0, "clone stopped; host Telegram still runs; cleaning up");
    drop(s);
    log(t0, "done");
}
