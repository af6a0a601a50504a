//! `SandboxPlan`: plain data saying how one launch is sandboxed (namespaces, mounts in order,
//! environment, bus rules, network, argv). Building a plan touches nothing, so every decision
//! about what a clone sees is unit-tested here; [`crate::sandbox`] only carries it out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dirs::Dirs;
use crate::host::HostFacts;
use crate::profile::{HomeMode, NetworkMode, Profile};
use crate::recipe::{self, Keyring, Placeholders, Recipe, Service};

/// One step of building the sandbox's mount tree. Targets are paths as the app sees them;
/// sources are host paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// The host's root, recursively, read-only and nosuid: the base everything else covers.
    HostRoot,
    /// A bind mount (recursive). `optional` ones are skipped when the source has gone.
    Bind {
        src: PathBuf,
        dst: PathBuf,
        writable: bool,
        /// Keep device nodes usable (for `/dev` entries); otherwise `nodev`.
        devices: bool,
        optional: bool,
    },
    /// A fresh tmpfs.
    Tmpfs { dst: PathBuf, mode: u32 },
    /// A new devpts instance (the sandbox's own pseudo-terminals).
    Devpts { dst: PathBuf },
    /// A new proc instance, showing the sandbox's PID namespace (mounted by its init).
    Proc { dst: PathBuf },
    /// A symbolic link created inside a tmpfs.
    Symlink { target: PathBuf, dst: PathBuf },
}

/// The namespaces the sandbox gets (user, mount and IPC always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespaces {
    pub net: bool,
    /// Its own PID namespace, whose first process is an init that reaps orphans and forwards
    /// signals to the app. On unless the recipe says `pid_namespace = false`: the bus proxy
    /// puts host PIDs into PID-derived bus names, so clones' tray items do not collide.
    pub pid: bool,
}

/// The filtering session-bus proxy of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusProxyPlan {
    /// The host bus address.
    pub upstream: String,
    /// The proxy's socket, on the host.
    pub socket: PathBuf,
    /// Rules as `xdg-dbus-proxy` arguments (`--own=…`, `--talk=…`, …).
    pub rules: Vec<String>,
    /// The name element that makes the clone's own bus names unique to the profile.
    pub suffix: String,
    /// The profile's display name, for its notifications.
    pub label: String,
    /// The profile's launcher (desktop-entry id), for its notifications.
    pub desktop_entry: String,
}

/// Host-side preparation before the sandbox starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// Directories to create (owned by the person, mode 0700).
    pub dirs: Vec<PathBuf>,
    /// Stale lock files to delete (files or symlinks only).
    pub remove: Vec<PathBuf>,
    /// Write an X authority file for the display here, from this source.
    pub xauthority: Option<(PathBuf, u32, PathBuf)>,
    /// Write a resolv.conf pointing at pasta's DNS forwarder here.
    pub resolv_conf: Option<PathBuf>,
}

/// Everything about one launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPlan {
    pub uid: u32,
    pub gid: u32,
    pub namespaces: Namespaces,
    pub network: NetworkMode,
    pub mounts: Vec<Mount>,
    pub env: BTreeMap<String, String>,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub bus_proxy: Option<BusProxyPlan>,
    pub prepare: Prepare,
    /// The instance's host-side directory (proxy socket, X authority, mount staging).
    pub instance_dir: PathBuf,
}

/// Address pasta answers DNS on inside the namespace (it forwards to the host's resolver, even
/// one on the host's loopback such as systemd-resolved's 127.0.0.53).
pub const DNS_FORWARD: &str = "169.254.1.1";

/// Host environment variables a clone must not inherit: they point at host sockets, agents,
/// service managers or temporary directories it cannot (or must not) reach.
const ENV_DROP: &[&str] = &[
    "DBUS_SESSION_BUS_ADDRESS",
    "XAUTHORITY",
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "GPG_AGENT_INFO",
    "SESSION_MANAGER",
    "TMPDIR",
    "TEMP",
    "TMP",
    "WAYLAND_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "MANAGERPID",
    "SYSTEMD_EXEC_PID",
    "DESKTOP_STARTUP_ID",
    "XDG_ACTIVATION_TOKEN",
    "KRB5CCNAME",
    "OLDPWD",
];

/// Where a launch keeps the profile's data, once its storage is ready (unlocked, mounted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// The directory bound at `$HOME`: the profile's own home, or the copy-on-write home.
    pub home: PathBuf,
    /// With a copy-on-write home, where the recipe's state paths live (fresh, per profile),
    /// since the home itself shows the real home's files.
    pub state: Option<PathBuf>,
}

impl Storage {
    /// A plain profile's private home under `$XDG_DATA_HOME/doppel/profiles/<id>/home`.
    pub fn plain(dirs: &Dirs, profile: &Profile) -> Self {
        Storage {
            home: dirs.profile_data(&profile.id).join("home"),
            state: None,
        }
    }
}

/// Per-launch choices that override the profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchOptions {
    pub network: Option<NetworkMode>,
    /// Run this instead of the app.
    pub command: Option<Vec<String>>,
    /// URLs or files handed to the app.
    pub extra_args: Vec<String>,
    /// Where the data is; `None` means the plain private home.
    pub storage: Option<Storage>,
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "the copy-on-write home of profile \"{0}\" needs Doppel's privileged helper, which this \
         version does not have yet; create the profile with --home private"
    )]
    OverlayNeedsHelper(String),
    #[error("nothing to run: the profile has no command and none was given after `--`")]
    NoCommand,
}

fn push_bind(m: &mut Vec<Mount>, src: &Path, dst: &Path, writable: bool, optional: bool) {
    m.push(Mount::Bind {
        src: src.to_owned(),
        dst: dst.to_owned(),
        writable,
        devices: false,
        optional,
    });
}

/// The bus rules of a recipe, as `xdg-dbus-proxy` arguments.
pub fn bus_rules(recipe: &Recipe) -> Vec<String> {
    let mut r: Vec<String> = Vec::new();
    let has = |s: Service| recipe.services.contains(&s);
    if has(Service::Display) {
        // Toolkits ask the accessibility bus for its address; without it GTK warns at start.
        r.push("--talk=org.a11y.Bus".into());
    }
    if has(Service::Notifications) {
        r.push("--talk=org.freedesktop.Notifications".into());
    }
    if has(Service::Tray) {
        r.push("--talk=org.kde.StatusNotifierWatcher".into());
        // Tray items of libraries that name them after their PID; the proxy puts the host PID
        // in, so that clones' items do not collide.
        r.push("--own=org.kde.StatusNotifierItem-*".into());
        r.push("--own=org.freedesktop.StatusNotifierItem-*".into());
    }
    if has(Service::Portals) {
        r.push("--talk=org.freedesktop.portal.*".into());
    }
    if has(Service::Inhibit) {
        r.push("--talk=org.freedesktop.ScreenSaver".into());
    }
    let b = &recipe.bus;
    r.extend(b.own.iter().map(|n| format!("--own={n}")));
    r.extend(b.talk.iter().map(|n| format!("--talk={n}")));
    r.extend(b.see.iter().map(|n| format!("--see={n}")));
    r.extend(b.call.iter().map(|n| format!("--call={n}")));
    r.extend(b.broadcast.iter().map(|n| format!("--broadcast={n}")));
    r.dedup();
    r
}

