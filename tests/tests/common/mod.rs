//! Shared harness: an unprivileged test user, the built binaries staged where that user can
//! read them, and helpers to run `doppel` as that user with a given environment.
//!
//! Tests that need root or a display skip with a printed reason when run without them; under
//! `CI=true` they fail instead, because CI must run them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns false (after printing why) when the test cannot run here; panics in CI.
pub fn require(cond: bool, what: &str) -> bool {
    if cond {
        return true;
    }
    if in_ci() {
        panic!("CI must run this test, but {what}");
    }
    eprintln!("SKIPPED: {what}");
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// The workspace's target directory for this build profile (where `doppel` was built).
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary>
    exe.parent().unwrap().parent().unwrap().to_owned()
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `doppel` and the recipes copied to a world-readable place (the checkout may sit where the
/// test user cannot enter), once per test binary.
pub struct Staged {
    pub dir: PathBuf,
    pub doppel: PathBuf,
    pub share: PathBuf,
}

pub fn staged() -> &'static Staged {
    static S: OnceLock<Staged> = OnceLock::new();
    S.get_or_init(|| {
        let src = build_dir().join("doppel");
        assert!(
            src.exists(),
            "{} is missing: build the workspace first (cargo build --workspace)",
            src.display()
        );
        sweep_stale_stages();
        let dir = PathBuf::from(format!("/tmp/doppel-e2e-{}", std::process::id()));
        let share = dir.join("share");
        fs::create_dir_all(share.join("doppel/profiles")).unwrap();
        let doppel = dir.join("doppel");
        fs::copy(&src, &doppel).unwrap();
        // The session-bus proxy the monitor starts, found beside `doppel`.
        let proxy = build_dir().join("doppel-bus-proxy");
        assert!(
            proxy.exists(),
            "{} is missing: build the workspace first",
            proxy.display()
        );
        fs::copy(&proxy, dir.join("doppel-bus-proxy")).unwrap();
        for e in fs::read_dir(workspace_root().join("profiles")).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), share.join("doppel/profiles").join(e.file_name())).unwrap();
        }
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir)
            .status()
            .unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        Staged { dir, doppel, share }
    })
}

/// The workspace's program `name` (built beside `doppel`), copied into the staged directory
/// where the test user can run it and where it finds `doppel`.
pub fn stage_program(name: &str) -> PathBuf {
    let src = build_dir().join(name);
    assert!(
        src.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        src.display()
    );
    let dst = staged().dir.join(name);
    fs::copy(&src, &dst).unwrap();
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).unwrap();
    dst
}

