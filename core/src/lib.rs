//! doppel-core: everything of Doppel that is neither UI nor privileged.
//!
//! The CLI (`doppel`) and the GUI are thin front ends over this crate. A launch goes
//! profile + recipe + host facts → [`plan::SandboxPlan`] (pure data) → [`sandbox`] (the only code
//! that touches the kernel) under a [`monitor`] that records the running [`instance`].

pub mod apps;
pub mod atomic;
pub mod busproxy;
pub mod cli;
pub mod create;
pub mod dirs;
pub mod doctor;
pub mod host;
pub mod id;
pub mod instance;
pub mod keys;
pub mod launcher;
pub mod links;
pub mod manage;
pub mod monitor;
pub mod opener;
pub mod plan;
pub mod profile;
pub mod recipe;
pub mod resolve;
pub mod sandbox;
pub mod scope;
pub mod seccomp;
pub mod storage;
pub mod xauth;
