//! A profile's storage beyond the plain private home: an encrypted volume (keys here, the
//! volume in the helper) and the copy-on-write home (mounted by the helper). The CLI and the
//! GUI call these; the monitor calls [`prepare`] before a launch and [`release`] after it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use doppel_helper::client::{ErrorKind, Helper, HelperError};
use doppel_helper::wire::RUN_DIR;

use crate::dirs::Dirs;
use crate::keys::{self, KeyError, RecoveryKey};
use crate::plan::Storage;
use crate::profile::{HomeMode, Profile};

/// How long deriving the wrapping key from a passphrase should take on the machine that
/// creates it.
pub const KDF_TARGET: Duration = Duration::from_millis(500);

/// What went wrong with a profile's storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Helper(#[from] HelperError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("profile \"{0}\" is locked; unlock it first (doppel unlock {0})")]
    Locked(String),
    #[error("profile \"{0}\" is not encrypted")]
    NotEncrypted(String),
    #[error("profile \"{0}\" has no copy-on-write home (it was created with --home private)")]
    NoOverlay(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// `/var/lib/doppel/<uid>/<id>.img`: the image of the profile's encrypted volume (root's; its
/// size can be read, not its contents).
pub fn image_path(profile: &Profile) -> PathBuf {
    Path::new(doppel_helper::wire::STATE_DIR)
        .join(uid().to_string())
        .join(format!("{}.img", profile.id))
}

/// `/run/doppel/<uid>/<id>`: where the helper mounts the profile's volume.
pub fn volume_dir(profile: &Profile) -> PathBuf {
    Path::new(RUN_DIR)
        .join(uid().to_string())
        .join(profile.id.as_str())
}

/// Where the keyslots of an encrypted profile live, beside its profile data.
pub fn keys_dir(dirs: &Dirs, profile: &Profile) -> PathBuf {
    dirs.profile_data(&profile.id).join("keys")
}

fn mounted(p: &Path) -> bool {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = p.to_string_lossy();
    text.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == want))
}

/// Whether an encrypted profile's volume is unlocked (mounted) now.
pub fn is_unlocked(profile: &Profile) -> bool {
    profile.encrypted && mounted(&volume_dir(profile))
}

/// Whether a launch of `profile` needs a passphrase first.
pub fn needs_unlock(profile: &Profile) -> bool {
    profile.encrypted && !is_unlocked(profile)
}

/// Checks that the helper answers, for features that need it.
pub fn helper() -> Result<Helper, StorageError> {
    let h = Helper::connect()?;
    h.status()?;
    Ok(h)
}

/// Creates the encrypted volume of a new profile: keyslots, then the volume, then its home
/// directory; leaves it locked. Returns the recovery key, to be shown once. On failure nothing
/// is left behind.
pub fn create_encrypted(
    dirs: &Dirs,
    profile: &Profile,
    size: u64,
    passphrase: &[u8],
) -> Result<RecoveryKey, StorageError> {
    let h = helper()?;
    let kdir = keys_dir(dirs, profile);
    let params = keys::calibrate(KDF_TARGET);
    let (vk, recovery) = keys::create(&kdir, profile.id.as_str(), passphrase, params)?;
    let result = (|| {
        let mnt = h.create_volume(profile.id.as_str(), size, vk.as_bytes())?;
        let home = Path::new(&mnt).join("data/home");
        fs::create_dir_all(&home).map_err(io_err("cannot create", &home))?;
        h.lock(profile.id.as_str())?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = h.lock(profile.id.as_str());
        let _ = h.delete_volume(profile.id.as_str());
        let _ = fs::remove_dir_all(&kdir);
        return Err(e);
    }
    Ok(recovery)
}

/// Unlocks an encrypted profile with its passphrase or recovery key.
pub fn unlock(dirs: &Dirs, profile: &Profile, secret: &[u8]) -> Result<(), StorageError> {
    if !profile.encrypted {
        return Err(StorageError::NotEncrypted(profile.id.to_string()));
    }
    if is_unlocked(profile) {
        return Ok(());
    }
    // The key is checked here first: a wrong passphrase costs the full KDF and never reaches
    // the helper.
    let vk = keys::unlock(&keys_dir(dirs, profile), profile.id.as_str(), secret)?;
    Helper::connect()?.unlock(profile.id.as_str(), vk.as_bytes())?;
    Ok(())
}

/// Locks an encrypted profile (the caller makes sure it is not running).
pub fn lock(profile: &Profile) -> Result<(), StorageError> {
    if !profile.encrypted {
        return Err(StorageError::NotEncrypted(profile.id.to_string()));
    }
    Helper::connect()?.lock(profile.id.as_str())?;
    Ok(())
}

/// Changes the passphrase (the old one, or the recovery key, opens it); data is not
/// re-encrypted.
pub fn passwd(dirs: &Dirs, profile: &Profile, old: &[u8], new: &[u8]) -> Result<(), StorageError> {
    if !profile.encrypted {
        return Err(StorageError::NotEncrypted(profile.id.to_string()));
    }
    let params = keys::calibrate(KDF_TARGET);
    keys::change_passphrase(
        &keys_dir(dirs, profile),
        profile.id.as_str(),
        old,
        new,
        params,
    )?;
    Ok(())
}

/// Makes the profile's storage ready for a launch: checks an encrypted volume is unlocked,
/// mounts the copy-on-write home.
pub fn prepare(dirs: &Dirs, profile: &Profile) -> Result<Option<Storage>, StorageError> {
    if !profile.encrypted && profile.home == HomeMode::Private {
        return Ok(None);
    }
    if profile.encrypted && !is_unlocked(profile) {
        return Err(StorageError::Locked(profile.id.to_string()));
    }
    let data = if profile.encrypted {
        volume_dir(profile).join("data")
    } else {
        dirs.profile_data(&profile.id)
    };
    match profile.home {
        HomeMode::Private => Ok(Some(Storage {
            home: data.join("home"),
            state: None,
        })),
        HomeMode::Overlay => {
            let merged = Helper::connect()?.mount_overlay(profile.id.as_str())?;
            Ok(Some(Storage {
                home: PathBuf::from(merged),
                state: Some(data.join("state")),
            }))
        }
    }
}

/// After a launch: unmounts the copy-on-write home and, when the profile says so, locks its
/// volume. Returns warnings for what could not be done (the data is safe either way).
pub fn release(profile: &Profile) -> Vec<String> {
    let mut warnings = Vec::new();
    if !profile.encrypted && profile.home == HomeMode::Private {
        return warnings;
    }
    let h = match Helper::connect() {
        Ok(h) => h,
        Err(e) => return vec![e.to_string()],
    };
    if profile.home == HomeMode::Overlay {
        if let Err(e) = h.unmount_overlay(profile.id.as_str()) {
            warnings.push(format!("could not unmount the copy-on-write home: {e}"));
        }
    }
    if profile.encrypted && profile.auto_lock {
        if let Err(e) = h.lock(profile.id.as_str()) {
            warnings.push(format!(
                "could not lock {}: {e}; lock it with `doppel lock {}`",
                profile.id, profile.id
            ));
        }
    }
    warnings
}

/// Removes the helper's part of a profile (volume, copy-on-write layers) before the profile
/// itself is deleted.
pub fn destroy(profile: &Profile) -> Result<(), StorageError> {
    if !profile.encrypted && profile.home == HomeMode::Private {
        return Ok(());
    }
    let h = Helper::connect()?;
    if profile.home == HomeMode::Overlay {
        let _ = h.unmount_overlay(profile.id.as_str());
    }
    if profile.encrypted {
        h.lock(profile.id.as_str())?;
    }
    match h.delete_volume(profile.id.as_str()) {
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        other => Ok(other?),
    }
}

/// The upper (changed-files) layer of a copy-on-write home.
pub fn upper_dir(profile: &Profile) -> Result<PathBuf, StorageError> {
    if profile.home != HomeMode::Overlay {
        return Err(StorageError::NoOverlay(profile.id.to_string()));
    }
    if profile.encrypted {
        if !is_unlocked(profile) {
            return Err(StorageError::Locked(profile.id.to_string()));
        }
        return Ok(volume_dir(profile).join("data/overlay/upper"));
    }
    Ok(Path::new(doppel_helper::wire::STATE_DIR)
        .join(uid().to_string())
        .join("overlay")
        .join(profile.id.as_str())
        .join("upper"))
}

/// One change a clone made to its copy-on-write home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Added or modified (a file, link or directory of its own).
    Changed(PathBuf),
    /// Deleted in the clone (the real home still has it).
    Deleted(PathBuf),
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    m.file_type().is_char_device() && m.rdev() == 0
}

