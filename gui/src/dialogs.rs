//! The modal dialogs: new profile, its recovery key, and unlock.

use std::cell::RefCell;
use std::rc::Rc;

use adw::prelude::*;
use gtk::glib;
use zeroize::Zeroizing;

use doppel_core::id::ProfileId;
use doppel_core::profile::{HomeMode, NetworkMode};

use crate::model::{self, AppChoice, Strength, PRESET_COLORS};
use crate::ops;
use crate::window::{app_icon, color_dot, Ui};

/// A modal window over the main one that Escape closes.
fn modal(ui: &Ui, title: &str, width: i32, height: i32) -> adw::Window {
    let win = adw::Window::builder()
        .title(title)
        .modal(true)
        .transient_for(&ui.window)
        .default_width(width)
        .default_height(height)
        .destroy_with_parent(true)
        .build();
    let keys = gtk::ShortcutController::new();
    keys.add_shortcut(gtk::Shortcut::new(
        gtk::ShortcutTrigger::parse_string("Escape"),
        Some(gtk::NamedAction::new("window.close")),
    ));
    win.add_controller(keys);
    win
}

/// A header bar with Cancel on the left and `action` (suggested) on the right.
fn dialog_header(title: &str, action: &str) -> (adw::HeaderBar, gtk::Button, gtk::Spinner) {
    let header = adw::HeaderBar::builder()
        .show_end_title_buttons(false)
        .show_start_title_buttons(false)
        .title_widget(&adw::WindowTitle::new(title, ""))
        .build();
    let cancel = gtk::Button::builder()
        .label("Cancel")
        .action_name("window.close")
        .build();
    header.pack_start(&cancel);
    let ok = gtk::Button::builder()
        .label(action)
        .css_classes(["suggested-action"])
        .sensitive(false)
        .build();
    header.pack_end(&ok);
    let spinner = gtk::Spinner::new();
    header.pack_end(&spinner);
    (header, ok, spinner)
}

/// Puts `header` over a padded column of `children` as `win`'s content; returns the column.
fn dialog_body(
    win: &adw::Window,
    header: &adw::HeaderBar,
    spacing: i32,
    children: &[&gtk::Widget],
) -> gtk::Box {
    let content = gtk::Box::builder()
        .orientation(gtk::Orientation::Vertical)
        .spacing(spacing)
        .margin_top(18)
        .margin_bottom(24)
        .margin_start(24)
        .margin_end(24)
        .build();
    for c in children {
        content.append(*c);
    }
    let outer = gtk::Box::new(gtk::Orientation::Vertical, 0);
    outer.append(header);
    outer.append(&content);
    win.set_content(Some(&outer));
    content
}

/// The widgets of the new-profile form that its logic reads.
struct Form {
    win: adw::Window,
    create: gtk::Button,
    spinner: gtk::Spinner,
    apps: gtk::ListBox,
    choices: RefCell<Vec<AppChoice>>,
    name: adw::EntryRow,
    color: RefCell<String>,
    home: adw::ComboRow,
    network: adw::ComboRow,
    encrypt: adw::ExpanderRow,
    pass: adw::PasswordEntryRow,
    repeat: adw::PasswordEntryRow,
    strength: adw::ActionRow,
    problem: gtk::Label,
    content: gtk::Box,
}

impl Form {
    fn chosen(&self) -> Option<AppChoice> {
        let row = self.apps.selected_row()?;
        let i = usize::try_from(row.index()).ok()?;
        self.choices.borrow().get(i).cloned()
    }

    fn check(&self) {
        let pass = self.pass.text();
        let encrypt = self.encrypt.enables_expansion();
        self.strength.set_title(Strength::of(&pass).hint());
        let problem = model::form_problem(
            self.chosen().is_some(),
            &self.name.text(),
            encrypt,
            &pass,
            &self.repeat.text(),
        );
        self.problem.remove_css_class("error");
        self.problem.set_label(problem.unwrap_or(""));
        self.create.set_sensitive(problem.is_none());
    }

