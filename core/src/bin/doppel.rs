//! `doppel`: the command-line front end. It parses arguments and calls doppel-core.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use doppel_core::apps;
use doppel_core::dirs::Dirs;
use doppel_core::id::ProfileId;
use doppel_core::instance;
use doppel_core::monitor;
use doppel_core::plan::LaunchOptions;
use doppel_core::profile::{self, HomeMode, NetworkMode, Profile};
use doppel_core::recipe::RecipeSet;
use doppel_core::resolve;

/// Run a second account of a desktop app, side by side with the first, each in its own sandbox.
#[derive(Parser)]
#[command(name = "doppel", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum HomeArg {
    Private,
    Overlay,
}

fn parse_id(s: &str) -> Result<ProfileId> {
    ProfileId::parse(s).map_err(|e| anyhow::anyhow!("invalid profile id: {e}"))
}

fn warn(msg: &str) {
    eprintln!("doppel: {msg}");
}

fn cmd_apps(dirs: &Dirs, all: bool) -> Result<()> {
    let set = RecipeSet::load(dirs);
    for e in &set.errors {
        warn(&format!("warning: recipe skipped: {e}"));
    }
    let found = apps::discover(dirs);
    let rows: Vec<_> = found
        .entries
        .iter()
        .filter(|e| (all || !e.no_display) && apps::is_installed(e))
        .map(|e| {
            let recipe = set
                .find_for(Some(&e.id), e.exec.first().map(String::as_str))
                .map(|r| r.id.clone());
            (e.id.clone(), e.name.clone(), recipe)
        })
        .collect();
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(10);
    let n = rows
        .iter()
        .map(|r| r.1.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    println!("{:w$}  {:n$}  RECIPE", "DESKTOP ID", "NAME");
    let mut sorted = rows;
    // Apps with a recipe first: those are the ones known to clone cleanly.
    sorted.sort_by_key(|r| (r.2.is_none(), r.1.to_lowercase()));
    for (id, name, recipe) in sorted {
        let r = recipe.unwrap_or_else(|| "generic (may need tweaks)".into());
        println!("{id:w$}  {name:n$}  {r}");
    }
    Ok(())
}

fn cmd_create(
    dirs: &Dirs,
    id: &str,
    app: &str,
    name: Option<String>,
    color: Option<String>,
    home: HomeArg,
    network: Option<NetworkMode>,
) -> Result<()> {
    let id = parse_id(id)?;
    let set = RecipeSet::load(dirs);
    // A recipe of that name that does not load is reported as such, not as "no app".
    if let Err(e @ doppel_core::recipe::RecipeError::Parse { .. }) = set.get(app) {
        return Err(e.into());
    }
    let resolved = resolve::resolve(dirs, &set, app)?;
    let recipe = set.get(&resolved.recipe)?;
    if resolved.generic {
        warn(&format!(
            "warning: no recipe for {}; using the generic one (the clone may need tweaks)",
            resolved.app_name
        ));
    }
    let home = match home {
        HomeArg::Private => HomeMode::Private,
        HomeArg::Overlay => bail!(
            "a copy-on-write home (--home overlay) needs Doppel's privileged helper, which is \
             not available yet; use --home private"
        ),
    };
    let p = Profile {
        name: name.unwrap_or_else(|| id.to_string()),
        id,
        recipe: resolved.recipe.clone(),
        desktop_id: resolved.desktop_id,
        app_name: resolved.app_name,
        command: resolved.command,
        color: color.unwrap_or_else(|| "#3584e4".into()),
        home,
        network: network.unwrap_or(recipe.network),
    };
    profile::create(dirs, &p)?;
    println!(
        "created {}: {} — start it with `doppel run {}`",
        p.id,
        p.label(),
        p.id
    );
    Ok(())
}

fn cmd_list(dirs: &Dirs) -> Result<()> {
    let all = profile::list(dirs)?;
    if all.is_empty() {
        println!("no profiles yet; create one with `doppel create <id> --app <app>`");
    }
    for p in all {
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                warn(&format!("warning: {e}"));
                continue;
            }
        };
        // A running instance may use another network than the profile's (run --network).
        let (state, network) = match instance::status(dirs, &p.id) {
            Ok(Some(r)) if r.monitor_pid > 0 => {
                (format!("running (pid {})", r.sandbox_pid), r.network)
            }
            Ok(Some(_)) => ("starting".to_owned(), p.network),
            Ok(None) => ("stopped".to_owned(), p.network),
            Err(e) => (format!("unknown ({e})"), p.network),
        };
        println!(
            "{}: {state}, home: {}, network: {network}, app: {}",
            p.id,
            p.home,
            p.label()
        );
    }
    Ok(())
}

fn cmd_run(
    dirs: &Dirs,
    id: &str,
    network: Option<NetworkMode>,
    urls: Vec<String>,
    command: Vec<String>,
) -> Result<ExitCode> {
    let id = parse_id(id)?;
    let p = profile::load(dirs, &id)?;
    let set = RecipeSet::load(dirs);
    let recipe = set
        .get(&p.recipe)
        .with_context(|| format!("profile {id} uses recipe \"{}\"", p.recipe))?;
    let opts = LaunchOptions {
        network,
        command: (!command.is_empty()).then_some(command),
        extra_args: urls,
    };
    let code = monitor::run(dirs, &p, recipe, &opts, &mut |m| warn(m))?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn cmd_stop(dirs: &Dirs, id: &str, timeout: u64) -> Result<()> {
    let id = parse_id(id)?;
    profile::load(dirs, &id)?;
    if monitor::stop(dirs, &id, Duration::from_secs(timeout))? {
        println!("stopped {id}");
    } else {
        println!("{id} is not running");
    }
    Ok(())
}

fn cmd_delete(dirs: &Dirs, id: &str, yes: bool) -> Result<()> {
    let id = parse_id(id)?;
    let p = profile::load(dirs, &id)?;
    if instance::is_running(dirs, &id)? {
        bail!("profile {id} is running; stop it first with `doppel stop {id}`");
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("not deleting {id} without confirmation: pass --yes to delete from a script");
        }
        print!(
            "Delete profile {id} ({}) and all its data in {}? This cannot be undone. [y/N] ",
            p.label(),
            dirs.profile_data(&id).display()
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            println!("kept {id}");
            return Ok(());
        }
    }
    profile::delete(dirs, &id)?;
    println!("deleted {id}");
    Ok(())
}

fn real_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let dirs = Dirs::from_env()?;
    match cli.command {
        Cmd::Apps { all } => cmd_apps(&dirs, all)?,
        Cmd::Create {
            id,
            app,
            name,
            color,
            home,
            network,
        } => cmd_create(&dirs, &id, &app, name, color, home, network)?,
        Cmd::List => cmd_list(&dirs)?,
        Cmd::Run {
            id,
            network,
            urls,
            command,
        } => return cmd_run(&dirs, &id, network, urls, command),
        Cmd::Stop { id, timeout } => cmd_stop(&dirs, &id, timeout)?,
        Cmd::Delete { id, yes } => cmd_delete(&dirs, &id, yes)?,
        Cmd::Doctor => {
            let checks = doppel_core::doctor::run(&dirs);
            print!("{}", doppel_core::doctor::render(&checks));
            if !doppel_core::doctor::all_ok(&checks) {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(c) => c,
        Err(e) => {
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                msg.push_str(": ");
                msg.push_str(&cause.to_string());
            }
            eprintln!("doppel: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
