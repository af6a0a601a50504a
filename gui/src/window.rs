//! The main window: the list of profiles, refreshed from core every second, and the place where
//! errors are shown (as toasts).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use adw::prelude::*;
use adw::subclass::prelude::*;
use gtk::{gio, glib};

use doppel_core::dirs::Dirs;
use doppel_core::id::ProfileId;

use crate::model::{ProfileRow, Snapshot, FALLBACK_ICON};
use crate::ops::{self, IconCache, LaunchFailures};
use crate::page::ProfilePage;

/// Default window size (as in window.ui); the screenshot test checks it.
pub const DEFAULT_SIZE: (i32, i32) = (720, 560);

/// Called with every new state the window shows.
type SnapshotWatcher = Box<dyn Fn(&Snapshot)>;

/// A profile's row is named this plus the profile id.
const ROW_PREFIX: &str = "profile-";

/// How long a launched profile shows a spinner while its instance has not started yet.
const START_GRACE: Duration = Duration::from_secs(10);

mod imp {
    use adw::subclass::prelude::*;
    use gtk::{glib, CompositeTemplate, TemplateChild};

    /// The window's widgets, from ui/window.ui.
    #[derive(Debug, Default, CompositeTemplate)]
    #[template(resource = "/org/doppel/Doppel/ui/window.ui")]
    pub struct DoppelWindow {
        #[template_child]
        pub toasts: TemplateChild<adw::ToastOverlay>,
        #[template_child]
        pub pages: TemplateChild<gtk::Stack>,
        #[template_child]
        pub stack: TemplateChild<gtk::Stack>,
        #[template_child]
        pub list: TemplateChild<gtk::ListBox>,
        #[template_child]
        pub error_page: TemplateChild<adw::StatusPage>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for DoppelWindow {
        const NAME: &'static str = "DoppelWindow";
        type Type = super::DoppelWindow;
        type ParentType = adw::ApplicationWindow;

        fn class_init(klass: &mut Self::Class) {
            klass.bind_template();
        }

        fn instance_init(obj: &glib::subclass::InitializingObject<Self>) {
            obj.init_template();
        }
    }

    impl ObjectImpl for DoppelWindow {}
    impl WidgetImpl for DoppelWindow {}
    impl WindowImpl for DoppelWindow {}
    impl ApplicationWindowImpl for DoppelWindow {}
    impl AdwApplicationWindowImpl for DoppelWindow {}
}

glib::wrapper! {
    /// Doppel's main window (template: ui/window.ui).
    pub struct DoppelWindow(ObjectSubclass<imp::DoppelWindow>)
        @extends adw::ApplicationWindow, gtk::ApplicationWindow, gtk::Window, gtk::Widget,
        @implements gio::ActionGroup, gio::ActionMap, gtk::Accessible, gtk::Buildable,
            gtk::ConstraintTarget, gtk::Native, gtk::Root, gtk::ShortcutManager;
}

impl DoppelWindow {
    pub fn new(app: &adw::Application) -> Self {
        glib::Object::builder().property("application", app).build()
    }
}

/// The window and what it needs to show core's state. It keeps no state of its own beyond
/// which work it has under way.
pub struct Ui {
    pub window: DoppelWindow,
    pub dirs: Dirs,
    toasts: adw::ToastOverlay,
    pages: gtk::Stack,
    stack: gtk::Stack,
    list: gtk::ListBox,
    error_page: adw::StatusPage,
    /// A profile's page, made when one is first opened (the window shows sooner without it).
    pub page: std::cell::OnceCell<ProfilePage>,
    busy: RefCell<HashSet<ProfileId>>,
    starting: RefCell<HashMap<ProfileId, Instant>>,
    shown: RefCell<Option<Snapshot>>,
    icons: RefCell<IconCache>,
    failures: LaunchFailures,
    watchers: RefCell<Vec<SnapshotWatcher>>,
}

impl Ui {
    /// Builds the window for `app`; call [`Ui::start_refresh`] once it is shared.
    pub fn new(app: &adw::Application, dirs: Dirs) -> Rc<Ui> {
        let window = DoppelWindow::new(app);
        let t = window.imp();
        let ui = Rc::new(Ui {
            toasts: t.toasts.get(),
            pages: t.pages.get(),
            stack: t.stack.get(),
            list: t.list.get(),
            error_page: t.error_page.get(),
            page: std::cell::OnceCell::new(),
            window,
            dirs,
            busy: RefCell::default(),
            starting: RefCell::default(),
            shown: RefCell::default(),
            icons: RefCell::default(),
            failures: LaunchFailures::default(),
            watchers: RefCell::default(),
        });
        // A click on a row (not on its buttons) opens the profile's page.
        ui.list.connect_row_activated(|list, row| {
            if let Some(id) = row.widget_name().strip_prefix(ROW_PREFIX) {
                let _ = list.activate_action("app.open-profile", Some(&id.to_variant()));
            }
        });
        ui
    }

