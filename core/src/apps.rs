//! Installed applications: XDG `.desktop` entries (freedesktop.org Desktop Entry Specification)
//! and `$PATH` lookup.

use std::collections::{HashMap, HashSet};
use std::env;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::AccessFlags;

use crate::dirs::Dirs;

/// The search path used when `$PATH` is unset, matching what a login shell would get.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Where system-wide Flatpak installs export their desktop files.
const SYSTEM_FLATPAK_APPS: &str = "/var/lib/flatpak/exports/share/applications";

/// The field codes the specification defines; any other `%x` makes the Exec line invalid.
const FIELD_CODES: &str = "fFuUdDnNvmick";

/// The only group of a desktop file that describes the application itself.
const MAIN_GROUP: &str = "Desktop Entry";

/// Why a desktop file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    #[error("could not read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{}: not UTF-8 text, which the Desktop Entry Specification requires",
        .path.display()
    )]
    NotUtf8 { path: PathBuf },
    #[error("{}: has no [Desktop Entry] group, so it is not a desktop entry file", .path.display())]
    NoMainGroup { path: PathBuf },
    #[error(
        "{}, line {line}: expected `Key=Value`, a `[Group]` header or a `#` comment",
        .path.display()
    )]
    BadLine { path: PathBuf, line: usize },
    #[error("{}: the required key {key} is missing", .path.display())]
    MissingKey { path: PathBuf, key: &'static str },
    #[error("{}: {key} must be `true` or `false`, not {value:?}", .path.display())]
    BadBoolean {
        path: PathBuf,
        key: &'static str,
        value: String,
    },
    #[error(
        "{}: has no Exec key, so there is no command to run (an app started only through \
         D-Bus activation cannot be cloned)",
        .path.display()
    )]
    NoExec { path: PathBuf },
    #[error("{}: Exec has an unterminated quote", .path.display())]
    UnterminatedQuote { path: PathBuf },
    #[error(
        "{}: Exec ends with a lone `%`; write `%%` for a literal percent sign",
        .path.display()
    )]
    TrailingPercent { path: PathBuf },
    #[error(
        "{}: Exec uses `%{code}`, which is not a field code of the Desktop Entry Specification; \
         write `%%` for a literal percent sign",
        .path.display()
    )]
    UnknownFieldCode { path: PathBuf, code: char },
    #[error(
        "{}: Exec uses `%i` inside a larger argument; the specification requires it to stand alone",
        .path.display()
    )]
    EmbeddedIconCode { path: PathBuf },
    #[error("{}: Exec is empty once field codes are removed, so there is no command to run", .path.display())]
    EmptyExec { path: PathBuf },
    #[error("{}: Exec uses `%k`, but the file's own path is not UTF-8", .path.display())]
    NonUtf8Path { path: PathBuf },
}

/// One application described by a desktop file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesktopEntry {
    /// Desktop-file id without `.desktop`: the path below `applications/` with `/` turned into `-`.
    pub id: String,
    /// The file this entry was read from.
    pub path: PathBuf,
    /// `Name`, untranslated.
    pub name: String,
    /// The command line from `Exec`, split into arguments, with field codes expanded for a
    /// launch without files or URLs.
    pub exec: Vec<String>,
    /// `TryExec`: a program that must exist for the entry to count as installed.
    pub try_exec: Option<String>,
    /// `Icon`: an icon name or an absolute path.
    pub icon: Option<String>,
    /// `NoDisplay`: the desktop hides the entry from menus; callers decide what to do with it.
    pub no_display: bool,
    /// `Terminal`: the program expects to run in a terminal.
    pub terminal: bool,
    /// `StartupWMClass`: the window class the app's windows carry.
    pub startup_wm_class: Option<String>,
    /// `Categories`, as written (`Network;InstantMessaging;`).
    pub categories: Option<String>,
    /// `MimeType`: the types (and `x-scheme-handler/<scheme>` URL schemes) it opens.
    pub mime_types: Vec<String>,
    /// `X-Flatpak`: the Flatpak application id, for entries exported by Flatpak.
    pub flatpak: Option<String>,
}

