//! Names that would collide on the host bus, rewritten per profile: a name the clone may own
//! (its GApplication or KDBusService id, its MPRIS name) gets a suffix unique to the profile,
//! and a PID-derived name (`org.kde.StatusNotifierItem-<pid>-<n>`) gets the process's host PID
//! in place of its PID inside the sandbox. The clone sees its names as it chose them; the host
//! bus sees names no other instance uses.

use std::collections::HashMap;

use super::policy::valid_bus_name;

/// One connection's renamed names.
#[derive(Debug, Clone)]
pub struct Names {
    suffix: String,
    host_pid: Option<u32>,
    to_host: HashMap<String, String>,
    to_client: HashMap<String, String>,
}

/// The name element appended for profile `id` (`Doppel_work`): a valid bus-name element
/// whatever the id.
pub fn suffix_for(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("Doppel_{clean}")
}

/// `prefix-<pid>[-<n>]` in the last element: the position and value of the PID.
fn pid_in(name: &str) -> Option<(usize, usize)> {
    let last_start = name.rfind('.')? + 1;
    let last = &name[last_start..];
    let mut parts = last.split('-');
    let head = parts.next()?;
    let pid = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if head.is_empty() || !numeric(pid) || rest.len() > 1 || !rest.iter().all(|r| numeric(r)) {
        return None;
    }
    let start = last_start + head.len() + 1;
    Some((start, start + pid.len()))
}

impl Names {
    /// Names of a client whose process has `host_pid` outside the sandbox (None: not known,
    /// PID-derived names then get the suffix too).
    pub fn new(suffix: &str, host_pid: Option<u32>) -> Self {
        Self {
            suffix: suffix.to_owned(),
            host_pid,
            to_host: HashMap::new(),
            to_client: HashMap::new(),
        }
    }

    /// The host name for `name`, a name the client owns or may own.
    pub fn to_host(&mut self, name: &str) -> String {
        if let Some(h) = self.to_host.get(name) {
            return h.clone();
        }
        let host = match (pid_in(name), self.host_pid) {
            (Some((a, b)), Some(pid)) => format!("{}{pid}{}", &name[..a], &name[b..]),
            _ => format!("{name}.{}", self.suffix),
        };
        // A name too long with its suffix stays as it is (and collides, as it would without
        // Doppel) rather than become invalid.
        let host = if valid_bus_name(&host) {
            host
        } else {
            name.to_owned()
        };
        self.to_host.insert(name.to_owned(), host.clone());
        self.to_client.insert(host.clone(), name.to_owned());
        host
    }

    /// The client's name for host name `host`, if it is one of this client's renamed names.
    pub fn to_client(&self, host: &str) -> Option<&str> {
        self.to_client.get(host).map(String::as_str)
    }

    /// The host name already given to `name`, if any.
    pub fn host_of(&self, name: &str) -> Option<&str> {
        self.to_host.get(name).map(String::as_str)
    }

    /// Whether any name was renamed (so that bodies need looking at).
    pub fn is_empty(&self) -> bool {
        self.to_host.is_empty()
    }

    /// The host names, for a quick scan of message bodies.
    pub fn host_names(&self) -> impl Iterator<Item = &str> {
        self.to_client.keys().map(String::as_str)
    }

    /// The client names, for a quick scan of message bodies.
    pub fn client_names(&self) -> impl Iterator<Item = &str> {
        self.to_host.keys().map(String::as_str)
    }
}