    fn request(&self) -> Option<ops::NewProfile> {
        let app = self.chosen()?;
        Some(ops::NewProfile {
            desktop_id: app.desktop_id,
            name: self.name.text().trim().to_owned(),
            color: self.color.borrow().clone(),
            home: match self.home.selected() {
                1 => HomeMode::Overlay,
                _ => HomeMode::Private,
            },
            network: match self.network.selected() {
                1 => Some(NetworkMode::Isolated),
                2 => Some(NetworkMode::Host),
                3 => Some(NetworkMode::None),
                _ => None,
            },
            passphrase: self
                .encrypt
                .enables_expansion()
                .then(|| Zeroizing::new(self.pass.text().to_string())),
        })
    }

    fn set_working(&self, working: bool) {
        self.spinner.set_spinning(working);
        self.create.set_sensitive(!working);
        self.content.set_sensitive(!working);
    }
}

/// Opens the new-profile dialog.
pub fn new_profile(ui: &Rc<Ui>) {
    let win = modal(ui, "New Profile", 560, 720);
    let (header, create, spinner) = dialog_header("New Profile", "Create");
    create.set_widget_name("create-button");

    // The app: a searchable list, apps with a recipe first.
    let search = gtk::SearchEntry::builder()
        .name("app-search")
        .placeholder_text("Search apps")
        .build();
    let apps = gtk::ListBox::builder()
        .name("app-list")
        .selection_mode(gtk::SelectionMode::Single)
        .css_classes(["boxed-list"])
        .valign(gtk::Align::Start)
        .build();
    apps.set_placeholder(Some(
        &gtk::Label::builder()
            .label("Looking for installed apps…")
            .css_classes(["dim-label"])
            .margin_top(18)
            .margin_bottom(18)
            .build(),
    ));
    let apps_scroll = gtk::ScrolledWindow::builder()
        .hscrollbar_policy(gtk::PolicyType::Never)
        .min_content_height(220)
        .max_content_height(220)
        .child(&apps)
        .build();
    let app_group = adw::PreferencesGroup::builder().title("App").build();
    let app_box = gtk::Box::new(gtk::Orientation::Vertical, 6);
    app_box.append(&search);
    app_box.append(&apps_scroll);
    app_group.add(&app_box);

    // The profile.
    let name = adw::EntryRow::builder()
        .name("name-row")
        .title("Name")
        .build();
    let colors = gtk::Box::new(gtk::Orientation::Horizontal, 2);
    colors.set_valign(gtk::Align::Center);
    let color_row = adw::ActionRow::builder().title("Colour").build();
    color_row.add_suffix(&colors);
    let home = adw::ComboRow::builder()
        .title("Home Folder")
        .subtitle("Copy-on-write sees your files but keeps its changes apart")
        .model(&gtk::StringList::new(&["Private", "Copy-on-write"]))
        .build();
    let network = adw::ComboRow::builder()
        .name("network-row")
        .title("Network")
        .model(&gtk::StringList::new(&[
            "App default",
            "Isolated",
            "Host",
            "None",
        ]))
        .build();
    let profile_group = adw::PreferencesGroup::builder().title("Profile").build();
    profile_group.add(&name);
    profile_group.add(&color_row);
    profile_group.add(&home);
    profile_group.add(&network);

    // Encryption.
    let encrypt = adw::ExpanderRow::builder()
        .title("Encrypt Data")
        .subtitle("A passphrase is needed to start it")
        .show_enable_switch(true)
        .enable_expansion(false)
        .build();
    let pass = adw::PasswordEntryRow::builder().title("Passphrase").build();
    let repeat = adw::PasswordEntryRow::builder()
        .title("Repeat Passphrase")
        .build();
    let strength = adw::ActionRow::builder()
        .title(Strength::Empty.hint())
        .css_classes(["dim-label"])
        .build();
    encrypt.add_row(&pass);
    encrypt.add_row(&repeat);
    encrypt.add_row(&strength);
    let encrypt_group = adw::PreferencesGroup::new();
    encrypt_group.add(&encrypt);

    let problem = gtk::Label::builder()
        .wrap(true)
        .xalign(0.0)
        .css_classes(["dim-label"])
        .build();

    let content = gtk::Box::builder()
        .orientation(gtk::Orientation::Vertical)
        .spacing(24)
        .build();
    content.append(&app_group);
    content.append(&profile_group);
    content.append(&encrypt_group);
    content.append(&problem);
    let clamp = adw::Clamp::builder()
        .maximum_size(520)
        .margin_top(18)
        .margin_bottom(18)
        .margin_start(12)
        .margin_end(12)
        .child(&content)
        .build();
    let scroll = gtk::ScrolledWindow::builder()
        .hscrollbar_policy(gtk::PolicyType::Never)
        .vexpand(true)
        .child(&clamp)
        .build();
    let outer = gtk::Box::new(gtk::Orientation::Vertical, 0);
    outer.append(&header);
    outer.append(&scroll);
    win.set_content(Some(&outer));

    let form = Rc::new(Form {
        win: win.clone(),
        create: create.clone(),
        spinner,
        apps: apps.clone(),
        choices: RefCell::default(),
        name: name.clone(),
        color: RefCell::new(PRESET_COLORS[0].0.to_owned()),
        home,
        network,
        encrypt: encrypt.clone(),
        pass: pass.clone(),
        repeat: repeat.clone(),
        strength,
        problem,
        content,
    });

    let mut first: Option<gtk::ToggleButton> = None;
    for (hex, label) in PRESET_COLORS {
        let b = gtk::ToggleButton::builder()
            .child(&color_dot(hex, 20))
            .tooltip_text(label)
            .css_classes(["flat", "circular", "color-choice"])
            .build();
        b.update_property(&[gtk::accessible::Property::Label(label)]);
        if let Some(f) = &first {
            b.set_group(Some(f));
        } else {
            b.set_active(true);
            first = Some(b.clone());
        }
        let f = Rc::downgrade(&form);
        b.connect_toggled(move |b| {
            if let (true, Some(f)) = (b.is_active(), f.upgrade()) {
                *f.color.borrow_mut() = hex.to_owned();
            }
        });
        colors.append(&b);
    }

    let query = Rc::new(RefCell::new(String::new()));
    {
        let f = Rc::downgrade(&form);
        let query = Rc::clone(&query);
        apps.set_filter_func(move |row| {
            let Some(f) = f.upgrade() else { return true };
            let i = usize::try_from(row.index()).unwrap_or(usize::MAX);
            let q = query.borrow();
            let shown = f.choices.borrow().get(i).map_or(true, |a| a.matches(&q));
            shown
        });
    }
    {
        let apps = apps.clone();
        search.connect_search_changed(move |s| {
            *query.borrow_mut() = s.text().to_lowercase();
            apps.invalidate_filter();
        });
    }
    let recheck = {
        let f = Rc::downgrade(&form);
        move || {
            if let Some(f) = f.upgrade() {
                f.check();
            }
        }
    };
    {
        let r = recheck.clone();
        apps.connect_selected_rows_changed(move |_| r());
    }
    for entry in [
        name.upcast_ref::<gtk::Editable>(),
        pass.upcast_ref(),
        repeat.upcast_ref(),
    ] {
        let r = recheck.clone();
        entry.connect_changed(move |_| r());
    }
    {
        let r = recheck.clone();
        encrypt.connect_enable_expansion_notify(move |_| r());
    }
    {
        let f = Rc::downgrade(&form);
        let ui = Rc::clone(ui);
        create.connect_clicked(move |_| {
            if let Some(f) = f.upgrade() {
                submit(&ui, &f);
            }
        });
    }

    // Reading every desktop file takes a moment: off the main loop.
    {
        let dirs = ui.dirs.clone();
        let f = Rc::downgrade(&form);
        ui.spawn(
            move || ops::installed_apps(&dirs),
            move |found| {
                let Some(f) = f.upgrade() else { return };
                for a in &found {
                    let row = adw::ActionRow::builder()
                        .title(&a.name)
                        .subtitle(a.subtitle())
                        .use_markup(false)
                        .build();
                    row.add_prefix(&app_icon(&a.icon, 32));
                    f.apps.append(&row);
                }
                f.apps.set_placeholder(Some(
                    &gtk::Label::builder()
                        .label("No apps found")
                        .css_classes(["dim-label"])
                        .margin_top(18)
                        .margin_bottom(18)
                        .build(),
                ));
                *f.choices.borrow_mut() = found;
                f.check();
            },
        );
    }
    // The window owns the form until it closes; every closure above holds it weakly.
    let owner = RefCell::new(Some(Rc::clone(&form)));
    win.connect_close_request(move |_| {
        owner.borrow_mut().take();
        glib::Propagation::Proceed
    });
    form.check();
    win.present();
    search.grab_focus();
}