/// The outcome of a scan: usable entries, plus the files that were left out and why.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Applications, one per desktop-file id, sorted by name (case-insensitive).
    pub entries: Vec<DesktopEntry>,
    /// Files (or directories) that could not be used, with a reason a person can read.
    pub skipped: Vec<(PathBuf, String)>,
}

/// The `applications` directories to scan, highest precedence first.
pub fn search_dirs(dirs: &Dirs) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    push(dirs.data_home.join("applications"));
    for d in &dirs.data_dirs {
        push(d.join("applications"));
    }
    // Flatpak normally adds these to XDG_DATA_DIRS itself, but sessions that were not started
    // through its profile script miss them, and Flatpak apps would then be invisible.
    push(dirs.data_home.join("flatpak/exports/share/applications"));
    push(PathBuf::from(SYSTEM_FLATPAK_APPS));
    out
}

/// Every application in the search directories, the first directory winning for each id.
pub fn discover(dirs: &Dirs) -> Discovery {
    discover_in(&search_dirs(dirs))
}

fn discover_in(search: &[PathBuf]) -> Discovery {
    let mut found = Discovery::default();
    let mut claimed: HashSet<String> = HashSet::new();
    for dir in search {
        let (files, mut skipped) = walk_root(dir);
        found.skipped.append(&mut skipped);
        for (id, path) in files {
            // A hidden or broken file still claims its id: it is what the desktop itself reads,
            // so falling back to a lower directory would resurrect an app the user removed.
            if !claimed.insert(id.clone()) {
                continue;
            }
            match load(&id, &path) {
                Ok(Some(entry)) => found.entries.push(entry),
                Ok(None) => {}
                Err(e) => found.skipped.push((path, e.to_string())),
            }
        }
    }
    found
        .entries
        .sort_by_cached_key(|e| (e.name.to_lowercase(), e.id.clone()));
    found
}

/// The application with desktop-file id `id` (with or without `.desktop`), if it is usable.
pub fn find(dirs: &Dirs, id: &str) -> Option<DesktopEntry> {
    find_in(&search_dirs(dirs), id)
}

fn find_in(search: &[PathBuf], id: &str) -> Option<DesktopEntry> {
    // An id may itself end in ".desktop" (org.telegram.desktop), so the name as given is tried
    // before the name without that suffix.
    let mut candidates = vec![id];
    if let Some(stripped) = id.strip_suffix(".desktop") {
        candidates.push(stripped);
    }
    for id in candidates {
        for dir in search {
            let (files, _) = walk_root(dir);
            if let Some((_, path)) = files.into_iter().find(|(i, _)| i == id) {
                return load(id, &path).ok().flatten();
            }
        }
    }
    None
}

fn load(id: &str, path: &Path) -> Result<Option<DesktopEntry>, AppsError> {
    let bytes = fs::read(path).map_err(|source| AppsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| AppsError::NotUtf8 {
        path: path.to_owned(),
    })?;
    parse_desktop_entry(id, path, &text)
}

type Walked = (Vec<(String, PathBuf)>, Vec<(PathBuf, String)>);

/// Desktop files below `root` as `(id, path)`, in a stable order, plus what could not be read.
fn walk_root(root: &Path) -> Walked {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    match fs::read_dir(root) {
        // Most of the search directories do not exist on any given system.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        _ => walk(root, "", &mut HashSet::new(), &mut files, &mut skipped),
    }
    (files, skipped)
}

