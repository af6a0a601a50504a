//! The service: the D-Bus interface, polkit, and the volume operations it guards.

pub mod config;
pub mod polkit;
pub mod service;
pub mod sys;
pub mod volume;
