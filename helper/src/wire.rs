//! The helper's D-Bus contract, shared by the service and its client.
//!
//! Bus name `org.doppel.Helper1`, object `/org/doppel/Helper1`, interface `org.doppel.Helper1`.
//! Clients send profile ids, never paths; the helper acts for the calling uid only, on its own
//! volumes, and polkit decides per method (action `org.doppel.<method>`).

use serde::{Deserialize, Serialize};
use zbus::zvariant::Type;

/// The well-known bus name.
pub const BUS_NAME: &str = "org.doppel.Helper1";
/// The object path.
pub const OBJECT_PATH: &str = "/org/doppel/Helper1";
/// The interface name.
pub const INTERFACE: &str = "org.doppel.Helper1";
/// Prefix of the helper's D-Bus error names.
pub const ERROR_PREFIX: &str = "org.doppel.Helper1.Error";

/// Where volume images live: `/var/lib/doppel/<uid>/<id>.img`.
pub const STATE_DIR: &str = "/var/lib/doppel";
/// Where unlocked volumes are mounted: `/run/doppel/<uid>/<id>/`.
pub const RUN_DIR: &str = "/run/doppel";
/// The helper's configuration (per-user limits).
pub const CONFIG_FILE: &str = "/etc/doppel/helper.toml";

/// The polkit action of each method; one action per method, nothing else is callable.
pub const ACTIONS: &[(&str, &str)] = &[
    ("CreateVolume", "org.doppel.create-volume"),
    ("Unlock", "org.doppel.unlock"),
    ("Lock", "org.doppel.lock"),
    ("DeleteVolume", "org.doppel.delete-volume"),
    ("GrowVolume", "org.doppel.grow-volume"),
    ("Status", "org.doppel.status"),
    ("MountOverlay", "org.doppel.mount-overlay"),
    ("UnmountOverlay", "org.doppel.unmount-overlay"),
    ("Recover", "org.doppel.recover"),
];

/// The polkit action id for a method, if the method exists.
pub fn action_for(method: &str) -> Option<&'static str> {
    ACTIONS.iter().find(|(m, _)| *m == method).map(|(_, a)| *a)
}

/// Length of an fscrypt v2 master key (the volume key), in bytes.
pub const KEY_LEN: usize = 64;

/// One of the caller's volumes, as `Status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct VolumeInfo {
    /// The profile id.
    pub id: String,
    /// The image's size in bytes (its apparent size; it is sparse).
    pub size: u64,
    /// Bytes the image occupies on disk.
    pub used: u64,
    /// Mounted and its key present.
    pub unlocked: bool,
    /// The copy-on-write home is mounted.
    pub overlay: bool,
}

/// Checks a profile id as the helper does: `^[a-z0-9][a-z0-9-]{0,62}$`.
pub fn valid_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Parses "64M", "8G", "1T", "4096" (binary units).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_id("work") && valid_id("a-1") && valid_id(&"a".repeat(63)));
        for bad in [
            "",
            "-a",
            "A",
            "../x",
            "a/b",
            "a\0",
            &"a".repeat(64),
            "a.b",
            " a",
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn every_method_has_one_action() {
        let mut actions: Vec<_> = ACTIONS.iter().map(|(_, a)| a).collect();
        actions.sort();
        actions.dedup();
        assert_eq!(actions.len(), ACTIONS.len());
        assert_eq!(action_for("Unlock"), Some("org.doppel.unlock"));
        assert_eq!(action_for("Frobnicate"), None);
    }
}
