//! A profile's launcher: `org.doppel.Doppel.<id>.desktop` in the user's applications directory
//! ("Telegram Desktop (Work)", `Exec=doppel run <id> %U`) with an icon of its own, the app's
//! icon with a dot in the profile's colour, drawn to PNG in the user's icon theme directory.
//! Written when a profile is created, rewritten when it is renamed or recoloured, removed with
//! it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use resvg::tiny_skia::{self, FillRule, Paint, PathBuilder, Pixmap, Transform};

use crate::apps::{self, DesktopEntry};
use crate::atomic;
use crate::dirs::Dirs;
use crate::id::ProfileId;
use crate::profile::Profile;

/// Size of the drawn icon; themes scale it for smaller uses.
pub const ICON_SIZE: u32 = 256;

/// Why a launcher could not be written or removed.
#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error("cannot {what} {path}: {source}; check that the directory is writable")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot draw the launcher icon: {0}")]
    Icon(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LauncherError + 'a {
    move |source| LauncherError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The desktop-entry id of profile `id`'s launcher, without `.desktop`: also its icon name
/// and, where the app lets its window class be set, the class its windows carry.
pub fn launcher_id(id: &ProfileId) -> String {
    format!("org.doppel.Doppel.{id}")
}

/// `$XDG_DATA_HOME/applications/org.doppel.Doppel.<id>.desktop`.
pub fn desktop_file(dirs: &Dirs, id: &ProfileId) -> PathBuf {
    dirs.data_home
        .join("applications")
        .join(format!("{}.desktop", launcher_id(id)))
}

/// `$XDG_DATA_HOME/icons/hicolor/256x256/apps/org.doppel.Doppel.<id>.png`.
pub fn icon_file(dirs: &Dirs, id: &ProfileId) -> PathBuf {
    dirs.data_home
        .join("icons/hicolor")
        .join(format!("{ICON_SIZE}x{ICON_SIZE}"))
        .join("apps")
        .join(format!("{}.png", launcher_id(id)))
}

/// What the launcher needs beyond the profile.
#[derive(Debug, Clone, Default)]
pub struct LauncherInfo {
    /// The `doppel` program the launcher runs.
    pub doppel: PathBuf,
    /// The window class the clone's windows carry, where the recipe sets one.
    pub wm_class: Option<String>,
}

/// Writes (or rewrites) profile `p`'s launcher and icon. The icon is best effort: without one
/// the launcher shows Doppel's own icon, and the returned warning says why.
pub fn install(
    dirs: &Dirs,
    p: &Profile,
    info: &LauncherInfo,
) -> Result<Vec<String>, LauncherError> {
    let mut warnings = Vec::new();
    let entry = p.desktop_id.as_deref().and_then(|d| apps::find(dirs, d));
    let icon_path = icon_file(dirs, &p.id);
    let source = entry
        .as_ref()
        .and_then(|e| e.icon.as_deref())
        .and_then(|name| find_icon(dirs, name));
    let icon_name = match draw_badged(source.as_deref(), &p.color) {
        Ok(png) => {
            let dir = icon_path.parent().unwrap_or(&dirs.data_home);
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
            atomic::write(&icon_path, &png, 0o644).map_err(io_err("write", &icon_path))?;
            launcher_id(&p.id)
        }
        Err(e) => {
            warnings.push(format!(
                "the launcher of {} shows Doppel's icon: {e}",
                p.label()
            ));
            "org.doppel.Doppel".to_owned()
        }
    };
    let text = entry_text(p, entry.as_ref(), info, &icon_name);
    let path = desktop_file(dirs, &p.id);
    let dir = path.parent().unwrap_or(&dirs.data_home);
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    atomic::write(&path, text.as_bytes(), 0o644).map_err(io_err("write", &path))?;
    Ok(warnings)
}

/// Writes profile `p`'s launcher for the `doppel` found beside the running program (or on
/// PATH), with what its recipe says; what fails comes back as warnings, since a profile works
/// without its launcher.
pub fn refresh(dirs: &Dirs, p: &Profile) -> Vec<String> {
    let set = crate::recipe::RecipeSet::load(dirs);
    let recipe = set.get(&p.recipe).ok();
    let info = LauncherInfo {
        doppel: doppel_program(),
        // Only where the recipe gives the app its class: otherwise the windows carry the
        // app's own class, and a StartupWMClass naming another would hide them from docks.
        wm_class: recipe
            .filter(|r| r.sets_window_class())
            .map(|_| crate::plan::window_class(&p.id)),
    };
    match install(dirs, p, &info) {
        Ok(w) => w,
        Err(e) => vec![format!(
            "{} has no launcher in the app menu: {e}",
            p.label()
        )],
    }
}

/// The `doppel` program: this one, one beside it (the window's), or the one on PATH.
pub fn doppel_program() -> PathBuf {
    doppel_binary().unwrap_or_else(|| PathBuf::from("doppel"))
}

/// The `doppel` binary: this program when it is `doppel`, else the one beside it (the GUI's
/// case), else the one on PATH.
pub fn doppel_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok();
    exe.as_ref()
        .filter(|e| e.file_name().is_some_and(|n| n == "doppel"))
        .cloned()
        .or_else(|| {
            exe.as_ref()
                .and_then(|e| e.parent().map(|d| d.join("doppel")))
                .filter(|p| p.is_file())
        })
        .or_else(|| apps::which("doppel"))
}

