//! The volume operations, for one caller uid at a time. Every path is derived here from the uid
//! and a validated id; directories the helper relies on are root-owned and checked; files are
//! opened without following symlinks; anything mounted onto a user-writable place is mounted
//! onto a directory held by fd.

use std::fs::{self, File};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::config::Limits;
use super::sys::{self, SysError};
use doppel_helper::wire::{valid_id, VolumeInfo, KEY_LEN, RUN_DIR, STATE_DIR};

/// Why an operation was refused or failed; the service maps each kind to a D-Bus error.
#[derive(Debug, thiserror::Error)]
pub enum VolError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    WrongKey(String),
    #[error("{0}")]
    Failed(String),
}

impl From<SysError> for VolError {
    fn from(e: SysError) -> Self {
        VolError::Failed(e.to_string())
    }
}

type Result<T> = std::result::Result<T, VolError>;

/// The caller, as the bus daemon vouches for it.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// Crash points for tests of recovery: a debug build aborts at the step named by
/// `DOPPEL_HELPER_CRASH_AT`; a release build never does.
fn crash_point(step: &str) {
    if cfg!(debug_assertions) && std::env::var("DOPPEL_HELPER_CRASH_AT").as_deref() == Ok(step) {
        std::process::abort();
    }
}

fn check_id(id: &str) -> Result<()> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(VolError::InvalidArgument(format!(
            "\"{}\" is not a profile id (a-z, 0-9 and '-', at most 63 characters)",
            id.escape_default()
        )))
    }
}

/// A root-owned directory, created if missing; refuses anything else found there.
fn root_dir(parent: &OwnedFd, name: &str, mode: libc::mode_t, shown: &Path) -> Result<OwnedFd> {
    sys::mkdirat(parent.as_raw_fd(), name, mode)?;
    let fd = sys::openat(
        parent.as_raw_fd(),
        name,
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )
    .map_err(|e| {
        VolError::Failed(format!(
            "{} is not a plain directory ({}); remove it and try again",
            shown.display(),
            e.source
        ))
    })?;
    let st = sys::fstat(fd.as_raw_fd())?;
    if st.st_uid != 0 {
        return Err(VolError::Failed(format!(
            "{} is not owned by root; refusing to use it",
            shown.display()
        )));
    }
    sys::set_owner_mode(fd.as_raw_fd(), 0, 0, mode, &shown.display().to_string())?;
    Ok(fd)
}

fn open_abs_dir(p: &str) -> Result<OwnedFd> {
    // /var/lib and /run are the system's; only what Doppel adds below them is created here.
    let parent = Path::new(p).parent().unwrap_or(Path::new("/"));
    let name = Path::new(p)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let pfd = sys::open_nofollow(parent, libc::O_RDONLY | libc::O_DIRECTORY)?;
    root_dir(&pfd, name, 0o755, Path::new(p))
}

/// Paths of one user's volume `id`.
struct Volume {
    caller: Caller,
    id: String,
    /// `/var/lib/doppel/<uid>` (root, 0700)
    state: OwnedFd,
    /// `/run/doppel/<uid>` (root, 0755)
    run: OwnedFd,
}

impl Volume {
    fn open(caller: Caller, id: &str) -> Result<Volume> {
        check_id(id)?;
        let base = open_abs_dir(STATE_DIR)?;
        let uid = caller.uid.to_string();
        // 0711: the person may reach their copy-on-write layers (for `doppel diff`) by name;
        // images inside stay root-only.
        let state = root_dir(&base, &uid, 0o711, &Path::new(STATE_DIR).join(&uid))?;
        let rbase = open_abs_dir(RUN_DIR)?;
        let run = root_dir(&rbase, &uid, 0o755, &Path::new(RUN_DIR).join(&uid))?;
        Ok(Volume {
            caller,
            id: id.to_owned(),
            state,
            run,
        })
    }

    fn image_name(&self) -> String {
        format!("{}.img", self.id)
    }

    fn image_path(&self) -> PathBuf {
        Path::new(STATE_DIR)
            .join(self.caller.uid.to_string())
            .join(self.image_name())
    }

    /// `/run/doppel/<uid>/<id>`: where the volume is mounted.
    fn mountpoint(&self) -> PathBuf {
        Path::new(RUN_DIR)
            .join(self.caller.uid.to_string())
            .join(&self.id)
    }

