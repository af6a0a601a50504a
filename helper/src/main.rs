//! doppel-helper: Doppel's privileged system-bus service. It creates, unlocks and locks a
//! user's encrypted volumes and mounts the copy-on-write home: the few things that need root.
//! D-Bus activated; exits after a minute without calls.

mod daemon;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use daemon::service::{Activity, Helper};
use doppel_helper::wire::{BUS_NAME, CONFIG_FILE, OBJECT_PATH};

const USAGE: &str = "usage: doppel-helper [--address <D-Bus address>] [--idle-timeout <seconds>]";

fn main() -> ExitCode {
    let mut address: Option<String> = None;
    let mut idle = 60u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--address" => address = args.next(),
            "--idle-timeout" => match args.next().and_then(|s| s.parse().ok()) {
                Some(n) => idle = n,
                None => {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("doppel-helper: unknown argument {a:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("doppel-helper: must run as root (it is started by D-Bus activation)");
        return ExitCode::FAILURE;
    }
    // Files the helper creates are exactly as it sets them.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let limits = match daemon::config::load(std::path::Path::new(CONFIG_FILE)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("doppel-helper: {e}");
            return ExitCode::FAILURE;
        }
    };
    let activity = Arc::new(Activity::new());
    let helper = Helper {
        limits,
        activity: activity.clone(),
    };
    let conn = zbus::block_on(async {
        let b = match &address {
            Some(a) => zbus::connection::Builder::address(a.as_str())?,
            None => zbus::connection::Builder::system()?,
        };
        b.name(BUS_NAME)?
            .serve_at(OBJECT_PATH, helper)?
            .build()
            .await
    });
    let _conn = match conn {
        Ok(c) => c,
        Err(e) => {
            eprintln!("doppel-helper: cannot serve {BUS_NAME}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Idle exit: state lives in the kernel and in files, so nothing is lost by going away.
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if activity.idle_secs() >= idle {
            return ExitCode::SUCCESS;
        }
    }
}
