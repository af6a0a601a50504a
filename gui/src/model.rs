//! What the window shows, as plain data: a profile plus its instance status become a row's
//! title, subtitle and buttons. No GTK here, so all of it is unit-tested without a display.

use doppel_core::apps::DesktopEntry;
use doppel_core::id::{self, ProfileId};
use doppel_core::instance::InstanceRecord;
use doppel_core::profile::Profile;

/// The icon shown when an app has none, or its icon cannot be found.
pub const FALLBACK_ICON: &str = "application-x-executable";

/// Badge colours offered for a new profile (GNOME palette), with their names.
pub const PRESET_COLORS: [(&str, &str); 7] = [
    ("#3584e4", "Blue"),
    ("#33d17a", "Green"),
    ("#f6d32d", "Yellow"),
    ("#ff7800", "Orange"),
    ("#e01b24", "Red"),
    ("#9141ac", "Purple"),
    ("#986a44", "Brown"),
];

/// Where a profile stands, as far as the window cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileState {
    /// Its instance runs; the sandbox's pid, once known.
    Running(Option<i32>),
    /// Not running; an encrypted profile is unlocked.
    Stopped { unlocked: bool },
    /// Encrypted and locked: a passphrase is needed before it can run.
    Locked,
    /// The instance status could not be read.
    Unknown(String),
}

impl ProfileState {
    /// Works out the state from what core reports.
    pub fn from_core(
        status: Result<Option<&InstanceRecord>, String>,
        needs_unlock: bool,
        encrypted: bool,
    ) -> Self {
        match status {
            Ok(Some(r)) => Self::Running((r.monitor_pid > 0).then_some(r.sandbox_pid)),
            Ok(None) if needs_unlock => Self::Locked,
            Ok(None) => Self::Stopped {
                unlocked: encrypted,
            },
            Err(e) => Self::Unknown(e),
        }
    }
}

/// The main button of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrimaryAction {
    Launch,
    Stop,
}

impl PrimaryAction {
    /// Button label, app action (taking the profile id) and style class.
    pub fn button(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Launch => ("Launch", "app.launch", "suggested-action"),
            Self::Stop => ("Stop", "app.stop", "destructive-action"),
        }
    }
}

/// The lock button of an encrypted profile's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockAction {
    Lock,
    Unlock,
}

impl LockAction {
    /// Button label and app action (taking the profile id).
    pub fn button(self) -> (&'static str, &'static str) {
        match self {
            Self::Lock => ("Lock", "app.lock"),
            Self::Unlock => ("Unlock", "app.unlock"),
        }
    }
}

/// One row of the profile list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRow {
    pub id: ProfileId,
    /// "Telegram Desktop (Work)".
    pub title: String,
    /// "Running", "Stopped", "Locked" …
    pub subtitle: String,
    /// Badge colour, `#rrggbb`.
    pub color: String,
    /// Icon name or absolute path of the app's icon.
    pub icon: String,
    pub primary: Option<PrimaryAction>,
    pub lock: Option<LockAction>,
    /// Work on this profile is under way: buttons are replaced by a spinner.
    pub busy: bool,
}

impl ProfileRow {
    /// The row for `p` in `state`; `icon` is the app's icon, if its desktop entry names one.
    pub fn new(p: &Profile, state: &ProfileState, icon: Option<&str>, busy: bool) -> Self {
        let subtitle = match state {
            ProfileState::Running(_) => "Running".to_owned(),
            ProfileState::Stopped { unlocked: true } => "Stopped · unlocked".to_owned(),
            ProfileState::Stopped { unlocked: false } => "Stopped".to_owned(),
            ProfileState::Locked => "Locked".to_owned(),
            ProfileState::Unknown(e) => format!("State unknown: {e}"),
        };
        let primary = match state {
            ProfileState::Running(_) => Some(PrimaryAction::Stop),
            ProfileState::Stopped { .. } | ProfileState::Locked => Some(PrimaryAction::Launch),
            ProfileState::Unknown(_) => None,
        };
        // A running profile cannot be locked from here: its app has the volume open.
        let lock = match state {
            _ if !p.encrypted => None,
            ProfileState::Locked => Some(LockAction::Unlock),
            ProfileState::Stopped { .. } => Some(LockAction::Lock),
            ProfileState::Running(_) | ProfileState::Unknown(_) => None,
        };
        ProfileRow {
            id: p.id.clone(),
            title: p.label(),
            subtitle,
            color: p.color.clone(),
            icon: icon
                .filter(|i| !i.trim().is_empty())
                .unwrap_or(FALLBACK_ICON)
                .to_owned(),
            primary,
            lock,
            busy,
        }
    }
}