/// Removes the staged copies of earlier test binaries that have exited: each run stages its own
/// (tests run concurrently), and a statically held stage is never dropped.
fn sweep_stale_stages() {
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("doppel-e2e-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Removes Telegram's instance sockets and lock files (`/tmp/<md5>-{87A94AB0-…}`) that no
/// running Telegram holds. One named after a home path that an earlier run's user had (test
/// users come and go, and uids are reused) belongs to another uid: a new host copy can neither
/// connect to it nor replace it, and exits at once.
pub fn clear_stale_telegram_files() {
    let running = Command::new("pgrep")
        .args(["-x", "telegram-deskto"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    if running {
        return;
    }
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_string_lossy()
            .ends_with("-{87A94AB0-E370-4cde-98D3-ACC110C5967D}")
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// An unprivileged account the sandboxed side runs as.
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub runtime: PathBuf,
}

fn id_of(name: &str, flag: &str) -> u32 {
    let out = Command::new("id").arg(flag).arg(name).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

impl User {
    /// Creates (or reuses) the account `name`, with a home and a private runtime dir.
    pub fn get(name: &str) -> User {
        // useradd locks /etc/passwd and gives up at once when another holds it: one at a time
        // in this process, and a few tries against other processes (on a fresh machine every
        // test creates its user).
        static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        {
            let _one = CREATING.lock().unwrap_or_else(|e| e.into_inner());
            let exists = || {
                Command::new("id")
                    .arg(name)
                    .output()
                    .unwrap()
                    .status
                    .success()
            };
            let mut tries = 0;
            while !exists() {
                tries += 1;
                let out = Command::new("useradd")
                    .args(["-m", "-s", "/bin/bash", name])
                    .output()
                    .unwrap();
                if out.status.success() {
                    break;
                }
                assert!(
                    tries < 10,
                    "useradd {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let uid = id_of(name, "-u");
        let gid = id_of(name, "-g");
        let home = PathBuf::from(format!("/home/{name}"));
        let runtime = PathBuf::from(format!("/run/user/{uid}"));
        fs::create_dir_all(&runtime).unwrap();
        chown(&runtime, uid, gid);
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).unwrap();
        // Distributions ship /dev/net/tun 0666 (udev); pasta needs it.
        if let Ok(m) = fs::metadata("/dev/net/tun") {
            if m.permissions().mode() & 0o006 != 0o006 {
                let _ = fs::set_permissions("/dev/net/tun", fs::Permissions::from_mode(0o666));
            }
        }
        User {
            name: name.into(),
            uid,
            gid,
            home,
            runtime,
        }
    }

    /// A command run as this user with a clean environment plus `env`.
    pub fn command<S: AsRef<OsStr>>(&self, env: &[(&str, String)], argv: &[S]) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg("--")
            .arg("env")
            .arg("-i")
            .arg(format!("HOME={}", self.home.display()))
            .arg(format!("USER={}", self.name))
            .arg(format!("LOGNAME={}", self.name))
            .arg("PATH=/usr/local/bin:/usr/bin:/bin")
            .arg("LANG=C.UTF-8")
            .arg(format!("XDG_RUNTIME_DIR={}", self.runtime.display()))
            .arg(format!(
                "XDG_DATA_DIRS={}:/usr/local/share:/usr/share",
                staged().share.display()
            ));
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        c.args(argv);
        c.current_dir("/");
        c
    }

    /// A file in the user's home, created as root and handed to the user.
    pub fn write_file(&self, rel: &str, data: &str) -> PathBuf {
        let p = self.home.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        chown(&p, self.uid, self.gid);
        p
    }
}

pub fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
}

/// `chown -R uid:gid p`.
#[allow(dead_code)]
pub fn chown_tree(p: &Path, uid: u32, gid: u32) {
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "chown -R {}", p.display());
}

/// One test's own Doppel configuration (config and data dirs), so tests run side by side.
pub struct Env {
    pub user: User,
    pub root: PathBuf,
    pub vars: Vec<(&'static str, String)>,
}

impl Env {
    pub fn new(user: User, tag: &str) -> Env {
        let root = user.home.join(format!("e2e-{tag}"));
        let _ = fs::remove_dir_all(&root);
        for d in ["config", "data"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", user.uid, user.gid))
            .arg(&root)
            .status()
            .unwrap();
        let vars = vec![
            ("XDG_CONFIG_HOME", root.join("config").display().to_string()),
            ("XDG_DATA_HOME", root.join("data").display().to_string()),
        ];
        Env { user, root, vars }
    }

    pub fn with(mut self, k: &'static str, v: String) -> Env {
        self.vars.push((k, v));
        self
    }

    fn env_list(&self) -> Vec<(&str, String)> {
        self.vars.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// `doppel ARGS` as the user; waits.
    pub fn doppel(&self, args: &[&str]) -> Output {
        let mut argv: Vec<&OsStr> = vec![staged().doppel.as_os_str()];
        argv.extend(args.iter().map(OsStr::new));
        self.user
            .command(&self.env_list(), &argv)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `doppel ARGS` as the user, in the background.
    pub fn spawn_doppel(&self, args: &[&str]) -> Child {
        let mut argv: Vec<&OsStr> = vec![staged().doppel.as_os_str()];
        argv.extend(args.iter().map(OsStr::new));
        self.user
            .command(&self.env_list(), &argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `doppel ARGS` as the user, in the background, with a pipe on its standard input (for
    /// `--passphrase-fd 0`).
    pub fn spawn_doppel_stdin(&self, args: &[&str]) -> Child {
        let mut argv: Vec<&OsStr> = vec![staged().doppel.as_os_str()];
        argv.extend(args.iter().map(OsStr::new));
        self.user
            .command(&self.env_list(), &argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Any command as the user, with this test's environment, in the background.
    pub fn spawn_as_user(&self, argv: &[&str]) -> Child {
        self.user
            .command(&self.env_list(), argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Runs `sh -c SCRIPT` inside profile `id`'s sandbox and returns stdout; panics on failure.
    pub fn sh(&self, id: &str, extra: &[&str], script: &str) -> String {
        let mut args = vec!["run", id];
        args.extend_from_slice(extra);
        args.extend(["--", "sh", "-c", script]);
        let out = self.doppel(&args);
        assert!(
            out.status.success(),
            "doppel {args:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn profile_data(&self, id: &str) -> PathBuf {
        self.root.join("data/doppel/profiles").join(id)
    }
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Where tests leave screenshots and logs (`<workspace>/artifacts`).
pub fn artifacts() -> PathBuf {
    let d = workspace_root().join("artifacts");
    fs::create_dir_all(&d).unwrap();
    d
}
