//! `doppel doctor`: checks that this machine can run Doppel's sandbox and, for anything missing,
//! says what is wrong and the command that fixes it.
//!
//! Every check is split in two: a small probe that touches the system and gathers plain facts,
//! and a pure function that turns those facts into a [`Check`]. The pure halves are what the unit
//! tests exercise, with made-up inputs.

use std::ffi::CStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::dirs::Dirs;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Everything needed is there.
    Ok,
    /// Doppel works, but something is degraded or will break for someone else.
    Warn,
    /// Doppel (or one of its modes) cannot work until this is fixed.
    Fail,
}

impl Status {
    /// The four-character label [`render`] prints.
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked ("user namespaces", "pasta", …).
    pub name: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// The command or step that fixes it (set for `Warn` and `Fail`).
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

const USERNS: &str = "user namespaces";
const MOUNT_API: &str = "mount API";
const RUNTIME_DIR: &str = "XDG_RUNTIME_DIR";
const PASTA: &str = "pasta";
const TUN: &str = "/dev/net/tun";
const DBUS_PROXY: &str = "doppel-bus-proxy";
const SESSION_BUS: &str = "session bus";
const DISPLAY: &str = "display";
const USER_MANAGER: &str = "systemd user manager";
const PORTAL: &str = "desktop portal";

/// Runs every check, in the order a person should fix them.
pub fn run(dirs: &Dirs) -> Vec<Check> {
    let euid = nix::unistd::geteuid().as_raw();
    let runtime_dir = dirs.runtime_dir.as_deref();
    vec![
        check_userns(euid),
        check_mount_api(),
        runtime_dir_check(runtime_dir, runtime_dir.map(stat_dir), euid),
        pasta_check(crate::apps::which("pasta").as_deref()),
        tun_check(open_tun()),
        dbus_proxy_check(crate::monitor::bus_proxy_program().as_deref()),
        check_session_bus(runtime_dir),
        user_manager_check(crate::scope::probe()),
        portal_check(probe_portal()),
        check_display(runtime_dir),
        helper_check(doppel_helper::client::Helper::connect().and_then(|h| h.status().map(|_| ()))),
    ]
}

/// The privileged helper: optional, needed only for encryption and the copy-on-write home.
fn helper_check(answer: Result<(), doppel_helper::client::HelperError>) -> Check {
    use doppel_helper::client::ErrorKind;
    let name = "privileged helper";
    match answer {
        Ok(()) => Check {
            name,
            status: Status::Ok,
            detail: "doppel-helper answers on the system bus".into(),
            fix: None,
        },
        Err(e) if e.kind == ErrorKind::NotAuthorized => Check {
            name,
            status: Status::Warn,
            detail: format!("doppel-helper answers, but polkit refuses: {e}"),
            fix: Some(
                "run Doppel from an active local desktop session, or have an administrator add a \
                 polkit rule for the org.doppel.* actions"
                    .into(),
            ),
        },
        Err(e) => Check {
            name,
            status: Status::Warn,
            detail: format!(
                "not available, so --encrypt and --home overlay cannot be used (plain profiles \
                 work): {e}"
            ),
            fix: Some("install Doppel's package, which ships doppel-helper".into()),
        },
    }
}

/// The checks as text: one "ok   name: detail" / "WARN …" / "FAIL …" line each, then the fix.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        let _ = writeln!(
            out,
            "{} {}: {}",
            check.status.label(),
            check.name,
            check.detail
        );
        if let Some(fix) = &check.fix {
            for (i, line) in fix.lines().enumerate() {
                let lead = if i == 0 { "     fix: " } else { "          " };
                let _ = writeln!(out, "{lead}{line}");
            }
        }
    }
    out
}

/// Whether nothing failed (warnings allowed).
pub fn all_ok(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

// ---------------------------------------------------------------------------------------------
// 1. User namespaces
// ---------------------------------------------------------------------------------------------

/// The step of the user-namespace probe that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Unshare = 1,
    Setgroups = 2,
    UidMap = 3,
    Mount = 4,
}

impl Step {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Step::Unshare),
            2 => Some(Step::Setgroups),
            3 => Some(Step::UidMap),
            4 => Some(Step::Mount),
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Step::Unshare => "unshare(CLONE_NEWUSER|CLONE_NEWNS)",
            Step::Setgroups => "writing \"deny\" to /proc/self/setgroups",
            Step::UidMap => "writing /proc/self/uid_map",
            Step::Mount => "making / private in the new mount namespace",
        }
    }
}

/// Why the probe did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ProbeError {
    /// Could not even start the probe process (errno).
    Fork(i32),
    /// The probe process reported a failing step and its errno.
    Step(Step, i32),
    /// The probe process ended in a way it never chooses (a signal, an unknown code).
    Abnormal(String),
}

/// What the user-namespace diagnosis looks at.
#[derive(Debug, Clone, Default)]
struct UsernsFacts {
    /// `None` when the probe worked.
    probe: Option<ProbeError>,
    euid: u32,
    /// `/proc/sys/kernel/unprivileged_userns_clone` (Debian kernels before 11, some hardened ones).
    unprivileged_userns_clone: Option<String>,
    /// `/proc/sys/user/max_user_namespaces`.
    max_user_namespaces: Option<String>,
    /// `/proc/sys/kernel/apparmor_restrict_unprivileged_userns` (Ubuntu 23.10 and later).
    apparmor_restrict: Option<String>,
    /// This process's AppArmor label ("unconfined", or a profile name).
    apparmor_label: Option<String>,
    /// The `doppel` binary, for the AppArmor profile text.
    exe: Option<PathBuf>,
}

/// Something that keeps unprivileged users from creating user namespaces.
struct Blocker {
    detail: String,
    fix: String,
}

const PACKAGED_EXE: &str = "/usr/bin/doppel";
const APPARMOR_PROFILE: &str = "/etc/apparmor.d/doppel";

fn check_userns(euid: u32) -> Check {
    let read = |p: &str| fs::read_to_string(p).ok();
    let apparmor_restrict = read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    let apparmor_label = if sysctl_is(apparmor_restrict.as_deref(), 1) {
        read("/proc/self/attr/apparmor/current").or_else(|| read("/proc/self/attr/current"))
    } else {
        None
    };
    let facts = UsernsFacts {
        probe: probe_userns(euid).err(),
        euid,
        unprivileged_userns_clone: read("/proc/sys/kernel/unprivileged_userns_clone"),
        max_user_namespaces: read("/proc/sys/user/max_user_namespaces"),
        apparmor_restrict,
        apparmor_label,
        exe: crate::launcher::doppel_binary(),
    };
    diagnose_userns(&facts)
}

