//! Carries out a [`SandboxPlan`]: the only code that touches namespaces and mounts.
//!
//! The parent forks; the child makes its namespaces and maps its ids, tells the parent, and
//! waits while the parent connects its network; then it builds the mount tree, drops every
//! capability, sets no_new_privs, installs the seccomp filter last and execs. Parent and child
//! talk over pipes: "ready" (child → parent, with the pid to connect), "go" (parent → child),
//! and an error channel that closes by itself when exec succeeds (close-on-exec), so the parent
//! learns of any failure.
//!
//! With a PID namespace, the child that made the namespaces forks the namespace's first
//! process and exits; that process (PID 1 inside, adopted by the parent, which is a
//! subreaper) builds the mount tree with a fresh `/proc`, restricts itself the same way, forks
//! the app and stays as its init: it reaps orphans, forwards SIGTERM, SIGINT and SIGHUP to the
//! app, and exits with the app's status once no process is left. The "go" pipe stays open in
//! the parent as a lifeline: when it closes (the monitor died), the init asks every process to
//! quit and ends the namespace after a grace period.
//!
//! [`join`] starts another command in a running instance, in the same namespaces and with the
//! same restrictions.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

use crate::dirs::Dirs;
use crate::id::ProfileId;
use crate::plan::{Mount, SandboxPlan};

/// Why the sandbox could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("could not set up the sandbox: {0}")]
    Setup(String),
    #[error("{0}")]
    Exec(String),
    #[error("could not start the sandbox: {call}: {source}")]
    Parent {
        call: &'static str,
        source: nix::Error,
    },
    #[error("{0}")]
    Network(String),
    #[error("a command line or environment entry contains a NUL byte: {0:?}")]
    Nul(String),
}

// The new mount API (Linux 5.12+), spelled out here because not every libc target has it.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A failed call in the child, named with its arguments.
struct Fail(String);

type Step<T = ()> = Result<T, Fail>;

fn errno_text() -> String {
    let e = io::Error::last_os_error();
    let name = nix::errno::Errno::last();
    format!("{name:?}: {e}")
}

fn fail<T>(call: impl FnOnce() -> String) -> Step<T> {
    let e = errno_text();
    Err(Fail(format!("{}: {e}", call())))
}

fn cstr(p: &Path) -> Step<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Fail(format!("{p:?} contains a NUL byte")))
}

fn check(r: libc::c_long, call: impl FnOnce() -> String) -> Step<libc::c_long> {
    if r < 0 {
        fail(call)
    } else {
        Ok(r)
    }
}

/// `open_tree(src, OPEN_TREE_CLONE | AT_RECURSIVE)`: a detached copy of the mounts at `src`.
fn clone_tree(src: &Path) -> Step<OwnedFd> {
    let c = cstr(src)?;
    // SAFETY: c is a valid NUL-terminated string; the call returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    let fd = check(fd, || format!("open_tree({src:?})"))?;
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `mount_setattr` on a whole detached tree.
fn set_attrs(fd: &OwnedFd, set: u64, what: &Path) -> Step {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: an empty path with AT_EMPTY_PATH refers to fd; attr is a valid struct of the
    // size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(r, || format!("mount_setattr({what:?}, {set:#x})")).map(drop)
}

/// `move_mount` of a detached tree onto `dst`.
fn attach(fd: &OwnedFd, dst: &Path, shown: &Path) -> Step {
    let c = cstr(dst)?;
    // SAFETY: fd is a detached mount tree; c is a valid path string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check(r, || format!("move_mount(-> {shown:?})")).map(drop)
}

fn sys_mount(
    src: &str,
    dst: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
    shown: &Path,
) -> Step {
    let s = CString::new(src).map_err(|_| Fail("NUL in mount source".into()))?;
    let t = CString::new(fstype).map_err(|_| Fail("NUL in fs type".into()))?;
    let d = CString::new(data).map_err(|_| Fail("NUL in mount data".into()))?;
    let c = cstr(dst)?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let r = unsafe { libc::mount(s.as_ptr(), c.as_ptr(), t.as_ptr(), flags, d.as_ptr().cast()) };
    check(r.into(), || {
        format!("mount({fstype} -> {shown:?}, {data:?})")
    })
    .map(drop)
}

/// Creates what a mount needs to land on: a directory, or an empty file for a file or socket.
fn ensure_mountpoint(p: &Path, dir: bool, shown: &Path) -> Step {
    match fs::metadata(p) {
        Ok(m) if m.is_dir() == dir => return Ok(()),
        Ok(_) if !dir => return Ok(()),
        Ok(_) => return Err(Fail(format!("{shown:?} exists and is not a directory"))),
        Err(_) => {}
    }
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| Fail(format!("mkdir({:?}): {e}", shown.parent().unwrap_or(shown))))?;
    }
    let r = if dir {
        fs::create_dir(p)
    } else {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .map(drop)
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Fail(format!("creating mount point {shown:?}: {e}"))),
    }
}

