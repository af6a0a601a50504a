//! Compiles the window's templates and styles (gui/data) into a GResource bundle that
//! doppel-gui embeds, so an installed binary needs no data files to show its window.

fn main() {
    glib_build_tools::compile_resources(
        &["data"],
        "data/org.doppel.Doppel.gresource.xml",
        "doppel.gresource",
    );
}
