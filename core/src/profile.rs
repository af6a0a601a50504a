//! Profiles: one cloned account of an app, stored as TOML under
//! `$XDG_CONFIG_HOME/doppel/profiles/<id>.toml`, with its data under
//! `$XDG_DATA_HOME/doppel/profiles/<id>/`.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::dirs::Dirs;
use crate::id::ProfileId;

/// How the clone's home directory is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HomeMode {
    /// The profile's own, initially empty, home directory at the real `$HOME` path.
    #[default]
    Private,
    /// Copy-on-write over the real home (needs the helper).
    Overlay,
}

impl fmt::Display for HomeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Private => "private",
            Self::Overlay => "overlay",
        })
    }
}

/// What network the clone gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Its own network namespace, connected through pasta: its abstract sockets and loopback
    /// ports are its own, the internet still works.
    #[default]
    Isolated,
    /// The host's network namespace.
    Host,
    /// Its own network namespace with only loopback.
    None,
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Isolated => "isolated",
            Self::Host => "host",
            Self::None => "none",
        })
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "isolated" => Ok(Self::Isolated),
            "host" => Ok(Self::Host),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "unknown network mode {s:?}: use isolated, host or none"
            )),
        }
    }
}

/// One cloned account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub id: ProfileId,
    /// Display name ("Work"); anything goes.
    pub name: String,
    /// The recipe id this profile was made from.
    pub recipe: String,
    /// The desktop entry the app came from, if any (for its name and icon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop_id: Option<String>,
    /// The app's display name, from the desktop entry or the recipe ("Telegram Desktop").
    pub app_name: String,
    /// The command line that starts the app, field codes removed.
    pub command: Vec<String>,
    /// Badge colour, `#rrggbb`.
    #[serde(default = "default_color")]
    pub color: String,
    #[serde(default)]
    pub home: HomeMode,
    #[serde(default)]
    pub network: NetworkMode,
    /// Data on an encrypted volume (needs the helper).
    #[serde(default)]
    pub encrypted: bool,
    /// Lock the volume when the last process exits.
    #[serde(default = "yes")]
    pub auto_lock: bool,
    /// What the clone gets for its secrets, chosen when the profile is created and never
    /// changed (see [`crate::recipe::Keyring`]); profiles from before it existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring: Option<crate::recipe::Keyring>,
}

fn yes() -> bool {
    true
}

fn default_color() -> String {
    "#3584e4".to_owned()
}

impl Profile {
    /// "Telegram Desktop (Work)": how the clone is labelled on the desktop.
    pub fn label(&self) -> String {
        format!("{} ({})", self.app_name, self.name)
    }
}

/// What went wrong with a profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("there is no profile \"{0}\"; `doppel list` shows the profiles you have")]
    NotFound(ProfileId),
    #[error("a profile \"{0}\" exists already; pick another id, or `doppel delete {0}` first")]
    Exists(ProfileId),
    #[error("{path}: {message}\nfix or remove this file")]
    Parse { path: PathBuf, message: String },
    #[error("the profile file {path} says its id is \"{found}\"; rename the file or fix its id")]
    IdMismatch { path: PathBuf, found: ProfileId },
    #[error("the colour {0:?} is not of the form #rrggbb")]
    BadColor(String),
    #[error("the display name cannot be empty or contain control characters")]
    BadName,
    #[error("a profile needs a command to run")]
    NoCommand,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ProfileError + 'a {
    move |source| ProfileError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Checks the fields a person can type.
pub fn validate(p: &Profile) -> Result<(), ProfileError> {
    if p.name.trim().is_empty() || p.name.chars().any(char::is_control) {
        return Err(ProfileError::BadName);
    }
    let c = p.color.as_bytes();
    if c.len() != 7 || c[0] != b'#' || !c[1..].iter().all(u8::is_ascii_hexdigit) {
        return Err(ProfileError::BadColor(p.color.clone()));
    }
    if p.command.is_empty() || p.command[0].is_empty() {
        return Err(ProfileError::NoCommand);
    }
    Ok(())
}

fn parse_file(path: &Path, text: &str) -> Result<Profile, ProfileError> {
    toml::from_str(text).map_err(|e| ProfileError::Parse {
        path: path.to_owned(),
        message: crate::recipe::describe_toml_error(text, &e),
    })
}

