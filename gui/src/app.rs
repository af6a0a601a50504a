//! The application: single instance (GApplication), and every action the window, its rows and
//! the keyboard trigger, declared here in one place.

use std::cell::RefCell;
use std::rc::Rc;

use adw::prelude::*;
use gtk::{gio, glib};

use doppel_core::dirs::Dirs;
use doppel_core::id::ProfileId;

use crate::window::Ui;

/// The application id (also the D-Bus name of the running instance).
pub const APP_ID: &str = "org.doppel.Doppel";

/// Builds the application; `run` it to show the window.
pub fn application(dirs: Dirs) -> adw::Application {
    let app = adw::Application::builder().application_id(APP_ID).build();
    app.connect_startup(|_| {
        if toasts_need_animations_off(adw::major_version(), adw::minor_version()) {
            if let Some(settings) = gtk::Settings::default() {
                settings.set_gtk_enable_animations(false);
            }
        }
    });
    let ui: Rc<RefCell<Option<Rc<Ui>>>> = Rc::default();
    app.connect_activate(move |app| {
        if let Some(ui) = ui.borrow().as_ref() {
            ui.window.present();
            return;
        }
        let new = Ui::new(app, dirs.clone());
        install_actions(app, &new);
        // The tray icon and close-to-tray (tray.rs): its menu activates the actions above.
        crate::tray::install(app, &new);
        new.start_refresh();
        new.window.present();
        *ui.borrow_mut() = Some(new);
    });
    app
}

/// Whether this libadwaita's toasts are only safe without animations. Before 1.3 (Debian 12
/// has 1.2) a toast dismissed while it is still sliding in (its "Launch Now" clicked at once,
/// say) has its bookkeeping freed while the slide-in animation still runs, and the end of that
/// animation then reads freed memory: Doppel died of SIGSEGV now and then. libadwaita 1.3 fixed
/// it ("AdwToastOverlay: Fix a use-after-free when quickly creating and dismissing toasts").
/// With animations off, each animation ends the moment it starts, so none outlives its toast.
fn toasts_need_animations_off(major: u32, minor: u32) -> bool {
    major == 1 && minor < 3
}

/// The profile id in an action's parameter, if it is one.
fn id_param(v: Option<&glib::Variant>) -> Option<ProfileId> {
    v.and_then(glib::Variant::str)
        .and_then(|s| ProfileId::parse(s).ok())
}

fn install_actions(app: &adw::Application, ui: &Rc<Ui>) {
    let plain = |name: &str, f: Box<dyn Fn()>| {
        let a = gio::SimpleAction::new(name, None);
        a.connect_activate(move |_, _| f());
        app.add_action(&a);
    };
    {
        let ui = Rc::downgrade(ui);
        plain(
            "new-profile",
            Box::new(move || {
                if let Some(ui) = ui.upgrade() {
                    crate::dialogs::new_profile(&ui);
                }
            }),
        );
    }
    {
        let app = app.downgrade();
        plain(
            "quit",
            Box::new(move || {
                if let Some(app) = app.upgrade() {
                    app.quit();
                }
            }),
        );
    }
    {
        let ui = Rc::downgrade(ui);
        plain(
            "lock-all",
            Box::new(move || {
                if let Some(ui) = ui.upgrade() {
                    ui.lock_all();
                }
            }),
        );
    }

    // Per-profile actions take the profile id as their parameter.
    let per_profile = |name: &str, f: fn(&Rc<Ui>, &ProfileId)| {
        let a = gio::SimpleAction::new(name, Some(glib::VariantTy::STRING));
        let ui = Rc::downgrade(ui);
        a.connect_activate(move |_, v| {
            if let (Some(ui), Some(id)) = (ui.upgrade(), id_param(v)) {
                f(&ui, &id);
            }
        });
        app.add_action(&a);
    };
    per_profile("launch", |ui, id| ui.launch(id));
    per_profile("stop", |ui, id| ui.stop(id));
    per_profile("lock", |ui, id| ui.lock(id));
    per_profile("unlock", |ui, id| crate::dialogs::unlock(ui, id, false));
    per_profile("open-profile", |ui, id| ui.open_profile(id));
    per_profile("change-passphrase", crate::dialogs::change_passphrase);
    per_profile("delete", crate::dialogs::delete);

    {
        let ui = Rc::downgrade(ui);
        plain(
            "about",
            Box::new(move || {
                if let Some(ui) = ui.upgrade() {
                    about(&ui);
                }
            }),
        );
    }
    // Back from a profile's page to the list: the window's own action.
    {
        let a = gio::SimpleAction::new("show-list", None);
        let weak = Rc::downgrade(ui);
        a.connect_activate(move |_, _| {
            if let Some(ui) = weak.upgrade() {
                ui.show_list();
            }
        });
        ui.window.add_action(&a);
    }
    // The shortcuts window, built when first asked for (GTK would build it with the window).
    {
        let a = gio::SimpleAction::new("show-help-overlay", None);
        let weak = Rc::downgrade(ui);
        a.connect_activate(move |_, _| {
            let Some(ui) = weak.upgrade() else { return };
            let b = gtk::Builder::from_resource("/org/doppel/Doppel/ui/help-overlay.ui");
            if let Some(w) = b.object::<gtk::ShortcutsWindow>("help_overlay") {
                w.set_transient_for(Some(&ui.window));
                w.present();
            }
        });
        ui.window.add_action(&a);
    }
    app.set_accels_for_action("win.show-help-overlay", &["<Control>question"]);
    app.set_accels_for_action("win.show-list", &["<Alt>Left", "Escape"]);
    app.set_accels_for_action("app.lock-all", &["<Control>l"]);

    app.set_accels_for_action("app.new-profile", &["<Control>n"]);
    app.set_accels_for_action("app.quit", &["<Control>q"]);
    // Closing the window (with the tray, it goes to the tray).
    app.set_accels_for_action("window.close", &["<Control>w"]);
}

/// The About window.
fn about(ui: &Ui) {
    let about = adw::AboutWindow::builder()
        .application_name("Doppel")
        .application_icon(APP_ID)
        .developer_name("The Doppel developers")
        .version(env!("CARGO_PKG_VERSION"))
        .license_type(gtk::License::Gpl30)
        .comments(
            "Run a second account of a desktop app side by side with the first, \
             each in a sandbox of its own.",
        )
        .transient_for(&ui.window)
        .modal(true)
        .build();
    about.present();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn animations_are_off_only_where_toasts_crash_with_them() {
        assert!(toasts_need_animations_off(1, 2));
        assert!(toasts_need_animations_off(1, 0));
        assert!(!toasts_need_animations_off(1, 3));
        assert!(!toasts_need_animations_off(1, 7));
        assert!(!toasts_need_animations_off(2, 0));
    }
}
