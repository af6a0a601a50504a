//! The monitor: `doppel run` stays alive as long as the instance does. It prepares the host
//! side (directories, X authority, DNS, bus proxy), starts the sandbox, connects its network
//! through pasta, records the instance, forwards signals, reaps, and cleans up after the last
//! process of the sandbox has gone.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::apps;
use crate::dirs::{Dirs, DirsError};
use crate::host::HostFacts;
use crate::instance::{InstanceError, InstanceLock, InstanceRecord};
use crate::plan::{LaunchOptions, PlanError, SandboxPlan, DNS_FORWARD};
use crate::profile::{NetworkMode, Profile};
use crate::recipe::Recipe;
use crate::sandbox::{self, SandboxError};

/// How long processes get to exit after SIGTERM before they are killed.
pub const GRACE: Duration = Duration::from_secs(10);

/// Why an instance could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Dirs(#[from] DirsError),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(
        "the app's program {program:?} is not installed (not found in PATH); install the app, \
         or delete this profile with `doppel delete {id}`"
    )]
    AppMissing { program: String, id: String },
    #[error("{tool} is not installed; {fix}")]
    ToolMissing {
        tool: &'static str,
        fix: &'static str,
    },
    #[error("the session-bus proxy did not start: {0}")]
    Proxy(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{call}: {source}")]
    Sys {
        call: &'static str,
        source: nix::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RunError + 'a {
    move |source| RunError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn sys(call: &'static str) -> impl FnOnce(nix::Error) -> RunError {
    move |source| RunError::Sys { call, source }
}

/// Host-side preparation: directories, stale locks, X authority, resolv.conf.
fn prepare(plan: &SandboxPlan, host: &HostFacts) -> Result<(), RunError> {
    for d in &plan.prepare.dirs {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)
            .map_err(io_err("cannot create", d))?;
    }
    for f in plan
        .prepare
        .remove
        .iter()
        .flat_map(|p| crate::plan::stale_lock_files(p))
    {
        // Only files and symlinks: a recipe's lock path never removes a directory.
        if fs::symlink_metadata(&f).is_ok_and(|m| !m.is_dir()) {
            fs::remove_file(&f).map_err(io_err("cannot remove stale lock", &f))?;
        }
    }
    if let Some((src, display, dst)) = &plan.prepare.xauthority {
        crate::xauth::write_for_sandbox(src, *display, host.hostname.as_bytes(), dst).map_err(
            |e| RunError::Io {
                what: "cannot prepare the X authority file",
                path: dst.clone(),
                source: io::Error::other(e.to_string()),
            },
        )?;
    }
    if let Some(dst) = &plan.prepare.resolv_conf {
        let host_rc = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        crate::atomic::write(dst, resolv_conf_for_sandbox(&host_rc).as_bytes(), 0o644)
            .map_err(io_err("cannot write", dst))?;
    }
    Ok(())
}

/// The host's resolv.conf with its name servers replaced by pasta's DNS forwarder.
pub fn resolv_conf_for_sandbox(host: &str) -> String {
    let mut out = format!("# written by doppel: pasta forwards this address to the host's resolver\nnameserver {DNS_FORWARD}\n");
    for line in host.lines() {
        let t = line.trim_start();
        if t.starts_with("search") || t.starts_with("domain") || t.starts_with("options") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Makes `cmd` start with no signal blocked: the monitor blocks the signals it reads through
/// its signalfd, and a child would otherwise inherit that mask and ignore SIGTERM.
fn unblock_signals(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: sigemptyset and sigprocmask are async-signal-safe and touch only a local set.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Where distribution packages put `doppel-bus-proxy`, which no person runs: Debian and Fedora
/// (`/usr/libexec`), Arch (`/usr/lib/doppel`).
pub const BUS_PROXY_INSTALLED: &[&str] = &[
    "/usr/libexec/doppel-bus-proxy",
    "/usr/lib/doppel/doppel-bus-proxy",
];

/// The `doppel-bus-proxy` program: beside this one (a build tree, or an install under one
/// prefix), else where packages put it, else on PATH.
pub fn bus_proxy_program() -> Option<std::path::PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("doppel-bus-proxy")))
        .filter(|p| p.is_file())
        .or_else(|| {
            BUS_PROXY_INSTALLED
                .iter()
                .map(std::path::PathBuf::from)
                .find(|p| p.is_file())
        })
        .or_else(|| apps::which("doppel-bus-proxy"))
}

/// Starts Doppel's session-bus proxy and waits until its socket accepts connections.
fn start_proxy(plan: &crate::plan::BusProxyPlan) -> Result<(Child, OwnedFd), RunError> {
    let exe = bus_proxy_program().ok_or(RunError::ToolMissing {
        tool: "doppel-bus-proxy",
        fix: "it is part of Doppel: reinstall Doppel, or build the whole workspace \
              (cargo build --workspace) when running from a checkout",
    })?;
    let _ = fs::remove_file(&plan.socket);
    // The proxy writes one byte on this pipe when ready, and exits when our end closes.
    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
    let wfd = ready_w.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg(&plan.upstream)
        .arg(&plan.socket)
        .args(&plan.rules)
        .arg(format!("--suffix={}", plan.suffix))
        .arg(format!("--label={}", plan.label))
        .arg(format!("--desktop-entry={}", plan.desktop_entry))
        .arg(format!("--fd={wfd}"))
        .stdin(Stdio::null());
    // SAFETY: the closure only clears FD_CLOEXEC on one fd, which is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if libc::fcntl(wfd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    unblock_signals(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| RunError::Proxy(format!("cannot start doppel-bus-proxy: {e}")))?;
    drop(ready_w);
    let mut fds = [PollFd::new(ready_r.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, PollTimeout::from(5000u16)).unwrap_or(0) > 0 && {
        let mut b = [0u8; 1];
        matches!(nix::unistd::read(ready_r.as_raw_fd(), &mut b), Ok(1))
    };
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        return Err(RunError::Proxy(format!(
            "doppel-bus-proxy did not become ready (bus {}); check that the session bus runs",
            plan.upstream
        )));
    }
    Ok((child, ready_r))
}

/// Connects the sandbox's network namespace to the host's network through pasta; returns
/// pasta's pid once the namespace is configured.
///
/// pasta stays in the foreground as the monitor's child, with a parent-death signal: if the
/// monitor is killed, pasta goes too instead of holding the namespace forever.
fn start_pasta(pid: Pid, instance_dir: &Path) -> Result<i32, SandboxError> {
    let exe = apps::which("pasta").ok_or_else(|| {
        SandboxError::Network(
            "pasta is not installed, so an isolated network cannot be connected; install it \
             (Debian/Ubuntu: sudo apt install passt), or run with --network host or --network none"
                .into(),
        )
    })?;
    let pidfile = instance_dir.join("pasta.pid");
    let logfile = instance_dir.join("pasta.log");
    let _ = fs::remove_file(&pidfile);
    let log = fs::File::create(&logfile)
        .map_err(|e| SandboxError::Network(format!("cannot create {}: {e}", logfile.display())))?;
    let mut cmd = Command::new(exe);
    unblock_signals(&mut cmd);
    // SAFETY: prctl with integer arguments only, which is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // No port forwarding either way and no gateway mapping: the clone's loopback ports and the
    // host's stay apart; DNS goes through pasta's forwarder.
    let mut child = cmd
        .args(["--config-net", "--quiet", "--foreground", "--no-map-gw"])
        .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
        .args(["--dns-forward", DNS_FORWARD])
        .arg("--pid")
        .arg(&pidfile)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| SandboxError::Network(format!("cannot run pasta: {e}")))?;
    // pasta writes its pid file once the namespace is configured.
    let deadline = Instant::now() + Duration::from_secs(10);
    let failure = loop {
        if pidfile.exists() {
            return Ok(child.id() as i32);
        }
        match child.try_wait() {
            Ok(Some(st)) => break format!("pasta exited ({st})"),
            Ok(None) => {}
            Err(e) => break format!("waiting for pasta: {e}"),
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break "pasta did not finish setting up the network in 10 s".to_owned();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let err = fs::read_to_string(&logfile).unwrap_or_default();
    let err = err
        .lines()
        .filter(|l| !l.contains("syslog") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let hint = if err.contains("tun") {
        " (/dev/net/tun must be readable and writable by you: `doppel doctor` checks it)"
    } else {
        ""
    };
    Err(SandboxError::Network(format!(
        "pasta could not connect the sandbox's network: {failure}: {err}{hint}; or run with \
         --network host"
    )))
}

/// `(pid, ppid, session)` of every process, from `/proc/*/stat`.
fn process_table() -> Vec<(i32, i32, i32)> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // The command name may hold spaces and parentheses: fields start after the last ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut f = rest.split(' ');
            let _state = f.next()?;
            let ppid = f.next()?.parse().ok()?;
            let _pgrp = f.next()?;
            let session = f.next()?.parse().ok()?;
            Some((pid, ppid, session))
        })
        .collect()
}