/// The keyring rule of a profile: its policy's service, if the recipe lets the app use one.
pub fn keyring_rules(recipe: &Recipe, keyring: Keyring) -> Vec<String> {
    match keyring.bus_name() {
        Some(n) if recipe.services.contains(&Service::Secrets) => vec![format!("--talk={n}")],
        _ => Vec::new(),
    }
}

/// The window class a profile's windows get where the recipe can set one: the id of the
/// profile's launcher, so that docks and task bars group the clone under it.
pub fn window_class(id: &crate::id::ProfileId) -> String {
    crate::launcher::launcher_id(id)
}

/// How the app of a profile is installed, as its command line tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// A program on the host (a distribution package, a tarball).
    Native,
    /// `flatpak run … <app_id> …`, the app id being the command's element `at`.
    Flatpak { app_id: String, at: usize },
    /// An AppImage file.
    AppImage { path: PathBuf },
}

impl Install {
    /// Recognises a Flatpak (`flatpak run [options] <app-id> …`, as Flatpak's exported desktop
    /// entries say) or an AppImage (`*.AppImage`, or a name the recipe lists).
    pub fn of(command: &[String], recipe: &Recipe) -> Self {
        let Some(program) = command.first() else {
            return Self::Native;
        };
        let name = Path::new(program)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(program);
        if name == "flatpak" {
            let run = command.iter().position(|a| a == "run");
            let app = run.and_then(|r| {
                command.iter().enumerate().skip(r + 1).find(|(_, a)| {
                    !a.starts_with('-')
                        && a.split('.').count() >= 3
                        && recipe::check_bus_name(a).is_ok()
                })
            });
            if let Some((at, app_id)) = app {
                return Self::Flatpak {
                    app_id: app_id.clone(),
                    at,
                };
            }
        }
        if name.to_ascii_lowercase().ends_with(".appimage") || recipe.is_appimage_name(name) {
            return Self::AppImage {
                path: PathBuf::from(program),
            };
        }
        Self::Native
    }

    /// Where a recipe path (`~/…`, `$XDG_CONFIG_HOME/…`…) is for this install, relative to
    /// the home: a Flatpak app's XDG directories and persisted `~/…` paths are under
    /// `~/.var/app/<id>/`; other apps follow the XDG variables of the clone's environment `env`
    /// (which only keeps those inside `home`), or the specification's defaults.
    pub fn home_relative(
        &self,
        path: &str,
        env: &BTreeMap<String, String>,
        home: &Path,
        values: &Placeholders<'_>,
    ) -> Option<PathBuf> {
        let (base, rest) = recipe::split_recipe_path(path).ok()?;
        let rest = recipe::expand(rest, values);
        let dir = match self {
            Self::Flatpak { app_id, .. } => Path::new(".var/app")
                .join(app_id)
                .join(base.in_flatpak_app_dir()),
            _ => match base.variable().and_then(|v| env.get(v)) {
                Some(v) => Path::new(v).strip_prefix(home).ok()?.to_owned(),
                None => PathBuf::from(base.default_in_home()),
            },
        };
        Some(dir.join(rest))
    }

    /// The directories, relative to the home, that hold the app's account for this install.
    pub fn state_dirs(
        &self,
        recipe: &Recipe,
        env: &BTreeMap<String, String>,
        home: &Path,
        values: &Placeholders<'_>,
    ) -> Vec<PathBuf> {
        match self {
            // Flatpak keeps all of an app's per-user data there.
            Self::Flatpak { app_id, .. } => vec![Path::new(".var/app").join(app_id)],
            _ => recipe
                .state_paths
                .iter()
                .filter_map(|p| self.home_relative(p, env, home, values))
                .collect(),
        }
    }
}

/// The files a stale-lock entry of [`Prepare::remove`] names now: the path itself, or where
/// an element holds a `*`, every existing path it matches. Reads directories; never follows
/// a symbolic link to one.
pub fn stale_lock_files(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for comp in pattern.components() {
        let part = comp.as_os_str();
        let glob = part.to_str().filter(|p| p.contains('*'));
        let mut next = Vec::new();
        for base in found {
            match glob {
                None => next.push(base.join(part)),
                Some(g) => {
                    let Ok(rd) = std::fs::read_dir(&base) else {
                        continue;
                    };
                    let mut names: Vec<PathBuf> = rd
                        .flatten()
                        .filter(|e| {
                            e.file_name()
                                .to_str()
                                .is_some_and(|n| recipe::glob_match(g, n))
                        })
                        .map(|e| e.path())
                        .collect();
                    names.sort();
                    next.extend(names);
                }
            }
        }
        found = next;
    }
    found
}