/// What the clone changed relative to the real home, as paths relative to the home.
pub fn diff(profile: &Profile) -> Result<Vec<Change>, StorageError> {
    let upper = upper_dir(profile)?;
    let mut out = Vec::new();
    walk(&upper, &upper, &mut out).map_err(io_err("cannot read", &upper))?;
    out.sort_by(|a, b| path_of(a).cmp(path_of(b)));
    Ok(out)
}

fn path_of(c: &Change) -> &Path {
    match c {
        Change::Changed(p) | Change::Deleted(p) => p,
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<Change>) -> io::Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let p = e.path();
        let m = fs::symlink_metadata(&p)?;
        let rel = p.strip_prefix(base).unwrap_or(&p).to_owned();
        if is_whiteout(&m) {
            out.push(Change::Deleted(rel));
        } else if m.is_dir() {
            walk(base, &p, out)?;
        } else {
            out.push(Change::Changed(rel));
        }
    }
    Ok(())
}

/// Copies a file the clone made or changed (`rel`, relative to the home) out to `dest`
/// (default: the same place in the real home, if nothing is there). Never overwrites.
pub fn recover_file(
    dirs: &Dirs,
    profile: &Profile,
    rel: &Path,
    dest: Option<&Path>,
) -> Result<PathBuf, StorageError> {
    let rel = rel.strip_prefix(&dirs.home).unwrap_or(rel);
    let rel = rel.strip_prefix("~").unwrap_or(rel);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(StorageError::Refused(format!(
            "{}: give a path inside the home, like Documents/notes.txt",
            rel.display()
        )));
    }
    let src = upper_dir(profile)?.join(rel);
    let meta = fs::symlink_metadata(&src).map_err(|_| {
        StorageError::Refused(format!(
            "the clone did not change {}; `doppel diff {}` lists what it changed",
            rel.display(),
            profile.id
        ))
    })?;
    if !meta.is_file() {
        return Err(StorageError::Refused(format!(
            "{} is not a regular file in the clone",
            rel.display()
        )));
    }
    let dest = dest.map_or_else(|| dirs.home.join(rel), Path::to_owned);
    if fs::symlink_metadata(&dest).is_ok() {
        return Err(StorageError::Refused(format!(
            "{} exists; choose another place with --to",
            dest.display()
        )));
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
    }
    let mut from = fs::File::open(&src).map_err(io_err("cannot read", &src))?;
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&dest)
        .map_err(io_err("cannot write", &dest))?;
    io::copy(&mut from, &mut to).map_err(io_err("cannot copy to", &dest))?;
    to.sync_all().map_err(io_err("cannot write", &dest))?;
    Ok(dest)
}