    fn home_mount(&self) -> PathBuf {
        self.mountpoint().join("home")
    }

    fn lower_mount(&self) -> PathBuf {
        Path::new(RUN_DIR)
            .join(self.caller.uid.to_string())
            .join(".lower")
            .join(&self.id)
    }

    fn open_image(&self) -> Result<File> {
        match sys::openat(self.state.as_raw_fd(), &self.image_name(), libc::O_RDWR, 0) {
            Ok(fd) => Ok(File::from(fd)),
            Err(e) if e.errno() == Some(libc::ENOENT) => Err(VolError::NotFound(format!(
                "profile \"{}\" has no encrypted volume",
                self.id
            ))),
            Err(e) => Err(e.into()),
        }
    }

    fn image_exists(&self) -> bool {
        sys::openat(self.state.as_raw_fd(), &self.image_name(), libc::O_PATH, 0).is_ok()
    }

    /// Holds an exclusive lock on the image for the length of an operation (until the returned
    /// fd closes): two unlocks, or an unlock and a lock, of one volume never interleave. The lock
    /// is on its own open of the image, since the loop device keeps the other one open.
    fn lock_image(&self, _img: &File) -> Result<OwnedFd> {
        let fd = sys::openat(
            self.state.as_raw_fd(),
            &self.image_name(),
            libc::O_RDONLY,
            0,
        )?;
        if sys::try_lock(fd.as_raw_fd())? {
            Ok(fd)
        } else {
            Err(VolError::Busy(format!(
                "another operation on the volume of \"{}\" is under way; try again",
                self.id
            )))
        }
    }

    /// `/run/doppel/<uid>/<id>`, root-owned; once a volume is mounted its (private) root covers
    /// it; without a volume it holds the copy-on-write home, which the person must reach.
    fn mount_dir(&self) -> Result<OwnedFd> {
        root_dir(&self.run, &self.id, 0o755, &self.mountpoint())
    }
}

/// The caller's image files: (id, apparent size, bytes on disk).
fn images(caller: Caller) -> Result<Vec<(String, u64, u64)>> {
    let dir = Path::new(STATE_DIR).join(caller.uid.to_string());
    // Opened without following symlinks and read through its fd, like every other path here:
    // a link planted at /var/lib/doppel/<uid> must not show (or hand over) another's images.
    let fd = match sys::open_nofollow(&dir, libc::O_RDONLY | libc::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(Vec::new()),
        Err(e) => {
            return Err(VolError::Failed(format!(
                "{} is not a plain directory ({}); remove it and try again",
                dir.display(),
                e.source
            )))
        }
    };
    if sys::fstat(fd.as_raw_fd())?.st_uid != 0 {
        return Err(VolError::Failed(format!(
            "{} is not owned by root; refusing to use it",
            dir.display()
        )));
    }
    let Ok(rd) = fs::read_dir(sys::fd_path(&fd)) else {
        return Ok(Vec::new());
    };
    let mut v = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".img") else {
            continue;
        };
        if !valid_id(id) {
            continue;
        }
        if let Ok(m) = fs::symlink_metadata(e.path()) {
            if m.is_file() {
                v.push((id.to_owned(), m.size(), m.blocks() * 512));
            }
        }
    }
    v.sort();
    Ok(v)
}

fn find_tool(name: &str) -> Result<PathBuf> {
    // Fixed system locations only: the helper never searches a caller-influenced PATH.
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(d).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(VolError::Failed(format!(
        "{name} is not installed; install e2fsprogs (Debian/Ubuntu: apt install e2fsprogs)"
    )))
}