/// The `doppel` binary: this one if it is called so (the CLI), else the one on `PATH`.
/// Whether a sysctl file's contents are the number `want`.
fn sysctl_is(contents: Option<&str>, want: u64) -> bool {
    sysctl_value(contents) == Some(want)
}

fn sysctl_value(contents: Option<&str>) -> Option<u64> {
    contents?.trim().parse().ok()
}

fn errno_text(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

/// Turns the probe result and the sysctl values into the user-namespace check.
fn diagnose_userns(f: &UsernsFacts) -> Check {
    let confined_label = f
        .apparmor_label
        .as_deref()
        .map(|l| l.trim_matches(|c: char| c == '\0' || c.is_whitespace()))
        .filter(|l| !l.is_empty() && *l != "unconfined");
    let mut blockers = Vec::new();
    if sysctl_is(f.unprivileged_userns_clone.as_deref(), 0) {
        blockers.push(Blocker {
            detail: "unprivileged user namespaces are switched off \
                     (kernel.unprivileged_userns_clone = 0)"
                .into(),
            fix: "sudo sysctl -w kernel.unprivileged_userns_clone=1\n\
                  echo kernel.unprivileged_userns_clone=1 | \
                  sudo tee /etc/sysctl.d/60-doppel-userns-clone.conf   (keeps it after a reboot)"
                .into(),
        });
    }
    let max = sysctl_value(f.max_user_namespaces.as_deref());
    let limit_reached =
        matches!(f.probe, Some(ProbeError::Step(Step::Unshare, e)) if e == libc::ENOSPC);
    if max == Some(0) || limit_reached {
        let detail = if max == Some(0) {
            "user namespaces are switched off (user.max_user_namespaces = 0)".to_owned()
        } else {
            format!(
                "the limit on user namespaces is reached (user.max_user_namespaces = {})",
                max.map_or_else(|| "unknown".to_owned(), |m| m.to_string())
            )
        };
        let want = max.map_or(16384, |m| (m * 2).max(16384));
        blockers.push(Blocker {
            detail,
            fix: format!(
                "sudo sysctl -w user.max_user_namespaces={want}\n\
                 echo user.max_user_namespaces={want} | \
                 sudo tee /etc/sysctl.d/60-doppel-max-userns.conf   (keeps it after a reboot)"
            ),
        });
    }
    // The AppArmor restriction does not bind a process whose own profile grants `userns`;
    // once the probe has worked under such a profile there is nothing to report.
    let restricted = sysctl_is(f.apparmor_restrict.as_deref(), 1);
    if restricted && (f.probe.is_some() || confined_label.is_none()) {
        let mut detail = "AppArmor restricts unprivileged user namespaces \
                          (kernel.apparmor_restrict_unprivileged_userns = 1)"
            .to_owned();
        match confined_label {
            Some(label) => {
                let _ = write!(
                    detail,
                    " and this process's AppArmor profile ({label}) does not grant `userns`"
                );
            }
            None => detail.push_str(" and no AppArmor profile grants `userns` to Doppel"),
        }
        blockers.push(Blocker {
            detail,
            fix: apparmor_fix(f.exe.as_deref()),
        });
    }

    match &f.probe {
        None if blockers.is_empty() => {
            let who = if f.euid == 0 {
                " (checked as root)"
            } else {
                ""
            };
            Check::ok(
                USERNS,
                format!("a user and a mount namespace can be created{who}"),
            )
        }
        None => {
            let why = if f.euid == 0 {
                "they work here because this runs as root, but"
            } else {
                "they work for this process, but"
            };
            Check::warn(
                USERNS,
                format!(
                    "{why} Doppel run by a normal user will be refused: {}",
                    join_details(&blockers)
                ),
                join_fixes(&blockers),
            )
        }
        Some(err) => {
            let what = match err {
                ProbeError::Fork(e) => {
                    format!("could not start the probe process: {}", errno_text(*e))
                }
                ProbeError::Step(step, e) => format!(
                    "cannot create a user namespace: {} failed: {}",
                    step.describe(),
                    errno_text(*e)
                ),
                ProbeError::Abnormal(how) => {
                    format!("cannot create a user namespace: the probe process {how}")
                }
            };
            if blockers.is_empty() {
                Check::fail(USERNS, what, unknown_userns_fix(err))
            } else {
                Check::fail(
                    USERNS,
                    format!("{what}; {}", join_details(&blockers)),
                    join_fixes(&blockers),
                )
            }
        }
    }
}

fn join_details(blockers: &[Blocker]) -> String {
    blockers
        .iter()
        .map(|b| b.detail.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

fn join_fixes(blockers: &[Blocker]) -> String {
    blockers
        .iter()
        .map(|b| b.fix.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// How to let Doppel create user namespaces under Ubuntu's AppArmor restriction.
fn apparmor_fix(exe: Option<&Path>) -> String {
    if exe == Some(Path::new(PACKAGED_EXE)) {
        return format!(
            "the doppel package installs {APPARMOR_PROFILE}, which grants `userns` to \
             {PACKAGED_EXE}; load it:\n\
             sudo apparmor_parser -r {APPARMOR_PROFILE}   \
             (reinstall the package if that file is missing)"
        );
    }
    let path = exe.map_or_else(|| "/path/to/doppel".to_owned(), |p| p.display().to_string());
    // AppArmor needs a path with spaces quoted.
    let path = if path.contains(char::is_whitespace) {
        format!("\"{path}\"")
    } else {
        path
    };
    format!(
        "the packaged Doppel ships an AppArmor profile for {PACKAGED_EXE}; for this build, \
         create {APPARMOR_PROFILE} containing:\n\
         \x20 abi <abi/4.0>,\n\
         \x20 include <tunables/global>\n\
         \x20 profile doppel {path} flags=(unconfined) {{\n\
         \x20   userns,\n\
         \x20 }}\n\
         then load it: sudo apparmor_parser -r {APPARMOR_PROFILE}"
    )
}

/// The fix when no known switch explains the failure.
fn unknown_userns_fix(err: &ProbeError) -> String {
    if let ProbeError::Step(Step::Unshare, e) = err {
        if *e == libc::EINVAL {
            return "this kernel seems to be built without user namespaces: use a distribution \
                    kernel (they all enable CONFIG_USER_NS)"
                .into();
        }
    }
    "no known setting explains this; inside a container (Docker, Podman, LXC, a CI runner) or a \
     chroot user namespaces are often forbidden: run Doppel on the host, or allow nested user \
     namespaces in the container\n\
     to reproduce without Doppel: unshare --user --map-current-user --mount true"
        .into()
}

/// The path arguments of the probe, NUL-terminated for the raw system calls.
const SETGROUPS_PATH: &CStr = match CStr::from_bytes_with_nul(b"/proc/self/setgroups\0") {
    Ok(c) => c,
    Err(_) => panic!("bad C string"),
};
const UID_MAP_PATH: &CStr = match CStr::from_bytes_with_nul(b"/proc/self/uid_map\0") {
    Ok(c) => c,
    Err(_) => panic!("bad C string"),
};
const ROOT_PATH: &CStr = match CStr::from_bytes_with_nul(b"/\0") {
    Ok(c) => c,
    Err(_) => panic!("bad C string"),
};

/// Creates a user and mount namespace in a throw-away child, maps the caller's uid to itself in
/// it and makes the mount tree private: the first things every Doppel sandbox does.
fn probe_userns(euid: u32) -> Result<(), ProbeError> {
    // Everything the child needs is prepared here: after fork it must not allocate.
    let map = format!("{euid} {euid} 1\n");
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| ProbeError::Fork(e as i32))?;

    // SAFETY: the child runs only async-signal-safe system calls on memory prepared before the
    // fork (probe_child) and leaves with _exit, never returning into the caller.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(ProbeError::Fork(Errno::last() as i32));
    }
    if pid == 0 {
        probe_child(map.as_bytes(), write_end.as_raw_fd());
    }
    drop(write_end);

    let mut report = Vec::new();
    let read_result = fs::File::from(read_end).read_to_end(&mut report);
    let status = loop {
        match waitpid(Pid::from_raw(pid), None) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    let status =
        status.map_err(|e| ProbeError::Abnormal(format!("could not be waited for: {e}")))?;
    match status {
        WaitStatus::Exited(_, 0) => Ok(()),
        WaitStatus::Exited(_, code) => {
            if read_result.is_ok() && report.len() == 5 {
                let errno = i32::from_le_bytes([report[1], report[2], report[3], report[4]]);
                if let Some(step) = Step::from_u8(report[0]) {
                    return Err(ProbeError::Step(step, errno));
                }
            }
            Err(ProbeError::Abnormal(format!("exited with code {code}")))
        }
        WaitStatus::Signaled(_, sig, _) => {
            Err(ProbeError::Abnormal(format!("was killed by {sig}")))
        }
        other => Err(ProbeError::Abnormal(format!("ended oddly: {other:?}"))),
    }
}

/// The probe's child side: runs the steps, reports the first failure on `report`, exits.
fn probe_child(map: &[u8], report: RawFd) -> ! {
    let failed = run_probe_steps(map).err();
    let code = match failed {
        None => 0,
        Some((step, errno)) => {
            let e = errno.to_le_bytes();
            let msg = [step as u8, e[0], e[1], e[2], e[3]];
            // SAFETY: writes a local buffer of the given length to a pipe fd this process owns.
            unsafe { libc::write(report, msg.as_ptr().cast(), msg.len()) };
            1
        }
    };
    // SAFETY: _exit ends the forked child at once, running no atexit handlers or destructors of
    // the parent's state.
    unsafe { libc::_exit(code) }
}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn run_probe_steps(map: &[u8]) -> Result<(), (Step, i32)> {
    // SAFETY: unshare takes only flags.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
        return Err((Step::Unshare, last_errno()));
    }
    match write_proc(SETGROUPS_PATH, b"deny") {
        // Kernels before 3.19 have no setgroups file and need no "deny".
        Err(e) if e == libc::ENOENT => {}
        Err(e) => return Err((Step::Setgroups, e)),
        Ok(()) => {}
    }
    write_proc(UID_MAP_PATH, map).map_err(|e| (Step::UidMap, e))?;
    // SAFETY: mount with NUL-terminated constant paths and null source, type and data, which
    // MS_REC|MS_PRIVATE ignores.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            ROOT_PATH.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err((Step::Mount, last_errno()));
    }
    Ok(())
}

/// Writes `data` to a /proc file in one write(2), as the id-map files require; raw system calls
/// only, so it is safe in a forked child.
fn write_proc(path: &CStr, data: &[u8]) -> Result<(), i32> {
    // SAFETY: path is a valid NUL-terminated string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: writes `data` (a valid slice of that length) to the fd just opened.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let result = if n < 0 {
        Err(last_errno())
    } else if usize::try_from(n).ok() != Some(data.len()) {
        Err(libc::EIO)
    } else {
        Ok(())
    };
    // SAFETY: closes the fd opened above, which nothing else uses.
    unsafe { libc::close(fd) };
    result
}

// ---------------------------------------------------------------------------------------------
// 2. The new mount API
// ---------------------------------------------------------------------------------------------

/// Major and minor version of a kernel release string ("6.8.0-45-generic" → (6, 8)).
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor_part = parts.next()?;
    let digits = minor_part
        .find(|c: char| !c.is_ascii_digit())
        .map_or(minor_part, |end| &minor_part[..end]);
    Some((major, digits.parse().ok()?))
}

