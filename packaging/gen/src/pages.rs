//! The man pages. doppel's come from `doppel_core::cli::Cli`: one for `doppel` and one per
//! subcommand (`doppel-run.1`, as git and cargo do), linked both ways by SEE ALSO. doppel-gui and
//! doppel-helper parse their few arguments by hand, so their pages come from small clap commands
//! written here: keep those in step with gui/src/main.rs, gui/src/chooser.rs and
//! helper/src/main.rs.

use std::io;

use clap::{Arg, ArgAction, Command, CommandFactory};
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

use doppel_core::cli::Cli;
use doppel_helper::wire;

/// The polkit actions as shipped: the source of each action's description and defaults.
const POLICY: &str = include_str!("../../polkit/org.doppel.policy");
/// The helper's configuration as shipped: the source of each key's default.
const HELPER_TOML: &str = include_str!("../../helper.toml");

const MANUAL: &str = "Doppel Manual";

/// One man page: clap_mangen's sections of a command, then sections written here.
pub struct Page {
    /// `doppel-run.1`.
    pub file_name: String,
    /// `1` or `8`.
    pub section: &'static str,
    man: Man,
    extra: Roff,
}

impl Page {
    fn new(cmd: Command, section: &'static str, extra: Roff) -> Page {
        let version = doppel_version();
        let man = Man::new(cmd)
            .section(section)
            .date(man_date())
            .source(format!("Doppel {version}"))
            .manual(MANUAL);
        Page {
            file_name: man.get_filename(),
            section,
            man,
            extra,
        }
    }

    /// The page as roff source.
    pub fn render(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.man.render(&mut out)?;
        // Every rendering starts with the same preamble (how to print apostrophes); the page
        // already has it once.
        let preamble = Roff::new().render();
        let extra = self.extra.render();
        out.extend_from_slice(extra.strip_prefix(&preamble).unwrap_or(&extra).as_bytes());
        Ok(out)
    }
}

