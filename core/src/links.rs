//! Login links (`tg://`, `slack://`, `element://`, `zoommtg://`…) for apps that have clones.
//!
//! Doppel registers itself (`org.doppel.Doppel.OpenLink.desktop`, `doppel open %u`) as the
//! default handler of every scheme a profile's recipe lists, remembering the handler it
//! replaced. A link then goes to the clone whose login is in progress; when several are, to the
//! one the person picks; when none is, to the first copy (the remembered handler).
//!
//! A clone's login is in progress when it runs and either its recipe's `login_marker` (a path
//! that exists once an account is signed in) is missing from its storage, or it asked the
//! desktop to open a web page (its session-bus proxy records OpenURI calls) in the last
//! [`BROWSER_LOGIN_WINDOW`].

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::apps;
use crate::atomic;
use crate::dirs::Dirs;
use crate::id::ProfileId;
use crate::instance;
use crate::profile::{self, HomeMode, Profile};
use crate::recipe::{self, RecipeSet};
use crate::storage;

/// The desktop-entry id of Doppel's link router.
pub const HANDLER_ID: &str = "org.doppel.Doppel.OpenLink";

/// How long after a clone opened a web page a login link is taken to be its answer.
pub const BROWSER_LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The file the session-bus proxy touches in the instance directory when the clone asks the
/// desktop to open a URI.
pub const OPENED_URI_FILE: &str = "opened-uri";

/// Why a link could not be registered or opened.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0:?} is not a link Doppel can open: it has no scheme (like tg: or slack:)")]
    NoScheme(String),
    #[error("no app on this system opens {0}: links, and no running profile is waiting for one; install the app, or start the profile that should get the link")]
    NoHandler(String),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("cannot hand the link to {label}: {message}")]
    Deliver { label: String, message: String },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LinkError + 'a {
    move |source| LinkError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The scheme of `url`, lower-case (RFC 3986: a letter, then letters, digits, `+`, `-`, `.`).
pub fn scheme_of(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then(|| scheme.to_ascii_lowercase())
}

/// A running clone that could take a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: ProfileId,
    pub label: String,
    /// Its login is in progress.
    pub waiting: bool,
}

/// Where a link goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Clone(ProfileId),
    /// Several clones are waiting: the person picks (or declines, for the first copy).
    Choose(Vec<Candidate>),
    /// The first copy: the handler Doppel replaced, if there was one.
    Host(Option<String>),
}

/// The rule: the one clone waiting for a login, a choice among several, else the first copy.
pub fn decide(candidates: &[Candidate], host: Option<String>) -> Target {
    let waiting: Vec<&Candidate> = candidates.iter().filter(|c| c.waiting).collect();
    match waiting.as_slice() {
        [one] => Target::Clone(one.id.clone()),
        [] => Target::Host(host),
        many => Target::Choose(many.iter().map(|c| (*c).clone()).collect()),
    }
}

/// Where on the host a recipe path (`~/…`, `$XDG_DATA_HOME/…`) of running profile `p` is: in
/// its private home, or in the state directory of a copy-on-write home. The XDG variables are
/// taken at their defaults.
fn host_path(dirs: &Dirs, p: &Profile, path: &str) -> Option<PathBuf> {
    let (base, rest) = recipe::split_recipe_path(path).ok()?;
    let rel = Path::new(base.default_in_home()).join(rest);
    let data = if p.encrypted {
        storage::volume_dir(p).join("data")
    } else {
        dirs.profile_data(&p.id)
    };
    Some(match p.home {
        HomeMode::Private => data.join("home").join(rel),
        HomeMode::Overlay => data.join("state").join(rel),
    })
}

/// Whether running profile `p` (of `recipe`) is in the middle of signing in.
fn waiting_for_login(dirs: &Dirs, p: &Profile, recipe: &recipe::Recipe) -> bool {
    // The instance's host-side directory, as the plan makes it.
    let opened_browser = dirs
        .runtime_dir
        .as_ref()
        .map(|r| r.join("doppel").join(p.id.as_str()))
        .and_then(|d| fs::metadata(d.join(OPENED_URI_FILE)).ok())
        .and_then(|m| m.modified().ok())
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < BROWSER_LOGIN_WINDOW);
    let signed_out = recipe
        .login_marker
        .as_deref()
        .and_then(|m| host_path(dirs, p, m))
        .is_some_and(|m| !m.exists());
    opened_browser || signed_out
}