impl SandboxPlan {
    /// Builds the plan for running `profile` (made from `recipe`) on `host`.
    pub fn build(
        dirs: &Dirs,
        profile: &Profile,
        recipe: &Recipe,
        host: &HostFacts,
        opts: &LaunchOptions,
    ) -> Result<Self, PlanError> {
        let storage = match &opts.storage {
            Some(s) => s.clone(),
            None if profile.home == HomeMode::Overlay => {
                return Err(PlanError::OverlayNeedsHelper(profile.id.to_string()))
            }
            None => Storage::plain(dirs, profile),
        };
        let network = opts.network.unwrap_or(profile.network);
        let profile_home = storage.home.clone();
        let instance_dir = host.runtime_dir.join("doppel").join(profile.id.as_str());
        let run = &host.runtime_dir;
        let has = |s: Service| recipe.services.contains(&s);

        let pid_ns = recipe.pid_namespace;
        // proc stays writable: Chromium-style sandboxes write uid_map and oom_score_adj. With
        // a PID namespace it is a new instance that shows only the sandbox's processes.
        let proc = if pid_ns {
            Mount::Proc {
                dst: "/proc".into(),
            }
        } else {
            Mount::Bind {
                src: "/proc".into(),
                dst: "/proc".into(),
                writable: true,
                devices: false,
                optional: false,
            }
        };
        let mut m = vec![
            Mount::HostRoot,
            proc,
            Mount::Tmpfs {
                dst: "/dev".into(),
                mode: 0o755,
            },
        ];
        for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
            let p = PathBuf::from("/dev").join(dev);
            m.push(Mount::Bind {
                src: p.clone(),
                dst: p,
                writable: true,
                devices: true,
                optional: false,
            });
        }
        m.push(Mount::Devpts {
            dst: "/dev/pts".into(),
        });
        for (target, dst) in [
            ("pts/ptmx", "/dev/ptmx"),
            ("/proc/self/fd", "/dev/fd"),
            ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"),
        ] {
            m.push(Mount::Symlink {
                target: target.into(),
                dst: dst.into(),
            });
        }
        m.push(Mount::Tmpfs {
            dst: "/dev/shm".into(),
            mode: 0o1777,
        });
        let mut dev_dirs = Vec::new();
        if has(Service::Gpu) && host.dri {
            dev_dirs.push("/dev/dri");
        }
        if has(Service::Audio) && host.snd {
            dev_dirs.push("/dev/snd");
        }
        for d in dev_dirs {
            m.push(Mount::Bind {
                src: d.into(),
                dst: d.into(),
                writable: true,
                devices: true,
                optional: true,
            });
        }
        m.push(Mount::Tmpfs {
            dst: "/tmp".into(),
            mode: 0o1777,
        });
        m.push(Mount::Tmpfs {
            dst: "/var/tmp".into(),
            mode: 0o1777,
        });
        m.push(Mount::Tmpfs {
            dst: run.clone(),
            mode: 0o700,
        });
        if host.run_doppel {
            // Other profiles' unlocked volumes and homes are mounted there: none is visible.
            m.push(Mount::Tmpfs {
                dst: crate::host::RUN_DOPPEL.into(),
                mode: 0o755,
            });
        }

        let mut env: BTreeMap<String, String> = host
            .env
            .iter()
            .filter(|(k, _)| !ENV_DROP.contains(&k.as_str()) && !k.starts_with("DOPPEL_"))
            .cloned()
            .collect();
        env.insert("HOME".into(), host.home.display().to_string());
        env.insert("XDG_RUNTIME_DIR".into(), run.display().to_string());
        env.insert("DOPPEL_PROFILE".into(), profile.id.to_string());
        // The session's XDG dirs may point into the host home's real data.
        for k in [
            "XDG_CONFIG_HOME",
            "XDG_DATA_HOME",
            "XDG_CACHE_HOME",
            "XDG_STATE_HOME",
        ] {
            if let Some(v) = env.get(k) {
                if !Path::new(v).starts_with(&host.home) {
                    env.remove(k);
                }
            }
        }

        // The home: the profile's own, at the real path, then the host's look-and-feel on top.
        push_bind(&mut m, &profile_home, &host.home, true, false);
        // What the recipe's placeholders stand for, and where the app keeps its account.
        let class = window_class(&profile.id);
        let keyring = profile.keyring.unwrap_or_default();
        let values = Placeholders {
            class: &class,
            id: profile.id.as_str(),
            password_store: keyring.password_store(),
        };
        let install = Install::of(&profile.command, recipe);
        let state_rels = install.state_dirs(recipe, &env, &host.home, &values);
        // A copy-on-write home shows the real home's files; the app's own account must not be
        // among them, so each state path gets a fresh per-profile directory on top.
        let mut state_dirs = Vec::new();
        if let Some(state) = &storage.state {
            for rel in &state_rels {
                let src = state.join(rel);
                state_dirs.push(src.clone());
                push_bind(&mut m, &src, &host.home.join(rel), true, false);
            }
        }
        for share in &host.home_shares {
            let p = host.home.join(&share.rel);
            push_bind(&mut m, &p, &p, false, true);
        }
        if let Some(dl) = &host.downloads {
            push_bind(&mut m, dl, dl, true, true);
        }

        let mut prepare = Prepare {
            dirs: [profile_home.clone(), instance_dir.clone()]
                .into_iter()
                .chain(state_dirs)
                .collect(),
            // A lock inside a state directory is deleted there; any other in the profile's home
            // (with a copy-on-write home, that leaves a whiteout over the real home's file).
            remove: recipe
                .stale_locks
                .iter()
                .filter_map(|l| install.home_relative(l, &env, &host.home, &values))
                .map(|rel| match &storage.state {
                    Some(state) if state_rels.iter().any(|s| rel.starts_with(s)) => state.join(rel),
                    _ => storage.home.join(rel),
                })
                .collect(),
            xauthority: None,
            resolv_conf: None,
        };

