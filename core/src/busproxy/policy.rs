//! The filtering rules, with the meaning Flatpak's xdg-dbus-proxy gives them: per well-known
//! name a level SEE < TALK < OWN (a `.*` suffix covers the name and every name below it), and
//! `--call` / `--broadcast` rules that narrow what may be called on, or received from, a name to
//! `interface[.member][@/path[/*]]`. Everything not allowed is denied.

use std::fmt;

/// How much a client may do with a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    #[default]
    None,
    /// It may know the name exists (NameHasOwner, ListNames, NameOwnerChanged).
    See,
    /// It may call it and receive its signals.
    Talk,
    /// It may own it (RequestName).
    Own,
}

/// A name, a `.*` subtree of names, or (Doppel's addition, for PID-derived names such as
/// `org.kde.StatusNotifierItem-<pid>-<n>`) a `-*` family: the name followed by `-` and anything
/// without a dot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamePattern {
    name: String,
    subtree: bool,
    family: bool,
}

impl NamePattern {
    fn parse(s: &str) -> Result<Self, RuleError> {
        let (name, subtree, family) = match (s.strip_suffix(".*"), s.strip_suffix("-*")) {
            (Some(n), _) => (n, true, false),
            (None, Some(n)) => (n, false, true),
            (None, None) => (s, false, false),
        };
        if !valid_bus_name(name) || name.starts_with(':') {
            return Err(RuleError(format!("{s:?} is not a well-known bus name")));
        }
        Ok(Self {
            name: name.to_owned(),
            subtree,
            family,
        })
    }

    fn matches(&self, name: &str) -> bool {
        if self.family {
            return name
                .strip_prefix(self.name.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('.'));
        }
        name == self.name
            || (self.subtree
                && name.len() > self.name.len()
                && name.starts_with(&self.name)
                && name.as_bytes()[self.name.len()] == b'.')
    }
}

/// `interface[.member][@/path[/*]]`, any part may be `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MessageRule {
    interface: Option<String>,
    member: Option<String>,
    path: Option<String>,
    path_subtree: bool,
}

impl MessageRule {
    fn parse(s: &str) -> Result<Self, RuleError> {
        let (im, path) = match s.split_once('@') {
            Some((im, p)) => (im, Some(p)),
            None => (s, None),
        };
        let (path, path_subtree) = match path {
            None => (None, false),
            Some(p) => {
                let (p, sub) = match p.strip_suffix("/*") {
                    Some(p) => (if p.is_empty() { "/" } else { p }, true),
                    None => (p, false),
                };
                if !p.starts_with('/') {
                    return Err(RuleError(format!("{s:?}: a path starts with /")));
                }
                (Some(p.to_owned()), sub)
            }
        };
        let (interface, member) = if im.is_empty() || im == "*" {
            (None, None)
        } else if let Some(i) = im.strip_suffix(".*") {
            (Some(i.to_owned()), None)
        } else {
            match im.rsplit_once('.') {
                // "org.foo.Bar.Method" — the last element names a member when it starts with an
                // upper-case letter after an interface of at least two elements.
                Some((i, m)) if i.contains('.') => (Some(i.to_owned()), Some(m.to_owned())),
                _ => return Err(RuleError(format!("{s:?}: expected interface[.method]"))),
            }
        };
        Ok(Self {
            interface,
            member,
            path,
            path_subtree,
        })
    }

    fn matches(&self, interface: Option<&str>, member: Option<&str>, path: Option<&str>) -> bool {
        if let Some(i) = &self.interface {
            if interface != Some(i.as_str()) {
                return false;
            }
        }
        if let Some(m) = &self.member {
            if member != Some(m.as_str()) {
                return false;
            }
        }
        if let Some(p) = &self.path {
            let Some(path) = path else { return false };
            let under = self.path_subtree
                && (p == "/"
                    || (path.len() > p.len()
                        && path.starts_with(p.as_str())
                        && path.as_bytes()[p.len()] == b'/'));
            if path != p && !under {
                return false;
            }
        }
        true
    }
}