fn run_tool(tool: &str, args: &[&str]) -> Result<()> {
    let exe = find_tool(tool)?;
    let out = Command::new(&exe)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .map_err(|e| VolError::Failed(format!("cannot run {}: {e}", exe.display())))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(VolError::Failed(format!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.len() == KEY_LEN {
        Ok(())
    } else {
        Err(VolError::InvalidArgument(format!(
            "a volume key is {KEY_LEN} bytes, not {}",
            key.len()
        )))
    }
}

/// Creates, formats and unlocks a new volume; returns its mount point.
pub fn create(caller: Caller, id: &str, size: u64, key: &[u8], limits: &Limits) -> Result<String> {
    check_key(key)?;
    let v = Volume::open(caller, id)?;
    if size < limits.min_volume_size || size > limits.max_volume_size {
        return Err(VolError::LimitExceeded(format!(
            "a volume must be between {} MiB and {} GiB (set in /etc/doppel/helper.toml)",
            limits.min_volume_size >> 20,
            limits.max_volume_size >> 30
        )));
    }
    let existing = images(caller)?;
    if existing.iter().any(|(i, _, _)| i == id) {
        return Err(VolError::Exists(format!(
            "profile \"{id}\" already has a volume"
        )));
    }
    if existing.len() as u64 >= u64::from(limits.max_volumes) {
        return Err(VolError::LimitExceeded(format!(
            "you have {} volumes, the most allowed (max_volumes in /etc/doppel/helper.toml)",
            existing.len()
        )));
    }
    let total: u64 = existing.iter().map(|(_, s, _)| s).sum();
    if total.saturating_add(size) > limits.max_total_size {
        return Err(VolError::LimitExceeded(format!(
            "your volumes would total {} GiB, over the limit of {} GiB (max_total_size in \
             /etc/doppel/helper.toml)",
            (total + size) >> 30,
            limits.max_total_size >> 30
        )));
    }
    let fd = sys::openat(
        v.state.as_raw_fd(),
        &v.image_name(),
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        0o600,
    )
    .map_err(|e| {
        if e.errno() == Some(libc::EEXIST) {
            VolError::Exists(format!("profile \"{id}\" already has a volume"))
        } else {
            e.into()
        }
    })?;
    let img = File::from(fd);
    let result = (|| {
        let _guard = v.lock_image(&img)?;
        img.set_len(size).map_err(|e| {
            VolError::Failed(format!("cannot size {}: {e}", v.image_path().display()))
        })?;
        let owner = format!("root_owner={}:{}", caller.uid, caller.gid);
        let label = format!("doppel-{}", &id[..id.len().min(9)]);
        let path = v.image_path().display().to_string();
        run_tool(
            "mkfs.ext4",
            &[
                "-q", "-F", "-O", "encrypt", "-m", "0", "-L", &label, "-E", &owner, &path,
            ],
        )?;
        let mnt = attach_and_mount(&v, &img)?;
        let root = sys::open_nofollow(&mnt, libc::O_RDONLY | libc::O_DIRECTORY)?;
        sys::set_owner_mode(
            root.as_raw_fd(),
            caller.uid,
            caller.gid,
            0o700,
            "volume root",
        )?;
        let kid = sys::fscrypt_add_key(root.as_raw_fd(), key)?;
        sys::mkdirat(root.as_raw_fd(), "data", 0o700)?;
        let data = sys::openat(
            root.as_raw_fd(),
            "data",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?;
        sys::set_owner_mode(data.as_raw_fd(), caller.uid, caller.gid, 0o700, "data")?;
        sys::fscrypt_set_policy(data.as_raw_fd(), &kid)?;
        Ok(mnt.display().to_string())
    })();
    if result.is_err() {
        let mnt = v.mountpoint();
        if sys::is_mounted(&mnt) {
            let _ = sys::umount(&mnt, libc::MNT_DETACH);
        }
        let _ = fs::remove_file(v.image_path());
    }
    result
}

fn attach_and_mount(v: &Volume, img: &File) -> Result<PathBuf> {
    let mnt = v.mountpoint();
    let _dir = v.mount_dir()?;
    // A loop device may still back this image: a mount namespace made while the volume was
    // unlocked (a service's PrivateTmp, anyone's `unshare -m`) keeps its filesystem alive after
    // a lock. Mounting that same device again shares the one live filesystem; attaching a
    // second device would run two ext4 instances on one image and corrupt it.
    let existing = sys::loops_backed_by(&v.image_path()).into_iter().next();
    let (dev, _loop_fd, fresh) = match existing {
        Some(dev) => (dev, None, false),
        None => {
            let (dev, fd) = sys::loop_attach(img)?;
            (dev, Some(fd), true)
        }
    };
    crash_point("after-attach");
    if let Err(e) = sys::mount(
        &dev.display().to_string(),
        &mnt,
        "ext4",
        libc::MS_NOSUID | libc::MS_NODEV,
        "errors=remount-ro",
    ) {
        if fresh {
            let _ = sys::loop_detach(&dev);
        }
        return Err(e.into());
    }
    // The loop device now belongs to the mount: closing our fd lets it detach itself on unmount.
    crash_point("after-mount");
    Ok(mnt)
}

/// Unlocks (attaching and mounting first if needed); returns the mount point.
pub fn unlock(caller: Caller, id: &str, key: &[u8]) -> Result<String> {
    check_key(key)?;
    let v = Volume::open(caller, id)?;
    let img = v.open_image()?;
    let _guard = v.lock_image(&img)?;
    let mnt = v.mountpoint();
    let fresh = !sys::is_mounted(&mnt);
    if fresh {
        attach_and_mount(&v, &img)?;
    }
    let outcome = (|| {
        let root = sys::open_nofollow(&mnt, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let data = sys::openat(
            root.as_raw_fd(),
            "data",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| {
            VolError::Failed(format!("the volume of \"{id}\" has no data directory: {e}"))
        })?;
        let want = sys::fscrypt_policy_id(data.as_raw_fd())?.ok_or_else(|| {
            VolError::Failed(format!("the data directory of \"{id}\" is not encrypted"))
        })?;
        let got = sys::fscrypt_add_key(root.as_raw_fd(), key)?;
        crash_point("after-add-key");
        if got != want {
            let _ = sys::fscrypt_remove_key(root.as_raw_fd(), &got);
            return Err(VolError::WrongKey(format!(
                "that key does not open the volume of \"{id}\""
            )));
        }
        Ok(mnt.display().to_string())
    })();
    if outcome.is_err() && fresh {
        let _ = sys::umount(&mnt, 0);
    }
    outcome
}

/// Locks: unmounts the copy-on-write home and the volume, removes the key so the kernel forgets
/// the plaintext, and lets the loop device go.
pub fn lock(caller: Caller, id: &str) -> Result<()> {
    let v = Volume::open(caller, id)?;
    let img = v.open_image()?;
    let _guard = v.lock_image(&img)?;
    let mnt = v.mountpoint();
    if !sys::is_mounted(&mnt) {
        detach_stale_loops(&v);
        return Ok(());
    }
    if sys::is_mounted(&v.home_mount()) {
        unmount_overlay_of(&v)?;
    }
    let kid = {
        let root = sys::open_nofollow(&mnt, libc::O_RDONLY | libc::O_DIRECTORY)?;
        sys::openat(
            root.as_raw_fd(),
            "data",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .ok()
        .and_then(|d| sys::fscrypt_policy_id(d.as_raw_fd()).ok().flatten())
    };
    // A busy test that changes nothing: MNT_EXPIRE answers EBUSY for a mount in use, and EAGAIN
    // (after marking it) for one that is not.
    match sys::umount(&mnt, libc::MNT_EXPIRE) {
        Err(e) if e.errno() == Some(libc::EBUSY) => {
            return Err(VolError::Busy(format!(
                "the volume of \"{id}\" is in use; stop the profile first (doppel stop {id})"
            )))
        }
        Err(e) if e.errno() == Some(libc::EAGAIN) => {}
        Ok(()) => {}
        Err(e) => return Err(e.into()),
    }
    // Remove the key first, through the filesystem itself: the kernel wipes it and evicts every
    // decrypted file, even where a sandbox's mount namespace still holds a copy of the mount.
    if sys::is_mounted(&mnt) {
        let root = sys::open_nofollow(&mnt, libc::O_RDONLY | libc::O_DIRECTORY)?;
        if let Some(kid) = kid {
            match sys::fscrypt_remove_key(root.as_raw_fd(), &kid) {
                Ok(false) => {}
                Ok(true) => {
                    return Err(VolError::Busy(format!(
                        "files of \"{id}\" are still open; stop the profile, then lock again"
                    )))
                }
                Err(e) if e.errno() == Some(libc::ENOKEY) => {}
                Err(e) => return Err(e.into()),
            }
        }
        drop(root);
        crash_point("after-remove-key");
        sys::umount(&mnt, libc::MNT_DETACH)?;
    }
    crash_point("after-umount");
    detach_stale_loops(&v);
    Ok(())
}

fn detach_stale_loops(v: &Volume) {
    let img = v.image_path();
    for dev in sys::loops_backed_by(&img) {
        if !is_dev_mounted(&dev) {
            let _ = sys::loop_detach(&dev);
        }
    }
}

fn is_dev_mounted(dev: &Path) -> bool {
    let Some(name) = dev.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let Ok(majmin) = fs::read_to_string(format!("/sys/block/{name}/dev")) else {
        return false;
    };
    let majmin = majmin.trim();
    sys::mounts().iter().any(|(_, d, _)| d == majmin)
}

/// Deletes a locked volume and everything Doppel kept for the profile.
pub fn delete(caller: Caller, id: &str) -> Result<()> {
    let v = Volume::open(caller, id)?;
    let had_image = v.image_exists();
    if had_image {
        let img = v.open_image()?;
        let _guard = v.lock_image(&img)?;
        if sys::is_mounted(&v.mountpoint()) {
            return Err(VolError::Busy(format!(
                "the volume of \"{id}\" is unlocked; lock it first (doppel lock {id})"
            )));
        }
        let name = std::ffi::CString::new(v.image_name())
            .map_err(|_| VolError::InvalidArgument("id".into()))?;
        // SAFETY: a valid dirfd and C string.
        if unsafe { libc::unlinkat(v.state.as_raw_fd(), name.as_ptr(), 0) } < 0 {
            return Err(VolError::Failed(format!(
                "cannot remove {}: {}",
                v.image_path().display(),
                std::io::Error::last_os_error()
            )));
        }
    }
    if sys::is_mounted(&v.home_mount()) {
        return Err(VolError::Busy(format!(
            "the copy-on-write home of \"{id}\" is mounted; stop the profile first"
        )));
    }
    let overlay = Path::new(STATE_DIR)
        .join(caller.uid.to_string())
        .join("overlay")
        .join(id);
    let had_overlay = overlay.exists();
    let _ = fs::remove_dir_all(&overlay);
    let _ = fs::remove_dir(v.home_mount());
    let _ = fs::remove_dir(v.mountpoint());
    if !had_image && !had_overlay {
        return Err(VolError::NotFound(format!(
            "profile \"{id}\" has no volume"
        )));
    }
    Ok(())
}

/// Grows a locked volume to `size` bytes.
pub fn grow(caller: Caller, id: &str, size: u64, limits: &Limits) -> Result<()> {
    let v = Volume::open(caller, id)?;
    let img = v.open_image()?;
    let _guard = v.lock_image(&img)?;
    if sys::is_mounted(&v.mountpoint()) {
        return Err(VolError::Busy(format!(
            "lock \"{id}\" before growing its volume"
        )));
    }
    let cur = img
        .metadata()
        .map_err(|e| VolError::Failed(e.to_string()))?
        .len();
    if size <= cur {
        return Err(VolError::InvalidArgument(format!(
            "the volume is already {} MiB; a volume can only grow",
            cur >> 20
        )));
    }
    let total: u64 = images(caller)?.iter().map(|(_, s, _)| s).sum();
    if size > limits.max_volume_size || total - cur + size > limits.max_total_size {
        return Err(VolError::LimitExceeded(format!(
            "{} GiB is over the limits of /etc/doppel/helper.toml",
            size >> 30
        )));
    }
    img.set_len(size)
        .map_err(|e| VolError::Failed(e.to_string()))?;
    let path = v.image_path().display().to_string();
    run_tool("e2fsck", &["-f", "-p", &path])?;
    run_tool("resize2fs", &[&path])
}

/// The caller's volumes.
pub fn status(caller: Caller) -> Result<Vec<VolumeInfo>> {
    let run = Path::new(RUN_DIR).join(caller.uid.to_string());
    let mut out: Vec<VolumeInfo> = images(caller)?
        .into_iter()
        .map(|(id, size, used)| VolumeInfo {
            unlocked: sys::is_mounted(&run.join(&id)),
            overlay: sys::is_mounted(&run.join(&id).join("home")),
            id,
            size,
            used,
        })
        .collect();
    // Plain profiles with a copy-on-write home have no image.
    let ov = Path::new(STATE_DIR)
        .join(caller.uid.to_string())
        .join("overlay");
    if let Ok(rd) = fs::read_dir(ov) {
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if valid_id(&id) && !out.iter().any(|v| v.id == id) {
                out.push(VolumeInfo {
                    overlay: sys::is_mounted(&run.join(&id).join("home")),
                    id,
                    size: 0,
                    used: 0,
                    unlocked: false,
                });
            }
        }
    }
    Ok(out)
}

/// Opens (creating as needed, owned by the caller) a directory chain below `base`, refusing
/// symlinks, and checks it stays on the filesystem of `base`.
fn user_dir_chain(
    base: &OwnedFd,
    names: &[&str],
    caller: Caller,
    chown_new: bool,
) -> Result<OwnedFd> {
    let dev = sys::fstat(base.as_raw_fd())?.st_dev;
    let mut cur = sys::openat(base.as_raw_fd(), ".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    for n in names {
        sys::mkdirat(cur.as_raw_fd(), n, 0o700)?;
        let next = sys::openat(cur.as_raw_fd(), n, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(
            |e| {
                VolError::Failed(format!(
                    "{n}: not a plain directory (a symlink?): {}",
                    e.source
                ))
            },
        )?;
        let st = sys::fstat(next.as_raw_fd())?;
        if st.st_dev != dev {
            return Err(VolError::Failed(format!(
                "{n} is on another filesystem; refusing"
            )));
        }
        if chown_new && st.st_uid == 0 {
            sys::set_owner_mode(next.as_raw_fd(), caller.uid, caller.gid, 0o700, n)?;
        }
        cur = next;
    }
    Ok(cur)
}

/// Mounts the copy-on-write home at `/run/doppel/<uid>/<id>/home`: lower = the real home
/// (from the passwd database, bound without what is mounted below it), upper and work on the
/// profile's storage.
pub fn mount_overlay(caller: Caller, id: &str) -> Result<String> {
    let v = Volume::open(caller, id)?;
    let home_mnt = v.home_mount();
    if sys::is_mounted(&home_mnt) {
        return Ok(home_mnt.display().to_string());
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(caller.uid))
        .ok()
        .flatten()
        .ok_or_else(|| {
            VolError::Failed(format!("uid {} is not in the passwd database", caller.uid))
        })?;
    let real_home = user.dir;
    if !real_home.is_absolute() || !real_home.is_dir() {
        return Err(VolError::Failed(format!(
            "the home directory {} does not exist",
            real_home.display()
        )));
    }
    // Upper and work: on the unlocked volume, or (plain profile) under /var/lib/doppel/<uid>.
    let (storage, on_volume) = if v.image_exists() {
        if !sys::is_mounted(&v.mountpoint()) {
            return Err(VolError::Busy(format!(
                "unlock \"{id}\" first (doppel unlock {id})"
            )));
        }
        let root = sys::open_nofollow(&v.mountpoint(), libc::O_RDONLY | libc::O_DIRECTORY)?;
        (
            user_dir_chain(&root, &["data", "overlay"], caller, true)?,
            true,
        )
    } else {
        let ov = root_dir(&v.state, "overlay", 0o711, Path::new("overlay"))?;
        (root_dir(&ov, id, 0o711, Path::new(id))?, false)
    };
    let upper = user_dir_chain(&storage, &["upper"], caller, true)?;
    let work = user_dir_chain(&storage, &["work"], caller, false)?;
    if !on_volume {
        sys::set_owner_mode(work.as_raw_fd(), 0, 0, 0o700, "work")?;
    }
    // The lower layer: the real home, bound non-recursively (the kernel refuses an overlay whose
    // lower layer has submounts, such as the document portal at ~/.cache/doc).
    let lower_base = root_dir(&v.run, ".lower", 0o700, Path::new(".lower"))?;
    let lower_dir = root_dir(&lower_base, id, 0o700, &v.lower_mount())?;
    if !sys::is_mounted(&v.lower_mount()) {
        let tree = sys::clone_mount(&real_home)?;
        let target = sys::openat(
            lower_dir.as_raw_fd(),
            ".",
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        sys::move_mount_to_fd(&tree, &target, &v.lower_mount().display().to_string())?;
    }
    // From here on, a refusal must not leave the lower bind behind: nothing else removes it
    // while the overlay is not mounted (lock only looks when the overlay is).
    let mounted = mount_merged(&v, on_volume, &upper, &work);
    if mounted.is_err() {
        let _ = sys::umount(&v.lower_mount(), libc::MNT_DETACH);
    }
    mounted
}

/// The overlay itself, on `<mount point>/home`, once the lower bind is in place.
fn mount_merged(v: &Volume, on_volume: bool, upper: &OwnedFd, work: &OwnedFd) -> Result<String> {
    let home_mnt = v.home_mount();
    let lower = sys::open_nofollow(&v.lower_mount(), libc::O_PATH | libc::O_DIRECTORY)?;
    // The merged directory: below the volume's root (user-owned) only through an fd, so a
    // symlink planted there cannot redirect the mount.
    let mnt_root = if on_volume {
        sys::open_nofollow(&v.mountpoint(), libc::O_RDONLY | libc::O_DIRECTORY)?
    } else {
        v.mount_dir()?
    };
    sys::mkdirat(mnt_root.as_raw_fd(), "home", 0o700)?;
    let merged = sys::openat(
        mnt_root.as_raw_fd(),
        "home",
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .map_err(|e| {
        VolError::Failed(format!(
            "{}: not a plain directory: {}",
            home_mnt.display(),
            e.source
        ))
    })?;
    // Paths as /proc/self/fd/N: the kernel resolves each to exactly the directory opened above,
    // and no person-chosen text reaches the option string.
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        sys::fd_path(&lower).display(),
        sys::fd_path(upper).display(),
        sys::fd_path(work).display()
    );
    sys::mount(
        "overlay",
        &sys::fd_path(&merged),
        "overlay",
        libc::MS_NOSUID | libc::MS_NODEV,
        &opts,
    )?;
    Ok(home_mnt.display().to_string())
}

fn unmount_overlay_of(v: &Volume) -> Result<()> {
    let home = v.home_mount();
    if sys::is_mounted(&home) {
        match sys::umount(&home, 0) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EBUSY) => {
                return Err(VolError::Busy(format!(
                    "the copy-on-write home of \"{}\" is in use; stop the profile first",
                    v.id
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
    if sys::is_mounted(&v.lower_mount()) {
        sys::umount(&v.lower_mount(), libc::MNT_DETACH)?;
    }
    Ok(())
}

/// Unmounts the copy-on-write home.
pub fn unmount_overlay(caller: Caller, id: &str) -> Result<()> {
    let v = Volume::open(caller, id)?;
    unmount_overlay_of(&v)
}

/// Finds and cleans what a crash left of the caller's volumes: a volume mounted without its key,
/// an overlay without its volume, a lower bind without its overlay, loop devices without a mount.
pub fn recover(caller: Caller) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let run = Path::new(RUN_DIR).join(caller.uid.to_string());
    for (id, _, _) in images(caller)? {
        let v = Volume::open(caller, &id)?;
        let Ok(img) = v.open_image() else { continue };
        let Ok(_guard) = v.lock_image(&img) else {
            done.push(format!("{id}: busy, skipped"));
            continue;
        };
        let mnt = v.mountpoint();
        if sys::is_mounted(&mnt) {
            let keyed = sys::open_nofollow(&mnt, libc::O_RDONLY | libc::O_DIRECTORY)
                .ok()
                .and_then(|root| {
                    let data = sys::openat(
                        root.as_raw_fd(),
                        "data",
                        libc::O_RDONLY | libc::O_DIRECTORY,
                        0,
                    )
                    .ok()?;
                    let kid = sys::fscrypt_policy_id(data.as_raw_fd()).ok()??;
                    sys::fscrypt_key_present(root.as_raw_fd(), &kid).ok()
                })
                .unwrap_or(false);
            if !keyed {
                let _ = unmount_overlay_of(&v);
                if sys::umount(&mnt, 0).is_ok() {
                    done.push(format!("{id}: unmounted a volume left without its key"));
                }
            }
        } else if sys::is_mounted(&v.home_mount()) {
            let _ = sys::umount(&v.home_mount(), libc::MNT_DETACH);
            done.push(format!(
                "{id}: unmounted an overlay left without its volume"
            ));
        }
        for dev in sys::loops_backed_by(&v.image_path()) {
            if !is_dev_mounted(&dev) && sys::loop_detach(&dev).is_ok() {
                done.push(format!("{id}: detached {}", dev.display()));
            }
        }
    }
    // Lower binds whose overlay is gone.
    if let Ok(rd) = fs::read_dir(run.join(".lower")) {
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if valid_id(&id)
                && sys::is_mounted(&e.path())
                && !sys::is_mounted(&run.join(&id).join("home"))
                && sys::umount(&e.path(), libc::MNT_DETACH).is_ok()
            {
                done.push(format!(
                    "{id}: unmounted a lower layer left without its overlay"
                ));
            }
        }
    }
    Ok(done)
}
