//! Doppel's GTK4/libadwaita window and tray, as a library: `doppel-gui` runs it, and the
//! end-to-end tests drive the same window in-process.
//!
//! A thin front end over doppel-core: it shows what core reports and asks core (or the
//! `doppel` CLI, for launches) to act.

pub mod app;
mod dialogs;
pub mod model;
mod ops;
mod tray;
pub mod window;

pub use app::{application, APP_ID};