/// A profile file that could not be read, shown as a row of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenRow {
    pub message: String,
}

/// Everything the list shows at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub rows: Vec<ProfileRow>,
    pub broken: Vec<BrokenRow>,
    /// The profile directory itself could not be listed.
    pub error: Option<String>,
}

impl Snapshot {
    /// Whether there is nothing to list (the empty state is shown).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.broken.is_empty() && self.error.is_none()
    }
}

/// One installed app offered in the new-profile dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppChoice {
    /// Desktop-file id, passed to `resolve`.
    pub desktop_id: String,
    pub name: String,
    pub icon: String,
    /// The recipe that knows this app, if any.
    pub recipe: Option<String>,
}

impl AppChoice {
    /// The subtitle in the app list.
    pub fn subtitle(&self) -> String {
        match &self.recipe {
            Some(_) => self.desktop_id.clone(),
            None => format!("{} · may need tweaks", self.desktop_id),
        }
    }

    /// Whether `query` (already lower-cased) matches its name or id.
    pub fn matches(&self, query: &str) -> bool {
        query.is_empty()
            || self.name.to_lowercase().contains(query)
            || self.desktop_id.to_lowercase().contains(query)
    }

    /// Builds the choice for a desktop entry.
    pub fn from_entry(e: &DesktopEntry, recipe: Option<String>) -> Self {
        AppChoice {
            desktop_id: e.id.clone(),
            name: e.name.clone(),
            icon: e
                .icon
                .clone()
                .filter(|i| !i.trim().is_empty())
                .unwrap_or_else(|| FALLBACK_ICON.to_owned()),
            recipe,
        }
    }
}

/// Sorts apps with a recipe first (they are known to clone cleanly), then by name.
pub fn sort_choices(apps: &mut [AppChoice]) {
    apps.sort_by_cached_key(|a| (a.recipe.is_none(), a.name.to_lowercase()));
}

/// A profile id made from a display name ("My Work!" → "my-work"), unique among `taken`.
pub fn id_from_name(name: &str, fallback: &str, taken: &[ProfileId]) -> Option<ProfileId> {
    let slug = |s: &str| {
        let mut out = String::new();
        for c in s.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                out.push(c);
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        let out = out.trim_end_matches('-');
        out.chars().take(id::MAX_LEN - 4).collect::<String>()
    };
    let mut base = slug(name);
    if base.is_empty() {
        base = slug(fallback);
    }
    if base.is_empty() {
        base = "profile".to_owned();
    }
    let base = base.trim_end_matches('-').to_owned();
    (1..1000).find_map(|n| {
        let candidate = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        ProfileId::parse(&candidate)
            .ok()
            .filter(|id| !taken.contains(id))
    })
}

/// How hard a passphrase looks to guess, in words for the person typing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strength {
    Empty,
    Weak,
    Fair,
    Strong,
}

impl Strength {
    /// A rough estimate: length counts most, then the mix of character kinds.
    pub fn of(pass: &str) -> Self {
        let len = pass.chars().count();
        if len == 0 {
            return Self::Empty;
        }
        let kinds = [
            pass.chars().any(|c| c.is_lowercase()),
            pass.chars().any(|c| c.is_uppercase()),
            pass.chars().any(|c| c.is_numeric()),
            pass.chars().any(|c| !c.is_alphanumeric()),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        match (len, kinds) {
            (20.., _) | (16.., 2..) | (12.., 3..) => Self::Strong,
            (12.., _) | (10.., 3..) => Self::Fair,
            _ => Self::Weak,
        }
    }

    /// The hint shown under the passphrase entries.
    pub fn hint(self) -> &'static str {
        match self {
            Self::Empty => {
                "Choose a passphrase: several words are easy to remember and hard to guess"
            }
            Self::Weak => "Weak: use 12 or more characters, or several words",
            Self::Fair => "Fair: a few more characters or words would make it much stronger",
            Self::Strong => "Strong",
        }
    }
}

/// Why the new-profile form cannot be submitted yet, if it cannot.
pub fn form_problem(
    app_chosen: bool,
    name: &str,
    encrypt: bool,
    pass: &str,
    repeat: &str,
) -> Option<&'static str> {
    if !app_chosen {
        return Some("Choose an app");
    }
    if name.trim().is_empty() {
        return Some("Give the profile a name");
    }
    if name.chars().any(char::is_control) {
        return Some("The name cannot contain control characters");
    }
    if encrypt {
        return passphrase_problem(pass, repeat);
    }
    None
}

