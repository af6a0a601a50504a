//! Encrypted volumes and the copy-on-write home, end to end: the real `doppel-helper` on a
//! private system bus with the real polkitd, driven through the CLI as an unprivileged user and,
//! for hostile input, by direct D-Bus calls made as that user.
//!
//! Each test has its own users (polkit rules are per user and machine-wide) and its own bus.
//! They need root (loop devices, mounts, test users) and skip without it (fail under CI=true).
//! What a test leaves under /var/lib/doppel/<uid> and /run/doppel/<uid> of its users is scrubbed
//! before it starts and when it ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/sysbus.rs"]
mod sysbus;

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{ok, staged, wait_until, Env, User};
use doppel_helper::wire::{
    VolumeInfo, BUS_NAME, CONFIG_FILE, INTERFACE, OBJECT_PATH, RUN_DIR, STATE_DIR,
};
use sysbus::SystemBus;
use zbus::export::serde::Serialize;
use zbus::zvariant::DynamicType;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// useradd, the limits file and helper starts touch the whole machine: one at a time here.
static MACHINE: Mutex<()> = Mutex::new(());

fn machine() -> MutexGuard<'static, ()> {
    MACHINE.lock().unwrap_or_else(|e| e.into_inner())
}

fn helper_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test binary>
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("doppel-helper")
}

fn prerequisites(what: &str) -> bool {
    if !common::require(
        common::is_root(),
        &format!("{what} needs root (loop devices, mounts, test users)"),
    ) {
        return false;
    }
    for cmd in [
        "dbus-daemon",
        "dbus-send",
        "pkcheck",
        "setpriv",
        "mkfs.ext4",
        "e2fsck",
        "resize2fs",
        "bwrap",
        "unshare",
        "nsenter",
        "losetup",
        "grep",
    ] {
        if !common::require(common::have(cmd), &format!("{cmd} is not installed")) {
            return false;
        }
    }
    common::require(
        Path::new(sysbus::POLKITD).exists(),
        "polkitd is not installed (Debian package polkitd)",
    ) && common::require(
        Path::new("/dev/loop-control").exists(),
        "there are no loop devices (/dev/loop-control)",
    ) && common::require(
        helper_bin().exists(),
        "target/<profile>/doppel-helper is missing: cargo build --workspace",
    )
}

/// The account `name`, with nothing of Doppel's left from an earlier run.
fn user(name: &str) -> User {
    let u = {
        let _g = machine();
        User::get(name)
    };
    scrub(u.uid);
    u
}

/// Starts a helper (with `env`, such as a crash point) once no limits file is being swapped.
fn start_helper(bus: &SystemBus, env: &[(&str, &str)]) -> Child {
    let _g = machine();
    bus.start_helper_with(&helper_bin(), &["--idle-timeout", "600"], env)
}

/// Kills a helper and waits until the bus has let go of its name.
fn stop_helper(bus: &SystemBus, mut h: Child) {
    let _ = h.kill();
    let _ = h.wait();
    assert!(
        wait_until(Duration::from_secs(10), || !bus.has_owner(BUS_NAME)),
        "the helper's name stayed owned"
    );
}

fn alive(h: &mut Child) -> bool {
    h.try_wait().unwrap().is_none()
}

/// One test's bus, with a helper on it, and the CLI environment of its main user.
fn world(tag: &str, u: User, allow: bool) -> (SystemBus, Env, Child) {
    let bus = SystemBus::start(tag);
    if allow {
        bus.allow_user(&u.name);
    }
    let helper = start_helper(&bus, &[]);
    let env = Env::new(u, tag).with("DBUS_SYSTEM_BUS_ADDRESS", bus.address().to_owned());
    (bus, env, helper)
}

/// Removes what Doppel keeps for `uid` (mounts, loop devices, images); also on panic, after
/// printing what was there.
struct Scrub(Vec<u32>);

impl Drop for Scrub {
    fn drop(&mut self) {
        for &uid in &self.0 {
            if std::thread::panicking() {
                eprintln!(
                    "state of uid {uid} at the failure: mounts {:?}, loops {:?}, files {:?}",
                    mounts_of(uid),
                    loops_under(&state_dir(uid)),
                    files_of(uid)
                );
            }
            scrub(uid);
        }
    }
}

fn scrub(uid: u32) {
    let mut mnts = mounts_of(uid);
    mnts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mnts {
        let c = std::ffi::CString::new(m).unwrap();
        // SAFETY: a valid C string; integer flags.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let state = state_dir(uid);
    wait_until(Duration::from_secs(5), || {
        for (dev, _) in loops_under(&state) {
            let _ = Command::new("losetup").arg("-d").arg(&dev).output();
        }
        loops_under(&state).is_empty()
    });
    let _ = fs::remove_dir_all(&state);
    let _ = fs::remove_dir_all(run_dir(uid));
}

fn state_dir(uid: u32) -> PathBuf {
    Path::new(STATE_DIR).join(uid.to_string())
}

fn run_dir(uid: u32) -> PathBuf {
    Path::new(RUN_DIR).join(uid.to_string())
}

fn image(uid: u32, id: &str) -> PathBuf {
    state_dir(uid).join(format!("{id}.img"))
}

fn mountpoint(uid: u32, id: &str) -> PathBuf {
    run_dir(uid).join(id)
}

/// Mount points at or below /run/doppel/<uid>, from /proc/self/mountinfo, in order.
fn mounts_of(uid: u32) -> Vec<String> {
    let top = run_dir(uid).display().to_string();
    let below = format!("{top}/");
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == top || m.starts_with(&below))
        .map(str::to_owned)
        .collect()
}

/// Whether anything is mounted on `p`.
fn is_mount(p: &Path) -> bool {
    let want = p.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Loop devices whose backing file is below `prefix` (or is `prefix`): (device, file).
fn loops_under(prefix: &Path) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for e in fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(b) = fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let b = b.trim_end_matches('\n').trim_end_matches(" (deleted)");
        if Path::new(b).starts_with(prefix) {
            v.push((format!("/dev/{name}"), b.to_owned()));
        }
    }
    v.sort();
    v
}

/// Waits until no loop device is backed by `img` (the kernel detaches an autoclear device when
/// its last user goes, possibly a moment after the unmount returns).
fn no_loop_backs(img: &Path) -> bool {
    wait_until(Duration::from_secs(10), || loops_under(img).is_empty())
}

/// Everything below /var/lib/doppel/<uid>: relative path, kind and size (not following links).
fn files_of(uid: u32) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if m.file_type().is_symlink() {
                out.push(format!("{rel} -> {}", fs::read_link(&p).unwrap().display()));
            } else if m.is_dir() {
                out.push(format!("{rel}/"));
                walk(base, &p, out);
            } else {
                out.push(format!("{rel} ({} bytes)", m.len()));
            }
        }
    }
    let base = state_dir(uid);
    let mut v = Vec::new();
    if let Ok(m) = fs::symlink_metadata(&base) {
        if m.file_type().is_symlink() {
            v.push(format!(". -> {}", fs::read_link(&base).unwrap().display()));
            return v;
        }
    }
    walk(&base, &base, &mut v);
    v.sort();
    v
}

fn random_hex(bytes: usize) -> String {
    random_bytes(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut v)
        .unwrap();
    v
}

fn progress(test: &str, what: &str) {
    eprintln!("[{test}] {what}");
}

// ---------------------------------------------------------------------------------------------
// The CLI as the user
// ---------------------------------------------------------------------------------------------

