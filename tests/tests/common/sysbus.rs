//! A private system bus with the real polkit: a `dbus-daemon` of type `system` that carries the
//! project's bus policy (`packaging/dbus/org.doppel.Helper1.conf`), `polkitd` serving on it with
//! the project's actions (`packaging/polkit/org.doppel.policy`), and, when a test asks,
//! `doppel-helper` on it.
//!
//! Needs root (callers check; see `common::require`) and the Debian packages `dbus-daemon`,
//! `dbus-bin` (`dbus-send`), `polkitd` (`polkitd`, `pkaction`, `pkcheck`) and `util-linux`
//! (`setpriv`). Several buses may run at once; they share two global places: the action file in
//! `/usr/share/polkit-1/actions/` (installed once, identical for all) and the rules in
//! `/etc/polkit-1/rules.d/` (one file per user, so tests that allow a user should each use their
//! own user).
//!
//! One `SystemBus` per test, made and dropped on the test's thread: dbus-daemon and the helper
//! get SIGTERM when the thread that started them ends, so a killed run leaves nothing behind.
//!
//! Declared by a test with `#[path = "common/sysbus.rs"] mod sysbus;`. Depends on std, libc and
//! tempfile only.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::cell::{Cell, RefCell};
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The polkit daemon (Debian package `polkitd`).
pub const POLKITD: &str = "/usr/lib/polkit-1/polkitd";
/// Where polkit reads action files.
pub const POLKIT_ACTIONS_DIR: &str = "/usr/share/polkit-1/actions";
/// Where polkit reads the administrator's JavaScript rules.
pub const POLKIT_RULES_DIR: &str = "/etc/polkit-1/rules.d";
/// The helper's bus name (as in `helper/src/wire.rs`).
pub const HELPER_NAME: &str = "org.doppel.Helper1";
/// polkit's bus name.
pub const POLKIT_NAME: &str = "org.freedesktop.PolicyKit1";

const START_TIMEOUT: Duration = Duration::from_secs(20);
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// `<workspace>/packaging`.
pub fn packaging_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("packaging")
}

/// A private system bus with polkitd on it; everything it started is stopped on drop, and the
/// polkit rules it wrote are removed.
pub struct SystemBus {
    dir: tempfile::TempDir,
    address: String,
    bus: Child,
    polkitd: Child,
    /// Helpers started here, held by pidfd: the caller owns (and may reap) the `Child`, and a
    /// pidfd never names a recycled pid.
    helpers: RefCell<Vec<OwnedFd>>,
    rules: RefCell<Vec<PathBuf>>,
    logs: Cell<u32>,
}

impl SystemBus {
    /// Starts `dbus-daemon` and `polkitd` (as root) in a fresh temp dir named after `tag`, with
    /// the project's bus policy included and its polkit actions installed.
    pub fn start(tag: &str) -> SystemBus {
        Self::start_as(tag, false)
    }

    /// Like `start`, but for an installed Doppel: the bus reads the policy and the activation
    /// file the package installed (`/usr/share/dbus-1/system.d`, `system-services`), so the
    /// helper is started by D-Bus activation, and polkitd the installed actions. An activated
    /// service inherits the bus's environment, which names this bus as the system bus.
    pub fn start_installed(tag: &str) -> SystemBus {
        Self::start_as(tag, true)
    }

