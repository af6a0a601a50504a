//! Portal identity: `doppel run` puts the clone (the monitor, so the bus proxy, pasta and the
//! app after it) into a systemd user scope whose name xdg-desktop-portal reads back as the
//! clone's own app id, `org.doppel.Doppel.<id>`, whose launcher exists.
//!
//! This machine has no systemd user manager, so the test plays one: an
//! `org.freedesktop.systemd1` written with zbus on a private session bus, which records
//! `StartTransientUnit` calls and answers with `JobRemoved`. Without it (no user manager, or no
//! session bus at all) the clone must run all the same and `doppel doctor` must say what is
//! missing.
//!
//! Needs root (it creates the test user) and dbus-daemon; the profiles run `sh`, `sleep` and
//! `true` through `doppel run`, with what that needs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/display.rs"]
mod display;

use std::collections::HashMap;
use std::fs;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbus::blocking::Connection;
use zbus::message::Header;
use zbus::names::BusName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};

use common::{ok, Env, User};
use display::{terminate, SessionBus};

const SYSTEMD: &str = "org.freedesktop.systemd1";
const SYSTEMD_PATH: &str = "/org/freedesktop/systemd1";
const WARNING: &str = "portals will not see this clone as its own app";

fn can_run() -> bool {
    common::require(common::is_root(), "the scope test needs root (sudo)")
        && ["dbus-daemon", "sleep", "true"]
            .iter()
            .all(|c| common::require(common::have(c), &format!("{c} is not installed")))
}

/// One `StartTransientUnit` call, as the stand-in saw it.
#[derive(Debug)]
struct StartCall {
    name: String,
    mode: String,
    properties: HashMap<String, OwnedValue>,
    /// The pid of the connection that called (from the bus).
    caller_pid: u32,
}

/// A systemd user manager reduced to what `doppel run` asks of it: it records each call and
/// finishes each job at once with `result` ("done", or "failed" to play a refusal), or never
/// (`None`, to play a manager that hangs).
struct Manager {
    calls: Arc<Mutex<Vec<StartCall>>>,
    result: Option<&'static str>,
    jobs: u32,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    // The D-Bus signature is systemd's; the rest is what zbus hands an interface method.
    #[allow(clippy::too_many_arguments)]
    async fn start_transient_unit(
        &mut self,
        name: String,
        mode: String,
        properties: Vec<(String, OwnedValue)>,
        _aux: Vec<(String, Vec<(String, OwnedValue)>)>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        let sender = header
            .sender()
            .ok_or_else(|| zbus::fdo::Error::Failed("no sender".into()))?
            .to_owned();
        let caller_pid = zbus::fdo::DBusProxy::new(conn)
            .await?
            .get_connection_unix_process_id(BusName::Unique(sender))
            .await?;
        self.calls.lock().unwrap().push(StartCall {
            name: name.clone(),
            mode,
            properties: properties.into_iter().collect(),
            caller_pid,
        });
        self.jobs += 1;
        let job = ObjectPath::try_from(format!("{SYSTEMD_PATH}/job/{}", self.jobs)).unwrap();
        // Before the reply, which real systemd never does but may as well: a client that starts
        // listening only once it has the job's path would miss this.
        if let Some(result) = self.result {
            Self::job_removed(&emitter, self.jobs, job.clone(), &name, result).await?;
        }
        Ok(job.into())
    }

