//! The tray icon: a StatusNotifierItem with its menu over com.canonical.dbusmenu (through
//! `ksni`), listing the profiles with their state and offering their actions. It only sends
//! messages: a click becomes, on the main loop, the same app action the window's buttons
//! activate.
//!
//! Also the close-to-tray setting (`app.close-to-tray`, kept in `$XDG_CONFIG_HOME/doppel/gui.toml`
//! so that a build tree needs no installed GSettings schema): while a tray host shows the icon,
//! closing the window hides it and Doppel stays in the tray.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use adw::prelude::*;
use gtk::{gio, glib};
use ksni::TrayMethods;

use doppel_core::dirs::Dirs;

use crate::app::APP_ID;
use crate::model::{TrayCommand, TrayEntry, TrayMenu};
use crate::window::Ui;

/// Shown when the icon theme has no Doppel icon (a build tree, or a theme without it).
const FALLBACK_TRAY_ICON: &str = "system-users-symbolic";

/// What the tray (on its own thread) asks of the main loop.
enum Request {
    /// A click, with the XDG activation token the host gave with it, if any.
    Command(TrayCommand, Option<String>),
    /// The tray host went away: the icon is gone, so a hidden window must come back.
    HostGone,
}

/// The tray item as ksni serves it. Lives on ksni's thread; it holds only data and a sender.
struct Item {
    menu: TrayMenu,
    icon: String,
    /// The icon drawn, for hosts whose theme lacks `icon` (Doppel run from a build tree).
    pixmaps: Vec<ksni::Icon>,
    requests: async_channel::Sender<Request>,
    /// Whether a StatusNotifierWatcher has the item registered.
    online: Arc<AtomicBool>,
}

impl Item {
    fn send(&self, r: Request) {
        // Fails only once the main loop has stopped listening, when there is nothing to do.
        let _ = self.requests.try_send(r);
    }
}

/// dbusmenu reads `_` as a mnemonic marker; a literal one is written twice.
fn menu_label(text: &str) -> String {
    text.replace('_', "__")
}

impl ksni::Tray for Item {
    fn id(&self) -> String {
        APP_ID.to_owned()
    }

    fn title(&self) -> String {
        "Doppel".to_owned()
    }

    fn icon_name(&self) -> String {
        self.icon.clone()
    }

    fn icon_pixmap(&self) -> Vec<ksni::Icon> {
        self.pixmaps.clone()
    }

    fn tool_tip(&self) -> ksni::ToolTip {
        ksni::ToolTip {
            icon_name: self.icon.clone(),
            title: "Doppel".to_owned(),
            description: self.menu.tooltip.clone(),
            ..Default::default()
        }
    }

    fn activate(&mut self, _x: i32, _y: i32) {
        self.send(Request::Command(
            TrayCommand::open_window(),
            ksni::current_xdg_activation_token(),
        ));
    }

    fn menu(&self) -> Vec<ksni::MenuItem<Self>> {
        use ksni::menu::StandardItem;
        self.menu
            .entries
            .iter()
            .map(|e| match e {
                TrayEntry::Heading(text) => StandardItem {
                    label: menu_label(text),
                    enabled: false,
                    ..Default::default()
                }
                .into(),
                TrayEntry::Separator => ksni::MenuItem::Separator,
                TrayEntry::Item {
                    label,
                    command,
                    enabled,
                } => {
                    let command = command.clone();
                    StandardItem {
                        label: menu_label(label),
                        enabled: *enabled,
                        activate: Box::new(move |item: &mut Self| {
                            item.send(Request::Command(
                                command.clone(),
                                ksni::current_xdg_activation_token(),
                            ));
                        }),
                        ..Default::default()
                    }
                    .into()
                }
            })
            .collect()
    }

    fn watcher_online(&self) {
        self.online.store(true, Ordering::SeqCst);
        eprintln!("doppel-gui: a tray host appeared; the tray icon is shown");
    }

    fn watcher_offline(&self, reason: ksni::OfflineReason) -> bool {
        self.online.store(false, Ordering::SeqCst);
        match reason {
            ksni::OfflineReason::Error(e) => eprintln!(
                "doppel-gui: no tray icon ({e}); it appears when a panel with a \
                 StatusNotifierItem tray starts (on GNOME, the AppIndicator extension); \
                 until then closing the window quits Doppel"
            ),
            _ => eprintln!(
                "doppel-gui: the tray host went away; closing the window quits Doppel until \
                 it is back"
            ),
        }
        self.send(Request::HostGone);
        // Keep serving: the host may come back (a restarted shell), and the icon with it.
        true
    }
}

/// The main loop's side of the tray.
struct Tray {
    app: glib::WeakRef<adw::Application>,
    ui: std::rc::Weak<Ui>,
    /// The tray service runs (it may still be waiting for a host).
    serving: Cell<bool>,
    online: Arc<AtomicBool>,
    /// Keeps Doppel running while its window is hidden in the tray.
    hold: RefCell<Option<gio::ApplicationHoldGuard>>,
}

