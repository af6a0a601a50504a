//! The helper's D-Bus policy and polkit actions, as the packages install them, checked against
//! the real dbus-daemon and polkitd on a private system bus. No helper runs here: where the bus
//! has to deliver a call, a stand-in owned by root answers instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/sysbus.rs"]
mod sysbus;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;

use doppel_helper::wire::{VolumeInfo, ACTIONS, BUS_NAME, INTERFACE, OBJECT_PATH};
use sysbus::SystemBus;

/// An ordinary account: no session, no polkit agent, no rule unless a test writes one.
const USER: &str = "doppel-e2e-pk";

fn setup(tag: &str) -> Option<SystemBus> {
    if !common::require(
        common::is_root(),
        "polkit policy tests need root to run dbus-daemon and polkitd",
    ) {
        return None;
    }
    for cmd in ["dbus-daemon", "dbus-send", "pkaction", "pkcheck", "setpriv"] {
        if !common::require(common::have(cmd), &format!("{cmd} is not installed")) {
            return None;
        }
    }
    if !common::require(
        Path::new(sysbus::POLKITD).exists(),
        "polkitd is not installed (Debian package polkitd)",
    ) {
        return None;
    }
    // Once per binary: useradd does not like running twice at once.
    static USER_READY: OnceLock<()> = OnceLock::new();
    USER_READY.get_or_init(|| {
        common::User::get(USER);
    });
    Some(SystemBus::start(tag))
}

fn text(out: &Output) -> String {
    format!(
        "{} | stdout: {} | stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

fn policy_text() -> String {
    fs::read_to_string(sysbus::packaging_dir().join("polkit/org.doppel.policy")).unwrap()
}

fn wanted_actions() -> BTreeSet<&'static str> {
    ACTIONS.iter().map(|(_, a)| *a).collect()
}

/// Every method of the helper has exactly one action in the .policy file, with nothing extra,
/// each with a description, a message and a SECURITY note (no root needed).
#[test]
fn every_method_has_exactly_one_action() {
    let policy = policy_text();
    let mut seen = Vec::new();
    let mut rest = policy.as_str();
    while let Some(i) = rest.find("<action id=\"") {
        let after = &rest[i + "<action id=\"".len()..];
        let id = &after[..after.find('"').unwrap()];
        // The text between the previous action and this one holds its SECURITY note.
        let before = &rest[..i];
        assert!(
            before.contains("SECURITY:"),
            "{id} has no SECURITY: comment above it"
        );
        let end = after.find("</action>").unwrap();
        let body = &after[..end];
        for tag in ["<description>", "<message>", "<defaults>"] {
            assert!(body.contains(tag), "{id} has no {tag}");
        }
        seen.push(id.to_owned());
        rest = &after[end..];
    }
    let unique: BTreeSet<&str> = seen.iter().map(String::as_str).collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "an action is declared twice: {seen:?}"
    );
    assert_eq!(
        unique,
        wanted_actions(),
        "the .policy file and helper/src/wire.rs ACTIONS disagree"
    );
    assert_eq!(ACTIONS.len(), unique.len());
}