fn walk(
    dir: &Path,
    prefix: &str,
    visited: &mut HashSet<(u64, u64)>,
    files: &mut Vec<(String, PathBuf)>,
    skipped: &mut Vec<(PathBuf, String)>,
) {
    // Symlinked directories are followed (distributions use them), so guard against loops.
    if let Ok(meta) = fs::metadata(dir) {
        if !visited.insert((meta.dev(), meta.ino())) {
            return;
        }
    }
    let listing = match fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) => {
            skipped.push((dir.to_owned(), format!("could not list the directory: {e}")));
            return;
        }
    };
    let mut children: Vec<(std::ffi::OsString, PathBuf)> = Vec::new();
    for child in listing {
        match child {
            Ok(c) => children.push((c.file_name(), c.path())),
            Err(e) => {
                skipped.push((dir.to_owned(), format!("could not list the directory: {e}")));
                return;
            }
        }
    }
    // read_dir order is arbitrary; sorting keeps "first wins" deterministic within a directory.
    children.sort();
    for (name, path) in children {
        let looks_relevant = |name: &OsStr| name.to_string_lossy().ends_with(".desktop");
        // Follow symlinks: Flatpak's exports are symlinks into the app's deployment.
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                if looks_relevant(&name) {
                    skipped.push((path, format!("could not read: {e}")));
                }
                continue;
            }
        };
        let Some(name_str) = name.to_str() else {
            if meta.is_dir() || looks_relevant(&name) {
                skipped.push((
                    path,
                    "the name is not UTF-8, so it cannot form a desktop-file id".to_owned(),
                ));
            }
            continue;
        };
        if meta.is_dir() {
            let sub_prefix = format!("{prefix}{name_str}-");
            walk(&path, &sub_prefix, visited, files, skipped);
        } else if meta.is_file() {
            if let Some(stem) = name_str.strip_suffix(".desktop") {
                if !stem.is_empty() {
                    files.push((format!("{prefix}{stem}"), path));
                }
            }
        }
    }
}

/// Parses the text of a desktop file; `None` for entries that are hidden or not applications.
pub fn parse_desktop_entry(
    id: &str,
    path: &Path,
    text: &str,
) -> Result<Option<DesktopEntry>, AppsError> {
    let keys = main_group(path, text)?;
    let string = |key: &str| keys.get(key).map(|v| unescape(v));
    let boolean = |key: &'static str| -> Result<bool, AppsError> {
        match keys.get(key).copied() {
            None => Ok(false),
            // 0 and 1 come from pre-1.0 versions of the specification and are still around.
            Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(other) => Err(AppsError::BadBoolean {
                path: path.to_owned(),
                key,
                value: other.to_owned(),
            }),
        }
    };

    // Hidden means "deleted"; it wins over everything else, whatever the Type.
    if boolean("Hidden")? {
        return Ok(None);
    }
    let ty = string("Type").ok_or_else(|| AppsError::MissingKey {
        path: path.to_owned(),
        key: "Type",
    })?;
    if ty != "Application" {
        return Ok(None);
    }
    let name = string("Name").ok_or_else(|| AppsError::MissingKey {
        path: path.to_owned(),
        key: "Name",
    })?;
    let icon = string("Icon").filter(|s| !s.is_empty());
    let raw_exec = string("Exec").ok_or_else(|| AppsError::NoExec {
        path: path.to_owned(),
    })?;
    let exec = parse_exec(path, &raw_exec, &name, icon.as_deref())?;

    Ok(Some(DesktopEntry {
        id: id.to_owned(),
        path: path.to_owned(),
        name,
        exec,
        try_exec: string("TryExec").filter(|s| !s.is_empty()),
        icon,
        no_display: boolean("NoDisplay")?,
        terminal: boolean("Terminal")?,
        startup_wm_class: string("StartupWMClass").filter(|s| !s.is_empty()),
        categories: string("Categories").filter(|s| !s.is_empty()),
        mime_types: string("MimeType")
            .map(|m| {
                m.split(';')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        flatpak: string("X-Flatpak").filter(|s| !s.is_empty()),
    }))
}

/// The untranslated keys of the `[Desktop Entry]` group, values still escaped.
fn main_group<'a>(path: &Path, text: &'a str) -> Result<HashMap<&'a str, &'a str>, AppsError> {
    let mut keys = HashMap::new();
    let mut in_main = false;
    let mut seen_main = false;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            match line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                Some(group) => {
                    in_main = group == MAIN_GROUP;
                    seen_main |= in_main;
                }
                // Other groups (actions, vendor extensions) are not ours to judge.
                None if in_main => {
                    return Err(AppsError::BadLine {
                        path: path.to_owned(),
                        line: index + 1,
                    })
                }
                None => {}
            }
            continue;
        }
        if !in_main {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(AppsError::BadLine {
                path: path.to_owned(),
                line: index + 1,
            });
        };
        let key = key.trim_end();
        // Localized variants (Name[de]); Doppel shows the untranslated name.
        if key.contains('[') {
            continue;
        }
        // A repeated key replaces the earlier one, as GLib does, so Doppel sees what the
        // desktop's own launcher sees.
        keys.insert(key, value.trim_start());
    }
    if seen_main {
        Ok(keys)
    } else {
        Err(AppsError::NoMainGroup {
            path: path.to_owned(),
        })
    }
}

