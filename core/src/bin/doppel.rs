//! `doppel`: the command-line front end. It parses arguments and calls doppel-core.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use doppel_core::apps;
use doppel_core::cli::{Cli, Cmd, HomeArg};
use doppel_core::create;
use doppel_core::dirs::Dirs;
use doppel_core::id::ProfileId;
use doppel_core::instance;
use doppel_core::monitor;
use doppel_core::plan::LaunchOptions;
use doppel_core::profile::{self, HomeMode, NetworkMode, Profile};
use doppel_core::recipe::RecipeSet;
use doppel_core::storage;
use zeroize::Zeroizing;

fn parse_id(s: &str) -> Result<ProfileId> {
    ProfileId::parse(s).map_err(|e| anyhow::anyhow!("invalid profile id: {e}"))
}

fn warn(msg: &str) {
    eprintln!("doppel: {msg}");
}

/// Where passphrases come from: a file descriptor given with --passphrase-fd (read once, one
/// secret per line), or the terminal without echo. Never the command line or the environment.
struct Secrets {
    lines: Option<std::collections::VecDeque<Zeroizing<String>>>,
}

impl Secrets {
    fn new(fd: Option<i32>) -> Result<Secrets> {
        let Some(fd) = fd else {
            return Ok(Secrets { lines: None });
        };
        if fd < 0 {
            bail!("--passphrase-fd takes a file descriptor number, not {fd}");
        }
        // SAFETY: the person named this descriptor as theirs to hand over; it is read once
        // and closed.
        let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut text = Zeroizing::new(String::new());
        std::io::Read::read_to_string(&mut f, &mut text)
            .with_context(|| format!("cannot read the passphrase from file descriptor {fd}"))?;
        let lines = text.lines().map(|l| Zeroizing::new(l.to_owned())).collect();
        Ok(Secrets { lines: Some(lines) })
    }

    fn get(&mut self, prompt: &str) -> Result<Zeroizing<String>> {
        if let Some(lines) = &mut self.lines {
            return lines.pop_front().ok_or_else(|| {
                anyhow::anyhow!("the passphrase file descriptor has no line for: {prompt}")
            });
        }
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to ask for the passphrase on; pass it with --passphrase-fd N");
        }
        let p = rpassword::prompt_password(format!("{prompt}: "))
            .context("cannot read the passphrase from the terminal")?;
        Ok(Zeroizing::new(p))
    }

    fn new_passphrase(&mut self) -> Result<Zeroizing<String>> {
        let a = self.get("New passphrase")?;
        if a.is_empty() {
            bail!("the passphrase cannot be empty");
        }
        if self.lines.is_none() {
            let b = self.get("Repeat the passphrase")?;
            if *a != *b {
                bail!("the two passphrases differ; nothing was changed");
            }
            if a.chars().count() < 12 {
                warn("hint: a passphrase of 12 or more characters (or several words) is much harder to guess");
            }
        }
        Ok(a)
    }
}

