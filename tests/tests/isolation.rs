//! Isolation probes: each runs `doppel run <id> -- sh -c …` as an unprivileged user and checks
//! what the sandbox can and cannot see, next to a control run outside that shows the probe
//! would notice if the sandbox let it through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::{ok, stderr, wait_until, Env, User};

fn setup(tag: &str, profiles: &[&str]) -> Option<Env> {
    if !common::require(
        common::is_root(),
        "isolation tests need root to create a test user",
    ) {
        return None;
    }
    let env = Env::new(User::get("doppel-e2e"), tag);
    for p in profiles {
        ok(&env.doppel(&["create", p, "--app", "sh"]));
    }
    Some(env)
}

#[test]
fn host_home_is_invisible_and_profiles_are_apart() {
    let Some(env) = setup("home", &["home-a", "home-b"]) else {
        return;
    };
    let planted = env.user.write_file("planted-secret", "host data");
    // Control: the user sees it outside.
    assert!(ok(&env
        .user
        .command(&[], &["cat", planted.to_str().unwrap()])
        .output()
        .unwrap())
    .contains("host data"));

    let inside = env.sh(
        "home-a",
        &[],
        "test -e \"$HOME/planted-secret\" && echo VISIBLE || echo hidden; echo $HOME",
    );
    assert!(inside.contains("hidden"), "{inside}");
    assert!(
        inside.contains(&env.user.home.display().to_string()),
        "HOME keeps its path: {inside}"
    );

    env.sh("home-a", &[], "echo from-a > \"$HOME/a-file\"");
    let b = env.sh(
        "home-b",
        &[],
        "cat \"$HOME/a-file\" 2>/dev/null || echo absent",
    );
    assert!(b.contains("absent"), "profile b sees a's file: {b}");
    assert!(
        !env.user.home.join("a-file").exists(),
        "a's file leaked into the host home"
    );
    assert_eq!(
        fs::read_to_string(env.profile_data("home-a").join("home/a-file")).unwrap(),
        "from-a\n"
    );
    // Persistent across runs of the same profile.
    assert!(env
        .sh("home-a", &[], "cat \"$HOME/a-file\"")
        .contains("from-a"));
}

#[test]
fn tmp_shm_and_runtime_dir_are_private() {
    let Some(env) = setup("tmp", &["tmp"]) else {
        return;
    };
    let run = env.user.runtime.clone();
    let tag = format!("marker-{}", std::process::id());
    for dir in ["/tmp", "/dev/shm", run.to_str().unwrap(), "/var/tmp"] {
        let p = std::path::Path::new(dir).join(format!("host-{tag}"));
        fs::write(&p, "x").unwrap();
        common::chown(&p, env.user.uid, env.user.gid);
    }
    let script = format!(
        "for d in /tmp /dev/shm \"$XDG_RUNTIME_DIR\" /var/tmp; do \
           test -e \"$d/host-{tag}\" && echo \"SEEN $d\"; \
           echo x > \"$d/inside-{tag}\" || echo \"CANNOT WRITE $d\"; done; \
         stat -c '%a %U' \"$XDG_RUNTIME_DIR\"; echo done"
    );
    let out = env.sh("tmp", &["--network", "none"], &script);
    assert!(!out.contains("SEEN"), "{out}");
    assert!(!out.contains("CANNOT WRITE"), "{out}");
    assert!(
        out.contains(&format!("700 {}", env.user.name)),
        "runtime dir mode/owner: {out}"
    );
    for dir in ["/tmp", "/dev/shm", run.to_str().unwrap(), "/var/tmp"] {
        let d = std::path::Path::new(dir);
        assert!(
            !d.join(format!("inside-{tag}")).exists(),
            "{dir} is shared with the host"
        );
        let _ = fs::remove_file(d.join(format!("host-{tag}")));
    }
}

#[test]
fn abstract_sockets_of_the_host_are_unreachable_unless_network_is_host() {
    use std::os::linux::net::SocketAddrExt;
    let Some(env) = setup("abstract", &["abs"]) else {
        return;
    };
    if !common::require(
        common::have("python3"),
        "python3 is needed inside the sandbox for this probe",
    ) {
        return;
    }
    let name = format!("doppel-e2e-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let probe = format!(
        "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); \
         s.connect(b'\\0{name}'); print('CONNECTED')\" 2>&1 || true"
    );
    for net in ["isolated", "none"] {
        let out = env.sh("abs", &["--network", net], &probe);
        assert!(!out.contains("CONNECTED"), "--network {net}: {out}");
        assert!(
            out.contains("ConnectionRefused") || out.contains("refused"),
            "{out}"
        );
    }
    // Control: with the host's network namespace the same probe connects.
    let out = env.sh("abs", &["--network", "host"], &probe);
    assert!(out.contains("CONNECTED"), "control run failed: {out}");
    drop(listener);
}