/// Undoes the string-level escapes of the specification (`\s \n \t \r \\`).
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            // Anything else belongs to a later layer (e.g. Exec's quoting), so keep it intact.
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A piece of one Exec argument: literal text, or a field code to expand later.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Code(char),
}

/// Splits an (already string-unescaped) Exec value into arguments made of pieces.
fn split_exec(path: &Path, exec: &str) -> Result<Vec<Vec<Piece>>, AppsError> {
    let mut args: Vec<Vec<Piece>> = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut text = String::new();
    // Tracks `""`, which is a real (empty) argument even though it adds no text.
    let mut in_arg = false;
    let mut quoted = false;
    let mut chars = exec.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_arg = true;
            }
            '\\' if quoted => match chars.peek() {
                Some(&n @ ('"' | '`' | '$' | '\\')) => {
                    text.push(n);
                    chars.next();
                }
                Some(_) => text.push('\\'),
                None => {
                    return Err(AppsError::UnterminatedQuote {
                        path: path.to_owned(),
                    })
                }
            },
            ' ' | '\t' | '\n' | '\r' if !quoted => {
                if in_arg {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    args.push(std::mem::take(&mut pieces));
                    in_arg = false;
                }
            }
            '%' => {
                in_arg = true;
                match chars.next() {
                    Some('%') => text.push('%'),
                    Some(code) if FIELD_CODES.contains(code) => {
                        if !text.is_empty() {
                            pieces.push(Piece::Text(std::mem::take(&mut text)));
                        }
                        pieces.push(Piece::Code(code));
                    }
                    Some(code) => {
                        return Err(AppsError::UnknownFieldCode {
                            path: path.to_owned(),
                            code,
                        })
                    }
                    None => {
                        return Err(AppsError::TrailingPercent {
                            path: path.to_owned(),
                        })
                    }
                }
            }
            other => {
                in_arg = true;
                text.push(other);
            }
        }
    }
    if quoted {
        return Err(AppsError::UnterminatedQuote {
            path: path.to_owned(),
        });
    }
    if in_arg {
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        args.push(pieces);
    }
    Ok(args)
}

/// Turns an Exec value into argv for a launch with no files or URLs.
fn parse_exec(
    path: &Path,
    exec: &str,
    name: &str,
    icon: Option<&str>,
) -> Result<Vec<String>, AppsError> {
    let own_path = || {
        path.to_str()
            .map(str::to_owned)
            .ok_or_else(|| AppsError::NonUtf8Path {
                path: path.to_owned(),
            })
    };
    let mut argv = Vec::new();
    for pieces in split_exec(path, exec)? {
        match pieces.as_slice() {
            [Piece::Code(code)] => match code {
                'i' => {
                    if let Some(icon) = icon {
                        argv.push("--icon".to_owned());
                        argv.push(icon.to_owned());
                    }
                }
                'c' => argv.push(name.to_owned()),
                'k' => argv.push(own_path()?),
                // File and URL lists (and the deprecated codes) expand to nothing: a clone is
                // launched without documents, and an empty argument would confuse the app.
                _ => {}
            },
            _ => {
                let mut arg = String::new();
                for piece in &pieces {
                    match piece {
                        Piece::Text(t) => arg.push_str(t),
                        Piece::Code('i') => {
                            return Err(AppsError::EmbeddedIconCode {
                                path: path.to_owned(),
                            })
                        }
                        Piece::Code('c') => arg.push_str(name),
                        Piece::Code('k') => arg.push_str(&own_path()?),
                        Piece::Code(_) => {}
                    }
                }
                argv.push(arg);
            }
        }
    }
    if argv.first().map_or(true, |a| a.is_empty()) {
        return Err(AppsError::EmptyExec {
            path: path.to_owned(),
        });
    }
    Ok(argv)
}

