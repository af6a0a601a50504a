//! Carries out a [`SandboxPlan`]: the only code that touches namespaces and mounts.
//!
//! The parent forks; the child makes its namespaces and maps its ids, tells the parent, and
//! waits while the parent connects its network; then it builds the mount tree, drops every
//! capability, sets no_new_privs, installs the seccomp filter last and execs. Parent and child
//! talk over pipes: "ready" (child → parent), "go" (parent → child), and an error channel that
//! closes by itself when exec succeeds (close-on-exec), so the parent learns of any failure.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

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

/// Everything the child needs, prepared before fork so the child mostly makes system calls.
struct ChildSetup<'a> {
    plan: &'a SandboxPlan,
    unshare_flags: libc::c_int,
    staging: PathBuf,
    argv: Vec<CString>,
    envp: Vec<CString>,
    path_dirs: Vec<PathBuf>,
    seccomp: Vec<libc::sock_filter>,
}

fn child_setup(s: &ChildSetup<'_>, ready_w: &OwnedFd, go_r: &OwnedFd, monitor: i32) -> Step {
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
    nix::unistd::write(ready_w, b"r").map_err(|e| Fail(format!("signalling the monitor: {e}")))?;
    let mut go = [0u8; 1];
    match nix::unistd::read(go_r.as_raw_fd(), &mut go) {
        Ok(1) => {}
        _ => {
            return Err(Fail(
                "the monitor went away before the sandbox was ready".into(),
            ))
        }
    }

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

    drop_capabilities()?;
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(r.into(), || "prctl(PR_SET_NO_NEW_PRIVS)".into())?;
    crate::seccomp::install_program(&s.seccomp).map_err(|e| Fail(e.to_string()))?;
    exec(s)
}

fn exec(s: &ChildSetup<'_>) -> Step {
    let mut argv: Vec<*const libc::c_char> = s.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = s.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let prog = &s.plan.argv[0];
    let candidates: Vec<PathBuf> = if prog.contains('/') {
        vec![PathBuf::from(prog)]
    } else {
        s.path_dirs.iter().map(|d| d.join(prog)).collect()
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
    Err(Fail(format!(
        "cannot run {prog:?} inside the sandbox: {why}{hint}"
    )))
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

fn reap(pid: Pid) {
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Starts the sandboxed process and returns its pid once it has exec'd. `on_namespaces` runs
/// in the parent after the child's namespaces exist and before it builds its mount tree (to
/// connect its network namespace).
pub fn spawn(
    plan: &SandboxPlan,
    on_namespaces: impl FnOnce(Pid) -> Result<(), SandboxError>,
) -> Result<Pid, SandboxError> {
    let nul = |s: &str| SandboxError::Nul(s.to_owned());
    let argv = plan
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| nul(a)))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = plan
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")).map_err(|_| nul(k)))
        .collect::<Result<Vec<_>, _>>()?;
    let path_dirs = plan
        .env
        .get("PATH")
        .map(|p| {
            std::env::split_paths(OsStr::new(p))
                .filter(|d| d.is_absolute())
                .collect()
        })
        .unwrap_or_else(|| vec!["/usr/local/bin".into(), "/usr/bin".into(), "/bin".into()]);
    let seccomp = crate::seccomp::program().map_err(|e| SandboxError::Setup(e.to_string()))?;
    let staging = plan.instance_dir.join("root");
    fs::create_dir_all(&staging)
        .map_err(|e| SandboxError::Setup(format!("mkdir {}: {e}", staging.display())))?;
    let mut unshare_flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWIPC;
    if plan.namespaces.net {
        unshare_flags |= libc::CLONE_NEWNET;
    }
    if plan.namespaces.pid {
        unshare_flags |= libc::CLONE_NEWPID;
    }
    let setup = ChildSetup {
        plan,
        unshare_flags,
        staging,
        argv,
        envp,
        path_dirs,
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
            let msg = match child_setup(&setup, &ready_w, &go_r, monitor) {
                Ok(()) => "exec returned".to_owned(),
                Err(Fail(m)) => m,
            };
            let _ = nix::unistd::write(&err_w, msg.as_bytes());
            // SAFETY: _exit ends the child without running the parent's destructors twice.
            unsafe { libc::_exit(127) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop((ready_w, go_r, err_w));
            let mut b = [0u8; 1];
            let ready = matches!(nix::unistd::read(ready_r.as_raw_fd(), &mut b), Ok(1));
            if !ready {
                let msg = String::from_utf8_lossy(&read_all(&err_r)).into_owned();
                reap(child);
                return Err(SandboxError::Setup(msg));
            }
            if let Err(e) = on_namespaces(child) {
                drop(go_w);
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                reap(child);
                return Err(e);
            }
            nix::unistd::write(&go_w, b"g").map_err(|source| SandboxError::Parent {
                call: "write(go)",
                source,
            })?;
            let msg = read_all(&err_r);
            if msg.is_empty() {
                return Ok(child);
            }
            reap(child);
            let msg = String::from_utf8_lossy(&msg).into_owned();
            if msg.starts_with("cannot run") {
                Err(SandboxError::Exec(msg))
            } else {
                Err(SandboxError::Setup(msg))
            }
        }
    }
}
