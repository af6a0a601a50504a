//! Recipes: data saying how to clone one app (`profiles/<id>.toml` in the source tree).
//!
//! Looked up, first match wins, in `$XDG_CONFIG_HOME/doppel/recipes/` (the person's own), each
//! `$XDG_DATA_DIRS/doppel/profiles/` (installed), and last the source tree's `profiles/` (a
//! development build run from its checkout). The `generic` recipe is also built in, so an app
//! without a recipe can always be cloned.
//!
//! Paths in a recipe (`state_paths`, `stale_locks`) start with `~/` or with one of the XDG base
//! directories (`$XDG_CONFIG_HOME/`, `$XDG_DATA_HOME/`, `$XDG_CACHE_HOME/`, `$XDG_STATE_HOME/`),
//! which the plan resolves the way the app will inside its sandbox (and, for a Flatpak install,
//! inside `~/.var/app/<id>/`). Arguments, environment values and paths may use placeholders:
//! `{class}` (the profile's window class, `org.doppel.Doppel.<id>`, also its launcher's id),
//! `{id}` (the profile id) and, in `args` and `env` only, `{password_store}` (what Chromium and
//! Electron's `--password-store` needs for the profile's keyring policy). `{{` and `}}` stand for
//! literal braces.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dirs::Dirs;
use crate::profile::NetworkMode;

/// The id of the recipe used for an app that has none of its own.
pub const GENERIC: &str = "generic";

const BUILTIN_GENERIC: &str = include_str!("../../profiles/generic.toml");

/// A host service an app needs inside its sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    /// X11 and Wayland display sockets.
    Display,
    /// PipeWire and PulseAudio sockets.
    Audio,
    /// `/dev/dri` for GPU rendering.
    Gpu,
    /// `org.freedesktop.Notifications` on the session bus.
    Notifications,
    /// The StatusNotifierItem tray (`org.kde.StatusNotifierWatcher`).
    Tray,
    /// xdg-desktop-portal (file chooser, open URI, settings…).
    Portals,
    /// The Secret Service (`org.freedesktop.secrets`) and KWallet.
    Secrets,
    /// Media player control (MPRIS).
    Mpris,
    /// Screen saver and idle inhibition.
    Inhibit,
}

/// What a new profile of an app gets for its secrets, as a recipe says it (`keyring = …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyringDefault {
    /// No keyring: the app keeps its secrets in its own files, inside the profile's storage.
    #[default]
    None,
    /// The host's keyring: the Secret Service, or KWallet on KDE Plasma, whichever the desktop
    /// uses when the profile is created.
    Host,
}

/// A profile's keyring policy, fixed when the profile is created and recorded in it: apps that
/// remember which backend encrypted their data (Signal, Element) refuse to open it, or migrate
/// it, when the backend changes between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Keyring {
    /// No keyring service is reachable; Chromium and Electron apps run with
    /// `--password-store=basic`.
    #[default]
    None,
    /// The host's Secret Service (`org.freedesktop.secrets`: GNOME Keyring, KeePassXC…). It has
    /// no per-app access control: the clone can read every secret in the unlocked collection.
    SecretService,
    /// The host's KWallet 5 (`org.kde.kwalletd5`).
    Kwallet5,
    /// The host's KWallet 6 (`org.kde.kwalletd6`).
    Kwallet6,
}

impl Keyring {
    /// The value of Chromium's and Electron's `--password-store` switch for this policy.
    pub fn password_store(self) -> &'static str {
        match self {
            Self::None => "basic",
            Self::SecretService => "gnome-libsecret",
            Self::Kwallet5 => "kwallet5",
            Self::Kwallet6 => "kwallet6",
        }
    }

    /// The session-bus name of the service this policy lets the clone talk to.
    pub fn bus_name(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::SecretService => Some("org.freedesktop.secrets"),
            Self::Kwallet5 => Some("org.kde.kwalletd5"),
            Self::Kwallet6 => Some("org.kde.kwalletd6"),
        }
    }

    /// The policy that `default` means on a desktop described by `XDG_CURRENT_DESKTOP` and
    /// `KDE_SESSION_VERSION`.
    pub fn choose(
        default: KeyringDefault,
        current_desktop: Option<&str>,
        kde_session_version: Option<&str>,
    ) -> Self {
        match default {
            KeyringDefault::None => Self::None,
            KeyringDefault::Host => {
                let kde = current_desktop
                    .is_some_and(|d| d.split(':').any(|x| x.eq_ignore_ascii_case("KDE")));
                match (kde, kde_session_version.map(str::trim)) {
                    (true, Some("6")) => Self::Kwallet6,
                    (true, _) => Self::Kwallet5,
                    (false, _) => Self::SecretService,
                }
            }
        }
    }
}

