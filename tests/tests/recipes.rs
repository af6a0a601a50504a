//! Every recipe in `profiles/`: it loads with the real loader, names plausible apps, keeps its
//! paths in the home, uses only known placeholders and valid bus names, claims no app another
//! recipe claims, and turns into a sandbox plan for each way the app can be installed. The
//! apps of issue #5 must all have one. A broken recipe is refused with a message naming the
//! file, the key and what to fix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use doppel_core::dirs::Dirs;
use doppel_core::host::HostFacts;
use doppel_core::id::ProfileId;
use doppel_core::plan::{Install, LaunchOptions, SandboxPlan, Storage};
use doppel_core::profile::{HomeMode, Profile};
use doppel_core::recipe::{
    self, check_bus_name, Keyring, Placeholders, Recipe, RecipeError, RecipeSet, GENERIC,
};

/// The apps issue #5 asks recipes for, by recipe id.
const REQUIRED: &[&str] = &[
    "telegram-desktop",
    "signal-desktop",
    "element-desktop",
    "discord",
    "slack",
    "zapzap",
    "wasistlos",
    "firefox",
    "thunderbird",
    "chromium",
    "google-chrome",
    "teams-for-linux",
    "zoom",
    "dino",
    "hexchat",
    "pidgin",
    "nheko",
    GENERIC,
];

fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles")
}

fn recipe_files() -> Vec<(String, PathBuf, String)> {
    let mut out = Vec::new();
    for e in fs::read_dir(profiles_dir()).expect("profiles/ is readable") {
        let path = e.expect("profiles/ entry").path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".toml"))
        else {
            continue;
        };
        let text = fs::read_to_string(&path).expect("recipe is readable");
        out.push((id.to_owned(), path, text));
    }
    out.sort();
    assert!(!out.is_empty(), "no recipes in {:?}", profiles_dir());
    out
}

fn load_all() -> BTreeMap<String, Recipe> {
    let set = RecipeSet::load_from(&[profiles_dir()]);
    let errors: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
    assert!(
        errors.is_empty(),
        "recipes that do not load:\n{}",
        errors.join("\n")
    );
    set.recipes
}

#[test]
fn every_recipe_file_loads_and_every_required_app_has_one() {
    let files = recipe_files();
    for (id, path, text) in &files {
        if let Err(e) = Recipe::parse(id, path, text) {
            panic!("{e}");
        }
    }
    let recipes = load_all();
    assert_eq!(recipes.len(), files.len(), "every file is a recipe");
    for id in REQUIRED {
        assert!(
            recipes.contains_key(*id),
            "no recipe {id}.toml in profiles/"
        );
    }
}

#[test]
fn every_recipe_says_where_its_facts_come_from() {
    for (id, path, text) in recipe_files() {
        let header: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
        assert!(
            header.len() >= 3,
            "{path:?}: starts without a header comment"
        );
        if id == GENERIC {
            continue;
        }
        let header = header.join("\n");
        assert!(
            header.contains("Facts:"),
            "{path:?}: the header says not where its facts come from (\"Facts: APPS.md §…\")"
        );
        assert!(
            header.contains("Verified on") || header.contains("Not verified"),
            "{path:?}: the header says not what was verified on a real machine"
        );
    }
}