/// Whether the kernel release string (`uname -r`) is at least `major.minor`; false if unreadable.
pub fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    parse_release(release).is_some_and(|v| v >= (major, minor))
}

fn kernel_release() -> Option<String> {
    // SAFETY: utsname is a struct of byte arrays, for which all zeroes is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the struct behind a valid pointer to a local.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(bytes).ok()
}

/// Whether the kernel knows mount_setattr(2): `Some(false)` on ENOSYS.
fn mount_setattr_present() -> Option<bool> {
    let dfd: libc::c_long = -1;
    let flags: libc::c_long = 0;
    let size: libc::c_long = 0;
    // SAFETY: mount_setattr with a bad fd, an empty NUL-terminated path, flags 0 and a null
    // attribute of size 0: the kernel refuses it (EINVAL) before using any of it, or answers
    // ENOSYS when it lacks the call. Nothing is changed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dfd,
            b"\0".as_ptr().cast::<libc::c_char>(),
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            size,
        )
    };
    if rc == 0 {
        return Some(true);
    }
    match Errno::last() {
        Errno::ENOSYS => Some(false),
        Errno::UnknownErrno => None,
        _ => Some(true),
    }
}

fn check_mount_api() -> Check {
    mount_api_check(kernel_release().as_deref(), mount_setattr_present())
}

