//! A headless desktop session for tests that run real GUI apps: an Xvfb display with an X
//! authority cookie in the test user's `~/.Xauthority`, a private session bus run as that user,
//! and helpers to find windows and take screenshots.
//!
//! Declared by a test with `#[path = "common/display.rs"] mod display;` next to `mod common;`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, User};

/// SIGTERM, then SIGKILL if `child` has not exited after `grace`; always reaps it.
pub fn terminate(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// An Xvfb server started as root, its cookie in the user's `~/.Xauthority`.
pub struct Display {
    pub number: u32,
    /// `:N`.
    pub name: String,
    /// The user's `~/.Xauthority`, which holds this display's cookie.
    pub xauthority: PathBuf,
    xvfb: Child,
}

impl Display {
    /// Starts `Xvfb :N -screen 0 WxHx24` on the first free display number from 90 on. Its
    /// stderr goes to `<artifacts>/<tag>-xvfb.log`.
    pub fn start(user: &User, tag: &str, size: &str) -> Display {
        let xauthority = user.home.join(".Xauthority");
        let log = common::artifacts().join(format!("{tag}-xvfb.log"));
        for number in 90..200u32 {
            let socket = socket_path(number);
            if socket.exists() || Path::new(&format!("/tmp/.X{number}-lock")).exists() {
                continue;
            }
            let name = format!(":{number}");
            add_cookie(&xauthority, &name, user);
            let mut xvfb = Command::new("Xvfb")
                .args([&name, "-screen", "0", &format!("{size}x24"), "-auth"])
                .arg(&xauthority)
                .args(["-nolisten", "tcp"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .expect("cannot start Xvfb");
            let up = common::wait_until(Duration::from_secs(15), || {
                socket.exists() || xvfb.try_wait().ok().flatten().is_some()
            });
            if up && xvfb.try_wait().ok().flatten().is_none() {
                let d = Display {
                    number,
                    name,
                    xauthority,
                    xvfb,
                };
                // The socket appears just before the server accepts clients; ask it.
                let ready = common::wait_until(Duration::from_secs(10), || {
                    d.root_command("xdpyinfo")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                });
                assert!(ready, "Xvfb {} does not answer", d.name);
                return d;
            }
            // Lost a race for this number (or Xvfb failed): try the next one.
            terminate(&mut xvfb, Duration::from_secs(2));
            remove_cookie(&xauthority, &name);
            eprintln!(
                "Xvfb {name} did not start (see {}); trying another display",
                log.display()
            );
        }
        panic!("no free X display number in 90..200");
    }

    /// The (DISPLAY, XAUTHORITY) pair to hand to the user's commands.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("DISPLAY", self.name.clone()),
            ("XAUTHORITY", self.xauthority.display().to_string()),
        ]
    }

    /// A command run as root (the caller) that talks to this display.
    pub fn root_command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DISPLAY", &self.name)
            .env("XAUTHORITY", &self.xauthority)
            .stdin(Stdio::null());
        c
    }

    /// Visible top-level windows whose WM_CLASS matches `class` (a regex), by id.
    pub fn windows(&self, class: &str) -> Vec<u64> {
        self.search("--class", class)
    }

    /// Visible top-level windows whose title matches `name` (a regex), by id.
    pub fn windows_named(&self, name: &str) -> Vec<u64> {
        self.search("--name", name)
    }

    fn search(&self, by: &str, pattern: &str) -> Vec<u64> {
        let out = self
            .root_command("xdotool")
            .args(["search", "--onlyvisible", by, pattern])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The pid of the process that made a window, as the host sees it: the X server's record
    /// of the client (X-Resource), else `_NET_WM_PID` if the client set it. A client in a PID
    /// namespace (a clone) sets `_NET_WM_PID` to its pid inside, which names another process
    /// on the host.
    pub fn window_pid(&self, id: u64) -> Option<u32> {
        self.window_client_pid(id).or_else(|| self.net_wm_pid(id))
    }

    /// The pid of the X client that owns window `id`, from the X-Resource extension's client
    /// ids (the server takes it from the connection's credentials).
    pub fn window_client_pid(&self, id: u64) -> Option<u32> {
        use std::io::Write;
        let list = self
            .root_command("xauth")
            .arg("-f")
            .arg(&self.xauthority)
            .args(["list", &self.name])
            .output()
            .ok()?;
        let hex = String::from_utf8_lossy(&list.stdout)
            .lines()
            .next()?
            .split_whitespace()
            .nth(2)?
            .to_owned();
        let cookie = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let mut s = std::os::unix::net::UnixStream::connect(socket_path(self.number)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(4) * 4, 0);
        // Connection setup, little-endian, protocol 11.0, with the cookie.
        let auth = b"MIT-MAGIC-COOKIE-1";
        let mut req = vec![b'l', 0, 11, 0, 0, 0];
        req.extend((auth.len() as u16).to_le_bytes());
        req.extend((cookie.len() as u16).to_le_bytes());
        req.extend([0, 0]);
        req.extend(auth);
        pad(&mut req);
        req.extend(&cookie);
        pad(&mut req);
        s.write_all(&req).ok()?;
        let mut head = [0u8; 8];
        s.read_exact(&mut head).ok()?;
        let mut rest = vec![0u8; usize::from(u16::from_le_bytes([head[6], head[7]])) * 4];
        s.read_exact(&mut rest).ok()?;
        if head[0] != 1 {
            return None;
        }
        // A reply to the last request: errors (0) end the query, events (2 and up) are skipped.
        let reply = |s: &mut std::os::unix::net::UnixStream| -> Option<Vec<u8>> {
            loop {
                let mut r = vec![0u8; 32];
                s.read_exact(&mut r).ok()?;
                match r[0] {
                    0 => return None,
                    1 => {
                        let extra = u32::from_le_bytes(r[4..8].try_into().ok()?) as usize * 4;
                        let mut more = vec![0u8; extra];
                        s.read_exact(&mut more).ok()?;
                        r.extend(more);
                        return Some(r);
                    }
                    _ => continue,
                }
            }
        };
        // QueryExtension("X-Resource").
        let ext = b"X-Resource";
        let mut q = vec![98, 0];
        q.extend((((8 + ext.len()).div_ceil(4)) as u16).to_le_bytes());
        q.extend((ext.len() as u16).to_le_bytes());
        q.extend([0, 0]);
        q.extend(ext);
        pad(&mut q);
        s.write_all(&q).ok()?;
        let r = reply(&mut s)?;
        if r[8] == 0 {
            return None;
        }
        // XResQueryClientIds: the client owning the window, its pid (mask 2).
        let mut q = vec![r[9], 4];
        q.extend(4u16.to_le_bytes());
        q.extend(1u32.to_le_bytes());
        q.extend((id as u32).to_le_bytes());
        q.extend(2u32.to_le_bytes());
        s.write_all(&q).ok()?;
        let r = reply(&mut s)?;
        let word = |at: usize| Some(u32::from_le_bytes(r.get(at..at + 4)?.try_into().ok()?));
        let mut at = 32;
        for _ in 0..word(8)? {
            let (mask, len) = (word(at + 4)?, word(at + 8)? as usize);
            if mask & 2 != 0 && len >= 4 {
                return word(at + 12);
            }
            at += 12 + len;
        }
        None
    }

    /// `_NET_WM_PID` of a window, if the client set it: its pid in its own PID namespace.
    pub fn net_wm_pid(&self, id: u64) -> Option<u32> {
        let out = self
            .root_command("xdotool")
            .args(["getwindowpid", &id.to_string()])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    /// Moves and resizes a top-level window (there is no window manager to do it).
    pub fn place(&self, id: u64, x: i32, y: i32, width: u32, height: u32) {
        let w = id.to_string();
        for args in [
            [
                "windowmove".to_owned(),
                w.clone(),
                x.to_string(),
                y.to_string(),
            ],
            [
                "windowsize".to_owned(),
                w,
                width.to_string(),
                height.to_string(),
            ],
        ] {
            let _ = self
                .root_command("xdotool")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// `xwininfo -id W` (for logs).
    pub fn window_info(&self, id: u64) -> String {
        let out = self
            .root_command("xwininfo")
            .args(["-id", &id.to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Saves a screenshot of the whole screen; returns its size in bytes.
    pub fn screenshot(&self, path: &Path) -> u64 {
        let out: Output = self
            .root_command("import")
            .args(["-window", "root"])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "import -window root {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        terminate(&mut self.xvfb, Duration::from_secs(5));
        remove_cookie(&self.xauthority, &self.name);
        let _ = fs::remove_file(socket_path(self.number));
        let _ = fs::remove_file(format!("/tmp/.X{}-lock", self.number));
    }
}

fn socket_path(number: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/.X11-unix/X{number}"))
}

fn add_cookie(file: &Path, display: &str, user: &User) {
    let mut raw = [0u8; 16];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut raw)
        .unwrap();
    let cookie: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let st = Command::new("xauth")
        .arg("-f")
        .arg(file)
        .args(["add", display, ".", &cookie])
        .stdout(Stdio::null())
        .status()
        .expect("cannot run xauth");
    assert!(st.success(), "xauth add {display} failed");
    common::chown(file, user.uid, user.gid);
    fs::set_permissions(file, fs::Permissions::from_mode(0o600)).unwrap();
}

fn remove_cookie(file: &Path, display: &str) {
    let _ = Command::new("xauth")
        .arg("-f")
        .arg(file)
        .args(["remove", display])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The session bus's configuration plus one rule: root may connect.
const ROOT_TOO_CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <include>/usr/share/dbus-1/session.conf</include>
  <policy context="default"><allow user="root"/></policy>
</busconfig>
"#;

/// A private session bus (`dbus-daemon --session`) run as the user, on a socket of its own in
/// the user's runtime dir.
pub struct SessionBus {
    /// The address it printed (`unix:path=…,guid=…`).
    pub address: String,
    pub socket: PathBuf,
    daemon: Child,
}

impl SessionBus {
    /// Its stderr goes to `<artifacts>/<tag>-dbus.log`.
    pub fn start(user: &User, tag: &str) -> SessionBus {
        Self::start_with(user, tag, "--session".to_owned())
    }

    /// As [`SessionBus::start`], but root (the test) may connect too, to play a desktop
    /// service such as a tray host; a session bus lets in only its own user by default.
    pub fn start_allowing_root(user: &User, tag: &str) -> SessionBus {
        let config = Self::socket_path(user, tag).with_extension("conf");
        fs::write(&config, ROOT_TOO_CONFIG).unwrap();
        common::chown(&config, user.uid, user.gid);
        Self::start_with(user, tag, format!("--config-file={}", config.display()))
    }

    fn socket_path(user: &User, tag: &str) -> PathBuf {
        user.runtime
            .join(format!("bus-{tag}-{}", std::process::id()))
    }

    fn start_with(user: &User, tag: &str, config: String) -> SessionBus {
        let socket = Self::socket_path(user, tag);
        let _ = fs::remove_file(&socket);
        let mut daemon = user
            .command(
                &[],
                &[
                    "dbus-daemon",
                    &config,
                    &format!("--address=unix:path={}", socket.display()),
                    "--nofork",
                    "--print-address",
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(common::artifacts().join(format!("{tag}-dbus.log"))).unwrap())
            .spawn()
            .expect("cannot start dbus-daemon");
        let mut line = String::new();
        BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_owned();
        if address.is_empty() {
            let st = daemon.wait().unwrap();
            panic!("dbus-daemon printed no address (exit {st})");
        }
        assert!(
            socket.exists(),
            "dbus-daemon did not create {}",
            socket.display()
        );
        SessionBus {
            address,
            socket,
            daemon,
        }
    }

    pub fn pid(&self) -> u32 {
        self.daemon.id()
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        terminate(&mut self.daemon, Duration::from_secs(5));
        let _ = fs::remove_file(&self.socket);
        let _ = fs::remove_file(self.socket.with_extension("conf"));
    }
}
