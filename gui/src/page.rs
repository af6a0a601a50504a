//! A profile's page (template: ui/profile-page.ui): its state and buttons, storage used, its
//! Downloads, the changed files of a copy-on-write home with "Copy Out", rename, colour,
//! passphrase and delete. The page shows one profile, named by its `profile-id` property.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use adw::prelude::*;
use adw::subclass::prelude::*;
use gtk::{gio, glib};

use doppel_core::id::ProfileId;
use doppel_core::profile::{HomeMode, NetworkMode};
use doppel_core::storage::Change;

use crate::model::Snapshot;
use crate::ops;
use crate::window::{color_buttons, icon_with_badge, Ui};

/// Changed files listed on the page; the CLI's `doppel diff` lists all of them.
const MAX_CHANGES: usize = 200;

mod imp {
    use super::*;
    use gtk::{CompositeTemplate, TemplateChild};

    #[derive(Debug, Default, CompositeTemplate, glib::Properties)]
    #[template(resource = "/org/doppel/Doppel/ui/profile-page.ui")]
    #[properties(wrapper_type = super::ProfilePage)]
    pub struct ProfilePage {
        /// The id of the profile shown ("" for none).
        #[property(get, set)]
        pub profile_id: RefCell<String>,
        /// Set while the page fills its widgets, so that doing so is not taken for an edit.
        pub filling: Cell<bool>,
        pub color_buttons: RefCell<Vec<(gtk::ToggleButton, &'static str)>>,
        #[template_child]
        pub window_title: TemplateChild<adw::WindowTitle>,
        #[template_child]
        pub icon_slot: TemplateChild<adw::Bin>,
        #[template_child]
        pub heading: TemplateChild<gtk::Label>,
        #[template_child]
        pub state_label: TemplateChild<gtk::Label>,
        #[template_child]
        pub spinner: TemplateChild<gtk::Spinner>,
        #[template_child]
        pub lock_button: TemplateChild<gtk::Button>,
        #[template_child]
        pub primary_button: TemplateChild<gtk::Button>,
        #[template_child]
        pub usage_row: TemplateChild<adw::ActionRow>,
        #[template_child]
        pub home_row: TemplateChild<adw::ActionRow>,
        #[template_child]
        pub downloads_row: TemplateChild<adw::ActionRow>,
        #[template_child]
        pub changes_group: TemplateChild<adw::PreferencesGroup>,
        #[template_child]
        pub changes_list: TemplateChild<gtk::ListBox>,
        #[template_child]
        pub name_row: TemplateChild<adw::EntryRow>,
        #[template_child]
        pub colors: TemplateChild<gtk::Box>,
        #[template_child]
        pub network_row: TemplateChild<adw::ActionRow>,
        #[template_child]
        pub encryption_group: TemplateChild<adw::PreferencesGroup>,
        #[template_child]
        pub passwd_button: TemplateChild<gtk::Button>,
        #[template_child]
        pub delete_button: TemplateChild<gtk::Button>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for ProfilePage {
        const NAME: &'static str = "DoppelProfilePage";
        type Type = super::ProfilePage;
        type ParentType = gtk::Box;

        fn class_init(klass: &mut Self::Class) {
            klass.bind_template();
        }

        fn instance_init(obj: &glib::subclass::InitializingObject<Self>) {
            obj.init_template();
        }
    }

    #[glib::derived_properties]
    impl ObjectImpl for ProfilePage {}
    impl WidgetImpl for ProfilePage {}
    impl BoxImpl for ProfilePage {}
}

glib::wrapper! {
    /// One profile's page.
    pub struct ProfilePage(ObjectSubclass<imp::ProfilePage>)
        @extends gtk::Box, gtk::Widget,
        @implements gtk::Accessible, gtk::Buildable, gtk::ConstraintTarget, gtk::Orientable;
}

impl Default for ProfilePage {
    fn default() -> Self {
        Self::new()
    }
}

impl ProfilePage {
    pub fn new() -> Self {
        glib::Object::new()
    }

