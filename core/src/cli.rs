//! The command line of `doppel`, as data: the binary parses it, and `doppel-gen` writes the man
//! pages and shell completions from it, so the three cannot drift apart.
//!
//! Doc comments here are the help text people read (`doppel <command> --help`, the man pages):
//! change them as user-facing text.

use clap::{Parser, Subcommand};

use crate::profile::NetworkMode;

/// Run a second account of a desktop app, side by side with the first, each in its own sandbox.
#[derive(Parser)]
#[command(name = "doppel", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands of `doppel`; each variant's doc comment is that subcommand's help.
#[derive(Subcommand)]
pub enum Cmd {
    /// List installed apps and which have a recipe.
    Apps {
        /// Include entries hidden from menus.
        #[arg(long)]
        all: bool,
    },
    /// Create a profile: a new, separate account of an app.
    Create {
        /// The profile's id: lower-case letters, digits and '-' (e.g. "work").
        id: String,
        /// A recipe id, a desktop-entry id (org.telegram.desktop) or a command name.
        #[arg(long)]
        app: String,
        /// Display name ("Work"); defaults to the id.
        #[arg(long)]
        name: Option<String>,
        /// Badge colour, #rrggbb.
        #[arg(long)]
        color: Option<String>,
        /// private: its own empty home; overlay: copy-on-write over your home (needs the helper).
        #[arg(long, value_enum, default_value = "private")]
        home: HomeArg,
        /// isolated (default, through pasta), host, or none.
        #[arg(long)]
        network: Option<NetworkMode>,
        /// Keep the profile's data on an encrypted volume (asks for a passphrase twice).
        #[arg(long)]
        encrypt: bool,
        /// Size of the encrypted volume (e.g. 8G); it is sparse, so it takes only what is used.
        #[arg(long, default_value = "8G", requires = "encrypt")]
        size: String,
        /// Do not lock the volume when the app exits.
        #[arg(long, requires = "encrypt")]
        no_auto_lock: bool,
        /// Read the passphrase from this file descriptor (one line) instead of asking.
        #[arg(long, value_name = "N")]
        passphrase_fd: Option<i32>,
    },
    /// List profiles and whether they run.
    List,
    /// Run a profile's app (or, after `--`, another command) in its sandbox.
    Run {
        id: String,
        /// Network for this run only: isolated, host or none.
        #[arg(long)]
        network: Option<NetworkMode>,
        /// URLs or files to hand to the app.
        urls: Vec<String>,
        /// A command to run in the profile's sandbox instead of the app.
        #[arg(last = true)]
        command: Vec<String>,
        /// Read the passphrase of a locked profile from this file descriptor.
        #[arg(long, value_name = "N")]
        passphrase_fd: Option<i32>,
        /// Run the command after `--` inside the profile's running instance (its namespaces,
        /// home, environment and restrictions), detached, and print its pid.
        #[arg(long, requires = "command", conflicts_with_all = ["network", "urls", "passphrase_fd"])]
        join: bool,
    },
    /// Lock an encrypted profile: its data becomes unreadable until unlocked.
    Lock {
        id: String,
        /// Stop the profile first if it is running.
        #[arg(long)]
        stop: bool,
    },
    /// Unlock an encrypted profile without running anything.
    Unlock {
        id: String,
        /// Read the passphrase (or recovery key) from this file descriptor.
        #[arg(long, value_name = "N")]
        passphrase_fd: Option<i32>,
    },
    /// Change an encrypted profile's passphrase (the data is not re-encrypted).
    Passwd {
        id: String,
        /// Read the old passphrase (or recovery key) and the new one, one per line, from this
        /// file descriptor.
        #[arg(long, value_name = "N")]
        passphrase_fd: Option<i32>,
    },
    /// Change a profile's display name or badge colour (its launcher follows).
    Set {
        id: String,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        /// New badge colour, #rrggbb.
        #[arg(long)]
        color: Option<String>,
    },
    /// Open a link (tg://, slack://…): in the clone that is signing in and waiting for it, in
    /// the one you pick when several are, else in your own copy of the app. Doppel registers
    /// this as the handler of its profiles' link schemes.
    Open { url: String },
    /// List what a clone with a copy-on-write home changed relative to your real home.
    Diff { id: String },
    /// Copy a file a clone made or changed out to your real home.
    Recover {
        id: String,
        /// The file, relative to the home (e.g. Documents/notes.txt).
        path: std::path::PathBuf,
        /// Where to put it (default: the same place in your real home).
        #[arg(long)]
        to: Option<std::path::PathBuf>,
    },
    /// Stop a running profile: SIGTERM, then SIGKILL after a timeout.
    Stop {
        id: String,
        /// Seconds to wait before killing what is left.
        #[arg(long, default_value_t = 15)]
        timeout: u64,
    },
    /// Delete a profile and all its data.
    Delete {
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Check that this system can run Doppel, and say how to fix what is missing.
    Doctor,
}

/// Where a new profile's home comes from (`doppel create --home`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HomeArg {
    Private,
    Overlay,
}
