//! Where Doppel keeps things, following the XDG base directory specification.

use std::env;
use std::path::PathBuf;

use crate::id::ProfileId;

/// Why the directories could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum DirsError {
    #[error("HOME is not set, or not an absolute path; Doppel needs to know the home directory")]
    NoHome,
    #[error(
        "XDG_RUNTIME_DIR is not set; log in through a desktop session (or a systemd user session), \
         or set it to a private directory owned by you with mode 0700"
    )]
    NoRuntimeDir,
}

/// The XDG directories of the person running Doppel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    pub home: PathBuf,
    pub config_home: PathBuf,
    pub data_home: PathBuf,
    pub data_dirs: Vec<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
}

fn abs_env(name: &str) -> Option<PathBuf> {
    let v = env::var_os(name)?;
    let p = PathBuf::from(v);
    p.is_absolute().then_some(p)
}

impl Dirs {
    /// Reads the directories from the environment, with the specification's defaults.
    pub fn from_env() -> Result<Self, DirsError> {
        let home = abs_env("HOME").ok_or(DirsError::NoHome)?;
        let config_home = abs_env("XDG_CONFIG_HOME").unwrap_or_else(|| home.join(".config"));
        let data_home = abs_env("XDG_DATA_HOME").unwrap_or_else(|| home.join(".local/share"));
        let data_dirs = env::var("XDG_DATA_DIRS")
            .ok()
            .map(|v| {
                v.split(':')
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute())
                    .collect::<Vec<_>>()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| vec!["/usr/local/share".into(), "/usr/share".into()]);
        let runtime_dir = abs_env("XDG_RUNTIME_DIR");
        Ok(Self {
            home,
            config_home,
            data_home,
            data_dirs,
            runtime_dir,
        })
    }

    /// `$XDG_CONFIG_HOME/doppel/profiles`: one TOML file per profile.
    pub fn profiles_config(&self) -> PathBuf {
        self.config_home.join("doppel/profiles")
    }

    /// `$XDG_CONFIG_HOME/doppel/profiles/<id>.toml`.
    pub fn profile_file(&self, id: &ProfileId) -> PathBuf {
        self.profiles_config().join(format!("{id}.toml"))
    }

    /// `$XDG_DATA_HOME/doppel/profiles/<id>`: the profile's data (its home, among others).
    pub fn profile_data(&self, id: &ProfileId) -> PathBuf {
        self.data_home.join("doppel/profiles").join(id.as_str())
    }

    /// `$XDG_CONFIG_HOME/doppel/recipes`: the person's own recipes, which win over installed ones.
    pub fn user_recipes(&self) -> PathBuf {
        self.config_home.join("doppel/recipes")
    }

    /// `$XDG_RUNTIME_DIR/doppel`: records of running instances.
    pub fn runtime(&self) -> Result<PathBuf, DirsError> {
        self.runtime_dir
            .as_ref()
            .map(|d| d.join("doppel"))
            .ok_or(DirsError::NoRuntimeDir)
    }

    /// `path` with a leading `~/` replaced by the home directory; `None` for anything not
    /// absolute after that.
    pub fn expand_home(&self, path: &str) -> Option<PathBuf> {
        let p = if let Some(rest) = path.strip_prefix("~/") {
            self.home.join(rest)
        } else if path == "~" {
            self.home.clone()
        } else {
            PathBuf::from(path)
        };
        p.is_absolute().then_some(p)
    }
}