/// `root` + `inside`, where `inside` is an absolute path as the app sees it.
fn under(root: &Path, inside: &Path) -> PathBuf {
    root.join(inside.strip_prefix("/").unwrap_or(inside))
}

fn apply_mount(root: &Path, m: &Mount) -> Step {
    match m {
        Mount::HostRoot => {
            let tree = clone_tree(Path::new("/"))?;
            set_attrs(&tree, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, Path::new("/"))?;
            attach(&tree, root, Path::new("/"))
        }
        Mount::Bind {
            src,
            dst,
            writable,
            devices,
            optional,
        } => {
            let meta = match fs::metadata(src) {
                Ok(m) => m,
                Err(_) if *optional => return Ok(()),
                Err(e) => return Err(Fail(format!("bind source {src:?}: {e}"))),
            };
            let tree = clone_tree(src)?;
            let mut attrs = MOUNT_ATTR_NOSUID;
            if !writable {
                attrs |= MOUNT_ATTR_RDONLY;
            }
            if !devices {
                attrs |= MOUNT_ATTR_NODEV;
            }
            set_attrs(&tree, attrs, src)?;
            let target = under(root, dst);
            ensure_mountpoint(&target, meta.is_dir(), dst)?;
            attach(&tree, &target, dst)
        }
        Mount::Tmpfs { dst, mode } => {
            let target = under(root, dst);
            ensure_mountpoint(&target, true, dst)?;
            let flags = libc::MS_NOSUID | libc::MS_NODEV;
            sys_mount(
                "tmpfs",
                &target,
                "tmpfs",
                flags,
                &format!("mode={mode:o}"),
                dst,
            )
        }
        Mount::Devpts { dst } => {
            let target = under(root, dst);
            ensure_mountpoint(&target, true, dst)?;
            let flags = libc::MS_NOSUID | libc::MS_NOEXEC;
            sys_mount(
                "devpts",
                &target,
                "devpts",
                flags,
                "newinstance,ptmxmode=0666,mode=620",
                dst,
            )
        }
        Mount::Proc { dst } => {
            let target = under(root, dst);
            ensure_mountpoint(&target, true, dst)?;
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            sys_mount("proc", &target, "proc", flags, "", dst).map_err(|Fail(m)| {
                Fail(format!(
                    "{m} — the kernel refuses a new /proc here (inside a container that masks \
                     parts of /proc?); `pid_namespace = false` in the app's recipe runs it \
                     among the host's processes instead"
                ))
            })
        }
        Mount::Symlink { target, dst } => std::os::unix::fs::symlink(target, under(root, dst))
            .map_err(|e| Fail(format!("symlink({dst:?} -> {target:?}): {e}"))),
    }
}

fn write_file(path: &str, data: &str) -> Step {
    fs::write(path, data).map_err(|e| Fail(format!("write({path}, {data:?}): {e}")))
}

/// Brings up `lo` in a new network namespace that pasta does not configure.
fn loopback_up() -> Step {
    // SAFETY: plain socket(2) call; the fd is wrapped right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(fd.into(), || "socket(AF_INET)".into())?;
    // SAFETY: fd is a fresh socket owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: ifr is a valid ifreq naming "lo"; the ioctl fills in its flags.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
    check(r.into(), || "ioctl(lo, SIOCGIFFLAGS)".into())?;
    // SAFETY: the flags member of the union is the one SIOCGIFFLAGS filled in.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above, setting the flags just read plus UP.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) };
    check(r.into(), || "ioctl(lo, SIOCSIFFLAGS)".into()).map(drop)
}

/// Drops every capability: bounding set, ambient, and the permitted/effective/inheritable sets.
fn drop_capabilities() -> Step {
    let last: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    for cap in 0..=last {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 && nix::errno::Errno::last() != nix::errno::Errno::EINVAL {
            return fail(|| format!("prctl(PR_CAPBSET_DROP, {cap})"));
        }
    }
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    check(r.into(), || "prctl(PR_CAP_AMBIENT_CLEAR_ALL)".into())?;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut hdr = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and a two-element data array, as version 3 requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) };
    check(r, || "capset(0)".into()).map(drop)
}

/// A command ready for `execve`: its arguments, its environment, and where to look for it.
struct Program {
    argv: Vec<CString>,
    envp: Vec<CString>,
    path_dirs: Vec<PathBuf>,
    /// `argv[0]` as given, for messages.
    name: String,
}

impl Program {
    /// Fails with the entry that holds a NUL byte.
    fn new(argv: &[String], envp: Vec<CString>, path: Option<&OsStr>) -> Result<Self, String> {
        let name = argv.first().cloned().unwrap_or_default();
        let argv = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()).map_err(|_| a.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let path_dirs = path
            .map(|p| {
                std::env::split_paths(p)
                    .filter(|d| d.is_absolute())
                    .collect()
            })
            .unwrap_or_else(|| vec!["/usr/local/bin".into(), "/usr/bin".into(), "/bin".into()]);
        Ok(Self {
            argv,
            envp,
            path_dirs,
            name,
        })
    }
}