/// Loads one profile.
pub fn load(dirs: &Dirs, id: &ProfileId) -> Result<Profile, ProfileError> {
    let path = dirs.profile_file(id);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ProfileError::NotFound(id.clone()))
        }
        Err(e) => return Err(io_err("cannot read", &path)(e)),
    };
    let p = parse_file(&path, &text)?;
    if &p.id != id {
        return Err(ProfileError::IdMismatch { path, found: p.id });
    }
    Ok(p)
}

/// Lists every profile, sorted by id; files that cannot be read come back as errors in place.
pub fn list(dirs: &Dirs) -> Result<Vec<Result<Profile, ProfileError>>, ProfileError> {
    let dir = dirs.profiles_config();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("cannot list", &dir)(e)),
    };
    let mut ids = Vec::new();
    for ent in rd {
        let ent = ent.map_err(io_err("cannot list", &dir))?;
        let name = ent.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".toml")) else {
            continue;
        };
        // Temporary files of an atomic write start with '.', and so are not ids.
        if let Ok(id) = ProfileId::parse(stem) {
            ids.push(id);
        }
    }
    ids.sort();
    Ok(ids.iter().map(|id| load(dirs, id)).collect())
}

/// Creates a new profile: its data directory and its file. Fails if the id is taken; leaves
/// nothing behind on failure.
pub fn create(dirs: &Dirs, p: &Profile) -> Result<(), ProfileError> {
    validate(p)?;
    let cfg = dirs.profiles_config();
    fs::create_dir_all(&cfg).map_err(io_err("cannot create", &cfg))?;
    let path = dirs.profile_file(&p.id);
    let data = dirs.profile_data(&p.id);
    if path.exists() {
        return Err(ProfileError::Exists(p.id.clone()));
    }
    let text = serialize(p)?;
    // The data directory first: a profile file never points at missing data.
    let data_existed = data.exists();
    fs::create_dir_all(data.join("home")).map_err(io_err("cannot create", &data))?;
    set_private(&data)?;
    match atomic::write_new(&path, text.as_bytes(), 0o600) {
        Ok(()) => Ok(()),
        Err(e) => {
            if !data_existed {
                let _ = fs::remove_dir_all(&data);
            }
            if e.kind() == io::ErrorKind::AlreadyExists {
                Err(ProfileError::Exists(p.id.clone()))
            } else {
                Err(io_err("cannot write", &path)(e))
            }
        }
    }
}

fn set_private(dir: &Path) -> Result<(), ProfileError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("cannot chmod", dir))
}

fn serialize(p: &Profile) -> Result<String, ProfileError> {
    toml::to_string(p).map_err(|e| ProfileError::Parse {
        path: PathBuf::from(format!("<profile {}>", p.id)),
        message: e.to_string(),
    })
}

/// Saves changes to an existing profile atomically.
pub fn save(dirs: &Dirs, p: &Profile) -> Result<(), ProfileError> {
    validate(p)?;
    let path = dirs.profile_file(&p.id);
    if !path.exists() {
        return Err(ProfileError::NotFound(p.id.clone()));
    }
    atomic::write(&path, serialize(p)?.as_bytes(), 0o600).map_err(io_err("cannot write", &path))
}

/// Deletes a profile's file and all its data. The caller checks that it is not running.
pub fn delete(dirs: &Dirs, id: &ProfileId) -> Result<(), ProfileError> {
    let path = dirs.profile_file(id);
    if !path.exists() {
        return Err(ProfileError::NotFound(id.clone()));
    }
    // The file goes first, so that a failure half-way through the data leaves no profile that
    // looks intact; what is left of the data is named in the error.
    fs::remove_file(&path).map_err(io_err("cannot remove", &path))?;
    let data = dirs.profile_data(id);
    remove_tree(&data).map_err(io_err("cannot remove all of", &data))
}