    fn start_as(tag: &str, installed: bool) -> SystemBus {
        // SAFETY: geteuid has no preconditions.
        assert!(
            unsafe { libc::geteuid() } == 0,
            "SystemBus::start needs root; check common::is_root() before calling it"
        );
        assert!(
            Path::new(POLKITD).exists(),
            "{POLKITD} is missing: install polkitd (Debian/Ubuntu: apt-get install polkitd)"
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("doppel-sysbus-{tag}-"))
            .tempdir()
            .unwrap();
        // Ordinary users must reach the socket inside.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();

        // The bus: a system bus carrying /usr/share/dbus-1/system.d (polkit's policy is there)
        // and a copy of ours, so the test sees exactly what the package would install.
        let system_d = Path::new("/usr/share/dbus-1/system.d");
        let (policy_dir, ours) = if installed {
            (
                system_d.to_owned(),
                system_d.join("org.doppel.Helper1.conf"),
            )
        } else {
            let policy_dir = dir.path().join("system.d");
            fs::create_dir(&policy_dir).unwrap();
            let ours = packaging_dir().join("dbus/org.doppel.Helper1.conf");
            fs::copy(&ours, policy_dir.join("org.doppel.Helper1.conf"))
                .unwrap_or_else(|e| panic!("copying {}: {e}", ours.display()));
            (policy_dir, ours)
        };
        let socket = dir.path().join("system_bus_socket");
        let config = dir.path().join("bus.conf");
        let (includes, services): (Vec<&Path>, Vec<&Path>) = if installed {
            (
                vec![system_d],
                vec![Path::new("/usr/share/dbus-1/system-services")],
            )
        } else {
            (vec![system_d, &policy_dir], vec![])
        };
        fs::write(&config, bus_config(&socket, &includes, &services)).unwrap();
        let bus_log = dir.path().join("dbus-daemon.log");
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .env_clear()
            .env("PATH", PATH)
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                format!("unix:path={}", socket.display()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file(&bus_log))
            .die_with_parent()
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run dbus-daemon ({e}): install dbus-daemon and dbus-bin")
            });
        // It prints its address once it listens; EOF means it gave up.
        let stdout = bus.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let address = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) if !line.trim().is_empty() && socket.exists() => line.trim().to_owned(),
            got => {
                terminate(&mut bus, Duration::from_secs(2));
                panic!(
                    "dbus-daemon did not start ({}): {}\nconfig {}:\n{}",
                    if got.is_ok() {
                        "no address"
                    } else {
                        "timed out"
                    },
                    read_log(&bus_log),
                    config.display(),
                    fs::read_to_string(&config).unwrap_or_default()
                );
            }
        };
        // dbus-daemon skips an included file it cannot parse, with only a warning: make it fatal
        // for ours, or every test here would run against the default-deny policy alone.
        let log = read_log(&bus_log);
        if log.contains(&policy_dir.display().to_string()) {
            terminate(&mut bus, Duration::from_secs(2));
            panic!("dbus-daemon rejected {}: {log}", ours.display());
        }

        if !installed {
            install_actions();
        }

        // polkitd: started as root, it drops to the polkitd user itself.
        let pk_log = dir.path().join("polkitd.log");
        let polkitd = Command::new(POLKITD)
            .arg("--no-debug")
            .env_clear()
            .env("PATH", PATH)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .stdin(Stdio::null())
            .stdout(log_file(&pk_log))
            .stderr(log_file(&pk_log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {POLKITD}: {e}"));
        let mut me = SystemBus {
            dir,
            address,
            bus,
            polkitd,
            helpers: RefCell::new(Vec::new()),
            rules: RefCell::new(Vec::new()),
            logs: Cell::new(0),
        };
        let pid = me.polkitd.id();
        let end = Instant::now() + START_TIMEOUT;
        while me.owner_pid(POLKIT_NAME) != Some(pid) {
            let exited = me.polkitd.try_wait().unwrap();
            if exited.is_some() || Instant::now() > end {
                panic!(
                    "polkitd did not take {POLKIT_NAME} on the test bus ({}): {}",
                    match exited {
                        Some(st) => format!("it exited, {st}"),
                        None => "timed out".into(),
                    },
                    read_log(&pk_log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    /// What the bus daemon (and the services it activated) printed so far.
    pub fn daemon_log(&self) -> String {
        read_log(&self.dir.path().join("dbus-daemon.log"))
    }

    /// The bus address, as for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The temp dir holding the socket, the config and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `dbus-send --print-reply` on this bus, as root.
    pub fn dbus_send(&self, args: &[&str]) -> Output {
        Command::new("dbus-send")
            .arg(format!("--bus={}", self.address))
            .arg("--print-reply")
            .args(args)
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .output()
            .expect("dbus-send (install dbus-bin)")
    }

    /// The pid of the connection owning `name`, if it is owned.
    pub fn owner_pid(&self, name: &str) -> Option<u32> {
        let out = self.dbus_send(&[
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.GetConnectionUnixProcessID",
            &format!("string:{name}"),
        ]);
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .skip_while(|w| *w != "uint32")
            .nth(1)?
            .parse()
            .ok()
    }

    /// Whether `name` has an owner on this bus.
    pub fn has_owner(&self, name: &str) -> bool {
        self.owner_pid(name).is_some()
    }

    /// `argv` as `user`, with a clean environment pointing at this bus.
    pub fn command_as(&self, user: &str, argv: &[&str]) -> Command {
        let (uid, gid) = ids(user);
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--init-groups", "--", "env", "-i"])
            .arg(format!("PATH={PATH}"))
            .arg("LANG=C.UTF-8")
            .arg(format!("DBUS_SYSTEM_BUS_ADDRESS={}", self.address))
            .args(argv)
            .current_dir("/")
            .stdin(Stdio::null());
        c
    }

    /// `pkcheck --action-id <action> --process <its own pid>` as `user`: polkit's verdict for
    /// that user's process, from a session-less process with no agent (exit 0: authorised;
    /// 1: not authorised; 2: would need authentication).
    pub fn pkcheck_as(&self, user: &str, action: &str) -> Output {
        self.command_as(
            user,
            &[
                "sh",
                "-c",
                r#"exec pkcheck --action-id "$1" --process $$"#,
                "sh",
                action,
            ],
        )
        .output()
        .expect("setpriv/pkcheck (install util-linux and polkitd)")
    }

    /// Lets `user` do every `org.doppel.*` action through a polkit rule, and waits until polkitd
    /// has loaded it. The rule is removed on drop (or by `revoke_user`).
    pub fn allow_user(&self, user: &str) {
        assert!(
            !user.is_empty()
                && user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{user:?} is not a plain user name"
        );
        let path = rules_path(user);
        let text = format!(
            "// Written by Doppel's tests (tests/tests/common/sysbus.rs); removed when they end.\n\
             polkit.addRule(function(action, subject) {{\n    \
                 if (action.id.indexOf(\"org.doppel.\") == 0 && subject.user == \"{user}\") {{\n        \
                     return polkit.Result.YES;\n    \
                 }}\n\
             }});\n"
        );
        // Atomically: polkitd reloads on every change in the directory and must not see half a
        // file (it reads only names ending in .rules).
        let tmp = Path::new(POLKIT_RULES_DIR)
            .join(format!(".doppel-test-{user}.{}.tmp", std::process::id()));
        fs::write(&tmp, text).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        fs::rename(&tmp, &path).unwrap();
        self.rules.borrow_mut().push(path.clone());
        self.wait_verdict(user, true, &path);
    }

    /// Removes the rule `allow_user` wrote and waits until polkitd refuses `user` again.
    pub fn revoke_user(&self, user: &str) {
        let path = rules_path(user);
        let _ = fs::remove_file(&path);
        self.rules.borrow_mut().retain(|p| *p != path);
        self.wait_verdict(user, false, &path);
    }

    fn wait_verdict(&self, user: &str, allowed: bool, rules: &Path) {
        let end = Instant::now() + START_TIMEOUT;
        loop {
            let out = self.pkcheck_as(user, "org.doppel.status");
            if out.status.success() == allowed {
                return;
            }
            if Instant::now() > end {
                panic!(
                    "polkitd did not {} {} for {user}: pkcheck org.doppel.status {}: {}{}\n\
                     polkitd: {}",
                    if allowed { "load" } else { "drop" },
                    rules.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    read_log(&self.dir.path().join("polkitd.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `<helper_bin> --address <bus>` as root with a clean environment and waits until it
    /// owns `org.doppel.Helper1`. Its output goes to a log in `dir()`, shown if it fails to
    /// start. The caller may wait on the child; it is killed on drop if still running.
    pub fn start_helper(&self, helper_bin: &Path) -> Child {
        self.start_helper_with(helper_bin, &[], &[])
    }

    /// `start_helper` with extra arguments (such as `--idle-timeout 5`) and environment (such
    /// as `DOPPEL_HELPER_CRASH_AT`).
    pub fn start_helper_with(
        &self,
        helper_bin: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Child {
        let n = self.logs.get() + 1;
        self.logs.set(n);
        let log = self.dir.path().join(format!("helper-{n}.log"));
        let mut child = Command::new(helper_bin)
            .arg("--address")
            .arg(&self.address)
            .args(args)
            .env_clear()
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .envs(env.iter().copied())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log_file(&log))
            .stderr(log_file(&log))
            .die_with_parent()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", helper_bin.display()));
        let pid = child.id();
        // Before anyone can reap it, so the fd names this very process.
        self.helpers.borrow_mut().push(pidfd_open(pid));
        let end = Instant::now() + START_TIMEOUT;
        while self.owner_pid(HELPER_NAME) != Some(pid) {
            let exited = child.try_wait().unwrap();
            if exited.is_some() || Instant::now() > end {
                if exited.is_none() {
                    terminate(&mut child, Duration::from_secs(2));
                }
                panic!(
                    "{} did not take {HELPER_NAME} on the test bus ({}); its output ({}):\n{}",
                    helper_bin.display(),
                    match exited {
                        Some(st) => format!("it exited, {st}"),
                        None => format!("timed out after {}s", START_TIMEOUT.as_secs()),
                    },
                    log.display(),
                    read_log(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// What the `n`th helper started here (from 1) has printed so far.
    pub fn helper_log(&self, n: u32) -> String {
        read_log(&self.dir.path().join(format!("helper-{n}.log")))
    }
}

impl Drop for SystemBus {
    fn drop(&mut self) {
        for p in self.rules.borrow_mut().drain(..) {
            let _ = fs::remove_file(p);
        }
        for fd in self.helpers.borrow_mut().drain(..) {
            pidfd_terminate(&fd, Duration::from_secs(5));
        }
        terminate(&mut self.polkitd, Duration::from_secs(5));
        terminate(&mut self.bus, Duration::from_secs(5));
    }
}

/// The dbus-daemon configuration: a system bus, default-deny as Debian's system.conf, that
/// activates the services in `services` itself (no setuid launch helper: it runs as root).
fn bus_config(socket: &Path, include: &[&Path], services: &[&Path]) -> String {
    let includes: String = include
        .iter()
        .map(|d| format!("  <includedir>{}</includedir>\n", d.display()))
        .chain(
            services
                .iter()
                .map(|d| format!("  <servicedir>{}</servicedir>\n", d.display())),
        )
        .collect();
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <!-- Holes are punched by the files included below. -->
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
  </policy>
{includes}</busconfig>
"#,
        socket = socket.display()
    )
}

/// Copies the project's action file into polkit's directory, atomically and only when it
/// differs, so buses started side by side never show polkitd a partial file. It stays installed:
/// another test may be using it.
fn install_actions() {
    let src = packaging_dir().join("polkit/org.doppel.policy");
    let text = fs::read(&src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
    let dst = Path::new(POLKIT_ACTIONS_DIR).join("org.doppel.policy");
    if fs::read(&dst).is_ok_and(|t| t == text) {
        return;
    }
    let tmp = Path::new(POLKIT_ACTIONS_DIR).join(format!(
        ".org.doppel.policy.{}.{:?}.tmp",
        std::process::id(),
        std::thread::current().id()
    ));
    fs::write(&tmp, &text).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(&tmp, &dst).unwrap();
}

fn rules_path(user: &str) -> PathBuf {
    Path::new(POLKIT_RULES_DIR).join(format!("49-doppel-test-{user}.rules"))
}

/// uid and primary gid of `user`.
fn ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").arg(flag).arg(user).output().unwrap();
        assert!(out.status.success(), "no user {user:?}");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// A log file opened for appending: stdout and stderr may both go to it without overwriting
/// each other.
fn log_file(p: &Path) -> File {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("opening {}: {e}", p.display()))
}

fn read_log(p: &Path) -> String {
    match fs::read_to_string(p) {
        Ok(s) if s.trim().is_empty() => "(nothing)".into(),
        Ok(s) => s,
        Err(e) => format!("(cannot read {}: {e})", p.display()),
    }
}

trait DieWithParent {
    fn die_with_parent(&mut self) -> &mut Self;
}

impl DieWithParent for Command {
    /// SIGTERM to the child when the test (thread) that started it dies, even by SIGKILL, so an
    /// interrupted run leaves no daemon behind. (polkitd changes uid, which clears this; it
    /// exits by itself when its bus goes away.)
    fn die_with_parent(&mut self) -> &mut Self {
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            self.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}

/// SIGTERM, then SIGKILL if `child` has not exited after `grace`; always reaps it.
fn terminate(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn pidfd_open(pid: u32) -> OwnedFd {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    assert!(
        fd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) }
}

fn pidfd_signal(fd: &OwnedFd, sig: libc::c_int) {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags; ESRCH (gone) is fine.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// SIGTERM, then SIGKILL after `grace`, to the process behind `fd` (whoever reaps it).
fn pidfd_terminate(fd: &OwnedFd, grace: Duration) {
    let exited = |ms: i32| {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a pidfd is readable once its process has exited.
        unsafe { libc::poll(&mut p, 1, ms) > 0 }
    };
    if exited(0) {
        return;
    }
    pidfd_signal(fd, libc::SIGTERM);
    if !exited(grace.as_millis() as i32) {
        pidfd_signal(fd, libc::SIGKILL);
        exited(2000);
    }
}