/// What keeps a new passphrase from being accepted, if anything.
pub fn passphrase_problem(pass: &str, repeat: &str) -> Option<&'static str> {
    if pass.is_empty() {
        return Some("Choose a passphrase");
    }
    if pass != repeat {
        return Some("The two passphrases differ");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use doppel_core::profile::{HomeMode, NetworkMode};

    fn profile(encrypted: bool) -> Profile {
        Profile {
            id: ProfileId::parse("work").unwrap(),
            name: "Work".into(),
            recipe: "telegram".into(),
            desktop_id: Some("org.telegram.desktop".into()),
            app_name: "Telegram Desktop".into(),
            command: vec!["telegram-desktop".into()],
            color: "#e01b24".into(),
            home: HomeMode::Private,
            network: NetworkMode::Isolated,
            encrypted,
            auto_lock: true,
            keyring: None,
        }
    }

    fn record(monitor_pid: i32) -> InstanceRecord {
        InstanceRecord {
            profile: ProfileId::parse("work").unwrap(),
            monitor_pid,
            sandbox_pid: 77,
            pasta_pid: None,
            proxy_pid: None,
            started: 1,
            network: NetworkMode::Isolated,
            home: HomeMode::Private,
            command: vec![],
        }
    }

    #[test]
    fn state_follows_core() {
        let r = record(5);
        assert_eq!(
            ProfileState::from_core(Ok(Some(&r)), false, false),
            ProfileState::Running(Some(77))
        );
        // A lock held before the record is written: starting, pid unknown.
        let r0 = record(0);
        assert_eq!(
            ProfileState::from_core(Ok(Some(&r0)), true, true),
            ProfileState::Running(None)
        );
        assert_eq!(
            ProfileState::from_core(Ok(None), true, true),
            ProfileState::Locked
        );
        assert_eq!(
            ProfileState::from_core(Ok(None), false, true),
            ProfileState::Stopped { unlocked: true }
        );
        assert_eq!(
            ProfileState::from_core(Ok(None), false, false),
            ProfileState::Stopped { unlocked: false }
        );
        assert!(matches!(
            ProfileState::from_core(Err("no runtime dir".into()), false, false),
            ProfileState::Unknown(_)
        ));
    }

    #[test]
    fn plain_rows_launch_or_stop_and_never_lock() {
        let p = profile(false);
        let stopped = ProfileRow::new(&p, &ProfileState::Stopped { unlocked: false }, None, false);
        assert_eq!(stopped.title, "Telegram Desktop (Work)");
        assert_eq!(stopped.subtitle, "Stopped");
        assert_eq!(stopped.primary, Some(PrimaryAction::Launch));
        assert_eq!(stopped.lock, None);
        assert_eq!(stopped.icon, FALLBACK_ICON);
        let running = ProfileRow::new(&p, &ProfileState::Running(Some(9)), Some("telegram"), false);
        assert_eq!(running.subtitle, "Running");
        assert_eq!(running.primary, Some(PrimaryAction::Stop));
        assert_eq!(running.icon, "telegram");
        assert_eq!(running.color, "#e01b24");
    }

    #[test]
    fn encrypted_rows_offer_lock_or_unlock_but_not_while_running() {
        let p = profile(true);
        let locked = ProfileRow::new(&p, &ProfileState::Locked, Some(""), false);
        assert_eq!(locked.subtitle, "Locked");
        assert_eq!(locked.lock, Some(LockAction::Unlock));
        assert_eq!(locked.primary, Some(PrimaryAction::Launch));
        assert_eq!(locked.icon, FALLBACK_ICON);
        let open = ProfileRow::new(&p, &ProfileState::Stopped { unlocked: true }, None, false);
        assert_eq!(open.lock, Some(LockAction::Lock));
        assert_eq!(open.subtitle, "Stopped · unlocked");
        let running = ProfileRow::new(&p, &ProfileState::Running(None), None, false);
        assert_eq!(running.lock, None);
        let unknown = ProfileRow::new(&p, &ProfileState::Unknown("x".into()), None, false);
        assert_eq!(unknown.primary, None);
        assert!(unknown.subtitle.contains('x'));
    }

    #[test]
    fn apps_with_a_recipe_come_first() {
        let mk = |id: &str, name: &str, recipe: Option<&str>| AppChoice {
            desktop_id: id.into(),
            name: name.into(),
            icon: FALLBACK_ICON.into(),
            recipe: recipe.map(Into::into),
        };
        let mut apps = vec![
            mk("a", "Alpha", None),
            mk("t", "Telegram", Some("telegram")),
            mk("b", "beta", None),
            mk("d", "Discord", Some("discord")),
        ];
        sort_choices(&mut apps);
        let names: Vec<_> = apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["Discord", "Telegram", "Alpha", "beta"]);
        assert!(apps[2].subtitle().contains("may need tweaks"));
        assert!(!apps[0].subtitle().contains("tweaks"));
        assert!(apps[1].matches("tele"));
        assert!(apps[1].matches(""));
        assert!(!apps[1].matches("disc"));
    }

    #[test]
    fn ids_come_from_names_and_avoid_taken_ones() {
        let id = |s: &str| ProfileId::parse(s).unwrap();
        assert_eq!(id_from_name("My Work!", "x", &[]), Some(id("my-work")));
        assert_eq!(id_from_name("  ", "Telegram", &[]), Some(id("telegram")));
        assert_eq!(id_from_name("Ünï", "", &[]), Some(id("n")));
        assert_eq!(id_from_name("日本", "", &[]), Some(id("profile")));
        assert_eq!(
            id_from_name("Work", "", &[id("work"), id("work-2")]),
            Some(id("work-3"))
        );
        let long = "a".repeat(200);
        let got = id_from_name(&long, "", &[]).unwrap();
        assert!(got.as_str().len() <= id::MAX_LEN);
    }

    #[test]
    fn strength_grows_with_length_and_variety() {
        assert_eq!(Strength::of(""), Strength::Empty);
        assert_eq!(Strength::of("hunter2"), Strength::Weak);
        assert_eq!(Strength::of("abcdefghijkl"), Strength::Fair);
        assert_eq!(Strength::of("Abcdefgh1jk!"), Strength::Strong);
        assert_eq!(
            Strength::of("correct horse battery staple"),
            Strength::Strong
        );
    }

    #[test]
    fn the_form_says_what_is_missing() {
        assert_eq!(
            form_problem(false, "Work", false, "", ""),
            Some("Choose an app")
        );
        assert!(form_problem(true, " ", false, "", "").is_some());
        assert_eq!(form_problem(true, "Work", false, "", ""), None);
        assert!(form_problem(true, "Work", true, "", "").is_some());
        assert_eq!(
            form_problem(true, "Work", true, "a", "b"),
            Some("The two passphrases differ")
        );
        assert_eq!(form_problem(true, "Work", true, "ab", "ab"), None);
    }
}

