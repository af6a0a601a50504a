//! `doppel-gui --choose-profile URL [ID=LABEL…] [--host=NAME]`: the small dialog `doppel open`
//! shows when several clones are waiting for the same login link. It prints the chosen profile
//! id (or `host` for the first copy) on stdout and exits 0; closing it exits 1.

use std::cell::Cell;
use std::rc::Rc;

use adw::prelude::*;
use gtk::{gio, glib};

/// Runs the dialog for `args` (what follows `--choose-profile`).
pub fn run(args: &[String]) -> glib::ExitCode {
    let Some((url, rest)) = args.split_first() else {
        eprintln!("doppel-gui: --choose-profile needs a link and the profiles to offer");
        return glib::ExitCode::FAILURE;
    };
    let mut choices: Vec<(String, String)> = Vec::new();
    let mut host: Option<String> = None;
    for a in rest {
        if let Some(h) = a.strip_prefix("--host=") {
            host = Some(h.to_owned());
        } else if let Some((id, label)) = a.split_once('=') {
            choices.push((id.to_owned(), label.to_owned()));
        }
    }
    let app = adw::Application::builder()
        .application_id("org.doppel.Doppel.Chooser")
        .flags(gio::ApplicationFlags::NON_UNIQUE)
        .build();
    let chosen = Rc::new(Cell::new(false));
    let url = url.clone();
    {
        let chosen = Rc::clone(&chosen);
        app.connect_activate(move |app| {
            let dialog = adw::MessageDialog::builder()
                .heading("Which profile should open this link?")
                .body(format!(
                    "{url}\n\nMore than one profile is waiting for a sign-in link."
                ))
                .application(app)
                .build();
            for (id, label) in &choices {
                dialog.add_response(id, label);
            }
            if let Some(h) = &host {
                dialog.add_response("host", &format!("Your own {h}"));
            }
            dialog.add_response("cancel", "_Cancel");
            dialog.set_close_response("cancel");
            if let Some((first, _)) = choices.first() {
                dialog.set_response_appearance(first, adw::ResponseAppearance::Suggested);
                dialog.set_default_response(Some(first));
            }
            let (chosen, app) = (Rc::clone(&chosen), app.clone());
            dialog.connect_response(None, move |_, response| {
                if response != "cancel" {
                    println!("{response}");
                    chosen.set(true);
                }
                app.quit();
            });
            dialog.present();
        });
    }
    app.run_with_args::<&str>(&[]);
    if chosen.get() {
        glib::ExitCode::SUCCESS
    } else {
        glib::ExitCode::FAILURE
    }
}
