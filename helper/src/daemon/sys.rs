//! Every raw system call the helper makes, wrapped once so its error names the call and its
//! arguments: loop devices, fscrypt ioctls, mounts, and files opened without following links.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A failed system call, named with its arguments.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {source}")]
pub struct SysError {
    pub call: String,
    pub source: io::Error,
}

impl SysError {
    /// The errno, if any.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

pub type Result<T> = std::result::Result<T, SysError>;

fn last(call: impl Into<String>) -> SysError {
    SysError {
        call: call.into(),
        source: io::Error::last_os_error(),
    }
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SysError {
        call: format!("path {p:?}"),
        source: io::Error::from_raw_os_error(libc::EINVAL),
    })
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| SysError {
        call: format!("string {s:?}"),
        source: io::Error::from_raw_os_error(libc::EINVAL),
    })
}

fn fd_or_err(r: libc::c_int, call: impl FnOnce() -> String) -> Result<OwnedFd> {
    if r < 0 {
        return Err(last(call()));
    }
    // SAFETY: r is a new fd returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC)`: one path component, no symlink.
pub fn openat(dir: RawFd, name: &str, flags: libc::c_int, mode: libc::mode_t) -> Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: c is a valid C string; the flags and mode are plain integers.
    let r = unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    fd_or_err(r, || format!("openat({name:?}, {flags:#o})"))
}

/// Opens an absolute path component by component without following any symlink.
pub fn open_nofollow(path: &Path, flags: libc::c_int) -> Result<OwnedFd> {
    let root = cpath(Path::new("/"))?;
    // SAFETY: root is a valid C string.
    let mut fd = fd_or_err(
        unsafe {
            libc::open(
                root.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        },
        || "open(/)".into(),
    )?;
    let comps: Vec<_> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    for (i, c) in comps.iter().enumerate() {
        let last_one = i + 1 == comps.len();
        let f = if last_one {
            flags
        } else {
            libc::O_PATH | libc::O_DIRECTORY
        };
        fd = openat(fd.as_raw_fd(), c, f, 0).map_err(|e| SysError {
            call: format!("open {path:?} (at {c:?}, symlinks refused)"),
            source: e.source,
        })?;
    }
    Ok(fd)
}

/// `mkdirat` that tolerates an existing entry.
pub fn mkdirat(dir: RawFd, name: &str, mode: libc::mode_t) -> Result<()> {
    let c = cstr(name)?;
    // SAFETY: c is a valid C string.
    if unsafe { libc::mkdirat(dir, c.as_ptr(), mode) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(SysError {
                call: format!("mkdirat({name:?})"),
                source: e,
            });
        }
    }
    Ok(())
}

/// `fstat` of an fd.
pub fn fstat(fd: RawFd) -> Result<libc::stat> {
    // SAFETY: st is plain old data, filled in by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a valid descriptor and st a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(last("fstat"));
    }
    Ok(st)
}

/// `fchown` + `fchmod`.
pub fn set_owner_mode(fd: RawFd, uid: u32, gid: u32, mode: libc::mode_t, what: &str) -> Result<()> {
    // SAFETY: fd is valid; integers only.
    if unsafe { libc::fchown(fd, uid, gid) } < 0 {
        return Err(last(format!("fchown({what}, {uid}:{gid})")));
    }
    // SAFETY: as above.
    if unsafe { libc::fchmod(fd, mode) } < 0 {
        return Err(last(format!("fchmod({what}, {mode:o})")));
    }
    Ok(())
}

/// `mount(src, dst, fstype, flags, data)`.
pub fn mount(src: &str, dst: &Path, fstype: &str, flags: libc::c_ulong, data: &str) -> Result<()> {
    let (s, d, t, o) = (cstr(src)?, cpath(dst)?, cstr(fstype)?, cstr(data)?);
    // SAFETY: all pointers are valid C strings for the call.
    let r = unsafe { libc::mount(s.as_ptr(), d.as_ptr(), t.as_ptr(), flags, o.as_ptr().cast()) };
    if r < 0 {
        return Err(last(format!("mount({src} -> {dst:?}, {fstype}, {data:?})")));
    }
    Ok(())
}