    #[zbus(signal)]
    async fn job_removed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

/// Serves the stand-in user manager on `bus`; returns its connection (keep it) and its calls.
fn stand_in(
    bus: &SessionBus,
    result: Option<&'static str>,
) -> (Connection, Arc<Mutex<Vec<StartCall>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let manager = Manager {
        calls: Arc::clone(&calls),
        result,
        jobs: 0,
    };
    let conn = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .serve_at(SYSTEMD_PATH, manager)
        .unwrap()
        .name(SYSTEMD)
        .unwrap()
        .build()
        .expect("cannot serve the stand-in user manager on the test's session bus");
    (conn, calls)
}

/// The app id xdg-desktop-portal reads from a scope name, the way `xdp-app-info-host.c` does
/// it: `^app-(?:[[:alnum:]]+\-)?(.+?)(?:\-[[:alnum:]]*)(?:\.scope|\.slice)$`, then systemd
/// unescaping of the captured id.
fn portal_app_id(unit: &str) -> Option<String> {
    let body = unit.strip_prefix("app-")?.strip_suffix(".scope")?;
    let capture = |s: &str| -> Option<String> {
        // `(.+?)` then `-[[:alnum:]]*` up to the end: the id runs to the last '-'.
        let (id, random) = s.rsplit_once('-')?;
        (!id.is_empty() && random.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| unescape(id))
    };
    let launcher = body
        .find('-')
        .filter(|&i| i > 0 && body[..i].bytes().all(|b| b.is_ascii_alphanumeric()));
    launcher
        .and_then(|i| capture(&body[i + 1..]))
        .or_else(|| capture(body))
}

/// systemd's `\xNN` unescaping.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// `doppel ARGS` as the test user, with this test's environment plus `extra`; waits.
fn doppel(env: &Env, extra: &[(&'static str, String)], args: &[&str]) -> Output {
    let mut vars: Vec<(&str, String)> = env.vars.iter().map(|(k, v)| (*k, v.clone())).collect();
    vars.extend(extra.iter().cloned());
    let mut argv = vec![common::staged().doppel.display().to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    env.user
        .command(&vars, &argv)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A number field of the instance record (`key = N`).
fn record_field(text: &str, key: &str) -> Option<i32> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`.
fn ppid(pid: i32) -> i32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(1).unwrap().parse().unwrap()
}

fn string_property(call: &StartCall, name: &str) -> String {
    let v = call
        .properties
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {call:?}"));
    String::try_from(v.try_clone().unwrap()).unwrap()
}

fn profile(env: &Env, id: &str) {
    ok(&env.doppel(&[
        "create",
        id,
        "--app",
        "sh",
        "--name",
        "Work",
        "--network",
        "none",
    ]));
}

fn desktop_file(env: &Env, id: &str) -> std::path::PathBuf {
    env.root
        .join("data/applications")
        .join(format!("org.doppel.Doppel.{id}.desktop"))
}

#[test]
fn a_clone_runs_in_a_scope_the_portal_reads_as_its_own_app() {
    if !can_run() {
        return;
    }
    // A '-' in the id: the unit name must escape it for the portal to read the id back whole.
    let id = "portal-work";
    let env = Env::new(User::get("doppel-e2e"), "scope");
    profile(&env, id);
    let desktop = desktop_file(&env, id);
    assert!(desktop.is_file(), "{} is missing", desktop.display());

    let bus = SessionBus::start_allowing_root(&env.user, "scope");
    let (_manager, calls) = stand_in(&bus, Some("done"));
    let with_bus = [("DBUS_SESSION_BUS_ADDRESS", bus.address.clone())];

    // A clone that stays, to see who is in the scope.
    let mut vars: Vec<(&str, String)> = env.vars.iter().map(|(k, v)| (*k, v.clone())).collect();
    vars.extend(with_bus.iter().cloned());
    let exe = common::staged().doppel.display().to_string();
    let mut monitor = env
        .user
        .command(&vars, &[exe.as_str(), "run", id, "--", "sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // setpriv and env exec in turn, so this pid is the monitor's.
    let monitor_pid = monitor.id() as i32;
    let record = env.user.runtime.join(format!("doppel/{id}.instance"));
    let mut text = String::new();
    let recorded = common::wait_until(Duration::from_secs(20), || {
        text = fs::read_to_string(&record).unwrap_or_default();
        record_field(&text, "sandbox_pid").is_some_and(|p| p > 0)
    });
    if !recorded {
        terminate(&mut monitor, Duration::from_secs(5));
        let out = monitor.wait_with_output().unwrap();
        panic!(
            "doppel run {id} did not start: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        record_field(&text, "monitor_pid"),
        Some(monitor_pid),
        "{text}"
    );
    let sandbox_pid = record_field(&text, "sandbox_pid").unwrap();
    assert_eq!(
        ppid(sandbox_pid),
        monitor_pid,
        "the sandbox is not the monitor's child"
    );
    // The bus proxy is the monitor's child too, so it inherits the scope.
    if let Some(proxy) = record_field(&text, "proxy_pid") {
        assert_eq!(
            ppid(proxy),
            monitor_pid,
            "the proxy is not the monitor's child"
        );
    }

    {
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 1, "{calls:#?}");
        let call = &calls[0];
        eprintln!("scope: {}", call.name);
        assert!(
            call.name.starts_with("app-doppel-") && call.name.ends_with(".scope"),
            "{}",
            call.name
        );
        assert!(
            call.name.contains("portal\\x2dwork"),
            "the '-' is not escaped: {}",
            call.name
        );
        assert_eq!(
            portal_app_id(&call.name).as_deref(),
            Some("org.doppel.Doppel.portal-work"),
            "{}",
            call.name
        );
        assert_eq!(call.mode, "fail");
        let pids: Vec<u32> = call
            .properties
            .get("PIDs")
            .expect("no PIDs")
            .try_clone()
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(pids, vec![monitor_pid as u32], "PIDs is not the monitor");
        assert_eq!(
            call.caller_pid, monitor_pid as u32,
            "the call came from elsewhere"
        );
        let description = string_property(call, "Description");
        assert!(
            description.ends_with("(Work) — Doppel"),
            "Description: {description}"
        );
        assert_eq!(string_property(call, "CollectMode"), "inactive-or-failed");
    }

    ok(&env.doppel(&["stop", id]));
    let out = monitor.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(WARNING), "{stderr}");

    // `-- true`: a quick run succeeds, in a scope of a new name.
    let out = doppel(&env, &with_bus, &["run", id, "--", "true"]);
    let stderr = common::stderr(&out);
    assert!(out.status.success(), "doppel run {id} -- true: {stderr}");
    assert!(!stderr.contains(WARNING), "{stderr}");
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_ne!(calls[0].name, calls[1].name, "two launches, one unit name");
    assert_eq!(
        portal_app_id(&calls[1].name).as_deref(),
        Some("org.doppel.Doppel.portal-work")
    );
    assert!(desktop.is_file(), "{} is missing", desktop.display());
}

#[test]
fn a_launch_restores_a_missing_launcher() {
    if !can_run() {
        return;
    }
    let id = "portal-restore";
    let env = Env::new(User::get("doppel-e2e"), "scope-restore");
    profile(&env, id);
    let desktop = desktop_file(&env, id);
    fs::remove_file(&desktop).unwrap();
    let out = doppel(&env, &[], &["run", id, "--", "true"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        desktop.is_file(),
        "the portal needs {}, and the launch did not write it",
        desktop.display()
    );
}

#[test]
fn a_refused_scope_is_one_warning_and_the_clone_still_runs() {
    if !can_run() {
        return;
    }
    let id = "portal-refused";
    let env = Env::new(User::get("doppel-e2e"), "scope-refused");
    profile(&env, id);
    let bus = SessionBus::start_allowing_root(&env.user, "scope-refused");
    let (_manager, calls) = stand_in(&bus, Some("failed"));
    let out = doppel(
        &env,
        &[("DBUS_SESSION_BUS_ADDRESS", bus.address.clone())],
        &["run", id, "--", "true"],
    );
    let stderr = common::stderr(&out);
    assert!(out.status.success(), "doppel run {id} -- true: {stderr}");
    assert_eq!(calls.lock().unwrap().len(), 1);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains(WARNING)).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("\"failed\""), "{stderr}");
}

#[test]
fn a_user_manager_that_never_finishes_costs_a_timeout_not_the_launch() {
    if !can_run() {
        return;
    }
    let id = "portal-hang";
    let env = Env::new(User::get("doppel-e2e"), "scope-hang");
    profile(&env, id);
    let bus = SessionBus::start_allowing_root(&env.user, "scope-hang");
    let (_manager, calls) = stand_in(&bus, None);
    let started = Instant::now();
    let out = doppel(
        &env,
        &[("DBUS_SESSION_BUS_ADDRESS", bus.address.clone())],
        &["run", id, "--", "true"],
    );
    let took = started.elapsed();
    let stderr = common::stderr(&out);
    assert!(out.status.success(), "doppel run {id} -- true: {stderr}");
    assert_eq!(calls.lock().unwrap().len(), 1);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains(WARNING)).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("did not finish"), "{stderr}");
    assert!(
        took < Duration::from_secs(15),
        "the launch waited {took:?} for the user manager"
    );
}

#[test]
fn without_a_user_manager_the_clone_runs_and_doctor_says_so() {
    if !can_run() {
        return;
    }
    let id = "portal-none";
    let env = Env::new(User::get("doppel-e2e"), "scope-none");
    profile(&env, id);
    let default_bus = env.user.runtime.join("bus");
    assert!(
        !default_bus.exists(),
        "{} exists, so this would not be a run without a session bus",
        default_bus.display()
    );
    // A session bus without the user manager, then no session bus at all.
    let bus = SessionBus::start(&env.user, "scope-none");
    for extra in [
        vec![("DBUS_SESSION_BUS_ADDRESS", bus.address.clone())],
        vec![],
    ] {
        let out = doppel(&env, &extra, &["run", id, "--", "true"]);
        let stderr = common::stderr(&out);
        assert!(
            out.status.success(),
            "doppel run {id} -- true {extra:?}: {stderr}"
        );
        assert!(
            !stderr.contains(WARNING),
            "a missing user manager is no warning at launch: {stderr}"
        );

        let out = doppel(&env, &extra, &["doctor"]);
        let report = String::from_utf8_lossy(&out.stdout);
        let line = report
            .lines()
            .find(|l| l.contains("systemd user manager"))
            .unwrap_or_else(|| panic!("doctor does not check the user manager:\n{report}"));
        assert!(line.starts_with("WARN"), "{line}");
        assert!(line.contains("not available"), "{line}");
        assert!(line.contains("portals"), "{line}");
        eprintln!("{line}");
    }
}