fn submit(ui: &Rc<Ui>, f: &Rc<Form>) {
    let Some(req) = f.request() else {
        f.check();
        return;
    };
    f.set_working(true);
    let dirs = ui.dirs.clone();
    let (ui, f) = (Rc::clone(ui), Rc::clone(f));
    ui.clone().spawn(
        move || ops::create(&dirs, req),
        move |r| match r {
            Err(e) => {
                f.set_working(false);
                f.problem.set_label(&e);
                f.problem.add_css_class("error");
            }
            Ok(made) => {
                f.win.close();
                ui.refresh();
                for w in &made.warnings {
                    ui.toast(w);
                }
                match made.recovery {
                    Some(key) => recovery_key(&ui, made.id, &made.label, key, made.generic),
                    None => created_toast(&ui, &made.id, &made.label, made.generic),
                }
            }
        },
    );
}

/// "Created …" with a Launch Now button.
fn created_toast(ui: &Ui, id: &ProfileId, label: &str, generic: bool) {
    let title = if generic {
        format!("Created {label}; no recipe knows this app, so it may need tweaks")
    } else {
        format!("Created {label}")
    };
    let toast = adw::Toast::builder()
        .title(glib::markup_escape_text(&title))
        .button_label("Launch Now")
        .action_name("app.launch")
        .action_target(&id.as_str().to_variant())
        .timeout(10)
        .build();
    ui.add_toast(toast);
}

