//! What the window's buttons do, through doppel-core, the way the `doppel` CLI does it. Nothing
//! here touches GTK; the slow functions are called off the main loop.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zeroize::Zeroizing;

use doppel_core::apps;
use doppel_core::dirs::Dirs;
use doppel_core::id::ProfileId;
use doppel_core::instance;
use doppel_core::manage;
use doppel_core::monitor;
use doppel_core::profile::{self, HomeMode, NetworkMode};
use doppel_core::recipe::RecipeSet;
use doppel_core::storage;

use crate::model::{AppChoice, BrokenRow, ProfileRow, ProfileState, Snapshot};

/// How long `stop` waits for a clean exit before killing what is left (as `doppel stop`).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Size of a new encrypted volume (sparse; as `doppel create --encrypt`'s default).
const VOLUME_SIZE: u64 = 8 << 30;

/// Icons of desktop entries by id, looked up once: reading every desktop file each second
/// would be wasteful, and an entry's icon does not change while it is shown.
#[derive(Debug, Default)]
pub struct IconCache(HashMap<String, Option<String>>);

impl IconCache {
    fn icon(&mut self, dirs: &Dirs, desktop_id: Option<&str>) -> Option<String> {
        let id = desktop_id?;
        self.0
            .entry(id.to_owned())
            .or_insert_with(|| apps::find(dirs, id).and_then(|e| e.icon))
            .clone()
    }
}

/// Reads every profile and its state from core.
pub fn snapshot(dirs: &Dirs, icons: &mut IconCache, busy: &HashSet<ProfileId>) -> Snapshot {
    let all = match profile::list(dirs) {
        Ok(all) => all,
        Err(e) => {
            return Snapshot {
                error: Some(e.to_string()),
                ..Snapshot::default()
            }
        }
    };
    let mut snap = Snapshot::default();
    for p in all {
        match p {
            Ok(p) => {
                let status = instance::status(dirs, &p.id).map_err(|e| e.to_string());
                let state = ProfileState::from_core(
                    status.as_ref().map(Option::as_ref).map_err(Clone::clone),
                    storage::needs_unlock(&p),
                    p.encrypted,
                );
                let icon = icons.icon(dirs, p.desktop_id.as_deref());
                snap.rows.push(ProfileRow::new(
                    &p,
                    &state,
                    icon.as_deref(),
                    busy.contains(&p.id),
                ));
            }
            Err(e) => snap.broken.push(BrokenRow {
                message: e.to_string(),
            }),
        }
    }
    snap
}

/// The `doppel` program: beside this one (an install or a build tree), else on PATH.
pub fn doppel_binary() -> Result<PathBuf, String> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("doppel")))
        .filter(|p| p.is_file());
    beside.or_else(|| apps::which("doppel")).ok_or_else(|| {
        "cannot find the doppel program next to doppel-gui or on PATH; reinstall Doppel".to_owned()
    })
}

/// Failures of launched instances (profile, message), reported by their waiting threads and
/// shown by the window.
pub type LaunchFailures = Arc<Mutex<Vec<(ProfileId, String)>>>;

/// Starts `doppel run <id>` as a process of its own, so that the instance outlives the
/// window. Its output goes to `$XDG_RUNTIME_DIR/doppel/gui-<id>.log`; if it fails, the last
/// line of that log is queued in `failures`.
pub fn launch(dirs: &Dirs, id: &ProfileId, failures: &LaunchFailures) -> Result<(), String> {
    let p = profile::load(dirs, id).map_err(|e| e.to_string())?;
    if instance::is_running(dirs, id).map_err(|e| e.to_string())? {
        return Err(format!("{} is already running", p.label()));
    }
    let program = doppel_binary()?;
    let log = dirs
        .runtime_dir
        .as_ref()
        .map(|d| d.join("doppel"))
        .and_then(|d| fs::create_dir_all(&d).ok().map(|()| d))
        .map(|d| d.join(format!("gui-{id}.log")));
    let out = log
        .as_ref()
        .and_then(|l| fs::File::create(l).ok())
        .map_or_else(Stdio::null, Stdio::from);
    let err = log
        .as_ref()
        .and_then(|l| fs::OpenOptions::new().append(true).open(l).ok())
        .map_or_else(Stdio::null, Stdio::from);
    let mut child = Command::new(&program)
        .arg("run")
        .arg(id.as_str())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: a Ctrl+C meant for the window does not end the app.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let failures = Arc::clone(failures);
    let label = p.label();
    let id = id.clone();
    let started = std::time::Instant::now();
    // Someone must reap the child; this thread does, and reports a failed launch.
    std::thread::spawn(move || {
        let Ok(status) = child.wait() else { return };
        if status.success() {
            return;
        }
        let last = log
            .and_then(|l| fs::read_to_string(l).ok())
            .and_then(|t| {
                t.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_owned)
            })
            .map(|l| {
                let l = l.trim_start_matches("doppel: ");
                l.strip_prefix("error: ").unwrap_or(l).to_owned()
            });
        let what = if started.elapsed() < Duration::from_secs(10) {
            "could not start"
        } else {
            "stopped with an error"
        };
        let msg = match last {
            Some(l) => format!("{label} {what}: {l}"),
            None => format!("{label} {what} ({status})"),
        };
        if let Ok(mut f) = failures.lock() {
            f.push((id, msg));
        }
    });
    Ok(())
}

