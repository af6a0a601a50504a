//! `SandboxPlan`: plain data saying how one launch is sandboxed (namespaces, mounts in order,
//! environment, bus rules, network, argv). Building a plan touches nothing, so every decision
//! about what a clone sees is unit-tested here; [`crate::sandbox`] only carries it out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dirs::Dirs;
use crate::host::HostFacts;
use crate::profile::{HomeMode, NetworkMode, Profile};
use crate::recipe::{Recipe, Service};

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
    /// A symbolic link created inside a tmpfs.
    Symlink { target: PathBuf, dst: PathBuf },
}

/// The namespaces the sandbox gets (user, mount and IPC always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespaces {
    pub net: bool,
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
    }
    if has(Service::Portals) {
        r.push("--talk=org.freedesktop.portal.*".into());
    }
    if has(Service::Secrets) {
        r.push("--talk=org.freedesktop.secrets".into());
        r.push("--talk=org.kde.kwalletd5".into());
        r.push("--talk=org.kde.kwalletd6".into());
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

/// Maps a recipe's `~/…` lock path to where it lives for this profile on the host: under a
/// state directory when one covers it, else in the profile's home (never in the real home).
fn stale_lock_path(storage: &Storage, home_rel: &str) -> Option<PathBuf> {
    let rel = home_rel.strip_prefix("~/")?;
    match &storage.state {
        Some(state) => Some(state.join(rel)),
        None => Some(storage.home.join(rel)),
    }
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

        let mut m = vec![
            Mount::HostRoot,
            // proc stays writable: Chromium-style sandboxes write uid_map and oom_score_adj.
            Mount::Bind {
                src: "/proc".into(),
                dst: "/proc".into(),
                writable: true,
                devices: false,
                optional: false,
            },
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

        // The home: the profile's own, at the real path, then the host's look-and-feel on top.
        push_bind(&mut m, &profile_home, &host.home, true, false);
        // A copy-on-write home shows the real home's files; the app's own account must not be
        // among them, so each state path gets a fresh per-profile directory on top.
        let mut state_dirs = Vec::new();
        if let Some(state) = &storage.state {
            for sp in &recipe.state_paths {
                let Some(rel) = sp.strip_prefix("~/") else {
                    continue;
                };
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

        let mut prepare = Prepare {
            dirs: [profile_home.clone(), instance_dir.clone()]
                .into_iter()
                .chain(state_dirs)
                .collect(),
            remove: recipe
                .stale_locks
                .iter()
                .filter_map(|l| stale_lock_path(&storage, l))
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
                rules: bus_rules(recipe),
                suffix: crate::busproxy::names::suffix_for(profile.id.as_str()),
                label: profile.label(),
                desktop_entry: crate::launcher::launcher_id(&profile.id),
            }
        });

        if network == NetworkMode::Isolated {
            if let Some(rc) = &host.resolv_conf {
                let file = instance_dir.join("resolv.conf");
                push_bind(&mut m, &file, rc, false, false);
                prepare.resolv_conf = Some(file);
            }
        }

        for (k, v) in &recipe.env {
            env.insert(k.clone(), v.clone());
        }

        let argv = match &opts.command {
            Some(cmd) if !cmd.is_empty() => cmd.clone(),
            Some(_) => return Err(PlanError::NoCommand),
            None => {
                let (first, rest) = profile.command.split_first().ok_or(PlanError::NoCommand)?;
                let mut v = vec![first.clone()];
                // Recipe switches go right after the program: a desktop entry's command may end
                // in "--", after which everything would be taken for a URL.
                v.extend(recipe.args.iter().cloned());
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
                pid: false,
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
}