impl fmt::Display for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::SecretService => "secret-service",
            Self::Kwallet5 => "kwallet5",
            Self::Kwallet6 => "kwallet6",
        })
    }
}

/// Session-bus rules, with the meanings of Flatpak's `--own-name`, `--talk-name`, `--see`,
/// `--call` and `--broadcast`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusRules {
    #[serde(default)]
    pub own: Vec<String>,
    #[serde(default)]
    pub talk: Vec<String>,
    #[serde(default)]
    pub see: Vec<String>,
    /// `NAME=RULE`, RULE being `[interface[.method]][@/path[/*]]`.
    #[serde(default)]
    pub call: Vec<String>,
    #[serde(default)]
    pub broadcast: Vec<String>,
}

/// How to clone one app.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// From the file name; not written in the file.
    #[serde(skip)]
    pub id: String,
    /// Where it was read from.
    #[serde(skip)]
    pub source: PathBuf,
    /// The app's name ("Telegram Desktop").
    pub name: String,
    /// Desktop-entry ids (without `.desktop`) this recipe applies to.
    #[serde(default)]
    pub desktop_ids: Vec<String>,
    /// Executable names this recipe applies to, the first being the one to run when nothing
    /// else says.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Flatpak application ids of the app (also the ids of the desktop entries Flatpak
    /// exports). A profile made from one runs `flatpak run <id>`, and its state is the whole of
    /// `~/.var/app/<id>`.
    #[serde(default)]
    pub flatpak_ids: Vec<String>,
    /// File-name patterns of the app's AppImages (`*` matches any run of characters), e.g.
    /// `"teams-for-linux-*.AppImage"`.
    #[serde(default)]
    pub appimage_names: Vec<String>,
    /// Where the app keeps its account (`~/…` or `$XDG_…_HOME/…`); a clone always gets fresh,
    /// per-profile ones.
    #[serde(default)]
    pub state_paths: Vec<String>,
    /// Lock files a crash can leave behind, deleted at launch; a `*` in a path element matches
    /// any run of characters in a name (Mozilla's profile directories have random names).
    #[serde(default)]
    pub stale_locks: Vec<String>,
    /// Host services the app needs.
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub bus: BusRules,
    /// Extra arguments put after the app's command.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment for the app.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The network a new profile of this app gets.
    #[serde(default)]
    pub network: NetworkMode,
    /// The keyring policy a new profile of this app gets; `host` needs the `secrets` service.
    #[serde(default)]
    pub keyring: KeyringDefault,
    /// URL schemes the app handles (`tg`, `sgnl`…), for the profile's launcher.
    #[serde(default)]
    pub schemes: Vec<String>,
    /// A path (written like the state paths) that exists once an account has signed in: a
    /// running clone without it is at its login screen, and gets the login links.
    #[serde(default)]
    pub login_marker: Option<String>,
    /// Whether the app gets its own PID namespace, seeing only the clone's processes (the
    /// default). `false` runs it among the host's processes, for an app that must find or signal
    /// a host process by its PID.
    #[serde(default = "yes")]
    pub pid_namespace: bool,
}

fn yes() -> bool {
    true
}

/// A recipe that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("there is no recipe \"{0}\"; `doppel apps` lists the apps and their recipes")]
    NotFound(String),
}

/// Renders a TOML error as `line L, column C: key `k`: message`, the line and key taken from
/// the error's span.
pub fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim_end();
    let Some(span) = e.span() else {
        return msg.to_owned();
    };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    match line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty())
    {
        Some(key) if !key.starts_with('[') => {
            format!("line {line_no}, column {col}: key `{key}`: {msg}")
        }
        _ => format!("line {line_no}, column {col}: {msg}"),
    }
}

impl Recipe {
    /// Parses and validates a recipe file's text.
    pub fn parse(id: &str, path: &Path, text: &str) -> Result<Self, RecipeError> {
        let mut r: Recipe = toml::from_str(text).map_err(|e| RecipeError::Parse {
            path: path.to_owned(),
            message: describe_toml_error(text, &e),
        })?;
        r.id = id.to_owned();
        r.source = path.to_owned();
        r.validate()?;
        Ok(r)
    }

    fn invalid(&self, key: &'static str, message: String) -> RecipeError {
        RecipeError::Invalid {
            path: self.source.clone(),
            key,
            message,
        }
    }

