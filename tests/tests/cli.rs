//! The CLI's answers to bad input: one clear sentence, a non-zero status, and nothing
//! half-created. These need neither root nor a display: they run `doppel` as whoever runs the
//! tests, with private XDG directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Cli {
    dir: tempfile::TempDir,
}

fn doppel_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("doppel")
}

impl Cli {
    fn new() -> Cli {
        let dir = tempfile::tempdir().unwrap();
        for d in ["config", "data", "run", "home"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Cli { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn run(&self, args: &[&str]) -> Output {
        let bin = doppel_bin();
        assert!(
            bin.exists(),
            "build the workspace first: {} is missing",
            bin.display()
        );
        Command::new(bin)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env(
                "XDG_DATA_DIRS",
                format!("{}/share:/usr/share", self.dir.path().display()),
            )
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a command that must fail, and returns its one-line error.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} succeeded: {:?}", out);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        err
    }

    fn files_under(&self, p: &str) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    out.push(e.path());
                    walk(&e.path(), out);
                }
            }
        }
        let mut v = Vec::new();
        walk(&self.path(p), &mut v);
        v
    }
}

#[test]
fn bad_profile_ids_are_refused_before_anything_is_written() {
    let c = Cli::new();
    for bad in ["../x", "a/b", "Work", "-x", "", "a.b", &"x".repeat(64)] {
        let e = c.fails(&["create", "--app", "sh", "--", bad]);
        assert!(e.contains("invalid profile id"), "{bad:?}: {e}");
        assert_eq!(e.lines().count(), 1, "one sentence: {e}");
    }
    for cmd in ["run", "stop", "delete"] {
        let e = c.fails(&[cmd, "../etc"]);
        assert!(e.contains("invalid profile id"), "{cmd}: {e}");
    }
    assert!(c.files_under("config").is_empty() && c.files_under("data").is_empty());
}

#[test]
fn unknown_profile_and_unknown_app() {
    let c = Cli::new();
    let e = c.fails(&["run", "nope"]);
    assert!(
        e.contains("no profile \"nope\"") && e.contains("doppel list"),
        "{e}"
    );
    let e = c.fails(&["stop", "nope"]);
    assert!(e.contains("no profile \"nope\""), "{e}");
    let e = c.fails(&["create", "x", "--app", "no-such-app-anywhere"]);
    assert!(e.contains("doppel apps"), "{e}");
    let e = c.fails(&["create", "x", "--app", "generic"]);
    assert!(e.contains("generic recipe needs an app"), "{e}");
    assert!(c.files_under("config").is_empty() && c.files_under("data").is_empty());
}

#[test]
fn second_create_of_an_id_keeps_the_first() {
    let c = Cli::new();
    let out = c.run(&["create", "work", "--app", "sh", "--name", "First"]);
    assert!(out.status.success(), "{out:?}");
    let warn = String::from_utf8_lossy(&out.stderr);
    assert!(
        warn.contains("generic"),
        "a one-line warning about the generic recipe: {warn}"
    );
    let e = c.fails(&["create", "work", "--app", "sh", "--name", "Second"]);
    assert!(e.contains("exists already"), "{e}");
    let list = String::from_utf8_lossy(&c.run(&["list"]).stdout).into_owned();
    assert!(
        list.contains("work: stopped") && list.contains("(First)"),
        "{list}"
    );
}

#[test]
fn a_typo_in_a_recipe_names_file_line_and_key() {
    let c = Cli::new();
    let dir = c.path("config/doppel/recipes");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("mysh.toml"),
        "name = \"My shell\"\ncommands = [\"sh\"]\nservice = [\"display\"]\n",
    )
    .unwrap();
    let e = c.fails(&["create", "x", "--app", "mysh"]);
    assert!(
        e.contains("mysh.toml") && e.contains("line 3") && e.contains("service"),
        "{e}"
    );
    // `doppel apps` still works and reports the broken recipe.
    let out = c.run(&["apps"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mysh.toml"));
    // A profile whose recipe breaks later says which recipe.
    fs::write(
        dir.join("mysh.toml"),
        "name = \"My shell\"\ncommands = [\"sh\"]\n",
    )
    .unwrap();
    assert!(c.run(&["create", "x", "--app", "mysh"]).status.success());
    fs::write(
        dir.join("mysh.toml"),
        "name = \"My shell\"\ncommands = \"sh\"\n",
    )
    .unwrap();
    let e = c.fails(&["run", "x", "--", "true"]);
    assert!(
        e.contains("mysh") && e.contains("line 2") && e.contains("commands"),
        "{e}"
    );
}

#[test]
fn user_recipes_override_installed_ones() {
    let c = Cli::new();
    let dir = c.path("config/doppel/recipes");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("telegram-desktop.toml"),
        "name = \"My Telegram\"\ncommands = [\"sh\"]\n",
    )
    .unwrap();
    let out = c.run(&["create", "t", "--app", "telegram-desktop"]);
    assert!(out.status.success(), "{out:?}");
    let list = String::from_utf8_lossy(&c.run(&["list"]).stdout).into_owned();
    assert!(list.contains("My Telegram (t)"), "{list}");
}

