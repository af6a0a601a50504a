//! Runs doppel-gen into a temporary directory and checks what it wrote: a page for `doppel` and
//! for each of its subcommands, doppel-gui's and doppel-helper's pages, pages that man/groff
//! render without warnings, and completions that bash, zsh and fish accept.
//!
//! A check that needs a tool that is not installed (man or groff, zsh, fish) is skipped with a
//! printed reason; under `CI=true` it fails instead, because CI must run it (scripts/deps.sh test
//! installs them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;
use doppel_core::cli::Cli;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns false (after printing why) when `tool` is missing; panics in CI.
fn require(tool: &str) -> bool {
    have(tool) || skip(tool)
}

/// Prints why a check is skipped and returns false; panics in CI, which must run every check.
fn skip(tool: &str) -> bool {
    let why = format!("{tool} is not installed (scripts/deps.sh test installs it)");
    if in_ci() {
        panic!("CI must run this check, but {why}");
    }
    // Straight to the process's stderr, past the test harness's capture, so that the skip shows.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
    false
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs doppel-gen into a new temporary directory.
fn generate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_doppel-gen"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "doppel-gen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn all_pages(out: &Path) -> Vec<PathBuf> {
    let mut pages = Vec::new();
    for dir in ["man/man1", "man/man8"] {
        let dir = out.join(dir);
        pages.extend(files_in(&dir).into_iter().map(|f| dir.join(f)));
    }
    pages
}

fn subcommands() -> Vec<String> {
    let subs: Vec<String> = Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_owned())
        .collect();
    assert!(subs.len() > 5, "doppel's subcommands were not found");
    subs
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_subcommand_has_a_page_that_names_itself() {
    let dir = generate();
    let out = dir.path();

    let mut want1: BTreeSet<String> = subcommands()
        .iter()
        .map(|s| format!("doppel-{s}.1"))
        .collect();
    want1.insert("doppel.1".into());
    want1.insert("doppel-gui.1".into());
    assert_eq!(files_in(&out.join("man/man1")), want1);
    assert_eq!(
        files_in(&out.join("man/man8")),
        BTreeSet::from(["doppel-helper.8".to_owned()])
    );

    for page in all_pages(out) {
        let text = read(&page);
        let stem = page.file_stem().unwrap().to_string_lossy().into_owned();
        let section = page.extension().unwrap().to_string_lossy().into_owned();
        // Before .TH only the lines that define how apostrophes print (.ie/.el) may come.
        let first = text
            .lines()
            .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
            .unwrap_or_default();
        let mut th = first.split_whitespace();
        assert_eq!(th.next(), Some(".TH"), "{}: starts with {first:?}", stem);
        assert_eq!(
            th.next().map(|t| t.replace("\\-", "-")),
            Some(stem.clone()),
            "{stem}: .TH names another page: {first:?}"
        );
        assert_eq!(th.next(), Some(section.as_str()), "{stem}: {first:?}");
        assert!(text.contains(".SH NAME"), "{stem} has no NAME section");
        assert!(
            text.contains(".SH \"SEE ALSO\""),
            "{stem} has no SEE ALSO section"
        );
    }

    // SEE ALSO links doppel(1) and its subcommands' pages both ways.
    let main = read(&out.join("man/man1/doppel.1"));
    let see_also = main.split(".SH \"SEE ALSO\"").nth(1).unwrap();
    for sub in subcommands() {
        assert!(
            see_also.contains(&format!("\\fBdoppel\\-{sub}\\fR(1)")),
            "doppel.1's SEE ALSO does not name doppel-{sub}(1)"
        );
        let page = read(&out.join(format!("man/man1/doppel-{sub}.1")));
        let see_also = page.split(".SH \"SEE ALSO\"").nth(1).unwrap();
        assert!(
            see_also.contains("\\fBdoppel\\fR(1)"),
            "doppel-{sub}.1's SEE ALSO does not name doppel(1)"
        );
        // The synopsis is the subcommand's, not the top level's.
        assert!(
            page.contains(&format!("\\fBdoppel {sub}\\fR")),
            "doppel-{sub}.1 has no synopsis of `doppel {sub}`"
        );
    }
}

/// `"--name"` string literals (as the hand-written parsers match them) in a source file.
fn option_literals(source: &str) -> BTreeSet<String> {
    source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("--") && s.len() > 2)
        .map(|s| s.trim_end_matches('=').to_owned())
        .collect()
}