/// Everything the child needs, prepared before fork so the child mostly makes system calls.
struct ChildSetup<'a> {
    plan: &'a SandboxPlan,
    unshare_flags: libc::c_int,
    staging: PathBuf,
    program: Program,
    seccomp: Vec<libc::sock_filter>,
}

/// The pipe ends a process of the sandbox holds while it sets up.
struct Pipes {
    /// Written once by the process that made the namespaces: the pid to connect.
    ready: Option<OwnedFd>,
    /// Read once ("go"); with a PID namespace, the init's lifeline afterwards.
    go: OwnedFd,
    /// Where a failure is reported; closes by itself at exec.
    err: Option<OwnedFd>,
}

/// The signals a PID namespace's init waits for: child exits, and those it forwards.
const INIT_SIGNALS: [libc::c_int; 4] = [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset takes valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn child_setup(s: &ChildSetup<'_>, pipes: &mut Pipes, monitor: i32) -> Step<i32> {
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        return fail(|| "setsid()".into());
    }
    // If the monitor is killed, the app is asked to quit rather than run on untracked, where a
    // second `doppel run` could start another copy on the same data.
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) };
    check(r.into(), || "prctl(PR_SET_PDEATHSIG)".into())?;
    if nix::unistd::getppid().as_raw() != monitor {
        return Err(Fail(
            "the monitor went away before the sandbox started".into(),
        ));
    }
    // SAFETY: unshare with flag bits only.
    let r = unsafe { libc::unshare(s.unshare_flags) };
    check(r.into(), || {
        format!(
            "unshare({:#x}) — user namespaces may be disabled; `doppel doctor` explains",
            s.unshare_flags
        )
    })?;
    // Map the person to themselves (never to root): files they make are theirs, and the app
    // runs with no capability once it execs.
    write_file("/proc/self/setgroups", "deny")?;
    write_file("/proc/self/uid_map", &format!("{0} {0} 1\n", s.plan.uid))?;
    write_file("/proc/self/gid_map", &format!("{0} {0} 1\n", s.plan.gid))?;

    if s.plan.namespaces.pid {
        // Only children enter the new PID namespace: the first one is its init. This process
        // hands it to the monitor and exits, so the init becomes the monitor's child.
        // SAFETY: this process is a single-threaded fork; the child only makes system calls
        // and small allocations.
        return match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => match init_setup(s, pipes) {
                Ok(never) => match never {},
                Err(e) => Err(e),
            },
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                tell_ready(pipes, child.as_raw())?;
                Ok(0)
            }
            Err(e) => Err(Fail(format!("fork(init): {e}"))),
        };
    }
    tell_ready(pipes, std::process::id() as i32)?;
    wait_go(&pipes.go)?;
    build_root(s)?;
    restrict(&s.seccomp)?;
    Err(exec(&s.program))
}

fn tell_ready(pipes: &Pipes, pid: i32) -> Step {
    let Some(ready) = &pipes.ready else {
        return Err(Fail("internal error: the ready pipe is closed".into()));
    };
    nix::unistd::write(ready, &pid.to_ne_bytes())
        .map(drop)
        .map_err(|e| Fail(format!("signalling the monitor: {e}")))
}

fn wait_go(go: &OwnedFd) -> Step {
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(go.as_raw_fd(), &mut b) {
            Ok(1) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            _ => {
                return Err(Fail(
                    "the monitor went away before the sandbox was ready".into(),
                ))
            }
        }
    }
}

/// Builds the mount tree, pivots into it and enters the working directory.
fn build_root(s: &ChildSetup<'_>) -> Step {
    // Nothing we mount may propagate back to the host.
    sys_mount(
        "none",
        Path::new("/"),
        "",
        libc::MS_REC | libc::MS_SLAVE,
        "",
        Path::new("/"),
    )?;
    for m in &s.plan.mounts {
        apply_mount(&s.staging, m)?;
    }
    let root = cstr(&s.staging)?;
    // SAFETY: root is a valid path string.
    check(unsafe { libc::chdir(root.as_ptr()) }.into(), || {
        "chdir(new root)".into()
    })?;
    // Stack the new root over the old one and detach the old: nothing of the host's tree stays
    // reachable except what was bound in.
    // SAFETY: "." is a valid path string.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    check(r, || "pivot_root(new root)".into())?;
    // SAFETY: "." is a valid path string.
    let r = unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) };
    check(r.into(), || "umount2(old root)".into())?;
    // SAFETY: "/" is a valid path string.
    check(unsafe { libc::chdir(c"/".as_ptr()) }.into(), || {
        "chdir(/)".into()
    })?;

    if s.unshare_flags & libc::CLONE_NEWNET != 0
        && s.plan.network == crate::profile::NetworkMode::None
    {
        loopback_up()?;
    }
    let cwd = cstr(&s.plan.cwd)?;
    // SAFETY: cwd is a valid path string.
    if unsafe { libc::chdir(cwd.as_ptr()) } < 0 {
        let home = s
            .plan
            .env
            .get("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/".into());
        let h = cstr(&home)?;
        // SAFETY: h is a valid path string.
        check(unsafe { libc::chdir(h.as_ptr()) }.into(), || {
            format!("chdir({home:?})")
        })?;
    }
    Ok(())
}

