//! doppel-bus-proxy: the filtering, renaming session-bus proxy of one running clone (see
//! `doppel_core::busproxy`). The monitor starts it; its arguments follow xdg-dbus-proxy's:
//!
//! ```text
//! doppel-bus-proxy ADDRESS SOCKET [--fd=FD] [--log] [--suffix=S] [--label=L]
//!                  [--desktop-entry=D] [--see=N] [--talk=N] [--own=N] [--call=N=R] [--broadcast=N=R]
//! ```
//!
//! With `--fd`, it writes one byte to FD once it accepts connections and exits when FD's reader
//! closes it (when the monitor goes).

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::process::ExitCode;

use doppel_core::busproxy::owners::Owners;
use doppel_core::busproxy::policy::Policy;
use doppel_core::busproxy::relay::{self, Config};

const USAGE: &str = "usage: doppel-bus-proxy ADDRESS SOCKET [--fd=FD] [--log] [--suffix=S] \
                     [--label=L] [--desktop-entry=D] [--see|--talk|--own=NAME] \
                     [--call|--broadcast=NAME=RULE]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("doppel-bus-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut positional = Vec::new();
    let mut rules = Vec::new();
    let mut fd: Option<i32> = None;
    let mut cfg = Config {
        policy: Policy::default(),
        suffix: "Doppel".into(),
        label: None,
        desktop_entry: None,
        log: false,
        record_dir: None,
    };
    for a in std::env::args().skip(1) {
        if let Some(v) = a.strip_prefix("--fd=") {
            fd = Some(
                v.parse()
                    .map_err(|_| format!("--fd wants a number, not {v:?}"))?,
            );
        } else if let Some(v) = a.strip_prefix("--suffix=") {
            cfg.suffix = v.to_owned();
        } else if let Some(v) = a.strip_prefix("--label=") {
            cfg.label = Some(v.to_owned());
        } else if let Some(v) = a.strip_prefix("--desktop-entry=") {
            cfg.desktop_entry = Some(v.to_owned());
        } else if a == "--log" {
            cfg.log = true;
        } else if a == "--filter" {
            // Always on; accepted for xdg-dbus-proxy compatibility.
        } else if a.starts_with("--") {
            rules.push(a);
        } else {
            positional.push(a);
        }
    }
    let [address, socket] = positional.as_slice() else {
        return Err(USAGE.into());
    };
    cfg.policy = Policy::from_args(&rules).map_err(|e| e.to_string())?;
    // The socket sits in the instance's directory, where the link router looks.
    cfg.record_dir = std::path::Path::new(socket)
        .parent()
        .map(std::path::Path::to_path_buf);
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(|e| {
        format!("cannot listen on {socket}: {e}; check that its directory exists and is yours")
    })?;
    let owners = Owners::follow(address, &cfg.policy).map_err(|e| {
        format!(
            "cannot connect to the session bus at {address}: {e}; check that your desktop \
                 session's bus runs (DBUS_SESSION_BUS_ADDRESS)"
        )
    })?;
    // SAFETY: the monitor passes this descriptor for us alone, open across exec.
    let ready = fd.map(|f| unsafe { OwnedFd::from_raw_fd(f) });
    if let Some(r) = &ready {
        nix::unistd::write(r, b"x").map_err(|e| format!("cannot signal readiness: {e}"))?;
    }
    let stop: Option<BorrowedFd<'_>> = ready.as_ref().map(|r| std::os::fd::AsFd::as_fd(r));
    relay::serve(listener, address, &cfg, &owners, stop).map_err(|e| {
        format!(
            "stopped serving {socket}: {e}; the clone has lost its session bus: restart it \
             (doppel stop, then doppel run), and if this repeats, run it with --log and report \
             the output"
        )
    })
}
