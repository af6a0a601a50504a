//! The installed system: Doppel as the `.deb` put it on this machine, used by an ordinary user.
//!
//! A private system bus reads the policy and the activation file the package installed, and
//! polkitd the installed actions (with a rules file granting the test user); `doppel` from
//! `/usr/bin` creates an encrypted profile, which makes the bus start `/usr/libexec/doppel-helper`
//! by D-Bus activation (nobody starts it by hand), then locks, unlocks and runs it; recipes come
//! from `/usr/share/doppel/profiles`, the bus proxy from `/usr/libexec`, the man page from
//! `/usr/share/man`.
//!
//! Ignored by `cargo test`: `bash packaging/test.sh` builds and installs the package, runs this
//! with `--ignored`, then removes the package and checks nothing of it is left.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/display.rs"]
mod display;
#[path = "common/sysbus.rs"]
mod sysbus;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::User;
use display::SessionBus;
use sysbus::{SystemBus, HELPER_NAME};

const DOPPEL: &str = "/usr/bin/doppel";
const HELPER: &str = "/usr/libexec/doppel-helper";
const PASSPHRASE: &str = "installed correct horse battery\n";

/// `/usr/bin/doppel ARGS` as `user`, with only what a login session would give it and `bus` as
/// the system bus; `input` on stdin.
fn doppel(user: &User, bus: &SystemBus, args: &[&str], input: &str) -> Output {
    spawn_doppel(user, bus, None, args, input)
        .wait_with_output()
        .unwrap()
}

/// `doppel()` started in the background, with `session` as the session bus if given.
fn spawn_doppel(
    user: &User,
    bus: &SystemBus,
    session: Option<&SessionBus>,
    args: &[&str],
    input: &str,
) -> std::process::Child {
    let mut child = Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .args(["--init-groups", "--", "env", "-i"])
        .arg(format!("HOME={}", user.home.display()))
        .arg(format!("USER={}", user.name))
        .arg(format!("LOGNAME={}", user.name))
        .arg("PATH=/usr/local/bin:/usr/bin:/bin")
        .arg("LANG=C.UTF-8")
        .arg(format!("XDG_RUNTIME_DIR={}", user.runtime.display()))
        .arg(format!("DBUS_SYSTEM_BUS_ADDRESS={}", bus.address()))
        .args(session.map(|s| format!("DBUS_SESSION_BUS_ADDRESS={}", s.address)))
        .arg(DOPPEL)
        .args(args)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child
}

/// `doppel run vault` with the passphrase on stdin, running `command` in the clone.
fn run_vault<'a>(command: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec!["run", "vault", "--passphrase-fd", "0", "--"];
    argv.extend_from_slice(command);
    argv
}

/// Whether a process of `uid` runs the program `exe`.
fn runs(uid: u32, exe: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .any(|e| {
            std::fs::read_link(e.path().join("exe")).is_ok_and(|p| p == Path::new(exe))
                && std::fs::metadata(e.path())
                    .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == uid)
        })
}

fn ok(what: &str, out: &Output, bus: &SystemBus) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "doppel {what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}\nbus and helper log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        bus.daemon_log()
    );
    stdout
}

/// Takes away what a run leaves for `user`, finished or not: mounts, loop devices, volume
/// images, profiles.
fn scrub(user: &User) {
    let run = format!("/run/doppel/{}", user.uid);
    let state = format!("/var/lib/doppel/{}", user.uid);
    if Path::new(&run).exists() {
        let _ = Command::new("umount")
            .args(["-R", "-l", &run])
            .stderr(Stdio::null())
            .status();
    }
    if let Ok(images) = std::fs::read_dir(&state) {
        for img in images.flatten() {
            let out = Command::new("losetup")
                .arg("-j")
                .arg(img.path())
                .output()
                .unwrap();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some((dev, _)) = line.split_once(':') {
                    let _ = Command::new("losetup").args(["-d", dev]).status();
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&run);
    let _ = std::fs::remove_dir_all(&state);
    let _ = Command::new("rm")
        .args(["-rf", ".local/share/doppel", ".config/doppel"])
        .current_dir(&user.home)
        .status();
}

struct Scrub<'a>(&'a User);

impl Drop for Scrub<'_> {
    fn drop(&mut self) {
        scrub(self.0);
    }
}

