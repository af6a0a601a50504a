//! Running instances: a lock held by the monitor for as long as the instance lives, and a record
//! of its processes, both under `$XDG_RUNTIME_DIR/doppel/`.
//!
//! Whether a profile runs is decided by the lock alone (an `flock` that the kernel drops when
//! the monitor dies), never by a record that a crash could leave behind.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dirs::{Dirs, DirsError};
use crate::id::ProfileId;
use crate::profile::{HomeMode, NetworkMode};

/// What is recorded about a running instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub profile: ProfileId,
    /// `doppel run`, which owns the instance.
    pub monitor_pid: i32,
    /// The first process inside the sandbox (its session id too): with a PID namespace, its
    /// init (PID 1 inside), which lives as long as any process of the sandbox.
    pub sandbox_pid: i32,
    #[serde(default)]
    pub pasta_pid: Option<i32>,
    #[serde(default)]
    pub proxy_pid: Option<i32>,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub network: NetworkMode,
    pub home: HomeMode,
    pub command: Vec<String>,
}

/// Problems with instance bookkeeping.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(transparent)]
    Dirs(#[from] DirsError),
    #[error("profile \"{id}\" is already running (monitor pid {pid}); `doppel stop {id}` ends it")]
    AlreadyRunning { id: ProfileId, pid: i32 },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> InstanceError + 'a {
    move |source| InstanceError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// `$XDG_RUNTIME_DIR/doppel`, created private.
fn state_dir(dirs: &Dirs) -> Result<PathBuf, InstanceError> {
    let d = dirs.runtime()?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)
        .map_err(io_err("cannot create", &d))?;
    Ok(d)
}

fn lock_path(dirs: &Dirs, id: &ProfileId) -> Result<PathBuf, InstanceError> {
    Ok(state_dir(dirs)?.join(format!("{id}.lock")))
}

fn record_path(dirs: &Dirs, id: &ProfileId) -> Result<PathBuf, InstanceError> {
    Ok(state_dir(dirs)?.join(format!("{id}.instance")))
}

fn open_lock(path: &Path) -> Result<File, InstanceError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("cannot open", path))
}

fn try_flock(f: &File) -> io::Result<bool> {
    // SAFETY: flock on a valid fd with integer flags.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Proof that this process owns the instance of a profile; dropping it releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    record: PathBuf,
}

impl InstanceLock {
    /// Takes the lock of `id`, or says who has it.
    pub fn acquire(dirs: &Dirs, id: &ProfileId) -> Result<Self, InstanceError> {
        let path = lock_path(dirs, id)?;
        let f = open_lock(&path)?;
        // `status` takes the lock for an instant to test it (a GUI polls every second), so a
        // refusal is only believed once it has lasted a little while.
        let mut got = false;
        for _ in 0..10 {
            got = try_flock(&f).map_err(io_err("cannot lock", &path))?;
            if got {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !got {
            let pid = read_record(dirs, id).map_or(0, |r| r.monitor_pid);
            return Err(InstanceError::AlreadyRunning {
                id: id.clone(),
                pid,
            });
        }
        Ok(Self {
            _file: f,
            record: record_path(dirs, id)?,
        })
    }

    /// Writes the record of the running instance.
    pub fn write_record(&self, r: &InstanceRecord) -> Result<(), InstanceError> {
        let text = toml::to_string(r).map_err(|e| InstanceError::Io {
            what: "cannot encode",
            path: self.record.clone(),
            source: io::Error::other(e),
        })?;
        crate::atomic::write(&self.record, text.as_bytes(), 0o600)
            .map_err(io_err("cannot write", &self.record))
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.record);
    }
}

fn read_record(dirs: &Dirs, id: &ProfileId) -> Option<InstanceRecord> {
    let text = fs::read_to_string(record_path(dirs, id).ok()?).ok()?;
    toml::from_str(&text).ok()
}

/// The running instance of `id`, if any.
pub fn status(dirs: &Dirs, id: &ProfileId) -> Result<Option<InstanceRecord>, InstanceError> {
    let path = lock_path(dirs, id)?;
    if !path.exists() {
        return Ok(None);
    }
    let f = open_lock(&path)?;
    if try_flock(&f).map_err(io_err("cannot lock", &path))? {
        return Ok(None);
    }
    // Running, but the record may not be written yet (the instance is starting).
    Ok(Some(read_record(dirs, id).unwrap_or(InstanceRecord {
        profile: id.clone(),
        monitor_pid: 0,
        sandbox_pid: 0,
        pasta_pid: None,
        proxy_pid: None,
        started: 0,
        network: NetworkMode::default(),
        home: HomeMode::default(),
        command: Vec::new(),
    })))
}

/// Whether `id` is running.
pub fn is_running(dirs: &Dirs, id: &ProfileId) -> Result<bool, InstanceError> {
    Ok(status(dirs, id)?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(d: &Path) -> Dirs {
        Dirs {
            home: d.into(),
            config_home: d.join("c"),
            data_home: d.join("d"),
            data_dirs: vec![],
            runtime_dir: Some(d.join("run")),
        }
    }

    #[test]
    fn the_lock_decides_and_is_released_on_drop() {
        let t = tempfile::tempdir().unwrap();
        let dirs = dirs(t.path());
        let id = ProfileId::parse("work").unwrap();
        assert!(!is_running(&dirs, &id).unwrap());
        let lock = InstanceLock::acquire(&dirs, &id).unwrap();
        let rec = InstanceRecord {
            profile: id.clone(),
            monitor_pid: 42,
            sandbox_pid: 43,
            pasta_pid: None,
            proxy_pid: Some(44),
            started: 1,
            network: NetworkMode::None,
            home: HomeMode::Private,
            command: vec!["sh".into()],
        };
        lock.write_record(&rec).unwrap();
        assert_eq!(status(&dirs, &id).unwrap(), Some(rec));
        match InstanceLock::acquire(&dirs, &id) {
            Err(InstanceError::AlreadyRunning { pid: 42, .. }) => {}
            other => panic!("{other:?}"),
        }
        drop(lock);
        assert!(!is_running(&dirs, &id).unwrap());
        assert!(!record_path(&dirs, &id).unwrap().exists());
    }

    #[test]
    fn a_stale_record_without_a_lock_holder_means_not_running() {
        let t = tempfile::tempdir().unwrap();
        let dirs = dirs(t.path());
        let id = ProfileId::parse("work").unwrap();
        fs::create_dir_all(dirs.runtime().unwrap()).unwrap();
        fs::write(lock_path(&dirs, &id).unwrap(), b"").unwrap();
        fs::write(record_path(&dirs, &id).unwrap(), b"garbage").unwrap();
        assert!(!is_running(&dirs, &id).unwrap());
    }
}