    /// Shows the page of profile `id`.
    pub fn open_profile(self: &Rc<Self>, id: &ProfileId) {
        if self.page.get().is_none() {
            let page = ProfilePage::new();
            self.pages.add_named(&page, Some("profile"));
            if self.page.set(page).is_ok() {
                crate::page::connect(self);
            }
        }
        self.pages.set_visible_child_name("profile");
        crate::page::show(self, id);
    }

    /// Back to the list of profiles.
    pub fn show_list(&self) {
        self.pages.set_visible_child_name("main");
    }

    /// The profile whose page is showing, if one is.
    pub fn shown_profile(&self) -> Option<ProfileId> {
        (self.pages.visible_child_name().as_deref() == Some("profile"))
            .then(|| self.page.get().and_then(ProfilePage::profile))
            .flatten()
    }

    /// The state the window shows now.
    pub fn last_snapshot(&self) -> Option<Snapshot> {
        self.shown.borrow().clone()
    }

    /// The icon of profile `id`'s app, as the list shows it.
    pub fn icon_of(&self, id: &ProfileId) -> String {
        self.shown
            .borrow()
            .as_ref()
            .and_then(|s| s.rows.iter().find(|r| &r.id == id).map(|r| r.icon.clone()))
            .unwrap_or_else(|| FALLBACK_ICON.to_owned())
    }

    /// Shows the state now, then every second, for as long as the window lives.
    pub fn start_refresh(self: &Rc<Self>) {
        self.refresh();
        let weak = Rc::downgrade(self);
        glib::timeout_add_seconds_local(1, move || match weak.upgrade() {
            Some(ui) => {
                ui.refresh();
                glib::ControlFlow::Continue
            }
            None => glib::ControlFlow::Break,
        });
    }

    /// Shows `message` (a core error, which says what to do) as a toast; one too long for a
    /// toast gets a Details button that shows all of it.
    pub fn toast(&self, message: &str) {
        const SHORT: usize = 60;
        // Hidden in the tray, a toast would go unseen: a desktop notification says it instead.
        if !self.window.is_visible() {
            if let Some(app) = self.window.application() {
                let n = gio::Notification::new("Doppel");
                n.set_body(Some(message));
                app.send_notification(None, &n);
            }
        }
        if message.chars().count() <= SHORT {
            let toast = adw::Toast::new(&glib::markup_escape_text(message));
            toast.set_timeout(8);
            self.toasts.add_toast(toast);
            return;
        }
        // The part before the first ": " names what failed; the rest says why and what to do.
        let (head, body) = message
            .split_once(": ")
            .filter(|(h, _)| h.chars().count() <= SHORT)
            .unwrap_or(("Something went wrong", message));
        let toast = adw::Toast::builder()
            .title(glib::markup_escape_text(head))
            .button_label("Details")
            .timeout(10)
            .build();
        let window = self.window.downgrade();
        let (head, body) = (head.to_owned(), body.to_owned());
        toast.connect_button_clicked(move |_| {
            let dialog = adw::MessageDialog::builder()
                .heading(&head)
                .body(&body)
                .modal(true)
                .build();
            dialog.set_transient_for(window.upgrade().as_ref());
            dialog.add_response("close", "Close");
            dialog.present();
        });
        self.toasts.add_toast(toast);
    }

    /// Shows a ready-made toast.
    pub fn add_toast(&self, toast: adw::Toast) {
        self.toasts.add_toast(toast);
    }

    /// Runs `work` off the main loop, then `done` with its result on it. A panic in `work`
    /// becomes a toast, never a crash.
    pub fn spawn<T, W, D>(self: &Rc<Self>, work: W, done: D)
    where
        T: Send + 'static,
        W: FnOnce() -> T + Send + 'static,
        D: FnOnce(T) + 'static,
    {
        let ui = Rc::clone(self);
        glib::spawn_future_local(async move {
            match gio::spawn_blocking(work).await {
                Ok(v) => done(v),
                Err(_) => ui.toast("Doppel hit an internal error; please report it"),
            }
        });
    }

    /// Marks work on `id` as under way (its row shows a spinner) or done.
    pub fn set_busy(&self, id: &ProfileId, busy: bool) {
        if busy {
            self.busy.borrow_mut().insert(id.clone());
        } else {
            self.busy.borrow_mut().remove(id);
        }
        self.refresh();
    }

    /// Launches `id`, asking for its passphrase first if it is locked.
    pub fn launch(self: &Rc<Self>, id: &ProfileId) {
        match ops::needs_unlock(&self.dirs, id) {
            Ok(true) => crate::dialogs::unlock(self, id, true),
            Ok(false) => match ops::launch(&self.dirs, id, &self.failures) {
                Ok(()) => {
                    self.starting
                        .borrow_mut()
                        .insert(id.clone(), Instant::now());
                    self.refresh();
                }
                Err(e) => self.toast(&e),
            },
            Err(e) => self.toast(&e),
        }
    }

