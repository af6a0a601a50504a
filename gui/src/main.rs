//! doppel-gui: Doppel's window (see the library for everything it does).

use std::process::ExitCode;

use adw::prelude::*;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--choose-profile") {
        let code = doppel_gui::chooser::run(&args[1..]);
        return ExitCode::from(u8::try_from(code.value()).unwrap_or(1));
    }
    let dirs = match doppel_core::dirs::Dirs::from_env() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("doppel-gui: {e}");
            return ExitCode::FAILURE;
        }
    };
    let app = doppel_gui::application(dirs);
    // GTK parses its own options; the window takes none.
    let code = app.run_with_args::<&str>(&[]);
    ExitCode::from(u8::try_from(code.value()).unwrap_or(1))
}