    fn validate(&self) -> Result<(), RecipeError> {
        crate::id::validate(&self.id).map_err(|e| self.invalid("file name", e.to_string()))?;
        if self.name.trim().is_empty() {
            return Err(self.invalid("name", "must not be empty".into()));
        }
        for p in &self.state_paths {
            check_recipe_path(p, false)
                .map_err(|m| self.invalid("state_paths", format!("{p:?}: {m}")))?;
        }
        for p in &self.stale_locks {
            check_recipe_path(p, true)
                .map_err(|m| self.invalid("stale_locks", format!("{p:?}: {m}")))?;
        }
        if let Some(p) = &self.login_marker {
            check_recipe_path(p, false)
                .map_err(|m| self.invalid("login_marker", format!("{p:?}: {m}")))?;
        }
        for c in &self.commands {
            let plausible = c.starts_with('/')
                || !c.is_empty()
                    && !c.starts_with('-')
                    && c.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "._+-".contains(ch));
            if !plausible || c.contains("//") || c.ends_with('/') {
                return Err(self.invalid(
                    "commands",
                    format!(
                        "{c:?}: give a command name (letters, digits, . _ + -) or an absolute path"
                    ),
                ));
            }
        }
        for (key, names) in [
            ("bus.own", &self.bus.own),
            ("bus.talk", &self.bus.talk),
            ("bus.see", &self.bus.see),
        ] {
            for n in names {
                check_bus_name(n).map_err(|m| self.invalid(key, format!("{n:?}: {m}")))?;
            }
        }
        for (key, rules) in [
            ("bus.call", &self.bus.call),
            ("bus.broadcast", &self.bus.broadcast),
        ] {
            for r in rules {
                let (name, rule) = r
                    .split_once('=')
                    .ok_or_else(|| self.invalid(key, format!("{r:?}: expected NAME=RULE")))?;
                check_bus_name(name).map_err(|m| self.invalid(key, format!("{r:?}: {m}")))?;
                if rule.is_empty() || rule.contains(char::is_whitespace) {
                    return Err(self.invalid(key, format!("{r:?}: empty or spaced RULE")));
                }
            }
        }
        for (k, v) in &self.env {
            let ok = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(self.invalid("env", format!("{k:?} is not a variable name")));
            }
            check_template(v, ARG_PLACEHOLDERS)
                .map_err(|m| self.invalid("env", format!("{k} = {v:?}: {m}")))?;
        }
        for a in &self.args {
            check_template(a, ARG_PLACEHOLDERS)
                .map_err(|m| self.invalid("args", format!("{a:?}: {m}")))?;
        }
        for d in &self.desktop_ids {
            // Ids like "org.telegram.desktop" legitimately end in ".desktop"; the file suffix
            // cannot be told apart, so it is simply never written.
            let plausible = !d.is_empty()
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !plausible {
                return Err(self.invalid(
                    "desktop_ids",
                    format!(
                        "{d:?}: give the desktop-file id (letters, digits, . _ -), without '/'"
                    ),
                ));
            }
        }
        for f in &self.flatpak_ids {
            let parts = f.split('.').count();
            if check_bus_name(f).is_err() || f.ends_with(".*") || parts < 3 {
                return Err(self.invalid(
                    "flatpak_ids",
                    format!("{f:?}: a Flatpak application id has at least three dot-separated elements, like org.example.App"),
                ));
            }
        }
        for a in &self.appimage_names {
            let lower = a.to_ascii_lowercase();
            if a.contains('/') || !lower.ends_with(".appimage") || lower == ".appimage" {
                return Err(self.invalid(
                    "appimage_names",
                    format!("{a:?}: give a file-name pattern ending in .AppImage, without '/', like \"App-*.AppImage\""),
                ));
            }
        }
        for sc in &self.schemes {
            let ok = sc.starts_with(|c: char| c.is_ascii_lowercase())
                && sc
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
            if !ok {
                return Err(self.invalid(
                    "schemes",
                    format!("{sc:?}: a URL scheme is lower-case letters, digits, + - ., starting with a letter"),
                ));
            }
        }
        if self.keyring == KeyringDefault::Host && !self.services.contains(&Service::Secrets) {
            return Err(self.invalid(
                "keyring",
                "\"host\" gives the app the host's keyring, so \"secrets\" must be among its services".into(),
            ));
        }
        Ok(())
    }

    /// Whether the recipe gives the app's windows the profile's own class (`{class}` in its
    /// arguments or environment), so that the launcher can name it in `StartupWMClass`.
    pub fn sets_window_class(&self) -> bool {
        let has = |s: &String| s.contains("{class}");
        self.args.iter().any(has) || self.env.values().any(has)
    }

    /// The keyring policy a new profile of this app gets on a desktop described by
    /// `XDG_CURRENT_DESKTOP` and `KDE_SESSION_VERSION`. An app without the `secrets` service
    /// gets none.
    pub fn initial_keyring(
        &self,
        current_desktop: Option<&str>,
        kde_session_version: Option<&str>,
    ) -> Keyring {
        if !self.services.contains(&Service::Secrets) {
            return Keyring::None;
        }
        Keyring::choose(self.keyring, current_desktop, kde_session_version)
    }

    /// Whether this recipe applies to a desktop entry id (a native or a Flatpak one) or a
    /// command (its file name, an AppImage's included).
    pub fn matches(&self, desktop_id: Option<&str>, command: Option<&str>) -> bool {
        let desktop = desktop_id.is_some_and(|d| {
            self.desktop_ids.iter().any(|x| x == d) || self.flatpak_ids.iter().any(|x| x == d)
        });
        let name = command.map(|c| {
            Path::new(c)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(c)
        });
        let cmd =
            name.is_some_and(|c| self.commands.iter().any(|x| x == c) || self.is_appimage_name(c));
        desktop || cmd
    }

    /// Whether a file name is one of this app's AppImages.
    pub fn is_appimage_name(&self, file_name: &str) -> bool {
        self.appimage_names.iter().any(|p| glob_match(p, file_name))
    }
}