/// Every capability dropped, no_new_privs, and the seccomp filter last.
fn restrict(seccomp: &[libc::sock_filter]) -> Step {
    drop_capabilities()?;
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(r.into(), || "prctl(PR_SET_NO_NEW_PRIVS)".into())?;
    crate::seccomp::install_program(seccomp).map_err(|e| Fail(e.to_string()))
}

/// PID 1 of the sandbox's PID namespace: sets the sandbox up like the app's own process would,
/// forks the app, and stays as its init.
fn init_setup(s: &ChildSetup<'_>, pipes: &mut Pipes) -> Step<std::convert::Infallible> {
    // An init ignores every signal it has no handler for; blocked ones wait in the queue until
    // the loop reads them.
    let set = signal_set(&INIT_SIGNALS);
    // SAFETY: set is an initialised signal set.
    let r = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    check(r.into(), || "sigprocmask(init)".into())?;
    // The monitor must see the ready pipe close should the process that writes it die.
    pipes.ready = None;
    // The sandbox's session: its id is this process's host pid, which the monitor records.
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        return fail(|| "setsid(init)".into());
    }
    // SAFETY: prctl with a valid NUL-terminated name.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"doppel-init".as_ptr(), 0, 0, 0) };
    wait_go(&pipes.go)?;
    // Mounting the new /proc needs a process inside the new PID namespace: this one.
    build_root(s)?;
    restrict(&s.seccomp)?;
    // SAFETY: single-threaded; the child resets its signals and execs.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            reset_signals();
            // Its own process group, so that what it signals as a group is not the init.
            // SAFETY: setpgid with plain values.
            unsafe { libc::setpgid(0, 0) };
            Err(exec(&s.program))
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            pipes.err = None;
            run_init(child.as_raw(), &pipes.go)
        }
        Err(e) => Err(Fail(format!("fork(app): {e}"))),
    }
}

/// The init's loop: reaps every child, forwards signals to the app (to every process once the
/// app has gone), and exits with the app's status when no process is left. When the lifeline
/// closes, every process is asked to quit, and the init exits after [`crate::monitor::GRACE`]
/// at the latest, which makes the kernel kill whatever is left.
fn run_init(app: libc::pid_t, lifeline: &OwnedFd) -> ! {
    let set = signal_set(&INIT_SIGNALS);
    // SAFETY: set is an initialised signal set; the fd is only used by this process.
    let sfd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    let mut app_status: Option<i32> = None;
    let mut deadline: Option<std::time::Instant> = None;
    let mut watch_lifeline = true;
    loop {
        loop {
            let mut st = 0;
            // SAFETY: st is a valid int to write the status into.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid > 0 {
                if pid == app {
                    app_status = Some(if libc::WIFSIGNALED(st) {
                        128 + libc::WTERMSIG(st)
                    } else {
                        libc::WEXITSTATUS(st)
                    });
                }
                continue;
            }
            if pid < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            if pid < 0 && nix::errno::Errno::last() == nix::errno::Errno::ECHILD {
                // SAFETY: _exit ends the init; the kernel ends the namespace with it.
                unsafe { libc::_exit(app_status.unwrap_or(0)) }
            }
            break;
        }
        let now = std::time::Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            // SAFETY: as above; whatever is left is killed by the kernel.
            unsafe { libc::_exit(app_status.unwrap_or(128 + libc::SIGTERM)) }
        }
        let timeout = deadline.map_or(1000, |d| {
            d.saturating_duration_since(now).as_millis().clamp(1, 1000) as libc::c_int
        });
        let mut fds = [
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if watch_lifeline {
                    lifeline.as_raw_fd()
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if n <= 0 {
            continue;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            loop {
                // SAFETY: signalfd_siginfo is plain old data; all-zero is a valid value.
                let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
                let size = std::mem::size_of::<libc::signalfd_siginfo>();
                // SAFETY: info is a buffer of exactly `size` bytes.
                let r = unsafe {
                    libc::read(sfd, (&mut info as *mut libc::signalfd_siginfo).cast(), size)
                };
                if r != size as isize {
                    break;
                }
                let sig = info.ssi_signo as libc::c_int;
                if sig != libc::SIGCHLD {
                    let target = if app_status.is_none() { app } else { -1 };
                    // SAFETY: kill with plain values.
                    unsafe { libc::kill(target, sig) };
                }
            }
        }
        if watch_lifeline && fds[1].revents != 0 {
            // The monitor has gone: nobody tracks this instance any more.
            watch_lifeline = false;
            // SAFETY: kill with plain values; -1 is every process of this namespace but init.
            unsafe { libc::kill(-1, libc::SIGTERM) };
            deadline = Some(now + crate::monitor::GRACE);
        }
    }
}

