//! doppel-gen: writes Doppel's man pages and shell completions from the programs' command-line
//! definitions, so that what they document cannot drift from what the programs accept.
//!
//! `doppel-gen OUTDIR` writes `OUTDIR/man/man1/` (doppel, one page per subcommand, doppel-gui),
//! `OUTDIR/man/man8/` (doppel-helper) and `OUTDIR/completions/` (bash, zsh, fish).

mod pages;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use clap_complete::Shell;

use doppel_core::cli::Cli;

/// Write Doppel's man pages and shell completions into a directory.
#[derive(Parser)]
#[command(name = "doppel-gen", version)]
struct Args {
    /// Where to write: man/man1/, man/man8/ and completions/ are made inside it.
    outdir: PathBuf,
}

/// A file-system step that failed, with the path it failed on.
#[derive(Debug)]
struct GenError {
    action: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl fmt::Display for GenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.action,
            self.path.display(),
            self.source
        )
    }
}

fn create_dir(path: &Path) -> Result<(), GenError> {
    std::fs::create_dir_all(path).map_err(|source| GenError {
        action: "create directory",
        path: path.to_owned(),
        source,
    })
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), GenError> {
    std::fs::write(path, contents).map_err(|source| GenError {
        action: "write",
        path: path.to_owned(),
        source,
    })?;
    println!("{}", path.display());
    Ok(())
}

fn generate(outdir: &Path) -> Result<(), GenError> {
    let man1 = outdir.join("man/man1");
    let man8 = outdir.join("man/man8");
    let completions = outdir.join("completions");
    for dir in [&man1, &man8, &completions] {
        create_dir(dir)?;
    }

    for page in pages::all() {
        let dir = if page.section == "8" { &man8 } else { &man1 };
        let path = dir.join(&page.file_name);
        let text = page.render().map_err(|source| GenError {
            action: "render the man page",
            path: path.clone(),
            source,
        })?;
        write_file(&path, &text)?;
    }

    for (shell, file) in [
        (Shell::Bash, "doppel.bash"),
        (Shell::Zsh, "_doppel"),
        (Shell::Fish, "doppel.fish"),
    ] {
        let mut cmd = Cli::command();
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd, "doppel", &mut text);
        write_file(&completions.join(file), &text)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match generate(&args.outdir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "doppel-gen: error: {e}\n\
                 doppel-gen: check that {} is a directory you can write to, with free space",
                args.outdir.display()
            );
            ExitCode::FAILURE
        }
    }
}