// ---------------------------------------------------------------------------------------------
// The tray menu: what the tray icon's menu lists for a snapshot, as plain data (tray.rs turns it
// into dbusmenu items). Each profile gets a section, a heading with its name and state followed
// by its actions, so that switching accounts is one click once the menu is open.

/// Longest heading in the tray menu; longer ones (an error, say) are cut with "…".
const TRAY_HEADING_MAX: usize = 80;

/// What a tray menu item asks the application to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayCommand {
    /// The app action to activate, without `app.` ("launch", "lock-all", "quit"); `None` only
    /// shows the window.
    pub action: Option<&'static str>,
    /// The profile id the action takes as its parameter.
    pub profile: Option<ProfileId>,
    /// Show the window first: the action opens a dialog on it, or showing it is the point.
    pub show_window: bool,
}

impl TrayCommand {
    fn app(action: &'static str) -> Self {
        TrayCommand {
            action: Some(action),
            profile: None,
            show_window: false,
        }
    }

    fn profile(action: &'static str, id: &ProfileId, show_window: bool) -> Self {
        TrayCommand {
            action: Some(action),
            profile: Some(id.clone()),
            show_window,
        }
    }

    /// Shows the window (the tray icon's left click, and "Open Doppel").
    pub fn open_window() -> Self {
        TrayCommand {
            action: None,
            profile: None,
            show_window: true,
        }
    }
}

/// One line of the tray menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrayEntry {
    /// Text that does nothing when clicked: a profile's name and state, or a problem.
    Heading(String),
    /// Something to click.
    Item {
        label: String,
        command: TrayCommand,
        enabled: bool,
    },
    Separator,
}