/// polkitd loads the file: each action is known with the defaults the design asks for (an
/// active session may manage its own volumes; anyone else needs an administrator), and the
/// installed `org.doppel.*` actions are exactly the helper's.
#[test]
fn polkitd_knows_every_action_with_its_defaults() {
    let Some(bus) = setup("pkaction") else { return };
    let pkaction = |args: &[&str]| {
        std::process::Command::new("pkaction")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .output()
            .unwrap()
    };
    for (method, action) in ACTIONS {
        let out = pkaction(&["--action-id", action, "--verbose"]);
        assert!(
            out.status.success(),
            "pkaction {action} ({method}): {}",
            text(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| -> String {
            stdout
                .lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
                .unwrap_or_else(|| panic!("pkaction {action}: no {name:?} in\n{stdout}"))
                .trim()
                .to_owned()
        };
        assert!(stdout.starts_with(&format!("{action}:")), "{stdout}");
        assert_eq!(field("implicit active"), "yes", "{action}");
        assert_eq!(field("implicit inactive"), "auth_admin", "{action}");
        assert_eq!(field("implicit any"), "auth_admin", "{action}");
        assert!(!field("description").is_empty(), "{action}");
        assert!(!field("message").is_empty(), "{action}");
    }
    let out = pkaction(&[]);
    assert!(out.status.success(), "pkaction: {}", text(&out));
    let installed: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("org.doppel."))
        .map(str::to_owned)
        .collect();
    let wanted: BTreeSet<String> = wanted_actions().into_iter().map(String::from).collect();
    assert_eq!(installed, wanted);
}

/// Stands in for the helper where a call must be delivered: owned by root, one method.
struct StandIn;

#[zbus::interface(name = "org.doppel.Helper1")]
impl StandIn {
    fn status(&self) -> Vec<VolumeInfo> {
        Vec::new()
    }
}

/// The bus policy: dbus-daemon accepts it; an ordinary user may call the helper's interfaces
/// but may not own its name nor reach it on any other interface; root may own it.
#[test]
fn bus_policy_lets_anyone_call_and_only_root_own() {
    let Some(bus) = setup("buspolicy") else {
        return;
    };
    let send_as_user = |args: &[&str]| {
        let mut argv = vec![
            "dbus-send".to_owned(),
            format!("--bus={}", bus.address()),
            "--print-reply".to_owned(),
        ];
        argv.extend(args.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        bus.command_as(USER, &argv).output().unwrap()
    };
    let call_helper = |member: &str, extra: &[&str]| {
        let dest = format!("--dest={BUS_NAME}");
        let mut args = vec![dest.as_str(), OBJECT_PATH, member];
        args.extend_from_slice(extra);
        send_as_user(&args)
    };
    let status = format!("{INTERFACE}.Status");

    // Nobody owns the name: the call fails for that reason, not for the policy. (The bus checks
    // its policy only once there is a recipient, so the stand-in below is the real test.)
    let out = call_helper(&status, &[]);
    let err = text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("org.freedesktop.DBus.Error.ServiceUnknown")
            || err.contains("org.freedesktop.DBus.Error.NameHasNoOwner"),
        "{err}"
    );
    assert!(!err.contains("AccessDenied"), "{err}");

    // Only root may own the name.
    let out = send_as_user(&[
        "--dest=org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.RequestName",
        &format!("string:{BUS_NAME}"),
        "uint32:0",
    ]);
    let err = text(&out);
    assert!(!out.status.success(), "{USER} could own {BUS_NAME}: {err}");
    assert!(
        err.contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{err}"
    );
    let _stand_in = zbus::blocking::connection::Builder::address(bus.address())
        .unwrap()
        .name(BUS_NAME)
        .unwrap()
        .serve_at(OBJECT_PATH, StandIn)
        .unwrap()
        .build()
        .unwrap_or_else(|e| panic!("root could not own {BUS_NAME}: {e}"));
    assert_eq!(bus.owner_pid(BUS_NAME), Some(std::process::id()));

    // An ordinary user's calls reach it on the helper's interface and the standard ones.
    let out = call_helper(&status, &[]);
    assert!(
        out.status.success(),
        "Status was not delivered: {}",
        text(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("array ["));
    for (member, extra) in [
        ("org.freedesktop.DBus.Introspectable.Introspect", vec![]),
        ("org.freedesktop.DBus.Peer.Ping", vec![]),
        (
            "org.freedesktop.DBus.Properties.GetAll",
            vec![format!("string:{INTERFACE}")],
        ),
    ] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let out = call_helper(member, &extra);
        assert!(
            out.status.success(),
            "{member} was not delivered: {}",
            text(&out)
        );
    }
    let out = call_helper("org.freedesktop.DBus.Introspectable.Introspect", &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("interface name=\"{INTERFACE}\"")),
        "{}",
        text(&out)
    );

    // Any other interface is refused by the bus itself (the stand-in would answer
    // UnknownInterface): deny by default.
    for member in [
        "org.doppel.Other.Status",
        "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
    ] {
        let out = call_helper(member, &[]);
        let err = text(&out);
        assert!(
            err.contains("org.freedesktop.DBus.Error.AccessDenied"),
            "{member} should be refused by the bus policy: {err}"
        );
    }
}

/// polkit decides: an ordinary user outside an active session needs an administrator for every
/// action (auth_admin: pkcheck exits 2, "requires authentication"), and is let through once a
/// rule allows it.
#[test]
fn polkit_refuses_a_sessionless_user_until_a_rule_allows() {
    let Some(bus) = setup("pkcheck") else { return };
    // A rule an interrupted run left behind would let the user through.
    bus.revoke_user(USER);
    for (_, action) in ACTIONS {
        let out = bus.pkcheck_as(USER, action);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{action} for {USER} without a rule: {}",
            text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("requires authentication"),
            "{}",
            text(&out)
        );
    }
    bus.allow_user(USER);
    for (_, action) in ACTIONS {
        let out = bus.pkcheck_as(USER, action);
        assert!(
            out.status.success(),
            "{action} for {USER} with a rule: {}",
            text(&out)
        );
    }
    bus.revoke_user(USER);
    let out = bus.pkcheck_as(USER, "org.doppel.unlock");
    assert_eq!(out.status.code(), Some(2), "after revoke: {}", text(&out));
}
