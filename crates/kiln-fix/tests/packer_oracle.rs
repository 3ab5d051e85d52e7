//! kiln's fixers against Packer 1.6.6's (`packer fix`, the oracle,
//! installed by scripts/setup.sh): for every fixer a template it changes,
//! and templates at the edges of Packer's rules; kiln's output and
//! Packer's must parse to the same JSON value, and fail on the same
//! inputs.
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// Packer 1.6.6's path (checked once).
fn packer() -> String {
    static PACKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PACKER.get_or_init(find_packer).clone()
}

fn find_packer() -> String {
    let p = std::env::var("KILN_PACKER").unwrap_or_else(|_| "packer".into());
    let ok = Command::new(&p)
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("1.6.6"))
        .unwrap_or(false);
    assert!(
        ok,
        "Packer 1.6.6 is the oracle of this test: install it with `apt-get install packer` \
         (scripts/setup.sh does) or point KILN_PACKER at it"
    );
    p
}

/// JSON values equal up to number representation (Packer re-prints
/// numbers as float64, kiln keeps them as written).
fn normalize(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::Number(n) => J::String(format!("{}", n.as_f64().unwrap_or(f64::NAN))),
        J::Array(a) => J::Array(a.into_iter().map(normalize).collect()),
        J::Object(o) => J::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        v => v,
    }
}

/// Packer's `fix -validate=false` of `text`: Ok(stdout) or Err(stderr).
fn packer_fix(dir: &Path, text: &str) -> Result<serde_json::Value, String> {
    let path = dir.join("t.json");
    std::fs::write(&path, text).unwrap();
    // In the temporary directory: Packer writes crash.log where it runs
    // when it crashes (on some of the FAILING shapes).
    let out = Command::new(packer())
        .current_dir(dir)
        .args(["fix", "-validate=false"])
        .arg(&path)
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CACHE_DIR", dir.join("packer_cache"))
        .output()
        .unwrap();
    if !out.status.success() {
        let mut e = String::from_utf8_lossy(&out.stderr).into_owned();
        e.push_str(&String::from_utf8_lossy(&out.stdout));
        return Err(e);
    }
    let s = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(&s).map_err(|e| format!("packer printed no JSON ({e}): {s}"))
}

struct KilnFix {
    value: serde_json::Value,
    fixers: Vec<&'static str>,
}

fn kiln_fix(dir: &Path, text: &str) -> Result<KilnFix, String> {
    let src = Arc::new(kiln_template::Source {
        path: dir.join("t.json"),
        text: text.to_string(),
    });
    let (fixed, _) = kiln_fix::fix_source(src.clone()).map_err(|e| e.to_string())?;
    let out = kiln_fix::to_text(&fixed.root, &kiln_fix::Indent::detect(text));
    let value =
        serde_json::from_str(&out).map_err(|e| format!("kiln wrote bad JSON ({e}): {out}"))?;
    let mut fixers: Vec<&'static str> = fixed.notes.iter().map(|n| n.fixer).collect();
    fixers.dedup();
    Ok(KilnFix { value, fixers })
}