    /// The profile shown, if any.
    pub fn profile(&self) -> Option<ProfileId> {
        ProfileId::parse(&self.profile_id()).ok()
    }
}

/// Connects the page's own controls (once, when the window is built).
pub fn connect(ui: &Rc<Ui>) {
    let Some(page) = ui.page.get() else { return };
    let t = page.imp();

    let weak = Rc::downgrade(ui);
    let buttons = color_buttons(&t.colors, move |_, hex| {
        let Some(ui) = weak.upgrade() else { return };
        let Some(page) = ui.page.get() else { return };
        if page.imp().filling.get() {
            return;
        }
        let Some(id) = page.profile() else { return };
        let dirs = ui.dirs.clone();
        let u = Rc::clone(&ui);
        ui.spawn(
            move || ops::set_color(&dirs, &id, hex),
            move |r| {
                match r {
                    Ok(warnings) => warnings.iter().for_each(|w| u.toast(w)),
                    Err(e) => u.toast(&e),
                }
                u.refresh();
            },
        );
    });
    *t.color_buttons.borrow_mut() = buttons;

    {
        let weak = Rc::downgrade(ui);
        t.name_row.connect_apply(move |row| {
            let Some(ui) = weak.upgrade() else { return };
            let Some(id) = ui.page.get().and_then(ProfilePage::profile) else {
                return;
            };
            let name = row.text().trim().to_owned();
            let (dirs, owned) = (ui.dirs.clone(), id.clone());
            let u = Rc::clone(&ui);
            ui.spawn(
                move || ops::rename(&dirs, &owned, &name),
                move |r| {
                    match r {
                        Ok(warnings) => {
                            u.toast("Renamed");
                            warnings.iter().for_each(|w| u.toast(w));
                        }
                        Err(e) => u.toast(&e),
                    }
                    u.refresh();
                    fill_static(&u, &id);
                },
            );
        });
    }
    {
        let weak = Rc::downgrade(ui);
        t.downloads_row.connect_activated(move |_| {
            let Some(ui) = weak.upgrade() else { return };
            match ops::downloads(&ui.dirs) {
                Some(dir) => {
                    let uri = gio::File::for_path(&dir).uri();
                    gtk::show_uri(Some(&ui.window), &uri, gtk::gdk::CURRENT_TIME);
                }
                None => ui.toast("You have no Downloads folder; make ~/Downloads and try again"),
            }
        });
    }
}

/// Shows profile `id` on the page: what does not change with its state now, the state from
/// the last snapshot, and the slow parts (space used, changed files) once they are known.
pub fn show(ui: &Rc<Ui>, id: &ProfileId) {
    let Some(page) = ui.page.get() else { return };
    page.set_profile_id(id.as_str());
    fill_static(ui, id);
    if let Some(snap) = ui.last_snapshot() {
        update(ui, &snap);
    }
    load_details(ui, id);
}

/// Fills what comes from the profile file.
fn fill_static(ui: &Ui, id: &ProfileId) {
    let Some(page) = ui.page.get() else { return };
    let t = page.imp();
    let p = match ops::profile(&ui.dirs, id) {
        Ok(p) => p,
        Err(e) => {
            ui.toast(&e);
            ui.show_list();
            return;
        }
    };
    t.filling.set(true);
    let label = p.label();
    t.window_title.set_title(&label);
    t.heading.set_label(&label);
    t.icon_slot
        .set_child(Some(&icon_with_badge(&ui.icon_of(id), &p.color, 64)));
    t.name_row.set_text(&p.name);
    for (b, hex) in t.color_buttons.borrow().iter() {
        b.set_active(hex.eq_ignore_ascii_case(&p.color));
    }
    t.home_row.set_subtitle(match p.home {
        HomeMode::Private => "Private: a home of its own",
        HomeMode::Overlay => "Copy-on-write: sees your files, keeps its changes apart",
    });
    t.network_row.set_subtitle(match p.network {
        NetworkMode::Isolated => "Isolated: its own network stack, no access to local services",
        NetworkMode::Host => "Host: shares your network",
        NetworkMode::None => "None: offline",
    });
    t.encryption_group.set_visible(p.encrypted);
    t.changes_group.set_visible(p.home == HomeMode::Overlay);
    let target = id.as_str().to_variant();
    for (b, action) in [
        (&*t.passwd_button, "app.change-passphrase"),
        (&*t.delete_button, "app.delete"),
    ] {
        b.set_action_target_value(Some(&target));
        b.set_action_name(Some(action));
    }
    t.filling.set(false);
}

/// Follows the window's snapshot: the state and buttons of the profile shown. A profile that
/// went away (deleted from the CLI) takes the window back to the list.
pub fn update(ui: &Ui, snap: &Snapshot) {
    let Some(id) = ui.shown_profile() else { return };
    let Some(page) = ui.page.get() else { return };
    let t = page.imp();
    let Some(row) = snap.rows.iter().find(|r| r.id == id) else {
        ui.show_list();
        return;
    };
    if t.heading.label() != row.title {
        fill_static(ui, &id);
    }
    t.state_label.set_label(&row.subtitle);
    t.spinner.set_spinning(row.busy);
    t.spinner.set_visible(row.busy);
    let target = id.as_str().to_variant();
    match row.primary.filter(|_| !row.busy) {
        Some(p) => {
            let (label, action, class) = p.button();
            let b = &t.primary_button;
            b.set_label(label);
            b.set_css_classes(&["pill", class]);
            b.set_action_target_value(Some(&target));
            b.set_action_name(Some(action));
            b.set_visible(true);
        }
        None => t.primary_button.set_visible(false),
    }
    match row.lock.filter(|_| !row.busy) {
        Some(l) => {
            let (label, action) = l.button();
            let b = &t.lock_button;
            b.set_label(label);
            b.set_action_target_value(Some(&target));
            b.set_action_name(Some(action));
            b.set_visible(true);
        }
        None => t.lock_button.set_visible(false),
    }
    // Deleting a running profile is refused; say so before the person tries.
    let running = row.primary == Some(crate::model::PrimaryAction::Stop);
    t.delete_button.set_sensitive(!running && !row.busy);
    t.delete_button
        .set_tooltip_text(running.then_some("Stop the profile to delete it"));
}

/// Measures space used and lists changed files off the main loop.
pub fn load_details(ui: &Rc<Ui>, id: &ProfileId) {
    let Some(page) = ui.page.get() else { return };
    let t = page.imp();
    t.usage_row.set_subtitle("Counting…");
    let (dirs, owned) = (ui.dirs.clone(), id.clone());
    let u = Rc::clone(ui);
    let id = id.clone();
    ui.spawn(
        move || ops::details(&dirs, &owned),
        move |r| {
            if u.shown_profile().as_ref() != Some(&id) {
                return;
            }
            let Some(page) = u.page.get() else { return };
            let t = page.imp();
            match r {
                Ok(d) => {
                    t.usage_row.set_subtitle(&d.usage);
                    show_changes(&u, &id, d.changes);
                }
                Err(e) => t.usage_row.set_subtitle(&e),
            }
        },
    );
}

fn show_changes(ui: &Rc<Ui>, id: &ProfileId, changes: Option<Result<Vec<Change>, String>>) {
    let Some(page) = ui.page.get() else { return };
    let list = &page.imp().changes_list;
    while let Some(child) = list.first_child() {
        list.remove(&child);
    }
    let message_row = |title: &str| {
        adw::ActionRow::builder()
            .title(title)
            .use_markup(false)
            .css_classes(["dim-label"])
            .build()
    };
    let changes = match changes {
        None => return,
        Some(Err(e)) => {
            list.append(&message_row(&e));
            return;
        }
        Some(Ok(c)) => c,
    };
    if changes.is_empty() {
        list.append(&message_row("Nothing changed yet"));
        return;
    }
    for c in changes.iter().take(MAX_CHANGES) {
        let (path, what) = match c {
            Change::Changed(p) => (p, "Created or changed"),
            Change::Deleted(p) => (p, "Deleted here; still in your home"),
        };
        let row = adw::ActionRow::builder()
            .title(path.display().to_string())
            .subtitle(what)
            .use_markup(false)
            .build();
        if let Change::Changed(rel) = c {
            let b = gtk::Button::builder()
                .label("Copy Out")
                .tooltip_text("Copy it to the same place in your own home")
                .valign(gtk::Align::Center)
                .build();
            let weak = Rc::downgrade(ui);
            let (id, rel) = (id.clone(), rel.clone());
            b.connect_clicked(move |b| {
                let Some(ui) = weak.upgrade() else { return };
                b.set_sensitive(false);
                let (dirs, id, rel) = (ui.dirs.clone(), id.clone(), rel.clone());
                let (u, b) = (Rc::clone(&ui), b.clone());
                ui.spawn(
                    move || ops::recover(&dirs, &id, &rel),
                    move |r| match r {
                        Ok(dest) => u.toast(&format!("Copied to {}", dest.display())),
                        Err(e) => {
                            b.set_sensitive(true);
                            u.toast(&e);
                        }
                    },
                );
            });
            row.add_suffix(&b);
        }
        list.append(&row);
    }
    if changes.len() > MAX_CHANGES {
        list.append(&message_row(&format!(
            "and {} more; `doppel diff {id}` lists them all",
            changes.len() - MAX_CHANGES
        )));
    }
}