/// Execs `p`, trying each PATH directory for a bare name; returns only on failure.
fn exec(p: &Program) -> Fail {
    let mut argv: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = p.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let prog = &p.name;
    let candidates: Vec<PathBuf> = if prog.contains('/') {
        vec![PathBuf::from(prog)]
    } else {
        p.path_dirs.iter().map(|d| d.join(prog)).collect()
    };
    let mut last = libc::ENOENT;
    for c in candidates {
        let Ok(path) = cstr(&c) else { continue };
        // SAFETY: path, argv and envp are NUL-terminated arrays of valid strings that outlive
        // the call.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let e = nix::errno::Errno::last_raw();
        // A "not found" must not hide a more telling error from an earlier directory.
        if e != libc::ENOENT && e != libc::ENOTDIR {
            last = e;
        }
    }
    let why = io::Error::from_raw_os_error(last);
    let hint = if last == libc::ENOENT {
        " (not installed, or not in PATH)"
    } else {
        ""
    };
    Fail(format!(
        "cannot run {prog:?} inside the sandbox: {why}{hint}"
    ))
}

fn reset_signals() {
    // SAFETY: an empty, initialised set; sigprocmask and signal take plain values.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| SandboxError::Parent {
        call: "pipe2",
        source,
    })
}

fn read_all(fd: &OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return out,
        }
    }
}

/// The pid a sandbox's first child sends on the ready pipe, or `None` if it closed first.
fn read_pid(fd: &OwnedFd) -> Option<Pid> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
    Some(Pid::from_raw(i32::from_ne_bytes(buf)))
}

fn reap(pid: Pid) {
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// The file in an instance's directory holding its app's environment, `KEY=value` entries each
/// ended by a NUL byte (like `/proc/PID/environ`), for [`join`].
const ENVIRON_FILE: &str = "environ";

/// A started sandbox.
#[derive(Debug)]
pub struct Spawned {
    /// Its first process (a host pid, the caller's child): the app itself, or with a PID
    /// namespace the namespace's init, which lives until every other process of it has gone
    /// and then exits with the app's status.
    pub pid: Pid,
    /// Whether `pid` is a PID namespace's init: it forwards the signals it gets to the app,
    /// so a monitor signals the other processes itself, not the init.
    pub init: bool,
    /// The init's lifeline: keep it open as long as the instance is watched. When it closes
    /// (its holder died), the init asks every process to quit and ends the namespace after
    /// [`crate::monitor::GRACE`].
    pub lifeline: Option<OwnedFd>,
}

/// Starts the sandbox and returns its first process once the app has exec'd. `on_namespaces`
/// runs in the parent after the namespaces exist and before the mount tree is built (to
/// connect the network namespace), with a pid inside them.
///
/// With a PID namespace the caller becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`): the
/// namespace's init is adopted by it.
pub fn spawn(
    plan: &SandboxPlan,
    on_namespaces: impl FnOnce(Pid) -> Result<(), SandboxError>,
) -> Result<Spawned, SandboxError> {
    let nul = |s: &str| SandboxError::Nul(s.to_owned());
    let envp = plan
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")).map_err(|_| nul(k)))
        .collect::<Result<Vec<_>, _>>()?;
    let program = Program::new(&plan.argv, envp, plan.env.get("PATH").map(OsStr::new))
        .map_err(|a| nul(&a))?;
    let seccomp = crate::seccomp::program().map_err(|e| SandboxError::Setup(e.to_string()))?;
    let staging = plan.instance_dir.join("root");
    fs::create_dir_all(&staging)
        .map_err(|e| SandboxError::Setup(format!("mkdir {}: {e}", staging.display())))?;
    // What `join` gives a command it starts in this instance.
    let environ: Vec<u8> = plan
        .env
        .iter()
        .flat_map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes(), b"\0"].concat())
        .collect();
    let environ_file = plan.instance_dir.join(ENVIRON_FILE);
    crate::atomic::write(&environ_file, &environ, 0o600)
        .map_err(|e| SandboxError::Setup(format!("write {}: {e}", environ_file.display())))?;
    let mut unshare_flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWIPC;
    if plan.namespaces.net {
        unshare_flags |= libc::CLONE_NEWNET;
    }
    if plan.namespaces.pid {
        unshare_flags |= libc::CLONE_NEWPID;
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
            return Err(SandboxError::Parent {
                call: "prctl(PR_SET_CHILD_SUBREAPER)",
                source: nix::Error::last(),
            });
        }
    }
    let setup = ChildSetup {
        plan,
        unshare_flags,
        staging,
        program,
        seccomp,
    };
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let monitor = std::process::id() as i32;

    // SAFETY: the child only makes system calls and small allocations before exec; glibc's
    // fork handlers keep malloc usable in the child even though the helper's D-Bus client may
    // have started a thread in the monitor.
    match unsafe { nix::unistd::fork() }.map_err(|source| SandboxError::Parent {
        call: "fork",
        source,
    })? {
        nix::unistd::ForkResult::Child => {
            drop((ready_r, go_w, err_r));
            reset_signals();
            let mut pipes = Pipes {
                ready: Some(ready_w),
                go: go_r,
                err: Some(err_w),
            };
            let msg = match child_setup(&setup, &mut pipes, monitor) {
                // SAFETY: _exit ends the child without running the parent's destructors.
                Ok(code) => unsafe { libc::_exit(code) },
                Err(Fail(m)) => m,
            };
            if let Some(err) = &pipes.err {
                let _ = nix::unistd::write(err, msg.as_bytes());
            }
            // SAFETY: _exit ends the child without running the parent's destructors twice.
            unsafe { libc::_exit(127) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop((ready_w, go_r, err_w));
            let Some(target) = read_pid(&ready_r) else {
                // An init already forked must not wait for "go" forever (it holds the error
                // pipe open).
                drop(go_w);
                let msg = String::from_utf8_lossy(&read_all(&err_r)).into_owned();
                reap(child);
                return Err(SandboxError::Setup(msg));
            };
            if target != child {
                // The process that made the namespaces exits at once; the init it forked is
                // ours from then on.
                reap(child);
            }
            if let Err(e) = on_namespaces(target) {
                drop(go_w);
                let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
                reap(target);
                return Err(e);
            }
            nix::unistd::write(&go_w, b"g").map_err(|source| SandboxError::Parent {
                call: "write(go)",
                source,
            })?;
            let msg = read_all(&err_r);
            if msg.is_empty() {
                let init = plan.namespaces.pid;
                return Ok(Spawned {
                    pid: target,
                    init,
                    lifeline: init.then_some(go_w),
                });
            }
            drop(go_w);
            reap(target);
            let msg = String::from_utf8_lossy(&msg).into_owned();
            if msg.starts_with("cannot run") {
                Err(SandboxError::Exec(msg))
            } else {
                Err(SandboxError::Setup(msg))
            }
        }
    }
}

