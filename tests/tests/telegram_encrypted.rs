//! Telegram from an encrypted profile, beside the host copy, with the real helper on a private
//! system bus and the real polkitd: the clone's account lives on the unlocked volume, and when
//! the clone exits the profile locks itself (auto-lock).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/display.rs"]
mod display;
#[path = "common/sysbus.rs"]
mod sysbus;

use std::fs;
use std::io::Write;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{Env, User};
use display::{terminate, Display, SessionBus};

const CLASS: &str = "TelegramDesktop";
const ID: &str = "tgenc";
const PASS: &str = "a long enough passphrase for tests";

struct Cleanup<'a> {
    env: &'a Env,
    procs: Vec<Child>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.env.doppel(&["stop", ID, "--timeout", "10"]);
        // The helper (first) goes last: deleting the profile needs it.
        for c in self.procs.iter_mut().skip(1) {
            terminate(c, Duration::from_secs(10));
        }
        let _ = self.env.doppel(&["delete", ID, "--yes"]);
        for c in self.procs.iter_mut().take(1) {
            terminate(c, Duration::from_secs(10));
        }
    }
}

/// Removes what an interrupted earlier run may have left of this user's volumes.
fn clear_volumes(uid: u32) {
    let run = format!("/run/doppel/{uid}");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&run))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for m in points {
        let _ = std::process::Command::new("umount")
            .args(["-l", m])
            .status();
    }
    let state = format!("/var/lib/doppel/{uid}");
    if let Ok(rd) = fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            let b = fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
            if b.starts_with(&state) {
                let dev = format!("/dev/{}", e.file_name().to_string_lossy());
                let _ = std::process::Command::new("losetup")
                    .args(["-d", &dev])
                    .status();
            }
        }
    }
    let _ = fs::remove_dir_all(&state);
    let _ = fs::remove_dir_all(&run);
}

fn helper_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("doppel-helper")
}

#[test]
fn telegram_from_an_encrypted_profile_runs_beside_the_host_and_auto_locks() {
    if !common::require(common::is_root(), "this test needs root")
        || !common::require(
            common::have("telegram-desktop"),
            "telegram-desktop is not installed",
        )
        || !common::require(common::have("Xvfb"), "Xvfb is not installed (xvfb)")
        || !common::require(common::have("xdotool"), "xdotool is not installed")
        || !common::require(
            std::path::Path::new("/usr/lib/polkit-1/polkitd").exists(),
            "polkitd is not installed",
        )
    {
        return;
    }
    let user = User::get("doppel-e2e-tgenc");
    let _ = fs::remove_dir_all(user.home.join(".local/share/TelegramDesktop"));
    let _ = fs::remove_dir_all(user.home.join(".local/share/doppel"));
    clear_volumes(user.uid);
    let display = Display::start(&user, "tgenc", "1600x1000");
    let bus = SessionBus::start(&user, "tgenc");
    let sys = sysbus::SystemBus::start("tgenc");
    sys.allow_user(&user.name);
    let helper = sys.start_helper(&helper_bin());

    let [(dk, dv), (xk, xv)] = display.env();
    let mut env = Env::new(user, "tgenc")
        .with(dk, dv)
        .with(xk, xv)
        .with("DBUS_SESSION_BUS_ADDRESS", bus.address.clone())
        .with("DBUS_SYSTEM_BUS_ADDRESS", sys.address().to_owned());
    // As people run it: the account dir path (and so Telegram's instance socket name) is the
    // same for host and clone; see telegram.rs.
    env.vars.retain(|(k, _)| *k != "XDG_DATA_HOME");
    let mut guard = Cleanup {
        env: &env,
        procs: vec![helper],
    };

    // The host copy first.
    common::clear_stale_telegram_files();
    let session: Vec<(&str, String)> = display
        .env()
        .into_iter()
        .chain([("DBUS_SESSION_BUS_ADDRESS", bus.address.clone())])
        .collect();
    let host = env
        .user
        .command(&session, &["telegram-desktop"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let host_pid = host.id();
    guard.procs.push(host);
    assert!(
        common::wait_until(Duration::from_secs(90), || !display
            .windows(CLASS)
            .is_empty()),
        "the host Telegram showed no window"
    );

    // An encrypted clone, created and run with the passphrase on a pipe.
    let mut create = env.spawn_doppel_stdin(&[
        "create",
        ID,
        "--app",
        "telegram-desktop",
        "--encrypt",
        "--size",
        "256M",
        "--passphrase-fd",
        "0",
    ]);
    create
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASS}\n").as_bytes())
        .unwrap();
    let out = create.wait_with_output().unwrap();
    assert!(out.status.success(), "create: {}", common::stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Recovery key"));
    assert!(common::ok(&env.doppel(&["list"])).contains(&format!("{ID}: locked")));

    let mut run = env.spawn_doppel_stdin(&["run", ID, "--passphrase-fd", "0"]);
    run.stdin
        .take()
        .unwrap()
        .write_all(format!("{PASS}\n").as_bytes())
        .unwrap();
    let two = common::wait_until(Duration::from_secs(90), || {
        display.windows(CLASS).len() >= 2 || run.try_wait().unwrap().is_some()
    });
    assert!(
        two && run.try_wait().unwrap().is_none(),
        "no second Telegram window from the encrypted profile: {:?}",
        run.try_wait()
    );
    let uid = env.user.uid;
    let volume = std::path::PathBuf::from(format!("/run/doppel/{uid}/{ID}"));
    let account = volume.join("data/home/.local/share/TelegramDesktop");
    assert!(
        common::wait_until(Duration::from_secs(20), || account.is_dir()),
        "the clone's account is not on the encrypted volume ({})",
        account.display()
    );
    let list = common::ok(&env.doppel(&["list"]));
    assert!(list.contains(&format!("{ID}: running")), "{list}");
    assert!(
        guard.procs[1].try_wait().unwrap().is_none(),
        "host Telegram {host_pid} exited"
    );
    let shot = common::artifacts().join("telegram-encrypted-two-instances.png");
    assert!(display.screenshot(&shot) > 20_000);

    // Stop: the clone goes, the profile locks itself, the host copy stays.
    common::ok(&env.doppel(&["stop", ID]));
    assert!(
        common::wait_until(Duration::from_secs(30), || run
            .try_wait()
            .unwrap()
            .is_some()),
        "doppel run did not end after stop"
    );
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&volume.display().to_string()),
        "the volume is still mounted after the clone exited"
    );
    assert!(common::ok(&env.doppel(&["list"])).contains(&format!("{ID}: locked")));
    assert!(
        guard.procs[1].try_wait().unwrap().is_none(),
        "host Telegram exited when the clone stopped"
    );
    drop(guard);
    drop(sys);
}