/// `umount2(path, flags)`.
pub fn umount(path: &Path, flags: libc::c_int) -> Result<()> {
    let c = cpath(path)?;
    // SAFETY: c is a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), flags | libc::UMOUNT_NOFOLLOW) } < 0 {
        return Err(last(format!("umount2({path:?})")));
    }
    Ok(())
}

// Loop devices (linux/loop.h).
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `image` to a free loop device that detaches itself when its last user goes (the
/// mount); returns the device path and an open fd on it.
pub fn loop_attach(image: &File) -> Result<(PathBuf, OwnedFd)> {
    let ctl = open_nofollow(Path::new("/dev/loop-control"), libc::O_RDWR)?;
    for _ in 0..16 {
        // SAFETY: integer ioctl on the loop-control fd.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(last("ioctl(/dev/loop-control, LOOP_CTL_GET_FREE)"));
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let fd = open_nofollow(&dev, libc::O_RDWR)?;
        // SAFETY: LoopConfig is plain old data; all-zero is valid.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = image.as_raw_fd() as u32;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: cfg is a valid loop_config for the duration of the call.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
        if r == 0 {
            return Ok((dev, fd));
        }
        let e = io::Error::last_os_error();
        // Another process took this device between GET_FREE and CONFIGURE: try the next.
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(SysError {
                call: format!("ioctl({dev:?}, LOOP_CONFIGURE)"),
                source: e,
            });
        }
    }
    Err(SysError {
        call: "finding a free loop device".into(),
        source: io::Error::from_raw_os_error(libc::EBUSY),
    })
}

/// Detaches a loop device.
pub fn loop_detach(dev: &Path) -> Result<()> {
    let fd = open_nofollow(dev, libc::O_RDWR)?;
    // SAFETY: integer ioctl on a loop device fd.
    if unsafe { libc::ioctl(fd.as_raw_fd(), LOOP_CLR_FD, 0) } < 0 {
        return Err(last(format!("ioctl({dev:?}, LOOP_CLR_FD)")));
    }
    Ok(())
}

/// Loop devices whose backing file is `image` (from sysfs).
pub fn loops_backed_by(image: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .map(|b| {
                    let b = b.trim_end_matches('\n');
                    // A deleted image shows as "<path> (deleted)".
                    Path::new(b.trim_end_matches(" (deleted)")) == image
                })
                .unwrap_or(false)
        })
        .map(|e| PathBuf::from("/dev").join(e.file_name()))
        .collect()
}

// fscrypt (linux/fscrypt.h): v2 policies, keys in the filesystem's keyring.
const FS_IOC_SET_ENCRYPTION_POLICY: libc::c_ulong = 0x800c_6613;
const FS_IOC_GET_ENCRYPTION_POLICY_EX: libc::c_ulong = 0xc009_6616;
const FS_IOC_ADD_ENCRYPTION_KEY: libc::c_ulong = 0xc050_6617;
const FS_IOC_REMOVE_ENCRYPTION_KEY: libc::c_ulong = 0xc040_6618;
const FS_IOC_GET_ENCRYPTION_KEY_STATUS: libc::c_ulong = 0xc080_661a;
const KEY_SPEC_TYPE_IDENTIFIER: u32 = 2;
const MODE_AES_256_XTS: u8 = 1;
const MODE_AES_256_CTS: u8 = 4;
const POLICY_FLAGS_PAD_32: u8 = 0x03;
/// The kernel's key identifier of a v2 master key.
pub type KeyId = [u8; 16];

#[repr(C)]
struct KeySpec {
    kind: u32,
    reserved: u32,
    u: [u8; 32],
}