/// Every process of the sandbox: the monitor's descendants other than its helpers, and any
/// process in the sandbox's session.
fn sandbox_processes(monitor: i32, session: i32, helpers: &HashSet<i32>) -> Vec<i32> {
    let table = process_table();
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for &(pid, ppid, _) in &table {
        children.entry(ppid).or_default().push(pid);
    }
    let mut found: HashSet<i32> = table
        .iter()
        .filter(|&&(pid, _, s)| s == session && pid != monitor)
        .map(|&(pid, _, _)| pid)
        .collect();
    let mut stack: Vec<i32> = children
        .get(&monitor)
        .map(|c| c.iter().copied().filter(|p| !helpers.contains(p)).collect())
        .unwrap_or_default();
    while let Some(p) = stack.pop() {
        found.insert(p);
        if let Some(c) = children.get(&p) {
            stack.extend(
                c.iter()
                    .copied()
                    .filter(|c| !found.contains(c) && !helpers.contains(c)),
            );
        }
    }
    found.retain(|p| !helpers.contains(p));
    let mut v: Vec<i32> = found.into_iter().collect();
    v.sort_unstable();
    v
}

/// The monitor's direct children, from `/proc/self/task/*/children` (cheap: no scan of every
/// process on the host), or `None` where the kernel lacks that file.
fn own_children() -> Option<Vec<i32>> {
    let mut v = Vec::new();
    for t in fs::read_dir("/proc/self/task").ok()?.flatten() {
        let text = fs::read_to_string(t.path().join("children")).ok()?;
        v.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    Some(v)
}

/// Whether any process of the sandbox is left. Orphans are re-parented to the monitor (a
/// subreaper), so a live sandbox process always has an ancestor among its direct children.
fn sandbox_alive(me: i32, session: i32, helpers: &HashSet<i32>) -> bool {
    match own_children() {
        Some(children) => children.iter().any(|c| !helpers.contains(c)),
        None => !sandbox_processes(me, session, helpers).is_empty(),
    }
}

fn signal_all(pids: &[i32], sig: Signal) {
    for &p in pids {
        let _ = kill(Pid::from_raw(p), sig);
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Blocks the signals a monitor reads through its signalfd. Call it before anything can start
/// a thread (the helper's D-Bus client does): threads inherit the mask, and a thread that has
/// them unblocked would swallow SIGCHLD, or be killed by SIGTERM with the whole process.
pub fn block_signals() -> Result<(), RunError> {
    monitor_signals().thread_block().map_err(sys("sigprocmask"))
}

fn monitor_signals() -> SigSet {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    mask
}

/// Runs `profile` and stays with it until its last process exits; returns the app's exit
/// status (128 + signal when it was killed), as a shell would report it.
pub fn run(
    dirs: &Dirs,
    profile: &Profile,
    recipe: &Recipe,
    opts: &LaunchOptions,
    notice: &mut dyn FnMut(&str),
) -> Result<i32, RunError> {
    // Block the signals the monitor reads through its signalfd before anything can start a
    // thread (the helper's D-Bus client does): threads inherit the mask, so no other thread
    // can swallow a SIGCHLD.
    block_signals()?;
    let lock = InstanceLock::acquire(dirs, &profile.id)?;
    let host = HostFacts::probe(dirs)?;
    let mut opts = opts.clone();
    // The program is checked before any storage is mounted: nothing to undo when it is missing.
    let probe = SandboxPlan::build(dirs, profile, recipe, &host, &{
        let mut o = opts.clone();
        o.storage = Some(crate::plan::Storage::plain(dirs, profile));
        o
    })?;
    if opts.command.is_none() && apps::which(&probe.argv[0]).is_none() {
        return Err(RunError::AppMissing {
            program: probe.argv[0].clone(),
            id: profile.id.to_string(),
        });
    }
    // Portals take the clone's app id from its scope only if the launcher with that id exists;
    // profiles made before launchers existed have none.
    if !crate::launcher::desktop_file(dirs, &profile.id).exists() {
        for w in crate::launcher::refresh(dirs, profile) {
            notice(&format!("warning: {w}"));
        }
    }
    opts.storage = crate::storage::prepare(dirs, profile)?;
    let result = SandboxPlan::build(dirs, profile, recipe, &host, &opts)
        .map_err(RunError::from)
        .and_then(|plan| {
            let r =
                prepare(&plan, &host).and_then(|()| run_prepared(&lock, profile, &plan, notice));
            let _ = fs::remove_dir_all(&plan.instance_dir);
            r
        });
    for w in crate::storage::release(profile) {
        notice(&format!("warning: {w}"));
    }
    result
}

fn run_prepared(
    lock: &InstanceLock,
    profile: &Profile,
    plan: &SandboxPlan,
    notice: &mut dyn FnMut(&str),
) -> Result<i32, RunError> {
    // Signals arrive through a signalfd so the loop below sees them in order with child exits
    // (run() has blocked them already).
    let mask = monitor_signals();
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(sys("signalfd"))?;
    // Processes the app leaves behind become our children, so none escapes the clean-up.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(RunError::Sys {
            call: "prctl(PR_SET_CHILD_SUBREAPER)",
            source: nix::Error::last(),
        });
    }

    // Into the clone's own systemd scope before the proxy, pasta and the app start, so they
    // inherit it and portals see the clone as its own app (see scope.rs). Without a user
    // manager the clone runs the same; `doppel doctor` says what that means.
    let app_id = crate::launcher::launcher_id(&profile.id);
    let description = format!("{} — Doppel", profile.label());
    if let crate::scope::Outcome::Failed(e) = crate::scope::enter(&app_id, &description) {
        notice(&format!(
            "warning: portals will not see this clone as its own app: {e}"
        ));
    }

    let mut helpers: HashSet<i32> = HashSet::new();
    let mut proxy = None;
    if let Some(bp) = &plan.bus_proxy {
        let (child, fd) = start_proxy(bp)?;
        helpers.insert(child.id() as i32);
        proxy = Some((child, fd));
    }
    let mut pasta_pid = None;
    let spawned = sandbox::spawn(plan, |pid| {
        if plan.network == NetworkMode::Isolated {
            pasta_pid = Some(start_pasta(pid, &plan.instance_dir)?);
        }
        Ok(())
    });
    if let Some(p) = pasta_pid {
        helpers.insert(p);
    }
    let teardown = |proxy: Option<(Child, OwnedFd)>, pasta: Option<i32>| {
        if let Some((mut child, fd)) = proxy {
            drop(fd);
            let _ = child.kill();
            let _ = child.wait();
        }
        // pasta's teardown of the namespace takes tens of milliseconds; nobody waits for it
        // (it is re-parented and reaped by init once the monitor has gone).
        if let Some(p) = pasta {
            let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
        }
    };
    let spawned = match spawned {
        Ok(s) => s,
        Err(e) => {
            teardown(proxy, pasta_pid);
            return Err(e.into());
        }
    };
    let main = spawned.pid;
    // A PID namespace's init passes the signals it gets on to the app and exits once every
    // other process has gone: the monitor signals the others, as it would without one, and
    // kills the init itself only should a kill leave it behind.
    let init = spawned.init.then_some(main.as_raw());
    let others =
        |pids: Vec<i32>| -> Vec<i32> { pids.into_iter().filter(|p| Some(*p) != init).collect() };
    // Held until the monitor ends: when it closes, the init ends the sandbox.
    let _lifeline = spawned.lifeline;
    let me = std::process::id() as i32;
    let record = InstanceRecord {
        profile: profile.id.clone(),
        monitor_pid: me,
        sandbox_pid: main.as_raw(),
        pasta_pid,
        proxy_pid: proxy.as_ref().map(|(c, _)| c.id() as i32),
        started: now_secs(),
        network: plan.network,
        home: profile.home,
        command: plan.argv.clone(),
    };
    if let Err(e) = lock.write_record(&record) {
        notice(&format!("warning: {e}"));
    }

    let mut status: Option<i32> = None;
    let mut kill_at: Option<Instant> = None;
    let mut kill_init_at: Option<Instant> = None;
    loop {
        // A periodic wake-up as well: should a SIGCHLD ever reach another thread, exits are
        // still reaped.
        let next = match (kill_at, kill_init_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = next.map_or(PollTimeout::from(1000u16), |t| {
            let ms = t.saturating_duration_since(Instant::now()).as_millis();
            PollTimeout::try_from(ms.min(1000) as i32).unwrap_or(PollTimeout::ZERO)
        });
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let ready = match poll(&mut fds, timeout) {
            Ok(n) => n > 0,
            Err(nix::Error::EINTR) => false,
            Err(e) => {
                notice(&format!("warning: poll: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                false
            }
        };
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            signal_all(
                &others(sandbox_processes(me, main.as_raw(), &helpers)),
                Signal::SIGKILL,
            );
            kill_at = None;
            kill_init_at = init.map(|_| Instant::now() + Duration::from_secs(2));
        }
        if kill_init_at.is_some_and(|t| Instant::now() >= t) {
            // Killing a PID namespace's init kills every process left in it.
            signal_all(&init.into_iter().collect::<Vec<_>>(), Signal::SIGKILL);
            kill_init_at = None;
        }
        if ready {
            // SIGCHLD is handled just below; SIGHUP means the terminal went away, and the app
            // is not tied to it, nor are we.
            if let Ok(Some(info)) = sfd.read_signal() {
                if let Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) =
                    Signal::try_from(info.ssi_signo as i32)
                {
                    signal_all(&others(sandbox_processes(me, main.as_raw(), &helpers)), sig);
                    kill_at.get_or_insert(Instant::now() + GRACE);
                }
            }
        }
        if reap(
            main,
            &mut status,
            &mut helpers,
            &proxy,
            &mut pasta_pid,
            notice,
        ) && !sandbox_alive(me, main.as_raw(), &helpers)
        {
            break;
        }
    }
    let proxy_alive = proxy.filter(|(c, _)| helpers.contains(&(c.id() as i32)));
    teardown(proxy_alive, pasta_pid.filter(|p| helpers.contains(p)));
    Ok(status.unwrap_or(0))
}

/// Reaps every exited child; returns whether the app's main process has exited (now or before).
fn reap(
    main: Pid,
    status: &mut Option<i32>,
    helpers: &mut HashSet<i32>,
    proxy: &Option<(Child, OwnedFd)>,
    pasta_pid: &mut Option<i32>,
    notice: &mut dyn FnMut(&str),
) -> bool {
    while let Ok(ws) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        let (pid, code) = match ws {
            WaitStatus::Exited(p, c) => (p, c),
            WaitStatus::Signaled(p, s, _) => (p, 128 + s as i32),
            WaitStatus::StillAlive => break,
            _ => continue,
        };
        if pid == main {
            *status = Some(code);
        } else if helpers.remove(&pid.as_raw()) {
            if proxy
                .as_ref()
                .is_some_and(|(c, _)| c.id() as i32 == pid.as_raw())
            {
                notice("warning: the session-bus proxy exited; the app has lost its session bus");
            } else if *pasta_pid == Some(pid.as_raw()) {
                notice("warning: pasta exited; the app has lost its network");
                *pasta_pid = None;
            }
        }
    }
    status.is_some()
}