/// Why a command could not be started inside a running instance.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Dirs(#[from] crate::dirs::DirsError),
    #[error(transparent)]
    Instance(#[from] crate::instance::InstanceError),
    #[error("nothing to run in profile {0}: give a command")]
    NoCommand(ProfileId),
    #[error("profile {0} is not running; start it with `doppel run {0}`")]
    NotRunning(ProfileId),
    #[error("profile {0} is still starting; try again in a moment")]
    Starting(ProfileId),
    #[error(
        "profile {0} has no process left to join (it is stopping); once it has stopped, start \
         it again with `doppel run {0}`"
    )]
    Gone(ProfileId),
    #[error(
        "cannot read the environment profile {id}'s app was started with ({path}): {source}; \
         restart the profile (`doppel stop {id}`, then `doppel run {id}`)"
    )]
    Environment {
        id: ProfileId,
        path: PathBuf,
        source: io::Error,
    },
    #[error("a command line entry contains a NUL byte: {0:?}")]
    Nul(String),
    #[error("cannot join profile {id}: {what}: {source}")]
    Io {
        id: ProfileId,
        what: String,
        source: io::Error,
    },
    #[error("cannot join profile {id}'s sandbox: {message}")]
    Setup { id: ProfileId, message: String },
    #[error("{0}")]
    Exec(String),
}

/// What a joining child needs, prepared before fork.
struct JoinSetup {
    /// Namespace files to enter, in order, with their `setns` flag.
    namespaces: Vec<(&'static str, OwnedFd, libc::c_int)>,
    home: CString,
    /// Where the app's standard output and error go, reopened; `None` where that cannot be
    /// done (a socket, say): `/dev/null` then.
    output: [Option<fs::File>; 2],
    program: Program,
    seccomp: Vec<libc::sock_filter>,
}

/// The namespaces [`join`] enters, in order: the user namespace first, as it grants the
/// rights to enter the others (the person owns it).
const JOINED: [(&str, libc::c_int); 5] = [
    ("user", libc::CLONE_NEWUSER),
    ("mnt", libc::CLONE_NEWNS),
    ("ipc", libc::CLONE_NEWIPC),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
];

fn open_at(dir: &fs::File, rel: &str) -> io::Result<fs::File> {
    open_at_with(dir, rel, nix::fcntl::OFlag::O_RDONLY)
}

fn open_at_with(dir: &fs::File, rel: &str, flags: nix::fcntl::OFlag) -> io::Result<fs::File> {
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        rel,
        flags | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { fs::File::from_raw_fd(fd) })
}

/// The parent pid in a `/proc/<pid>` directory's `stat`.
fn parent_of(dir: &fs::File) -> Option<i32> {
    let stat = io::read_to_string(open_at(dir, "stat").ok()?).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let mut f = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let _state = f.next()?;
    f.next()?.parse().ok()
}