/// Nothing the CLI does here takes long: a call that hangs fails the test, with what it
/// printed, instead of holding the whole run.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// `doppel ARGS` as the user, with `input` on its stdin (for --passphrase-fd 0).
fn doppel_in(env: &Env, args: &[&str], input: &str) -> Output {
    let vars: Vec<(&str, String)> = env.vars.iter().map(|(k, v)| (*k, v.clone())).collect();
    let mut argv: Vec<&OsStr> = vec![staged().doppel.as_os_str()];
    argv.extend(args.iter().map(OsStr::new));
    let mut child = env
        .user
        .command(&vars, &argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The CLI may fail before reading; a broken pipe is its answer, not ours.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    // Read both pipes on threads that keep what they got where a timeout can still show it.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut bufs = Vec::new();
    for mut pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let buf = std::sync::Arc::new(Mutex::new(Vec::new()));
        bufs.push(buf.clone());
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                buf.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
            let _ = tx.send(());
        });
    }
    let end = Instant::now() + CLI_TIMEOUT;
    let got = |i: usize| String::from_utf8_lossy(&bufs[i].lock().unwrap()).into_owned();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "doppel {args:?} hung for {}s\nstdout: {}\nstderr: {}",
                CLI_TIMEOUT.as_secs(),
                got(0),
                got(1)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for _ in 0..2 {
        let left = end.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
        if rx.recv_timeout(left).is_err() {
            panic!(
                "doppel {args:?} exited ({status}) but what it started keeps its output open\n\
                 stdout: {}\nstderr: {}",
                got(0),
                got(1)
            );
        }
    }
    let stdout = bufs[0].lock().unwrap().clone();
    let stderr = bufs[1].lock().unwrap().clone();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// `doppel ARGS` as the user, with nothing on its stdin.
fn cli(env: &Env, args: &[&str]) -> Output {
    doppel_in(env, args, "")
}

/// `sh -c SCRIPT` in profile `id`'s sandbox, without a network; its stdout.
fn sandboxed(env: &Env, id: &str, script: &str) -> String {
    ok(&cli(
        env,
        &["run", id, "--network", "none", "--", "sh", "-c", script],
    ))
}

fn fails(out: &Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!e.contains("panicked"), "{what} panicked: {e}");
    e
}

/// Runs `sh -c SCRIPT` as the user outside any sandbox; returns stdout.
fn as_user(u: &User, script: &str) -> Output {
    u.command(&[], &["sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The recovery key `doppel create --encrypt` printed.
fn recovery_key(create_stdout: &str) -> String {
    let mut lines = create_stdout.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with("Recovery key for"))
        .unwrap_or_else(|| panic!("no recovery key in: {create_stdout}"));
    let key = lines.next().unwrap().trim().to_owned();
    assert!(
        key.len() > 20 && key.contains('-'),
        "not a recovery key: {key:?}"
    );
    key
}

/// The profile's line in `doppel list`.
fn list_line(env: &Env, id: &str) -> String {
    let out = ok(&cli(env, &["list"]));
    out.lines()
        .find(|l| l.starts_with(&format!("{id}: ")))
        .unwrap_or_else(|| panic!("{id} is not in `doppel list`: {out}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Direct D-Bus calls as a user
// ---------------------------------------------------------------------------------------------

type Conn = zbus::blocking::Connection;
type Reply = zbus::Result<zbus::Message>;

/// A connection to the test bus authenticated as `u`: made on a thread whose credentials alone
/// are the user's (raw system calls change only the calling thread's; glibc's wrappers would
/// change the whole test process), connecting the socket itself so the bus records that uid.
fn connect_as(bus: &SystemBus, u: &User) -> Conn {
    let addr = bus.address().to_owned();
    let path = addr
        .strip_prefix("unix:path=")
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("not a unix:path address: {addr}"))
        .to_owned();
    let (uid, gid) = (u.uid, u.gid);
    let conn = std::thread::spawn(move || {
        // SAFETY: plain system calls with integer arguments (and a null list of no groups); they
        // change the credentials of this thread only.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                0
            );
            assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
        }
        let s = UnixStream::connect(&path).unwrap();
        zbus::blocking::connection::Builder::async_io_unix_stream(s)
            .method_timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    })
    .join()
    .unwrap();
    // The bus vouches for the uid the helper will act for.
    let me = conn.unique_name().unwrap().to_string();
    let reply = conn
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "GetConnectionUnixUser",
            &(me.as_str(),),
        )
        .unwrap();
    assert_eq!(reply.body().deserialize::<u32>().unwrap(), u.uid);
    conn
}

fn call<B>(c: &Conn, method: &str, body: &B) -> Reply
where
    B: Serialize + DynamicType,
{
    c.call_method(Some(BUS_NAME), OBJECT_PATH, Some(INTERFACE), method, body)
}

/// "ok", or the D-Bus error's name, or what else went wrong.
fn outcome(r: &Reply) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(zbus::Error::MethodError(name, _, _)) => name.to_string(),
        Err(e) => format!("not a D-Bus error: {e}"),
    }
}

fn message(r: &Reply) -> String {
    match r {
        Err(zbus::Error::MethodError(_, Some(m), _)) => m.clone(),
        _ => String::new(),
    }
}

fn status(c: &Conn) -> Vec<VolumeInfo> {
    call(c, "Status", &())
        .unwrap()
        .body()
        .deserialize::<Vec<VolumeInfo>>()
        .unwrap()
}

const E: &str = "org.doppel.Helper1.Error.";
const INVALID: &str = "org.doppel.Helper1.Error.InvalidArgument";
const NOT_AUTHORIZED: &str = "org.doppel.Helper1.Error.NotAuthorized";
const NOT_FOUND: &str = "org.doppel.Helper1.Error.NotFound";
const EXISTS: &str = "org.doppel.Helper1.Error.Exists";
const BUSY: &str = "org.doppel.Helper1.Error.Busy";
const LIMIT: &str = "org.doppel.Helper1.Error.LimitExceeded";
const WRONG_KEY: &str = "org.doppel.Helper1.Error.WrongKey";
const FAILED: &str = "org.doppel.Helper1.Error.Failed";
const OK: &str = "ok";

// ---------------------------------------------------------------------------------------------
// 1. Round trip through the CLI
// ---------------------------------------------------------------------------------------------

