//! Doppel's session-bus proxy: one per running clone, started by the monitor, listening on a
//! socket in the clone's runtime directory and connected to the host's session bus.
//!
//! It filters with Flatpak's rule language (see [`policy`]), deny by default, refuses
//! eavesdropping, renames what would collide on the host bus (see [`names`]), labels the
//! clone's notifications with the profile's name and launcher, and passes file descriptors.
//! zbus reads and writes the messages; this module only frames the stream and judges.

pub mod frame;
pub mod names;
pub mod owners;
pub mod policy;
pub mod relay;
