//! Every component kiln knows, by template `type`.
use kiln_core::Registry;

pub fn registry() -> Registry {
    let mut r = Registry::default();
    kiln_builder_null::register(&mut r);
    kiln_builder_file::register(&mut r);
    kiln_builder_qemu::register(&mut r);
    kiln_builder_debootstrap::register(&mut r);
    kiln_openstack::register(&mut r);
    kiln_aws::register(&mut r);
    kiln_provisioners::register(&mut r);
    kiln_provisioners_cm::register(&mut r);
    kiln_post_processors::register(&mut r);
    kiln_vagrant::register(&mut r);
    r
}
