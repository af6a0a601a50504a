//! Facts about the host a launch depends on: who the person is, which display, audio and bus
//! they have, which of their settings files exist. Probing touches the system; everything
//! built from the result ([`crate::plan`]) does not.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use crate::dirs::Dirs;

/// The X11 display in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X11Display {
    /// `DISPLAY` as given (":0").
    pub name: String,
    /// The display number (0 for ":0.0").
    pub number: u32,
    /// `/tmp/.X11-unix/X<number>`.
    pub socket: PathBuf,
}

/// A settings path below the home directory that exists on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeShare {
    /// Relative to the home directory.
    pub rel: PathBuf,
    /// Whether it is a directory (else a file).
    pub is_dir: bool,
}

/// Everything about the host that a sandbox plan needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub runtime_dir: PathBuf,
    pub hostname: String,
    pub x11: Option<X11Display>,
    /// The X authority file the host's clients use, if any.
    pub xauthority: Option<PathBuf>,
    /// `WAYLAND_DISPLAY` and its socket.
    pub wayland: Option<(String, PathBuf)>,
    pub pipewire: Option<PathBuf>,
    pub pulse: Option<PathBuf>,
    /// The session bus address the host's apps use.
    pub session_bus: Option<String>,
    /// The Downloads folder (XDG user dir), when it exists.
    pub downloads: Option<PathBuf>,
    pub dri: bool,
    pub snd: bool,
    /// Fonts, themes and toolkit settings found in the home directory.
    pub home_shares: Vec<HomeShare>,
    /// `/etc/resolv.conf` with symlinks resolved, when it exists.
    pub resolv_conf: Option<PathBuf>,
    /// The environment the app would inherit.
    pub env: Vec<(String, String)>,
    /// The current directory, if it is usable inside the sandbox.
    pub cwd: Option<PathBuf>,
    /// Whether `/run/doppel` (the helper's mounts) exists.
    pub run_doppel: bool,
    /// The `doppel` binary, which a clone runs as its `xdg-open` (see [`crate::opener`]); None
    /// when there is none to be found.
    pub opener: Option<PathBuf>,
    /// Whether the host has `/usr/bin/xdg-open` as a plain file: the opener then covers it in
    /// the sandbox, and hands local files to it.
    pub xdg_open: bool,
}

/// The host's `xdg-open`, covered by Doppel's opener inside clones.
pub const XDG_OPEN: &str = "/usr/bin/xdg-open";

/// Where the helper mounts unlocked volumes and copy-on-write homes.
pub const RUN_DOPPEL: &str = "/run/doppel";

/// Settings below `$HOME` that a clone reads from the host (read-only) so it looks like the
/// person's other apps: fonts, icon and cursor themes, GTK and Qt settings, sound-server cookie.
pub const HOME_SHARES: &[&str] = &[
    ".config/gtk-3.0",
    ".config/gtk-4.0",
    ".gtkrc-2.0",
    ".config/fontconfig",
    ".fonts.conf",
    ".local/share/fonts",
    ".fonts",
    ".icons",
    ".local/share/icons",
    ".themes",
    ".local/share/themes",
    ".config/Trolltech.conf",
    ".config/QtProject.conf",
    ".config/qt5ct",
    ".config/qt6ct",
    ".config/kdeglobals",
    ".config/Kvantum",
    ".config/user-dirs.dirs",
    ".config/user-dirs.locale",
    ".config/pulse/cookie",
    ".Xdefaults",
    ".Xresources",
];

/// Parses `DISPLAY` for a local display; `None` for a remote (TCP) one.
pub fn parse_display(display: &str) -> Option<X11Display> {
    let (host, rest) = display.rsplit_once(':')?;
    if !(host.is_empty() || host == "unix") {
        return None;
    }
    let num = rest.split('.').next()?;
    let number: u32 = num.parse().ok()?;
    Some(X11Display {
        name: display.to_owned(),
        number,
        socket: PathBuf::from(format!("/tmp/.X11-unix/X{number}")),
    })
}

/// Reads `XDG_DOWNLOAD_DIR` from a `user-dirs.dirs` text; `$HOME` is expanded.
pub fn parse_user_dir(text: &str, key: &str, home: &Path) -> Option<PathBuf> {
    for line in text.lines() {
        let line = line.trim();
        let Some(v) = line.strip_prefix(key).and_then(|r| r.strip_prefix('=')) else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        let p = if let Some(rest) = v.strip_prefix("$HOME") {
            home.join(rest.trim_start_matches('/'))
        } else {
            PathBuf::from(v)
        };
        // "$HOME/" alone means the feature is off.
        return (p.is_absolute() && p != home).then_some(p);
    }
    None
}

