//! doppel-gui: Doppel's GTK4/libadwaita window. A thin front end over doppel-core: it shows what
//! core reports and asks core (or the `doppel` CLI, for launches) to act.

mod app;
mod dialogs;
mod model;
mod ops;
mod window;

use std::process::ExitCode;

fn main() -> ExitCode {
    let dirs = match doppel_core::dirs::Dirs::from_env() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("doppel-gui: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = app::run(dirs);
    ExitCode::from(u8::try_from(code.value()).unwrap_or(1))
}