        if has(Service::Display) {
            if let Some(x) = &host.x11 {
                push_bind(&mut m, &x.socket, &x.socket, true, false);
                env.insert("DISPLAY".into(), x.name.clone());
                if let Some(src) = &host.xauthority {
                    let file = instance_dir.join("Xauthority");
                    let inside = run.join("Xauthority");
                    prepare.xauthority = Some((src.clone(), x.number, file.clone()));
                    push_bind(&mut m, &file, &inside, false, false);
                    env.insert("XAUTHORITY".into(), inside.display().to_string());
                }
            } else {
                env.remove("DISPLAY");
            }
            if let Some((name, sock)) = &host.wayland {
                let inside = run.join(name.rsplit('/').next().unwrap_or(name));
                push_bind(&mut m, sock, &inside, true, false);
                env.insert(
                    "WAYLAND_DISPLAY".into(),
                    inside
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
            } else {
                env.remove("WAYLAND_DISPLAY");
            }
        }
        if has(Service::Audio) {
            if let Some(p) = &host.pipewire {
                push_bind(&mut m, p, &run.join("pipewire-0"), true, true);
            }
            if let Some(p) = &host.pulse {
                push_bind(&mut m, p, &run.join("pulse/native"), true, true);
            }
        }

        let bus_proxy = host.session_bus.as_ref().map(|upstream| {
            let socket = instance_dir.join("bus");
            let inside = run.join("bus");
            push_bind(&mut m, &socket, &inside, true, false);
            env.insert(
                "DBUS_SESSION_BUS_ADDRESS".into(),
                format!("unix:path={}", inside.display()),
            );
            BusProxyPlan {
                upstream: upstream.clone(),
                socket,
                rules: {
                    let mut r = bus_rules(recipe);
                    r.extend(keyring_rules(recipe, keyring));
                    r
                },
                suffix: crate::busproxy::names::suffix_for(profile.id.as_str()),
                label: profile.label(),
                desktop_entry: crate::launcher::launcher_id(&profile.id),
            }
        });

        // Links the clone opens go to the host's browser through the OpenURI portal: Doppel's
        // opener stands in for xdg-open, first in PATH and over the host's own.
        if let (Some(opener), Some(_), true) = (&host.opener, &bus_proxy, has(Service::Portals)) {
            let dir = run.join(crate::opener::SHIM_DIR);
            push_bind(
                &mut m,
                opener,
                &dir.join(crate::opener::SHIM_NAME),
                false,
                true,
            );
            if host.xdg_open {
                let real = Path::new(crate::host::XDG_OPEN);
                // The host's own, for local files (the sources are read on the host side).
                push_bind(
                    &mut m,
                    real,
                    &dir.join(crate::opener::HOST_OPENER),
                    false,
                    true,
                );
                push_bind(&mut m, opener, real, false, true);
            }
            let path = env
                .get("PATH")
                .map(String::as_str)
                .filter(|p| !p.is_empty())
                .unwrap_or("/usr/local/bin:/usr/bin:/bin");
            let path = format!("{}:{path}", dir.display());
            env.insert("PATH".into(), path);
        }

        if network == NetworkMode::Isolated {
            if let Some(rc) = &host.resolv_conf {
                let file = instance_dir.join("resolv.conf");
                push_bind(&mut m, &file, rc, false, false);
                prepare.resolv_conf = Some(file);
            }
        }

        match &install {
            Install::AppImage { path } => {
                // The AppImage runtime mounts itself with FUSE through the setuid fusermount,
                // which no_new_privs disarms; it can unpack itself into the private /tmp instead.
                env.insert("APPIMAGE_EXTRACT_AND_RUN".into(), "1".into());
                // One kept in the home is hidden by the profile's home: show it, read-only.
                if path.starts_with(&host.home) && !host_visible(path, host) {
                    push_bind(&mut m, path, path, false, false);
                }
            }
            Install::Flatpak { .. } => {
                // `flatpak run` finds per-user installs in $XDG_DATA_HOME/flatpak, which the
                // profile's home hides when it is inside the home.
                let user_installs = dirs.data_home.join("flatpak");
                if user_installs.starts_with(&host.home) {
                    push_bind(&mut m, &user_installs, &user_installs, false, true);
                }
            }
            Install::Native => {}
        }
        for (k, v) in &recipe.env {
            env.insert(k.clone(), recipe::expand(v, &values));
        }

        let argv = match &opts.command {
            Some(cmd) if !cmd.is_empty() => cmd.clone(),
            Some(_) => return Err(PlanError::NoCommand),
            None => {
                if profile.command.is_empty() {
                    return Err(PlanError::NoCommand);
                }
                // Recipe switches go right after the program (after the app id for a Flatpak,
                // whose own options come before it): a desktop entry's command may end in "--",
                // after which everything would be taken for a URL.
                let split = match &install {
                    Install::Flatpak { at, .. } => at + 1,
                    _ => 1,
                };
                let (head, rest) = profile.command.split_at(split.min(profile.command.len()));
                let mut v = head.to_vec();
                v.extend(recipe.args.iter().map(|a| recipe::expand(a, &values)));
                v.extend(rest.iter().cloned());
                v.extend(opts.extra_args.iter().cloned());
                v
            }
        };

        let cwd = host
            .cwd
            .clone()
            .filter(|c| c.starts_with(&host.home) || c.starts_with("/usr"))
            .filter(|c| c == &host.home || !c.starts_with(&host.home) || host_visible(c, host))
            .unwrap_or_else(|| host.home.clone());

        Ok(Self {
            uid: host.uid,
            gid: host.gid,
            namespaces: Namespaces {
                net: network != NetworkMode::Host,
                pid: pid_ns,
            },
            network,
            mounts: m,
            env,
            argv,
            cwd,
            bus_proxy,
            prepare,
            instance_dir,
        })
    }
}