#[test]
fn recipes_name_plausible_apps_that_no_other_recipe_claims() {
    let recipes = load_all();
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    for r in recipes.values() {
        assert!(!r.name.trim().is_empty(), "{}: no name", r.id);
        if r.id == GENERIC {
            assert!(
                r.desktop_ids.is_empty() && r.commands.is_empty() && r.flatpak_ids.is_empty(),
                "generic claims no app"
            );
            continue;
        }
        assert!(!r.commands.is_empty(), "{}: names no command", r.id);
        assert!(
            !r.desktop_ids.is_empty() || !r.flatpak_ids.is_empty(),
            "{}: names no desktop entry",
            r.id
        );
        for c in &r.commands {
            assert!(
                !c.contains(char::is_whitespace) && (c.starts_with('/') || !c.contains('/')),
                "{}: command {c:?}",
                r.id
            );
        }
        for f in &r.flatpak_ids {
            assert!(
                check_bus_name(f).is_ok() && f.split('.').count() >= 3,
                "{}: Flatpak id {f:?}",
                r.id
            );
        }
        // One recipe per desktop entry (a native one and a Flatpak may share an id), per
        // command and per AppImage name.
        let mut mine: Vec<String> = r
            .desktop_ids
            .iter()
            .chain(&r.flatpak_ids)
            .map(|d| format!("desktop entry {d}"))
            .chain(r.commands.iter().map(|c| format!("command {c}")))
            .chain(r.appimage_names.iter().map(|a| format!("AppImage {a}")))
            .collect();
        mine.sort();
        mine.dedup();
        for what in mine {
            if let Some(other) = claimed.insert(what.clone(), r.id.clone()) {
                panic!("{what} is claimed by both {other} and {}", r.id);
            }
        }
        // The loader's matching agrees.
        for d in r.desktop_ids.iter().chain(&r.flatpak_ids) {
            let owners: Vec<&str> = recipes
                .values()
                .filter(|x| x.id != GENERIC && x.matches(Some(d), None))
                .map(|x| x.id.as_str())
                .collect();
            assert_eq!(owners, [r.id.as_str()], "desktop entry {d}");
        }
    }
}

#[test]
fn bus_names_are_valid_and_no_recipe_reaches_the_host_wholesale() {
    for r in load_all().values() {
        let b = &r.bus;
        for n in b.own.iter().chain(&b.talk).chain(&b.see) {
            assert!(check_bus_name(n).is_ok(), "{}: bus name {n:?}", r.id);
            let base = n.strip_suffix(".*").unwrap_or(n);
            assert!(
                base.split('.').count() >= 3,
                "{}: {n:?} covers a whole organisation's names",
                r.id
            );
        }
        for rule in b.call.iter().chain(&b.broadcast) {
            let (name, _) = rule.split_once('=').expect("NAME=RULE");
            assert!(check_bus_name(name).is_ok(), "{}: {rule:?}", r.id);
        }
        // Secrets only through the keyring policy.
        for n in b.own.iter().chain(&b.talk).chain(&b.see) {
            assert!(
                !n.starts_with("org.freedesktop.secrets") && !n.starts_with("org.kde.kwallet"),
                "{}: {n:?} is given by the keyring policy, not by [bus]",
                r.id
            );
        }
    }
}

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
        x11: None,
        xauthority: None,
        wayland: Some(("wayland-0".into(), "/run/user/1000/wayland-0".into())),
        pipewire: None,
        pulse: None,
        session_bus: Some("unix:path=/run/user/1000/bus".into()),
        downloads: None,
        dri: true,
        snd: false,
        home_shares: vec![],
        resolv_conf: None,
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: None,
        run_doppel: false,
        opener: None,
        xdg_open: false,
    }
}