/// The directory a recipe path starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseDir {
    /// `~/`
    Home,
    /// `$XDG_CONFIG_HOME/` (`~/.config`)
    Config,
    /// `$XDG_DATA_HOME/` (`~/.local/share`)
    Data,
    /// `$XDG_CACHE_HOME/` (`~/.cache`)
    Cache,
    /// `$XDG_STATE_HOME/` (`~/.local/state`)
    State,
}

impl BaseDir {
    /// The environment variable naming this directory, if any.
    pub fn variable(self) -> Option<&'static str> {
        match self {
            Self::Home => None,
            Self::Config => Some("XDG_CONFIG_HOME"),
            Self::Data => Some("XDG_DATA_HOME"),
            Self::Cache => Some("XDG_CACHE_HOME"),
            Self::State => Some("XDG_STATE_HOME"),
        }
    }

    /// Where the XDG Base Directory Specification puts it when the variable is unset, relative
    /// to the home directory.
    pub fn default_in_home(self) -> &'static str {
        match self {
            Self::Home => "",
            Self::Config => ".config",
            Self::Data => ".local/share",
            Self::Cache => ".cache",
            Self::State => ".local/state",
        }
    }

    /// Where Flatpak puts it for an app, relative to the app's `~/.var/app/<id>`.
    pub fn in_flatpak_app_dir(self) -> &'static str {
        match self {
            Self::Home => "",
            Self::Config => "config",
            Self::Data => "data",
            Self::Cache => "cache",
            Self::State => ".local/state",
        }
    }
}

/// Splits a recipe path into its base directory and the rest (`"a/b"`), or says why it is not
/// one.
pub fn split_recipe_path(p: &str) -> Result<(BaseDir, &str), &'static str> {
    const BASES: [(&str, BaseDir); 5] = [
        ("~/", BaseDir::Home),
        ("$XDG_CONFIG_HOME/", BaseDir::Config),
        ("$XDG_DATA_HOME/", BaseDir::Data),
        ("$XDG_CACHE_HOME/", BaseDir::Cache),
        ("$XDG_STATE_HOME/", BaseDir::State),
    ];
    BASES
        .iter()
        .find_map(|(prefix, base)| p.strip_prefix(prefix).map(|rest| (*base, rest)))
        .ok_or(
            "must start with \"~/\" or with $XDG_CONFIG_HOME/, $XDG_DATA_HOME/, $XDG_CACHE_HOME/ \
             or $XDG_STATE_HOME/ (inside the home directory)",
        )
}

fn check_recipe_path(p: &str, globs: bool) -> Result<(), String> {
    let (_, rest) = split_recipe_path(p).map_err(str::to_owned)?;
    check_template(rest, PATH_PLACEHOLDERS)?;
    let rest = expand(rest, &Placeholders::SAMPLE);
    if rest.is_empty()
        || rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(
            "must name a path below that directory, without \".\", \"..\" or \"//\"".into(),
        );
    }
    if !globs && rest.contains('*') {
        return Err("a state path cannot hold a '*' (only stale_locks can)".into());
    }
    if rest.split('/').any(|c| c.chars().all(|ch| ch == '*')) {
        return Err("an element cannot be only '*'; say more of the name (\"*.default*\")".into());
    }
    Ok(())
}