/// A rule that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(pub String);

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad bus rule: {}", self.0)
    }
}

impl std::error::Error for RuleError {}

/// What a client may do on the bus.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    names: Vec<(NamePattern, Level)>,
    calls: Vec<(NamePattern, MessageRule)>,
    broadcasts: Vec<(NamePattern, MessageRule)>,
}

impl Policy {
    /// Reads rules written as xdg-dbus-proxy arguments: `--see=N`, `--talk=N`, `--own=N`,
    /// `--call=N=RULE`, `--broadcast=N=RULE`.
    pub fn from_args<S: AsRef<str>>(args: &[S]) -> Result<Self, RuleError> {
        let mut p = Policy::default();
        for a in args {
            let a = a.as_ref();
            let (flag, value) = a
                .split_once('=')
                .ok_or_else(|| RuleError(format!("{a:?}: expected --kind=value")))?;
            match flag {
                "--see" => p.names.push((NamePattern::parse(value)?, Level::See)),
                "--talk" => p.names.push((NamePattern::parse(value)?, Level::Talk)),
                "--own" => p.names.push((NamePattern::parse(value)?, Level::Own)),
                "--call" | "--broadcast" => {
                    let (name, rule) = value
                        .split_once('=')
                        .ok_or_else(|| RuleError(format!("{a:?}: expected NAME=RULE")))?;
                    let name = NamePattern::parse(name)?;
                    let rule = MessageRule::parse(rule)?;
                    // A filtered name can be seen; talking to it is what the rules allow.
                    p.names.push((name.clone(), Level::See));
                    if flag == "--call" {
                        p.calls.push((name, rule));
                    } else {
                        p.broadcasts.push((name, rule));
                    }
                }
                _ => return Err(RuleError(format!("{a:?}: unknown rule kind {flag}"))),
            }
        }
        Ok(p)
    }

    /// The level of a well-known name.
    pub fn level(&self, name: &str) -> Level {
        self.names
            .iter()
            .filter(|(p, _)| p.matches(name))
            .map(|(_, l)| *l)
            .max()
            .unwrap_or_default()
    }

    /// Whether a call to `name` with this interface, member and path is allowed.
    pub fn may_call(
        &self,
        name: &str,
        iface: Option<&str>,
        member: Option<&str>,
        path: Option<&str>,
    ) -> bool {
        self.allows(&self.calls, name, iface, member, path)
    }

    /// Whether a signal from `name` with this interface, member and path may reach the client.
    pub fn may_receive(
        &self,
        name: &str,
        iface: Option<&str>,
        member: Option<&str>,
        path: Option<&str>,
    ) -> bool {
        self.allows(&self.broadcasts, name, iface, member, path)
    }

    /// TALK on the name, or one of `filters` for it matching the message.
    fn allows(
        &self,
        filters: &[(NamePattern, MessageRule)],
        name: &str,
        iface: Option<&str>,
        member: Option<&str>,
        path: Option<&str>,
    ) -> bool {
        self.level(name) >= Level::Talk
            || filters
                .iter()
                .any(|(n, r)| n.matches(name) && r.matches(iface, member, path))
    }

    /// Whether any rule concerns a name below `prefix`, or `prefix` itself: the names the
    /// proxy's watcher must follow.
    pub fn watched(&self, name: &str) -> bool {
        self.level(name) > Level::None
    }
}

