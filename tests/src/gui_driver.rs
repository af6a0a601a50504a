//! Drives the real Doppel window the way a person would, in-process: it builds the same
//! application `doppel-gui` runs, then opens the New Profile dialog through its action, fills
//! the form, clicks Create and the toast's Launch Now, stops the clone from its page, renames
//! it there and deletes it, checking after each step with the `doppel` CLI (staged next to this
//! program) that core saw the same thing.
//!
//! Usage: `doppel-gui-driver <app name as listed> <artifacts dir>`; run as the test user
//! under a display and a session bus (tests/tests/gui.rs does). Exit 0 when every step passed;
//! otherwise the failed step is printed.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::rc::Rc;
use std::time::{Duration, Instant};

use adw::prelude::*;
use gtk::glib;

/// Longest wait for any one step (a launch under a busy CI machine included).
const STEP: Duration = Duration::from_secs(40);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(app_name), Some(artifacts)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: doppel-gui-driver <app name> <artifacts dir>");
        return ExitCode::from(2);
    };
    let dirs = match doppel_core::dirs::Dirs::from_env() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("driver: {e}");
            return ExitCode::from(2);
        }
    };
    let app = doppel_gui::application(dirs);
    let result: Rc<RefCell<Option<Result<(), String>>>> = Rc::default();
    {
        let (result, app_name, artifacts) = (
            Rc::clone(&result),
            app_name.clone(),
            PathBuf::from(artifacts),
        );
        // Connected after the library's own handler, so the window exists when this runs.
        app.connect_activate(move |app| {
            let (result, app_name, artifacts, app) = (
                Rc::clone(&result),
                app_name.clone(),
                artifacts.clone(),
                app.clone(),
            );
            glib::spawn_future_local(async move {
                let r = script(&app, &app_name, &artifacts).await;
                *result.borrow_mut() = Some(r);
                app.quit();
            });
        });
    }
    app.run_with_args::<&str>(&[]);
    let outcome = result.borrow_mut().take();
    match outcome {
        Some(Ok(())) => {
            println!("driver: every step passed");
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!("driver: FAILED: {e}");
            ExitCode::FAILURE
        }
        None => {
            eprintln!("driver: the application ended before the script finished");
            ExitCode::FAILURE
        }
    }
}

async fn script(app: &adw::Application, app_name: &str, _artifacts: &Path) -> Result<(), String> {
    let main = wait("the main window", || toplevel("Doppel")).await?;
    step("main window up");
    let titles = doppel_gui::build_each_dialog(&main);
    if titles
        != [
            "New Profile",
            "Recovery Key",
            "Unlock Profile",
            "Change Passphrase",
        ]
    {
        return Err(format!("the dialog templates built as {titles:?}"));
    }
    step("every dialog template builds");

    // New profile, through the action Ctrl+N and the + button trigger.
    app.activate_action("new-profile", None);
    let dialog = wait("the New Profile dialog", || toplevel("New Profile")).await?;
    let search: gtk::SearchEntry = named(&dialog, "app-search")?;
    search.set_text(app_name);
    let list: gtk::ListBox = named(&dialog, "app-list")?;
    let row = wait("the app in the list", || {
        find(list.upcast_ref(), &|w| {
            w.downcast_ref::<adw::ActionRow>()
                .is_some_and(|r| r.title() == app_name && r.is_child_visible())
        })
        .and_then(|w| w.downcast::<gtk::ListBoxRow>().ok())
    })
    .await?;
    list.select_row(Some(&row));
    let name: adw::EntryRow = named(&dialog, "name-row")?;
    name.set_text("Driven");
    let network: adw::ComboRow = named(&dialog, "network-row")?;
    network.set_selected(3); // None: no pasta needed for a sleeper
    let create: gtk::Button = named(&dialog, "create-button")?;
    wait("Create to become clickable", || {
        create.is_sensitive().then_some(())
    })
    .await?;
    create.emit_clicked();
    step("Create clicked");
    wait("the dialog to close", || {
        (!dialog.is_visible()).then_some(())
    })
    .await?;
    cli_shows("driven: stopped")?;

    // The toast offers Launch Now.
    let launch_now = wait("the Launch Now toast", || {
        find(main.upcast_ref(), &|w| {
            w.downcast_ref::<gtk::Button>()
                .is_some_and(|b| b.label().as_deref() == Some("Launch Now"))
        })
        .and_then(|w| w.downcast::<gtk::Button>().ok())
    })
    .await?;
    launch_now.emit_clicked();
    step("Launch Now clicked");
    wait_cli("driven: running").await.map_err(|e| {
        let log = std::env::var_os("XDG_RUNTIME_DIR")
            .map(|d| Path::new(&d).join("doppel/gui-driven.log"))
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_else(|| "(no launch log)".into());
        format!(
            "{e}; the window's toasts: {:?}; the launch log:\n{log}",
            toasts(&main)
        )
    })?;
    let row = wait("the profile's row to say Running", || {
        named::<adw::ActionRow>(&main, "profile-driven")
            .ok()
            .filter(|r| r.subtitle().is_some_and(|s| s.starts_with("Running")))
    })
    .await?;

    // Its page: stop it there.
    // What a click on the row does.
    let list: gtk::ListBox = named(&main, "profile-list")?;
    list.emit_by_name::<()>("row-activated", &[row.upcast_ref::<gtk::ListBoxRow>()]);
    let state: gtk::Label = named(&main, "state-label")?;
    wait("the page to show it running", || {
        state.label().starts_with("Running").then_some(())
    })
    .await?;
    let primary: gtk::Button = named(&main, "primary-button")?;
    if primary.label().as_deref() != Some("Stop") {
        return Err(format!(
            "the page's main button says {:?}, not Stop",
            primary.label()
        ));
    }
    primary.emit_clicked();
    step("Stop clicked");
    wait_cli("driven: stopped").await?;
    wait("the page to show it stopped", || {
        (state.label() == "Stopped").then_some(())
    })
    .await?;

    // Rename it on the page.
    let name: adw::EntryRow = named(&main, "name-row")?;
    name.set_text("Renamed");
    name.emit_by_name::<()>("apply", &[]);
    wait_cli("(Renamed)").await?;
    step("renamed");

    // Change Passphrase opens from its action (submitting it is not tried: this profile is not
    // encrypted).
    app.activate_action("change-passphrase", Some(&"driven".to_variant()));
    let dialog = wait("the Change Passphrase dialog", || {
        toplevel("Change Passphrase")
    })
    .await?;
    dialog.close();
    wait("the Change Passphrase dialog to close", || {
        (!dialog.is_visible()).then_some(())
    })
    .await?;
    step("Change Passphrase opened and closed");

    // Delete it: the page's button asks first.
    let delete: gtk::Button = named(&main, "delete-button")?;
    delete.emit_clicked();
    let confirm = wait("the delete confirmation", || {
        gtk::Window::list_toplevels()
            .into_iter()
            .find_map(|w| w.downcast::<adw::MessageDialog>().ok())
            .filter(|d| d.heading().is_some_and(|h| h.starts_with("Delete ")))
    })
    .await?;
    confirm.response("delete");
    wait("the profile to be gone", || {
        run_cli()
            .ok()
            .filter(|out| !out.contains("driven"))
            .map(|_| ())
    })
    .await
    .map_err(|e| format!("{e}; the window's toasts: {:?}", toasts(&main)))?;
    step("deleted");
    wait("the window back at the list", || {
        named::<gtk::Label>(&main, "state-label")
            .ok()
            .filter(|l| !l.is_drawable())
            .map(|_| ())
    })
    .await?;
    Ok(())
}

