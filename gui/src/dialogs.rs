//! The modal dialogs' logic: new profile, its recovery key, unlock, change passphrase (their
//! widgets are composite templates, see templates.rs), and the delete confirmation.

use std::cell::RefCell;
use std::rc::Rc;

use adw::prelude::*;
use gtk::glib;
use zeroize::Zeroizing;

use doppel_core::id::ProfileId;
use doppel_core::profile::{HomeMode, NetworkMode};

use crate::model::{self, AppChoice, Strength, PRESET_COLORS};
use crate::ops;
use crate::templates::{NewProfileDialog, PassphraseDialog, RecoveryKeyDialog, UnlockDialog};
use crate::window::{app_icon, color_buttons, Ui};

/// A dim line in an empty list.
fn placeholder(text: &str) -> gtk::Label {
    gtk::Label::builder()
        .label(text)
        .css_classes(["dim-label"])
        .margin_top(18)
        .margin_bottom(18)
        .build()
}

/// The new-profile form (template: ui/new-profile.ui) and what its logic keeps.
struct Form {
    win: NewProfileDialog,
    choices: RefCell<Vec<AppChoice>>,
    color: RefCell<String>,
}

impl Form {
    fn chosen(&self) -> Option<AppChoice> {
        let row = self.win.parts().apps.selected_row()?;
        let i = usize::try_from(row.index()).ok()?;
        self.choices.borrow().get(i).cloned()
    }

    fn check(&self) {
        let p = self.win.parts();
        let pass = p.pass.text();
        let encrypt = p.encrypt.enables_expansion();
        p.strength.set_title(Strength::of(&pass).hint());
        let problem = model::form_problem(
            self.chosen().is_some(),
            &p.name.text(),
            encrypt,
            &pass,
            &p.repeat.text(),
        );
        p.problem.remove_css_class("error");
        p.problem.set_label(problem.unwrap_or(""));
        p.create.set_sensitive(problem.is_none());
    }

    fn request(&self) -> Option<ops::NewProfile> {
        let app = self.chosen()?;
        let p = self.win.parts();
        Some(ops::NewProfile {
            desktop_id: app.desktop_id,
            name: p.name.text().trim().to_owned(),
            color: self.color.borrow().clone(),
            home: match p.home.selected() {
                1 => HomeMode::Overlay,
                _ => HomeMode::Private,
            },
            network: match p.network.selected() {
                1 => Some(NetworkMode::Isolated),
                2 => Some(NetworkMode::Host),
                3 => Some(NetworkMode::None),
                _ => None,
            },
            passphrase: p
                .encrypt
                .enables_expansion()
                .then(|| Zeroizing::new(p.pass.text().to_string())),
        })
    }

    fn set_working(&self, working: bool) {
        let p = self.win.parts();
        p.spinner.set_spinning(working);
        p.create.set_sensitive(!working);
        p.content.set_sensitive(!working);
    }

    fn show_problem(&self, message: &str) {
        let p = self.win.parts();
        p.problem.set_label(message);
        p.problem.add_css_class("error");
    }
}