/// Stops a running profile (slow: waits for it to exit).
pub fn stop(dirs: &Dirs, id: &ProfileId) -> Result<(), String> {
    monitor::stop(dirs, id, STOP_TIMEOUT)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether launching `id` needs its passphrase first.
pub fn needs_unlock(dirs: &Dirs, id: &ProfileId) -> Result<bool, String> {
    let p = profile::load(dirs, id).map_err(|e| e.to_string())?;
    Ok(storage::needs_unlock(&p))
}

/// The profile's "App (Name)" label.
pub fn label(dirs: &Dirs, id: &ProfileId) -> String {
    profile::load(dirs, id).map_or_else(|_| id.to_string(), |p| p.label())
}

/// Unlocks an encrypted profile with its passphrase or recovery key (slow: key derivation).
pub fn unlock(dirs: &Dirs, id: &ProfileId, secret: &Zeroizing<String>) -> Result<(), String> {
    let p = profile::load(dirs, id).map_err(|e| e.to_string())?;
    storage::unlock(dirs, &p, secret.trim().as_bytes()).map_err(|e| e.to_string())
}

/// Locks an encrypted profile that is not running.
pub fn lock(dirs: &Dirs, id: &ProfileId) -> Result<(), String> {
    let p = profile::load(dirs, id).map_err(|e| e.to_string())?;
    if instance::is_running(dirs, id).map_err(|e| e.to_string())? {
        return Err(format!("{} is running; stop it first", p.label()));
    }
    storage::lock(&p).map_err(|e| e.to_string())
}

/// Locks every unlocked encrypted profile that is not running; returns how many were locked
/// and what went wrong with the others.
pub fn lock_all(dirs: &Dirs) -> (usize, Vec<String>) {
    let mut locked = 0;
    let mut errors = Vec::new();
    let all = match profile::list(dirs) {
        Ok(all) => all,
        Err(e) => return (0, vec![e.to_string()]),
    };
    for p in all.into_iter().flatten() {
        if !storage::is_unlocked(&p) {
            continue;
        }
        match lock(dirs, &p.id) {
            Ok(()) => locked += 1,
            Err(e) => errors.push(e),
        }
    }
    (locked, errors)
}

/// Installed apps for the new-profile list, those with a recipe first (as `doppel apps`).
pub fn installed_apps(dirs: &Dirs) -> Vec<AppChoice> {
    let set = RecipeSet::load(dirs);
    let mut out: Vec<AppChoice> = apps::discover(dirs)
        .entries
        .iter()
        .filter(|e| !e.no_display && !e.terminal && apps::is_installed(e))
        .map(|e| {
            let recipe = set
                .find_for(Some(&e.id), e.exec.first().map(String::as_str))
                .map(|r| r.id.clone());
            AppChoice::from_entry(e, recipe)
        })
        .collect();
    crate::model::sort_choices(&mut out);
    out
}

/// What the new-profile dialog asks core to create.
pub struct NewProfile {
    pub desktop_id: String,
    pub name: String,
    pub color: String,
    pub home: HomeMode,
    /// None: the recipe's default.
    pub network: Option<NetworkMode>,
    /// Set for an encrypted profile.
    pub passphrase: Option<Zeroizing<String>>,
}

/// A profile just made.
pub struct Created {
    pub id: ProfileId,
    pub label: String,
    /// The recovery key of an encrypted profile, to be shown once.
    pub recovery: Option<Zeroizing<String>>,
    /// No recipe knows the app: the generic one was used.
    pub generic: bool,
    /// What did not work but does not stop the profile from working (its launcher).
    pub warnings: Vec<String>,
}

/// Creates a profile as `doppel create` does (slow for an encrypted one).
pub fn create(dirs: &Dirs, req: NewProfile) -> Result<Created, String> {
    let taken: Vec<ProfileId> = profile::list(dirs)
        .map_err(|e| e.to_string())?
        .into_iter()
        .flatten()
        .map(|p| p.id)
        .collect();
    // The app's name is only known once resolved; the id comes from the profile's name.
    let app_name = doppel_core::apps::find(dirs, &req.desktop_id)
        .map(|e| e.name)
        .unwrap_or_else(|| req.desktop_id.clone());
    let id = crate::model::id_from_name(&req.name, &app_name, &taken).ok_or_else(|| {
        "cannot make an id from this name; try a shorter or simpler one".to_owned()
    })?;
    let draft = doppel_core::create::draft(
        dirs,
        &doppel_core::create::Request {
            id,
            app: req.desktop_id.clone(),
            name: Some(req.name.trim().to_owned()),
            color: Some(req.color.clone()),
            home: req.home,
            network: req.network,
            encrypted: req.passphrase.is_some(),
            auto_lock: true,
        },
    )
    .map_err(|e| e.to_string())?;
    let made = doppel_core::create::create(
        dirs,
        &draft,
        req.passphrase
            .as_ref()
            .map(|pass| (VOLUME_SIZE, pass.as_bytes())),
    )
    .map_err(|e| e.to_string())?;
    let recovery = made.recovery.map(|key| Zeroizing::new(key.to_string()));
    let p = &draft.profile;
    Ok(Created {
        label: p.label(),
        id: p.id.clone(),
        recovery,
        generic: draft.generic,
        warnings: made.warnings,
    })
}

/// A profile as saved.
pub fn profile(dirs: &Dirs, id: &ProfileId) -> Result<profile::Profile, String> {
    profile::load(dirs, id).map_err(|e| e.to_string())
}

/// What a profile's page shows that takes a while to find out.
pub struct Details {
    /// "12.3 MB".
    pub usage: String,
    /// The changed files of a copy-on-write home (None for a private home).
    pub changes: Option<Result<Vec<storage::Change>, String>>,
}

/// Measures a profile's storage and lists its changed files (slow: walks its trees).
pub fn details(dirs: &Dirs, id: &ProfileId) -> Result<Details, String> {
    let p = profile(dirs, id)?;
    let usage = manage::usage(dirs, &p);
    let changes =
        (p.home == HomeMode::Overlay).then(|| storage::diff(&p).map_err(|e| e.to_string()));
    Ok(Details {
        usage: manage::human_size(usage.total()),
        changes,
    })
}

/// Renames a profile and its launcher; returns warnings about the launcher.
pub fn rename(dirs: &Dirs, id: &ProfileId, name: &str) -> Result<Vec<String>, String> {
    manage::rename(dirs, id, name).map_err(|e| e.to_string())
}

/// Gives a profile another badge colour; returns warnings about the launcher.
pub fn set_color(dirs: &Dirs, id: &ProfileId, color: &str) -> Result<Vec<String>, String> {
    manage::set_color(dirs, id, color).map_err(|e| e.to_string())
}

/// Changes an encrypted profile's passphrase (slow: key derivation twice).
pub fn passwd(
    dirs: &Dirs,
    id: &ProfileId,
    old: &Zeroizing<String>,
    new: &Zeroizing<String>,
) -> Result<(), String> {
    let p = profile(dirs, id)?;
    storage::passwd(dirs, &p, old.trim().as_bytes(), new.as_bytes()).map_err(|e| e.to_string())
}

/// Deletes a profile and all its data (slow for a big home or a volume).
pub fn delete(dirs: &Dirs, id: &ProfileId) -> Result<(), String> {
    manage::delete(dirs, id).map_err(|e| e.to_string())
}

/// Copies a file the clone changed out to the same place in the real home.
pub fn recover(dirs: &Dirs, id: &ProfileId, rel: &std::path::Path) -> Result<PathBuf, String> {
    let p = profile(dirs, id)?;
    storage::recover_file(dirs, &p, rel, None).map_err(|e| e.to_string())
}

/// The person's Downloads folder, which every clone shares.
pub fn downloads(dirs: &Dirs) -> Option<PathBuf> {
    doppel_core::host::downloads_dir(dirs).filter(|d| d.is_dir())
}
