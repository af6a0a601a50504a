//! Who owns the names the policy mentions: the proxy's own connection to the bus follows
//! `NameOwnerChanged`, so that a message from a unique name (`:1.42`) can be judged by the
//! well-known names it owns.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use zbus::blocking::fdo::DBusProxy;

use super::policy::{Level, Policy};

/// Unique name → the watched well-known names it owns.
#[derive(Debug, Clone, Default)]
pub struct Owners {
    map: Arc<RwLock<HashMap<String, BTreeSet<String>>>>,
}

impl Owners {
    /// Connects to the bus at `address` and follows the owners of every name `policy`
    /// mentions, in a thread of its own, for as long as the process lives.
    pub fn follow(address: &str, policy: &Policy) -> Result<Self, zbus::Error> {
        let conn = zbus::blocking::connection::Builder::address(address)?.build()?;
        let dbus = DBusProxy::new(&conn)?;
        // Subscribe first, then list: a change between the two is not missed.
        let changes = dbus.receive_name_owner_changed()?;
        let owners = Owners::default();
        for name in dbus.list_names()? {
            if name.starts_with(':') || !policy.watched(&name) {
                continue;
            }
            if let Ok(owner) = dbus.get_name_owner(name.as_ref()) {
                owners.set(&name, None, Some(owner.as_str()));
            }
        }
        let (o, policy) = (owners.clone(), policy.clone());
        std::thread::Builder::new()
            .name("owners".into())
            .spawn(move || {
                // The connection lives as long as the thread reads from it.
                let _conn = conn;
                for signal in changes {
                    let Ok(args) = signal.args() else { continue };
                    let name = args.name().as_str();
                    let old = args.old_owner().as_ref().map(|u| u.as_str());
                    let new = args.new_owner().as_ref().map(|u| u.as_str());
                    if name.starts_with(':') {
                        if new.is_none() {
                            o.forget(name);
                        }
                    } else if policy.watched(name) {
                        o.set(name, old, new);
                    }
                }
            })
            .map_err(|e| zbus::Error::Failure(format!("cannot start a thread: {e}")))?;
        Ok(owners)
    }

    fn set(&self, name: &str, old: Option<&str>, new: Option<&str>) {
        let Ok(mut map) = self.map.write() else {
            return;
        };
        if let Some(old) = old {
            if let Some(set) = map.get_mut(old) {
                set.remove(name);
            }
        }
        if let Some(new) = new {
            map.entry(new.to_owned())
                .or_default()
                .insert(name.to_owned());
        }
    }

    fn forget(&self, unique: &str) {
        if let Ok(mut map) = self.map.write() {
            map.remove(unique);
        }
    }

    /// Records (for tests, and when a reply shows it) that `unique` owns `name`.
    pub fn note(&self, name: &str, unique: &str) {
        self.set(name, None, Some(unique));
    }

    /// The highest level among the names `unique` owns.
    pub fn level(&self, unique: &str, policy: &Policy) -> Level {
        self.map
            .read()
            .ok()
            .and_then(|m| {
                m.get(unique)
                    .and_then(|names| names.iter().map(|n| policy.level(n)).max())
            })
            .unwrap_or_default()
    }

    /// The watched names `unique` owns.
    pub fn names(&self, unique: &str) -> Vec<String> {
        self.map
            .read()
            .ok()
            .and_then(|m| m.get(unique).map(|s| s.iter().cloned().collect()))
            .unwrap_or_default()
    }
}