/// Removes a directory tree even where the app made parts of it read-only.
fn remove_tree(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(dir);
            fs::remove_dir_all(dir)
        }
    }
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(
        dir,
        fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
    );
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            make_writable(&e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dirs_in(d: &Path) -> Dirs {
        Dirs {
            home: d.join("home"),
            config_home: d.join("config"),
            data_home: d.join("data"),
            data_dirs: vec![],
            runtime_dir: Some(d.join("run")),
        }
    }

    fn sample(id: &str) -> Profile {
        Profile {
            id: ProfileId::parse(id).unwrap(),
            name: "Work \"quoted\" ünïcode".into(),
            recipe: "telegram-desktop".into(),
            desktop_id: Some("org.telegram.desktop".into()),
            app_name: "Telegram Desktop".into(),
            command: vec!["telegram-desktop".into()],
            color: "#33d17a".into(),
            home: HomeMode::Private,
            network: NetworkMode::Isolated,
            encrypted: false,
            auto_lock: true,
            keyring: None,
        }
    }

    #[test]
    fn create_load_list_delete_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let dirs = dirs_in(d.path());
        let p = sample("work");
        create(&dirs, &p).unwrap();
        assert_eq!(load(&dirs, &p.id).unwrap(), p);
        assert!(dirs.profile_data(&p.id).join("home").is_dir());
        let mode = fs::metadata(dirs.profile_data(&p.id))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        create(&dirs, &sample("alt")).unwrap();
        let ids: Vec<_> = list(&dirs)
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap().id.to_string())
            .collect();
        assert_eq!(ids, ["alt", "work"]);
        delete(&dirs, &p.id).unwrap();
        assert!(matches!(load(&dirs, &p.id), Err(ProfileError::NotFound(_))));
        assert!(!dirs.profile_data(&p.id).exists());
    }

    #[test]
    fn second_create_of_the_same_id_is_refused_and_keeps_the_first() {
        let d = tempfile::tempdir().unwrap();
        let dirs = dirs_in(d.path());
        let p = sample("work");
        create(&dirs, &p).unwrap();
        fs::write(dirs.profile_data(&p.id).join("home/keep"), b"x").unwrap();
        let mut other = sample("work");
        other.name = "Other".into();
        assert!(matches!(
            create(&dirs, &other),
            Err(ProfileError::Exists(_))
        ));
        assert_eq!(load(&dirs, &p.id).unwrap().name, p.name);
        assert!(dirs.profile_data(&p.id).join("home/keep").exists());
    }

    #[test]
    fn bad_fields_are_refused_before_anything_is_written() {
        let d = tempfile::tempdir().unwrap();
        let dirs = dirs_in(d.path());
        let mut p = sample("work");
        p.color = "blue".into();
        assert!(matches!(create(&dirs, &p), Err(ProfileError::BadColor(_))));
        let mut p = sample("work");
        p.name = "a\nb".into();
        assert!(matches!(create(&dirs, &p), Err(ProfileError::BadName)));
        assert!(!dirs.profile_data(&p.id).exists());
        assert!(!dirs.profile_file(&p.id).exists());
    }

    #[test]
    fn a_broken_file_is_reported_with_its_path_and_line() {
        let d = tempfile::tempdir().unwrap();
        let dirs = dirs_in(d.path());
        fs::create_dir_all(dirs.profiles_config()).unwrap();
        let id = ProfileId::parse("bad").unwrap();
        fs::write(
            dirs.profile_file(&id),
            "id = \"bad\"\nname = \"x\"\nbogus = 1\n",
        )
        .unwrap();
        let err = load(&dirs, &id).unwrap_err().to_string();
        assert!(err.contains("bad.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("bogus"), "{err}");
        // A listing still shows the others.
        create(&dirs, &sample("good")).unwrap();
        let all = list(&dirs).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[0].is_err() && all[1].is_ok());
    }

    #[test]
    fn id_inside_the_file_must_match_its_name() {
        let d = tempfile::tempdir().unwrap();
        let dirs = dirs_in(d.path());
        create(&dirs, &sample("work")).unwrap();
        let other = ProfileId::parse("other").unwrap();
        fs::copy(
            dirs.profile_file(&sample("work").id),
            dirs.profile_file(&other),
        )
        .unwrap();
        assert!(matches!(
            load(&dirs, &other),
            Err(ProfileError::IdMismatch { .. })
        ));
    }

    #[test]
    fn delete_copes_with_read_only_directories_made_by_the_app() {
        let d = tempfile::tempdir().unwrap();
        let dirs = dirs_in(d.path());
        let p = sample("work");
        create(&dirs, &p).unwrap();
        let ro = dirs.profile_data(&p.id).join("home/ro");
        fs::create_dir_all(ro.join("inner")).unwrap();
        fs::write(ro.join("inner/f"), b"x").unwrap();
        fs::set_permissions(ro.join("inner"), fs::Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o500)).unwrap();
        delete(&dirs, &p.id).unwrap();
        assert!(!dirs.profile_data(&p.id).exists());
    }
}