/// Whether a directory below the home stays visible in the clone (only shared folders do).
fn host_visible(p: &Path, host: &HostFacts) -> bool {
    host.downloads.as_ref().is_some_and(|d| p.starts_with(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{HomeShare, X11Display};
    use crate::id::ProfileId;

    fn dirs() -> Dirs {
        Dirs {
            home: "/home/ana".into(),
            config_home: "/home/ana/.config".into(),
            data_home: "/home/ana/.local/share".into(),
            data_dirs: vec!["/usr/share".into()],
            runtime_dir: Some("/run/user/1000".into()),
        }
    }

    fn host() -> HostFacts {
        HostFacts {
            uid: 1000,
            gid: 1000,
            home: "/home/ana".into(),
            runtime_dir: "/run/user/1000".into(),
            hostname: "box".into(),
            x11: Some(X11Display {
                name: ":1".into(),
                number: 1,
                socket: "/tmp/.X11-unix/X1".into(),
            }),
            xauthority: Some("/home/ana/.Xauthority".into()),
            wayland: Some(("wayland-0".into(), "/run/user/1000/wayland-0".into())),
            pipewire: Some("/run/user/1000/pipewire-0".into()),
            pulse: None,
            session_bus: Some("unix:path=/run/user/1000/bus".into()),
            downloads: Some("/home/ana/Downloads".into()),
            dri: true,
            snd: false,
            home_shares: vec![HomeShare {
                rel: ".config/gtk-3.0".into(),
                is_dir: true,
            }],
            resolv_conf: Some("/run/systemd/resolve/stub-resolv.conf".into()),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("LANG".into(), "de_DE.UTF-8".into()),
                ("SSH_AUTH_SOCK".into(), "/run/user/1000/ssh".into()),
                (
                    "DBUS_SESSION_BUS_ADDRESS".into(),
                    "unix:path=/run/user/1000/bus".into(),
                ),
                ("TMPDIR".into(), "/home/ana/tmp".into()),
                ("XDG_CONFIG_HOME".into(), "/elsewhere/config".into()),
            ],
            cwd: Some("/home/ana/secret-project".into()),
            run_doppel: true,
            opener: Some("/usr/bin/doppel".into()),
            xdg_open: true,
        }
    }

    fn recipe() -> Recipe {
        Recipe::parse(
            "telegram-desktop",
            Path::new("t.toml"),
            r#"
            name = "Telegram Desktop"
            commands = ["telegram-desktop"]
            state_paths = ["~/.local/share/TelegramDesktop"]
            stale_locks = ["~/.local/share/TelegramDesktop/tdata/lock"]
            services = ["display", "audio", "gpu", "notifications", "tray"]
            args = ["-noupdate"]
            [bus]
            own = ["org.telegram.desktop"]
            [env]
            GNOTIFICATION_BACKEND = "freedesktop"
            "#,
        )
        .unwrap()
    }

    fn profile() -> Profile {
        Profile {
            id: ProfileId::parse("work").unwrap(),
            name: "Work".into(),
            recipe: "telegram-desktop".into(),
            desktop_id: None,
            app_name: "Telegram Desktop".into(),
            command: vec!["/usr/bin/telegram-desktop".into(), "--".into()],
            color: "#3584e4".into(),
            home: HomeMode::Private,
            network: NetworkMode::Isolated,
            encrypted: false,
            auto_lock: true,
            keyring: None,
        }
    }

    fn plan(opts: LaunchOptions) -> SandboxPlan {
        SandboxPlan::build(&dirs(), &profile(), &recipe(), &host(), &opts).unwrap()
    }

    fn bind_of(p: &SandboxPlan, dst: &str) -> Option<(PathBuf, bool)> {
        p.mounts.iter().rev().find_map(|m| match m {
            Mount::Bind {
                src,
                dst: d,
                writable,
                ..
            } if d == Path::new(dst) => Some((src.clone(), *writable)),
            _ => None,
        })
    }

    fn index_of(p: &SandboxPlan, pred: impl Fn(&Mount) -> bool) -> usize {
        p.mounts.iter().position(pred).unwrap()
    }

    #[test]
    fn home_is_the_profiles_own_at_the_real_path() {
        let p = plan(LaunchOptions::default());
        let (src, rw) = bind_of(&p, "/home/ana").unwrap();
        assert_eq!(
            src,
            PathBuf::from("/home/ana/.local/share/doppel/profiles/work/home")
        );
        assert!(rw);
        assert_eq!(p.env["HOME"], "/home/ana");
        // No bind exposes any other part of the host home.
        for m in &p.mounts {
            if let Mount::Bind { src, .. } = m {
                if src.starts_with("/home/ana")
                    && !src.starts_with("/home/ana/.local/share/doppel/profiles/work")
                {
                    let ok = src.ends_with(".config/gtk-3.0")
                        || src.ends_with("Downloads")
                        || src.ends_with(".Xauthority");
                    assert!(ok, "unexpected host-home bind {src:?}");
                }
            }
        }
    }

    #[test]
    fn settings_are_read_only_and_downloads_writable_and_both_after_the_home() {
        let p = plan(LaunchOptions::default());
        assert!(!bind_of(&p, "/home/ana/.config/gtk-3.0").unwrap().1);
        assert!(bind_of(&p, "/home/ana/Downloads").unwrap().1);
        let home = index_of(
            &p,
            |m| matches!(m, Mount::Bind { dst, .. } if dst == Path::new("/home/ana")),
        );
        let gtk = index_of(
            &p,
            |m| matches!(m, Mount::Bind { dst, .. } if dst.ends_with("gtk-3.0")),
        );
        assert!(home < gtk);
    }

    #[test]
    fn tmp_shm_and_runtime_dir_are_private_and_come_after_the_root() {
        let p = plan(LaunchOptions::default());
        assert_eq!(p.mounts[0], Mount::HostRoot);
        for d in ["/tmp", "/dev/shm", "/run/user/1000", "/var/tmp"] {
            assert!(
                p.mounts
                    .iter()
                    .any(|m| matches!(m, Mount::Tmpfs { dst, .. } if dst == Path::new(d))),
                "{d}"
            );
        }
        let run = index_of(
            &p,
            |m| matches!(m, Mount::Tmpfs { dst, .. } if dst == Path::new("/run/user/1000")),
        );
        let bus = index_of(
            &p,
            |m| matches!(m, Mount::Bind { dst, .. } if dst == Path::new("/run/user/1000/bus")),
        );
        let x = index_of(
            &p,
            |m| matches!(m, Mount::Bind { dst, .. } if dst == Path::new("/tmp/.X11-unix/X1")),
        );
        let tmp = index_of(
            &p,
            |m| matches!(m, Mount::Tmpfs { dst, .. } if dst == Path::new("/tmp")),
        );
        assert!(run < bus && tmp < x);
    }

    #[test]
    fn runtime_dir_holds_only_the_needed_sockets() {
        let p = plan(LaunchOptions::default());
        let mut inside: Vec<_> = p
            .mounts
            .iter()
            .filter_map(|m| match m {
                Mount::Bind { dst, .. } if dst.starts_with("/run/user/1000") => Some(dst.clone()),
                _ => None,
            })
            .collect();
        inside.sort();
        let want: Vec<PathBuf> = ["Xauthority", "bus", "pipewire-0", "wayland-0"]
            .iter()
            .map(|n| PathBuf::from("/run/user/1000").join(n))
            .collect();
        assert_eq!(inside, want);
        assert_eq!(
            bind_of(&p, "/run/user/1000/bus").unwrap().0,
            PathBuf::from("/run/user/1000/doppel/work/bus")
        );
    }

    #[test]
    fn environment_points_inside_and_drops_host_agents() {
        let p = plan(LaunchOptions::default());
        assert_eq!(
            p.env["DBUS_SESSION_BUS_ADDRESS"],
            "unix:path=/run/user/1000/bus"
        );
        assert_eq!(p.env["XAUTHORITY"], "/run/user/1000/Xauthority");
        assert_eq!(p.env["DISPLAY"], ":1");
        assert_eq!(p.env["LANG"], "de_DE.UTF-8");
        assert_eq!(p.env["GNOTIFICATION_BACKEND"], "freedesktop");
        assert_eq!(p.env["DOPPEL_PROFILE"], "work");
        for gone in ["SSH_AUTH_SOCK", "TMPDIR", "XDG_CONFIG_HOME"] {
            assert!(!p.env.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn network_modes() {
        let p = plan(LaunchOptions::default());
        assert!(p.namespaces.net);
        assert_eq!(
            p.prepare.resolv_conf,
            Some(PathBuf::from("/run/user/1000/doppel/work/resolv.conf"))
        );
        assert_eq!(
            bind_of(&p, "/run/systemd/resolve/stub-resolv.conf")
                .unwrap()
                .0,
            PathBuf::from("/run/user/1000/doppel/work/resolv.conf")
        );
        let h = plan(LaunchOptions {
            network: Some(NetworkMode::Host),
            ..Default::default()
        });
        assert!(!h.namespaces.net);
        assert_eq!(h.prepare.resolv_conf, None);
        let n = plan(LaunchOptions {
            network: Some(NetworkMode::None),
            ..Default::default()
        });
        assert!(n.namespaces.net);
        assert_eq!(n.prepare.resolv_conf, None);
    }

    #[test]
    fn a_pid_namespace_with_its_own_proc_unless_the_recipe_opts_out() {
        let p = plan(LaunchOptions::default());
        assert!(p.namespaces.pid);
        let proc = index_of(
            &p,
            |m| matches!(m, Mount::Proc { dst } if dst == Path::new("/proc")),
        );
        // Right over the host's root, before /dev's symlinks into it.
        assert_eq!(proc, 1);
        assert!(
            bind_of(&p, "/proc").is_none(),
            "the host's /proc is not shown"
        );

        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../profiles/generic.toml"
        ))
        .unwrap();
        let r = Recipe::parse("generic", Path::new("generic.toml"), &text).unwrap();
        assert!(r.pid_namespace, "on by default");
        let mut off = r.clone();
        off.pid_namespace = false;
        let h = SandboxPlan::build(
            &dirs(),
            &profile(),
            &off,
            &host(),
            &LaunchOptions::default(),
        )
        .unwrap();
        assert!(!h.namespaces.pid);
        assert_eq!(bind_of(&h, "/proc"), Some((PathBuf::from("/proc"), true)));
        assert!(!h.mounts.iter().any(|m| matches!(m, Mount::Proc { .. })));
        let parsed = recipe_from("name = \"X\"\npid_namespace = false\n");
        assert!(!parsed.pid_namespace);
    }

    #[test]
    fn argv_puts_recipe_switches_before_the_desktop_entrys_double_dash() {
        let p = plan(LaunchOptions {
            extra_args: vec!["tg://login".into()],
            ..Default::default()
        });
        assert_eq!(
            p.argv,
            ["/usr/bin/telegram-desktop", "-noupdate", "--", "tg://login"]
        );
        let c = plan(LaunchOptions {
            command: Some(vec!["sh".into(), "-c".into(), "id".into()]),
            ..Default::default()
        });
        assert_eq!(c.argv, ["sh", "-c", "id"]);
        let e = SandboxPlan::build(
            &dirs(),
            &profile(),
            &recipe(),
            &host(),
            &LaunchOptions {
                command: Some(vec![]),
                ..Default::default()
            },
        );
        assert_eq!(e.unwrap_err(), PlanError::NoCommand);
    }

    #[test]
    fn bus_rules_follow_services_and_recipe() {
        let p = plan(LaunchOptions::default());
        let rules = &p.bus_proxy.as_ref().unwrap().rules;
        for r in [
            "--talk=org.freedesktop.Notifications",
            "--talk=org.kde.StatusNotifierWatcher",
            "--own=org.telegram.desktop",
        ] {
            assert!(rules.iter().any(|x| x == r), "{r} in {rules:?}");
        }
        assert!(
            !rules.iter().any(|x| x.contains("portal")),
            "portals not asked for"
        );
        let mut h = host();
        h.session_bus = None;
        let p = SandboxPlan::build(
            &dirs(),
            &profile(),
            &recipe(),
            &h,
            &LaunchOptions::default(),
        )
        .unwrap();
        assert!(p.bus_proxy.is_none());
        assert!(!p.env.contains_key("DBUS_SESSION_BUS_ADDRESS"));
    }

    #[test]
    fn stale_locks_map_into_the_profiles_home() {
        let p = plan(LaunchOptions::default());
        assert_eq!(
            p.prepare.remove,
            [PathBuf::from("/home/ana/.local/share/doppel/profiles/work/home/.local/share/TelegramDesktop/tdata/lock")]
        );
    }

    #[test]
    fn cwd_in_the_hidden_host_home_falls_back_to_home() {
        assert_eq!(
            plan(LaunchOptions::default()).cwd,
            PathBuf::from("/home/ana")
        );
        let mut h = host();
        h.cwd = Some("/home/ana/Downloads/x".into());
        let p = SandboxPlan::build(
            &dirs(),
            &profile(),
            &recipe(),
            &h,
            &LaunchOptions::default(),
        )
        .unwrap();
        assert_eq!(p.cwd, PathBuf::from("/home/ana/Downloads/x"));
    }

    #[test]
    fn gpu_only_when_asked_and_present_and_no_display_without_the_service() {
        let p = plan(LaunchOptions::default());
        assert!(bind_of(&p, "/dev/dri").is_some());
        let mut r = recipe();
        r.services
            .retain(|s| *s != Service::Gpu && *s != Service::Display);
        let p = SandboxPlan::build(&dirs(), &profile(), &r, &host(), &LaunchOptions::default())
            .unwrap();
        assert!(bind_of(&p, "/dev/dri").is_none());
        assert!(bind_of(&p, "/tmp/.X11-unix/X1").is_none());
    }

    #[test]
    fn helper_mounts_are_hidden_and_encrypted_or_overlay_storage_is_used() {
        let p = plan(LaunchOptions::default());
        let hide = index_of(
            &p,
            |m| matches!(m, Mount::Tmpfs { dst, .. } if dst == Path::new("/run/doppel")),
        );
        let home = index_of(
            &p,
            |m| matches!(m, Mount::Bind { dst, .. } if dst == Path::new("/home/ana")),
        );
        assert!(hide < home);
        let enc = plan(LaunchOptions {
            storage: Some(Storage {
                home: "/run/doppel/1000/work/data/home".into(),
                state: None,
            }),
            ..Default::default()
        });
        assert_eq!(
            bind_of(&enc, "/home/ana").unwrap().0,
            PathBuf::from("/run/doppel/1000/work/data/home")
        );
        let mut pr = profile();
        pr.home = HomeMode::Overlay;
        let ov = SandboxPlan::build(
            &dirs(),
            &pr,
            &recipe(),
            &host(),
            &LaunchOptions {
                storage: Some(Storage {
                    home: "/run/doppel/1000/work/home".into(),
                    state: Some("/home/ana/.local/share/doppel/profiles/work/state".into()),
                }),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            bind_of(&ov, "/home/ana").unwrap(),
            (PathBuf::from("/run/doppel/1000/work/home"), true)
        );
        // The app's account is never the real one read through the overlay.
        assert_eq!(
            bind_of(&ov, "/home/ana/.local/share/TelegramDesktop")
                .unwrap()
                .0,
            PathBuf::from(
                "/home/ana/.local/share/doppel/profiles/work/state/.local/share/TelegramDesktop"
            )
        );
        assert!(ov.prepare.dirs.contains(&PathBuf::from(
            "/home/ana/.local/share/doppel/profiles/work/state/.local/share/TelegramDesktop"
        )));
        assert!(
            ov.prepare.remove[0].starts_with("/home/ana/.local/share/doppel/profiles/work/state")
        );
    }

    #[test]
    fn overlay_home_says_it_needs_the_helper() {
        let mut pr = profile();
        pr.home = HomeMode::Overlay;
        let e = SandboxPlan::build(&dirs(), &pr, &recipe(), &host(), &LaunchOptions::default())
            .unwrap_err();
        assert!(e.to_string().contains("helper"));
    }
    fn recipe_from(text: &str) -> Recipe {
        Recipe::parse("app", Path::new("app.toml"), text).unwrap()
    }

    #[test]
    fn with_portals_xdg_open_is_doppels_opener_first_in_path_and_over_the_hosts() {
        let chat = recipe_from(
            r#"
            name = "Chat"
            commands = ["chat"]
            services = ["display", "portals"]
            "#,
        );
        let p = build_with(&chat, &["chat"], None, &host(), false);
        let shim = "/run/user/1000/doppel/bin/xdg-open";
        assert_eq!(
            bind_of(&p, shim),
            Some(("/usr/bin/doppel".into(), false)),
            "{:#?}",
            p.mounts
        );
        assert_eq!(
            bind_of(&p, "/usr/bin/xdg-open"),
            Some(("/usr/bin/doppel".into(), false))
        );
        assert_eq!(
            bind_of(&p, "/run/user/1000/doppel/bin/xdg-open.host"),
            Some(("/usr/bin/xdg-open".into(), false)),
            "local files need the host's own xdg-open"
        );
        assert_eq!(p.env["PATH"], "/run/user/1000/doppel/bin:/usr/bin:/bin");
        // After the runtime dir's tmpfs, or the tmpfs would hide it.
        let run = index_of(
            &p,
            |m| matches!(m, Mount::Tmpfs { dst, .. } if dst == Path::new("/run/user/1000")),
        );
        let at = index_of(
            &p,
            |m| matches!(m, Mount::Bind { dst, .. } if dst == Path::new(shim)),
        );
        assert!(run < at);

        // No portals asked for, no host xdg-open, or no doppel binary: no opener where absent.
        let p = plan(LaunchOptions::default());
        assert!(bind_of(&p, shim).is_none());
        assert_eq!(p.env["PATH"], "/usr/bin:/bin");
        let mut h = host();
        h.xdg_open = false;
        let p = build_with(&chat, &["chat"], None, &h, false);
        assert!(bind_of(&p, shim).is_some());
        assert!(bind_of(&p, "/usr/bin/xdg-open").is_none());
        assert!(bind_of(&p, "/run/user/1000/doppel/bin/xdg-open.host").is_none());
        h.opener = None;
        let p = build_with(&chat, &["chat"], None, &h, false);
        assert!(bind_of(&p, shim).is_none());
        // No session bus, no portal to reach: xdg-open stays the host's.
        let mut h = host();
        h.session_bus = None;
        let p = build_with(&chat, &["chat"], None, &h, false);
        assert!(bind_of(&p, shim).is_none());
        assert!(bind_of(&p, "/usr/bin/xdg-open").is_none());
        // An empty PATH is no PATH: the shim is not followed by the current directory.
        let mut h = host();
        h.env.retain(|(k, _)| k != "PATH");
        h.env.push(("PATH".into(), String::new()));
        let p = build_with(&chat, &["chat"], None, &h, false);
        assert_eq!(
            p.env["PATH"],
            "/run/user/1000/doppel/bin:/usr/local/bin:/usr/bin:/bin"
        );
    }

    fn electron() -> Recipe {
        recipe_from(
            r#"
            name = "Chat"
            commands = ["chat"]
            flatpak_ids = ["org.example.Chat"]
            appimage_names = ["Chat-*.AppImage"]
            state_paths = ["$XDG_CONFIG_HOME/Chat"]
            stale_locks = ["$XDG_CONFIG_HOME/Chat/SingletonLock", "~/.chat-{id}.lock"]
            services = ["display", "secrets"]
            args = ["--class={class}", "--password-store={password_store}"]
            [env]
            MOZ_APP_REMOTINGNAME = "{class}"
            "#,
        )
    }

    fn build_with(
        recipe: &Recipe,
        command: &[&str],
        keyring: Option<Keyring>,
        host: &HostFacts,
        overlay: bool,
    ) -> SandboxPlan {
        let mut pr = profile();
        pr.command = command.iter().map(|s| s.to_string()).collect();
        pr.keyring = keyring;
        let storage = overlay.then(|| Storage {
            home: "/run/doppel/1000/work/home".into(),
            state: Some("/home/ana/.local/share/doppel/profiles/work/state".into()),
        });
        if overlay {
            pr.home = HomeMode::Overlay;
        }
        SandboxPlan::build(
            &dirs(),
            &pr,
            recipe,
            host,
            &LaunchOptions {
                storage,
                extra_args: vec!["chat://x".into()],
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn placeholders_give_the_profile_its_window_class_and_keyring_switch() {
        let p = build_with(
            &electron(),
            &["/usr/bin/chat", "%U-gone"],
            None,
            &host(),
            false,
        );
        assert_eq!(
            p.argv,
            [
                "/usr/bin/chat",
                "--class=org.doppel.Doppel.work",
                "--password-store=basic",
                "%U-gone",
                "chat://x"
            ]
        );
        assert_eq!(p.env["MOZ_APP_REMOTINGNAME"], "org.doppel.Doppel.work");
        assert_eq!(window_class(&profile().id), "org.doppel.Doppel.work");
        assert!(!p.env.contains_key("APPIMAGE_EXTRACT_AND_RUN"));
    }

    #[test]
    fn the_keyring_policy_decides_the_secret_service_rule_and_switch() {
        let rules = |p: &SandboxPlan| p.bus_proxy.as_ref().unwrap().rules.clone();
        let none = build_with(&electron(), &["chat"], Some(Keyring::None), &host(), false);
        assert!(!rules(&none)
            .iter()
            .any(|r| r.contains("secrets") || r.contains("kwallet")));
        let ss = build_with(
            &electron(),
            &["chat"],
            Some(Keyring::SecretService),
            &host(),
            false,
        );
        assert!(rules(&ss).contains(&"--talk=org.freedesktop.secrets".to_owned()));
        assert!(!rules(&ss).iter().any(|r| r.contains("kwallet")));
        assert!(ss
            .argv
            .contains(&"--password-store=gnome-libsecret".to_owned()));
        let kw = build_with(
            &electron(),
            &["chat"],
            Some(Keyring::Kwallet6),
            &host(),
            false,
        );
        assert_eq!(
            rules(&kw)
                .iter()
                .filter(|r| r.contains("kwallet") || r.contains("secrets"))
                .collect::<Vec<_>>(),
            ["--talk=org.kde.kwalletd6"]
        );
        assert!(kw.argv.contains(&"--password-store=kwallet6".to_owned()));
        // An app the recipe does not let use a keyring gets none, whatever the profile says.
        let mut r = electron();
        r.services.retain(|s| *s != Service::Secrets);
        let no = build_with(&r, &["chat"], Some(Keyring::SecretService), &host(), false);
        assert!(!rules(&no).iter().any(|r| r.contains("secrets")));
    }

    #[test]
    fn state_paths_and_locks_follow_the_clones_xdg_dirs() {
        // Default XDG dirs.
        let p = build_with(&electron(), &["chat"], None, &host(), true);
        let state = PathBuf::from("/home/ana/.local/share/doppel/profiles/work/state");
        assert_eq!(
            bind_of(&p, "/home/ana/.config/Chat").unwrap().0,
            state.join(".config/Chat")
        );
        assert_eq!(
            p.prepare.remove,
            [
                state.join(".config/Chat/SingletonLock"),
                // Not in a state path: removed in the (copy-on-write) home, never the real one.
                PathBuf::from("/run/doppel/1000/work/home/.chat-work.lock"),
            ]
        );
        // A session whose XDG_CONFIG_HOME is elsewhere in the home: the clone keeps it, so the
        // app's account is there.
        let mut h = host();
        h.env.retain(|(k, _)| k != "XDG_CONFIG_HOME");
        h.env
            .push(("XDG_CONFIG_HOME".into(), "/home/ana/cfg".into()));
        let p = build_with(&electron(), &["chat"], None, &h, true);
        assert_eq!(p.env["XDG_CONFIG_HOME"], "/home/ana/cfg");
        assert_eq!(
            bind_of(&p, "/home/ana/cfg/Chat").unwrap().0,
            state.join("cfg/Chat")
        );
        assert!(bind_of(&p, "/home/ana/.config/Chat").is_none());
        assert_eq!(p.prepare.remove[0], state.join("cfg/Chat/SingletonLock"));
        // A private home: the locks are in the profile's home.
        let p = build_with(&electron(), &["chat"], None, &h, false);
        assert_eq!(
            p.prepare.remove[0],
            PathBuf::from(
                "/home/ana/.local/share/doppel/profiles/work/home/cfg/Chat/SingletonLock"
            )
        );
    }

    #[test]
    fn a_flatpak_install_runs_through_flatpak_with_its_state_in_var_app() {
        let cmd = [
            "/usr/bin/flatpak",
            "run",
            "--branch=stable",
            "--arch=x86_64",
            "--command=chat",
            "--file-forwarding",
            "org.example.Chat",
            "@@u",
            "@@",
        ];
        let r = electron();
        assert_eq!(
            Install::of(&cmd.map(String::from), &r),
            Install::Flatpak {
                app_id: "org.example.Chat".into(),
                at: 6
            }
        );
        let p = build_with(&r, &cmd, None, &host(), true);
        assert_eq!(
            p.argv,
            [
                "/usr/bin/flatpak",
                "run",
                "--branch=stable",
                "--arch=x86_64",
                "--command=chat",
                "--file-forwarding",
                "org.example.Chat",
                "--class=org.doppel.Doppel.work",
                "--password-store=basic",
                "@@u",
                "@@",
                "chat://x"
            ]
        );
        let state = PathBuf::from("/home/ana/.local/share/doppel/profiles/work/state");
        assert_eq!(
            bind_of(&p, "/home/ana/.var/app/org.example.Chat")
                .unwrap()
                .0,
            state.join(".var/app/org.example.Chat")
        );
        assert!(bind_of(&p, "/home/ana/.config/Chat").is_none());
        assert_eq!(
            p.prepare.remove,
            [
                state.join(".var/app/org.example.Chat/config/Chat/SingletonLock"),
                state.join(".var/app/org.example.Chat/.chat-work.lock"),
            ]
        );
        // Per-user Flatpak installs are read from the host, read-only.
        assert_eq!(
            bind_of(&p, "/home/ana/.local/share/flatpak"),
            Some((PathBuf::from("/home/ana/.local/share/flatpak"), false))
        );
        // `flatpak` without an app id is just a program.
        assert_eq!(
            Install::of(&["flatpak".into(), "list".into()], &r),
            Install::Native
        );
    }

    #[test]
    fn an_appimage_unpacks_itself_and_is_visible_read_only() {
        let r = electron();
        let p = build_with(
            &r,
            &["/home/ana/Apps/Chat-2.1.AppImage"],
            None,
            &host(),
            false,
        );
        assert_eq!(p.env["APPIMAGE_EXTRACT_AND_RUN"], "1");
        assert_eq!(
            bind_of(&p, "/home/ana/Apps/Chat-2.1.AppImage"),
            Some((PathBuf::from("/home/ana/Apps/Chat-2.1.AppImage"), false))
        );
        assert_eq!(p.argv[1], "--class=org.doppel.Doppel.work");
        // Outside the home it is visible already; a renamed one is known by the recipe's names.
        assert_eq!(
            Install::of(&["/opt/Chat-2.1.AppImage".into()], &r),
            Install::AppImage {
                path: "/opt/Chat-2.1.AppImage".into()
            }
        );
        let p = build_with(&r, &["/opt/x/other.appimage"], None, &host(), false);
        assert!(bind_of(&p, "/opt/x/other.appimage").is_none());
        assert_eq!(p.env["APPIMAGE_EXTRACT_AND_RUN"], "1");
    }

    #[test]
    fn stale_lock_patterns_match_only_existing_entries() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("mozilla/firefox");
        for d in ["ab.default-esr", "cd.default", "Crash Reports", "plain"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::write(base.join("ab.default-esr/lock"), "").unwrap();
        std::os::unix::fs::symlink("127.0.0.1:+1", base.join("cd.default/lock")).unwrap();
        let found = stale_lock_files(&base.join("*.*/lock"));
        assert_eq!(
            found,
            [
                base.join("ab.default-esr/lock"),
                base.join("cd.default/lock")
            ]
        );
        assert_eq!(
            stale_lock_files(&base.join("plain/lock")),
            [base.join("plain/lock")]
        );
        assert!(stale_lock_files(&t.path().join("missing/*.x/lock")).is_empty());
    }
}