#[test]
fn network_modes_give_the_expected_interfaces() {
    let Some(env) = setup("net", &["net"]) else {
        return;
    };
    let ifaces = |net: &str| {
        env.sh("net", &["--network", net], "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '; echo; awk 'NR>1 && $2==\"00000000\" {print \"DEFAULT-ROUTE\"}' /proc/net/route")
    };
    let none = ifaces("none");
    assert_eq!(none.lines().next().unwrap().trim(), "lo", "{none}");
    assert!(!none.contains("DEFAULT-ROUTE"));
    let isolated = ifaces("isolated");
    assert!(
        isolated
            .lines()
            .next()
            .unwrap()
            .split(' ')
            .filter(|s| !s.is_empty())
            .count()
            >= 2,
        "pasta's interface is missing: {isolated}"
    );
    assert!(
        isolated.contains("DEFAULT-ROUTE"),
        "pasta gave no default route: {isolated}"
    );
    // loopback works inside: a server and a client on 127.0.0.1 in the sandbox's own namespace.
    if common::have("python3") {
        let out = env.sh(
            "net",
            &["--network", "none"],
            "python3 -c \"import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); c=socket.create_connection(s.getsockname()); print('LOOPBACK-OK')\"",
        );
        assert!(out.contains("LOOPBACK-OK"), "{out}");
    }
}

#[test]
fn no_privileges_inside() {
    let Some(env) = setup("privs", &["privs"]) else {
        return;
    };
    let out = env.sh(
        "privs",
        &["--network", "none"],
        "grep -E '^(NoNewPrivs|CapEff|CapPrm|CapBnd|CapAmb|Seccomp):' /proc/self/status; id -u",
    );
    for want in [
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapAmb:\t0000000000000000",
        "Seccomp:\t2",
    ] {
        assert!(out.contains(want), "missing {want:?} in {out}");
    }
    assert!(
        out.contains(&env.user.uid.to_string()),
        "uid is not mapped to itself: {out}"
    );

    // A setuid-root copy of id(1): outside it gains euid 0, inside it must not.
    let dir = std::path::Path::new("/usr/local/lib/doppel-e2e");
    fs::create_dir_all(dir).unwrap();
    let suid = dir.join("id-suid");
    fs::copy("/usr/bin/id", &suid).unwrap();
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    let outside = ok(&env
        .user
        .command(&[], &[suid.to_str().unwrap(), "-u"])
        .output()
        .unwrap());
    assert_eq!(
        outside.trim(),
        "0",
        "control: the setuid copy should give euid 0 outside"
    );
    let inside = env.sh(
        "privs",
        &["--network", "none"],
        &format!("{} -u", suid.display()),
    );
    assert_eq!(
        inside.trim(),
        env.user.uid.to_string(),
        "setuid gained privileges inside"
    );

    // The seccomp filter refuses keyctl and TIOCSTI but allows nested user namespaces.
    if common::have("unshare") {
        let nested = env.sh("privs", &["--network", "none"], "unshare -U -r id -u");
        assert_eq!(
            nested.trim(),
            "0",
            "nested user namespaces must work (Chromium, WebKitGTK)"
        );
    }
}

#[test]
fn writes_outside_the_allowed_paths_fail() {
    let Some(env) = setup("writes", &["writes"]) else {
        return;
    };
    // A directory the user owns outside the home: writable outside, read-only inside.
    let owned = std::path::PathBuf::from(format!("/srv/doppel-e2e-{}", env.user.name));
    fs::create_dir_all(&owned).unwrap();
    common::chown(&owned, env.user.uid, env.user.gid);
    let target = owned.join("probe");
    let _ = fs::remove_file(&target);
    ok(&env
        .user
        .command(&[], &["touch", target.to_str().unwrap()])
        .output()
        .unwrap());
    fs::remove_file(&target).unwrap();
    let out = env.sh(
        "writes",
        &["--network", "none"],
        &format!("touch {} 2>&1; echo rc=$?", target.display()),
    );
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!target.exists());
    // The Downloads folder, when the host has one, is shared read-write.
    let dl = env.user.home.join("Downloads");
    fs::create_dir_all(&dl).unwrap();
    common::chown(&dl, env.user.uid, env.user.gid);
    let name = format!("from-sandbox-{}", std::process::id());
    env.sh(
        "writes",
        &["--network", "none"],
        &format!("echo saved > \"$HOME/Downloads/{name}\""),
    );
    assert_eq!(fs::read_to_string(dl.join(&name)).unwrap(), "saved\n");
    fs::remove_file(dl.join(&name)).unwrap();
}