/// For every fixer of Packer 1.6.6, a template that it changes.
const PER_FIXER: &[(&str, &str)] = &[
    (
        "iso-md5",
        r#"{"builders":[{"type":"qemu","iso_md5":"0123abcd","iso_url":"a.iso"}]}"#,
    ),
    (
        "createtime",
        r#"{"builders":[{"type":"amazon-ebs","ami_name":"web {{ .CreateTime }}","snapshot_name":"s-{{.CreateTime}}-x","bundle_prefix":"{{  .CreateTime}}"}]}"#,
    ),
    (
        "virtualbox-gaattach",
        r#"{"builders":[{"type":"virtualbox","guest_additions_attach":true},{"type":"virtualbox","name":"b","guest_additions_attach":false}]}"#,
    ),
    (
        "pp-vagrant-override",
        r#"{"builders":[{"type":"null"}],"post-processors":[{"type":"vagrant","aws":{"a":1},"virtualbox":{"b":"c"},"output":"x.box"},[{"type":"vagrant","vmware":{"d":2}}]]}"#,
    ),
    (
        "virtualbox-rename",
        r#"{"builders":[{"type":"virtualbox"}],"provisioners":[{"type":"shell","inline":["true"],"override":{"virtualbox":{"inline":["false"]}}}]}"#,
    ),
    (
        "vmware-rename",
        r#"{"builders":[{"type":"vmware","name":"v"}]}"#,
    ),
    (
        "parallels-headless",
        r#"{"builders":[{"type":"parallels-iso","headless":true},{"type":"parallels-pvm","name":"p","headless":false}]}"#,
    ),
    (
        "parallels-deprecations",
        r#"{"builders":[{"type":"parallels-iso","parallels_tools_host_path":"/x","guest_os_distribution":"ubuntu","guest_os_type":"linux"}]}"#,
    ),
    (
        "sshkeypath",
        r#"{"builders":[{"type":"qemu","ssh_key_path":"k"},{"type":"null","name":"n","ssh_key_path":"k2","ssh_private_key_file":"already"}]}"#,
    ),
    (
        "sshdisableagent",
        r#"{"builders":[{"type":"null","ssh_disable_agent":true},{"type":"null","name":"n","ssh_disable_agent":"true"}]}"#,
    ),
    (
        "scaleway-access-key",
        r#"{"builders":[{"type":"scaleway","access_key":"org"}]}"#,
    ),
    (
        "manifest-filename",
        r#"{"builders":[{"type":"null"}],"post-processors":[{"type":"manifest","filename":"m.json"},["compress",{"type":"manifest","filename":"n.json","output":"o"}]]}"#,
    ),
    (
        "amazon-shutdown_behavior",
        r#"{"builders":[{"type":"amazon-ebs","shutdown_behaviour":"terminate"}]}"#,
    ),
    (
        "amazon-enhanced-networking",
        r#"{"builders":[{"type":"amazon-ebs","enhanced_networking":true},{"type":"amazon-instance","name":"i","enhanced_networking":"true"}]}"#,
    ),
    (
        "amazon-private-ip",
        r#"{"builders":[{"type":"amazon-ebs","ssh_private_ip":true},{"type":"amazon-ebs","name":"b","ssh_private_ip":"false"},{"type":"amazon-ebs","name":"c","ssh_private_ip":true,"ssh_interface":"x"}]}"#,
    ),
    (
        "amazon-temp-sec-cidrs",
        r#"{"builders":[{"type":"amazon-ebs","temporary_security_group_source_cidr":"10.0.0.0/8"}]}"#,
    ),
    (
        "docker-email",
        r#"{"builders":[{"type":"docker","login_email":"a@b"}],"post-processors":[{"type":"docker-import","login_email":"c@d"}]}"#,
    ),
    (
        "docker-tag-tags",
        r#"{"builders":[{"type":"null"}],"post-processors":[{"type":"docker-tag","tag":"a, b,a","tags":["b","c"]},{"type":"docker-tag","tag":["x","x"]},{"type":"docker-tag"}]}"#,
    ),
    (
        "powershell-escapes",
        r#"{"builders":[{"type":"null"}],"provisioners":[{"type":"powershell","elevated_user":"a`$b","elevated_password":"p``w`\"x`'","environment_vars":["A=`$x","B=plain"]}]}"#,
    ),
    (
        "vmware-compaction",
        r#"{"builders":[{"type":"vmware-iso","remote_type":"esx5"},{"type":"vmware-iso","name":"b","remote_type":"esx5","disk_type_id":"thin"},{"type":"vmware-iso","name":"c","remote_type":"esx5","disk_type_id":"eagerzeroedthick","skip_compaction":false}]}"#,
    ),
    (
        "hyperv-deprecations",
        r#"{"builders":[{"type":"hyperv-iso","vhd_temp_path":"C:\\t"}]}"#,
    ),
    (
        "hyperv-vmxc-typo",
        r#"{"builders":[{"type":"hyperv-vmcx","clone_from_vmxc_path":"p"}]}"#,
    ),
    (
        "hyperv-cpu-and-ram",
        r#"{"builders":[{"type":"hyperv-iso","cpu":2,"ram_size":2048},{"type":"hyperv-vmcx","name":"v","cpu":"4"}]}"#,
    ),
    (
        "clean-image-name",
        r#"{"builders":[{"type":"googlecompute","image_name":"img-{{clean_image_name `a`}}","image_labels":{"k":"{{clean_ami_name `b`}}","n":1},"list":["clean_ami_name"]}]}"#,
    ),
    (
        "spot-price-auto-product",
        r#"{"builders":[{"type":"amazon-ebs","spot_price_auto_product":"Linux/UNIX"},{"type":"amazon-ebsvolume","name":"v","spot_price_auto_product":"x"}]}"#,
    ),
    (
        "qemu-disk-size",
        r#"{"builders":[{"type":"qemu","disk_size":10000},{"type":"qemu","name":"b","disk_size":1.5e3},{"type":"qemu","name":"c","disk_size":"20G"}]}"#,
    ),
    (
        "galaxy-command",
        r#"{"builders":[{"type":"null"}],"provisioners":[{"type":"ansible-local","playbook_file":"p.yml","galaxycommand":"ansible-galaxy"},{"type":"ansible-local","playbook_file":"p.yml","galaxycommand":"x","galaxy_command":"y"}]}"#,
    ),
    (
        "comm-config",
        r#"{"builders":[{"type":"virtualbox-iso","ssh_host_port_min":2000,"ssh_host_port_max":3000,"ssh_skip_nat_mapping":true},{"type":"virtualbox-ovf","name":"o","ssh_host_port_min":1,"host_port_min":2,"ssh_skip_nat_mapping":"yes"}]}"#,
    ),
    (
        "ssh-wait-timeout",
        r#"{"builders":[{"type":"qemu","ssh_wait_timeout":"30m"},{"type":"null","name":"n","ssh_wait_timeout":"1m","ssh_timeout":"2m"},{"type":"null","name":"m","ssh_wait_timeout":5}]}"#,
    ),
    (
        "vsphere-iso-net-disk",
        r#"{"builders":[{"type":"vsphere-iso","network":"VM Network","networkCard":"e1000","network_card":"vmxnet3","disk_size":32768,"disk_thin_provisioned":true,"disk_eagerly_scrub":false,"network_adapters":[{"network":"other"}]}]}"#,
    ),
    (
        "iso-checksum-type-and-url",
        r#"{"builders":[{"type":"qemu","iso_checksum":"abc","iso_checksum_type":"sha256"},{"type":"qemu","name":"u","iso_checksum_url":"http://x/SHA256SUMS","iso_checksum_type":"sha256"},{"type":"qemu","name":"n","iso_checksum_type":"none"},{"type":"qemu","name":"e","iso_checksum":"def","iso_checksum_type":""}]}"#,
    ),
    (
        "qemu-host-port",
        r#"{"builders":[{"type":"qemu","ssh_host_port_min":2222,"ssh_host_port_max":4444,"host_port_max":1}]}"#,
    ),
    (
        "azure-exclude_from_latest",
        r#"{"builders":[{"type":"azure-chroot","shared_image_destination":{"resource_group":"r","exlude_from_latest":true}}]}"#,
    ),
    (
        "proxmox-type",
        r#"{"builders":[{"type":"proxmox","name":"p"}]}"#,
    ),
];

