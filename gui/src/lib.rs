//! Doppel's GTK4/libadwaita window and tray, as a library: `doppel-gui` runs it, and the
//! end-to-end tests drive the same window in-process.
//!
//! A thin front end over doppel-core: it shows what core reports and asks core (or the
//! `doppel` CLI, for launches) to act.

pub mod app;
pub mod chooser;
mod dialogs;
pub mod model;
mod ops;
mod page;
mod templates;
mod tray;
pub mod window;

pub use app::APP_ID;
#[doc(hidden)]
pub use templates::build_each as build_each_dialog;

use gtk::gio;

/// Builds the application; `run` it to show the window.
pub fn application(dirs: doppel_core::dirs::Dirs) -> adw::Application {
    // The templates and styles compiled in by build.rs; the window cannot be built without them.
    if let Err(e) = gio::resources_register_include!("doppel.gresource") {
        eprintln!("doppel-gui: cannot load the window's resources ({e}); reinstall Doppel");
    }
    app::application(dirs)
}