/// Whether `name` matches `pattern`, in which `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for m in middle {
        match rest.find(m) {
            Some(i) => rest = &rest[i + m.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Values for a recipe's placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placeholders<'a> {
    /// `{class}`: the profile's window class.
    pub class: &'a str,
    /// `{id}`: the profile id.
    pub id: &'a str,
    /// `{password_store}`: [`Keyring::password_store`] of the profile's policy.
    pub password_store: &'a str,
}

impl Placeholders<'_> {
    /// Values used to check a recipe.
    pub const SAMPLE: Placeholders<'static> = Placeholders {
        class: "org.doppel.Doppel.sample",
        id: "sample",
        password_store: "basic",
    };

    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "class" => Some(self.class),
            "id" => Some(self.id),
            "password_store" => Some(self.password_store),
            _ => None,
        }
    }
}

/// Placeholders allowed in `args` and `env` values.
pub const ARG_PLACEHOLDERS: &[&str] = &["class", "id", "password_store"];
/// Placeholders allowed in `state_paths` and `stale_locks`.
pub const PATH_PLACEHOLDERS: &[&str] = &["class", "id"];

/// One piece of a template: literal text or a placeholder's name.
enum Piece<'a> {
    Text(char),
    Name(&'a str),
}

fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        match c {
            '{' if it.peek().map(|p| p.1) == Some('{') => {
                it.next();
                out.push(Piece::Text('{'));
            }
            '{' => {
                let close = s[i + 1..].find('}').ok_or_else(|| {
                    "a '{' opens a placeholder that is never closed; write {{ for a literal brace"
                        .to_owned()
                })?;
                let name = &s[i + 1..i + 1 + close];
                out.push(Piece::Name(name));
                while it.peek().is_some_and(|(j, _)| *j <= i + 1 + close) {
                    it.next();
                }
            }
            '}' if it.peek().map(|p| p.1) == Some('}') => {
                it.next();
                out.push(Piece::Text('}'));
            }
            '}' => {
                return Err("a lone '}'; write }} for a literal brace".into());
            }
            c => out.push(Piece::Text(c)),
        }
    }
    Ok(out)
}