#[repr(C)]
struct AddKeyArg {
    spec: KeySpec,
    raw_size: u32,
    key_id: u32,
    reserved: [u32; 8],
    raw: [u8; 64],
}

#[repr(C)]
struct RemoveKeyArg {
    spec: KeySpec,
    removal_status_flags: u32,
    reserved: [u32; 5],
}

#[repr(C)]
struct KeyStatusArg {
    spec: KeySpec,
    reserved: [u32; 6],
    status: u32,
    status_flags: u32,
    user_count: u32,
    out_reserved: [u32; 13],
}

#[repr(C)]
struct PolicyV2 {
    version: u8,
    contents: u8,
    filenames: u8,
    flags: u8,
    reserved: [u8; 4],
    identifier: KeyId,
}

#[repr(C)]
struct PolicyEx {
    size: u64,
    policy: PolicyV2,
}

/// Adds a 64-byte master key to the keyring of the filesystem `fs_fd` is on; returns its
/// identifier.
pub fn fscrypt_add_key(fs_fd: RawFd, key: &[u8]) -> Result<KeyId> {
    if key.len() != 64 {
        return Err(SysError {
            call: format!("FS_IOC_ADD_ENCRYPTION_KEY: a key of {} bytes", key.len()),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    // SAFETY: AddKeyArg is plain old data; all-zero is valid.
    let mut arg: AddKeyArg = unsafe { std::mem::zeroed() };
    arg.spec.kind = KEY_SPEC_TYPE_IDENTIFIER;
    arg.raw_size = 64;
    arg.raw.copy_from_slice(key);
    // SAFETY: arg is a valid fscrypt_add_key_arg with 64 bytes of raw key after it.
    let r = unsafe { libc::ioctl(fs_fd, FS_IOC_ADD_ENCRYPTION_KEY, &mut arg as *mut AddKeyArg) };
    let result = if r < 0 {
        Err(last("ioctl(FS_IOC_ADD_ENCRYPTION_KEY)"))
    } else {
        let mut id = [0u8; 16];
        id.copy_from_slice(&arg.spec.u[..16]);
        Ok(id)
    };
    // The raw key must not linger in this stack frame.
    for b in arg.raw.iter_mut() {
        // SAFETY: a volatile write to a valid, aligned byte of a local.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    result
}

/// Removes a master key from the filesystem's keyring, wiping it and evicting the files it
/// unlocked; returns true when files were still in use (the removal is then incomplete).
pub fn fscrypt_remove_key(fs_fd: RawFd, id: &KeyId) -> Result<bool> {
    // SAFETY: RemoveKeyArg is plain old data; all-zero is valid.
    let mut arg: RemoveKeyArg = unsafe { std::mem::zeroed() };
    arg.spec.kind = KEY_SPEC_TYPE_IDENTIFIER;
    arg.spec.u[..16].copy_from_slice(id);
    // SAFETY: arg is a valid fscrypt_remove_key_arg.
    let r = unsafe {
        libc::ioctl(
            fs_fd,
            FS_IOC_REMOVE_ENCRYPTION_KEY,
            &mut arg as *mut RemoveKeyArg,
        )
    };
    if r < 0 {
        return Err(last("ioctl(FS_IOC_REMOVE_ENCRYPTION_KEY)"));
    }
    Ok(arg.removal_status_flags & 1 != 0)
}

/// Whether the key `id` is present in the filesystem's keyring.
pub fn fscrypt_key_present(fs_fd: RawFd, id: &KeyId) -> Result<bool> {
    // SAFETY: KeyStatusArg is plain old data; all-zero is valid.
    let mut arg: KeyStatusArg = unsafe { std::mem::zeroed() };
    arg.spec.kind = KEY_SPEC_TYPE_IDENTIFIER;
    arg.spec.u[..16].copy_from_slice(id);
    // SAFETY: arg is a valid fscrypt_get_key_status_arg.
    let r = unsafe {
        libc::ioctl(
            fs_fd,
            FS_IOC_GET_ENCRYPTION_KEY_STATUS,
            &mut arg as *mut KeyStatusArg,
        )
    };
    if r < 0 {
        return Err(last("ioctl(FS_IOC_GET_ENCRYPTION_KEY_STATUS)"));
    }
    Ok(arg.status == 2) // FSCRYPT_KEY_STATUS_PRESENT
}

/// Sets a v2 policy (AES-256-XTS contents, AES-256-CTS names) on the empty directory `dir_fd`.
pub fn fscrypt_set_policy(dir_fd: RawFd, id: &KeyId) -> Result<()> {
    let p = PolicyV2 {
        version: 2,
        contents: MODE_AES_256_XTS,
        filenames: MODE_AES_256_CTS,
        flags: POLICY_FLAGS_PAD_32,
        reserved: [0; 4],
        identifier: *id,
    };
    // SAFETY: p is a valid fscrypt_policy_v2.
    let r = unsafe { libc::ioctl(dir_fd, FS_IOC_SET_ENCRYPTION_POLICY, &p as *const PolicyV2) };
    if r < 0 {
        return Err(last("ioctl(FS_IOC_SET_ENCRYPTION_POLICY)"));
    }
    Ok(())
}

/// The key identifier of the v2 policy on `dir_fd`, if it has one.
pub fn fscrypt_policy_id(dir_fd: RawFd) -> Result<Option<KeyId>> {
    // SAFETY: PolicyEx is plain old data; all-zero is valid.
    let mut arg: PolicyEx = unsafe { std::mem::zeroed() };
    arg.size = std::mem::size_of::<PolicyV2>() as u64;
    // SAFETY: arg is a valid fscrypt_get_policy_ex_arg of the size given.
    let r = unsafe {
        libc::ioctl(
            dir_fd,
            FS_IOC_GET_ENCRYPTION_POLICY_EX,
            &mut arg as *mut PolicyEx,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENODATA) {
            return Ok(None);
        }
        return Err(SysError {
            call: "ioctl(FS_IOC_GET_ENCRYPTION_POLICY_EX)".into(),
            source: e,
        });
    }
    Ok((arg.policy.version == 2).then_some(arg.policy.identifier))
}

// The new mount API, for mounting onto a directory held by fd (never by path).
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// A detached, non-recursive bind of `src` (the way to bind a home without what is mounted
/// below it).
pub fn clone_mount(src: &Path) -> Result<OwnedFd> {
    let c = cpath(src)?;
    // SAFETY: c is a valid C string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(last(format!("open_tree({src:?}, OPEN_TREE_CLONE)")));
    }
    // SAFETY: r is a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// Attaches a detached mount onto the directory `target` (an O_PATH fd).
pub fn move_mount_to_fd(mnt: &OwnedFd, target: &OwnedFd, what: &str) -> Result<()> {
    // SAFETY: both fds are valid; empty paths with the EMPTY_PATH flags refer to them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(last(format!("move_mount(-> {what})")));
    }
    Ok(())
}

/// Mounts at the directory held by `target`: the kernel resolves `/proc/self/fd/N` to exactly
/// that directory, so a symlink swapped in meanwhile changes nothing.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `flock(fd, LOCK_EX | LOCK_NB)`: false when someone else holds it.
pub fn try_lock(fd: RawFd) -> Result<bool> {
    // SAFETY: integer flags on a valid fd.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(SysError {
            call: "flock".into(),
            source: e,
        })
    }
}

/// Mount points listed in /proc/self/mountinfo, with their source device (major:minor) and
/// filesystem type.
pub fn mounts() -> Vec<(PathBuf, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            let point = unescape(f.get(4)?);
            Some((
                PathBuf::from(point),
                (*f.get(2)?).to_owned(),
                (*f.get(dash + 1)?).to_owned(),
            ))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `p` is a mount point now.
pub fn is_mounted(p: &Path) -> bool {
    mounts().iter().any(|(m, _, _)| m == p)
}
