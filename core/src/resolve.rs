//! Turning what a person types after `--app` into an app to clone: a recipe id, a desktop-entry
//! id (with or without `.desktop`), or a command name or path.

use std::path::Path;

use crate::apps::{self, DesktopEntry};
use crate::dirs::Dirs;
use crate::recipe::{RecipeSet, GENERIC};

/// The app a new profile will run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedApp {
    pub recipe: String,
    pub app_name: String,
    pub desktop_id: Option<String>,
    pub command: Vec<String>,
    /// No recipe claims this app: the generic one is used.
    pub generic: bool,
}

/// Why `--app` could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error(
        "no app {0:?}: it is not a recipe, an installed desktop entry or a command in PATH; \
         `doppel apps` lists what is installed"
    )]
    Unknown(String),
    #[error(
        "{name} has a recipe but is not installed (looked for {looked_for}); install it first"
    )]
    NotInstalled { name: String, looked_for: String },
    #[error(
        "the generic recipe needs an app: pass a desktop-entry id or a command, e.g. --app firefox"
    )]
    GenericNeedsApp,
    #[error("the desktop entry {id} names a program that is not installed: {program:?}")]
    EntryNotInstalled { id: String, program: String },
}

fn from_entry(set: &RecipeSet, e: &DesktopEntry) -> ResolvedApp {
    let recipe = set.find_for(Some(&e.id), e.exec.first().map(String::as_str));
    ResolvedApp {
        recipe: recipe.map_or(GENERIC.to_owned(), |r| r.id.clone()),
        app_name: e.name.clone(),
        desktop_id: Some(e.id.clone()),
        command: e.exec.clone(),
        generic: recipe.is_none(),
    }
}