    /// Stops `id` (off the main loop: it may take seconds).
    pub fn stop(self: &Rc<Self>, id: &ProfileId) {
        self.set_busy(id, true);
        let (dirs, owned) = (self.dirs.clone(), id.clone());
        let ui = Rc::clone(self);
        let id = id.clone();
        self.spawn(
            move || ops::stop(&dirs, &owned),
            move |r| {
                ui.set_busy(&id, false);
                if let Err(e) = r {
                    ui.toast(&e);
                }
            },
        );
    }

    /// Locks `id`.
    pub fn lock(self: &Rc<Self>, id: &ProfileId) {
        self.set_busy(id, true);
        let (dirs, owned) = (self.dirs.clone(), id.clone());
        let ui = Rc::clone(self);
        let id = id.clone();
        self.spawn(
            move || ops::lock(&dirs, &owned),
            move |r| {
                ui.set_busy(&id, false);
                if let Err(e) = r {
                    ui.toast(&e);
                }
            },
        );
    }

    /// Locks every unlocked profile that is not running.
    pub fn lock_all(self: &Rc<Self>) {
        let dirs = self.dirs.clone();
        let ui = Rc::clone(self);
        self.spawn(
            move || ops::lock_all(&dirs),
            move |(locked, errors)| {
                for e in &errors {
                    ui.toast(e);
                }
                if errors.is_empty() {
                    ui.toast(&match locked {
                        0 => "No profile was unlocked".to_owned(),
                        1 => "Locked 1 profile".to_owned(),
                        n => format!("Locked {n} profiles"),
                    });
                }
                ui.refresh();
            },
        );
    }

    /// Reads the state from core and redraws the list if it changed.
    pub fn refresh(&self) {
        let failed: Vec<(ProfileId, String)> = self
            .failures
            .lock()
            .map(|mut f| f.drain(..).collect())
            .unwrap_or_default();
        for (id, message) in failed {
            self.starting.borrow_mut().remove(&id);
            self.toast(&message);
        }
        let snap = {
            let mut busy = self.busy.borrow().clone();
            let mut starting = self.starting.borrow_mut();
            starting.retain(|id, since| {
                since.elapsed() < START_GRACE
                    && !doppel_core::instance::is_running(&self.dirs, id).unwrap_or(false)
            });
            busy.extend(starting.keys().cloned());
            ops::snapshot(&self.dirs, &mut self.icons.borrow_mut(), &busy)
        };
        if self.shown.borrow().as_ref() == Some(&snap) {
            return;
        }
        self.render(&snap);
        crate::page::update(self, &snap);
        for f in self.watchers.borrow().iter() {
            f(&snap);
        }
        *self.shown.borrow_mut() = Some(snap);
    }

    /// Calls `f` with every new state the window shows (and at once with the current one):
    /// how the tray follows the window without reading core on its own.
    pub fn connect_snapshot(&self, f: Box<dyn Fn(&Snapshot)>) {
        if let Some(snap) = self.shown.borrow().as_ref() {
            f(snap);
        }
        self.watchers.borrow_mut().push(f);
    }