#[test]
fn an_app_whose_binary_went_missing() {
    let c = Cli::new();
    let bin = c.path("home/fake-app");
    fs::write(&bin, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(c
        .run(&["create", "gone", "--app", bin.to_str().unwrap()])
        .status
        .success());
    fs::remove_file(&bin).unwrap();
    let e = c.fails(&["run", "gone"]);
    assert!(
        e.contains("not installed") && e.contains("doppel delete gone"),
        "{e}"
    );
    assert!(
        !c.path("run/doppel/gone").exists(),
        "nothing left in the runtime dir"
    );
}

#[test]
fn delete_asks_and_scripts_must_say_yes() {
    let c = Cli::new();
    assert!(c.run(&["create", "work", "--app", "sh"]).status.success());
    let e = c.fails(&["delete", "work"]);
    assert!(e.contains("--yes"), "{e}");
    assert!(c.path("data/doppel/profiles/work").exists());
    let out = c.run(&["delete", "work", "--yes"]);
    assert!(out.status.success());
    assert!(!c.path("data/doppel/profiles/work").exists());
    assert!(!c.path("config/doppel/profiles/work.toml").exists());
    let e = c.fails(&["delete", "work", "--yes"]);
    assert!(e.contains("no profile"), "{e}");
}

#[test]
fn overlay_home_and_unknown_flags_say_what_to_do() {
    let c = Cli::new();
    let e = c.fails(&["create", "o", "--app", "sh", "--home", "overlay"]);
    assert!(e.contains("helper") && e.contains("install"), "{e}");
    let e = c.fails(&["create", "o", "--app", "sh", "--network", "wifi"]);
    assert!(e.contains("isolated, host or none"), "{e}");
    let e = c.fails(&["create", "o", "--app", "sh", "--color", "blue"]);
    assert!(e.contains("#rrggbb"), "{e}");
    assert!(c
        .files_under("config")
        .iter()
        .all(|p| !p.ends_with("o.toml")));
    assert!(!c.path("data/doppel/profiles/o").exists());
}

#[test]
fn apps_lists_installed_entries_with_their_recipe() {
    let c = Cli::new();
    let apps = c.path("share/applications");
    fs::create_dir_all(&apps).unwrap();
    fs::write(
        apps.join("org.telegram.desktop.desktop"),
        "[Desktop Entry]\nType=Application\nName=Telegram Test\nExec=/bin/sh -- %u\n",
    )
    .unwrap();
    fs::write(
        apps.join("plain.desktop"),
        "[Desktop Entry]\nType=Application\nName=Plain Thing\nExec=/bin/true\n",
    )
    .unwrap();
    let out = c.run(&["apps"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let tg = text.lines().find(|l| l.contains("Telegram Test")).unwrap();
    assert!(tg.contains("telegram-desktop"), "{text}");
    let plain = text.lines().find(|l| l.contains("Plain Thing")).unwrap();
    assert!(plain.contains("generic"), "{text}");
    // By desktop id, with or without the suffix.
    for spec in ["org.telegram.desktop", "org.telegram.desktop.desktop"] {
        let id = if spec.ends_with(".desktop.desktop") {
            "b"
        } else {
            "a"
        };
        let out = c.run(&["create", id, "--app", spec]);
        assert!(out.status.success(), "{out:?}");
    }
    let list = String::from_utf8_lossy(&c.run(&["list"]).stdout).into_owned();
    assert!(
        list.contains("Telegram Test (a)") && list.contains("Telegram Test (b)"),
        "{list}"
    );
    let cfg = fs::read_to_string(c.path("config/doppel/profiles/a.toml")).unwrap();
    assert!(cfg.contains("recipe = \"telegram-desktop\""), "{cfg}");
}

#[test]
fn encryption_without_the_helper_says_what_to_install_and_creates_nothing() {
    let c = Cli::new();
    // A bus address where nothing listens: no helper to be had.
    let out = Command::new(doppel_bin())
        .args([
            "create",
            "e",
            "--app",
            "sh",
            "--encrypt",
            "--size",
            "128M",
            "--passphrase-fd",
            "0",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", c.path("home"))
        .env("XDG_CONFIG_HOME", c.path("config"))
        .env("XDG_DATA_HOME", c.path("data"))
        .env("XDG_RUNTIME_DIR", c.path("run"))
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            format!("unix:path={}/no-bus", c.dir.path().display()),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("helper") && e.contains("install"), "{e}");
    assert!(!c.path("config/doppel/profiles/e.toml").exists());
    assert!(!c.path("data/doppel/profiles/e").exists());
    // Plain profiles work as before.
    assert!(c.run(&["create", "p", "--app", "sh"]).status.success());
    let e = c.fails(&["lock", "p"]);
    assert!(e.contains("not encrypted"), "{e}");
    let e = c.fails(&["diff", "p"]);
    assert!(e.contains("copy-on-write"), "{e}");
}

/// The colour of pixel (x, y) of a PNG as "r,g,b", through imagemagick (None without it).
fn pixel(png: &Path, x: u32, y: u32) -> Option<String> {
    let out = Command::new("convert")
        .arg(png)
        .args(["-format", &format!("%[fx:int(255*p{{{x},{y}}}.r)],%[fx:int(255*p{{{x},{y}}}.g)],%[fx:int(255*p{{{x},{y}}}.b)]"), "info:"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn a_profile_gets_a_badged_launcher_that_follows_it_and_goes_with_it() {
    let cli = Cli::new();
    // An app of the test's own: a desktop entry and a scalable icon that is all green.
    let share = cli.path("share");
    fs::create_dir_all(share.join("applications")).unwrap();
    fs::write(
        share.join("applications/doppeltest-chat.desktop"),
        "[Desktop Entry]\nType=Application\nName=Test Chat\nExec=sh\nIcon=doppeltest-chat\n\
         Categories=Network;Chat;\n",
    )
    .unwrap();
    let icons = share.join("icons/hicolor/scalable/apps");
    fs::create_dir_all(&icons).unwrap();
    fs::write(
        icons.join("doppeltest-chat.svg"),
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="48" height="48"><rect width="48" height="48" fill="#00ff00"/></svg>"##,
    )
    .unwrap();

    let out = cli.run(&[
        "create",
        "work",
        "--app",
        "doppeltest-chat",
        "--name",
        "Work",
        "--color",
        "#ff0000",
    ]);
    assert!(out.status.success(), "{out:?}");
    let desktop = cli.path("data/applications/org.doppel.Doppel.work.desktop");
    let icon = cli.path("data/icons/hicolor/256x256/apps/org.doppel.Doppel.work.png");
    let text = fs::read_to_string(&desktop).unwrap();
    for line in [
        "Name=Test Chat (Work)",
        "Icon=org.doppel.Doppel.work",
        "Categories=Network;Chat;",
        "X-Doppel-Profile=work",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    let exec = text.lines().find(|l| l.starts_with("Exec=")).unwrap();
    assert!(
        exec.starts_with(&format!("Exec={} ", doppel_bin().display()))
            && exec.ends_with(" run work %U"),
        "{exec}"
    );
    if which("desktop-file-validate") {
        let v = Command::new("desktop-file-validate")
            .arg(&desktop)
            .output()
            .unwrap();
        assert!(v.status.success() && v.stdout.is_empty(), "{v:?}");
    } else {
        eprintln!("desktop-file-validate is not installed (desktop-file-utils): not validating");
    }

    // The icon: the app's (green) with the profile's colour (red) in the corner.
    assert!(icon.is_file());
    if let Some(app_part) = pixel(&icon, 40, 40) {
        assert_eq!(app_part, "0,255,0", "the app's icon");
        assert_eq!(pixel(&icon, 200, 200).unwrap(), "255,0,0", "the badge");
        // Recolouring redraws it; renaming renames the launcher.
        let out = cli.run(&["set", "work", "--color", "#0000ff", "--name", "Office"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(pixel(&icon, 200, 200).unwrap(), "0,0,255", "the new badge");
        let text = fs::read_to_string(&desktop).unwrap();
        assert!(text.contains("\nName=Test Chat (Office)\n"), "{text}");
    } else {
        eprintln!("imagemagick is not installed: not checking the icon's pixels");
    }
    assert!(cli.fails(&["set", "work"]).contains("--name"));
    assert!(cli
        .fails(&["set", "work", "--color", "red"])
        .contains("#rrggbb"));

    let out = cli.run(&["delete", "work", "--yes"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !desktop.exists() && !icon.exists(),
        "the launcher outlived its profile"
    );
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}
