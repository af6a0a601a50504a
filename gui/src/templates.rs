//! The dialogs' composite templates (gui/data/ui/*.ui): each an `AdwWindow` subclass whose
//! widgets come from its template; dialogs.rs fills them in and wires their logic.

use gtk::glib;

/// Declares an `AdwWindow` subclass `$name` built from the template at `$resource`, with the
/// template's widgets `$field` (their ids in the .ui file) reachable through `parts()`.
macro_rules! template_dialog {
    ($imp:ident, $name:ident, $resource:literal, { $($field:ident : $ty:ty),* $(,)? }) => {
        mod $imp {
            use adw::subclass::prelude::*;
            use gtk::{glib, CompositeTemplate, TemplateChild};

            #[derive(Debug, Default, CompositeTemplate)]
            #[template(resource = $resource)]
            pub struct $name {
                $(
                    #[template_child]
                    pub $field: TemplateChild<$ty>,
                )*
            }

            #[glib::object_subclass]
            impl ObjectSubclass for $name {
                const NAME: &'static str = concat!("Doppel", stringify!($name));
                type Type = super::$name;
                type ParentType = adw::Window;

                fn class_init(klass: &mut Self::Class) {
                    klass.bind_template();
                }

                fn instance_init(obj: &glib::subclass::InitializingObject<Self>) {
                    obj.init_template();
                }
            }

            impl ObjectImpl for $name {}
            impl WidgetImpl for $name {}
            impl WindowImpl for $name {}
            impl AdwWindowImpl for $name {}
        }

        glib::wrapper! {
            pub struct $name(ObjectSubclass<$imp::$name>)
                @extends adw::Window, gtk::Window, gtk::Widget,
                @implements gtk::Accessible, gtk::Buildable, gtk::ConstraintTarget, gtk::Native,
                    gtk::Root, gtk::ShortcutManager;
        }

        impl $name {
            /// A new dialog over `parent`.
            pub fn new(parent: &impl glib::object::IsA<gtk::Window>) -> Self {
                glib::Object::builder()
                    .property("transient-for", parent)
                    .build()
            }

            /// The widgets from the template.
            pub fn parts(&self) -> &$imp::$name {
                adw::subclass::prelude::ObjectSubclassIsExt::imp(self)
            }
        }
    };
}

template_dialog!(new_profile, NewProfileDialog, "/org/doppel/Doppel/ui/new-profile.ui", {
    create: gtk::Button,
    spinner: gtk::Spinner,
    content: gtk::Box,
    search: gtk::SearchEntry,
    apps: gtk::ListBox,
    name: adw::EntryRow,
    colors: gtk::Box,
    home: adw::ComboRow,
    network: adw::ComboRow,
    encrypt: adw::ExpanderRow,
    pass: adw::PasswordEntryRow,
    repeat: adw::PasswordEntryRow,
    strength: adw::ActionRow,
    problem: gtk::Label,
});

template_dialog!(recovery_key, RecoveryKeyDialog, "/org/doppel/Doppel/ui/recovery-key.ui", {
    done: gtk::Button,
    body: gtk::Label,
    key: gtk::Label,
    copy: gtk::Button,
});

template_dialog!(unlock, UnlockDialog, "/org/doppel/Doppel/ui/unlock.ui", {
    ok: gtk::Button,
    spinner: gtk::Spinner,
    intro: gtk::Label,
    entry: gtk::PasswordEntry,
    error: gtk::Label,
});

template_dialog!(passphrase, PassphraseDialog, "/org/doppel/Doppel/ui/passphrase.ui", {
    ok: gtk::Button,
    spinner: gtk::Spinner,
    content: gtk::Box,
    intro: gtk::Label,
    old: adw::PasswordEntryRow,
    new: adw::PasswordEntryRow,
    repeat: adw::PasswordEntryRow,
    strength: adw::ActionRow,
    problem: gtk::Label,
});

/// Builds (without showing) one of each dialog over `parent` and returns their titles: a test's
/// proof that every template loads.
#[doc(hidden)]
pub fn build_each(parent: &impl glib::object::IsA<gtk::Window>) -> Vec<String> {
    use gtk::prelude::GtkWindowExt;
    let dialogs: [gtk::Window; 4] = [
        glib::object::Cast::upcast(NewProfileDialog::new(parent)),
        glib::object::Cast::upcast(RecoveryKeyDialog::new(parent)),
        glib::object::Cast::upcast(UnlockDialog::new(parent)),
        glib::object::Cast::upcast(PassphraseDialog::new(parent)),
    ];
    dialogs
        .iter()
        .map(|d| {
            let title = d.title().map(|t| t.to_string()).unwrap_or_default();
            d.destroy();
            title
        })
        .collect()
}