    fn render(&self, snap: &Snapshot) {
        if let Some(e) = &snap.error {
            self.error_page
                .set_description(Some(&glib::markup_escape_text(e)));
            self.stack.set_visible_child_name("error");
            return;
        }
        if snap.is_empty() {
            self.stack.set_visible_child_name("empty");
            return;
        }
        while let Some(child) = self.list.first_child() {
            self.list.remove(&child);
        }
        for r in &snap.rows {
            self.list.append(&profile_row(r));
        }
        for b in &snap.broken {
            let row = adw::ActionRow::builder()
                .title("Unreadable profile")
                .subtitle(&b.message)
                .use_markup(false)
                .build();
            row.add_prefix(&gtk::Image::from_icon_name("dialog-warning-symbolic"));
            self.list.append(&row);
        }
        self.stack.set_visible_child_name("list");
    }
}

/// One profile's row: icon with colour badge, "App (Name)", state, and its buttons.
fn profile_row(r: &ProfileRow) -> adw::ActionRow {
    let target = r.id.as_str().to_variant();
    let row = adw::ActionRow::builder()
        .title(&r.title)
        .subtitle(&r.subtitle)
        .use_markup(false)
        .activatable(true)
        .build();
    row.set_widget_name(&format!("{ROW_PREFIX}{}", r.id));
    row.add_prefix(&icon_with_badge(&r.icon, &r.color, 32));

    if r.busy {
        let spinner = gtk::Spinner::builder()
            .spinning(true)
            .valign(gtk::Align::Center)
            .build();
        row.add_suffix(&spinner);
        row.add_suffix(&gtk::Image::from_icon_name("go-next-symbolic"));
        return row;
    }
    if let Some(l) = r.lock {
        let (label, action) = l.button();
        let b = gtk::Button::builder()
            .label(label)
            .valign(gtk::Align::Center)
            .action_name(action)
            .action_target(&target)
            .build();
        row.add_suffix(&b);
    }
    if let Some(p) = r.primary {
        let (label, action, class) = p.button();
        let b = gtk::Button::builder()
            .label(label)
            .valign(gtk::Align::Center)
            .action_name(action)
            .action_target(&target)
            .css_classes([class])
            .width_request(84)
            .build();
        row.add_suffix(&b);
    }
    row.add_suffix(&gtk::Image::from_icon_name("go-next-symbolic"));
    row
}

/// The app's icon (a theme name or a file), `size` pixels, with a dot of the profile's colour
/// on its bottom-right corner.
pub fn icon_with_badge(icon: &str, color: &str, size: i32) -> gtk::Widget {
    let image = app_icon(icon, size);
    // Room around the icon's corner, where the badge sits half outside it.
    let badge_size = (size * 7 / 16).max(10);
    image.set_margin_end(badge_size / 4);
    image.set_margin_bottom(badge_size / 4);
    let overlay = gtk::Overlay::builder()
        .child(&image)
        .valign(gtk::Align::Center)
        .build();
    let badge = color_dot(color, badge_size);
    badge.set_halign(gtk::Align::End);
    badge.set_valign(gtk::Align::End);
    overlay.add_overlay(&badge);
    overlay.upcast()
}

/// An app icon: a file if `icon` is an absolute path, else a theme icon, else the fallback.
pub fn app_icon(icon: &str, size: i32) -> gtk::Image {
    let image = if icon.starts_with('/') && std::path::Path::new(icon).is_file() {
        gtk::Image::from_file(icon)
    } else {
        let known = gtk::gdk::Display::default()
            .map(|d| gtk::IconTheme::for_display(&d).has_icon(icon))
            .unwrap_or(false);
        gtk::Image::from_icon_name(if known { icon } else { FALLBACK_ICON })
    };
    image.set_pixel_size(size);
    // libadwaita's drop shadow is a blur drawn on the CPU without GL, ~5 ms per icon (measured
    // by benches/gui.sh); small icons get the cheap outline meant for them.
    image.add_css_class(if size >= 64 {
        "icon-dropshadow"
    } else {
        "lowres-icon"
    });
    image
}

/// One round toggle button per preset colour, in a group, the first active, each appended to
/// `into`; `picked` runs with the colour's hex when a person (or code) activates one.
pub fn color_buttons(
    into: &gtk::Box,
    picked: impl Fn(&gtk::ToggleButton, &'static str) + Clone + 'static,
) -> Vec<(gtk::ToggleButton, &'static str)> {
    let mut made: Vec<(gtk::ToggleButton, &'static str)> = Vec::new();
    for (hex, label) in crate::model::PRESET_COLORS {
        let b = gtk::ToggleButton::builder()
            .child(&color_dot(hex, 20))
            .tooltip_text(label)
            .css_classes(["flat", "circular", "color-choice"])
            .build();
        b.update_property(&[gtk::accessible::Property::Label(label)]);
        match made.first() {
            Some((first, _)) => b.set_group(Some(first)),
            None => b.set_active(true),
        }
        let picked = picked.clone();
        b.connect_toggled(move |b| {
            if b.is_active() {
                picked(b, hex);
            }
        });
        into.append(&b);
        made.push((b, hex));
    }
    made
}

/// A filled circle of `color` (`#rrggbb`) with a light ring, `size` pixels across.
pub fn color_dot(color: &str, size: i32) -> gtk::DrawingArea {
    let rgba = gtk::gdk::RGBA::parse(color).unwrap_or(gtk::gdk::RGBA::new(0.2, 0.5, 0.9, 1.0));
    let area = gtk::DrawingArea::builder()
        .content_width(size)
        .content_height(size)
        .can_target(false)
        .build();
    area.set_draw_func(move |_, cr, w, h| {
        let r = f64::from(w.min(h)) / 2.0;
        let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
        cr.arc(cx, cy, r, 0.0, std::f64::consts::TAU);
        cr.set_source_rgba(1.0, 1.0, 1.0, 1.0);
        let _ = cr.fill();
        cr.arc(cx, cy, (r - 2.0).max(1.0), 0.0, std::f64::consts::TAU);
        cr.set_source_rgba(
            f64::from(rgba.red()),
            f64::from(rgba.green()),
            f64::from(rgba.blue()),
            1.0,
        );
        let _ = cr.fill();
    });
    area
}