/// The tray icon's menu and tooltip for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrayMenu {
    pub entries: Vec<TrayEntry>,
    /// "2 profiles running".
    pub tooltip: String,
}

impl TrayMenu {
    /// The menu for `snap`: a section per profile, then "Lock All", "Open Doppel" and "Quit".
    pub fn from_snapshot(snap: &Snapshot) -> Self {
        let mut entries = Vec::new();
        let heading = |text: String| {
            let text = if text.chars().count() > TRAY_HEADING_MAX {
                let cut: String = text.chars().take(TRAY_HEADING_MAX - 1).collect();
                format!("{}…", cut.trim_end())
            } else {
                text
            };
            TrayEntry::Heading(text)
        };
        if let Some(e) = &snap.error {
            entries.push(heading(format!("Cannot read the profiles: {e}")));
        } else if snap.is_empty() {
            entries.push(heading("No profiles yet".to_owned()));
        }
        for (n, r) in snap.rows.iter().enumerate() {
            if n > 0 {
                entries.push(TrayEntry::Separator);
            }
            let state = if r.busy { "Working…" } else { &r.subtitle };
            entries.push(heading(format!("{} — {state}", r.title)));
            // Launching a locked profile asks for its passphrase first, on the window.
            let locked = r.lock == Some(LockAction::Unlock);
            let mut item = |label: &str, command: TrayCommand| {
                entries.push(TrayEntry::Item {
                    label: label.to_owned(),
                    command,
                    enabled: !r.busy,
                });
            };
            match r.primary {
                Some(PrimaryAction::Launch) if locked => {
                    item("Launch…", TrayCommand::profile("launch", &r.id, true));
                }
                Some(PrimaryAction::Launch) => {
                    item("Launch", TrayCommand::profile("launch", &r.id, false));
                }
                Some(PrimaryAction::Stop) => {
                    item("Stop", TrayCommand::profile("stop", &r.id, false));
                }
                None => {}
            }
            match r.lock {
                Some(LockAction::Lock) => item("Lock", TrayCommand::profile("lock", &r.id, false)),
                Some(LockAction::Unlock) => {
                    item("Unlock…", TrayCommand::profile("unlock", &r.id, true));
                }
                None => {}
            }
        }
        match snap.broken.len() {
            0 => {}
            1 => entries.push(heading(
                "1 profile cannot be read: open Doppel for details".to_owned(),
            )),
            n => entries.push(heading(format!(
                "{n} profiles cannot be read: open Doppel for details"
            ))),
        }
        entries.push(TrayEntry::Separator);
        entries.push(TrayEntry::Item {
            label: "Lock All".to_owned(),
            command: TrayCommand::app("lock-all"),
            enabled: snap.rows.iter().any(|r| r.lock == Some(LockAction::Lock)),
        });
        entries.push(TrayEntry::Item {
            label: "Open Doppel".to_owned(),
            command: TrayCommand::open_window(),
            enabled: true,
        });
        entries.push(TrayEntry::Separator);
        entries.push(TrayEntry::Item {
            label: "Quit".to_owned(),
            command: TrayCommand::app("quit"),
            enabled: true,
        });
        let running = snap
            .rows
            .iter()
            .filter(|r| r.primary == Some(PrimaryAction::Stop))
            .count();
        let tooltip = match running {
            0 => "No profile running".to_owned(),
            1 => "1 profile running".to_owned(),
            n => format!("{n} profiles running"),
        };
        TrayMenu { entries, tooltip }
    }
}

#[cfg(test)]
mod tray_menu_tests {
    use super::*;

    fn row(
        id: &str,
        subtitle: &str,
        primary: Option<PrimaryAction>,
        lock: Option<LockAction>,
    ) -> ProfileRow {
        ProfileRow {
            id: ProfileId::parse(id).unwrap(),
            title: format!("Telegram Desktop ({id})"),
            subtitle: subtitle.into(),
            color: "#3584e4".into(),
            icon: FALLBACK_ICON.into(),
            primary,
            lock,
            busy: false,
        }
    }

    /// The clickable items as (label, action, profile, enabled).
    fn items(m: &TrayMenu) -> Vec<(String, Option<&'static str>, Option<String>, bool)> {
        m.entries
            .iter()
            .filter_map(|e| match e {
                TrayEntry::Item {
                    label,
                    command,
                    enabled,
                } => Some((
                    label.clone(),
                    command.action,
                    command.profile.as_ref().map(|p| p.as_str().to_owned()),
                    *enabled,
                )),
                _ => None,
            })
            .collect()
    }

