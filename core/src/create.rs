//! Making a new profile, shared by the CLI and the GUI: first a [`Draft`] (every check, nothing
//! written, so a front end can still ask for a passphrase), then [`create`] (the profile file,
//! and for an encrypted profile its keys and volume; on failure nothing is left behind).

use crate::dirs::Dirs;
use crate::id::ProfileId;
use crate::keys::RecoveryKey;
use crate::profile::{self, HomeMode, NetworkMode, Profile, ProfileError};
use crate::recipe::{RecipeError, RecipeSet};
use crate::resolve::{self, ResolveError};
use crate::storage::{self, StorageError};

/// The default badge colour.
pub const DEFAULT_COLOR: &str = "#3584e4";

/// What a person chose for a new profile.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: ProfileId,
    /// A recipe id, a desktop-entry id or a command.
    pub app: String,
    /// Display name; the id when absent.
    pub name: Option<String>,
    pub color: Option<String>,
    pub home: HomeMode,
    /// The recipe's default when absent.
    pub network: Option<NetworkMode>,
    pub encrypted: bool,
    pub auto_lock: bool,
}

/// A checked, not yet written, profile.
#[derive(Debug, Clone)]
pub struct Draft {
    pub profile: Profile,
    /// No recipe claims the app: the generic one is used.
    pub generic: bool,
}

/// Why a profile could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// Checks everything about `req` without writing anything.
pub fn draft(dirs: &Dirs, req: &Request) -> Result<Draft, CreateError> {
    let set = RecipeSet::load(dirs);
    // A recipe of that name that does not load is reported as such, not as "no app".
    if let Err(e @ RecipeError::Parse { .. }) = set.get(&req.app) {
        return Err(e.into());
    }
    let resolved = resolve::resolve(dirs, &set, &req.app)?;
    let recipe = set.get(&resolved.recipe)?;
    if req.encrypted || req.home == HomeMode::Overlay {
        // Both need the privileged helper: find out before asking for anything.
        storage::helper()?;
    }
    if dirs.profile_file(&req.id).exists() {
        return Err(ProfileError::Exists(req.id.clone()).into());
    }
    let profile = Profile {
        name: req
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map_or_else(|| req.id.to_string(), str::to_owned),
        id: req.id.clone(),
        recipe: resolved.recipe.clone(),
        desktop_id: resolved.desktop_id,
        app_name: resolved.app_name,
        command: resolved.command,
        color: req
            .color
            .clone()
            .unwrap_or_else(|| DEFAULT_COLOR.to_owned()),
        home: req.home,
        network: req.network.unwrap_or(recipe.network),
        encrypted: req.encrypted,
        auto_lock: req.auto_lock,
        // Fixed now: an app whose keyring backend changes between runs may lock itself out.
        keyring: Some(recipe.initial_keyring(
            std::env::var("XDG_CURRENT_DESKTOP").ok().as_deref(),
            std::env::var("KDE_SESSION_VERSION").ok().as_deref(),
        )),
    };
    profile::validate(&profile)?;
    Ok(Draft {
        profile,
        generic: resolved.generic,
    })
}

/// A profile just written.
#[derive(Debug)]
pub struct Made {
    /// The recovery key of an encrypted profile, to show once.
    pub recovery: Option<RecoveryKey>,
    /// What did not work but does not stop the profile from working (its launcher).
    pub warnings: Vec<String>,
}

/// Writes the drafted profile and its launcher; an encrypted one also gets its keys and a
/// volume of `size` bytes sealed with `passphrase`.
pub fn create(
    dirs: &Dirs,
    draft: &Draft,
    encryption: Option<(u64, &[u8])>,
) -> Result<Made, CreateError> {
    let p = &draft.profile;
    profile::create(dirs, p)?;
    let recovery = if p.encrypted {
        let made = match encryption {
            Some((size, passphrase)) => storage::create_encrypted(dirs, p, size, passphrase),
            None => Err(StorageError::Refused(
                "an encrypted profile needs a passphrase".to_owned(),
            )),
        };
        match made {
            Ok(key) => Some(key),
            Err(e) => {
                // Nothing half-created: the profile goes with its failed volume.
                let _ = profile::delete(dirs, &p.id);
                return Err(e.into());
            }
        }
    } else {
        None
    };
    let mut warnings = crate::launcher::refresh(dirs, p);
    if let Err(e) = crate::links::sync(dirs) {
        warnings.push(format!(
            "its sign-in links will open in your own copy of the app: {e}"
        ));
    }
    Ok(Made { recovery, warnings })
}