impl Tray {
    /// Whether a tray host shows the icon, so that a hidden window can be brought back.
    fn shown(&self) -> bool {
        self.serving.get() && self.online.load(Ordering::SeqCst)
    }

    fn show_window(&self, token: Option<&str>) {
        if let Some(ui) = self.ui.upgrade() {
            if let Some(t) = token {
                ui.window.set_startup_id(t);
            }
            ui.window.present();
        }
    }

    fn handle(&self, r: Request) {
        match r {
            Request::Command(cmd, token) => {
                if cmd.show_window {
                    self.show_window(token.as_deref());
                }
                if let (Some(action), Some(app)) = (cmd.action, self.app.upgrade()) {
                    let target = cmd.profile.map(|p| p.as_str().to_variant());
                    app.activate_action(action, target.as_ref());
                }
            }
            Request::HostGone => {
                let hidden = self.ui.upgrade().is_some_and(|ui| !ui.window.is_visible());
                if hidden {
                    self.show_window(None);
                }
            }
        }
    }
}

/// Starts the tray for `ui`'s window and installs `app.close-to-tray`. Without a session bus or
/// a tray host it logs one line and Doppel works as before.
pub fn install(app: &adw::Application, ui: &Rc<Ui>) {
    let tray = Rc::new(Tray {
        app: app.downgrade(),
        ui: Rc::downgrade(ui),
        serving: Cell::new(false),
        online: Arc::new(AtomicBool::new(true)),
        hold: RefCell::default(),
    });
    install_close_to_tray(app, ui, &tray);

    let (requests, incoming) = async_channel::unbounded();
    {
        let tray = Rc::clone(&tray);
        glib::spawn_future_local(async move {
            while let Ok(r) = incoming.recv().await {
                tray.handle(r);
            }
        });
    }

    // The menu follows the window's snapshots, and changes only when its text would.
    let (menus, new_menus) = async_channel::unbounded::<TrayMenu>();
    let last: RefCell<Option<TrayMenu>> = RefCell::default();
    ui.connect_snapshot(Box::new(move |snap| {
        let menu = TrayMenu::from_snapshot(snap);
        if last.borrow().as_ref() != Some(&menu) {
            let _ = menus.try_send(menu.clone());
            *last.borrow_mut() = Some(menu);
        }
    }));

    let icon = gtk::gdk::Display::default()
        .filter(|d| gtk::IconTheme::for_display(d).has_icon(APP_ID))
        .map_or(FALLBACK_TRAY_ICON, |_| APP_ID)
        .to_owned();
    glib::spawn_future_local(async move {
        // After the window's first frame: meeting the bus (and drawing the icon) can wait.
        glib::timeout_future(std::time::Duration::from_millis(250)).await;
        let pixmaps = icon_pixmaps();
        let mut menu = TrayMenu::default();
        while let Ok(m) = new_menus.try_recv() {
            menu = m;
        }
        let item = Item {
            menu,
            icon,
            pixmaps,
            requests,
            online: Arc::clone(&tray.online),
        };
        // A missing watcher is not fatal: the item waits for one (a panel that starts later).
        let handle = match item.assume_sni_available(true).spawn().await {
            Ok(h) => h,
            Err(e) => {
                eprintln!(
                    "doppel-gui: no tray icon: {e}; Doppel works without it, but closing the \
                     window quits it"
                );
                new_menus.close();
                return;
            }
        };
        tray.serving.set(true);
        while let Ok(mut menu) = new_menus.recv().await {
            while let Ok(newer) = new_menus.try_recv() {
                menu = newer;
            }
            if handle.update(|item| item.menu = menu).await.is_none() {
                break;
            }
        }
    });
}

/// `app.close-to-tray`, and the window's close button honouring it.
fn install_close_to_tray(app: &adw::Application, ui: &Rc<Ui>, tray: &Rc<Tray>) {
    let dirs = ui.dirs.clone();
    let action = gio::SimpleAction::new_stateful(
        "close-to-tray",
        None,
        &Settings::load(&dirs).close_to_tray.to_variant(),
    );
    {
        let ui = Rc::downgrade(ui);
        action.connect_change_state(move |a, v| {
            let Some(on) = v.and_then(bool::from_variant) else {
                return;
            };
            a.set_state(&on.to_variant());
            let settings = Settings { close_to_tray: on };
            if let (Err(e), Some(ui)) = (settings.save(&dirs), ui.upgrade()) {
                ui.toast(&e);
            }
        });
    }
    app.add_action(&action);

    let app_weak = app.downgrade();
    let tray_for_close = Rc::clone(tray);
    ui.window.connect_close_request(move |w| {
        let keep = action.state().and_then(|s| s.get::<bool>()) == Some(true);
        match app_weak.upgrade() {
            Some(app) if keep && tray_for_close.shown() => {
                w.set_visible(false);
                *tray_for_close.hold.borrow_mut() = Some(app.hold());
                glib::Propagation::Stop
            }
            _ => glib::Propagation::Proceed,
        }
    });
    // However the window comes back (tray, a second `doppel-gui`), the tray's hold ends.
    let tray = Rc::clone(tray);
    ui.window.connect_visible_notify(move |w| {
        if w.is_visible() {
            tray.hold.borrow_mut().take();
        }
    });
}