/// The session bus address: `DBUS_SESSION_BUS_ADDRESS`, else `$XDG_RUNTIME_DIR/bus` if it exists.
fn session_bus(runtime_dir: &Path) -> Option<String> {
    if let Ok(a) = env::var("DBUS_SESSION_BUS_ADDRESS") {
        if !a.is_empty() {
            return Some(a);
        }
    }
    let p = runtime_dir.join("bus");
    p.exists().then(|| format!("unix:path={}", p.display()))
}

impl HostFacts {
    /// Probes the running system.
    pub fn probe(dirs: &Dirs) -> Result<Self, crate::dirs::DirsError> {
        let runtime_dir = dirs
            .runtime_dir
            .clone()
            .ok_or(crate::dirs::DirsError::NoRuntimeDir)?;
        let home = dirs.home.clone();
        let x11 = env::var("DISPLAY").ok().and_then(|d| parse_display(&d));
        let xauthority = env::var_os("XAUTHORITY")
            .map(PathBuf::from)
            .or_else(|| Some(home.join(".Xauthority")))
            .filter(|p| p.is_file());
        let wayland = env::var("WAYLAND_DISPLAY").ok().and_then(|w| {
            let p = if w.starts_with('/') {
                PathBuf::from(&w)
            } else {
                runtime_dir.join(&w)
            };
            p.exists().then_some((w, p))
        });
        let exists = |p: PathBuf| p.exists().then_some(p);
        let downloads = downloads_dir(dirs);
        let home_shares = HOME_SHARES
            .iter()
            .filter_map(|rel| {
                let meta = fs::metadata(home.join(rel)).ok()?;
                Some(HomeShare {
                    rel: PathBuf::from(rel),
                    is_dir: meta.is_dir(),
                })
            })
            .collect();
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        let cwd = env::current_dir().ok();
        Ok(Self {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            session_bus: session_bus(&runtime_dir),
            pipewire: exists(runtime_dir.join("pipewire-0")),
            pulse: exists(runtime_dir.join("pulse/native")),
            runtime_dir,
            hostname,
            x11: x11.filter(|x| x.socket.exists()),
            xauthority,
            wayland,
            downloads,
            dri: Path::new("/dev/dri").is_dir(),
            snd: Path::new("/dev/snd").is_dir(),
            home_shares,
            resolv_conf: fs::canonicalize("/etc/resolv.conf").ok(),
            env: env::vars().collect(),
            cwd,
            home,
            run_doppel: Path::new(RUN_DOPPEL).is_dir(),
            opener: crate::launcher::doppel_binary().filter(|p| p.is_file()),
            // A plain file only: a bind cannot cover a symlink (the PATH shim still catches
            // calls by name).
            xdg_open: fs::symlink_metadata(XDG_OPEN).is_ok_and(|m| m.file_type().is_file()),
        })
    }
}

/// The person's Downloads folder (XDG user dir, else `~/Downloads`), when it exists.
pub fn downloads_dir(dirs: &Dirs) -> Option<PathBuf> {
    let user_dirs = fs::read_to_string(dirs.config_home.join("user-dirs.dirs")).ok();
    user_dirs
        .as_deref()
        .and_then(|t| parse_user_dir(t, "XDG_DOWNLOAD_DIR", &dirs.home))
        .or_else(|| Some(dirs.home.join("Downloads")))
        .filter(|p| p.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays() {
        let d = parse_display(":0").unwrap();
        assert_eq!(
            (d.number, d.socket),
            (0, PathBuf::from("/tmp/.X11-unix/X0"))
        );
        assert_eq!(parse_display(":12.1").unwrap().number, 12);
        assert_eq!(parse_display("unix:3").unwrap().number, 3);
        assert_eq!(parse_display("remote:0"), None);
        assert_eq!(parse_display("nonsense"), None);
        assert_eq!(parse_display(":x"), None);
    }

    #[test]
    fn user_dirs() {
        let home = Path::new("/home/ana");
        let t = "# comment\nXDG_DESKTOP_DIR=\"$HOME/Desktop\"\nXDG_DOWNLOAD_DIR=\"$HOME/Téléchargements\"\n";
        assert_eq!(
            parse_user_dir(t, "XDG_DOWNLOAD_DIR", home),
            Some(PathBuf::from("/home/ana/Téléchargements"))
        );
        assert_eq!(
            parse_user_dir("XDG_DOWNLOAD_DIR=\"$HOME/\"", "XDG_DOWNLOAD_DIR", home),
            None
        );
        assert_eq!(
            parse_user_dir("XDG_DOWNLOAD_DIR=\"/data/dl\"", "XDG_DOWNLOAD_DIR", home),
            Some(PathBuf::from("/data/dl"))
        );
        assert_eq!(parse_user_dir(t, "XDG_MUSIC_DIR", home), None);
    }
}