/// Ends a running instance: SIGTERM to its monitor, which passes it on and kills what is left
/// after [`GRACE`]; if the monitor itself does not finish in `timeout`, everything is killed.
pub fn stop(dirs: &Dirs, id: &crate::id::ProfileId, timeout: Duration) -> Result<bool, RunError> {
    let Some(rec) = crate::instance::status(dirs, id)? else {
        return Ok(false);
    };
    if rec.monitor_pid > 0 {
        let _ = kill(Pid::from_raw(rec.monitor_pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !crate::instance::is_running(dirs, id)? {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The monitor is stuck: kill the whole instance by hand.
    let helpers: HashSet<i32> = [rec.pasta_pid, rec.proxy_pid]
        .into_iter()
        .flatten()
        .collect();
    if rec.sandbox_pid > 0 {
        signal_all(
            &sandbox_processes(rec.monitor_pid, rec.sandbox_pid, &helpers),
            Signal::SIGKILL,
        );
    }
    let mut rest: Vec<i32> = helpers.into_iter().collect();
    rest.push(rec.monitor_pid);
    signal_all(
        &rest.into_iter().filter(|p| *p > 0).collect::<Vec<_>>(),
        Signal::SIGKILL,
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && crate::instance::is_running(dirs, id)? {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_keeps_search_and_options_and_replaces_servers() {
        let host = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        let out = resolv_conf_for_sandbox(host);
        assert!(out.contains("nameserver 169.254.1.1\n"));
        assert!(!out.contains("127.0.0.53"));
        assert!(out.contains("options edns0 trust-ad\n") && out.contains("search lan\n"));
    }

    #[test]
    fn process_table_sees_this_process_with_its_parent() {
        let me = std::process::id() as i32;
        let ppid = nix::unistd::getppid().as_raw();
        assert!(process_table()
            .iter()
            .any(|&(p, pp, _)| p == me && pp == ppid));
    }

    #[test]
    fn sandbox_processes_finds_descendants_but_not_helpers() {
        let me = std::process::id() as i32;
        let mut a = Command::new("sleep").arg("5").spawn().unwrap();
        let mut b = Command::new("sleep").arg("5").spawn().unwrap();
        let helpers: HashSet<i32> = [b.id() as i32].into_iter().collect();
        let found = sandbox_processes(me, -1, &helpers);
        assert!(found.contains(&(a.id() as i32)));
        assert!(!found.contains(&(b.id() as i32)));
        a.kill().unwrap();
        b.kill().unwrap();
        a.wait().unwrap();
        b.wait().unwrap();
    }
}