/// Rewrites the bus names a match rule mentions (`sender='…'`, `arg0='…'`,
/// `arg0namespace='…'`, `destination='…'`) through `map`; other keys are kept as written.
pub fn rewrite_match_rule(rule: &str, map: &mut dyn FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(rule.len());
    let mut rest = rule;
    while !rest.is_empty() {
        // key='value' pairs separated by commas; values may contain escaped quotes ('\'').
        let Some(eq) = rest.find('=') else {
            out.push_str(rest);
            break;
        };
        let key = &rest[..eq];
        out.push_str(key);
        out.push('=');
        rest = &rest[eq + 1..];
        let Some(body) = rest.strip_prefix('\'') else {
            out.push_str(rest);
            break;
        };
        let Some(end) = body.find('\'') else {
            out.push('\'');
            out.push_str(body);
            break;
        };
        let value = &body[..end];
        let named = matches!(
            key.trim().trim_start_matches(','),
            "sender" | "destination" | "arg0" | "arg0namespace"
        );
        let new = if named { map(value) } else { None };
        out.push('\'');
        out.push_str(new.as_deref().unwrap_or(value));
        out.push('\'');
        rest = &body[end + 1..];
    }
    out
}

/// Whether a match rule asks to eavesdrop (see messages meant for others).
pub fn is_eavesdrop_rule(rule: &str) -> bool {
    rule.split(',').any(|kv| {
        let mut it = kv.splitn(2, '=');
        let k = it.next().unwrap_or("").trim();
        let v = it.next().unwrap_or("").trim().trim_matches('\'');
        k == "eavesdrop" && v.eq_ignore_ascii_case("true")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_names_get_the_profile_suffix() {
        let mut n = Names::new(&suffix_for("work-2"), Some(4242));
        assert_eq!(n.to_host("im.dino.Dino"), "im.dino.Dino.Doppel_work_2");
        assert_eq!(
            n.to_client("im.dino.Dino.Doppel_work_2"),
            Some("im.dino.Dino")
        );
        assert_eq!(n.to_client("im.dino.Dino"), None);
        assert_eq!(
            n.host_of("im.dino.Dino"),
            Some("im.dino.Dino.Doppel_work_2")
        );
    }

    #[test]
    fn pid_names_get_the_host_pid() {
        let mut n = Names::new("Doppel_a", Some(4242));
        assert_eq!(
            n.to_host("org.kde.StatusNotifierItem-2-1"),
            "org.kde.StatusNotifierItem-4242-1"
        );
        assert_eq!(n.to_host("org.kde.konsole-7"), "org.kde.konsole-4242");
        assert_eq!(
            n.to_client("org.kde.StatusNotifierItem-4242-1"),
            Some("org.kde.StatusNotifierItem-2-1")
        );
        // Not PID-shaped: suffixed.
        assert_eq!(n.to_host("org.x.a-b-c-d"), "org.x.a-b-c-d.Doppel_a");
        let mut unknown = Names::new("Doppel_a", None);
        assert_eq!(
            unknown.to_host("org.kde.StatusNotifierItem-2-1"),
            "org.kde.StatusNotifierItem-2-1.Doppel_a"
        );
    }

    #[test]
    fn overlong_names_stay_valid() {
        let long = format!("org.{}", "a".repeat(245));
        let mut n = Names::new("Doppel_profile", Some(1));
        assert_eq!(n.to_host(&long), long);
    }

    #[test]
    fn match_rules_have_their_names_rewritten() {
        let mut map = |v: &str| (v == "org.a.B").then(|| "org.a.B.Doppel_x".to_owned());
        assert_eq!(
            rewrite_match_rule(
                "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='org.a.B'",
                &mut map
            ),
            "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='org.a.B.Doppel_x'"
        );
        assert_eq!(
            rewrite_match_rule("path='org.a.B'", &mut map),
            "path='org.a.B'"
        );
        assert_eq!(rewrite_match_rule("broken", &mut map), "broken");
        assert_eq!(rewrite_match_rule("a='x", &mut map), "a='x");
    }

    #[test]
    fn eavesdropping_is_recognised() {
        assert!(is_eavesdrop_rule("type='signal',eavesdrop='true'"));
        assert!(is_eavesdrop_rule("eavesdrop=true"));
        assert!(!is_eavesdrop_rule("type='signal',eavesdrop='false'"));
        assert!(!is_eavesdrop_rule("member='eavesdrop'"));
    }
}