/// Shows an encrypted profile's recovery key, once, with a Copy button.
fn recovery_key(ui: &Rc<Ui>, id: ProfileId, label: &str, key: Zeroizing<String>, generic: bool) {
    let win = modal(ui, "Recovery Key", 480, 360);
    let header = adw::HeaderBar::builder()
        .show_end_title_buttons(false)
        .show_start_title_buttons(false)
        .title_widget(&adw::WindowTitle::new("Recovery Key", ""))
        .build();
    let done = gtk::Button::builder()
        .label("Done")
        .css_classes(["suggested-action"])
        .action_name("window.close")
        .build();
    header.pack_end(&done);
    let body = gtk::Label::builder()
        .label(format!(
            "This key opens {label} if its passphrase is forgotten. It is shown only \
             this once: write it down or keep it in a password manager."
        ))
        .wrap(true)
        .xalign(0.0)
        .build();
    let key_label = gtk::Label::builder()
        .label(key.as_str())
        .selectable(true)
        .wrap(true)
        .wrap_mode(gtk::pango::WrapMode::Char)
        .css_classes(["monospace", "title-4"])
        .margin_top(12)
        .margin_bottom(12)
        .margin_start(12)
        .margin_end(12)
        .build();
    let card = gtk::Box::builder().css_classes(["card"]).build();
    card.append(&key_label);
    let copy = gtk::Button::builder()
        .label("Copy")
        .halign(gtk::Align::Center)
        .css_classes(["pill"])
        .build();
    {
        let key = key.clone();
        copy.connect_clicked(move |b| {
            b.clipboard().set_text(&key);
            b.set_label("Copied");
        });
    }
    dialog_body(
        &win,
        &header,
        18,
        &[body.upcast_ref(), card.upcast_ref(), copy.upcast_ref()],
    );
    {
        let ui = Rc::clone(ui);
        let label = label.to_owned();
        win.connect_close_request(move |_| {
            created_toast(&ui, &id, &label, generic);
            glib::Propagation::Proceed
        });
    }
    win.present();
    done.grab_focus();
}

