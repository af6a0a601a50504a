//! Changes to a profile that exists, shared by the CLI and the window: delete, rename, recolour,
//! and how much space it takes.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::dirs::Dirs;
use crate::id::ProfileId;
use crate::instance::{self, InstanceError};
use crate::profile::{self, HomeMode, Profile, ProfileError};
use crate::storage::{self, StorageError};

/// Why a change to a profile was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("{0} is running; stop it first")]
    Running(String),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Launcher(#[from] crate::launcher::LauncherError),
}

/// Deletes profile `id` and all its data: its home, its encrypted volume or copy-on-write
/// layers (through the helper), then its file. Refused while it runs.
pub fn delete(dirs: &Dirs, id: &ProfileId) -> Result<(), ManageError> {
    let p = profile::load(dirs, id)?;
    if instance::is_running(dirs, id)? {
        return Err(ManageError::Running(format!("profile {id}")));
    }
    // The launcher and the helper's part first: if either fails, the profile still exists and
    // can be deleted again.
    crate::launcher::remove(dirs, id)?;
    storage::destroy(&p)?;
    profile::delete(dirs, id)?;
    // Its link schemes go back to their previous handler if no other profile needs them; a
    // failure here leaves Doppel as the handler, which still opens links in the first copy.
    let _ = crate::links::sync(dirs);
    Ok(())
}

/// Gives profile `id` a new display name (and its launcher with it); a running clone shows it
/// from its next start. Returns warnings about the launcher.
pub fn rename(dirs: &Dirs, id: &ProfileId, name: &str) -> Result<Vec<String>, ManageError> {
    let mut p = profile::load(dirs, id)?;
    p.name = name.trim().to_owned();
    profile::save(dirs, &p)?;
    Ok(crate::launcher::refresh(dirs, &p))
}

/// Gives profile `id` a new badge colour (`#rrggbb`), redrawing its launcher's icon. Returns
/// warnings about the launcher.
pub fn set_color(dirs: &Dirs, id: &ProfileId, color: &str) -> Result<Vec<String>, ManageError> {
    let mut p = profile::load(dirs, id)?;
    p.color = color.to_owned();
    profile::save(dirs, &p)?;
    Ok(crate::launcher::refresh(dirs, &p))
}

/// Space a profile takes on disk, in bytes actually allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Its own directory: the private home (or the keys of an encrypted profile).
    pub data: u64,
    /// Its encrypted volume's image (sparse: only what is written counts).
    pub volume: u64,
    /// The changed files of a copy-on-write home kept outside a volume.
    pub changes: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.data + self.volume + self.changes
    }
}

/// Measures what profile `p` takes on disk (slow for a big home: it walks the tree).
/// Unreadable parts (a locked volume's plain layers, files the app made unreadable) are
/// skipped, not reported: this is a figure for a person, not an audit.
pub fn usage(dirs: &Dirs, p: &Profile) -> Usage {
    let mut u = Usage {
        data: tree_size(&dirs.profile_data(&p.id)),
        ..Usage::default()
    };
    if p.encrypted {
        u.volume = fs::metadata(storage::image_path(p))
            .map(|m| m.blocks() * 512)
            .unwrap_or(0);
    } else if p.home == HomeMode::Overlay {
        u.changes = storage::upper_dir(p).map_or(0, |d| tree_size(&d));
    }
    u
}

/// Bytes allocated to everything below `dir`, not following links or crossing mounts.
fn tree_size(dir: &Path) -> u64 {
    let Ok(top) = fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut total = top.blocks() * 512;
    if !top.is_dir() {
        return total;
    }
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += m.blocks() * 512;
            if m.is_dir() && m.dev() == top.dev() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// `n` bytes for a person: "0 bytes", "12.3 MB" (SI units, as GNOME shows sizes).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} bytes");
    }
    // Display only: the precision lost in the cast does not show at one decimal.
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 999.95 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_gnome() {
        assert_eq!(human_size(0), "0 bytes");
        assert_eq!(human_size(999), "999 bytes");
        assert_eq!(human_size(1000), "1.0 kB");
        assert_eq!(human_size(12_345_678), "12.3 MB");
        assert_eq!(human_size(999_960), "1.0 MB");
        assert_eq!(human_size(3 * 1000u64.pow(5) * 1000), "3000.0 PB");
    }

    #[test]
    fn tree_size_counts_files_below() {
        let t = tempfile::tempdir().unwrap();
        let empty = tree_size(t.path());
        fs::create_dir(t.path().join("a")).unwrap();
        fs::write(t.path().join("a/f"), vec![7u8; 100_000]).unwrap();
        let full = tree_size(t.path());
        assert!(full >= empty + 100_000, "{empty} → {full}");
        assert_eq!(tree_size(&t.path().join("missing")), 0);
    }
}
