//! doppel-helper: Doppel's privileged system-bus service (encrypted volumes, the copy-on-write
//! home). Not built yet: plain profiles need no helper.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "doppel-helper: this version of Doppel has no privileged helper yet; plain profiles \
         (doppel create <id> --app <app>) work without it"
    );
    ExitCode::FAILURE
}