/// Asks for the passphrase of locked profile `id` and unlocks it; then launches it if `launch`.
pub fn unlock(ui: &Rc<Ui>, id: &ProfileId, launch: bool) {
    let label = ops::label(&ui.dirs, id);
    let win = modal(ui, "Unlock Profile", 420, -1);
    let (header, ok, spinner) = dialog_header("Unlock Profile", "Unlock");
    ok.set_widget_name("unlock-button");
    let intro = gtk::Label::builder()
        .label(format!(
            "Enter the passphrase of {label}, or its recovery key."
        ))
        .wrap(true)
        .xalign(0.0)
        .build();
    let entry = gtk::PasswordEntry::builder()
        .name("passphrase-entry")
        .show_peek_icon(true)
        .activates_default(true)
        .build();
    entry.update_property(&[gtk::accessible::Property::Label("Passphrase")]);
    let error = gtk::Label::builder()
        .wrap(true)
        .xalign(0.0)
        .css_classes(["error"])
        .visible(false)
        .build();
    dialog_body(
        &win,
        &header,
        12,
        &[intro.upcast_ref(), entry.upcast_ref(), error.upcast_ref()],
    );
    win.set_default_widget(Some(&ok));

    {
        let ok = ok.clone();
        entry.connect_changed(move |e| ok.set_sensitive(!e.text().is_empty()));
    }
    let id = id.clone();
    let ui = Rc::clone(ui);
    let win2 = win.clone();
    let entry2 = entry.clone();
    ok.connect_clicked(move |ok| {
        let secret = Zeroizing::new(entry2.text().to_string());
        if secret.is_empty() {
            return;
        }
        ok.set_sensitive(false);
        entry2.set_sensitive(false);
        spinner.set_spinning(true);
        error.set_visible(false);
        let (dirs, owned) = (ui.dirs.clone(), id.clone());
        let (ui2, id2, win, entry, ok, spinner, error) = (
            Rc::clone(&ui),
            id.clone(),
            win2.clone(),
            entry2.clone(),
            ok.clone(),
            spinner.clone(),
            error.clone(),
        );
        ui.spawn(
            move || ops::unlock(&dirs, &owned, &secret),
            move |r| {
                spinner.set_spinning(false);
                match r {
                    Ok(()) => {
                        win.close();
                        ui2.refresh();
                        if launch {
                            ui2.launch(&id2);
                        }
                    }
                    Err(e) => {
                        error.set_label(&e);
                        error.set_visible(true);
                        entry.set_sensitive(true);
                        entry.select_region(0, -1);
                        entry.grab_focus();
                        ok.set_sensitive(true);
                    }
                }
            },
        );
    });
    win.present();
    entry.grab_focus();
}

