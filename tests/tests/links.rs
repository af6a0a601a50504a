//! Login links, end to end: creating profiles registers Doppel as the handler of their app's
//! link scheme (remembering the app that had it), `doppel open` hands a link to the clone that
//! is signing in (its login marker missing) by starting the app inside that clone, sends it to
//! the first copy when no clone is waiting or when several are and nobody can be asked, and
//! deleting the profiles gives the scheme back.
//!
//! The app is a small script, so that what each copy received can be read from its home: the
//! real home for the first copy, the profile's home for a clone. Needs root (test user,
//! namespaces as that user).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use common::{Env, User};

fn can_run() -> bool {
    common::require(
        common::is_root(),
        "the link tests need root (they run clones as a test user)",
    )
}

/// The test app: `chat URL` appends the URL to `$HOME/received-links` and exits; `chat` alone
/// stays up, as the running copy. It lives outside the home (which a clone does not see) and
/// outside /tmp (which is the clone's own).
fn install_app(env: &Env) -> PathBuf {
    let bin = PathBuf::from("/opt/doppel-tests");
    fs::create_dir_all(&bin).unwrap();
    let chat = bin.join("chat");
    fs::write(
        &chat,
        "#!/bin/sh\nif [ -n \"$1\" ]; then echo \"$1\" >> \"$HOME/received-links\"; exit 0; fi\n\
         exec sleep 600\n",
    )
    .unwrap();
    fs::set_permissions(&chat, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let apps = env.root.join("data/applications");
    fs::create_dir_all(&apps).unwrap();
    fs::write(
        apps.join("doppeltest-chat.desktop"),
        format!(
            "[Desktop Entry]\nType=Application\nName=Test Chat\nExec={} %u\n\
             MimeType=x-scheme-handler/doppeltest;\n",
            chat.display()
        ),
    )
    .unwrap();
    let recipes = env.root.join("config/doppel/recipes");
    fs::create_dir_all(&recipes).unwrap();
    fs::write(
        recipes.join("testchat.toml"),
        "name = \"Test Chat\"\ndesktop_ids = [\"doppeltest-chat\"]\nnetwork = \"none\"\n\
         schemes = [\"doppeltest\"]\nlogin_marker = \"~/.signed-in\"\n",
    )
    .unwrap();
    common::chown_tree(&env.root, env.user.uid, env.user.gid);
    chat
}

fn received(home: &Path) -> String {
    fs::read_to_string(home.join("received-links")).unwrap_or_default()
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    assert!(
        common::wait_until(Duration::from_secs(20), f),
        "timed out waiting for {what}"
    );
}

fn mimeapps(env: &Env) -> String {
    fs::read_to_string(env.root.join("config/mimeapps.list")).unwrap_or_default()
}

fn set_signed_in(env: &Env, id: &str, signed_in: bool) {
    let home = env.profile_data(id).join("home");
    let marker = home.join(".signed-in");
    if signed_in {
        fs::write(&marker, "").unwrap();
        common::chown(&marker, env.user.uid, env.user.gid);
    } else {
        let _ = fs::remove_file(&marker);
    }
}

fn open(env: &Env, url: &str) -> String {
    common::ok(&env.doppel(&["open", url]))
}

#[test]
fn links_go_to_the_clone_signing_in_else_to_the_first_copy() {
    if !can_run() {
        return;
    }
    let env = Env::new(User::get("doppeltest"), "links");
    let chat = install_app(&env);
    let real_home = env.user.home.clone();
    let _ = fs::remove_file(real_home.join("received-links"));

    for id in ["a", "b"] {
        common::ok(&env.doppel(&["create", id, "--app", "doppeltest-chat"]));
    }
    // Registered, with the app that had the scheme remembered.
    let m = mimeapps(&env);
    assert!(
        m.contains("x-scheme-handler/doppeltest=org.doppel.Doppel.OpenLink.desktop"),
        "{m}"
    );
    let remembered = fs::read_to_string(env.root.join("config/doppel/links.toml")).unwrap();
    assert!(
        remembered.contains("doppeltest = \"doppeltest-chat\""),
        "{remembered}"
    );
    let handler = env
        .root
        .join("data/applications/org.doppel.Doppel.OpenLink.desktop");
    let text = fs::read_to_string(&handler).unwrap();
    assert!(
        text.contains("MimeType=x-scheme-handler/doppeltest;"),
        "{text}"
    );
    assert!(text.contains(" open %u"), "{text}");
    if common::have("desktop-file-validate") {
        let v = std::process::Command::new("desktop-file-validate")
            .arg(&handler)
            .output()
            .unwrap();
        assert!(v.status.success() && v.stdout.is_empty(), "{v:?}");
    }

    // The first copy, then both clones; b has signed in, a has not.
    let mut host: Child = env.spawn_as_user(&[chat.to_str().unwrap()]);
    let mut clones: Vec<Child> = ["a", "b"]
        .iter()
        .map(|id| env.spawn_doppel(&["run", id]))
        .collect();
    wait_for("both clones to run", || {
        let l = common::ok(&env.doppel(&["list"]));
        l.contains("a: running") && l.contains("b: running")
    });
    set_signed_in(&env, "b", true);
    let (home_a, home_b) = (
        env.profile_data("a").join("home"),
        env.profile_data("b").join("home"),
    );

    let out = open(&env, "doppeltest://one");
    assert!(out.contains("Test Chat (a)"), "{out}");
    wait_for("clone a to get the link", || {
        received(&home_a).contains("doppeltest://one")
    });
    assert!(
        !received(&real_home).contains("one"),
        "the first copy got a's link"
    );
    assert!(
        !received(&home_b).contains("one"),
        "the signed-in clone got a's link"
    );

    // Nobody signing in: the first copy gets it, through the app Doppel replaced.
    set_signed_in(&env, "a", true);
    let out = open(&env, "doppeltest://two");
    assert!(out.contains("Test Chat"), "{out}");
    wait_for("the first copy to get the link", || {
        received(&real_home).contains("doppeltest://two")
    });
    assert!(!received(&home_a).contains("two") && !received(&home_b).contains("two"));

    // Two signing in and no one to ask (no terminal, no display): the first copy, again.
    set_signed_in(&env, "a", false);
    set_signed_in(&env, "b", false);
    open(&env, "doppeltest://three");
    wait_for("the first copy to get the link", || {
        received(&real_home).contains("doppeltest://three")
    });
    assert!(!received(&home_a).contains("three") && !received(&home_b).contains("three"));

    for id in ["a", "b"] {
        common::ok(&env.doppel(&["stop", id]));
    }
    for c in &mut clones {
        let _ = c.wait();
    }
    let _ = host.kill();
    let _ = host.wait();

    // Deleting the profiles gives the scheme back to the app that had it.
    for id in ["a", "b"] {
        common::ok(&env.doppel(&["delete", id, "--yes"]));
    }
    let m = mimeapps(&env);
    assert!(
        m.contains("x-scheme-handler/doppeltest=doppeltest-chat.desktop"),
        "{m}"
    );
    assert!(!handler.exists(), "the link router outlived the profiles");
    let _ = fs::remove_file(real_home.join("received-links"));
}