/// create --encrypt, run (auto-lock), unlock, read back, passwd, recovery key, delete.
#[test]
fn encrypted_round_trip_through_the_cli() {
    const T: &str = "roundtrip";
    if !prerequisites("the encrypted round trip") {
        return;
    }
    let u = user("doppel-e2e-vol1");
    let _scrub = Scrub(vec![u.uid]);
    let (_bus, env, _helper) = world("vol1", u, true);
    let uid = env.user.uid;
    let id = "rt";
    let img = image(uid, id);
    let mnt = mountpoint(uid, id);

    progress(T, "create --encrypt --size 128M");
    let out = doppel_in(
        &env,
        &[
            "create",
            id,
            "--app",
            "sh",
            "--encrypt",
            "--size",
            "128M",
            "--passphrase-fd",
            "0",
        ],
        "first passphrase\n",
    );
    let created = ok(&out);
    let recovery = recovery_key(&created);
    let m = fs::metadata(&img).unwrap();
    assert_eq!(m.len(), 128 * MIB, "the image has the size asked for");
    assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o600), "root's, 0600");
    assert!(
        list_line(&env, id).contains(": locked"),
        "create leaves it locked"
    );
    assert!(mounts_of(uid).is_empty(), "{:?}", mounts_of(uid));

    let marker = format!("MARKER-{}", random_hex(16));
    let fname = format!("quokka-{}.txt", random_hex(6));
    progress(
        T,
        "run: write the marker (unlocks with the passphrase, locks after)",
    );
    let out = doppel_in(
        &env,
        &[
            "run",
            id,
            "--network",
            "none",
            "--passphrase-fd",
            "0",
            "--",
            "sh",
            "-c",
            r#"printf %s "$1" > "$HOME/$2" && echo WROTE"#,
            "sh",
            &marker,
            &fname,
        ],
        "first passphrase\n",
    );
    assert!(ok(&out).contains("WROTE"));
    let line = list_line(&env, id);
    assert!(line.contains(": locked"), "auto-lock after the run: {line}");
    assert!(!is_mount(&mnt), "still mounted: {:?}", mounts_of(uid));
    assert!(mounts_of(uid).is_empty(), "{:?}", mounts_of(uid));
    assert!(
        no_loop_backs(&img),
        "a loop device still backs the image: {:?}",
        loops_under(&img)
    );

    progress(T, "a wrong passphrase unlocks nothing");
    let e = fails(
        &doppel_in(
            &env,
            &["unlock", id, "--passphrase-fd", "0"],
            "not the passphrase\n",
        ),
        "unlock with a wrong passphrase",
    );
    assert!(e.contains("wrong"), "{e}");
    assert!(mounts_of(uid).is_empty());

    progress(T, "unlock, read back through `run -- cat`");
    let out = ok(&doppel_in(
        &env,
        &["unlock", id, "--passphrase-fd", "0"],
        "first passphrase\n",
    ));
    assert!(out.contains(&format!("unlocked {id}")), "{out}");
    assert!(is_mount(&mnt));
    assert!(list_line(&env, id).contains("stopped, unlocked"));
    let out = cli(
        &env,
        &[
            "run",
            id,
            "--network",
            "none",
            "--",
            "cat",
            &format!("{}/{fname}", env.user.home.display()),
        ],
    );
    assert_eq!(ok(&out).as_bytes(), marker.as_bytes(), "byte-identical");
    assert!(
        list_line(&env, id).contains(": locked"),
        "locked after the run"
    );
    assert!(no_loop_backs(&img));

    progress(T, "passwd: old -> new");
    let out = ok(&doppel_in(
        &env,
        &["passwd", id, "--passphrase-fd", "0"],
        "first passphrase\nsecond passphrase\n",
    ));
    assert!(out.contains("changed the passphrase"), "{out}");
    let e = fails(
        &doppel_in(
            &env,
            &["unlock", id, "--passphrase-fd", "0"],
            "first passphrase\n",
        ),
        "unlock with the old passphrase",
    );
    assert!(e.contains("wrong"), "{e}");
    assert!(mounts_of(uid).is_empty());
    ok(&doppel_in(
        &env,
        &["unlock", id, "--passphrase-fd", "0"],
        "second passphrase\n",
    ));
    assert!(is_mount(&mnt));
    let secret = mnt.join("data/home").join(&fname);
    assert_eq!(fs::read(&secret).unwrap(), marker.as_bytes());
    ok(&cli(&env, &["lock", id]));
    assert!(!is_mount(&mnt) && no_loop_backs(&img));

    progress(T, "the recovery key unlocks");
    ok(&doppel_in(
        &env,
        &["unlock", id, "--passphrase-fd", "0"],
        &format!("{recovery}\n"),
    ));
    assert_eq!(fs::read(&secret).unwrap(), marker.as_bytes());
    ok(&cli(&env, &["lock", id]));
    assert!(mounts_of(uid).is_empty() && no_loop_backs(&img));

    progress(T, "delete");
    let keys = env.profile_data(id).join("keys");
    assert!(
        keys.join("passphrase.toml").exists(),
        "keys live at {}",
        keys.display()
    );
    ok(&cli(&env, &["delete", id, "--yes"]));
    assert!(!img.exists(), "the image survived delete");
    assert!(!keys.exists(), "the keys survived delete");
    assert!(!env.profile_data(id).exists());
    assert!(!mnt.exists(), "the mount point survived delete");
    assert!(files_of(uid).is_empty(), "{:?}", files_of(uid));
    assert!(mounts_of(uid).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2. At rest
// ---------------------------------------------------------------------------------------------

/// grep -a -F -c: whether `needle` occurs in the raw bytes of `file`.
fn raw_contains(file: &Path, needle: &str) -> bool {
    let out = Command::new("grep")
        .args(["-a", "-F", "-q", "--", needle])
        .arg(file)
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("grep {}: {out:?}", file.display()),
    }
}

/// A process in a mount namespace of its own that keeps `mnt` (and, of Doppel's, only `mnt`:
/// the copy would otherwise hold other tests' volumes too), as a sandbox or any service started
/// while a volume is unlocked would.
fn hold_in_namespace(mnt: &Path) -> Held {
    let script = r#"awk '{print $5}' /proc/self/mountinfo | grep '^/run/doppel/' | grep -vxF "$1" \
        | sort -r | while read -r m; do umount -l "$m"; done; exec sleep 120"#;
    let holder = Held(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(mnt)
            .current_dir("/")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = holder.0.id();
    let want = vec![mnt.display().to_string()];
    let theirs = || -> Vec<String> {
        fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with("/run/doppel/"))
            .map(str::to_owned)
            .collect()
    };
    let exe = || fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || exe().ends_with("sleep")
            && theirs() == want),
        "the namespace holds {:?}, not just {want:?}",
        theirs()
    );
    holder
}