#[test]
fn every_packer_fixer_has_a_case() {
    let names: Vec<&str> = PER_FIXER.iter().map(|(n, _)| *n).collect();
    let ours: Vec<&str> = kiln_fix::FIXERS.iter().map(|f| f.name).collect();
    assert_eq!(names, ours, "one case per fixer, in Packer's order");
    // And Packer's list is kiln's, in the same order: `packer fix -h`.
    let out = Command::new(packer()).args(["fix", "-h"]).output().unwrap();
    let help =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let listed: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Fixes that are run"))
        .skip(1)
        .take_while(|l| !l.starts_with("Options:"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed, ours, "Packer 1.6.6's fixers, in its order");
}

#[test]
fn each_fixer_matches_packer() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, text) in PER_FIXER {
        let k = kiln_fix(dir.path(), text).unwrap_or_else(|e| panic!("{name}: kiln failed: {e}"));
        assert!(
            k.fixers.contains(name),
            "{name}: the template must be changed by this fixer (fixers that fired: {:?})",
            k.fixers
        );
        let original: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_ne!(
            normalize(original),
            normalize(k.value.clone()),
            "{name}: nothing changed"
        );
        let p =
            packer_fix(dir.path(), text).unwrap_or_else(|e| panic!("{name}: packer failed: {e}"));
        if normalize(p.clone()) != normalize(k.value.clone()) {
            failures.push(format!("{name}:\n  packer: {p}\n  kiln:   {}", k.value));
        }
    }
    assert!(failures.is_empty(), "differences:\n{}", failures.join("\n"));
}