/// The window's own settings, in `$XDG_CONFIG_HOME/doppel/gui.toml`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    /// Closing the window keeps Doppel in the tray (when a tray shows its icon).
    close_to_tray: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            close_to_tray: true,
        }
    }
}

impl Settings {
    fn path(dirs: &Dirs) -> PathBuf {
        dirs.config_home.join("doppel/gui.toml")
    }

    /// The saved settings; the defaults when there are none, or (with a line on stderr) when
    /// the file cannot be read.
    fn load(dirs: &Dirs) -> Self {
        let path = Self::path(dirs);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::default(),
            Err(e) => {
                eprintln!(
                    "doppel-gui: cannot read {}: {e}; using the default settings",
                    path.display()
                );
                return Self::default();
            }
        };
        Self::parse(&text).unwrap_or_else(|e| {
            eprintln!(
                "doppel-gui: {} is not valid: {e}; using the default settings (fix or delete \
                 the file)",
                path.display()
            );
            Self::default()
        })
    }

    fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    fn save(&self, dirs: &Dirs) -> Result<(), String> {
        let path = Self::path(dirs);
        let failed = |e: &dyn std::fmt::Display| {
            format!(
                "Cannot save the setting: writing {} failed ({e}); check that the directory is \
                 yours and writable",
                path.display()
            )
        };
        let text = toml::to_string(self).map_err(|e| failed(&e))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed(&e))?;
        }
        doppel_core::atomic::write(&path, text.as_bytes(), 0o644).map_err(|e| failed(&e))
    }
}

/// Doppel's icon (compiled into the binary) drawn at the sizes panels use, as StatusNotifierItem
/// pixmaps: ARGB32, big-endian. Empty if the SVG loader of gdk-pixbuf is missing.
fn icon_pixmaps() -> Vec<ksni::Icon> {
    const ICON: &str = "/org/doppel/Doppel/icons/scalable/apps/org.doppel.Doppel.svg";
    [22, 32, 48]
        .into_iter()
        .filter_map(|size| {
            gtk::gdk_pixbuf::Pixbuf::from_resource_at_scale(ICON, size, size, true).ok()
        })
        .map(|pb| {
            let (w, h) = (pb.width(), pb.height());
            let channels = usize::try_from(pb.n_channels()).unwrap_or(4);
            let stride = usize::try_from(pb.rowstride()).unwrap_or(0);
            let bytes = pb.read_pixel_bytes();
            let mut data = Vec::with_capacity(bytes.len());
            for y in 0..usize::try_from(h).unwrap_or(0) {
                for x in 0..usize::try_from(w).unwrap_or(0) {
                    let i = y * stride + x * channels;
                    let Some(px) = bytes.get(i..i + channels) else {
                        continue;
                    };
                    let alpha = if channels == 4 { px[3] } else { 255 };
                    data.extend_from_slice(&[alpha, px[0], px[1], px[2]]);
                }
            }
            ksni::Icon {
                width: w,
                height: h,
                data,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &std::path::Path) -> Dirs {
        Dirs {
            home: root.to_owned(),
            config_home: root.join("config"),
            data_home: root.join("data"),
            data_dirs: vec![],
            runtime_dir: None,
        }
    }

    #[test]
    fn settings_default_to_the_tray_and_survive_a_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let dirs = dirs(d.path());
        assert!(Settings::load(&dirs).close_to_tray, "the default");
        Settings {
            close_to_tray: false,
        }
        .save(&dirs)
        .unwrap();
        assert!(!Settings::load(&dirs).close_to_tray);
        let text = std::fs::read_to_string(d.path().join("config/doppel/gui.toml")).unwrap();
        assert_eq!(text.trim(), "close_to_tray = false");
    }

    #[test]
    fn a_bad_settings_file_is_refused_not_half_read() {
        assert!(Settings::parse("close_to_tray = \"yes\"").is_err());
        assert!(Settings::parse("close_to_tary = false").is_err());
        assert_eq!(Settings::parse("").unwrap(), Settings::default());
    }

    #[test]
    fn labels_keep_their_underscores() {
        assert_eq!(menu_label("my_work — Running"), "my__work — Running");
    }
}