#[test]
fn run_stop_and_already_running() {
    let Some(env) = setup("life", &["life"]) else {
        return;
    };
    let marker = env.profile_data("life").join("home/term-received");
    let child = env.spawn_doppel(&[
        "run",
        "life",
        "--network",
        "none",
        "--",
        "sh",
        "-c",
        "trap 'echo TERM > \"$HOME/term-received\"; exit 3' TERM; touch \"$HOME/ready\"; sleep 300 & wait",
    ]);
    let ready = env.profile_data("life").join("home/ready");
    assert!(
        wait_until(Duration::from_secs(10), || ready.exists()),
        "the sandboxed shell never started"
    );
    assert!(
        wait_until(Duration::from_secs(10), || ok(&env.doppel(&["list"]))
            .contains("life: running")),
        "{}",
        ok(&env.doppel(&["list"]))
    );
    let list = ok(&env.doppel(&["list"]));
    assert!(list.contains("home: private, network: none"), "{list}");

    let second = env.doppel(&["run", "life", "--", "true"]);
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("already running"),
        "{}",
        stderr(&second)
    );

    let del = env.doppel(&["delete", "life", "--yes"]);
    assert!(!del.status.success());
    assert!(stderr(&del).contains("stop it first"), "{}", stderr(&del));

    let stop = env.doppel(&["stop", "life"]);
    assert!(ok(&stop).contains("stopped life"));
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "the app's exit status comes back: {}",
        stderr(&out)
    );
    assert_eq!(
        fs::read_to_string(&marker).unwrap(),
        "TERM\n",
        "SIGTERM was forwarded"
    );
    assert!(ok(&env.doppel(&["list"])).contains("life: stopped"));
    assert!(
        !env.user.runtime.join("doppel/life").exists(),
        "instance dir not cleaned"
    );
    // Nothing of the instance is left: no sleep, no pasta.
    let left = Command::new("pgrep")
        .args(["-u", &env.user.name, "-f", "sleep 300"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left behind: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[test]
fn leftover_background_processes_are_waited_for_and_stopped() {
    let Some(env) = setup("bg", &["bg"]) else {
        return;
    };
    // The app's main process exits at once, leaving a detached child: the instance lives on.
    let mut child = env.spawn_doppel(&[
        "run",
        "bg",
        "--",
        "sh",
        "-c",
        "setsid sleep 400 >/dev/null 2>&1 & exit 0",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "monitor left while a sandbox process lives"
    );
    assert!(ok(&env.doppel(&["list"])).contains("bg: running"));
    ok(&env.doppel(&["stop", "bg"]));
    assert!(wait_until(Duration::from_secs(15), || child
        .try_wait()
        .unwrap()
        .is_some()));
    let left = Command::new("pgrep")
        .args(["-u", &env.user.name, "-f", "sleep 400"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left behind: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[test]
fn exit_status_and_missing_commands() {
    let Some(env) = setup("exit", &["exit"]) else {
        return;
    };
    let out = env.doppel(&[
        "run",
        "exit",
        "--network",
        "none",
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    let out = env.doppel(&[
        "run",
        "exit",
        "--network",
        "none",
        "--",
        "no-such-program-xyz",
    ]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("cannot run \"no-such-program-xyz\"") && e.contains("not installed"),
        "{e}"
    );
    assert!(!env.user.runtime.join("doppel/exit").exists());
}

#[test]
fn a_killed_monitor_takes_its_helpers_and_app_with_it() {
    let Some(env) = setup("kill9", &["kill9"]) else {
        return;
    };
    let mut child = env.spawn_doppel(&["run", "kill9", "--", "sleep", "555"]);
    assert!(wait_until(Duration::from_secs(10), || {
        ok(&env.doppel(&["list"])).contains("kill9: running (pid")
    }));
    let pgrep = |pat: &str| {
        let out = Command::new("pgrep")
            .args(["-u", &env.user.name, "-f", pat])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert!(!pgrep("sleep 555").is_empty());
    assert!(
        !pgrep("pasta.*kill9").is_empty(),
        "pasta should run for an isolated profile"
    );
    // SIGKILL to `doppel run` itself (setpriv execs into it, so the child is the monitor).
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || pgrep("sleep 555").is_empty()
            && pgrep("pasta.*kill9").is_empty()),
        "left behind: app {:?}, pasta {:?}",
        pgrep("sleep 555"),
        pgrep("pasta.*kill9")
    );
    assert!(ok(&env.doppel(&["list"])).contains("kill9: stopped"));
    // The next run works (a stale instance directory does not get in the way).
    assert!(env
        .sh("kill9", &["--network", "none"], "echo again")
        .contains("again"));
}

/// A field of the instance record (`key = 123`).
fn record_field(text: &str, key: &str) -> Option<i32> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`.
fn ppid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

fn ns_of(pid: &str, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap()
        .display()
        .to_string()
}

/// Stops a profile's instance when dropped, so that a failed assertion leaves nothing running.
struct StopOnDrop<'a>(&'a Env, &'a str);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.doppel(&["stop", self.1]);
    }
}

/// Kills and reaps a host process when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A user recipe for `sh` that keeps the host's PID namespace (`pid_namespace = false`).
fn host_pids_recipe(env: &Env) {
    let dir = env.root.join("config/doppel/recipes");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("host-pids.toml"),
        "name = \"Host PIDs\"\ncommands = [\"sh\"]\nservices = []\npid_namespace = false\n",
    )
    .unwrap();
    Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", env.user.uid, env.user.gid))
        .arg(env.root.join("config"))
        .status()
        .unwrap();
}

#[test]
fn the_sandbox_sees_only_its_own_processes() {
    let Some(env) = setup("pidns", &["pidns"]) else {
        return;
    };
    host_pids_recipe(&env);
    ok(&env.doppel(&["create", "hostpids", "--app", "host-pids"]));
    let marker = format!("sleep 77{}", std::process::id() % 100 + 100);
    let _host = KillOnDrop(env.spawn_as_user(&["sh", "-c", &format!("exec {marker}")]));
    // Control: the user sees the marker among the host's processes.
    assert!(wait_until(Duration::from_secs(5), || ok(&env
        .user
        .command(&[], &["ps", "-eo", "args="])
        .output()
        .unwrap())
    .lines()
    .any(|l| l.trim() == marker)));
    let probe =
        "echo \"SELF $$\"; ps -eo pid=,args=; echo \"PROCS $(ls /proc | grep -c '^[0-9]')\"";

    let inside = env.sh("pidns", &["--network", "none"], probe);
    assert!(
        inside.contains("SELF 2\n"),
        "the app is not PID 2: {inside}"
    );
    assert!(
        !inside.lines().any(|l| l.contains(&marker)),
        "a host process is visible: {inside}"
    );
    let pids: Vec<u32> = inside
        .lines()
        .filter(|l| !l.starts_with("SELF") && !l.starts_with("PROCS"))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(pids, [1, 2, 3], "init, sh, ps and nothing else: {inside}");
    // ls, grep and the subshell running them are there too.
    let procs: u32 = inside
        .lines()
        .find_map(|l| l.strip_prefix("PROCS "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(procs <= 6, "/proc lists others: {inside}");

    // Control: a recipe that opts out sees the host's processes, the marker among them.
    let outside = env.sh("hostpids", &["--network", "none"], probe);
    assert!(
        outside.lines().any(|l| l.ends_with(&marker)),
        "without a PID namespace the marker should show: {outside}"
    );
    assert!(!outside.contains("SELF 2\n"), "{outside}");
}

#[test]
fn orphans_are_reaped_by_the_sandboxs_init() {
    let Some(env) = setup("reap", &["reap"]) else {
        return;
    };
    // Five orphans, adopted by PID 1 while they run; and, as a control that the probe sees a
    // zombie, a parent that never reaps its child (it execs `sleep` after forking it).
    let script = "sh -c 'sleep 0.3 & exec sleep 2' & \
                  for i in 1 2 3 4 5; do (sleep 0.6 &); done; \
                  sleep 0.2; echo \"ADOPTED $(ps -eo ppid=,args= | grep -c '^ *1 sleep 0.6$')\"; \
                  sleep 1.2; ps -eo stat=,ppid=,args= | sed 's/^/PS /'; wait";
    let out = env.sh("reap", &["--network", "none"], script);
    assert!(out.contains("ADOPTED 5\n"), "orphans go to PID 1: {out}");
    let zombies: Vec<&str> = out.lines().filter(|l| l.starts_with("PS Z")).collect();
    assert_eq!(
        zombies.len(),
        1,
        "only the control's zombie should be left: {out}"
    );
    assert!(
        zombies[0].split_whitespace().nth(2) != Some("1"),
        "the init left a zombie: {out}"
    );
}

#[test]
fn join_runs_a_command_inside_the_running_instance() {
    let Some(env) = setup("join", &["join"]) else {
        return;
    };
    let not_running = env.doppel(&["run", "join", "--join", "--", "true"]);
    assert!(!not_running.status.success());
    assert!(
        stderr(&not_running).contains("start it with `doppel run join`"),
        "{}",
        stderr(&not_running)
    );

    let mut child = env.spawn_doppel(&["run", "join", "--network", "none", "--", "sleep", "613"]);
    let _stop = StopOnDrop(&env, "join");
    let record = env.user.runtime.join("doppel/join.instance");
    let mut text = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            text = fs::read_to_string(&record).unwrap_or_default();
            record_field(&text, "sandbox_pid").is_some_and(|p| p > 0)
        }),
        "the instance did not start"
    );
    let sandbox = record_field(&text, "sandbox_pid").unwrap().to_string();

    let script = "f=\"$HOME/joined\"; readlink /proc/self/ns/mnt > \"$f.tmp\"; \
                  readlink /proc/self/ns/pid >> \"$f.tmp\"; \
                  tr '\\0' ' ' < /proc/1/cmdline >> \"$f.tmp\"; echo >> \"$f.tmp\"; \
                  echo \"$$ $PPID $(pwd) $DOPPEL_PROFILE\" >> \"$f.tmp\"; \
                  grep -E '^(NoNewPrivs|CapEff|Seccomp):' /proc/self/status >> \"$f.tmp\"; \
                  mv \"$f.tmp\" \"$f\"; exec sleep 617";
    let out = env.doppel(&["run", "join", "--join", "--", "sh", "-c", script]);
    let joined: i32 = ok(&out).trim().parse().unwrap();
    let file = env.profile_data("join").join("home/joined");
    assert!(
        wait_until(Duration::from_secs(10), || file.exists()),
        "the joined command did not write into the profile's home"
    );
    let got = fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = got.lines().collect();

    // The instance's mount and PID namespaces; the host's are others (control).
    assert_eq!(lines[0], ns_of(&sandbox, "mnt"), "{got}");
    assert_ne!(lines[0], ns_of("self", "mnt"));
    assert_eq!(lines[1], ns_of(&sandbox, "pid"), "{got}");
    assert_ne!(lines[1], ns_of("self", "pid"));
    // PID 1 inside is the instance's first process, not the host's init (control).
    let cmdline = |pid: &str| {
        fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap()
            .iter()
            .map(|&b| if b == 0 { ' ' } else { b as char })
            .collect::<String>()
    };
    assert_eq!(lines[2], cmdline(&sandbox), "{got}");
    assert_ne!(lines[2], cmdline("1"));
    // Adopted by the sandbox's init, in the home, with the app's environment.
    let fields: Vec<&str> = lines[3].split(' ').collect();
    assert!(fields[0].parse::<u32>().unwrap() < 10, "{got}");
    assert_eq!(fields[1], "1", "{got}");
    assert_eq!(fields[2], env.user.home.display().to_string(), "{got}");
    assert_eq!(fields[3], "join", "{got}");
    for want in ["NoNewPrivs:\t1", "CapEff:\t0000000000000000", "Seccomp:\t2"] {
        assert!(got.contains(want), "missing {want:?} in {got}");
    }
    // The pid it printed is the host's view of that process, a child of the sandbox's init.
    assert_eq!(ns_of(&joined.to_string(), "mnt"), ns_of(&sandbox, "mnt"));
    assert_eq!(ppid(joined), Some(sandbox.parse().unwrap()));

    // Stopping the instance ends the joined command too.
    assert!(ok(&env.doppel(&["stop", "join"])).contains("stopped join"));
    assert!(wait_until(Duration::from_secs(15), || child
        .try_wait()
        .unwrap()
        .is_some()));
    assert!(
        wait_until(Duration::from_secs(5), || ppid(joined).is_none()),
        "the joined command outlived its instance"
    );
}