/// The commands a profile of `r` can have: the native one, each Flatpak's, each AppImage's.
fn commands_of(r: &Recipe) -> Vec<Vec<String>> {
    let mut v = vec![vec![format!("/usr/bin/{}", r.commands[0])]];
    for f in &r.flatpak_ids {
        v.push(
            ["/usr/bin/flatpak", "run", "--branch=stable", f, "@@u", "@@"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
    }
    for a in &r.appimage_names {
        v.push(vec![format!("/home/ana/Apps/{}", a.replace('*', "-1.0"))]);
    }
    v
}

#[test]
fn every_recipe_plans_for_every_install_with_its_paths_in_the_profile() {
    let state = PathBuf::from("/home/ana/.local/share/doppel/profiles/work/state");
    let cow_home = PathBuf::from("/run/doppel/1000/work/home");
    for r in load_all().values().filter(|r| r.id != GENERIC) {
        for command in commands_of(r) {
            let install = Install::of(&command, r);
            let kind = match &install {
                Install::Native => "native",
                Install::Flatpak { .. } => "Flatpak",
                Install::AppImage { .. } => "AppImage",
            };
            let expected_kind = if command[0].ends_with("flatpak") {
                "Flatpak"
            } else if command[0].ends_with(".AppImage") {
                "AppImage"
            } else {
                "native"
            };
            assert_eq!(kind, expected_kind, "{}: {command:?}", r.id);
            for keyring in [Keyring::None, r.initial_keyring(Some("GNOME"), None)] {
                let profile = Profile {
                    id: ProfileId::parse("work").expect("id"),
                    name: "Work".into(),
                    recipe: r.id.clone(),
                    desktop_id: None,
                    app_name: r.name.clone(),
                    command: command.clone(),
                    color: "#3584e4".into(),
                    home: HomeMode::Overlay,
                    network: r.network,
                    encrypted: false,
                    auto_lock: true,
                    keyring: Some(keyring),
                };
                let opts = LaunchOptions {
                    storage: Some(Storage {
                        home: cow_home.clone(),
                        state: Some(state.clone()),
                    }),
                    ..Default::default()
                };
                let plan = SandboxPlan::build(&dirs(), &profile, r, &host(), &opts)
                    .unwrap_or_else(|e| panic!("{}: {command:?}: {e}", r.id));
                let what = format!("{} ({kind}, keyring {keyring})", r.id);
                for a in plan.argv.iter().chain(plan.env.values()) {
                    assert!(
                        !a.contains("{class}")
                            && !a.contains("{id}")
                            && !a.contains("{password_store}"),
                        "{what}: placeholder left in {a:?}"
                    );
                }
                assert_eq!(plan.argv[0], command[0], "{what}: the program runs first");
                // Every state directory is the profile's, bound below the home.
                let state_dirs: Vec<&PathBuf> = plan
                    .prepare
                    .dirs
                    .iter()
                    .filter(|d| d.starts_with(&state))
                    .collect();
                let expected = match &install {
                    Install::Flatpak { .. } => 1,
                    _ => r.state_paths.len(),
                };
                assert_eq!(state_dirs.len(), expected, "{what}: {state_dirs:?}");
                for d in &state_dirs {
                    let rel = d.strip_prefix(&state).expect("below the state dir");
                    assert!(
                        rel.components().count() >= 1
                            && !rel.components().any(|c| c.as_os_str() == ".."),
                        "{what}: {d:?}"
                    );
                }
                // Stale locks are deleted only in the profile's storage, never the real home.
                assert_eq!(plan.prepare.remove.len(), r.stale_locks.len(), "{what}");
                for l in &plan.prepare.remove {
                    assert!(
                        l.starts_with(&state) || l.starts_with(&cow_home),
                        "{what}: lock {l:?} outside the profile"
                    );
                }
                // The keyring service is there exactly when the policy and recipe say.
                let rules = &plan.bus_proxy.as_ref().expect("a bus").rules;
                let secret_rule = rules
                    .iter()
                    .any(|x| x.contains("org.freedesktop.secrets") || x.contains("kwallet"));
                assert_eq!(
                    secret_rule,
                    keyring != Keyring::None && r.services.contains(&recipe::Service::Secrets),
                    "{what}: {rules:?}"
                );
                if let Install::Flatpak { app_id, at } = &install {
                    assert_eq!(&plan.argv[*at], app_id, "{what}");
                }
            }
        }
    }
}

#[test]
fn class_placeholders_are_where_the_app_accepts_them() {
    let recipes = load_all();
    let v = Placeholders {
        class: "org.doppel.Doppel.work",
        id: "work",
        password_store: "basic",
    };
    let expanded = |id: &str| -> Vec<String> {
        let r = &recipes[id];
        r.args
            .iter()
            .map(|a| recipe::expand(a, &v))
            .chain(
                r.env
                    .iter()
                    .map(|(k, x)| format!("{k}={}", recipe::expand(x, &v))),
            )
            .collect()
    };
    // Verified on Debian 12 (see the recipes' headers).
    assert!(expanded("chromium").contains(&"--class=org.doppel.Doppel.work".to_owned()));
    assert!(expanded("hexchat").contains(&"--class=org.doppel.Doppel.work".to_owned()));
    assert!(expanded("firefox").contains(&"MOZ_APP_REMOTINGNAME=org.doppel.Doppel.work".to_owned()));
    assert!(
        expanded("thunderbird").contains(&"MOZ_APP_REMOTINGNAME=org.doppel.Doppel.work".to_owned())
    );
    assert!(expanded("nheko")
        .windows(2)
        .any(|w| w == ["-name", "org.doppel.Doppel.work"]));
    // Documented by the app.
    assert!(expanded("teams-for-linux").contains(&"--class=org.doppel.Doppel.work".to_owned()));
    // Refused or ignored by these (verified or known), so none is passed.
    for id in ["pidgin", "telegram-desktop", "dino", "wasistlos"] {
        assert!(!recipes[id].sets_window_class(), "{id}");
    }
}

#[test]
fn a_broken_recipe_is_refused_with_a_clear_message() {
    let t = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        fs::write(t.path().join(name), text).expect("write");
    };
    write(
        "typo.toml",
        "name = \"Typo\"\ncommands = [\"typo\"]\nstate_path = [\"~/.typo\"]\n",
    );
    write(
        "placeholder.toml",
        "name = \"P\"\ncommands = [\"p\"]\nargs = [\"--class={klass}\"]\n",
    );
    write(
        "outside.toml",
        "name = \"O\"\ncommands = [\"o\"]\nstate_paths = [\"/etc/o\"]\n",
    );
    write(
        "badname.toml",
        "name = \"B\"\ncommands = [\"b\"]\n[bus]\nown = [\"org..B\"]\n",
    );
    write(
        "keyring.toml",
        "name = \"K\"\ncommands = [\"k\"]\nkeyring = \"host\"\n",
    );
    write("good.toml", "name = \"Good\"\ncommands = [\"good\"]\n");
    let set = RecipeSet::load_from(&[t.path().to_owned()]);
    assert!(set.recipes.contains_key("good"));
    let messages: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 5, "{messages:#?}");
    let find = |file: &str| -> &String {
        messages
            .iter()
            .find(|m| m.contains(file))
            .unwrap_or_else(|| panic!("no error for {file} in {messages:#?}"))
    };
    let m = find("typo.toml");
    assert!(m.contains("line 3") && m.contains("state_path"), "{m}");
    let m = find("placeholder.toml");
    assert!(
        m.contains("args") && m.contains("{klass}") && m.contains("{class}"),
        "{m}"
    );
    let m = find("outside.toml");
    assert!(
        m.contains("state_paths") && m.contains("must start with"),
        "{m}"
    );
    let m = find("badname.toml");
    assert!(m.contains("bus.own") && m.contains("org..B"), "{m}");
    let m = find("keyring.toml");
    assert!(m.contains("keyring") && m.contains("secrets"), "{m}");
    // Asking for a broken recipe says which file is broken, rather than "no such recipe".
    match set.get("typo") {
        Err(e @ RecipeError::Parse { .. }) => {
            assert!(e.to_string().contains("typo.toml"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // The same texts are refused one by one through the parser.
    let e = Recipe::parse(
        "typo",
        &t.path().join("typo.toml"),
        "name = \"Typo\"\nstate_path = []\n",
    )
    .expect_err("unknown field");
    assert!(e.to_string().contains("state_path"), "{e}");
}
