//! Every component kiln knows, by template `type`.
use kiln_core::Registry;

pub fn registry() -> Registry {
    let mut r = Registry::default();
    kiln_builder_file::register(&mut r);
    r
}