const KERNEL_FIX: &str = "install a Linux 5.12 or newer kernel (your distribution's current \
                          release, backports or HWE kernel) and reboot into it";

/// The mount-API check from the kernel release and whether mount_setattr answered.
fn mount_api_check(release: Option<&str>, syscall_present: Option<bool>) -> Check {
    let version = release.and_then(|r| parse_release(r).map(|v| (r, v)));
    match version {
        Some((r, v)) if v < (5, 12) => Check::fail(
            MOUNT_API,
            format!(
                "Linux {r} is too old: Doppel needs Linux 5.12 or newer (for mount_setattr, \
                 the new mount API)"
            ),
            KERNEL_FIX,
        ),
        Some((r, _)) if syscall_present == Some(false) => Check::fail(
            MOUNT_API,
            format!(
                "Linux {r} should have mount_setattr but the call answers ENOSYS: something \
                 (a container's seccomp filter?) blocks it, and Doppel needs it"
            ),
            "run Doppel on the host, or allow mount_setattr, open_tree, move_mount and fsopen \
             in the container's seccomp profile",
        ),
        Some((r, _)) => Check::ok(
            MOUNT_API,
            format!("Linux {r} has mount_setattr (Doppel needs 5.12 or newer)"),
        ),
        None => match syscall_present {
            Some(true) => Check::ok(
                MOUNT_API,
                format!(
                    "mount_setattr is available (kernel release {:?} not recognised)",
                    release.unwrap_or("unknown")
                ),
            ),
            _ => Check::fail(
                MOUNT_API,
                format!(
                    "cannot tell the kernel version ({:?}) and mount_setattr is missing: \
                     Doppel needs Linux 5.12 or newer",
                    release.unwrap_or("unknown")
                ),
                KERNEL_FIX,
            ),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Network: pasta and /dev/net/tun
// ---------------------------------------------------------------------------------------------

const NETWORK_NOTE: &str = "the default isolated network needs it (--network host and \
                            --network none work without)";

fn pasta_check(found: Option<&Path>) -> Check {
    match found {
        Some(p) => Check::ok(PASTA, format!("found at {}", p.display())),
        None => Check::fail(
            PASTA,
            format!("pasta (package passt) is not installed; {NETWORK_NOTE}"),
            "sudo apt install passt   (Debian, Ubuntu)\n\
             sudo dnf install passt   (Fedora)\n\
             sudo pacman -S passt     (Arch)",
        ),
    }
}

/// Opens /dev/net/tun read-write (O_CLOEXEC, as std always does) and closes it again.
fn open_tun() -> Result<(), i32> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN)
        .map(drop)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// The tun check from the result of opening /dev/net/tun (an errno on failure).
fn tun_check(open: Result<(), i32>) -> Check {
    match open {
        Ok(()) => Check::ok(TUN, "can be opened read-write by this user"),
        Err(e) if e == libc::EACCES || e == libc::EPERM => Check::fail(
            TUN,
            format!("/dev/net/tun exists but this user may not open it read-write; {NETWORK_NOTE}"),
            "sudo chmod 0666 /dev/net/tun (distributions normally ship it so through udev)",
        ),
        Err(e) if e == libc::ENOENT || e == libc::ENODEV || e == libc::ENXIO => Check::fail(
            TUN,
            format!(
                "/dev/net/tun is missing or has no driver ({}); {NETWORK_NOTE}",
                errno_text(e)
            ),
            "load the tun module: sudo modprobe tun",
        ),
        Err(e) => Check::fail(
            TUN,
            format!(
                "cannot open /dev/net/tun: {}; {NETWORK_NOTE}",
                errno_text(e)
            ),
            "load the tun module (sudo modprobe tun) and make the device usable by everyone \
             (sudo chmod 0666 /dev/net/tun)",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Doppel's session-bus proxy
// ---------------------------------------------------------------------------------------------

fn dbus_proxy_check(found: Option<&Path>) -> Check {
    match found {
        Some(p) => Check::ok(DBUS_PROXY, format!("found at {}", p.display())),
        None => Check::fail(
            DBUS_PROXY,
            "doppel-bus-proxy is missing; Doppel gives each clone a filtered session bus \
             through it, and it is part of Doppel",
            "reinstall Doppel's package (apt install --reinstall doppel, dnf reinstall doppel \
             or pacman -S doppel), or in a checkout build everything: cargo build --workspace",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Session bus
// ---------------------------------------------------------------------------------------------

fn check_session_bus(runtime_dir: Option<&Path>) -> Check {
    let address = std::env::var("DBUS_SESSION_BUS_ADDRESS").ok();
    let socket = runtime_dir.map(|d| d.join("bus"));
    let socket_exists = socket.as_deref().is_some_and(Path::exists);
    session_bus_check(address.as_deref(), socket.as_deref(), socket_exists)
}

/// The session-bus check from `DBUS_SESSION_BUS_ADDRESS` and `$XDG_RUNTIME_DIR/bus`.
fn session_bus_check(address: Option<&str>, socket: Option<&Path>, socket_exists: bool) -> Check {
    if let Some(a) = address.filter(|a| !a.is_empty()) {
        return Check::ok(SESSION_BUS, format!("DBUS_SESSION_BUS_ADDRESS={a}"));
    }
    match socket {
        Some(s) if socket_exists => Check::ok(SESSION_BUS, format!("{} exists", s.display())),
        _ => {
            let where_ = socket.map_or_else(
                || "$XDG_RUNTIME_DIR/bus".to_owned(),
                |s| s.display().to_string(),
            );
            Check::warn(
                SESSION_BUS,
                format!(
                    "no session bus (DBUS_SESSION_BUS_ADDRESS is not set and {where_} does not \
                     exist): cloned apps get no notifications, tray icons or links"
                ),
                "run Doppel inside your desktop session, which starts the bus; from a bare \
                 shell: systemctl --user start dbus.socket (systemd) or eval \
                 \"$(dbus-launch --sh-syntax)\"",
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5b. systemd user manager (portal identity)
// ---------------------------------------------------------------------------------------------

/// Whether clones can run in scopes of their own, from [`crate::scope::probe`].
fn user_manager_check(probe: Result<(), crate::scope::Outcome>) -> Check {
    use crate::scope::Outcome;
    const WITHOUT: &str = "so portals (file chooser, open URI, notifications) see a clone as the \
                           app that started it, or as no app at all, instead of as an app of its \
                           own; everything else works";
    match probe {
        Ok(()) | Err(Outcome::Entered(_)) => Check::ok(
            USER_MANAGER,
            "answers on the session bus: each clone runs in a scope of its own \
             (app-doppel-org.doppel.Doppel.<id>-….scope), so portals see it as its own app",
        ),
        Err(Outcome::NoUserManager(why)) => Check::warn(
            USER_MANAGER,
            format!("not available ({why}), {WITHOUT}"),
            "nothing to do on a system without systemd; on one with it, run Doppel inside \
             your desktop session, whose user services systemd manages \
             (`systemctl --user status` answers there)",
        ),
        Err(Outcome::Failed(e)) => Check::warn(
            USER_MANAGER,
            format!("could not be asked: {e}; {WITHOUT}"),
            "check the session bus (`busctl --user status`), then run `doppel doctor` again",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// 5c. The desktop portal (links opened inside clones)
// ---------------------------------------------------------------------------------------------

/// What the session bus says of xdg-desktop-portal.
#[derive(Debug)]
enum PortalProbe {
    /// It runs, or the bus can start it.
    Available,
    /// The bus neither has it nor can start it.
    Missing,
    /// The session bus could not be asked.
    NoBus(String),
}

const PORTAL_NAME: &str = "org.freedesktop.portal.Desktop";

fn probe_portal() -> PortalProbe {
    let ask = || -> zbus::Result<bool> {
        let conn = zbus::blocking::Connection::session()?;
        let bus = zbus::blocking::fdo::DBusProxy::new(&conn)?;
        let name = zbus::names::BusName::try_from(PORTAL_NAME)?;
        if bus.name_has_owner(name)? {
            return Ok(true);
        }
        Ok(bus
            .list_activatable_names()?
            .iter()
            .any(|n| n.as_str() == PORTAL_NAME))
    };
    match ask() {
        Ok(true) => PortalProbe::Available,
        Ok(false) => PortalProbe::Missing,
        Err(e) => PortalProbe::NoBus(e.to_string()),
    }
}

/// Whether a clone's `xdg-open` can reach the person's browser (see [`crate::opener`]).
fn portal_check(probe: PortalProbe) -> Check {
    match probe {
        PortalProbe::Available => Check::ok(
            PORTAL,
            "xdg-desktop-portal is on the session bus: links opened inside clones open in your \
             browser",
        ),
        PortalProbe::Missing => Check::warn(
            PORTAL,
            "xdg-desktop-portal is neither running nor installed: a link a clone opens (a login \
             page, say) cannot reach your browser, and xdg-open in the clone fails",
            "install xdg-desktop-portal and the backend for your desktop \
             (xdg-desktop-portal-gnome, -kde or -gtk), then log in again",
        ),
        PortalProbe::NoBus(e) => Check::warn(
            PORTAL,
            format!("could not be looked for ({e}); links opened inside clones need it"),
            "run `doppel doctor` inside your desktop session",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Display
// ---------------------------------------------------------------------------------------------

fn check_display(runtime_dir: Option<&Path>) -> Check {
    let display = std::env::var("DISPLAY").ok();
    let wayland = std::env::var("WAYLAND_DISPLAY").ok();
    display_check(
        display.as_deref(),
        wayland.as_deref(),
        runtime_dir,
        &|p: &Path| p.exists(),
    )
}

/// The display check from `DISPLAY`, `WAYLAND_DISPLAY` and which sockets exist.
fn display_check(
    display: Option<&str>,
    wayland: Option<&str>,
    runtime_dir: Option<&Path>,
    exists: &dyn Fn(&Path) -> bool,
) -> Check {
    let mut found = Vec::new();
    let mut missing = Vec::new();

    match wayland.filter(|w| !w.is_empty()) {
        None => missing.push("WAYLAND_DISPLAY is not set".to_owned()),
        Some(w) => {
            let socket = if w.starts_with('/') {
                Some(PathBuf::from(w))
            } else {
                runtime_dir.map(|d| d.join(w))
            };
            match socket {
                Some(s) if exists(&s) => {
                    found.push(format!("Wayland {w} at {}", s.display()));
                }
                Some(s) => missing.push(format!(
                    "WAYLAND_DISPLAY={w} but {} does not exist",
                    s.display()
                )),
                None => missing.push(format!(
                    "WAYLAND_DISPLAY={w} but XDG_RUNTIME_DIR, where its socket lives, is not set"
                )),
            }
        }
    }
    match display.filter(|d| !d.is_empty()) {
        None => missing.push("DISPLAY is not set".to_owned()),
        Some(d) => match crate::host::parse_display(d) {
            Some(x) if exists(&x.socket) => {
                found.push(format!("X11 {d} at {}", x.socket.display()));
            }
            Some(x) => missing.push(format!(
                "DISPLAY={d} but {} does not exist",
                x.socket.display()
            )),
            None => missing.push(format!(
                "DISPLAY={d} is a remote (TCP) display, which the sandbox cannot pass on"
            )),
        },
    }

    if found.is_empty() {
        Check::warn(
            DISPLAY,
            format!("{}: graphical apps cannot open windows", missing.join("; ")),
            "run Doppel from a terminal inside your desktop session (it sets WAYLAND_DISPLAY or \
             DISPLAY); without one, start a virtual X server: Xvfb :99 & export DISPLAY=:99",
        )
    } else {
        let mut detail = found.join("; ");
        // Mention a half-set-up second display server, which is harmless but surprising.
        let stale: Vec<_> = missing
            .iter()
            .filter(|m| !m.ends_with("is not set"))
            .cloned()
            .collect();
        if !stale.is_empty() {
            let _ = write!(detail, " (also: {})", stale.join("; "));
        }
        Check::ok(DISPLAY, detail)
    }
}

// ---------------------------------------------------------------------------------------------
// 7. XDG_RUNTIME_DIR
// ---------------------------------------------------------------------------------------------

/// What stat(2) says about a directory: whether it is one, its owner and permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirStat {
    is_dir: bool,
    uid: u32,
    mode: u32,
}

fn stat_dir(p: &Path) -> Result<DirStat, i32> {
    fs::metadata(p)
        .map(|m| DirStat {
            is_dir: m.is_dir(),
            uid: m.uid(),
            mode: m.mode() & 0o7777,
        })
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// The runtime-directory check from the path (if set), its stat result and the current euid.
fn runtime_dir_check(dir: Option<&Path>, stat: Option<Result<DirStat, i32>>, euid: u32) -> Check {
    let login_fix = format!(
        "log in through a desktop or `machinectl shell <user>@` session (pam_systemd creates \
         /run/user/{euid} and sets XDG_RUNTIME_DIR); for this shell only: \
         export XDG_RUNTIME_DIR=/run/user/{euid} if that directory exists, else \
         export XDG_RUNTIME_DIR=\"$(mktemp -d)\""
    );
    let (Some(dir), Some(stat)) = (dir, stat) else {
        return Check::fail(
            RUNTIME_DIR,
            "XDG_RUNTIME_DIR is not set (or not an absolute path); Doppel keeps its running \
             instances and each clone's sockets there",
            login_fix,
        );
    };
    let shown = dir.display();
    match stat {
        Err(e) => Check::fail(
            RUNTIME_DIR,
            format!("XDG_RUNTIME_DIR={shown} cannot be used: {}", errno_text(e)),
            login_fix,
        ),
        Ok(s) if !s.is_dir => Check::fail(
            RUNTIME_DIR,
            format!("XDG_RUNTIME_DIR={shown} is not a directory"),
            login_fix,
        ),
        Ok(s) if s.uid != euid => Check::fail(
            RUNTIME_DIR,
            format!(
                "XDG_RUNTIME_DIR={shown} belongs to uid {}, not to you (uid {euid}); this \
                 happens after su or sudo",
                s.uid
            ),
            login_fix,
        ),
        Ok(s) if s.mode & 0o777 != 0o700 => Check::fail(
            RUNTIME_DIR,
            format!(
                "XDG_RUNTIME_DIR={shown} has mode {:04o}; it must be 0700 so no one else can \
                 reach the sockets inside",
                s.mode
            ),
            format!("chmod 0700 {shown}"),
        ),
        Ok(_) => Check::ok(RUNTIME_DIR, format!("{shown} is yours, mode 0700")),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_portal_check_says_what_links_need() {
        assert_eq!(portal_check(PortalProbe::Available).status, Status::Ok);
        let missing = portal_check(PortalProbe::Missing);
        assert_eq!(missing.status, Status::Warn);
        assert!(missing
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("xdg-desktop-portal")));
        let nobus = portal_check(PortalProbe::NoBus("no address".into()));
        assert_eq!(nobus.status, Status::Warn);
        assert!(nobus.detail.contains("no address"));
    }

    use super::*;
    use std::collections::HashSet;

    fn facts() -> UsernsFacts {
        UsernsFacts {
            euid: 1000,
            max_user_namespaces: Some("63000\n".into()),
            exe: Some(PathBuf::from("/home/ana/src/doppel/target/release/doppel")),
            ..Default::default()
        }
    }

    fn eperm_at(step: Step) -> Option<ProbeError> {
        Some(ProbeError::Step(step, libc::EPERM))
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("5.12-rc1"), Some((5, 12)));
        assert_eq!(parse_release("4.19.0-26-amd64\n"), Some((4, 19)));
        assert_eq!(parse_release("6"), None);
        assert_eq!(parse_release("x.y"), None);
        assert_eq!(parse_release(""), None);
        assert!(kernel_at_least("5.12.0", 5, 12));
        assert!(kernel_at_least("6.1.0-18-amd64", 5, 12));
        assert!(kernel_at_least("5.100.1", 5, 12));
        assert!(!kernel_at_least("5.11.22", 5, 12));
        assert!(!kernel_at_least("4.19.300", 5, 12));
        assert!(!kernel_at_least("garbage", 5, 12));
    }

    #[test]
    fn mount_api() {
        let c = mount_api_check(Some("5.10.0-28-amd64"), Some(false));
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.contains("Doppel needs Linux 5.12 or newer"),
            "{}",
            c.detail
        );
        assert!(c.fix.is_some());
        assert_eq!(
            mount_api_check(Some("6.8.0-45-generic"), Some(true)).status,
            Status::Ok
        );
        let blocked = mount_api_check(Some("6.8.0"), Some(false));
        assert_eq!(blocked.status, Status::Fail);
        assert!(blocked.detail.contains("ENOSYS"));
        assert_eq!(
            mount_api_check(Some("weird"), Some(true)).status,
            Status::Ok
        );
        assert_eq!(mount_api_check(None, None).status, Status::Fail);
    }

    #[test]
    fn userns_ok() {
        let c = diagnose_userns(&facts());
        assert_eq!(c.status, Status::Ok);
        assert_eq!(c.name, USERNS);
        assert_eq!(c.fix, None);
    }

    #[test]
    fn userns_debian_switch() {
        let f = UsernsFacts {
            probe: eperm_at(Step::Unshare),
            unprivileged_userns_clone: Some("0\n".into()),
            ..facts()
        };
        let c = diagnose_userns(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.contains("kernel.unprivileged_userns_clone = 0"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("Operation not permitted"), "{}", c.detail);
        let fix = c.fix.unwrap();
        assert!(fix.contains("sudo sysctl -w kernel.unprivileged_userns_clone=1"));
        assert!(fix.contains("/etc/sysctl.d/"));
        // The switch set to 1 is not a cause.
        let f = UsernsFacts {
            unprivileged_userns_clone: Some("1\n".into()),
            ..facts()
        };
        assert_eq!(diagnose_userns(&f).status, Status::Ok);
    }

    #[test]
    fn userns_max_zero() {
        let f = UsernsFacts {
            probe: Some(ProbeError::Step(Step::Unshare, libc::ENOSPC)),
            max_user_namespaces: Some("0\n".into()),
            ..facts()
        };
        let c = diagnose_userns(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.contains("user.max_user_namespaces = 0"),
            "{}",
            c.detail
        );
        let fix = c.fix.unwrap();
        assert!(
            fix.contains("sudo sysctl -w user.max_user_namespaces=16384"),
            "{fix}"
        );
        // A reached limit (not zero) suggests raising it.
        let f = UsernsFacts {
            probe: Some(ProbeError::Step(Step::Unshare, libc::ENOSPC)),
            max_user_namespaces: Some("10000".into()),
            ..facts()
        };
        let c = diagnose_userns(&f);
        assert!(
            c.detail.contains("limit on user namespaces is reached"),
            "{}",
            c.detail
        );
        assert!(c.fix.unwrap().contains("user.max_user_namespaces=20000"));
    }

    #[test]
    fn userns_apparmor_fail_source_build() {
        let f = UsernsFacts {
            probe: eperm_at(Step::UidMap),
            apparmor_restrict: Some("1\n".into()),
            apparmor_label: Some("unconfined\n".into()),
            ..facts()
        };
        let c = diagnose_userns(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("AppArmor restricts"), "{}", c.detail);
        assert!(c.detail.contains("/proc/self/uid_map"), "{}", c.detail);
        let fix = c.fix.unwrap();
        assert!(fix.contains("abi <abi/4.0>,"), "{fix}");
        assert!(fix.contains("include <tunables/global>"), "{fix}");
        assert!(
            fix.contains(
                "profile doppel /home/ana/src/doppel/target/release/doppel flags=(unconfined) {"
            ),
            "{fix}"
        );
        assert!(fix.contains("userns,"), "{fix}");
        assert!(
            fix.contains("sudo apparmor_parser -r /etc/apparmor.d/doppel"),
            "{fix}"
        );
    }

    #[test]
    fn userns_apparmor_packaged_and_quoting() {
        let f = UsernsFacts {
            probe: eperm_at(Step::UidMap),
            apparmor_restrict: Some("1".into()),
            exe: Some(PathBuf::from(PACKAGED_EXE)),
            ..facts()
        };
        let fix = diagnose_userns(&f).fix.unwrap();
        assert!(
            fix.contains("doppel package installs /etc/apparmor.d/doppel"),
            "{fix}"
        );
        assert!(fix.contains("sudo apparmor_parser -r /etc/apparmor.d/doppel"));
        assert!(!fix.contains("abi <abi/4.0>"));

        let with_space = apparmor_fix(Some(Path::new("/opt/my apps/doppel")));
        assert!(with_space.contains("profile doppel \"/opt/my apps/doppel\" flags"));
        assert!(apparmor_fix(None).contains("/path/to/doppel"));
    }

    #[test]
    fn userns_apparmor_warns_when_probe_passes() {
        // As root the probe passes, but a normal user would be refused.
        let f = UsernsFacts {
            euid: 0,
            apparmor_restrict: Some("1\n".into()),
            apparmor_label: Some("unconfined".into()),
            ..facts()
        };
        let c = diagnose_userns(&f);
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("root"), "{}", c.detail);
        assert!(c.detail.contains("AppArmor restricts"), "{}", c.detail);
        assert!(c.fix.unwrap().contains("apparmor_parser"));

        // Running under a profile that granted userns (the probe passed): nothing to report.
        let f = UsernsFacts {
            apparmor_restrict: Some("1\n".into()),
            apparmor_label: Some("doppel (unconfined)\n".into()),
            ..facts()
        };
        assert_eq!(diagnose_userns(&f).status, Status::Ok);

        // Restriction off: nothing to report.
        let f = UsernsFacts {
            euid: 0,
            apparmor_restrict: Some("0\n".into()),
            ..facts()
        };
        assert_eq!(diagnose_userns(&f).status, Status::Ok);
    }

    #[test]
    fn userns_unknown_cause() {
        let f = UsernsFacts {
            probe: eperm_at(Step::Unshare),
            ..facts()
        };
        let c = diagnose_userns(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.contains("unshare(CLONE_NEWUSER|CLONE_NEWNS)"),
            "{}",
            c.detail
        );
        assert!(c.fix.unwrap().contains("container"));
        let f = UsernsFacts {
            probe: Some(ProbeError::Step(Step::Unshare, libc::EINVAL)),
            ..facts()
        };
        assert!(diagnose_userns(&f).fix.unwrap().contains("CONFIG_USER_NS"));
        let f = UsernsFacts {
            probe: Some(ProbeError::Abnormal("was killed by SIGSYS".into())),
            ..facts()
        };
        let c = diagnose_userns(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("SIGSYS"));
    }

    #[test]
    fn network_checks() {
        assert_eq!(
            pasta_check(Some(Path::new("/usr/bin/pasta"))).status,
            Status::Ok
        );
        let c = pasta_check(None);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("--network host"));
        let fix = c.fix.unwrap();
        assert!(fix.contains("sudo apt install passt"));
        assert!(fix.contains("sudo dnf install passt"));
        assert!(fix.contains("sudo pacman -S passt"));

        assert_eq!(tun_check(Ok(())).status, Status::Ok);
        let c = tun_check(Err(libc::EACCES));
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.fix.as_deref(),
            Some("sudo chmod 0666 /dev/net/tun (distributions normally ship it so through udev)")
        );
        let c = tun_check(Err(libc::ENOENT));
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.fix.as_deref(),
            Some("load the tun module: sudo modprobe tun")
        );
        assert_eq!(tun_check(Err(libc::EIO)).status, Status::Fail);
    }

    #[test]
    fn dbus_proxy() {
        assert_eq!(
            dbus_proxy_check(Some(Path::new("/usr/libexec/doppel-bus-proxy"))).status,
            Status::Ok
        );
        let c = dbus_proxy_check(None);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("cargo build --workspace"));
    }

    #[test]
    fn session_bus() {
        let bus = Path::new("/run/user/1000/bus");
        assert_eq!(
            session_bus_check(Some("unix:path=/x"), None, false).status,
            Status::Ok
        );
        assert_eq!(session_bus_check(None, Some(bus), true).status, Status::Ok);
        assert_eq!(
            session_bus_check(Some(""), Some(bus), true).status,
            Status::Ok
        );
        let c = session_bus_check(None, Some(bus), false);
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("/run/user/1000/bus"));
        assert!(c.detail.contains("notifications"));
        assert!(c.fix.is_some());
        assert_eq!(session_bus_check(None, None, false).status, Status::Warn);
    }

    #[test]
    fn user_manager() {
        use crate::scope::Outcome;
        let c = user_manager_check(Ok(()));
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("portals"));
        let c = user_manager_check(Err(Outcome::NoUserManager(
            "org.freedesktop.systemd1 is not on the session bus".into(),
        )));
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("not available"), "{}", c.detail);
        assert!(c.detail.contains("everything else works"), "{}", c.detail);
        assert!(c.fix.is_some());
        let c = user_manager_check(Err(Outcome::Failed("timeout".into())));
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("timeout"));
    }

    #[test]
    fn display() {
        let have: HashSet<PathBuf> = [
            PathBuf::from("/tmp/.X11-unix/X0"),
            PathBuf::from("/run/user/1000/wayland-0"),
        ]
        .into_iter()
        .collect();
        let exists = |p: &Path| have.contains(p);
        let rt = Some(Path::new("/run/user/1000"));

        let c = display_check(Some(":0"), None, rt, &exists);
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("/tmp/.X11-unix/X0"));
        let c = display_check(None, Some("wayland-0"), rt, &exists);
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("/run/user/1000/wayland-0"));
        let c = display_check(Some(":1"), Some("wayland-0"), rt, &exists);
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("X1 does not exist"), "{}", c.detail);

        let c = display_check(None, None, rt, &exists);
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("cannot open windows"));
        assert!(c.fix.is_some());
        let c = display_check(Some(":5"), Some("wayland-9"), rt, &exists);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.contains("/tmp/.X11-unix/X5 does not exist"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("wayland-9"), "{}", c.detail);
        let c = display_check(Some("remote:0"), Some("wayland-0"), None, &exists);
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("remote"));
    }

    #[test]
    fn runtime_dir() {
        let p = Path::new("/run/user/1000");
        let good = DirStat {
            is_dir: true,
            uid: 1000,
            mode: 0o700,
        };
        assert_eq!(
            runtime_dir_check(Some(p), Some(Ok(good)), 1000).status,
            Status::Ok
        );
        let c = runtime_dir_check(None, None, 1000);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("/run/user/1000"));
        let c = runtime_dir_check(Some(p), Some(Err(libc::ENOENT)), 1000);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("No such file"));
        let c = runtime_dir_check(Some(p), Some(Ok(DirStat { uid: 0, ..good })), 1000);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("uid 0"));
        let c = runtime_dir_check(
            Some(p),
            Some(Ok(DirStat {
                mode: 0o755,
                ..good
            })),
            1000,
        );
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("0755"));
        assert_eq!(c.fix.as_deref(), Some("chmod 0700 /run/user/1000"));
        let c = runtime_dir_check(
            Some(p),
            Some(Ok(DirStat {
                is_dir: false,
                ..good
            })),
            1000,
        );
        assert_eq!(c.status, Status::Fail);
    }

    #[test]
    fn render_and_all_ok() {
        let checks = vec![
            Check::ok("alpha", "fine"),
            Check::warn("beta", "meh", "do this"),
            Check::fail("gamma", "broken", "first\nsecond"),
        ];
        assert_eq!(
            render(&checks),
            "ok   alpha: fine\n\
             WARN beta: meh\n\
             \x20    fix: do this\n\
             FAIL gamma: broken\n\
             \x20    fix: first\n\
             \x20         second\n"
        );
        assert!(!all_ok(&checks));
        assert!(all_ok(&checks[..2]));
        assert!(all_ok(&[]));
    }

    /// The real probe: this machine supports user namespaces (as root too), so the check is Ok
    /// unless a known switch turns them off here.
    #[test]
    fn real_run_userns() {
        let dirs = Dirs {
            home: PathBuf::from("/nonexistent-home"),
            config_home: PathBuf::from("/nonexistent-home/.config"),
            data_home: PathBuf::from("/nonexistent-home/.local/share"),
            data_dirs: vec![PathBuf::from("/usr/share")],
            runtime_dir: None,
        };
        let checks = run(&dirs);
        let names: Vec<_> = checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                USERNS,
                MOUNT_API,
                RUNTIME_DIR,
                PASTA,
                TUN,
                DBUS_PROXY,
                SESSION_BUS,
                USER_MANAGER,
                PORTAL,
                DISPLAY,
                "privileged helper"
            ]
        );
        // Without a runtime directory that check fails, and says how to fix it.
        assert_eq!(checks[2].status, Status::Fail);
        assert!(!all_ok(&checks));
        for c in &checks {
            assert_eq!(c.fix.is_some(), c.status != Status::Ok, "{c:?}");
        }

        let userns = &checks[0];
        let read = |p: &str| fs::read_to_string(p).ok();
        let switched_off = sysctl_is(read("/proc/sys/user/max_user_namespaces").as_deref(), 0)
            || sysctl_is(
                read("/proc/sys/kernel/unprivileged_userns_clone").as_deref(),
                0,
            );
        let apparmor = sysctl_is(
            read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref(),
            1,
        );
        if switched_off || apparmor {
            // Refused, or allowed only for this process: whatever it says comes with a fix.
            assert_eq!(
                userns.fix.is_some(),
                userns.status != Status::Ok,
                "{userns:?}"
            );
        } else {
            assert_eq!(userns.status, Status::Ok, "{}", render(&checks));
            // The probe reaps its child and can run again.
            assert_eq!(probe_userns(nix::unistd::geteuid().as_raw()), Ok(()));
        }
    }
}

#[cfg(test)]
mod helper_tests {
    use super::*;
    use doppel_helper::client::{ErrorKind, HelperError};

    #[test]
    fn the_helper_is_optional() {
        let c = helper_check(Err(HelperError {
            kind: ErrorKind::Unavailable,
            message: "no".into(),
        }));
        assert!(matches!(c.status, Status::Warn));
        assert!(c.detail.contains("plain profiles"));
        assert!(matches!(helper_check(Ok(())).status, Status::Ok));
    }
}