/// Checks that `s` uses only the placeholders in `allowed`.
pub fn check_template(s: &str, allowed: &[&str]) -> Result<(), String> {
    for p in pieces(s)? {
        if let Piece::Name(n) = p {
            if !allowed.contains(&n) {
                let list: Vec<String> = allowed.iter().map(|a| format!("{{{a}}}")).collect();
                return Err(format!(
                    "unknown placeholder {{{n}}}; here only {} can be used",
                    list.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// `s` with its placeholders replaced. A template that [`check_template`] refuses comes back
/// unchanged (the loader never lets one through).
pub fn expand(s: &str, values: &Placeholders<'_>) -> String {
    let Ok(pieces) = pieces(s) else {
        return s.to_owned();
    };
    let mut out = String::with_capacity(s.len());
    for p in pieces {
        match p {
            Piece::Text(c) => out.push(c),
            Piece::Name(n) => match values.get(n) {
                Some(v) => out.push_str(v),
                None => {
                    out.push('{');
                    out.push_str(n);
                    out.push('}');
                }
            },
        }
    }
    out
}

/// Checks a well-known bus name, allowing a trailing `.*` wildcard as Flatpak does.
pub fn check_bus_name(n: &str) -> Result<(), &'static str> {
    let base = n.strip_suffix(".*").unwrap_or(n);
    let parts: Vec<&str> = base.split('.').collect();
    let ok = base.len() <= 255
        && parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with(|c: char| c.is_ascii_digit())
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err("not a D-Bus well-known name (like org.example.App, or org.example.*)")
    }
}

/// Where distribution packages install the recipes.
pub const INSTALLED_RECIPES: &str = "/usr/share/doppel/profiles";

/// The source tree's `profiles/`, when running from a checkout.
fn source_tree_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles")
}

/// Whether this program runs from the source tree it was built in (a `target/` below it), where
/// the tree's `profiles/` is the truth; an installed copy must not read a build directory that
/// happens to survive on the build machine.
fn running_from_source_tree() -> bool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match (std::env::current_exe(), root.canonicalize()) {
        (Ok(exe), Ok(root)) => exe.starts_with(root),
        _ => false,
    }
}

/// Where recipes are looked up, first match winning: the person's own, the system's
/// (`$XDG_DATA_DIRS/doppel/profiles`, and `/usr/share/doppel/profiles` in any case), then, for a
/// program run from its build tree, the tree's `profiles/`.
pub fn search_dirs(dirs: &Dirs) -> Vec<PathBuf> {
    let mut v = vec![dirs.user_recipes()];
    v.extend(dirs.data_dirs.iter().map(|d| d.join("doppel/profiles")));
    // Where the packages put them, even for a session whose XDG_DATA_DIRS leaves /usr/share out.
    let installed = PathBuf::from(INSTALLED_RECIPES);
    if !v.contains(&installed) {
        v.push(installed);
    }
    if running_from_source_tree() {
        v.push(source_tree_dir());
    }
    v
}

/// Every recipe found, by id, and the files that could not be used.
#[derive(Debug, Default)]
pub struct RecipeSet {
    pub recipes: BTreeMap<String, Recipe>,
    pub errors: Vec<RecipeError>,
}

impl RecipeSet {
    /// Loads every recipe from the search directories.
    pub fn load(dirs: &Dirs) -> Self {
        Self::load_from(&search_dirs(dirs))
    }

    /// Loads every recipe from `dirs`, earlier directories winning.
    pub fn load_from(dirs: &[PathBuf]) -> Self {
        let mut set = RecipeSet::default();
        // An id whose first file is broken stays broken: a later file must not silently stand
        // in for the one the person edited.
        let mut seen = std::collections::BTreeSet::new();
        for dir in dirs {
            let Ok(rd) = fs::read_dir(dir) else { continue };
            let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            files.sort();
            for path in files {
                let Some(id) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".toml"))
                    .map(str::to_owned)
                else {
                    continue;
                };
                if !seen.insert(id.clone()) {
                    continue;
                }
                let loaded = fs::read_to_string(&path)
                    .map_err(|source| RecipeError::Io {
                        path: path.clone(),
                        source,
                    })
                    .and_then(|text| Recipe::parse(&id, &path, &text));
                match loaded {
                    Ok(r) => {
                        set.recipes.insert(id, r);
                    }
                    Err(e) => set.errors.push(e),
                }
            }
        }
        if !seen.contains(GENERIC) {
            if let Ok(r) = Recipe::parse(GENERIC, Path::new("<built-in generic>"), BUILTIN_GENERIC)
            {
                set.recipes.insert(GENERIC.to_owned(), r);
            }
        }
        set
    }

    /// The recipe `id`, or why it cannot be had.
    pub fn get(&self, id: &str) -> Result<&Recipe, RecipeError> {
        if let Some(r) = self.recipes.get(id) {
            return Ok(r);
        }
        let broken = self.errors.iter().find(|e| match e {
            RecipeError::Parse { path, .. }
            | RecipeError::Invalid { path, .. }
            | RecipeError::Io { path, .. } => path.file_stem().and_then(|s| s.to_str()) == Some(id),
            RecipeError::NotFound(_) => false,
        });
        match broken {
            Some(e) => Err(RecipeError::Parse {
                path: PathBuf::from(format!("recipe \"{id}\"")),
                message: e.to_string(),
            }),
            None => Err(RecipeError::NotFound(id.to_owned())),
        }
    }

    /// The recipe for a desktop entry or command, if one claims it (never `generic`).
    pub fn find_for(&self, desktop_id: Option<&str>, command: Option<&str>) -> Option<&Recipe> {
        self.recipes
            .values()
            .find(|r| r.id != GENERIC && r.matches(desktop_id, command))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Recipe, RecipeError> {
        Recipe::parse("t", Path::new("/r/t.toml"), text)
    }

    #[test]
    fn every_recipe_in_the_source_tree_is_valid() {
        let set = RecipeSet::load_from(&[source_tree_dir()]);
        assert!(set.errors.is_empty(), "{:#?}", set.errors);
        assert!(set.recipes.contains_key(GENERIC));
        assert!(set.recipes.contains_key("telegram-desktop"));
        // The built-in copy is the file itself.
        assert_eq!(
            set.recipes[GENERIC],
            Recipe::parse(GENERIC, &set.recipes[GENERIC].source, BUILTIN_GENERIC).unwrap()
        );
        for r in set.recipes.values() {
            assert!(
                r.id == GENERIC || !r.commands.is_empty() || !r.desktop_ids.is_empty(),
                "{} matches nothing",
                r.id
            );
        }
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = parse("name = \"T\"\nstate_path = [\"~/.t\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/r/t.toml: line 2"), "{e}");
        assert!(e.contains("state_path"), "{e}");
    }

    #[test]
    fn bad_value_names_file_line_and_key() {
        let e = parse("name = \"T\"\n\nservices = [\"display\", \"telepathy\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("key `services`"), "{e}");
        assert!(e.contains("telepathy"), "{e}");
        let e = parse("name = \"T\"\nnetwork = \"wifi\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("network"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        for (text, key) in [
            ("name = \"T\"\nstate_paths = [\"/etc\"]", "state_paths"),
            ("name = \"T\"\nstate_paths = [\"~/../x\"]", "state_paths"),
            ("name = \"T\"\nstate_paths = [\"~/\"]", "state_paths"),
            ("name = \"T\"\nstale_locks = [\"~/a//b\"]", "stale_locks"),
            ("name = \"T\"\n[bus]\nown = [\"nodots\"]", "bus.own"),
            ("name = \"T\"\n[bus]\ncall = [\"org.a.B\"]", "bus.call"),
            ("name = \"T\"\n[env]\n\"A B\" = \"x\"", "env"),
            ("name = \"T\"\ndesktop_ids = [\"a/b\"]", "desktop_ids"),
            ("name = \"T\"\ncommands = [\"bin/x\"]", "commands"),
            ("name = \"  \"", "name"),
        ] {
            match parse(text) {
                Err(RecipeError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn earlier_directories_win_and_broken_files_are_not_replaced() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        fs::write(
            a.path().join("x.toml"),
            "name = \"Mine\"\ncommands = [\"x\"]",
        )
        .unwrap();
        fs::write(
            b.path().join("x.toml"),
            "name = \"Theirs\"\ncommands = [\"x\"]",
        )
        .unwrap();
        fs::write(a.path().join("y.toml"), "name = ").unwrap();
        fs::write(b.path().join("y.toml"), "name = \"Y\"\ncommands = [\"y\"]").unwrap();
        let set = RecipeSet::load_from(&[a.path().into(), b.path().into()]);
        assert_eq!(set.get("x").unwrap().name, "Mine");
        let e = set.get("y").unwrap_err().to_string();
        assert!(e.contains("y.toml"), "{e}");
        assert!(set.get("generic").is_ok(), "built-in generic");
        assert!(matches!(set.get("nope"), Err(RecipeError::NotFound(_))));
    }

    #[test]
    fn matching_by_desktop_id_or_command() {
        let r = Recipe::parse(
            "tg",
            Path::new("tg.toml"),
            "name = \"T\"\ndesktop_ids = [\"org.telegram.desktop\"]\ncommands = [\"telegram-desktop\"]",
        )
        .unwrap();
        assert!(r.matches(Some("org.telegram.desktop"), None));
        assert!(r.matches(None, Some("/usr/bin/telegram-desktop")));
        assert!(!r.matches(Some("org.other"), Some("sh")));
    }
    #[test]
    fn xdg_bases_placeholders_and_globs_in_paths() {
        let ok = parse(
            "name = \"T\"\nstate_paths = [\"$XDG_CONFIG_HOME/T\", \"$XDG_DATA_HOME/T-{id}\", \
             \"$XDG_CACHE_HOME/t\", \"$XDG_STATE_HOME/t\", \"~/.t\"]\n\
             stale_locks = [\"$XDG_CONFIG_HOME/m/*.default*/lock\", \"~/.t/{class}.lock\"]",
        )
        .unwrap();
        assert_eq!(ok.state_paths.len(), 5);
        assert_eq!(
            split_recipe_path("$XDG_DATA_HOME/T").unwrap(),
            (BaseDir::Data, "T")
        );
        for (text, key, says) in [
            (
                "state_paths = [\"$XDG_MUSIC_DIR/x\"]",
                "state_paths",
                "must start with",
            ),
            (
                "state_paths = [\"$XDG_CONFIG_HOME/\"]",
                "state_paths",
                "below that directory",
            ),
            (
                "state_paths = [\"~/a/*.b\"]",
                "state_paths",
                "only stale_locks",
            ),
            ("stale_locks = [\"~/a/*/lock\"]", "stale_locks", "only '*'"),
            (
                "state_paths = [\"~/{password_store}\"]",
                "state_paths",
                "unknown placeholder",
            ),
            ("args = [\"--x={clas}\"]", "args", "{clas}"),
            ("args = [\"--x={class\"]", "args", "never closed"),
            ("args = [\"a}b\"]", "args", "lone '}'"),
            ("[env]\nX = \"{nope}\"", "env", "{nope}"),
        ] {
            match parse(&format!("name = \"T\"\n{text}")) {
                Err(e @ RecipeError::Invalid { key: k, .. }) => {
                    assert_eq!(k, key, "{text}");
                    assert!(e.to_string().contains(says), "{text}: {e}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn new_fields_are_checked() {
        for (text, key) in [
            ("flatpak_ids = [\"org.two\"]", "flatpak_ids"),
            ("flatpak_ids = [\"org.a.*\"]", "flatpak_ids"),
            ("appimage_names = [\"App-*\"]", "appimage_names"),
            ("appimage_names = [\"dir/App.AppImage\"]", "appimage_names"),
            ("schemes = [\"Tg\"]", "schemes"),
            ("schemes = [\"tg:\"]", "schemes"),
            ("keyring = \"host\"", "keyring"),
            ("commands = [\"a b\"]", "commands"),
            ("desktop_ids = [\"a b\"]", "desktop_ids"),
        ] {
            match parse(&format!("name = \"T\"\n{text}")) {
                Err(RecipeError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let e = parse("name = \"T\"\nkeyring = \"separate\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("keyring"), "{e}");
        let r = parse(
            "name = \"T\"\nservices = [\"secrets\"]\nkeyring = \"host\"\n\
             flatpak_ids = [\"org.example.T\"]\nappimage_names = [\"T-*.AppImage\"]\n\
             schemes = [\"t\", \"t+x\"]\nargs = [\"--class={class}\", \"{{literal}}\"]",
        )
        .unwrap();
        assert!(r.sets_window_class());
        assert!(!parse("name = \"T\"").unwrap().sets_window_class());
        assert!(r.matches(Some("org.example.T"), None));
        assert!(r.matches(None, Some("/home/a/Apps/T-1.2.AppImage")));
        assert!(!r.matches(None, Some("/home/a/Apps/U-1.2.AppImage")));
        assert_eq!(r.initial_keyring(Some("KDE"), Some("6")), Keyring::Kwallet6);
        let plain = parse("name = \"T\"\nkeyring = \"none\"").unwrap();
        assert_eq!(plain.initial_keyring(Some("KDE"), None), Keyring::None);
    }

    #[test]
    fn keyring_choice_follows_the_desktop_and_is_spelled_as_in_profiles() {
        use KeyringDefault as D;
        assert_eq!(Keyring::choose(D::None, Some("GNOME"), None), Keyring::None);
        assert_eq!(
            Keyring::choose(D::Host, Some("ubuntu:GNOME"), None),
            Keyring::SecretService
        );
        assert_eq!(Keyring::choose(D::Host, None, None), Keyring::SecretService);
        assert_eq!(
            Keyring::choose(D::Host, Some("KDE"), Some("5")),
            Keyring::Kwallet5
        );
        assert_eq!(
            Keyring::choose(D::Host, Some("KDE"), Some("6")),
            Keyring::Kwallet6
        );
        assert_eq!(
            Keyring::choose(D::Host, Some("kde"), None),
            Keyring::Kwallet5
        );
        for k in [
            Keyring::None,
            Keyring::SecretService,
            Keyring::Kwallet5,
            Keyring::Kwallet6,
        ] {
            #[derive(Serialize, Deserialize)]
            struct W {
                k: Keyring,
            }
            let text = toml::to_string(&W { k }).unwrap();
            assert_eq!(text.trim(), format!("k = \"{k}\""));
            assert_eq!(toml::from_str::<W>(&text).unwrap().k, k);
        }
        assert_eq!(Keyring::None.password_store(), "basic");
        assert_eq!(Keyring::SecretService.password_store(), "gnome-libsecret");
        assert_eq!(Keyring::None.bus_name(), None);
        assert_eq!(Keyring::Kwallet6.bus_name(), Some("org.kde.kwalletd6"));
    }

    #[test]
    fn templates_expand_and_escape() {
        let v = Placeholders {
            class: "org.doppel.Doppel.w",
            id: "w",
            password_store: "basic",
        };
        assert_eq!(expand("--class={class}", &v), "--class=org.doppel.Doppel.w");
        assert_eq!(expand("{id}-{id}", &v), "w-w");
        assert_eq!(expand("{{id}} {{", &v), "{id} {");
        assert_eq!(expand("}}", &v), "}");
        assert_eq!(
            expand("--password-store={password_store}", &v),
            "--password-store=basic"
        );
        assert_eq!(expand("ünï{id}", &v), "ünïw");
        assert!(check_template("{class}{id}", PATH_PLACEHOLDERS).is_ok());
        assert!(check_template("{password_store}", PATH_PLACEHOLDERS).is_err());
        assert!(check_template("{}", ARG_PLACEHOLDERS).is_err());
    }

    #[test]
    fn glob_matching() {
        for (p, n, want) in [
            ("*.default*", "ab12.default-esr", true),
            ("*.default*", "ab12.default", true),
            ("*.default*", "Crash Reports", false),
            ("*.*", "x.y", true),
            ("*.*", "xy", false),
            ("T-*.AppImage", "T-1.AppImage", true),
            ("T-*.AppImage", "T-.AppImage", true),
            ("T-*.AppImage", "T.AppImage", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxcyyb", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} ~ {n}");
        }
    }
}
