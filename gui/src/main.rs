//! doppel-gui: the GTK4/libadwaita window and tray. Not built yet; the `doppel` CLI does
//! everything for now.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("doppel-gui: the window is not part of this version yet; use the `doppel` command (doppel --help)");
    ExitCode::FAILURE
}