/// Resolves `spec` against the recipes and the installed apps.
pub fn resolve(dirs: &Dirs, set: &RecipeSet, spec: &str) -> Result<ResolvedApp, ResolveError> {
    let entries = || apps::discover(dirs).entries;
    if spec == GENERIC {
        return Err(ResolveError::GenericNeedsApp);
    }
    if let Some(r) = set.recipes.get(spec) {
        // Prefer the app's own desktop entry (its name, icon and exact command line): a
        // native one, in the recipe's order, else a Flatpak's.
        let all = entries();
        let entry = r
            .desktop_ids
            .iter()
            .chain(&r.flatpak_ids)
            .find_map(|id| all.iter().find(|e| &e.id == id && apps::is_installed(e)));
        if let Some(e) = entry {
            let mut app = from_entry(set, e);
            app.recipe = r.id.clone();
            app.generic = false;
            return Ok(app);
        }
        if let Some(cmd) = r.commands.iter().find(|c| apps::which(c).is_some()) {
            return Ok(ResolvedApp {
                recipe: r.id.clone(),
                app_name: r.name.clone(),
                desktop_id: None,
                command: vec![cmd.clone()],
                generic: false,
            });
        }
        let mut looked: Vec<String> = r
            .desktop_ids
            .iter()
            .map(|d| format!("{d}.desktop"))
            .collect();
        looked.extend(r.commands.iter().cloned());
        looked.extend(r.flatpak_ids.iter().map(|f| format!("the Flatpak {f}")));
        return Err(ResolveError::NotInstalled {
            name: r.name.clone(),
            looked_for: looked.join(", "),
        });
    }
    if let Some(e) = apps::find(dirs, spec) {
        if !apps::is_installed(&e) {
            return Err(ResolveError::EntryNotInstalled {
                id: e.id.clone(),
                program: e.exec.first().cloned().unwrap_or_default(),
            });
        }
        return Ok(from_entry(set, &e));
    }
    if apps::which(spec).is_some() {
        let name = Path::new(spec)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(spec)
            .to_owned();
        // A command that some installed desktop entry starts gets that entry's name and icon.
        let entry = entries().into_iter().find(|e| {
            e.exec
                .first()
                .and_then(|x| Path::new(x).file_name())
                .and_then(|n| n.to_str())
                == Some(name.as_str())
        });
        if let Some(e) = entry {
            let mut app = from_entry(set, &e);
            app.command = vec![spec.to_owned()];
            return Ok(app);
        }
        let recipe = set.find_for(None, Some(spec));
        return Ok(ResolvedApp {
            recipe: recipe.map_or(GENERIC.to_owned(), |r| r.id.clone()),
            app_name: recipe.map_or(name, |r| r.name.clone()),
            desktop_id: None,
            command: vec![spec.to_owned()],
            generic: recipe.is_none(),
        });
    }
    Err(ResolveError::Unknown(spec.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    struct World {
        _t: tempfile::TempDir,
        dirs: Dirs,
        set: RecipeSet,
        bin: std::path::PathBuf,
    }

    fn world() -> World {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        for b in ["chatapp", "plainapp"] {
            let p = bin.join(b);
            fs::write(&p, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let apps = t.path().join("share/applications");
        fs::create_dir_all(&apps).unwrap();
        fs::write(
            apps.join("org.example.Chat.desktop"),
            format!(
                "[Desktop Entry]\nType=Application\nName=Chat\nExec={}/chatapp --flag %U\n",
                bin.display()
            ),
        )
        .unwrap();
        fs::write(
            apps.join("org.example.Gone.desktop"),
            "[Desktop Entry]\nType=Application\nName=Gone\nExec=/nonexistent/gone\n",
        )
        .unwrap();
        let recipes = t.path().join("recipes");
        fs::create_dir_all(&recipes).unwrap();
        fs::write(
            recipes.join("chat.toml"),
            "name = \"Chat App\"\ndesktop_ids = [\"org.example.Chat\"]\ncommands = [\"chatapp\"]\n",
        )
        .unwrap();
        fs::write(
            recipes.join("missing.toml"),
            "name = \"Missing\"\ncommands = [\"no-such-binary-here\"]\n",
        )
        .unwrap();
        let set = RecipeSet::load_from(&[recipes]);
        let dirs = Dirs {
            home: t.path().join("home"),
            config_home: t.path().join("home/.config"),
            data_home: t.path().join("nodata"),
            data_dirs: vec![t.path().join("share")],
            runtime_dir: None,
        };
        World {
            _t: t,
            dirs,
            set,
            bin,
        }
    }

    #[test]
    fn every_way_of_naming_an_app() {
        let w = world();
        let by_recipe = resolve(&w.dirs, &w.set, "chat").unwrap();
        assert_eq!(by_recipe.recipe, "chat");
        assert_eq!(by_recipe.desktop_id.as_deref(), Some("org.example.Chat"));
        assert_eq!(
            by_recipe.command,
            [format!("{}/chatapp", w.bin.display()), "--flag".into()]
        );
        let by_entry = resolve(&w.dirs, &w.set, "org.example.Chat.desktop").unwrap();
        assert_eq!(by_entry, by_recipe);
        assert_eq!(
            resolve(&w.dirs, &w.set, "org.example.Chat").unwrap(),
            by_recipe
        );
        let path = w.bin.join("plainapp").display().to_string();
        let by_cmd = resolve(&w.dirs, &w.set, &path).unwrap();
        assert!(by_cmd.generic);
        assert_eq!(by_cmd.recipe, "generic");
        assert_eq!(by_cmd.app_name, "plainapp");
    }

    #[test]
    fn failures_say_what_to_do() {
        let w = world();
        assert!(matches!(
            resolve(&w.dirs, &w.set, "missing"),
            Err(ResolveError::NotInstalled { .. })
        ));
        assert!(matches!(
            resolve(&w.dirs, &w.set, "org.example.Gone"),
            Err(ResolveError::EntryNotInstalled { .. })
        ));
        assert_eq!(
            resolve(&w.dirs, &w.set, "generic"),
            Err(ResolveError::GenericNeedsApp)
        );
        let e = resolve(&w.dirs, &w.set, "nothing-called-this").unwrap_err();
        assert!(e.to_string().contains("doppel apps"));
    }
    #[test]
    fn a_recipe_finds_its_flatpak_when_no_native_entry_is_installed() {
        let w = world();
        let apps = w.dirs.data_dirs[0].join("applications");
        fs::write(
            apps.join("org.example.Flat.desktop"),
            "[Desktop Entry]\nType=Application\nName=Flat\n\
             Exec=/bin/sh run --branch=stable org.example.Flat @@u %U @@\nX-Flatpak=org.example.Flat\n",
        )
        .unwrap();
        let recipes = w.dirs.home.join("r");
        fs::create_dir_all(&recipes).unwrap();
        fs::write(
            recipes.join("flat.toml"),
            "name = \"Flat App\"\ndesktop_ids = [\"flat-native\"]\nflatpak_ids = [\"org.example.Flat\"]\n",
        )
        .unwrap();
        let set = RecipeSet::load_from(&[recipes]);
        let app = resolve(&w.dirs, &set, "flat").unwrap();
        assert_eq!(app.recipe, "flat");
        assert_eq!(app.desktop_id.as_deref(), Some("org.example.Flat"));
        // Named by its Flatpak id, it gets the recipe too.
        assert_eq!(
            resolve(&w.dirs, &set, "org.example.Flat").unwrap().recipe,
            "flat"
        );
        fs::remove_file(apps.join("org.example.Flat.desktop")).unwrap();
        let e = resolve(&w.dirs, &set, "flat").unwrap_err().to_string();
        assert!(e.contains("the Flatpak org.example.Flat"), "{e}");
    }
}