/// Resolves `cmd` like a shell would, using `$PATH` (or a default when it is unset).
pub fn which(cmd: &str) -> Option<PathBuf> {
    match env::var_os("PATH") {
        Some(path_var) => which_in_os(cmd, &path_var),
        None => which_in_os(cmd, OsStr::new(DEFAULT_PATH)),
    }
}

/// Resolves `cmd` against the colon-separated directory list `path_var`.
pub fn which_in(cmd: &str, path_var: &str) -> Option<PathBuf> {
    which_in_os(cmd, OsStr::new(path_var))
}

fn which_in_os(cmd: &str, path_var: &OsStr) -> Option<PathBuf> {
    if cmd.is_empty() {
        return None;
    }
    if cmd.contains('/') {
        let p = PathBuf::from(cmd);
        return is_executable_file(&p).then_some(p);
    }
    env::split_paths(path_var)
        // Empty or relative entries would resolve against whatever the current directory
        // happens to be, which is how a planted binary gets run; skip them.
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(cmd))
        .find(|p| is_executable_file(p))
}

fn is_executable_file(p: &Path) -> bool {
    // access(2) rather than mode bits: it answers for this user (owner, group, ACLs, noexec).
    fs::metadata(p).map(|m| m.is_file()).unwrap_or(false)
        && nix::unistd::access(p, AccessFlags::X_OK).is_ok()
}