/// The running clones whose app handles `scheme`.
pub fn candidates(dirs: &Dirs, scheme: &str) -> Vec<Candidate> {
    let set = RecipeSet::load(dirs);
    let Ok(all) = profile::list(dirs) else {
        return Vec::new();
    };
    all.into_iter()
        .flatten()
        .filter_map(|p| {
            let r = set.get(&p.recipe).ok()?;
            if !r.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
                return None;
            }
            if !instance::is_running(dirs, &p.id).unwrap_or(false) {
                return None;
            }
            Some(Candidate {
                waiting: waiting_for_login(dirs, &p, r),
                label: p.label(),
                id: p.id.clone(),
            })
        })
        .collect()
}

/// Where `url` should go now.
pub fn route(dirs: &Dirs, url: &str) -> Result<Target, LinkError> {
    let scheme = scheme_of(url).ok_or_else(|| LinkError::NoScheme(url.to_owned()))?;
    let host = previous_handlers(dirs).remove(&scheme);
    Ok(decide(&candidates(dirs, &scheme), host))
}

/// The first copy's target for `url`: the handler Doppel replaced.
pub fn route_host(dirs: &Dirs, url: &str) -> Target {
    let scheme = scheme_of(url).unwrap_or_default();
    Target::Host(previous_handlers(dirs).remove(&scheme))
}

/// Opens `url` with the first copy's handler `desktop_id` (the one Doppel replaced).
pub fn open_on_host(dirs: &Dirs, desktop_id: Option<&str>, url: &str) -> Result<String, LinkError> {
    let scheme = scheme_of(url).unwrap_or_default();
    let entry = desktop_id
        .and_then(|d| apps::find(dirs, d))
        .or_else(|| {
            // No remembered handler: an installed app that says it opens the scheme.
            let mime = format!("x-scheme-handler/{scheme}");
            apps::discover(dirs).entries.into_iter().find(|e| {
                !e.id.starts_with("org.doppel.Doppel.")
                    && e.mime_types.iter().any(|m| m.eq_ignore_ascii_case(&mime))
            })
        })
        .ok_or_else(|| LinkError::NoHandler(scheme.clone()))?;
    let mut argv = entry.exec.clone();
    argv.push(url.to_owned());
    let program = argv.first().cloned().unwrap_or_default();
    std::process::Command::new(&program)
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|source| LinkError::Spawn {
            program: program.clone(),
            source,
        })?;
    Ok(entry.name)
}