/// Unlocks `p` if it is encrypted and locked, asking for the passphrase.
fn ensure_unlocked(dirs: &Dirs, p: &Profile, secrets: &mut Secrets) -> Result<()> {
    if !storage::needs_unlock(p) {
        return Ok(());
    }
    let pass = secrets.get(&format!(
        "Passphrase for {} (or its recovery key)",
        p.label()
    ))?;
    storage::unlock(dirs, p, pass.as_bytes())?;
    Ok(())
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

struct CreateArgs {
    id: String,
    app: String,
    name: Option<String>,
    color: Option<String>,
    home: HomeArg,
    network: Option<NetworkMode>,
    encrypt: bool,
    size: String,
    no_auto_lock: bool,
    passphrase_fd: Option<i32>,
}

fn parse_size(s: &str) -> Result<u64> {
    doppel_helper::wire::parse_size(s)
        .ok_or_else(|| anyhow::anyhow!("--size {s:?} is not a size like 8G or 512M"))
}

fn cmd_create(dirs: &Dirs, a: CreateArgs) -> Result<()> {
    let CreateArgs {
        id,
        app,
        name,
        color,
        home,
        network,
        encrypt,
        size,
        no_auto_lock,
        passphrase_fd,
    } = a;
    let id = parse_id(&id)?;
    let home = match home {
        HomeArg::Private => HomeMode::Private,
        HomeArg::Overlay => HomeMode::Overlay,
    };
    let size = if encrypt {
        Some(parse_size(&size)?)
    } else {
        None
    };
    let draft = create::draft(
        dirs,
        &create::Request {
            id,
            app,
            name,
            color,
            home,
            network,
            encrypted: encrypt,
            auto_lock: !no_auto_lock,
        },
    )?;
    let p = &draft.profile;
    if draft.generic {
        warn(&format!(
            "warning: no recipe for {}; using the generic one (the clone may need tweaks)",
            p.app_name
        ));
    }
    let made = match size {
        Some(size) => {
            let pass = Secrets::new(passphrase_fd)?.new_passphrase()?;
            eprintln!("doppel: creating the encrypted volume…");
            create::create(dirs, &draft, Some((size, pass.as_bytes())))?
        }
        None => create::create(dirs, &draft, None)?,
    };
    for w in &made.warnings {
        warn(w);
    }
    if let Some(recovery) = made.recovery {
        println!(
            "Recovery key for {} (shown once; keep it somewhere safe):",
            p.label()
        );
        println!("    {recovery}");
        println!(
            "It opens the profile if the passphrase is forgotten: doppel unlock {} or doppel passwd {}",
            p.id, p.id
        );
    }
    if home == HomeMode::Overlay && !encrypt {
        warn("note: the copy-on-write home keeps the clone's changes under /var/lib/doppel, unencrypted");
    }
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
            Ok(None) if storage::needs_unlock(&p) => ("locked".to_owned(), p.network),
            Ok(None) if p.encrypted => ("stopped, unlocked".to_owned(), p.network),
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
    passphrase_fd: Option<i32>,
) -> Result<ExitCode> {
    // Before the helper's client can start a thread: see monitor::block_signals.
    monitor::block_signals()?;
    let id = parse_id(id)?;
    let p = profile::load(dirs, &id)?;
    if instance::is_running(dirs, &id)? {
        bail!("profile {id} is already running; `doppel stop {id}` ends it");
    }
    ensure_unlocked(dirs, &p, &mut Secrets::new(passphrase_fd)?)?;
    let set = RecipeSet::load(dirs);
    let recipe = set
        .get(&p.recipe)
        .with_context(|| format!("profile {id} uses recipe \"{}\"", p.recipe))?;
    let opts = LaunchOptions {
        network,
        command: (!command.is_empty()).then_some(command),
        extra_args: urls,
        storage: None,
    };
    let code = monitor::run(dirs, &p, recipe, &opts, &mut |m| warn(m))?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn cmd_join(dirs: &Dirs, id: &str, command: &[String]) -> Result<()> {
    let id = parse_id(id)?;
    profile::load(dirs, &id)?;
    let pid = doppel_core::sandbox::join(dirs, &id, command)?;
    println!("{pid}");
    Ok(())
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
    doppel_core::manage::delete(dirs, &id)?;
    println!("deleted {id}");
    Ok(())
}

fn cmd_lock(dirs: &Dirs, id: &str, stop: bool) -> Result<()> {
    let id = parse_id(id)?;
    let p = profile::load(dirs, &id)?;
    if !p.encrypted {
        bail!("profile {id} is not encrypted, so there is nothing to lock");
    }
    if instance::is_running(dirs, &id)? {
        if !stop {
            bail!("profile {id} is running; stop it first, or use `doppel lock {id} --stop`");
        }
        monitor::stop(dirs, &id, Duration::from_secs(15))?;
    }
    storage::lock(&p)?;
    println!("locked {id}");
    Ok(())
}

fn cmd_unlock(dirs: &Dirs, id: &str, fd: Option<i32>) -> Result<()> {
    let id = parse_id(id)?;
    let p = profile::load(dirs, &id)?;
    if !p.encrypted {
        bail!("profile {id} is not encrypted, so there is nothing to unlock");
    }
    if !storage::needs_unlock(&p) {
        println!("{id} is already unlocked");
        return Ok(());
    }
    ensure_unlocked(dirs, &p, &mut Secrets::new(fd)?)?;
    println!("unlocked {id}");
    Ok(())
}

fn cmd_passwd(dirs: &Dirs, id: &str, fd: Option<i32>) -> Result<()> {
    let id = parse_id(id)?;
    let p = profile::load(dirs, &id)?;
    if !p.encrypted {
        bail!("profile {id} is not encrypted, so it has no passphrase");
    }
    let mut secrets = Secrets::new(fd)?;
    let old = secrets.get("Current passphrase (or recovery key)")?;
    let new = secrets.new_passphrase()?;
    storage::passwd(dirs, &p, old.as_bytes(), new.as_bytes())?;
    println!("changed the passphrase of {id}; the recovery key still works");
    Ok(())
}

fn cmd_set(dirs: &Dirs, id: &str, name: Option<&str>, color: Option<&str>) -> Result<()> {
    let id = parse_id(id)?;
    if name.is_none() && color.is_none() {
        bail!("say what to change: --name \"New name\" and/or --color '#rrggbb'");
    }
    let mut warnings = Vec::new();
    if let Some(name) = name {
        warnings.extend(doppel_core::manage::rename(dirs, &id, name)?);
    }
    if let Some(color) = color {
        warnings.extend(doppel_core::manage::set_color(dirs, &id, color)?);
    }
    for w in warnings {
        warn(&w);
    }
    println!("changed {}", profile::load(dirs, &id)?.label());
    Ok(())
}

fn cmd_open(dirs: &Dirs, url: &str) -> Result<()> {
    use doppel_core::links::{self, Target};
    let target = match links::route(dirs, url)? {
        Target::Choose(candidates) => match choose(url, &candidates)? {
            Some(id) => Target::Clone(id),
            None => links::route_host(dirs, url),
        },
        t => t,
    };
    match target {
        Target::Clone(id) => {
            let label = links::open_in_clone(dirs, &id, url)?;
            println!("opened {url} in {label}");
        }
        Target::Host(handler) => {
            let name = links::open_on_host(dirs, handler.as_deref(), url)?;
            println!("opened {url} in {name}");
        }
        Target::Choose(_) => bail!("no profile was chosen for {url}; nothing opened"),
    }
    Ok(())
}

/// Asks which waiting clone gets `url`: the window's chooser on a desktop, a prompt in a
/// terminal; None means the person's own copy of the app.
fn choose(url: &str, candidates: &[doppel_core::links::Candidate]) -> Result<Option<ProfileId>> {
    let by_index = |i: usize| candidates.get(i).map(|c| c.id.clone());
    let on_desktop =
        std::env::var_os("WAYLAND_DISPLAY").is_some() || std::env::var_os("DISPLAY").is_some();
    let gui = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("doppel-gui")))
        .filter(|p| p.is_file())
        .or_else(|| apps::which("doppel-gui"));
    if on_desktop && !std::io::stdin().is_terminal() {
        if let Some(gui) = gui {
            let mut cmd = std::process::Command::new(gui);
            cmd.arg("--choose-profile").arg(url);
            for c in candidates {
                cmd.arg(format!("{}={}", c.id, c.label));
            }
            cmd.arg("--host=app");
            let out = cmd
                .stderr(std::process::Stdio::null())
                .output()
                .context("cannot show the profile chooser")?;
            let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !out.status.success() {
                bail!("no profile was chosen for {url}; nothing opened");
            }
            return Ok(candidates
                .iter()
                .find(|c| c.id.as_str() == answer)
                .map(|c| c.id.clone()));
        }
    }
    if !std::io::stdin().is_terminal() {
        // No one to ask: the first copy gets it, as if Doppel were not installed.
        return Ok(None);
    }
    println!("More than one profile is waiting for a sign-in link:");
    for (i, c) in candidates.iter().enumerate() {
        println!("  {}. {}", i + 1, c.label);
    }
    println!("  0. your own copy of the app");
    print!("Open {url} in [1]: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    let answer = answer.trim();
    if answer.is_empty() {
        return Ok(by_index(0));
    }
    match answer.parse::<usize>() {
        Ok(0) => Ok(None),
        Ok(n) if n <= candidates.len() => Ok(by_index(n - 1)),
        _ => bail!("{answer:?} is not one of the numbers shown; nothing opened"),
    }
}

fn cmd_diff(dirs: &Dirs, id: &str) -> Result<()> {
    let id = parse_id(id)?;
    let p = profile::load(dirs, &id)?;
    let changes = storage::diff(&p)?;
    if changes.is_empty() {
        println!("{id} has not changed anything in your home");
    }
    for c in changes {
        match c {
            storage::Change::Changed(p) => println!("changed  {}", p.display()),
            storage::Change::Deleted(p) => println!("deleted  {}", p.display()),
        }
    }
    Ok(())
}

fn cmd_recover(
    dirs: &Dirs,
    id: &str,
    path: &std::path::Path,
    to: Option<&std::path::Path>,
) -> Result<()> {
    let id = parse_id(id)?;
    let p = profile::load(dirs, &id)?;
    let dest = storage::recover_file(dirs, &p, path, to)?;
    println!("copied {} to {}", path.display(), dest.display());
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
            encrypt,
            size,
            no_auto_lock,
            passphrase_fd,
        } => cmd_create(
            &dirs,
            CreateArgs {
                id,
                app,
                name,
                color,
                home,
                network,
                encrypt,
                size,
                no_auto_lock,
                passphrase_fd,
            },
        )?,
        Cmd::List => cmd_list(&dirs)?,
        Cmd::Run {
            id,
            network,
            urls,
            command,
            passphrase_fd,
            join: false,
        } => return cmd_run(&dirs, &id, network, urls, command, passphrase_fd),
        Cmd::Run {
            id,
            command,
            join: true,
            ..
        } => cmd_join(&dirs, &id, &command)?,
        Cmd::Lock { id, stop } => cmd_lock(&dirs, &id, stop)?,
        Cmd::Unlock { id, passphrase_fd } => cmd_unlock(&dirs, &id, passphrase_fd)?,
        Cmd::Passwd { id, passphrase_fd } => cmd_passwd(&dirs, &id, passphrase_fd)?,
        Cmd::Set { id, name, color } => cmd_set(&dirs, &id, name.as_deref(), color.as_deref())?,
        Cmd::Open { url } => cmd_open(&dirs, &url)?,
        Cmd::Diff { id } => cmd_diff(&dirs, &id)?,
        Cmd::Recover { id, path, to } => cmd_recover(&dirs, &id, &path, to.as_deref())?,
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
    // Inside a clone, this binary is also its `xdg-open` (see doppel_core::opener).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if doppel_core::opener::invoked_as_shim(args.first()) {
        return doppel_core::opener::main(args.get(1..).unwrap_or_default());
    }
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