/// The page's date, `YYYY-MM-DD`: from `SOURCE_DATE_EPOCH` when set, so that a package build
/// is reproducible, else today (UTC).
fn man_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        });
    let (y, m, d) = civil_date(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date `days` after 1970-01-01.
fn civil_date(days: i64) -> (i64, u32, u32) {
    // Count from 0000-03-01, so that the leap day ends each 400-year era's year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // In range by construction (1..=12, 1..=31); the fallbacks are never taken.
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

fn doppel_version() -> String {
    Cli::command()
        .get_version()
        .map_or_else(|| env!("CARGO_PKG_VERSION").to_owned(), str::to_owned)
}

/// Every page, in the order they are written.
pub fn all() -> Vec<Page> {
    // `help` is a subcommand of the parser, not a page.
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    let subs: Vec<Command> = cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();

    let mut pages = vec![Page::new(cli.clone(), "1", doppel_extra(&subs))];
    for sub in subs {
        let extra = subcommand_extra(sub.get_name());
        pages.push(Page::new(sub, "1", extra));
    }
    pages.push(Page::new(gui_command(), "1", gui_extra()));
    pages.push(Page::new(helper_command(), "8", helper_extra()));
    pages
}

fn heading(roff: &mut Roff, title: &str) {
    roff.control("SH", [title]);
}

fn paragraph(roff: &mut Roff, text: &str) {
    roff.control("PP", []);
    roff.text([roman(text)]);
}

/// A tagged paragraph: `term` in bold, `body` indented under it.
fn item(roff: &mut Roff, term: Vec<Inline>, body: &str) {
    roff.control("TP", []);
    roff.text(term);
    roff.text([roman(body)]);
}

/// `name(section), name(section)`, names in bold, as SEE ALSO lists them.
fn see_also(roff: &mut Roff, refs: &[(String, &str)]) {
    heading(roff, "SEE ALSO");
    let mut line = Vec::new();
    for (i, (name, section)) in refs.iter().enumerate() {
        line.push(bold(name.as_str()));
        let sep = if i + 1 < refs.len() { ", " } else { "" };
        line.push(roman(format!("({section}){sep}")));
    }
    roff.text(line);
}

fn doppel_extra(subs: &[Command]) -> Roff {
    let mut r = Roff::new();

    heading(&mut r, "EXIT STATUS");
    item(&mut r, vec![bold("0")], "Success.");
    item(
        &mut r,
        vec![bold("1")],
        "Failure: the reason is printed on standard error after \"doppel: error:\". \
         doppel doctor also exits 1 when a check fails.",
    );
    item(
        &mut r,
        vec![bold("2")],
        "The command line could not be parsed (an unknown subcommand or option, a missing \
         argument).",
    );
    paragraph(
        &mut r,
        "doppel run (without --join) exits with the exit status of the app or command it ran.",
    );

    heading(&mut r, "ENVIRONMENT");
    item(
        &mut r,
        vec![bold("HOME")],
        "Your home directory; doppel refuses to run without it.",
    );
    item(
        &mut r,
        vec![bold("XDG_CONFIG_HOME")],
        "Where profiles and your own recipes are kept (default: ~/.config).",
    );
    item(
        &mut r,
        vec![bold("XDG_DATA_HOME")],
        "Where the profiles' data is kept (default: ~/.local/share).",
    );
    item(
        &mut r,
        vec![bold("XDG_DATA_DIRS")],
        "Where installed apps and recipes are looked up (default: /usr/local/share:/usr/share).",
    );
    item(
        &mut r,
        vec![bold("XDG_RUNTIME_DIR")],
        "Where running profiles are recorded; needed to run, stop or list them.",
    );

    heading(&mut r, "FILES");
    item(
        &mut r,
        vec![italic("$XDG_CONFIG_HOME/doppel/profiles/ID.toml")],
        "A profile's settings.",
    );
    item(
        &mut r,
        vec![italic("$XDG_DATA_HOME/doppel/profiles/ID/")],
        "A profile's data, its home among it.",
    );
    item(
        &mut r,
        vec![italic("$XDG_CONFIG_HOME/doppel/recipes/")],
        "Your own recipes (how to clone an app), which win over installed ones.",
    );
    item(
        &mut r,
        vec![italic("$XDG_DATA_DIRS/doppel/profiles/")],
        "Installed recipes.",
    );
    item(
        &mut r,
        vec![italic(format!("{}/UID/", wire::STATE_DIR))],
        "Encrypted volumes and the changes of copy-on-write homes, kept by doppel-helper(8).",
    );

    let mut refs: Vec<(String, &str)> = subs
        .iter()
        .map(|s| (format!("doppel-{}", s.get_name()), "1"))
        .collect();
    refs.push(("doppel-gui".to_owned(), "1"));
    refs.push(("doppel-helper".to_owned(), "8"));
    see_also(&mut r, &refs);
    r
}

fn subcommand_extra(name: &str) -> Roff {
    let mut refs = vec![("doppel".to_owned(), "1")];
    match name {
        // Encrypted volumes and copy-on-write homes are the helper's work.
        "create" | "lock" | "unlock" | "passwd" | "diff" | "recover" | "delete" => {
            refs.push(("doppel-helper".to_owned(), "8"));
        }
        // With several clones waiting, `open` asks through doppel-gui's chooser.
        "open" => refs.push(("doppel-gui".to_owned(), "1")),
        _ => {}
    }
    let mut r = Roff::new();
    see_also(&mut r, &refs);
    r
}

/// doppel-gui as gui/src/main.rs reads its arguments: `--choose-profile` first selects the
/// chooser (gui/src/chooser.rs); anything else is ignored and the window opens.
fn gui_command() -> Command {
    Command::new("doppel-gui")
        .about("the window of Doppel: second accounts of desktop apps, each in its own sandbox")
        .long_about(
            "doppel-gui is Doppel's window. It lists your profiles (second accounts of desktop \
             apps, each running in its own sandbox) with their state, and lets you create, run, \
             stop, lock, unlock and delete them. It works on the same profiles as doppel(1), \
             through the same library, so the two can be used side by side.\n\
             \n\
             It runs once per session, as the application org.doppel.Doppel: starting it again \
             brings the open window forward. Where the desktop shows StatusNotifierItem tray \
             icons, Doppel also has one, whose menu lists the profiles and their actions; with \
             \"close to tray\" on (kept in $XDG_CONFIG_HOME/doppel/gui.toml), closing the window \
             leaves Doppel in the tray.\n\
             \n\
             doppel-gui reads no option other than --choose-profile, which must come first. Any \
             other argument, GTK's own options included, is ignored and the window opens: it \
             has no --help and no --version.",
        )
        .override_usage(
            "doppel-gui\n\
             doppel-gui --choose-profile URL [ID=LABEL]... [--host=NAME]",
        )
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(
            Arg::new("choose-profile")
                .long("choose-profile")
                .value_name("URL")
                .action(ArgAction::Set)
                .help(
                    "Instead of the window, show a dialog asking which profile should open URL, \
                     print the chosen profile's ID (or host) on standard output and exit. \
                     doppel open runs this when more than one profile is waiting for a sign-in \
                     link.",
                ),
        )
        .arg(
            Arg::new("choices")
                .value_name("ID=LABEL")
                .num_args(0..)
                .requires("choose-profile")
                .help(
                    "With --choose-profile: offer profile ID as a button labelled LABEL. \
                     The first is the default. An argument without \"=\" is ignored.",
                ),
        )
        .arg(
            Arg::new("host")
                .long("host")
                .value_name("NAME")
                .require_equals(true)
                .requires("choose-profile")
                .help(
                    "With --choose-profile: also offer \"Your own NAME\", the app outside \
                     Doppel; choosing it prints host.",
                ),
        )
}

fn gui_extra() -> Roff {
    let mut r = Roff::new();
    heading(&mut r, "EXIT STATUS");
    item(
        &mut r,
        vec![bold("0")],
        "The window was closed normally, or a profile (or host) was chosen in the dialog of \
         --choose-profile.",
    );
    item(
        &mut r,
        vec![bold("1")],
        "The dialog of --choose-profile was cancelled or closed (nothing is printed), \
         --choose-profile had no URL, or HOME is not set.",
    );
    see_also(
        &mut r,
        &[
            ("doppel".to_owned(), "1"),
            ("doppel-open".to_owned(), "1"),
            ("doppel-helper".to_owned(), "8"),
        ],
    );
    r
}

/// doppel-helper as helper/src/main.rs reads its arguments.
fn helper_command() -> Command {
    Command::new("doppel-helper")
        .about("Doppel's privileged helper: encrypted volumes and copy-on-write homes")
        .long_about(format!(
            "doppel-helper is the privileged part of Doppel: the few operations that need root, \
             done for the user who asks and only on that user's own data. It creates, unlocks, \
             locks, grows and deletes the encrypted volumes of Doppel profiles (root-owned, \
             sparse images under {state}/UID/, mounted under {run}/UID/), mounts and unmounts \
             the copy-on-write homes of profiles made with doppel create --home overlay, and \
             cleans up after a crash.\n\
             \n\
             It is a system D-Bus service: it owns the name {bus} and serves the interface \
             {iface} at {path}. It is not meant to be run by hand. The bus starts it on the \
             first call (through doppel-helper.service where systemd manages the bus), and it \
             exits after a time without calls; it refuses to run as anyone but root.\n\
             \n\
             Every method is authorised by polkit, through an action of its own (see POLKIT \
             ACTIONS), with the caller's bus name as subject. The helper takes the caller's uid \
             from the bus's connection credentials and acts only on that uid's volumes; callers \
             send profile ids, never paths. Limits on the number and size of each user's \
             volumes come from {config}.",
            state = wire::STATE_DIR,
            run = wire::RUN_DIR,
            bus = wire::BUS_NAME,
            iface = wire::INTERFACE,
            path = wire::OBJECT_PATH,
            config = wire::CONFIG_FILE,
        ))
        .override_usage("doppel-helper [--address ADDRESS] [--idle-timeout SECONDS]")
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(
            Arg::new("address")
                .long("address")
                .value_name("ADDRESS")
                .help(
                    "Serve on this D-Bus address instead of the system bus (for tests, with a \
                     bus of their own).",
                ),
        )
        .arg(
            Arg::new("idle-timeout")
                .long("idle-timeout")
                .value_name("SECONDS")
                .default_value("60")
                .help("Exit after this many seconds without a call."),
        )
        .arg(
            Arg::new("help")
                .short('h')
                .long("help")
                .action(ArgAction::Help)
                .help("Print a one-line usage and exit."),
        )
}

/// The text between `<tag>` and `</tag>` in `block`, if there.
fn xml_text<'a>(block: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = block.find(&open)? + open.len();
    let len = block[start..].find(&format!("</{tag}>"))?;
    Some(block[start..start + len].trim())
}

/// The `<action>` element of `id` in the shipped policy.
fn policy_action(id: &str) -> Option<&'static str> {
    let start = POLICY.find(&format!("<action id=\"{id}\">"))?;
    let len = POLICY[start..].find("</action>")?;
    Some(&POLICY[start..start + len])
}