/// Hands `url` to running clone `id`: the app's command with the link, started inside the
/// clone, where the app's own single-instance mechanism passes it to the running copy.
pub fn open_in_clone(dirs: &Dirs, id: &ProfileId, url: &str) -> Result<String, LinkError> {
    let p = profile::load(dirs, id)?;
    let mut argv = p.command.clone();
    argv.push(url.to_owned());
    crate::sandbox::join(dirs, id, &argv).map_err(|e| LinkError::Deliver {
        label: p.label(),
        message: e.to_string(),
    })?;
    Ok(p.label())
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

fn state_file(dirs: &Dirs) -> PathBuf {
    dirs.config_home.join("doppel/links.toml")
}

/// The handlers Doppel replaced, by scheme.
fn previous_handlers(dirs: &Dirs) -> BTreeMap<String, String> {
    fs::read_to_string(state_file(dirs))
        .ok()
        .and_then(|t| toml::from_str(&t).ok())
        .unwrap_or_default()
}

/// `mimeapps.list`'s `[Default Applications]` entries, and the file's other lines kept as
/// they are.
struct MimeApps {
    lines: Vec<String>,
}

impl MimeApps {
    fn read(path: &Path) -> Self {
        Self {
            lines: fs::read_to_string(path)
                .map(|t| t.lines().map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }

    fn section_range(&self) -> Option<(usize, usize)> {
        let start = self
            .lines
            .iter()
            .position(|l| l.trim() == "[Default Applications]")?;
        let end = self.lines[start + 1..]
            .iter()
            .position(|l| l.trim_start().starts_with('['))
            .map_or(self.lines.len(), |i| start + 1 + i);
        Some((start, end))
    }

    fn get(&self, key: &str) -> Option<String> {
        let (s, e) = self.section_range()?;
        self.lines[s + 1..e].iter().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
    }

    fn set(&mut self, key: &str, value: Option<&str>) {
        if self.section_range().is_none() {
            if value.is_none() {
                return;
            }
            self.lines.push("[Default Applications]".into());
        }
        let Some((s, e)) = self.section_range() else {
            return;
        };
        let at = self.lines[s + 1..e]
            .iter()
            .position(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == key))
            .map(|i| s + 1 + i);
        match (at, value) {
            (Some(i), Some(v)) => self.lines[i] = format!("{key}={v}"),
            (Some(i), None) => {
                self.lines.remove(i);
            }
            (None, Some(v)) => self.lines.insert(e, format!("{key}={v}")),
            (None, None) => {}
        }
    }

    fn text(&self) -> String {
        let mut t = self.lines.join("\n");
        t.push('\n');
        t
    }
}

/// The schemes of every profile's recipe.
fn wanted_schemes(dirs: &Dirs) -> Vec<String> {
    let set = RecipeSet::load(dirs);
    let mut out: Vec<String> = profile::list(dirs)
        .map(|all| {
            all.into_iter()
                .flatten()
                .filter_map(|p| set.get(&p.recipe).ok().map(|r| r.schemes.clone()))
                .flatten()
                .map(|s| s.to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

/// The handler of `scheme` before Doppel: the person's default, else an installed app that
/// says it opens it.
fn current_handler(dirs: &Dirs, mime: &MimeApps, scheme: &str) -> Option<String> {
    let key = format!("x-scheme-handler/{scheme}");
    let own = |d: &str| d.starts_with("org.doppel.Doppel.");
    if let Some(v) = mime.get(&key) {
        if let Some(first) = v
            .split(';')
            .map(|d| d.trim().trim_end_matches(".desktop"))
            .find(|d| !d.is_empty())
        {
            if !own(first) {
                return Some(first.to_owned());
            }
        }
    }
    apps::discover(dirs)
        .entries
        .into_iter()
        .find(|e| !own(&e.id) && e.mime_types.iter().any(|m| m.eq_ignore_ascii_case(&key)))
        .map(|e| e.id)
}

/// Makes Doppel the handler of the schemes its profiles' apps use, and gives back the ones no
/// profile uses any more. Returns the schemes it handles.
pub fn sync(dirs: &Dirs) -> Result<Vec<String>, LinkError> {
    let wanted = wanted_schemes(dirs);
    let mut previous = previous_handlers(dirs);
    let mime_path = dirs.config_home.join("mimeapps.list");
    let mut mime = MimeApps::read(&mime_path);
    let ours = format!("{HANDLER_ID}.desktop");
    for scheme in &wanted {
        let key = format!("x-scheme-handler/{scheme}");
        if mime.get(&key).as_deref() != Some(ours.as_str()) {
            if let Some(h) = current_handler(dirs, &mime, scheme) {
                previous.insert(scheme.clone(), h);
            }
            mime.set(&key, Some(&ours));
        }
    }
    let stale: Vec<String> = previous
        .keys()
        .filter(|s| !wanted.contains(s))
        .cloned()
        .collect();
    for scheme in stale {
        let key = format!("x-scheme-handler/{scheme}");
        if mime.get(&key).as_deref() == Some(ours.as_str()) {
            let back = previous.get(&scheme).map(|d| format!("{d}.desktop"));
            mime.set(&key, back.as_deref());
        }
        previous.remove(&scheme);
    }
    // Schemes registered but never remembered (no previous handler) are dropped as well.
    for line in mime.lines.clone() {
        if let Some((k, v)) = line.split_once('=') {
            if let Some(s) = k.trim().strip_prefix("x-scheme-handler/") {
                if v.trim() == ours && !wanted.iter().any(|w| w == s) {
                    mime.set(k.trim(), None);
                }
            }
        }
    }

    let apps_dir = dirs.data_home.join("applications");
    let handler = apps_dir.join(&ours);
    if wanted.is_empty() {
        match fs::remove_file(&handler) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove", &handler)(e))
            }
            _ => {}
        }
    } else {
        fs::create_dir_all(&apps_dir).map_err(io_err("create", &apps_dir))?;
        let doppel = crate::launcher::doppel_program();
        let mimes: String = wanted
            .iter()
            .map(|s| format!("x-scheme-handler/{s};"))
            .collect();
        let text = format!(
            "[Desktop Entry]\nType=Application\nVersion=1.4\nName=Doppel Link Router\n\
             Comment=Opens a login link in the clone that is waiting for it\n\
             Exec={} open %u\nIcon=org.doppel.Doppel\nNoDisplay=true\nTerminal=false\n\
             MimeType={mimes}\n",
            crate::launcher::exec_arg(&doppel.to_string_lossy())
        );
        atomic::write(&handler, text.as_bytes(), 0o644).map_err(io_err("write", &handler))?;
    }
    if let Some(parent) = mime_path.parent() {
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    atomic::write(&mime_path, mime.text().as_bytes(), 0o644)
        .map_err(io_err("write", &mime_path))?;
    let state = state_file(dirs);
    if let Some(parent) = state.parent() {
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    let text = toml::to_string(&previous).unwrap_or_default();
    atomic::write(&state, text.as_bytes(), 0o600).map_err(io_err("write", &state))?;
    // Desktops that read the MIME cache rather than the files see the change after this.
    if let Some(update) = apps::which("update-desktop-database") {
        let _ = std::process::Command::new(update)
            .arg(&apps_dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, waiting: bool) -> Candidate {
        Candidate {
            id: ProfileId::parse(id).unwrap(),
            label: id.into(),
            waiting,
        }
    }

    #[test]
    fn schemes_are_read_as_rfc_3986_says() {
        assert_eq!(scheme_of("tg://resolve?domain=x").as_deref(), Some("tg"));
        assert_eq!(scheme_of("Slack://magic").as_deref(), Some("slack"));
        assert_eq!(
            scheme_of("zoommtg://zoom.us/join").as_deref(),
            Some("zoommtg")
        );
        assert_eq!(scheme_of("msteams:/l/meetup"), Some("msteams".into()));
        assert_eq!(scheme_of("/home/x"), None);
        assert_eq!(scheme_of("1tg://x"), None);
        assert_eq!(scheme_of("no scheme"), None);
    }

    #[test]
    fn the_waiting_clone_gets_the_link_else_the_person_or_the_first_copy_decides() {
        let host = Some("org.telegram.desktop".to_owned());
        assert_eq!(
            decide(&[cand("work", true), cand("home", false)], host.clone()),
            Target::Clone(ProfileId::parse("work").unwrap())
        );
        assert_eq!(
            decide(&[cand("work", false), cand("home", false)], host.clone()),
            Target::Host(host.clone())
        );
        assert_eq!(decide(&[], None), Target::Host(None));
        match decide(&[cand("work", true), cand("home", true)], host) {
            Target::Choose(c) => assert_eq!(c.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mimeapps_entries_are_set_and_restored_keeping_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("mimeapps.list");
        fs::write(
            &p,
            "[Added Associations]\ntext/plain=a.desktop;\n\n[Default Applications]\nx-scheme-handler/tg=org.telegram.desktop.desktop\ntext/html=firefox.desktop\n",
        )
        .unwrap();
        let mut m = MimeApps::read(&p);
        assert_eq!(
            m.get("x-scheme-handler/tg").as_deref(),
            Some("org.telegram.desktop.desktop")
        );
        m.set(
            "x-scheme-handler/tg",
            Some("org.doppel.Doppel.OpenLink.desktop"),
        );
        m.set(
            "x-scheme-handler/slack",
            Some("org.doppel.Doppel.OpenLink.desktop"),
        );
        let text = m.text();
        assert!(text.contains("x-scheme-handler/tg=org.doppel.Doppel.OpenLink.desktop\n"));
        assert!(text.contains("text/html=firefox.desktop"));
        assert!(text.contains("[Added Associations]\ntext/plain=a.desktop;"));
        m.set("x-scheme-handler/slack", None);
        assert!(!m.text().contains("slack"));
        let mut empty = MimeApps { lines: Vec::new() };
        empty.set("x-scheme-handler/tg", Some("x.desktop"));
        assert_eq!(
            empty.text(),
            "[Default Applications]\nx-scheme-handler/tg=x.desktop\n"
        );
    }
}