/// `/proc/<pid>` of a process in the instance's namespaces, opened as a directory so that what
/// is read through it stays that process's even if the pid is reused: the first process of
/// the sandbox, or, if it has exited (no PID namespace), another child of the monitor. Each is
/// checked to be the monitor's child.
fn sandbox_process(rec: &crate::instance::InstanceRecord) -> Option<(i32, fs::File)> {
    let helpers = [rec.pasta_pid, rec.proxy_pid];
    let children: Vec<i32> = fs::read_dir(format!("/proc/{}/task", rec.monitor_pid))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|p| !helpers.contains(&Some(*p)))
        .collect();
    std::iter::once(rec.sandbox_pid)
        .chain(children)
        .find_map(|pid| {
            let dir = fs::File::open(format!("/proc/{pid}")).ok()?;
            (parent_of(&dir)? == rec.monitor_pid).then_some((pid, dir))
        })
}

/// Runs `argv` inside the running instance of profile `id` (same namespaces, root, home,
/// environment and restrictions as its app), detached; returns the started process's host PID.
///
/// The command starts in the home, with the environment the app was started with, standard
/// input from `/dev/null` and the caller's standard output and error, in a session of its own.
/// With the instance's PID namespace (the default), the sandbox's init adopts it, so its
/// monitor waits for it and stops it with the rest; without one it is nobody's child.
pub fn join(dirs: &Dirs, id: &ProfileId, argv: &[String]) -> Result<i32, JoinError> {
    if argv.is_empty() {
        return Err(JoinError::NoCommand(id.clone()));
    }
    let rec =
        crate::instance::status(dirs, id)?.ok_or_else(|| JoinError::NotRunning(id.clone()))?;
    if rec.monitor_pid <= 0 || rec.sandbox_pid <= 0 {
        return Err(JoinError::Starting(id.clone()));
    }
    let (pid, dir) = sandbox_process(&rec).ok_or_else(|| JoinError::Gone(id.clone()))?;
    let io_err = |what: String| {
        let id = id.clone();
        move |source: io::Error| JoinError::Io { id, what, source }
    };
    let mut namespaces = Vec::new();
    for (name, flag) in JOINED {
        let theirs = open_at(&dir, &format!("ns/{name}"))
            .map_err(io_err(format!("opening /proc/{pid}/ns/{name}")))?;
        let ours = fs::metadata(format!("/proc/self/ns/{name}"))
            .map_err(io_err(format!("reading /proc/self/ns/{name}")))?;
        let t = theirs
            .metadata()
            .map_err(io_err(format!("reading /proc/{pid}/ns/{name}")))?;
        use std::os::unix::fs::MetadataExt;
        // A namespace the instance shares with the host (the network with --network host,
        // the PIDs with `pid_namespace = false`) is one this process is in already.
        if (t.dev(), t.ino()) != (ours.dev(), ours.ino()) {
            namespaces.push((name, OwnedFd::from(theirs), flag));
        }
    }
    if !namespaces.iter().any(|(n, _, _)| *n == "user") {
        return Err(JoinError::Setup {
            id: id.clone(),
            message: format!("process {pid} is not in a sandbox, or this process is in it"),
        });
    }
    let environ_path = dirs.runtime()?.join(id.as_str()).join(ENVIRON_FILE);
    let environ = fs::read(&environ_path).map_err(|source| JoinError::Environment {
        id: id.clone(),
        path: environ_path.clone(),
        source,
    })?;
    let entries = || environ.split(|b| *b == 0).filter(|e| !e.is_empty());
    let var = |name: &str| {
        entries().find_map(|e| {
            e.strip_prefix(name.as_bytes())?
                .strip_prefix(b"=")
                .map(OsStr::from_bytes)
        })
    };
    let envp: Vec<CString> = entries().filter_map(|e| CString::new(e).ok()).collect();
    let home = var("HOME").unwrap_or(OsStr::new("/"));
    let home = CString::new(home.as_bytes()).map_err(|_| JoinError::Nul("HOME".into()))?;
    let program = Program::new(argv, envp, var("PATH")).map_err(JoinError::Nul)?;
    let setup_err = |message: String| JoinError::Setup {
        id: id.clone(),
        message,
    };
    let seccomp = crate::seccomp::program().map_err(|e| setup_err(e.to_string()))?;
    // The command writes where the app does (the monitor's terminal or log), so that the
    // caller holds nothing of it: a caller reading its own output to the end is not kept
    // waiting for as long as the command runs.
    let output = [1, 2].map(|n| {
        use nix::fcntl::OFlag;
        open_at_with(
            &dir,
            &format!("fd/{n}"),
            OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_NOCTTY,
        )
        .ok()
    });
    let setup = JoinSetup {
        namespaces,
        home,
        output,
        program,
        seccomp,
    };

    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io_err("pipe2".into())(e.into()))?;
    let (ours, theirs) = socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| io_err("socketpair".into())(e.into()))?;
    socket::setsockopt(&ours, socket::sockopt::PassCred, &true)
        .map_err(|e| io_err("setsockopt(SO_PASSCRED)".into())(e.into()))?;

    // SAFETY: the child only makes system calls and small allocations before exec; glibc's
    // fork handlers keep malloc usable in it even if the caller has other threads.
    match unsafe { nix::unistd::fork() }.map_err(|e| io_err("fork".into())(e.into()))? {
        nix::unistd::ForkResult::Child => {
            drop((err_r, ours));
            reset_signals();
            let msg = match join_child(&setup, &theirs) {
                // SAFETY: _exit ends the child without running the caller's destructors.
                Ok(code) => unsafe { libc::_exit(code) },
                Err(Fail(m)) => m,
            };
            let _ = nix::unistd::write(&err_w, msg.as_bytes());
            // SAFETY: as above.
            unsafe { libc::_exit(127) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop((err_w, theirs));
            let started = recv_pid(&ours);
            let msg = read_all(&err_r);
            let _ = nix::sys::wait::waitpid(child, None);
            if !msg.is_empty() {
                let msg = String::from_utf8_lossy(&msg).into_owned();
                return Err(if msg.starts_with("cannot run") {
                    JoinError::Exec(msg)
                } else {
                    setup_err(msg)
                });
            }
            started.ok_or_else(|| setup_err("the command did not start".into()))
        }
    }
}

