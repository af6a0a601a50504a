//! The main window: the list of profiles, refreshed from core every second, and the place where
//! errors are shown (as toasts).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use adw::prelude::*;
use gtk::{gio, glib};

use doppel_core::dirs::Dirs;
use doppel_core::id::ProfileId;

use crate::model::{LockAction, PrimaryAction, ProfileRow, Snapshot, FALLBACK_ICON};
use crate::ops::{self, IconCache, LaunchFailures};

/// Default window size; the screenshot test checks it.
pub const DEFAULT_SIZE: (i32, i32) = (720, 560);

/// How long a launched profile shows a spinner while its instance has not started yet.
const START_GRACE: Duration = Duration::from_secs(10);

/// The window and what it needs to show core's state. It keeps no state of its own beyond
/// which work it has under way.
pub struct Ui {
    pub window: adw::ApplicationWindow,
    pub dirs: Dirs,
    toasts: adw::ToastOverlay,
    stack: gtk::Stack,
    list: gtk::ListBox,
    error_page: adw::StatusPage,
    busy: RefCell<HashSet<ProfileId>>,
    starting: RefCell<HashMap<ProfileId, Instant>>,
    shown: RefCell<Option<Snapshot>>,
    icons: RefCell<IconCache>,
    failures: LaunchFailures,
    watchers: RefCell<Vec<Box<dyn Fn(&Snapshot)>>>,
}

impl Ui {
    /// Builds the window for `app`; call [`Ui::start_refresh`] once it is shared.
    pub fn new(app: &adw::Application, dirs: Dirs) -> Rc<Ui> {
        let window = adw::ApplicationWindow::builder()
            .application(app)
            .title("Doppel")
            .default_width(DEFAULT_SIZE.0)
            .default_height(DEFAULT_SIZE.1)
            .width_request(360)
            .height_request(300)
            .build();

        let header = adw::HeaderBar::new();
        header.set_title_widget(Some(&adw::WindowTitle::new("Doppel", "")));
        let new_button = gtk::Button::builder()
            .icon_name("list-add-symbolic")
            .tooltip_text("New Profile (Ctrl+N)")
            .action_name("app.new-profile")
            .build();
        header.pack_start(&new_button);
        let menu = gio::Menu::new();
        menu.append(Some("_Lock All Profiles"), Some("app.lock-all"));
        menu.append(Some("_Quit"), Some("app.quit"));
        let menu_button = gtk::MenuButton::builder()
            .icon_name("open-menu-symbolic")
            .tooltip_text("Main Menu")
            .menu_model(&menu)
            .build();
        header.pack_end(&menu_button);

        let empty = adw::StatusPage::builder()
            .icon_name("system-users-symbolic")
            .title("No profiles yet")
            .description(
                "A profile is a second account of an app: its own data, \
                 side by side with the first, in a sandbox of its own.",
            )
            .build();
        let empty_button = gtk::Button::builder()
            .label("New Profile")
            .action_name("app.new-profile")
            .halign(gtk::Align::Center)
            .css_classes(["pill", "suggested-action"])
            .build();
        empty.set_child(Some(&empty_button));

        let list = gtk::ListBox::builder()
            .selection_mode(gtk::SelectionMode::None)
            .css_classes(["boxed-list"])
            .valign(gtk::Align::Start)
            .build();
        let clamp = adw::Clamp::builder()
            .maximum_size(640)
            .margin_top(24)
            .margin_bottom(24)
            .margin_start(12)
            .margin_end(12)
            .child(&list)
            .build();
        let scrolled = gtk::ScrolledWindow::builder()
            .hscrollbar_policy(gtk::PolicyType::Never)
            .vexpand(true)
            .child(&clamp)
            .build();

        let error_page = adw::StatusPage::builder()
            .icon_name("dialog-warning-symbolic")
            .title("Cannot read the profiles")
            .build();

        let stack = gtk::Stack::new();
        stack.add_named(&empty, Some("empty"));
        stack.add_named(&scrolled, Some("list"));
        stack.add_named(&error_page, Some("error"));

        let content = gtk::Box::new(gtk::Orientation::Vertical, 0);
        content.append(&header);
        content.append(&stack);
        let toasts = adw::ToastOverlay::new();
        toasts.set_child(Some(&content));
        window.set_content(Some(&toasts));

        Rc::new(Ui {
            window,
            dirs,
            toasts,
            stack,
            list,
            error_page,
            busy: RefCell::default(),
            starting: RefCell::default(),
            shown: RefCell::default(),
            icons: RefCell::default(),
            failures: LaunchFailures::default(),
            watchers: RefCell::default(),
        })
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
    let row = adw::ActionRow::builder()
        .title(&r.title)
        .subtitle(&r.subtitle)
        .use_markup(false)
        .build();
    row.add_prefix(&icon_with_badge(&r.icon, &r.color));
    let target = r.id.as_str().to_variant();
    if r.busy {
        let spinner = gtk::Spinner::builder()
            .spinning(true)
            .valign(gtk::Align::Center)
            .build();
        row.add_suffix(&spinner);
        return row;
    }
    if let Some(l) = r.lock {
        let (label, action) = match l {
            LockAction::Lock => ("Lock", "app.lock"),
            LockAction::Unlock => ("Unlock", "app.unlock"),
        };
        let b = gtk::Button::builder()
            .label(label)
            .valign(gtk::Align::Center)
            .action_name(action)
            .action_target(&target)
            .build();
        row.add_suffix(&b);
    }
    if let Some(p) = r.primary {
        let (label, action, class) = match p {
            PrimaryAction::Launch => ("Launch", "app.launch", "suggested-action"),
            PrimaryAction::Stop => ("Stop", "app.stop", "destructive-action"),
        };
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
    row
}

/// The app's icon (a theme name or a file) with a small dot of the profile's colour.
pub fn icon_with_badge(icon: &str, color: &str) -> gtk::Widget {
    let image = app_icon(icon, 32);
    // Room around the icon's bottom-right corner, where the badge sits half outside it.
    image.set_margin_end(3);
    image.set_margin_bottom(3);
    let overlay = gtk::Overlay::builder()
        .child(&image)
        .valign(gtk::Align::Center)
        .build();
    let badge = color_dot(color, 14);
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
    image.add_css_class("icon-dropshadow");
    image
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