fn step(what: &str) {
    println!("driver: {what}");
}

/// Waits (without blocking the main loop) until `f` gives a value.
async fn wait<T>(what: &str, f: impl Fn() -> Option<T>) -> Result<T, String> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > STEP {
            return Err(format!("timed out waiting for {what}"));
        }
        glib::timeout_future(Duration::from_millis(100)).await;
    }
}

/// The visible top-level window titled `title`.
fn toplevel(title: &str) -> Option<gtk::Window> {
    gtk::Window::list_toplevels()
        .into_iter()
        .filter_map(|w| w.downcast::<gtk::Window>().ok())
        .find(|w| w.is_visible() && w.title().as_deref() == Some(title))
}

/// The text of every toast the window shows (what the app told the person).
fn toasts(root: &impl IsA<gtk::Widget>) -> Vec<String> {
    fn walk(w: &gtk::Widget, in_toast: bool, out: &mut Vec<String>) {
        let in_toast = in_toast || w.css_name() == "toast";
        if let (true, Some(l)) = (in_toast, w.downcast_ref::<gtk::Label>()) {
            out.push(l.label().to_string());
        }
        let mut child = w.first_child();
        while let Some(c) = child {
            walk(&c, in_toast, out);
            child = c.next_sibling();
        }
    }
    let mut out = Vec::new();
    walk(root.upcast_ref(), false, &mut out);
    out
}

/// The first widget below `root` (itself included) for which `pred` holds.
fn find(root: &gtk::Widget, pred: &dyn Fn(&gtk::Widget) -> bool) -> Option<gtk::Widget> {
    if pred(root) {
        return Some(root.clone());
    }
    let mut child = root.first_child();
    while let Some(c) = child {
        if let Some(found) = find(&c, pred) {
            return Some(found);
        }
        child = c.next_sibling();
    }
    None
}

/// The widget named `name` (its widget name) below `root`, as a `T`.
fn named<T: IsA<gtk::Widget>>(root: &impl IsA<gtk::Widget>, name: &str) -> Result<T, String> {
    find(root.upcast_ref(), &|w| w.widget_name() == name)
        .ok_or_else(|| format!("no widget named {name}"))?
        .downcast::<T>()
        .map_err(|w| format!("{name} is a {}", w.type_().name()))
}

/// `doppel list`, through the CLI beside this program.
fn run_cli() -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let doppel = exe.with_file_name("doppel");
    let out = Command::new(&doppel)
        .arg("list")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", doppel.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cli_shows(text: &str) -> Result<(), String> {
    let out = run_cli()?;
    if out.contains(text) {
        step(&format!("the CLI sees {text:?}"));
        Ok(())
    } else {
        Err(format!("`doppel list` does not show {text:?}:\n{out}"))
    }
}

async fn wait_cli(text: &str) -> Result<(), String> {
    wait(&format!("`doppel list` to show {text:?}"), || {
        run_cli().ok().filter(|o| o.contains(text)).map(|_| ())
    })
    .await?;
    step(&format!("the CLI sees {text:?}"));
    Ok(())
}
