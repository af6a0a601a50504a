//! The baseline for the GUI benchmark (benches/gui.sh): a minimal libadwaita window, built the
//! same way as doppel-gui (same crate, same release profile, same toolkit versions), that
//! doppel-gui's start-up time and idle memory are compared against.
//!
//! An `adw::Application` with one `adw::ApplicationWindow` of doppel-gui's default size: a
//! header bar and an empty status page, nothing else. Its title ("Doppel Baseline") and
//! application id differ from doppel-gui's, so the benchmark can tell the windows apart and
//! both can run on one session bus.
//!
//! Run it with `cargo run --release -p doppel-gui --example baseline`.

use std::process::ExitCode;

use adw::prelude::*;

/// Distinct from doppel-gui's `org.doppel.Doppel`.
const APP_ID: &str = "org.doppel.Baseline";

/// Distinct from doppel-gui's "Doppel"; the benchmark waits for a window with this name.
const TITLE: &str = "Doppel Baseline";

fn main() -> ExitCode {
    let app = adw::Application::builder().application_id(APP_ID).build();
    app.connect_activate(|app| {
        let (width, height) = doppel_gui::window::DEFAULT_SIZE;
        let header = adw::HeaderBar::new();
        header.set_title_widget(Some(&adw::WindowTitle::new(TITLE, "")));
        let empty = adw::StatusPage::builder()
            .icon_name("system-users-symbolic")
            .title("Nothing here")
            .vexpand(true)
            .build();
        let content = gtk::Box::new(gtk::Orientation::Vertical, 0);
        content.append(&header);
        content.append(&empty);
        let window = adw::ApplicationWindow::builder()
            .application(app)
            .title(TITLE)
            .default_width(width)
            .default_height(height)
            .content(&content)
            .build();
        window.present();
    });
    // Like doppel-gui: GTK parses its own options; the window takes none.
    let code = app.run_with_args::<&str>(&[]);
    ExitCode::from(u8::try_from(code.value()).unwrap_or(1))
}
