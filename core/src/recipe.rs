//! Recipes: data saying how to clone one app (`profiles/<id>.toml` in the source tree).
//!
//! Looked up, first match wins, in `$XDG_CONFIG_HOME/doppel/recipes/` (the person's own), each
//! `$XDG_DATA_DIRS/doppel/profiles/` (installed), and last the source tree's `profiles/` (a
//! development build run from its checkout). The `generic` recipe is also built in, so an app
//! without a recipe can always be cloned.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    /// Where the app keeps its account (`~/…`); a clone always gets fresh, per-profile ones.
    #[serde(default)]
    pub state_paths: Vec<String>,
    /// Lock files a crash can leave behind, deleted at launch (`~/…`).
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
        for (key, paths) in [
            ("state_paths", &self.state_paths),
            ("stale_locks", &self.stale_locks),
        ] {
            for p in paths {
                check_home_path(p).map_err(|m| self.invalid(key, format!("{p:?}: {m}")))?;
            }
        }
        for c in &self.commands {
            if c.is_empty() || c.contains('/') && !c.starts_with('/') {
                return Err(self.invalid(
                    "commands",
                    format!("{c:?}: give a command name or an absolute path"),
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
        for k in self.env.keys() {
            let ok = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(self.invalid("env", format!("{k:?} is not a variable name")));
            }
        }
        for d in &self.desktop_ids {
            // Ids like "org.telegram.desktop" legitimately end in ".desktop"; the file suffix
            // cannot be told apart, so it is simply never written.
            if d.contains('/') || d.is_empty() {
                return Err(self.invalid(
                    "desktop_ids",
                    format!("{d:?}: give the desktop-file id, without '/'"),
                ));
            }
        }
        Ok(())
    }

    /// Whether this recipe applies to a desktop entry id or a command (its file name).
    pub fn matches(&self, desktop_id: Option<&str>, command: Option<&str>) -> bool {
        let desktop = desktop_id.is_some_and(|d| self.desktop_ids.iter().any(|x| x == d));
        let cmd = command
            .map(|c| {
                Path::new(c)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(c)
            })
            .is_some_and(|c| self.commands.iter().any(|x| x == c));
        desktop || cmd
    }
}

fn check_home_path(p: &str) -> Result<(), &'static str> {
    let rest = p
        .strip_prefix("~/")
        .ok_or("must start with \"~/\" (inside the home directory)")?;
    if rest.is_empty()
        || rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("must name a path below the home directory, without \".\", \"..\" or \"//\"");
    }
    Ok(())
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

/// The source tree's `profiles/`, when running from a checkout.
fn source_tree_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles")
}

/// Where recipes are looked up, first match winning.
pub fn search_dirs(dirs: &Dirs) -> Vec<PathBuf> {
    let mut v = vec![dirs.user_recipes()];
    v.extend(dirs.data_dirs.iter().map(|d| d.join("doppel/profiles")));
    v.push(source_tree_dir());
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
}
