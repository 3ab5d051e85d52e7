//! The seed's template (examples/seed/openstack.json, verbatim) decodes to
//! the builder configuration Packer 1.6.6 reads from it; and template
//! mistakes are reported as Packer does.
use kiln_openstack::builder::SourceImage;
use kiln_template::template::{
    parse, parse_file, Template, BUILDER_CORE_KEYS, POST_PROCESSOR_CORE_KEYS,
};
use kiln_template::{Context, Decoder, Diagnostics, Source};
use std::path::Path;
use std::sync::Arc;

fn decode_builder(json: &str) -> (kiln_openstack::builder::Config, Diagnostics) {
    let t = parse(Arc::new(Source {
        path: "t.json".into(),
        text: json.to_string(),
    }))
    .unwrap();
    decode(&t)
}

fn decode(t: &Template) -> (kiln_openstack::builder::Config, Diagnostics) {
    let ctx = Context::new(t.dir.clone());
    let mut diags = Diagnostics::default();
    let mut d = Decoder::new(&t.builders[0].config, &ctx, &mut diags);
    d.ignore(BUILDER_CORE_KEYS);
    let c = kiln_openstack::decode_builder(&mut d);
    d.finish();
    (c, diags)
}

#[test]
fn the_seed_template_verbatim() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed/openstack.json");
    let (c, diags) = decode(&parse_file(&path).unwrap());
    assert!(diags.is_empty(), "{diags}");
    assert_eq!(c.flavor, "m1.small");
    assert_eq!(c.image_name, "image built by Packer");
    // Packer: the instance is named after the image unless told otherwise.
    assert_eq!(c.instance_name, "image built by Packer");
    assert_eq!(
        c.source,
        Some(SourceImage::Id(
            "82b55c8c-cce1-4301-92c4-b005180531de".into()
        ))
    );
    assert_eq!(c.floating_ip_network.as_deref(), Some("nova"));
    assert_eq!(c.security_groups, vec!["ssh".to_string()]);
    assert_eq!(c.comm.username, "ubuntu");
    assert!(c.wants_temporary_keypair());
    assert_eq!(c.access, Default::default(), "credentials come from OS_*");
}

#[test]
fn mistakes_are_reported() {
    let (_, d) = decode_builder(
        r#"{"builders": [{"type": "openstack", "flavour": "m1.small", "image_name": "x", "source_image": "a", "source_image_name": "b", "ssh_ip_version": "5", "image_visibility": "everyone", "endpoint_type": "private"}]}"#,
    );
    let text = d.to_string();
    for m in [
        "A flavor must be specified",
        "did you mean `flavor`",
        "Only one of the options source_image, source_image_name",
        "SSH IP version must be either 4 or 6",
        "Unknown visibility value everyone",
        "Invalid endpoint type provided",
    ] {
        assert!(text.contains(m), "missing {m:?} in:\n{text}");
    }
}

#[test]
fn create_box_keys() {
    let t = parse(Arc::new(Source {
        path: "t.json".into(),
        text: r#"{"builders": [{"type": "file", "target": "x", "content": "y"}],
            "post-processors": [{"type": "create_box", "name": "qcow2", "visibility": "private",
              "properties": {"os_distro": "ubuntu"}, "compress": "true", "disk_format": "vmdk"}]}"#
            .to_string(),
    }))
    .unwrap();
    let ctx = Context::new(t.dir.clone());
    let mut diags = Diagnostics::default();
    let mut d = Decoder::new(&t.post_processors[0][0].config, &ctx, &mut diags);
    d.ignore(POST_PROCESSOR_CORE_KEYS);
    let c = kiln_openstack::create_box::decode(&mut d);
    d.finish();
    assert!(c.compress);
    assert_eq!(c.properties["os_distro"], "ubuntu");
    assert!(
        diags
            .to_string()
            .contains("disk_format \"vmdk\" is not supported"),
        "{diags}"
    );
}