/// A valid D-Bus bus name (unique or well-known), per the specification.
pub fn valid_bus_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let (unique, rest) = match name.strip_prefix(':') {
        Some(r) => (true, r),
        None => (false, name),
    };
    let elements: Vec<&str> = rest.split('.').collect();
    if elements.len() < 2 {
        return false;
    }
    elements.iter().all(|e| {
        !e.is_empty()
            && e.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && (unique || !e.as_bytes()[0].is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(args: &[&str]) -> Policy {
        Policy::from_args(args).unwrap()
    }

    #[test]
    fn levels_follow_names_and_subtrees() {
        let p = policy(&[
            "--talk=org.freedesktop.Notifications",
            "--own=org.telegram.desktop.*",
            "--see=org.example.Seen",
        ]);
        assert_eq!(p.level("org.freedesktop.Notifications"), Level::Talk);
        assert_eq!(p.level("org.freedesktop.NotificationsX"), Level::None);
        assert_eq!(p.level("org.telegram.desktop"), Level::Own);
        assert_eq!(p.level("org.telegram.desktop.x"), Level::Own);
        assert_eq!(p.level("org.telegram.desktopx"), Level::None);
        assert_eq!(p.level("org.example.Seen"), Level::See);
        assert_eq!(p.level("org.other"), Level::None);
        let sni = policy(&["--own=org.kde.StatusNotifierItem-*"]);
        assert_eq!(sni.level("org.kde.StatusNotifierItem-2-1"), Level::Own);
        assert_eq!(sni.level("org.kde.StatusNotifierItem"), Level::None);
        assert_eq!(sni.level("org.kde.StatusNotifierItem-"), Level::None);
        assert_eq!(sni.level("org.kde.StatusNotifierItem-2.x"), Level::None);
        assert_eq!(sni.level("org.kde.StatusNotifierWatcher"), Level::None);
    }

    #[test]
    fn call_and_broadcast_rules_narrow_a_name() {
        let p = policy(&[
            "--call=org.freedesktop.portal.*=*",
            "--broadcast=org.freedesktop.portal.*=@/org/freedesktop/portal/*",
            "--call=org.example.A=org.example.A.Iface.Method@/obj",
        ]);
        let portal = "org.freedesktop.portal.Desktop";
        assert_eq!(p.level(portal), Level::See);
        assert!(p.may_call(
            portal,
            Some("org.freedesktop.portal.OpenURI"),
            Some("OpenURI"),
            Some("/org/freedesktop/portal/desktop")
        ));
        assert!(p.may_receive(
            portal,
            Some("org.freedesktop.portal.Request"),
            Some("Response"),
            Some("/org/freedesktop/portal/desktop/request/1_2/t")
        ));
        assert!(!p.may_receive(portal, Some("x.y"), Some("Z"), Some("/other")));
        let a = "org.example.A";
        assert!(p.may_call(a, Some("org.example.A.Iface"), Some("Method"), Some("/obj")));
        assert!(!p.may_call(a, Some("org.example.A.Iface"), Some("Other"), Some("/obj")));
        assert!(!p.may_call(
            a,
            Some("org.example.A.Iface"),
            Some("Method"),
            Some("/obj/sub")
        ));
        assert!(!p.may_call("org.example.B", None, None, None));
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule() {
        for bad in [
            "--talk=",
            "--talk=nodots",
            "--own=:1.2",
            "--frob=a.b",
            "--call=a.b",
            "--call=a.b=x@nopath",
            "talk",
        ] {
            let e = Policy::from_args(&[bad]).unwrap_err();
            assert!(e.to_string().contains("bad bus rule"), "{bad}: {e}");
        }
    }

    #[test]
    fn bus_names_are_checked_as_the_spec_says() {
        assert!(valid_bus_name("org.freedesktop.DBus"));
        assert!(valid_bus_name(":1.42"));
        assert!(valid_bus_name("org.kde.StatusNotifierItem-2-1"));
        assert!(!valid_bus_name("org"));
        assert!(!valid_bus_name("org..x"));
        assert!(!valid_bus_name("org.1x"));
        assert!(!valid_bus_name("org.x/y"));
        assert!(!valid_bus_name(&format!("a.{}", "b".repeat(260))));
    }
}