#[test]
#[ignore = "run by packaging/test.sh once the .deb is installed"]
fn the_installed_package_works_for_an_ordinary_user() {
    assert!(common::is_root(), "the installed-system test needs root");
    let owner = Command::new("dpkg").args(["-S", DOPPEL]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&owner.stdout).starts_with("doppel:"),
        "{DOPPEL} is not from the doppel package: install it first (bash packaging/test.sh)"
    );
    for f in [
        HELPER,
        "/usr/libexec/doppel-bus-proxy",
        "/usr/share/dbus-1/system.d/org.doppel.Helper1.conf",
        "/usr/share/dbus-1/system-services/org.doppel.Helper1.service",
        "/usr/share/polkit-1/actions/org.doppel.policy",
        "/usr/share/doppel/profiles/telegram-desktop.toml",
    ] {
        assert!(Path::new(f).exists(), "{f} is not installed");
    }

    let user = User::get("doppel-e2e-inst");
    scrub(&user);
    let _scrub = Scrub(&user);
    let bus = SystemBus::start_installed("installed");
    bus.allow_user(&user.name);
    assert!(
        !bus.has_owner(HELPER_NAME),
        "the helper runs before anyone asked for it"
    );

    // Encrypted: the helper is needed, and the bus must start it.
    let out = doppel(
        &user,
        &bus,
        &[
            "create",
            "vault",
            "--app",
            "sh",
            "--name",
            "Vault",
            "--network",
            "none",
            "--encrypt",
            "--size",
            "64M",
            "--passphrase-fd",
            "0",
        ],
        PASSPHRASE,
    );
    let created = ok("create --encrypt", &out, &bus);
    assert!(
        created.to_lowercase().contains("recovery"),
        "no recovery key shown:\n{created}"
    );
    let helper = bus
        .owner_pid(HELPER_NAME)
        .expect("nobody owns org.doppel.Helper1 after create --encrypt");
    let exe = std::fs::read_link(format!("/proc/{helper}/exe")).unwrap();
    assert_eq!(
        exe,
        Path::new(HELPER),
        "the helper is not the installed one"
    );
    // Only D-Bus activation gives a service DBUS_STARTER_* (and nothing here started it).
    let environ = std::fs::read(format!("/proc/{helper}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ
            .split('\0')
            .any(|v| v == "DBUS_STARTER_BUS_TYPE=system"),
        "the helper was not started by D-Bus activation: its environment is {environ:?}"
    );

    let list = ok("list", &doppel(&user, &bus, &["list"], ""), &bus);
    assert!(list.contains("vault: locked"), "{list}");
    ok(
        "unlock",
        &doppel(
            &user,
            &bus,
            &["unlock", "vault", "--passphrase-fd", "0"],
            PASSPHRASE,
        ),
        &bus,
    );
    let out = doppel(
        &user,
        &bus,
        &run_vault(&[
            "sh",
            "-c",
            "echo kept > \"$HOME/proof\" && cat \"$HOME/proof\"",
        ]),
        PASSPHRASE,
    );
    assert!(ok("run", &out, &bus).contains("kept"));
    ok(
        "run -- true",
        &doppel(&user, &bus, &run_vault(&["true"]), PASSPHRASE),
        &bus,
    );

    // With a session bus: the installed proxy filters it, and xdg-open is Doppel's opener.
    let session = SessionBus::start(&user, "installed");
    let child = spawn_doppel(
        &user,
        &bus,
        Some(&session),
        &run_vault(&["sh", "-c", "command -v xdg-open; sleep 3"]),
        PASSPHRASE,
    );
    let proxied = common::wait_until(Duration::from_secs(20), || {
        runs(user.uid, "/usr/libexec/doppel-bus-proxy")
    });
    let out = child.wait_with_output().unwrap();
    let said = ok("run with a session bus", &out, &bus);
    assert!(
        proxied,
        "no /usr/libexec/doppel-bus-proxy ran for the clone"
    );
    assert!(
        said.trim().ends_with("/doppel/bin/xdg-open"),
        "xdg-open in the clone is not Doppel's opener: {said}"
    );
    drop(session);
    // `run` locks what it unlocked; lock is a no-op otherwise.
    let _ = doppel(&user, &bus, &["lock", "vault"], "");
    let list = ok("list", &doppel(&user, &bus, &["list"], ""), &bus);
    assert!(list.contains("vault: locked"), "{list}");

    // Recipes from /usr/share/doppel/profiles: a Telegram profile gets its recipe, not the
    // generic one.
    let out = doppel(
        &user,
        &bus,
        &[
            "create",
            "chat",
            "--app",
            "telegram-desktop",
            "--network",
            "none",
        ],
        "",
    );
    ok("create --app telegram-desktop", &out, &bus);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !said.contains("generic"),
        "the installed recipe was not found:\n{said}"
    );

    // The doctor finds the installed proxy.
    let doctor = doppel(&user, &bus, &["doctor"], "");
    let text = String::from_utf8_lossy(&doctor.stdout).into_owned()
        + &String::from_utf8_lossy(&doctor.stderr);
    assert!(
        text.contains("/usr/libexec/doppel-bus-proxy"),
        "the doctor does not find the installed bus proxy:\n{text}"
    );

    // The man page is where man looks.
    if common::have("man") {
        let out = Command::new("man").args(["-w", "doppel"]).output().unwrap();
        let path = String::from_utf8_lossy(&out.stdout);
        assert!(
            path.trim() == "/usr/share/man/man1/doppel.1.gz",
            "man -w doppel: {path}"
        );
    }

    for id in ["vault", "chat"] {
        ok(
            "delete",
            &doppel(&user, &bus, &["delete", id, "--yes"], ""),
            &bus,
        );
    }
    // The activated helper would leave on its own when idle; the test does not wait for it.
    let _ = Command::new("kill").arg(helper.to_string()).status();
    common::wait_until(Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{helper}")).exists()
    });
}