/// Removes profile `id`'s launcher and icon (whatever of them exists).
pub fn remove(dirs: &Dirs, id: &ProfileId) -> Result<(), LauncherError> {
    for path in [desktop_file(dirs, id), icon_file(dirs, id)] {
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove", &path)(e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The desktop entry (Desktop Entry Specification 1.4, which Debian 12's validator knows).
fn entry_text(p: &Profile, app: Option<&DesktopEntry>, info: &LauncherInfo, icon: &str) -> String {
    let mut t = String::from("[Desktop Entry]\nType=Application\nVersion=1.4\n");
    t += &format!("Name={}\n", escape_value(&p.label()));
    t += &format!(
        "Comment={}\n",
        escape_value(&format!(
            "{} as “{}”, in a Doppel sandbox of its own",
            p.app_name, p.name
        ))
    );
    let doppel = exec_arg(&info.doppel.to_string_lossy());
    t += &format!("Exec={doppel} run {} %U\n", p.id);
    t += &format!("TryExec={}\n", escape_value(&info.doppel.to_string_lossy()));
    t += &format!("Icon={icon}\nTerminal=false\n");
    if let Some(categories) = app.and_then(|a| a.categories.as_deref()) {
        t += &format!("Categories={}\n", escape_value(categories));
    }
    if let Some(class) = &info.wm_class {
        t += &format!("StartupWMClass={}\n", escape_value(class));
    }
    t += &format!("X-Doppel-Profile={}\nActions=stop;\n", p.id);
    t += &format!(
        "\n[Desktop Action stop]\nName=Stop\nExec={doppel} stop {}\n",
        p.id
    );
    t
}

/// A string value: no line breaks, backslashes doubled.
fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\t', "\\t")
        .replace('\r', "\\r")
}

/// One argument of `Exec`: quoted when it holds a reserved character, with the characters the
/// spec requires escaped inside the quotes, and `%` doubled.
pub fn exec_arg(arg: &str) -> String {
    const RESERVED: &[char] = &[
        ' ', '\t', '\n', '"', '\'', '\\', '>', '<', '~', '|', '&', ';', '$', '*', '?', '#', '(',
        ')', '`',
    ];
    let arg = arg.replace('%', "%%");
    let quoted = if arg.contains(RESERVED) {
        let mut q = String::from("\"");
        for c in arg.chars() {
            if matches!(c, '"' | '`' | '$' | '\\') {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    } else {
        arg
    };
    // The whole value is then a string value: its backslashes are escaped once more.
    escape_value(&quoted)
}

/// The file of icon `name` (a path, or a name in the hicolor theme or pixmaps), best first:
/// scalable, then the largest PNG.
pub fn find_icon(dirs: &Dirs, name: &str) -> Option<PathBuf> {
    if name.starts_with('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    if name.contains('/') || name.is_empty() {
        return None;
    }
    let mut bases = vec![dirs.data_home.clone()];
    bases.extend(dirs.data_dirs.iter().cloned());
    const SIZES: [&str; 9] = [
        "512x512", "256x256", "192x192", "128x128", "96x96", "64x64", "48x48", "32x32", "24x24",
    ];
    for base in &bases {
        let theme = base.join("icons/hicolor");
        let svg = theme.join("scalable/apps").join(format!("{name}.svg"));
        if svg.is_file() {
            return Some(svg);
        }
        for size in SIZES {
            let png = theme.join(size).join("apps").join(format!("{name}.png"));
            if png.is_file() {
                return Some(png);
            }
        }
    }
    for base in &bases {
        for ext in ["svg", "png"] {
            let p = base.join("pixmaps").join(format!("{name}.{ext}"));
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Draws `source` (SVG or PNG; none: a plain tile) at [`ICON_SIZE`] with a dot of `color`
/// (`#rrggbb`) on its bottom-right corner, and encodes it as PNG.
pub fn draw_badged(source: Option<&Path>, color: &str) -> Result<Vec<u8>, String> {
    let size = ICON_SIZE;
    let mut canvas = Pixmap::new(size, size).ok_or("cannot allocate the icon")?;
    let s = size as f32;
    // The app's icon fills the canvas but the badge's corner.
    let inner = s * 0.9;
    match source {
        Some(path) => {
            let icon = load(path)?;
            let scale = (inner / icon.width() as f32).min(inner / icon.height() as f32);
            let dx = (inner - icon.width() as f32 * scale) / 2.0;
            let dy = (inner - icon.height() as f32 * scale) / 2.0;
            canvas.draw_pixmap(
                0,
                0,
                icon.as_ref(),
                &tiny_skia::PixmapPaint {
                    quality: tiny_skia::FilterQuality::Bicubic,
                    ..Default::default()
                },
                Transform::from_row(scale, 0.0, 0.0, scale, dx, dy),
                None,
            );
        }
        None => return Err("the app has no icon Doppel can find".into()),
    }
    let (r, g, b) = parse_color(color).ok_or_else(|| format!("{color} is not #rrggbb"))?;
    let radius = s * 0.21;
    let (cx, cy) = (s - radius - s * 0.01, s - radius - s * 0.01);
    fill_circle(&mut canvas, cx, cy, radius, (255, 255, 255))?;
    fill_circle(&mut canvas, cx, cy, radius * 0.78, (r, g, b))?;
    canvas
        .encode_png()
        .map_err(|e| format!("cannot encode the icon: {e}"))
}

fn fill_circle(
    canvas: &mut Pixmap,
    cx: f32,
    cy: f32,
    r: f32,
    rgb: (u8, u8, u8),
) -> Result<(), String> {
    let circle = PathBuilder::from_circle(cx, cy, r).ok_or("cannot draw the badge")?;
    let mut paint = Paint::default();
    paint.set_color_rgba8(rgb.0, rgb.1, rgb.2, 255);
    paint.anti_alias = true;
    canvas.fill_path(
        &circle,
        &paint,
        FillRule::Winding,
        Transform::identity(),
        None,
    );
    Ok(())
}

/// An icon file as pixels: SVG drawn at [`ICON_SIZE`], PNG as it is.
fn load(path: &Path) -> Result<Pixmap, String> {
    let data = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let is_svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg") || e.eq_ignore_ascii_case("svgz"));
    if !is_svg {
        return Pixmap::decode_png(&data)
            .map_err(|e| format!("{} is not a PNG Doppel can read: {e}", path.display()));
    }
    let tree = resvg::usvg::Tree::from_data(&data, &resvg::usvg::Options::default())
        .map_err(|e| format!("{} is not an SVG Doppel can read: {e}", path.display()))?;
    let sz = tree.size();
    let scale = (ICON_SIZE as f32 / sz.width()).min(ICON_SIZE as f32 / sz.height());
    let mut pixmap = Pixmap::new(ICON_SIZE, ICON_SIZE).ok_or("cannot allocate the icon")?;
    resvg::render(
        &tree,
        Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    Ok(pixmap)
}

fn parse_color(c: &str) -> Option<(u8, u8, u8)> {
    let hex = c.strip_prefix('#')?;
    if hex.len() != 6 || !hex.is_ascii() {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some((byte(0)?, byte(2)?, byte(4)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_arguments_are_quoted_per_the_spec() {
        assert_eq!(exec_arg("/usr/bin/doppel"), "/usr/bin/doppel");
        assert_eq!(
            exec_arg("/home/a b/doppel"),
            "\"/home/a b/doppel\"",
            "a space needs quotes"
        );
        // Inside quotes `$` is escaped with a backslash, which the string-value rule doubles.
        assert_eq!(exec_arg("/x$y/d"), "\"/x\\\\$y/d\"");
        assert_eq!(exec_arg("/50%/d"), "/50%%/d");
    }

    #[test]
    fn colours_parse() {
        assert_eq!(parse_color("#3584e4"), Some((0x35, 0x84, 0xe4)));
        assert_eq!(parse_color("3584e4"), None);
        assert_eq!(parse_color("#35é4e"), None);
    }

    #[test]
    fn a_badge_is_drawn_over_the_icon() {
        let t = tempfile::tempdir().unwrap();
        let svg = t.path().join("app.svg");
        fs::write(
            &svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><rect width="16" height="16" fill="#00ff00"/></svg>"##,
        )
        .unwrap();
        let png = draw_badged(Some(&svg), "#ff0000").unwrap();
        let pm = Pixmap::decode_png(&png).unwrap();
        assert_eq!((pm.width(), pm.height()), (ICON_SIZE, ICON_SIZE));
        let at = |x: u32, y: u32| {
            let p = pm.pixel(x, y).unwrap().demultiply();
            (p.red(), p.green(), p.blue(), p.alpha())
        };
        assert_eq!(at(20, 20), (0, 255, 0, 255), "the app's icon");
        let c = ICON_SIZE - (ICON_SIZE as f32 * 0.22) as u32;
        assert_eq!(at(c, c), (255, 0, 0, 255), "the badge");
        assert!(draw_badged(None, "#ff0000").is_err());
        assert!(draw_badged(Some(&t.path().join("missing.png")), "#ff0000").is_err());
    }
}