/// After lock: the key is gone from the kernel even where another mount namespace still holds
/// the volume (as a sandbox would), and the image holds neither the file's name nor its content.
#[test]
fn locked_data_is_ciphertext_and_the_key_is_gone() {
    const T: &str = "at-rest";
    if !prerequisites("the at-rest test") {
        return;
    }
    let u = user("doppel-e2e-vol2");
    let _scrub = Scrub(vec![u.uid]);
    let (_bus, env, _helper) = world("vol2", u, true);
    let uid = env.user.uid;
    let id = "rest";
    let (img, mnt) = (image(uid, id), mountpoint(uid, id));

    progress(T, "create and unlock");
    ok(&doppel_in(
        &env,
        &[
            "create",
            id,
            "--app",
            "sh",
            "--encrypt",
            "--size",
            "64M",
            "--passphrase-fd",
            "0",
        ],
        "pass\n",
    ));
    ok(&doppel_in(
        &env,
        &["unlock", id, "--passphrase-fd", "0"],
        "pass\n",
    ));
    let marker = format!("MARKER-{}", random_hex(16));
    let fname = format!("wombat-{}.txt", random_hex(6));
    let home = mnt.join("data/home");
    let out = as_user(
        &env.user,
        &format!(
            "printf %s '{marker}' > '{}/{fname}' && sync && echo OK",
            home.display()
        ),
    );
    assert!(ok(&out).contains("OK"));

    progress(T, "a second mount namespace holds the volume");
    let mut holder = hold_in_namespace(&mnt);
    let pid = holder.0.id().to_string();
    let ns_sh = |script: &str| -> String {
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-m", "--", "sh", "-c", script])
            .current_dir("/")
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // Everything below data/, names and contents (without the key, names show encoded, so
    // no plaintext path would resolve).
    let listing = format!(
        "cd '{}/data' && ls -aR . && find . -type f -exec cat {{}} \\; 2>&1; echo",
        mnt.display()
    );
    // Control: the copy sees the plaintext while the key is present.
    let seen = ns_sh(&listing);
    assert!(seen.contains(&fname) && seen.contains(&marker), "{seen}");

    progress(T, "lock");
    ok(&cli(&env, &["lock", id]));
    assert!(!is_mount(&mnt) && mounts_of(uid).is_empty());
    let seen = ns_sh(&listing);
    progress(T, &format!("the other namespace after lock: {seen:?}"));
    assert!(
        !seen.contains(&fname) && !seen.contains(&marker),
        "the other namespace still sees plaintext after lock: {seen}"
    );
    assert!(
        seen.contains("Required key not available"),
        "files there are unreadable without the key: {seen}"
    );
    let _ = holder.0.kill();
    let _ = holder.0.wait();
    assert!(no_loop_backs(&img), "{:?}", loops_under(&img));

    progress(T, "scan the raw image");
    // Control: the scan sees plaintext that is there (the filesystem label).
    assert!(raw_contains(&img, &format!("doppel-{id}")));
    assert!(!raw_contains(&img, &marker), "the content is in the clear");
    assert!(!raw_contains(&img, &fname), "the file name is in the clear");

    progress(T, "the data is there all the same");
    ok(&doppel_in(
        &env,
        &["unlock", id, "--passphrase-fd", "0"],
        "pass\n",
    ));
    assert_eq!(fs::read_to_string(home.join(&fname)).unwrap(), marker);
    ok(&cli(&env, &["lock", id]));
    assert!(mounts_of(uid).is_empty() && no_loop_backs(&img));
}

/// A mount namespace made while a volume was unlocked (a service with PrivateTmp, any user's
/// `unshare -Urm`) keeps the volume's superblock and loop device alive after Lock. The next
/// Unlock must mount the loop device that still backs the image, not attach a second one: two
/// ext4 instances on one image would overwrite each other's superblock (e2fsck: "Free blocks
/// count wrong").
#[test]
fn unlock_never_mounts_an_image_twice() {
    const T: &str = "double-mount";
    if !prerequisites("the double-mount test") {
        return;
    }
    let u = user("doppel-e2e-vol7");
    let _scrub = Scrub(vec![u.uid]);
    let (_bus, env, _helper) = world("vol7", u, true);
    let uid = env.user.uid;
    let id = "twice";
    let (img, mnt) = (image(uid, id), mountpoint(uid, id));
    let unlock = || doppel_in(&env, &["unlock", id, "--passphrase-fd", "0"], "pass\n");
    ok(&doppel_in(
        &env,
        &[
            "create",
            id,
            "--app",
            "sh",
            "--encrypt",
            "--size",
            "64M",
            "--passphrase-fd",
            "0",
        ],
        "pass\n",
    ));
    ok(&unlock());
    let home = mnt.join("data/home").display().to_string();
    ok(&as_user(
        &env.user,
        &format!("echo one > '{home}/one' && sync"),
    ));
    let mut holder = hold_in_namespace(&mnt);
    ok(&cli(&env, &["lock", id]));
    progress(
        T,
        &format!("locked; still backing the image: {:?}", loops_under(&img)),
    );
    let again = unlock();
    progress(
        T,
        &format!("unlock again: {}", common::stderr(&again).trim()),
    );
    let backing = loops_under(&img);
    if again.status.success() {
        ok(&as_user(
            &env.user,
            &format!("for i in $(seq 100); do echo $i > '{home}/f'$i; done; sync"),
        ));
        ok(&cli(&env, &["lock", id]));
    }
    let _ = holder.0.kill();
    let _ = holder.0.wait();
    assert!(no_loop_backs(&img));
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&fsck.stdout).into_owned();
    assert!(
        backing.len() <= 1,
        "one image, {} loop devices mounted at once: {backing:?}; e2fsck -fn then said:\n{report}",
        backing.len()
    );
    assert!(
        fsck.status.success() && !report.contains("wrong"),
        "{report}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. polkit
// ---------------------------------------------------------------------------------------------

/// Without a polkit rule a session-less user is refused before anything is made; with one, the
/// same create works; revoked again, unlock is refused and mounts nothing.
#[test]
fn polkit_decides() {
    const T: &str = "polkit";
    if !prerequisites("the polkit test") {
        return;
    }
    let u = user("doppel-e2e-vol3");
    let _scrub = Scrub(vec![u.uid]);
    let (bus, env, _helper) = world("vol3", u, false);
    let uid = env.user.uid;
    let create = [
        "create",
        "pk",
        "--app",
        "sh",
        "--encrypt",
        "--size",
        "64M",
        "--passphrase-fd",
        "0",
    ];

    progress(T, "create without a rule");
    let e = fails(&doppel_in(&env, &create, "pass\n"), "create without polkit");
    assert!(e.contains("not authorized"), "{e}");
    assert!(
        !state_dir(uid).exists(),
        "something was made: {:?}",
        files_of(uid)
    );
    assert!(!run_dir(uid).exists());
    assert!(!env.profile_data("pk").exists(), "keys were written");
    assert!(
        !ok(&cli(&env, &["list"])).contains("pk:"),
        "a profile was left"
    );

    progress(T, "create with the rule");
    bus.allow_user(&env.user.name);
    let out = ok(&doppel_in(&env, &create, "pass\n"));
    recovery_key(&out);
    assert!(image(uid, "pk").exists());

    progress(T, "revoked: unlock is refused");
    bus.revoke_user(&env.user.name);
    let e = fails(
        &doppel_in(&env, &["unlock", "pk", "--passphrase-fd", "0"], "pass\n"),
        "unlock without polkit",
    );
    assert!(e.contains("not authorized"), "{e}");
    assert!(mounts_of(uid).is_empty(), "{:?}", mounts_of(uid));
    assert!(no_loop_backs(&image(uid, "pk")));
}

// ---------------------------------------------------------------------------------------------
// 4. Hostile calls
// ---------------------------------------------------------------------------------------------

/// Who makes a call: A and B are allowed by polkit, C is not.
#[derive(Clone, Copy, Debug)]
enum Who {
    A,
    B,
    C,
}

use Who::{A, B, C};

/// One D-Bus call, described for the failure message.
struct Call {
    what: String,
    f: Box<dyn Fn(&Conn) -> Reply + Send + Sync>,
}

impl Call {
    fn named(mut self, what: impl Into<String>) -> Call {
        self.what = what.into();
        self
    }
}

/// `method(body)` on the helper's interface.
fn m<B>(method: &'static str, body: B) -> Call
where
    B: Serialize + DynamicType + std::fmt::Debug + Send + Sync + 'static,
{
    let mut what = format!("{method}{body:?}");
    if what.chars().count() > 90 {
        what = what.chars().take(90).chain(['…']).collect();
    }
    Call {
        what,
        f: Box::new(move |c| call(c, method, &body)),
    }
}

/// `method(body)` at another object path or interface.
fn at<B>(path: &'static str, iface: &'static str, method: &'static str, body: B) -> Call
where
    B: Serialize + DynamicType + std::fmt::Debug + Send + Sync + 'static,
{
    Call {
        what: format!("{iface}.{method}{body:?} at {path}"),
        f: Box::new(move |c| c.call_method(Some(BUS_NAME), path, Some(iface), method, &body)),
    }
}

/// A refusal (or harmless no-op) expected: who calls, the answer, the call.
type Case = (Who, &'static str, Call);

/// What a refused call must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    files: Vec<Vec<String>>,
    mounts: Vec<Vec<String>>,
    loops: Vec<Vec<(String, String)>>,
    etc: (u32, u32, u32),
}

fn snapshot(uids: &[u32]) -> Snapshot {
    let etc = fs::symlink_metadata("/etc").unwrap();
    Snapshot {
        files: uids.iter().map(|&u| files_of(u)).collect(),
        mounts: uids.iter().map(|&u| mounts_of(u)).collect(),
        loops: uids.iter().map(|&u| loops_under(&state_dir(u))).collect(),
        etc: (etc.uid(), etc.gid(), etc.mode()),
    }
}

struct Hostile<'a> {
    conns: [&'a Conn; 3],
    uids: Vec<u32>,
    count: usize,
}

impl Hostile<'_> {
    fn conn(&self, w: Who) -> &Conn {
        self.conns[w as usize]
    }

    /// Runs each case: the precise answer, a message a person can act on, nothing changed on
    /// disk or in the mount table, the helper still there.
    fn run(&mut self, cases: Vec<Case>, helper: &mut Child) {
        for (who, want, c) in cases {
            let before = snapshot(&self.uids);
            let r = (c.f)(self.conn(who));
            let got = outcome(&r);
            assert_eq!(got, want, "{who:?}: {}: {r:?}", c.what);
            if got.starts_with(E) {
                assert!(
                    message(&r).len() > 10,
                    "{}: no useful message: {r:?}",
                    c.what
                );
            }
            assert_eq!(
                snapshot(&self.uids),
                before,
                "{who:?}: {} changed the disk or the mount table",
                c.what
            );
            assert!(alive(helper), "the helper died at {who:?}: {}", c.what);
            self.count += 1;
        }
    }

    /// A call that must succeed (state may change).
    fn ok(&self, who: Who, c: Call) -> zbus::Message {
        let r = (c.f)(self.conn(who));
        assert_eq!(outcome(&r), OK, "{who:?} {}: {r:?}", c.what);
        r.unwrap()
    }
}

/// Writes the limits file, starts a helper (which reads it once, at start), puts the file back.
fn helper_with_limits(bus: &SystemBus, limits: &str) -> Child {
    let _g = machine();
    with_limits_file(limits, || {
        bus.start_helper_with(&helper_bin(), &["--idle-timeout", "600"], &[])
    })
}

/// Runs `f` with /etc/doppel/helper.toml holding `text`, then restores what was there.
fn with_limits_file<R>(text: &str, f: impl FnOnce() -> R) -> R {
    let path = Path::new(CONFIG_FILE);
    let saved = fs::read(path).ok();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    match saved {
        Some(t) => fs::write(path, t).unwrap(),
        None => fs::remove_file(path).unwrap(),
    }
    r.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

const UNKNOWN_METHOD: &str = "org.freedesktop.DBus.Error.UnknownMethod";
/// What the helper answers to a body of the wrong signature today: zbus's catch-all name (from
/// the `#[zbus(error)] ZBus` variant of service.rs's HelperError), with the message "Signature
/// mismatch: got `s`, expected `(say)`". The standard name would be
/// org.freedesktop.DBus.Error.InvalidArgs; the helper's client maps this one to "Failed".
const WRONG_SIGNATURE: &str = "org.freedesktop.zbus.Error";

/// Well over 50 malformed or hostile calls, each answered with its precise error and changing
/// nothing; then the stateful refusals (exists, wrong key, busy, grow, limits, planted
/// symlinks) and racing unlocks.
#[test]
fn hostile_calls_are_refused_and_change_nothing() {
    const T: &str = "hostile";
    if !prerequisites("the hostile-input test") {
        return;
    }
    let (ua, ub, uc) = (
        user("doppel-e2e-vol4a"),
        user("doppel-e2e-vol4b"),
        user("doppel-e2e-vol4c"),
    );
    let uids = vec![ua.uid, ub.uid, uc.uid];
    let _scrub = Scrub(uids.clone());
    let bus = SystemBus::start("vol4");
    bus.allow_user(&ua.name);
    bus.allow_user(&ub.name);
    let mut helper = start_helper(&bus, &[]);
    let (ca, cb, cc) = (
        connect_as(&bus, &ua),
        connect_as(&bus, &ub),
        connect_as(&bus, &uc),
    );
    let mut h = Hostile {
        conns: [&ca, &cb, &cc],
        uids: uids.clone(),
        count: 0,
    };
    let ka = random_bytes(64);
    let kb = random_bytes(64);
    let key = || ka.clone();
    let (alpha_mnt, alpha_img) = (mountpoint(ua.uid, "alpha"), image(ua.uid, "alpha"));
    let secret = alpha_mnt.join("data/secret");
    let size = 64 * MIB;

    // Planted before B's first call: /var/lib/doppel/<uidB>, then /run/doppel/<uidB>, as links
    // to a root-owned directory. Nothing may be made through them.
    progress(T, "links planted at B's state and run directories");
    let plant = tempfile::Builder::new()
        .prefix("doppel-e2e-plant-")
        .tempdir()
        .unwrap();
    // On a fresh machine /var/lib/doppel does not exist before the helper's first volume.
    fs::create_dir_all(state_dir(ub.uid).parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(plant.path(), state_dir(ub.uid)).unwrap();
    h.run(
        vec![
            (B, FAILED, m("CreateVolume", ("beta", size, kb.clone()))),
            (B, FAILED, m("Lock", ("beta",))),
            (B, FAILED, m("MountOverlay", ("beta",))),
            (B, FAILED, m("Status", ())),
        ],
        &mut helper,
    );
    fs::remove_file(state_dir(ub.uid)).unwrap();
    fs::create_dir_all(Path::new(RUN_DIR)).unwrap();
    std::os::unix::fs::symlink(plant.path(), run_dir(ub.uid)).unwrap();
    h.run(
        vec![
            (B, FAILED, m("CreateVolume", ("beta", size, kb.clone()))),
            (B, FAILED, m("Unlock", ("beta", kb.clone()))),
            (B, FAILED, m("MountOverlay", ("beta",))),
        ],
        &mut helper,
    );
    assert_eq!(fs::read_dir(plant.path()).unwrap().count(), 0);
    fs::remove_file(run_dir(ub.uid)).unwrap();
    let _ = fs::remove_dir_all(state_dir(ub.uid));

    progress(T, "A creates alpha");
    let mnt = h.ok(A, m("CreateVolume", ("alpha", size, key())));
    let mnt: String = mnt.body().deserialize().unwrap();
    assert_eq!(mnt, alpha_mnt.display().to_string());
    fs::write(&secret, "alpha's data").unwrap();
    h.ok(A, m("Lock", ("alpha",)));
    assert!(!is_mount(&alpha_mnt) && no_loop_backs(&alpha_img));

    // Status used to list A's volumes here: images() followed the link.
    progress(T, "a link at B's state dir pointing at A's");
    std::os::unix::fs::symlink(state_dir(ua.uid), state_dir(ub.uid)).unwrap();
    h.run(
        vec![
            (B, FAILED, m("Status", ())),
            (B, FAILED, m("Recover", ())),
            (B, FAILED, m("Unlock", ("alpha", key()))),
            (B, FAILED, m("DeleteVolume", ("alpha",))),
            (B, FAILED, m("GrowVolume", ("alpha", 128 * MIB))),
        ],
        &mut helper,
    );
    fs::remove_file(state_dir(ub.uid)).unwrap();

    progress(T, "the table of malformed calls");
    let mut cases: Vec<Case> = Vec::new();
    let huge = "a".repeat(1 << 20);
    #[rustfmt::skip]
    let bad_ids = [
        "../x", "a/b", "..", ".", "", &"a".repeat(64), &huge, "A", "Alpha", "-a", "a b",
        " alpha", "alpha ", "alpha\n", "alpha\t", "é", "αλφα", "a.img", "alpha.img", "/etc",
        "alpha/../alpha", "a_b", "*", "~root", "a\\b", "a:b", "$(id)",
    ];
    for id in bad_ids {
        let id = id.to_owned();
        cases.push((A, INVALID, m("CreateVolume", (id.clone(), size, key()))));
        cases.push((A, INVALID, m("Unlock", (id, key()))));
    }
    for id in ["../x", "", ".", "a/b", "..", "A"] {
        for method in ["Lock", "DeleteVolume", "MountOverlay", "UnmountOverlay"] {
            cases.push((A, INVALID, m(method, (id.to_owned(),))));
        }
        cases.push((A, INVALID, m("GrowVolume", (id.to_owned(), 128 * MIB))));
    }
    // Sizes out of range: below min_volume_size, above max_volume_size (defaults 64M, 256G).
    for s in [0, 1, 4096, 64 * MIB - 1, 256 * GIB + 1, 1 << 40, u64::MAX] {
        cases.push((A, LIMIT, m("CreateVolume", ("sized", s, key()))));
    }
    // Keys of the wrong length.
    for n in [0usize, 1, 32, 63, 65, 128, 1 << 20] {
        let k = random_bytes(n);
        let create = m("CreateVolume", ("keyed", size, k.clone()));
        cases.push((
            A,
            INVALID,
            create.named(format!("CreateVolume with a {n}-byte key")),
        ));
        let unlock = m("Unlock", ("alpha", k));
        cases.push((
            A,
            INVALID,
            unlock.named(format!("Unlock with a {n}-byte key")),
        ));
    }
    #[rustfmt::skip]
    cases.extend([
        // Valid ids with no volume (the longest id is 63 characters).
        (A, NOT_FOUND, m("Unlock", ("ghost", key()))),
        (A, NOT_FOUND, m("Unlock", ("0", key()))),
        (A, NOT_FOUND, m("Unlock", ("z".repeat(63), key()))),
        (A, NOT_FOUND, m("Lock", ("ghost",))),
        (A, NOT_FOUND, m("DeleteVolume", ("ghost",))),
        (A, NOT_FOUND, m("GrowVolume", ("ghost", 128 * MIB))),
        // Harmless no-ops.
        (A, OK, m("UnmountOverlay", ("ghost",))),
        (A, OK, m("Lock", ("alpha",))),
        (A, OK, m("Recover", ())),
        // B names A's volume: B has none of that name.
        (B, NOT_FOUND, m("Unlock", ("alpha", key()))),
        (B, NOT_FOUND, m("Lock", ("alpha",))),
        (B, NOT_FOUND, m("DeleteVolume", ("alpha",))),
        (B, NOT_FOUND, m("GrowVolume", ("alpha", 128 * MIB))),
        (B, OK, m("UnmountOverlay", ("alpha",))),
        (B, OK, m("Recover", ())),
        // A caller polkit refuses: refused before anything, even before the id is looked at.
        (C, NOT_AUTHORIZED, m("Status", ())),
        (C, NOT_AUTHORIZED, m("CreateVolume", ("gamma", size, key()))),
        (C, NOT_AUTHORIZED, m("CreateVolume", ("../x", size, key()))),
        (C, NOT_AUTHORIZED, m("Unlock", ("alpha", key()))),
        (C, NOT_AUTHORIZED, m("Lock", ("alpha",))),
        (C, NOT_AUTHORIZED, m("DeleteVolume", ("alpha",))),
        (C, NOT_AUTHORIZED, m("GrowVolume", ("alpha", 128 * MIB))),
        (C, NOT_AUTHORIZED, m("MountOverlay", ("gamma",))),
        (C, NOT_AUTHORIZED, m("UnmountOverlay", ("gamma",))),
        (C, NOT_AUTHORIZED, m("Recover", ())),
        // Methods that do not exist.
        (A, UNKNOWN_METHOD, m("Frobnicate", ("alpha",))),
        (A, UNKNOWN_METHOD, m("createvolume", ("alpha", size, key()))),
        (A, UNKNOWN_METHOD, m("Mount", ("alpha",))),
        (A, UNKNOWN_METHOD, m("SetLimits", (1000u32,))),
        (C, UNKNOWN_METHOD, m("Frobnicate", ())),
        // Bodies of the wrong signature.
        (A, WRONG_SIGNATURE, m("Unlock", ("alpha",))),
        (A, WRONG_SIGNATURE, m("Unlock", ())),
        (A, WRONG_SIGNATURE, m("Unlock", ("alpha", vec!["key"]))),
        (A, WRONG_SIGNATURE, m("Unlock", ("alpha", "key"))),
        (A, WRONG_SIGNATURE, m("Unlock", (key(), "alpha"))),
        (A, WRONG_SIGNATURE, m("CreateVolume", ("a", "b"))),
        (A, WRONG_SIGNATURE, m("CreateVolume", ("beta", size))),
        (A, WRONG_SIGNATURE, m("CreateVolume", ("beta", 64u32 << 20, key()))),
        (A, WRONG_SIGNATURE, m("CreateVolume", ("beta", -1i64, key()))),
        (A, WRONG_SIGNATURE, m("CreateVolume", ("beta", size, key(), "extra"))),
        (A, WRONG_SIGNATURE, m("Lock", (42u32,))),
        (A, WRONG_SIGNATURE, m("Lock", ("alpha", "alpha"))),
        (A, WRONG_SIGNATURE, m("Lock", ())),
        (A, WRONG_SIGNATURE, m("DeleteVolume", (vec!["alpha"],))),
        (A, WRONG_SIGNATURE, m("GrowVolume", ("alpha",))),
        (A, WRONG_SIGNATURE, m("GrowVolume", ("alpha", -1i32))),
        (A, WRONG_SIGNATURE, m("GrowVolume", (size, "alpha"))),
        (A, WRONG_SIGNATURE, m("Status", ("alpha",))),
        (A, WRONG_SIGNATURE, m("Recover", (1u8,))),
        (A, WRONG_SIGNATURE, m("MountOverlay", ())),
        (A, WRONG_SIGNATURE, m("UnmountOverlay", (true,))),
        // Other objects and interfaces.
        (A, "org.freedesktop.DBus.Error.UnknownObject",
            at("/org/doppel/Helper1/alpha", INTERFACE, "Lock", ("alpha",))),
        (A, "org.freedesktop.DBus.Error.UnknownInterface", at("/", INTERFACE, "Status", ())),
        (A, "org.freedesktop.DBus.Error.AccessDenied",
            at(OBJECT_PATH, "org.doppel.Helper2", "Lock", ("alpha",))),
        (A, "org.freedesktop.DBus.Error.UnknownProperty",
            at(OBJECT_PATH, "org.freedesktop.DBus.Properties", "Set",
               (INTERFACE, "MaxVolumes", zbus::zvariant::Value::from(1000u32)))),
    ]);
    h.run(cases, &mut helper);
    let table = h.count;
    progress(T, &format!("{table} refusals so far"));
    assert!(status(&cb).is_empty(), "B sees: {:?}", status(&cb));
    let sa = status(&ca);
    assert_eq!(sa.len(), 1, "{sa:?}");
    assert_eq!(
        (sa[0].id.as_str(), sa[0].size, sa[0].unlocked),
        ("alpha", size, false)
    );

    progress(T, "exists, wrong key, grow (locked)");
    let wrong = random_bytes(64);
    #[rustfmt::skip]
    h.run(
        vec![
            (A, EXISTS, m("CreateVolume", ("alpha", size, random_bytes(64)))),
            (A, WRONG_KEY, m("Unlock", ("alpha", wrong.clone()))),
            (A, INVALID, m("GrowVolume", ("alpha", 32 * MIB))),
            (A, INVALID, m("GrowVolume", ("alpha", size))),
            (A, INVALID, m("GrowVolume", ("alpha", 0u64))),
            (A, LIMIT, m("GrowVolume", ("alpha", 256 * GIB + 1))),
            (A, LIMIT, m("GrowVolume", ("alpha", u64::MAX))),
        ],
        &mut helper,
    );
    progress(T, "wrong key, busy (unlocked)");
    h.ok(A, m("Unlock", ("alpha", key())));
    assert!(is_mount(&alpha_mnt));
    assert_eq!(fs::read_to_string(&secret).unwrap(), "alpha's data");
    #[rustfmt::skip]
    h.run(
        vec![
            (A, WRONG_KEY, m("Unlock", ("alpha", wrong.clone()))),
            (A, OK, m("Unlock", ("alpha", key()))),
            (A, BUSY, m("GrowVolume", ("alpha", 128 * MIB))),
            (A, BUSY, m("DeleteVolume", ("alpha",))),
            (A, EXISTS, m("CreateVolume", ("alpha", size, key()))),
            (B, NOT_FOUND, m("Lock", ("alpha",))),
        ],
        &mut helper,
    );
    // The wrong key neither stayed nor displaced the right one.
    assert_eq!(fs::read_to_string(&secret).unwrap(), "alpha's data");
    assert!(status(&ca)[0].unlocked);

    progress(T, "lock while the volume is in use");
    {
        let held = fs::File::open(&secret).unwrap();
        h.run(
            vec![(
                A,
                BUSY,
                m("Lock", ("alpha",)).named("Lock with a file open"),
            )],
            &mut helper,
        );
        let mut s = String::new();
        (&held).read_to_string(&mut s).unwrap();
        assert_eq!(s, "alpha's data", "the open file still reads");
    }
    {
        let mut sleeper = Command::new("sleep");
        sleeper.arg("60").current_dir(alpha_mnt.join("data"));
        let _held = Held(sleeper.spawn().unwrap());
        let lock = m("Lock", ("alpha",)).named("Lock with a process's cwd inside");
        h.run(vec![(A, BUSY, lock)], &mut helper);
    }
    assert_eq!(fs::read_to_string(&secret).unwrap(), "alpha's data");
    h.ok(A, m("Lock", ("alpha",)));
    assert!(!is_mount(&alpha_mnt) && no_loop_backs(&alpha_img));

    progress(T, "racing calls");
    let ca2 = connect_as(&bus, &ua);
    for (first, second) in [("Unlock", "Unlock"); 3]
        .into_iter()
        .chain([("Unlock", "Lock"); 3])
    {
        let barrier = Barrier::new(2);
        let go = |c: &Conn, method: &str| {
            barrier.wait();
            if method == "Lock" {
                call(c, method, &("alpha",))
            } else {
                call(c, method, &("alpha", key()))
            }
        };
        let (r1, r2) = std::thread::scope(|s| {
            let t1 = s.spawn(|| go(&ca, first));
            let t2 = s.spawn(|| go(&ca2, second));
            (t1.join().unwrap(), t2.join().unwrap())
        });
        let (o1, o2) = (outcome(&r1), outcome(&r2));
        progress(T, &format!("{first} / {second}: {o1} / {o2}"));
        for o in [&o1, &o2] {
            assert!(o == OK || o == BUSY, "{first} / {second}: {r1:?} / {r2:?}");
        }
        assert!(o1 == OK || o2 == OK, "neither won: {r1:?} / {r2:?}");
        let now = mounts_of(ua.uid);
        if now.is_empty() {
            assert_eq!(second, "Lock");
            assert!(no_loop_backs(&alpha_img), "{:?}", loops_under(&alpha_img));
        } else {
            assert_eq!(now, vec![alpha_mnt.display().to_string()], "one mount");
            assert_eq!(
                loops_under(&alpha_img).len(),
                1,
                "{:?}",
                loops_under(&alpha_img)
            );
            assert_eq!(fs::read_to_string(&secret).unwrap(), "alpha's data");
        }
        h.ok(A, m("Lock", ("alpha",)));
        assert!(mounts_of(ua.uid).is_empty() && no_loop_backs(&alpha_img));
    }

    progress(T, "links planted by the user inside the unlocked volume");
    h.ok(A, m("Unlock", ("alpha", key())));
    let vol = alpha_mnt.display().to_string();
    let as_a = |script: &str| ok(&as_user(&ua, &format!("cd '{vol}' && {script}")));
    // The links point at a root-owned directory like /etc, but one of this test's own: other
    // tests add users (and so change /etc/passwd) while this one runs.
    let victim = tempfile::Builder::new()
        .prefix("doppel-e2e-victim-")
        .tempdir()
        .unwrap();
    fs::set_permissions(
        victim.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::write(victim.path().join("sentinel"), "root's own").unwrap();
    let v = victim.path().display().to_string();
    for (plant, what) in [
        (format!("ln -s '{v}' home"), "home"),
        (format!("ln -s '{v}' data/overlay"), "data/overlay"),
        (
            format!("mkdir data/overlay && ln -s '{v}' data/overlay/upper"),
            "data/overlay/upper",
        ),
        (
            format!("mkdir -p data/overlay/upper && ln -s '{v}' data/overlay/work"),
            "data/overlay/work",
        ),
    ] {
        as_a(&format!("rm -rf home data/overlay && {plant}"));
        let c = m("MountOverlay", ("alpha",)).named(format!("MountOverlay, {what} -> {v}"));
        h.run(vec![(A, FAILED, c)], &mut helper);
    }
    assert!(!is_mount(victim.path()), "{v} was mounted over");
    let left: Vec<_> = fs::read_dir(victim.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["sentinel"], "something was made in {v}");
    assert_eq!(
        fs::read_to_string(victim.path().join("sentinel")).unwrap(),
        "root's own"
    );
    // Control: with the links gone, the same call mounts the copy-on-write home.
    as_a("rm -rf home data/overlay");
    h.ok(A, m("MountOverlay", ("alpha",)));
    assert!(is_mount(&alpha_mnt.join("home")));
    h.ok(A, m("Lock", ("alpha",)));
    assert!(mounts_of(ua.uid).is_empty() && no_loop_backs(&alpha_img));

    progress(T, "limits from /etc/doppel/helper.toml");
    stop_helper(&bus, helper);
    let mut helper = helper_with_limits(&bus, "max_volumes = 1\n");
    let second = |s: u64| m("CreateVolume", ("second", s, random_bytes(64)));
    h.run(
        vec![(
            A,
            LIMIT,
            second(size).named("CreateVolume over max_volumes"),
        )],
        &mut helper,
    );
    stop_helper(&bus, helper);
    let mut helper = helper_with_limits(
        &bus,
        "max_total_size = \"100M\"\nmax_volume_size = \"96M\"\n",
    );
    h.run(
        vec![
            (
                A,
                LIMIT,
                second(size).named("CreateVolume over max_total_size"),
            ),
            (
                A,
                LIMIT,
                second(97 * MIB).named("CreateVolume over max_volume_size"),
            ),
            (A, LIMIT, m("GrowVolume", ("alpha", 97 * MIB))),
        ],
        &mut helper,
    );
    stop_helper(&bus, helper);
    // A limits file it cannot read: the helper does not start, and names the file.
    let out = {
        let _g = machine();
        with_limits_file("max_volumes = \"lots\"\n", || {
            Command::new(helper_bin())
                .args(["--address", bus.address()])
                .env_clear()
                .output()
                .unwrap()
        })
    };
    assert!(
        !out.status.success() && common::stderr(&out).contains(CONFIG_FILE),
        "{out:?}"
    );
    let mut helper = start_helper(&bus, &[]);

    progress(T, "growing within the limits");
    h.ok(A, m("GrowVolume", ("alpha", 96 * MIB)));
    assert_eq!(fs::metadata(&alpha_img).unwrap().len(), 96 * MIB);
    h.ok(A, m("Unlock", ("alpha", key())));
    assert_eq!(fs::read_to_string(&secret).unwrap(), "alpha's data");
    h.ok(A, m("Lock", ("alpha",)));

    // D-Bus strings cannot hold a NUL: the bus drops a client that sends one.
    progress(T, "a string with a NUL");
    let r = call(&connect_as(&bus, &ua), "Lock", &("al\0pha",));
    progress(T, &format!("NUL: {}", outcome(&r)));
    assert!(!outcome(&r).starts_with(E) && outcome(&r) != OK, "{r:?}");
    h.count += 1;
    assert!(alive(&mut helper));
    assert_eq!(status(&ca).len(), 1);

    progress(T, "A deletes alpha");
    h.ok(A, m("DeleteVolume", ("alpha",)));
    assert!(!alpha_img.exists() && status(&ca).is_empty());
    assert!(alive(&mut helper));
    eprintln!(
        "[{T}] {} hostile or malformed calls ({table} in the main table)",
        h.count
    );
}

/// A child killed when dropped, so a failing assertion does not leave it running.
struct Held(Child);

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Crashes
// ---------------------------------------------------------------------------------------------

/// For each crash point: the helper aborts mid-unlock or mid-lock; a new helper's Recover and a
/// lock leave no mount and no loop device; the volume then unlocks with its data intact.
#[test]
fn recover_after_a_crash_at_every_step() {
    const T: &str = "crash";
    if !prerequisites("the crash-recovery test") {
        return;
    }
    if !common::require(
        cfg!(debug_assertions),
        "the helper's crash points exist only in debug builds",
    ) {
        return;
    }
    // No core files from the aborts.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit for the call.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let u = user("doppel-e2e-vol5");
    let _scrub = Scrub(vec![u.uid]);
    let (bus, env, helper) = world("vol5", u, true);
    let uid = env.user.uid;
    let id = "crash";
    let (img, mnt) = (image(uid, id), mountpoint(uid, id));
    let conn = connect_as(&bus, &env.user);

    progress(T, "create and write");
    ok(&doppel_in(
        &env,
        &[
            "create",
            id,
            "--app",
            "sh",
            "--encrypt",
            "--size",
            "64M",
            "--passphrase-fd",
            "0",
        ],
        "pass\n",
    ));
    let unlock = |what: &str| {
        let out = doppel_in(&env, &["unlock", id, "--passphrase-fd", "0"], "pass\n");
        assert!(out.status.success(), "{what}: {out:?}");
    };
    unlock("first unlock");
    let data = mnt.join("data/home/kept.txt");
    let content = format!("kept {}", random_hex(8));
    ok(&as_user(
        &env.user,
        &format!("printf %s '{content}' > '{}' && sync", data.display()),
    ));
    ok(&cli(&env, &["lock", id]));
    stop_helper(&bus, helper);

    for step in [
        "after-attach",
        "after-mount",
        "after-add-key",
        "after-remove-key",
        "after-umount",
    ] {
        progress(T, step);
        let mut crashing = start_helper(&bus, &[("DOPPEL_HELPER_CRASH_AT", step)]);
        let on_lock = step.starts_with("after-remove") || step == "after-umount";
        if on_lock {
            unlock(step);
            assert!(is_mount(&mnt));
            let e = fails(&cli(&env, &["lock", id]), &format!("lock crashing {step}"));
            progress(T, &format!("lock said: {}", e.trim()));
        } else {
            let e = fails(
                &doppel_in(&env, &["unlock", id, "--passphrase-fd", "0"], "pass\n"),
                &format!("unlock crashing {step}"),
            );
            progress(T, &format!("unlock said: {}", e.trim()));
        }
        let end = Instant::now() + Duration::from_secs(10);
        let st = loop {
            if let Some(st) = crashing.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < end, "the helper did not crash at {step}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(st.signal(), Some(libc::SIGABRT), "{step}: {st}");
        let left = (mounts_of(uid), loops_under(&img));
        progress(T, &format!("left behind: {left:?}"));
        if matches!(step, "after-mount" | "after-add-key" | "after-remove-key") {
            assert!(
                is_mount(&mnt),
                "{step} left no mount to recover from: {left:?}"
            );
        }
        assert!(
            wait_until(Duration::from_secs(10), || !bus.has_owner(BUS_NAME)),
            "the crashed helper's name stayed"
        );

        let mut helper = start_helper(&bus, &[]);
        let r = call(&conn, "Recover", &());
        assert_eq!(outcome(&r), OK, "{r:?}");
        let done: Vec<String> = r.unwrap().body().deserialize().unwrap();
        progress(T, &format!("Recover: {done:?}"));
        if matches!(step, "after-mount" | "after-remove-key") {
            assert!(
                done.iter().any(|d| d.contains("without its key")),
                "{step}: {done:?}"
            );
            assert!(!is_mount(&mnt), "{step}: Recover left the keyless mount");
        }
        ok(&cli(&env, &["lock", id]));
        assert!(mounts_of(uid).is_empty(), "{step}: {:?}", mounts_of(uid));
        assert!(no_loop_backs(&img), "{step}: {:?}", loops_under(&img));

        unlock(&format!("unlock after {step}"));
        assert_eq!(fs::read_to_string(&data).unwrap(), content, "{step}");
        ok(&cli(&env, &["lock", id]));
        assert!(mounts_of(uid).is_empty() && no_loop_backs(&img));
        assert!(alive(&mut helper));
        stop_helper(&bus, helper);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. The copy-on-write home
// ---------------------------------------------------------------------------------------------

/// Reads through to the real home, writes only to the clone's layer; `diff` and `recover`.
#[test]
fn overlay_home_copies_on_write() {
    const T: &str = "overlay";
    if !prerequisites("the copy-on-write home test") {
        return;
    }
    let u = user("doppel-e2e-vol6");
    let _scrub = Scrub(vec![u.uid]);
    let (_bus, env, _helper) = world("vol6", u, true);
    let uid = env.user.uid;
    let id = "ov";
    let home = env.user.home.clone();
    for f in ["ov-planted.txt", "ov-del.txt", "ov-new.txt", "restored.txt"] {
        let _ = fs::remove_file(home.join(f));
    }
    let planted = env.user.write_file("ov-planted.txt", "host original\n");
    let doomed = env.user.write_file("ov-del.txt", "delete me\n");

    progress(T, "create --home overlay");
    ok(&cli(
        &env,
        &["create", id, "--app", "sh", "--home", "overlay"],
    ));

    progress(T, "run: read through, then write");
    let out = sandboxed(
        &env,
        id,
        r#"cat "$HOME/ov-planted.txt"; echo clone-edit > "$HOME/ov-planted.txt"; echo brand-new > "$HOME/ov-new.txt"; rm "$HOME/ov-del.txt"; cat "$HOME/ov-planted.txt""#,
    );
    assert_eq!(
        out, "host original\nclone-edit\n",
        "read-through, then the clone's copy"
    );
    assert_eq!(fs::read_to_string(&planted).unwrap(), "host original\n");
    assert_eq!(fs::read_to_string(&doomed).unwrap(), "delete me\n");
    assert!(
        !home.join("ov-new.txt").exists(),
        "the clone wrote into the real home"
    );
    assert!(
        mounts_of(uid).is_empty(),
        "left mounted: {:?}",
        mounts_of(uid)
    );

    progress(T, "the clone's changes persist");
    let out = sandboxed(
        &env,
        id,
        r#"cat "$HOME/ov-new.txt" "$HOME/ov-planted.txt"; test -e "$HOME/ov-del.txt" || echo GONE"#,
    );
    assert_eq!(out, "brand-new\nclone-edit\nGONE\n");
    assert!(
        mounts_of(uid).is_empty(),
        "left mounted: {:?}",
        mounts_of(uid)
    );

    progress(T, "diff");
    let diff = ok(&cli(&env, &["diff", id]));
    for want in [
        "changed  ov-planted.txt",
        "changed  ov-new.txt",
        "deleted  ov-del.txt",
    ] {
        assert!(diff.lines().any(|l| l == want), "{want:?} not in:\n{diff}");
    }

    progress(T, "recover");
    let out = ok(&cli(&env, &["recover", id, "ov-new.txt"]));
    assert!(out.contains("copied"), "{out}");
    let recovered = home.join("ov-new.txt");
    assert_eq!(fs::read_to_string(&recovered).unwrap(), "brand-new\n");
    assert_eq!(fs::metadata(&recovered).unwrap().uid(), uid);
    let e = fails(
        &cli(&env, &["recover", id, "ov-planted.txt"]),
        "recover over an existing file",
    );
    assert!(e.contains("exists"), "{e}");
    assert_eq!(fs::read_to_string(&planted).unwrap(), "host original\n");
    let to = home.join("restored.txt");
    ok(&cli(
        &env,
        &[
            "recover",
            id,
            "ov-planted.txt",
            "--to",
            to.to_str().unwrap(),
        ],
    ));
    assert_eq!(fs::read_to_string(&to).unwrap(), "clone-edit\n");
    assert!(mounts_of(uid).is_empty());

    progress(T, "delete");
    ok(&cli(&env, &["delete", id, "--yes"]));
    assert!(!state_dir(uid).join("overlay").join(id).exists());
    assert_eq!(fs::read_to_string(&planted).unwrap(), "host original\n");
    for f in ["ov-planted.txt", "ov-del.txt", "ov-new.txt", "restored.txt"] {
        let _ = fs::remove_file(home.join(f));
    }
}