/// Asks for the current passphrase (or recovery key) of `id` and a new one, twice.
pub fn change_passphrase(ui: &Rc<Ui>, id: &ProfileId) {
    let label = ops::label(&ui.dirs, id);
    let win = modal(ui, "Change Passphrase", 460, -1);
    let (header, ok, spinner) = dialog_header("Change Passphrase", "Change");
    let intro = gtk::Label::builder()
        .label(format!(
            "The new passphrase opens {label} from now on; its recovery key keeps working."
        ))
        .wrap(true)
        .xalign(0.0)
        .build();
    let old = adw::PasswordEntryRow::builder()
        .title("Current Passphrase or Recovery Key")
        .build();
    let new = adw::PasswordEntryRow::builder()
        .title("New Passphrase")
        .build();
    let repeat = adw::PasswordEntryRow::builder()
        .title("Repeat New Passphrase")
        .build();
    let strength = adw::ActionRow::builder()
        .title(Strength::Empty.hint())
        .css_classes(["dim-label"])
        .build();
    let group = adw::PreferencesGroup::new();
    for row in [
        old.upcast_ref::<gtk::Widget>(),
        new.upcast_ref(),
        repeat.upcast_ref(),
    ] {
        group.add(row);
    }
    group.add(&strength);
    let problem = gtk::Label::builder()
        .wrap(true)
        .xalign(0.0)
        .css_classes(["dim-label"])
        .build();
    let content = dialog_body(
        &win,
        &header,
        18,
        &[intro.upcast_ref(), group.upcast_ref(), problem.upcast_ref()],
    );

    let check = {
        let (old, new, repeat, ok, strength, problem) = (
            old.clone(),
            new.clone(),
            repeat.clone(),
            ok.clone(),
            strength.clone(),
            problem.clone(),
        );
        move || {
            strength.set_title(Strength::of(&new.text()).hint());
            let p = model::passphrase_problem(&new.text(), &repeat.text()).or_else(|| {
                old.text()
                    .is_empty()
                    .then_some("Enter the current passphrase")
            });
            problem.remove_css_class("error");
            problem.set_label(p.unwrap_or(""));
            ok.set_sensitive(p.is_none());
        }
    };
    for e in [&old, &new, &repeat] {
        let c = check.clone();
        e.connect_changed(move |_| c());
    }
    check();

    let id = id.clone();
    let ui = Rc::clone(ui);
    let w = win.clone();
    ok.connect_clicked(move |ok| {
        let (o, n) = (
            Zeroizing::new(old.text().to_string()),
            Zeroizing::new(new.text().to_string()),
        );
        ok.set_sensitive(false);
        content.set_sensitive(false);
        spinner.set_spinning(true);
        let (dirs, owned) = (ui.dirs.clone(), id.clone());
        let (u, w, ok, content, spinner, problem) = (
            Rc::clone(&ui),
            w.clone(),
            ok.clone(),
            content.clone(),
            spinner.clone(),
            problem.clone(),
        );
        ui.spawn(
            move || ops::passwd(&dirs, &owned, &o, &n),
            move |r| {
                spinner.set_spinning(false);
                match r {
                    Ok(()) => {
                        w.close();
                        u.toast("Passphrase changed");
                    }
                    Err(e) => {
                        problem.set_label(&e);
                        problem.add_css_class("error");
                        content.set_sensitive(true);
                        ok.set_sensitive(true);
                    }
                }
            },
        );
    });
    win.present();
}

/// Asks before deleting `id`, naming what goes, then deletes it.
pub fn delete(ui: &Rc<Ui>, id: &ProfileId) {
    let p = match ops::profile(&ui.dirs, id) {
        Ok(p) => p,
        Err(e) => return ui.toast(&e),
    };
    let label = p.label();
    let mut gone = vec![format!(
        "its home folder and settings in {}",
        ui.dirs.profile_data(id).display()
    )];
    if p.encrypted {
        gone.push("its encrypted volume (the passphrase and recovery key stop mattering)".into());
    }
    if p.home == HomeMode::Overlay {
        gone.push(
            "every file it created or changed over your home (copy out what you need first)".into(),
        );
    }
    let body = format!(
        "This deletes {}. It cannot be undone. Your own home folder and your Downloads are kept.",
        gone.join("; ")
    );
    let dialog = adw::MessageDialog::builder()
        .heading(format!("Delete {label}?"))
        .body(body)
        .modal(true)
        .transient_for(&ui.window)
        .build();
    dialog.add_response("cancel", "_Cancel");
    dialog.add_response("delete", "_Delete");
    dialog.set_response_appearance("delete", adw::ResponseAppearance::Destructive);
    dialog.set_default_response(Some("cancel"));
    dialog.set_close_response("cancel");
    let ui = Rc::clone(ui);
    let id = id.clone();
    dialog.connect_response(None, move |_, response| {
        if response != "delete" {
            return;
        }
        ui.set_busy(&id, true);
        let (dirs, owned) = (ui.dirs.clone(), id.clone());
        let (u, id, label) = (Rc::clone(&ui), id.clone(), label.clone());
        ui.spawn(
            move || ops::delete(&dirs, &owned),
            move |r| {
                u.set_busy(&id, false);
                match r {
                    Ok(()) => {
                        u.show_list();
                        u.toast(&format!("Deleted {label}"));
                    }
                    Err(e) => u.toast(&e),
                }
                u.refresh();
            },
        );
    });
    dialog.present();
}