/// Opens the new-profile dialog.
pub fn new_profile(ui: &Rc<Ui>) {
    let win = NewProfileDialog::new(&ui.window);
    let p = win.parts();
    p.apps
        .set_placeholder(Some(&placeholder("Looking for installed apps…")));
    p.strength.set_title(Strength::Empty.hint());
    let form = Rc::new(Form {
        win: win.clone(),
        choices: RefCell::default(),
        color: RefCell::new(PRESET_COLORS[0].0.to_owned()),
    });

    {
        let f = Rc::downgrade(&form);
        color_buttons(&p.colors, move |_, hex| {
            if let Some(f) = f.upgrade() {
                *f.color.borrow_mut() = hex.to_owned();
            }
        });
    }

    let query = Rc::new(RefCell::new(String::new()));
    {
        let f = Rc::downgrade(&form);
        let query = Rc::clone(&query);
        p.apps.set_filter_func(move |row| {
            let Some(f) = f.upgrade() else { return true };
            let i = usize::try_from(row.index()).unwrap_or(usize::MAX);
            let q = query.borrow();
            let shown = f.choices.borrow().get(i).map_or(true, |a| a.matches(&q));
            shown
        });
    }
    {
        let apps = p.apps.get();
        p.search.connect_search_changed(move |s| {
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
        p.apps.connect_selected_rows_changed(move |_| r());
    }
    for entry in [
        p.name.upcast_ref::<gtk::Editable>(),
        p.pass.upcast_ref(),
        p.repeat.upcast_ref(),
    ] {
        let r = recheck.clone();
        entry.connect_changed(move |_| r());
    }
    {
        let r = recheck.clone();
        p.encrypt.connect_enable_expansion_notify(move |_| r());
    }
    {
        let f = Rc::downgrade(&form);
        let ui = Rc::clone(ui);
        p.create.connect_clicked(move |_| {
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
                let apps = &f.win.parts().apps;
                for a in &found {
                    let row = adw::ActionRow::builder()
                        .title(&a.name)
                        .subtitle(a.subtitle())
                        .use_markup(false)
                        .build();
                    row.add_prefix(&app_icon(&a.icon, 32));
                    apps.append(&row);
                }
                apps.set_placeholder(Some(&placeholder("No apps found")));
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
    p.search.grab_focus();
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
                f.show_problem(&e);
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
    let win = RecoveryKeyDialog::new(&ui.window);
    let p = win.parts();
    p.body.set_label(&format!(
        "This key opens {label} if its passphrase is forgotten. It is shown only this once: \
         write it down or keep it in a password manager."
    ));
    p.key.set_label(key.as_str());
    p.copy.connect_clicked(move |b| {
        b.clipboard().set_text(&key);
        b.set_label("Copied");
    });
    {
        let ui = Rc::clone(ui);
        let label = label.to_owned();
        win.connect_close_request(move |_| {
            created_toast(&ui, &id, &label, generic);
            glib::Propagation::Proceed
        });
    }
    win.present();
    p.done.grab_focus();
}

/// Asks for the passphrase of locked profile `id` and unlocks it; then launches it if `launch`.
pub fn unlock(ui: &Rc<Ui>, id: &ProfileId, launch: bool) {
    let label = ops::label(&ui.dirs, id);
    let win = UnlockDialog::new(&ui.window);
    let p = win.parts();
    p.intro.set_label(&format!(
        "Enter the passphrase of {label}, or its recovery key."
    ));
    {
        let ok = p.ok.get();
        p.entry
            .connect_changed(move |e| ok.set_sensitive(!e.text().is_empty()));
    }
    let id = id.clone();
    let ui = Rc::clone(ui);
    let weak = win.downgrade();
    p.ok.connect_clicked(move |_| {
        let Some(win) = weak.upgrade() else { return };
        let p = win.parts();
        let secret = Zeroizing::new(p.entry.text().to_string());
        if secret.is_empty() {
            return;
        }
        p.ok.set_sensitive(false);
        p.entry.set_sensitive(false);
        p.spinner.set_spinning(true);
        p.error.set_visible(false);
        let (dirs, owned) = (ui.dirs.clone(), id.clone());
        let (ui2, id2) = (Rc::clone(&ui), id.clone());
        ui.spawn(
            move || ops::unlock(&dirs, &owned, &secret),
            move |r| {
                let p = win.parts();
                p.spinner.set_spinning(false);
                match r {
                    Ok(()) => {
                        win.close();
                        ui2.refresh();
                        if launch {
                            ui2.launch(&id2);
                        }
                    }
                    Err(e) => {
                        p.error.set_label(&e);
                        p.error.set_visible(true);
                        p.entry.set_sensitive(true);
                        p.entry.select_region(0, -1);
                        p.entry.grab_focus();
                        p.ok.set_sensitive(true);
                    }
                }
            },
        );
    });
    win.present();
    p.entry.grab_focus();
}

/// Asks for the current passphrase (or recovery key) of `id` and a new one, twice.
pub fn change_passphrase(ui: &Rc<Ui>, id: &ProfileId) {
    let label = ops::label(&ui.dirs, id);
    let win = PassphraseDialog::new(&ui.window);
    let p = win.parts();
    p.intro.set_label(&format!(
        "The new passphrase opens {label} from now on; its recovery key keeps working."
    ));
    let check = {
        let weak = win.downgrade();
        move || {
            let Some(win) = weak.upgrade() else { return };
            let p = win.parts();
            p.strength.set_title(Strength::of(&p.new.text()).hint());
            let problem =
                model::passphrase_problem(&p.new.text(), &p.repeat.text()).or_else(|| {
                    p.old
                        .text()
                        .is_empty()
                        .then_some("Enter the current passphrase")
                });
            p.problem.remove_css_class("error");
            p.problem.set_label(problem.unwrap_or(""));
            p.ok.set_sensitive(problem.is_none());
        }
    };
    for e in [&p.old, &p.new, &p.repeat] {
        let c = check.clone();
        e.connect_changed(move |_| c());
    }
    check();

    let id = id.clone();
    let ui = Rc::clone(ui);
    let weak = win.downgrade();
    p.ok.connect_clicked(move |_| {
        let Some(win) = weak.upgrade() else { return };
        let p = win.parts();
        let (old, new) = (
            Zeroizing::new(p.old.text().to_string()),
            Zeroizing::new(p.new.text().to_string()),
        );
        p.ok.set_sensitive(false);
        p.content.set_sensitive(false);
        p.spinner.set_spinning(true);
        let (dirs, owned) = (ui.dirs.clone(), id.clone());
        let u = Rc::clone(&ui);
        ui.spawn(
            move || ops::passwd(&dirs, &owned, &old, &new),
            move |r| {
                let p = win.parts();
                p.spinner.set_spinning(false);
                match r {
                    Ok(()) => {
                        win.close();
                        u.toast("Passphrase changed");
                    }
                    Err(e) => {
                        p.problem.set_label(&e);
                        p.problem.add_css_class("error");
                        p.content.set_sensitive(true);
                        p.ok.set_sensitive(true);
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