fn polkit_default(value: &str) -> String {
    match value {
        "yes" => "allowed".to_owned(),
        "no" => "refused".to_owned(),
        "auth_self" => "the user's own password".to_owned(),
        "auth_admin" => "an administrator's password".to_owned(),
        "auth_self_keep" => "the user's own password, remembered for a while".to_owned(),
        "auth_admin_keep" => "an administrator's password, remembered for a while".to_owned(),
        other => other.to_owned(),
    }
}

/// The defaults of `<key> = <value>` lines in the shipped helper.toml.
fn config_keys() -> Vec<(&'static str, &'static str)> {
    HELPER_TOML
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn config_key_meaning(key: &str) -> &'static str {
    match key {
        "max_volumes" => "How many encrypted volumes one user may have.",
        "max_total_size" => {
            "The most disk one user's volumes may claim together: the sum of their images' \
             sizes (images are sparse, so this bounds what they can grow to)."
        }
        "max_volume_size" => "The largest one volume may be created or grown to.",
        "min_volume_size" => "The smallest volume that may be created.",
        _ => "See the comments in the file.",
    }
}

fn helper_extra() -> Roff {
    let mut r = Roff::new();

    heading(&mut r, "POLKIT ACTIONS");
    paragraph(
        &mut r,
        "One action per D-Bus method; a method without an action is not callable. What \
         each allows by default, as shipped, is given for an active local session, then for an \
         inactive or remote one. Administrators change this with polkit rules (see polkit(8)).",
    );
    for (method, action) in wire::ACTIONS {
        let block = policy_action(action).unwrap_or_default();
        let mut body = format!("Method {method}.");
        if let Some(d) = xml_text(block, "description") {
            body = format!("{d} (method {method}).");
        }
        if let (Some(active), Some(inactive), Some(any)) = (
            xml_text(block, "allow_active"),
            xml_text(block, "allow_inactive"),
            xml_text(block, "allow_any"),
        ) {
            let rest = if inactive == any {
                polkit_default(inactive)
            } else {
                format!(
                    "inactive: {}, remote: {}",
                    polkit_default(inactive),
                    polkit_default(any)
                )
            };
            body.push_str(&format!(
                " Active session: {}; otherwise: {}.",
                polkit_default(active),
                rest
            ));
        }
        item(&mut r, vec![bold(*action)], &body);
    }

    heading(&mut r, "FILES");
    item(
        &mut r,
        vec![italic(wire::CONFIG_FILE)],
        "Per-user limits, read when the helper starts (so a change applies from its next \
         start). A key left out keeps its default; an unknown key or a bad value is an error, \
         and the helper refuses to start until it is fixed. Sizes are a byte count or a string \
         with a binary suffix (\"64M\", \"8G\"). The keys, with their defaults:",
    );
    r.control("RS", []);
    for (key, default) in config_keys() {
        item(
            &mut r,
            vec![bold(key), roman(format!(" = {default}"))],
            config_key_meaning(key),
        );
    }
    r.control("RE", []);
    item(
        &mut r,
        vec![italic(
            "/usr/share/dbus-1/system-services/org.doppel.Helper1.service",
        )],
        "D-Bus activation: how the bus starts the helper.",
    );
    item(
        &mut r,
        vec![italic("/usr/share/dbus-1/system.d/org.doppel.Helper1.conf")],
        "The bus policy: only root may own the name; anyone may call, and polkit decides.",
    );
    item(
        &mut r,
        vec![italic("/usr/share/polkit-1/actions/org.doppel.policy")],
        "The polkit actions above.",
    );
    item(
        &mut r,
        vec![italic(format!("{}/UID/ID.img", wire::STATE_DIR))],
        "A profile's encrypted volume: a root-owned, sparse image.",
    );
    item(
        &mut r,
        vec![italic(format!("{}/UID/ID/", wire::RUN_DIR))],
        "Where an unlocked volume is mounted (nosuid, nodev).",
    );

    heading(&mut r, "EXIT STATUS");
    item(
        &mut r,
        vec![bold("0")],
        "It was idle for the timeout and exited, or it printed its usage.",
    );
    item(
        &mut r,
        vec![bold("1")],
        "It is not running as root, its configuration is wrong, or it cannot own its bus \
         name; the reason is printed on standard error.",
    );
    item(
        &mut r,
        vec![bold("2")],
        "An unknown argument, or --idle-timeout without a number of seconds.",
    );

    see_also(
        &mut r,
        &[
            ("doppel".to_owned(), "1"),
            ("doppel-gui".to_owned(), "1"),
            ("polkit".to_owned(), "8"),
            ("dbus-daemon".to_owned(), "1"),
        ],
    );
    r
}

#[cfg(test)]
mod tests {
    use super::civil_date;

    #[test]
    fn civil_date_matches_the_calendar() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(11_017), (2000, 3, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        assert_eq!(civil_date(20_454), (2026, 1, 1));
    }
}