/// Whether the entry's programs exist: `TryExec` (if set) and the command of `Exec`.
pub fn is_installed(entry: &DesktopEntry) -> bool {
    if let Some(try_exec) = &entry.try_exec {
        if which(try_exec).is_none() {
            return false;
        }
    }
    entry.exec.first().is_some_and(|cmd| which(cmd).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn parse(text: &str) -> Result<Option<DesktopEntry>, AppsError> {
        parse_desktop_entry("app", Path::new("/apps/app.desktop"), text)
    }

    fn app(exec_line: &str) -> String {
        format!("[Desktop Entry]\nType=Application\nName=My App\nIcon=appicon\n{exec_line}\n")
    }

    fn exec_of(exec_line: &str) -> Vec<String> {
        parse(&app(exec_line)).unwrap().unwrap().exec
    }

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    fn entry_text(name: &str, exec: &str) -> String {
        format!("[Desktop Entry]\nType=Application\nName={name}\nExec={exec}\n")
    }

    fn ids(d: &Discovery) -> Vec<&str> {
        d.entries.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn exec_splits_on_spaces() {
        assert_eq!(exec_of("Exec=app  --a   -b"), ["app", "--a", "-b"]);
    }

    #[test]
    fn exec_quoting_and_escapes() {
        let got = exec_of(
            r#"Exec="/opt/My App/app" "say \"hi\"" "cost \$5" "back\\\\slash" "\`x\`" "" "keep \q""#,
        );
        assert_eq!(
            got,
            [
                "/opt/My App/app",
                "say \"hi\"",
                "cost $5",
                "back\\slash",
                "`x`",
                "",
                "keep \\q"
            ]
        );
    }

    #[test]
    fn exec_quote_joins_adjacent_text() {
        assert_eq!(exec_of(r#"Exec=app --name="a b"c"#), ["app", "--name=a bc"]);
    }

    #[test]
    fn string_escapes_apply_before_quoting() {
        // \s becomes a space first, which then separates arguments unless quoted.
        assert_eq!(exec_of(r"Exec=app\sone\ttwo"), ["app", "one", "two"]);
        assert_eq!(exec_of(r#"Exec=app "one\stwo""#), ["app", "one two"]);
        let e = parse(&format!(
            "{}Comment=x\n",
            app(r"Exec=app").replace("My App", r"My\sApp\\")
        ))
        .unwrap()
        .unwrap();
        assert_eq!(e.name, "My App\\");
    }

    #[test]
    fn field_codes_expand() {
        let got = exec_of("Exec=app %U --x %f %F %u %d %D %n %N %v %m %i %c %k 100%% --name=%c");
        assert_eq!(
            got,
            [
                "app",
                "--x",
                "--icon",
                "appicon",
                "My App",
                "/apps/app.desktop",
                "100%",
                "--name=My App"
            ]
        );
        assert_eq!(exec_of("Exec=app --file=%f"), ["app", "--file="]);
    }

    #[test]
    fn icon_code_without_icon_is_dropped() {
        let text = "[Desktop Entry]\nType=Application\nName=N\nExec=app %i --x\n";
        assert_eq!(parse(text).unwrap().unwrap().exec, ["app", "--x"]);
    }

    #[test]
    fn malformed_exec_is_rejected() {
        let e = parse(&app(r#"Exec=app "unclosed"#)).unwrap_err();
        assert!(matches!(e, AppsError::UnterminatedQuote { .. }));
        assert!(e.to_string().contains("Exec has an unterminated quote"));
        let e = parse(&app(r#"Exec=app "ends\"#)).unwrap_err();
        assert!(matches!(e, AppsError::UnterminatedQuote { .. }));
        assert!(matches!(
            parse(&app("Exec=app %x")).unwrap_err(),
            AppsError::UnknownFieldCode { code: 'x', .. }
        ));
        assert!(matches!(
            parse(&app("Exec=app 100%")).unwrap_err(),
            AppsError::TrailingPercent { .. }
        ));
        assert!(matches!(
            parse(&app("Exec=app --icon=%i")).unwrap_err(),
            AppsError::EmbeddedIconCode { .. }
        ));
        assert!(matches!(
            parse(&app("Exec=%U")).unwrap_err(),
            AppsError::EmptyExec { .. }
        ));
    }

    #[test]
    fn only_main_group_and_untranslated_keys() {
        let text = "\
# a comment
[Desktop Entry]
Type=Application
Name=Real
Name[de]=Echt

# another comment
Exec = real --flag
Icon=real-icon
TryExec=real
StartupWMClass=RealWM
X-Flatpak=org.example.Real
Terminal=true

[Desktop Action new-window]
Name=Wrong
Exec=wrong
this line is not ours to judge
";
        let e = parse(text).unwrap().unwrap();
        assert_eq!(e.id, "app");
        assert_eq!(e.name, "Real");
        assert_eq!(e.exec, ["real", "--flag"]);
        assert_eq!(e.icon.as_deref(), Some("real-icon"));
        assert_eq!(e.try_exec.as_deref(), Some("real"));
        assert_eq!(e.startup_wm_class.as_deref(), Some("RealWM"));
        assert_eq!(e.flatpak.as_deref(), Some("org.example.Real"));
        assert!(e.terminal);
        assert!(!e.no_display);
    }

    #[test]
    fn hidden_and_non_applications_are_none() {
        let hidden = "[Desktop Entry]\nType=Application\nName=N\nExec=a\nHidden=true\n";
        assert!(parse(hidden).unwrap().is_none());
        let link = "[Desktop Entry]\nType=Link\nName=N\nURL=https://example.org\n";
        assert!(parse(link).unwrap().is_none());
        let nodisplay = "[Desktop Entry]\nType=Application\nName=N\nExec=a\nNoDisplay=true\n";
        assert!(parse(nodisplay).unwrap().unwrap().no_display);
    }

    #[test]
    fn missing_or_bad_keys_are_errors() {
        let no_group = "[Something]\nType=Application\nName=N\nExec=a\n";
        assert!(matches!(
            parse(no_group).unwrap_err(),
            AppsError::NoMainGroup { .. }
        ));
        assert!(matches!(
            parse("[Desktop Entry]\nType=Application\nExec=a\n").unwrap_err(),
            AppsError::MissingKey { key: "Name", .. }
        ));
        assert!(matches!(
            parse("[Desktop Entry]\nName=N\nExec=a\n").unwrap_err(),
            AppsError::MissingKey { key: "Type", .. }
        ));
        assert!(matches!(
            parse("[Desktop Entry]\nType=Application\nName=N\n").unwrap_err(),
            AppsError::NoExec { .. }
        ));
        assert!(matches!(
            parse("[Desktop Entry]\nType=Application\nName=N\nExec=a\nTerminal=yes\n").unwrap_err(),
            AppsError::BadBoolean {
                key: "Terminal",
                ..
            }
        ));
        assert!(matches!(
            parse("[Desktop Entry]\nType=Application\nName=N\ngarbage\nExec=a\n").unwrap_err(),
            AppsError::BadLine { line: 4, .. }
        ));
    }

    #[test]
    fn earlier_directory_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let high = tmp.path().join("high");
        let low = tmp.path().join("low");
        write(
            &high,
            "shared.desktop",
            &entry_text("From High", "high-bin"),
        );
        write(&low, "shared.desktop", &entry_text("From Low", "low-bin"));
        write(&low, "only-low.desktop", &entry_text("alpha", "alpha-bin"));
        write(&high, "zeta.desktop", &entry_text("Zeta", "zeta-bin"));
        write(&low, "README", "not a desktop file");

        let d = discover_in(&[high.clone(), low.clone(), tmp.path().join("missing")]);
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        // Sorted by name, case-insensitively: "alpha" < "From High" < "Zeta".
        assert_eq!(ids(&d), ["only-low", "shared", "zeta"]);
        let shared = &d.entries[1];
        assert_eq!(shared.name, "From High");
        assert_eq!(shared.exec, ["high-bin"]);
        assert_eq!(shared.path, high.join("shared.desktop"));

        // The other order gives the other file.
        let d = discover_in(&[low, high]);
        assert_eq!(d.entries[1].name, "From Low");
    }

    #[test]
    fn hidden_in_earlier_directory_masks_later_one() {
        let tmp = tempfile::tempdir().unwrap();
        let high = tmp.path().join("high");
        let low = tmp.path().join("low");
        write(
            &high,
            "gone.desktop",
            "[Desktop Entry]\nType=Application\nName=Gone\nExec=g\nHidden=true\n",
        );
        write(&low, "gone.desktop", &entry_text("Gone", "g"));
        let d = discover_in(&[high.clone(), low.clone()]);
        assert!(d.entries.is_empty());
        assert!(find_in(&[high, low], "gone").is_none());
    }

    #[test]
    fn subdirectories_form_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let apps = tmp.path().join("applications");
        write(
            &apps,
            "kde/konsole.desktop",
            &entry_text("Konsole", "konsole"),
        );
        write(&apps, "a/b/deep.desktop", &entry_text("Deep", "deep"));
        let d = discover_in(std::slice::from_ref(&apps));
        assert_eq!(ids(&d), ["a-b-deep", "kde-konsole"]);
        assert_eq!(d.entries[1].path, apps.join("kde/konsole.desktop"));
        assert_eq!(
            find_in(&[apps], "kde-konsole.desktop").unwrap().name,
            "Konsole"
        );
    }

    #[test]
    fn malformed_and_non_applications_are_reported_or_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let apps = tmp.path().join("applications");
        let bad = write(&apps, "bad.desktop", &entry_text("Bad", "bad \"open"));
        write(
            &apps,
            "link.desktop",
            "[Desktop Entry]\nType=Link\nName=L\nURL=x\n",
        );
        write(&apps, "good.desktop", &entry_text("Good", "good"));
        let bin = write(&apps, "binary.desktop", "");
        fs::write(&bin, [0xff, 0xfe, 0x00]).unwrap();
        let d = discover_in(&[apps]);
        assert_eq!(ids(&d), ["good"]);
        assert_eq!(d.skipped.len(), 2, "{:?}", d.skipped);
        let (path, reason) = d.skipped.iter().find(|(p, _)| *p == bad).unwrap();
        assert_eq!(path, &bad);
        assert!(reason.contains("unterminated quote"), "{reason}");
        assert!(d.skipped.iter().any(|(_, r)| r.contains("not UTF-8")));
    }

    #[test]
    fn find_with_and_without_suffix() {
        let tmp = tempfile::tempdir().unwrap();
        let high = tmp.path().join("high");
        let low = tmp.path().join("low");
        write(&high, "org.example.App.desktop", &entry_text("High", "h"));
        write(&low, "org.example.App.desktop", &entry_text("Low", "l"));
        write(&low, "other.desktop", &entry_text("Other", "o"));
        let search = [high, low];
        assert_eq!(find_in(&search, "org.example.App").unwrap().name, "High");
        let e = find_in(&search, "org.example.App.desktop").unwrap();
        assert_eq!(e.name, "High");
        assert_eq!(e.id, "org.example.App");
        assert_eq!(find_in(&search, "other.desktop").unwrap().name, "Other");
        assert!(find_in(&search, "missing").is_none());
    }

    #[test]
    fn search_dirs_order_and_flatpak() {
        let dirs = Dirs {
            home: "/h".into(),
            config_home: "/h/.config".into(),
            data_home: "/h/.local/share".into(),
            data_dirs: vec![
                "/h/.local/share/flatpak/exports/share".into(),
                "/usr/share".into(),
            ],
            runtime_dir: None,
        };
        let got = search_dirs(&dirs);
        let want: Vec<PathBuf> = [
            "/h/.local/share/applications",
            "/h/.local/share/flatpak/exports/share/applications",
            "/usr/share/applications",
            SYSTEM_FLATPAK_APPS,
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn discover_and_find_use_data_home_first() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            home: tmp.path().to_owned(),
            config_home: tmp.path().join("config"),
            data_home: tmp.path().join("data"),
            data_dirs: vec![tmp.path().join("sys")],
            runtime_dir: None,
        };
        let id = "doppel-test-unique-app";
        write(
            &dirs.data_home,
            &format!("applications/{id}.desktop"),
            &entry_text("Mine", "mine"),
        );
        write(
            &dirs.data_dirs[0],
            &format!("applications/{id}.desktop"),
            &entry_text("System", "sys"),
        );
        let d = discover(&dirs);
        let found: Vec<_> = d.entries.iter().filter(|e| e.id == id).collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "Mine");
        assert_eq!(find(&dirs, id).unwrap().name, "Mine");
    }

    #[test]
    fn which_in_needs_executable_regular_file() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        let exe = write(&b, "tool", "#!/bin/sh\n");
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let plain = write(&a, "tool", "not executable");
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
        fs::create_dir_all(a.join("dir-tool")).unwrap();
        fs::set_permissions(a.join("dir-tool"), fs::Permissions::from_mode(0o755)).unwrap();

        let path_var = format!("{}:{}", a.display(), b.display());
        // The non-executable file comes first in PATH and must be passed over.
        assert_eq!(which_in("tool", &path_var), Some(exe.clone()));
        assert_eq!(which_in("tool", &a.display().to_string()), None);
        assert_eq!(which_in("dir-tool", &path_var), None);
        assert_eq!(which_in("missing", &path_var), None);
        assert_eq!(which_in("", &path_var), None);
        // Relative entries are never searched.
        assert_eq!(which_in("tool", "relative/dir:"), None);
        // A command with a slash is checked as given, ignoring PATH.
        assert_eq!(which_in(&exe.display().to_string(), ""), Some(exe.clone()));
        assert_eq!(which_in(&plain.display().to_string(), &path_var), None);
    }

    #[test]
    fn is_installed_checks_try_exec_and_exec() {
        let tmp = tempfile::tempdir().unwrap();
        let exe = write(tmp.path(), "bin/app", "#!/bin/sh\n");
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let exe_s = exe.display().to_string();
        let missing = tmp.path().join("bin/missing").display().to_string();
        let mut e = parse(&app(&format!("Exec={exe_s} --x"))).unwrap().unwrap();
        assert!(is_installed(&e));
        e.try_exec = Some(missing.clone());
        assert!(!is_installed(&e));
        e.try_exec = Some(exe_s);
        assert!(is_installed(&e));
        e.exec = vec![missing];
        assert!(!is_installed(&e));
    }
}