/// Templates at the edges of Packer's rules: what a fixer leaves alone,
/// odd shapes, several fixers on one key, comments.
const EDGES: &[&str] = &[
    // No builders at all: Packer's fixers add `"builders": null`.
    r#"{"variables":{"a":"b"}}"#,
    r#"{"builders":null,"provisioners":[]}"#,
    r#"{"builders":[]}"#,
    // Nothing to fix.
    r#"{"_comment":"x","builders":[{"type":"null","communicator":"none"}],"post-processors":["manifest"]}"#,
    // iso_md5, then iso_checksum_type folded in by a later fixer.
    r#"{"builders":[{"type":"qemu","iso_md5":"ff","iso_checksum_type":"sha1"}]}"#,
    // A type of the wrong kind is left alone (or removed, for the
    // checksum type).
    r#"{"builders":[{"type":"qemu","iso_md5":5,"ssh_key_path":1,"ssh_disable_agent":"yes","iso_checksum_type":7,"iso_checksum":"x"}]}"#,
    // Post-processors: absent, null, names only.
    r#"{"builders":[{"type":"docker","login_email":"x"}]}"#,
    r#"{"builders":[{"type":"docker","login_email":"x"}],"post-processors":null}"#,
    r#"{"builders":[{"type":"docker","login_email":"x"}],"post-processors":["manifest",["checksum"]]}"#,
    // Provisioners as a single object (weakly a list of one).
    r#"{"builders":[{"type":"null"}],"provisioners":{"type":"shell","inline":["true"]}}"#,
    // An override given as a list of objects (weakly merged).
    r#"{"builders":[{"type":"virtualbox"}],"provisioners":[{"type":"shell","override":[{"virtualbox":{"a":1}},{"b":{"c":2}}]}]}"#,
    // powershell: environment_vars that is not a list keeps the
    // provisioner as it was; a null one becomes [].
    r#"{"builders":[{"type":"null"}],"provisioners":[{"type":"powershell","elevated_user":"a`$","environment_vars":"A=`$b"}]}"#,
    r#"{"builders":[{"type":"null"}],"provisioners":[{"type":"powershell","elevated_user":"a`$","environment_vars":null}]}"#,
    // vmware-compaction on a disk type that is not a string.
    r#"{"builders":[{"type":"vmware-iso","remote_type":"esx5","disk_type_id":1}]}"#,
    // Duplicate keys: the last one wins, as Go's decoding into a map.
    r#"{"builders":[{"type":"qemu","qemuargs":[["-m","1"]],"ssh_wait_timeout":"1m","qemuargs":[["-m","2"]]}],"builders2":1}"#,
    // Unicode, escapes and comments everywhere; numbers as written.
    "{\n    \"_comment\": \"<a> & <b> \\u2028 \\\"q\\\" \\t é\",\n    \"builders\": [\n        {\"type\": \"qemu\", \"_c\": \"x\", \"disk_size\": 2048, \"n\": 1.50, \"big\": 1e3, \"ssh_wait_timeout\": \"1h\"}\n    ]\n}\n",
];

#[test]
fn edges_match_packer() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for text in EDGES {
        let k = kiln_fix(dir.path(), text).map(|k| k.value);
        let p = packer_fix(dir.path(), text);
        match (&k, &p) {
            (Ok(k), Ok(p)) if normalize(k.clone()) == normalize(p.clone()) => {}
            (Err(_), Err(_)) => {}
            _ => failures.push(format!("{text}\n  packer: {p:?}\n  kiln:   {k:?}")),
        }
    }
    assert!(failures.is_empty(), "differences:\n{}", failures.join("\n"));
}

/// Shapes Packer's fixers fail (or crash) on: kiln fails too, with the
/// place.
const FAILING: &[&str] = &[
    r#"{"builders":{"type":"null"}}"#,
    r#"{"builders":["null"]}"#,
    r#"{"builders":[{"name":"no type"}]}"#,
    r#"{"builders":[{"type":"amazon-ebs","ssh_private_ip":"maybe"}]}"#,
    r#"{"builders":[{"type":"null"}],"post-processors":"manifest"}"#,
    r#"{"builders":[{"type":"null"}],"post-processors":[{"type":"docker-tag","tag":[1]}]}"#,
    r#"[1, 2]"#,
];

#[test]
fn failures_match_packer() {
    let dir = tempfile::tempdir().unwrap();
    for text in FAILING {
        let k = kiln_fix(dir.path(), text);
        let p = packer_fix(dir.path(), text);
        assert!(p.is_err(), "packer fixed {text}: {p:?}");
        let e = k.err().unwrap_or_else(|| panic!("kiln fixed {text}"));
        assert!(e.contains("t.json:1:"), "kiln's error has the place: {e}");
    }
}