    fn headings(m: &TrayMenu) -> Vec<&str> {
        m.entries
            .iter()
            .filter_map(|e| match e {
                TrayEntry::Heading(h) => Some(h.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn each_profile_has_a_heading_with_its_state_and_its_actions() {
        let snap = Snapshot {
            rows: vec![
                row("work", "Running", Some(PrimaryAction::Stop), None),
                row(
                    "home",
                    "Stopped · unlocked",
                    Some(PrimaryAction::Launch),
                    Some(LockAction::Lock),
                ),
                row(
                    "vault",
                    "Locked",
                    Some(PrimaryAction::Launch),
                    Some(LockAction::Unlock),
                ),
            ],
            ..Snapshot::default()
        };
        let m = TrayMenu::from_snapshot(&snap);
        assert_eq!(
            headings(&m),
            [
                "Telegram Desktop (work) — Running",
                "Telegram Desktop (home) — Stopped · unlocked",
                "Telegram Desktop (vault) — Locked",
            ]
        );
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            items(&m),
            [
                ("Stop".into(), Some("stop"), s("work"), true),
                ("Launch".into(), Some("launch"), s("home"), true),
                ("Lock".into(), Some("lock"), s("home"), true),
                ("Launch…".into(), Some("launch"), s("vault"), true),
                ("Unlock…".into(), Some("unlock"), s("vault"), true),
                ("Lock All".into(), Some("lock-all"), None, true),
                ("Open Doppel".into(), None, None, true),
                ("Quit".into(), Some("quit"), None, true),
            ]
        );
        assert_eq!(m.tooltip, "1 profile running");
        // Whatever asks for a passphrase shows the window its dialog sits on.
        let shows: Vec<bool> = m
            .entries
            .iter()
            .filter_map(|e| match e {
                TrayEntry::Item { command, .. } => Some(command.show_window),
                _ => None,
            })
            .collect();
        assert_eq!(shows, [false, false, false, true, true, false, true, false]);
        // Sections are apart: a separator before each heading but the first.
        let first = m
            .entries
            .iter()
            .position(|e| matches!(e, TrayEntry::Heading(h) if h.contains("(home)")))
            .unwrap();
        assert_eq!(m.entries[first - 1], TrayEntry::Separator);
    }

    #[test]
    fn a_busy_profile_offers_nothing_until_done() {
        let mut r = row("work", "Stopped", Some(PrimaryAction::Launch), None);
        r.busy = true;
        let m = TrayMenu::from_snapshot(&Snapshot {
            rows: vec![r],
            ..Snapshot::default()
        });
        assert_eq!(headings(&m), ["Telegram Desktop (work) — Working…"]);
        assert_eq!(
            items(&m)[0],
            ("Launch".into(), Some("launch"), Some("work".into()), false)
        );
    }

    #[test]
    fn lock_all_is_offered_only_when_something_can_be_locked() {
        let m = TrayMenu::from_snapshot(&Snapshot {
            rows: vec![row("work", "Stopped", Some(PrimaryAction::Launch), None)],
            ..Snapshot::default()
        });
        let lock_all = items(&m).into_iter().find(|i| i.0 == "Lock All").unwrap();
        assert!(!lock_all.3);
        assert_eq!(m.tooltip, "No profile running");
    }

    #[test]
    fn problems_and_the_empty_state_are_said_in_the_menu() {
        let empty = TrayMenu::from_snapshot(&Snapshot::default());
        assert_eq!(headings(&empty), ["No profiles yet"]);
        assert_eq!(items(&empty).len(), 3, "Lock All, Open Doppel, Quit");

        let long = "x".repeat(500);
        let err = TrayMenu::from_snapshot(&Snapshot {
            error: Some(long),
            ..Snapshot::default()
        });
        let h = headings(&err)[0];
        assert!(h.starts_with("Cannot read the profiles: "), "{h}");
        assert!(
            h.ends_with('…') && h.chars().count() <= TRAY_HEADING_MAX,
            "{h}"
        );

        let broken = TrayMenu::from_snapshot(&Snapshot {
            broken: vec![
                BrokenRow {
                    message: "a".into(),
                },
                BrokenRow {
                    message: "b".into(),
                },
            ],
            ..Snapshot::default()
        });
        assert_eq!(
            headings(&broken),
            ["2 profiles cannot be read: open Doppel for details"]
        );
    }
}