#[test]
fn gui_and_helper_pages_follow_their_hand_written_parsers() {
    let dir = generate();
    let out = dir.path();

    // Every option the programs match on is on their page, and the page lists no other.
    let cases = [
        (
            "man/man1/doppel-gui.1",
            [
                include_str!("../../../gui/src/main.rs"),
                include_str!("../../../gui/src/chooser.rs"),
            ]
            .concat(),
        ),
        (
            "man/man8/doppel-helper.8",
            include_str!("../../../helper/src/main.rs").to_owned(),
        ),
    ];
    for (page, source) in cases {
        let text = read(&out.join(page)).replace("\\-", "-");
        let options = text
            .split(".SH OPTIONS")
            .nth(1)
            .and_then(|s| s.split("\n.SH ").next())
            .unwrap_or_else(|| panic!("{page} has no OPTIONS section"));
        let documented: BTreeSet<String> = options
            .lines()
            .filter_map(|l| l.strip_prefix("\\fB"))
            .flat_map(|l| l.split("\\fR"))
            .flat_map(|s| s.split(", "))
            .map(|s| s.trim_start_matches("\\fB").trim_end_matches('='))
            .filter(|s| s.starts_with("--"))
            .map(str::to_owned)
            .collect();
        let parsed = option_literals(&source);
        assert!(
            !parsed.is_empty(),
            "no options found in the source of {page}"
        );
        assert_eq!(
            documented, parsed,
            "{page}: the page's options differ from what the program parses"
        );
    }

    // The helper's page: every polkit action with the description from the shipped policy, and
    // the configuration's keys.
    let helper = read(&out.join("man/man8/doppel-helper.8")).replace("\\-", "-");
    for (method, action) in doppel_helper::wire::ACTIONS {
        assert!(helper.contains(action), "doppel-helper.8 lacks {action}");
        assert!(
            helper.contains(&format!("(method {method}).")),
            "doppel-helper.8 has no description of {action} from org.doppel.policy"
        );
    }
    for key in ["max_volumes", "max_total_size", "max_volume_size"] {
        assert!(helper.contains(key), "doppel-helper.8 lacks {key}");
    }
    assert!(helper.contains(doppel_helper::wire::BUS_NAME));
    assert!(helper.contains(doppel_helper::wire::CONFIG_FILE));
}

#[test]
fn pages_render_without_warnings() {
    let dir = generate();
    let pages = all_pages(dir.path());
    let (have_groff, have_man) = (have("groff"), have("man"));
    if !have_groff && !have_man && !skip("man or groff") {
        return;
    }
    for page in &pages {
        if have_groff {
            // -k: the pages are UTF-8 (preconv); -ww: every warning; -z: no output.
            let out = Command::new("groff")
                .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
                .arg(page)
                .output()
                .unwrap();
            assert_ok(&format!("groff {}", page.display()), &out);
            assert!(
                out.stderr.is_empty(),
                "groff warns about {}:\n{}",
                page.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if have_man {
            let out = Command::new("man")
                .arg("-l")
                .arg(page)
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "80")
                .output()
                .unwrap();
            assert_ok(&format!("man -l {}", page.display()), &out);
            let text = String::from_utf8_lossy(&out.stdout);
            let stem = page.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                text.contains("NAME") && text.contains(&stem),
                "man -l {} rendered no NAME naming {stem}:\n{text}",
                page.display()
            );
        }
    }
}

#[test]
fn bash_completion_registers_and_completes() {
    if !require("bash") {
        return;
    }
    let dir = generate();
    let file = dir.path().join("completions/doppel.bash");
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            r#"set -e
source "$1"
complete -p doppel
fn=$(complete -p doppel | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
COMP_WORDS=(doppel cr); COMP_CWORD=1; COMP_LINE="doppel cr"; COMP_POINT=${#COMP_LINE}
"$fn" doppel cr doppel
printf 'reply: %s\n' "${COMPREPLY[@]}"
COMP_WORDS=(doppel create --ho); COMP_CWORD=2; COMP_LINE="doppel create --ho"
COMP_POINT=${#COMP_LINE}
"$fn" doppel --ho create
printf 'reply: %s\n' "${COMPREPLY[@]}""#,
        )
        .arg("bash")
        .arg(&file)
        .output()
        .unwrap();
    assert_ok("loading the bash completion", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    let registered = text.lines().next().unwrap_or_default();
    assert!(
        registered.starts_with("complete ")
            && registered.contains(" -F ")
            && registered.ends_with(" doppel"),
        "the bash completion does not register `complete -F ... doppel`: {registered:?}"
    );
    assert!(
        text.lines().any(|l| l == "reply: create"),
        "`doppel cr<TAB>` does not complete to create:\n{text}"
    );
    assert!(
        text.lines().any(|l| l == "reply: --home"),
        "`doppel create --ho<TAB>` does not complete to --home:\n{text}"
    );
}

#[test]
fn zsh_completion_parses() {
    if !require("zsh") {
        return;
    }
    let dir = generate();
    let file = dir.path().join("completions/_doppel");
    assert!(
        read(&file).starts_with("#compdef doppel"),
        "_doppel does not start with #compdef doppel"
    );
    let out = Command::new("zsh").arg("-n").arg(&file).output().unwrap();
    assert_ok("zsh -n _doppel", &out);
}

#[test]
fn fish_completion_parses_and_completes() {
    if !require("fish") {
        return;
    }
    let dir = generate();
    let file = dir.path().join("completions/doppel.fish");
    let out = Command::new("fish")
        .arg("--no-execute")
        .arg(&file)
        .output()
        .unwrap();
    assert_ok("fish --no-execute doppel.fish", &out);
    // Not even a warning.
    assert!(
        out.stderr.is_empty(),
        "fish reports about doppel.fish:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new("fish")
        .arg("--no-config")
        .arg("-c")
        .arg("source $argv[1]; complete -C 'doppel cr'")
        .arg(&file)
        .output()
        .unwrap();
    assert_ok("completing `doppel cr` in fish", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("create")),
        "fish does not complete `doppel cr` to create:\n{text}"
    );
}

#[test]
fn a_failure_names_the_path_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    // A file where a directory must go: fails for root too.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_doppel-gen"))
        .arg(&blocker)
        .output()
        .unwrap();
    assert!(!out.status.success(), "doppel-gen succeeded under a file");
    let err = String::from_utf8_lossy(&out.stderr);
    let want = blocker.join("man/man1");
    assert!(
        err.contains(&format!("cannot create directory {}", want.display())),
        "the error does not name {}: {err}",
        want.display()
    );
}
