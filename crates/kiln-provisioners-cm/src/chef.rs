//! `chef-solo` and `chef-client`: recognised and refused at validate time,
//! with one message that says why (and no error per key).
//!
//! Both install Chef on the machine from Chef's own download site (Packer
//! runs `curl -L https://omnitruck.chef.io/install.sh | sudo bash` unless
//! `skip_install`) and then drive `chef-solo` or `chef-client` there. Chef
//! is in neither Debian 12 nor PyPI, so kiln could not test either
//! provisioner against a real Chef here; rather than ship something
//! untested, kiln refuses them by name.
use kiln_core::{PrepareOpts, Provisioner};
use kiln_template::Decoder;

fn refuse(d: &mut Decoder<'_>, name: &str) -> Option<Box<dyn Provisioner>> {
    // Every key of the object is accepted, so the refusal is the only
    // message.
    let keys: Vec<String> = d
        .object()
        .as_object()
        .map(|o| o.iter().map(|(k, _)| k.name.clone()).collect())
        .unwrap_or_default();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    d.ignore(&keys);
    d.error_here(format!(
        "the `{name}` provisioner is not supported by kiln: Chef is in neither Debian 12 nor PyPI, so kiln cannot test it against a real Chef (use `shell` to install and run Chef, or `ansible`, `ansible-local`, `salt-masterless` or `puppet-masterless`)"
    ));
    None
}

pub fn chef_solo(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn Provisioner>> {
    refuse(d, "chef-solo")
}

pub fn chef_client(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn Provisioner>> {
    refuse(d, "chef-client")
}