/// Enters the namespaces and starts the command in a grandchild; returns once that one is on
/// its own.
fn join_child(j: &JoinSetup, sock: &OwnedFd) -> Step<i32> {
    for (name, fd, flag) in &j.namespaces {
        // SAFETY: fd is an open namespace file of the kind flag names.
        let r = unsafe { libc::setns(fd.as_raw_fd(), *flag) };
        check(r.into(), || format!("setns({name})"))?;
    }
    // A new PID namespace applies to children only, and an orphan goes to the init of its
    // parent's namespace: so a child inside forks the command and exits, and the sandbox's
    // init adopts the command, which its monitor then waits for and stops with the rest.
    // SAFETY: this process is a single-threaded fork.
    match unsafe { nix::unistd::fork() } {
        // SAFETY: as above.
        Ok(nix::unistd::ForkResult::Child) => match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => match joined(j, sock) {
                Ok(never) => match never {},
                Err(e) => Err(e),
            },
            Ok(nix::unistd::ForkResult::Parent { .. }) => Ok(0),
            Err(e) => Err(Fail(format!("fork(command): {e}"))),
        },
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
            Ok(0)
        }
        Err(e) => Err(Fail(format!("fork(join): {e}"))),
    }
}

/// The joined command's own process: tells the caller its pid, restricts itself like the app
/// and execs.
fn joined(j: &JoinSetup, sock: &OwnedFd) -> Step<std::convert::Infallible> {
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        return fail(|| "setsid()".into());
    }
    // The kernel hands the caller this process's pid as seen from the caller's namespace.
    nix::sys::socket::send(
        sock.as_raw_fd(),
        b"p",
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
    )
    .map_err(|e| Fail(format!("sending the pid to the caller: {e}")))?;
    // SAFETY: home is a valid path string.
    if unsafe { libc::chdir(j.home.as_ptr()) } < 0 {
        // SAFETY: "/" is a valid path string.
        check(unsafe { libc::chdir(c"/".as_ptr()) }.into(), || {
            "chdir(/)".into()
        })?;
    }
    // Nothing from the caller's terminal; output where the app's goes.
    let null = |flags: libc::c_int| {
        // SAFETY: a valid path string.
        unsafe { libc::open(c"/dev/null".as_ptr(), flags | libc::O_CLOEXEC) }
    };
    let out = |n: usize| {
        j.output[n]
            .as_ref()
            .map_or_else(|| null(libc::O_WRONLY), |f| f.as_raw_fd())
    };
    let sources = [null(libc::O_RDONLY), out(0), out(1)];
    // Copied above the standard descriptors first, so that none is overwritten before it is
    // put in place. All are close-on-exec: exec closes them.
    // SAFETY: fcntl on descriptors this process holds (or -1, which fails harmlessly).
    let sources = sources.map(|fd| unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) });
    for (to, fd) in sources.into_iter().enumerate() {
        if fd >= 0 {
            // SAFETY: dup2 onto a standard descriptor; the copy is not close-on-exec.
            let r = unsafe { libc::dup2(fd, to as libc::c_int) };
            check(r.into(), || format!("dup2(-> {to})"))?;
        }
    }
    // Nothing else of the caller's (a GUI's sockets, say) reaches the command.
    // SAFETY: close_range with integer arguments only; kernels before 5.11 refuse it, which
    // leaves only descriptors that are close-on-exec already in a Rust caller.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    restrict(&j.seccomp)?;
    Err(exec(&j.program))
}

/// The pid of the process that sent the first message on `sock`, in this process's PID
/// namespace; `None` if the socket closed first.
fn recv_pid(sock: &OwnedFd) -> Option<i32> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(libc::ucred);
    loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) if msg.bytes > 0 => {
                return msg.cmsgs().ok()?.find_map(|c| match c {
                    ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                    _ => None,
                })
            }
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return None,
        }
    }
}
