//! The configuration-management provisioners in a real QEMU guest (TCG
//! here): the seed's base image (`examples/seed/base.json`, built once
//! and reused for a day under `target/tmp/kiln-base`, as the qemu crate's
//! tests do; `KILN_TEST_BASE_IMAGE` names another), booted by the qemu
//! builder; a shell provisioner installs Ansible in the guest from
//! Debian's mirror, then `ansible-local` runs a playbook in the guest, and
//! `ansible` runs one from this machine directly against the guest's sshd
//! (the qemu builder's forwarded port and generated key). Slow (apt in a
//! TCG guest): ignored by default, scripts/test.sh runs it. Measured here
//! (2 cores shared with other QEMU guests): the build 537 s and 460 s in
//! two runs, of which
//! most is cloud-init's first boot and apt installing ansible-core; the
//! base image, when it has to be built, about 6 minutes more.
mod common;
use std::path::Path;
use std::time::Instant;

/// `kiln ARGS` in `dir`, which is also its `HOME`.
fn kiln(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let o = common::kiln(dir)
        .args(args)
        .env("HOME", dir)
        // The provisioning cache is on by default: one per test.
        .env("KILN_CACHE_DIR", dir.join("kiln-cache"))
        .output()
        .unwrap();
    (o.status.code(), common::joined(&o))
}

#[test]
#[ignore = "boots a real QEMU guest and installs Ansible in it (minutes under TCG): scripts/test.sh runs it with --include-ignored"]
fn ansible_local_and_ansible_in_a_qemu_guest() {
    let base = common::base_image();
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("local.yml"),
        "- hosts: all\n  tasks:\n    - become: true\n      copy:\n        dest: /etc/kiln-ansible-local.txt\n        content: \"local on {{ ansible_facts['distribution'] }} {{ ansible_facts['distribution_major_version'] }}\\n\"\n    - debug:\n        msg: \"OUT: ansible-local in {{ ansible_facts['virtualization_type'] | default('?') }} as {{ ansible_user_id }}\"\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("remote.yml"),
        "- hosts: all\n  tasks:\n    - become: true\n      copy:\n        dest: /etc/kiln-ansible.txt\n        content: \"remote {{ packer_builder_type }}\\n\"\n    - debug:\n        msg: \"OUT: ansible from the host, kernel {{ ansible_facts['kernel'] }}\"\n",
    )
    .unwrap();
    let template = format!(
        r#"{{
  "builders": [{{
    "type": "qemu", "name": "cm", "iso_url": "{base}", "iso_checksum": "none",
    "disk_image": true, "use_backing_file": true, "disk_size": "4G", "headless": true,
    "cpus": "2", "memory": "1024", "output_directory": "out", "ssh_username": "debian",
    "ssh_timeout": "10m", "shutdown_command": "sudo shutdown -P now"
  }}],
  "provisioners": [
    {{"type": "shell", "inline": [
      "sudo apt-get update -q",
      "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ansible-core",
      "echo OUT: installed $(ansible-playbook --version | head -n 1)"
    ]}},
    {{"type": "ansible-local", "playbook_file": "local.yml", "clean_staging_directory": true}},
    {{"type": "ansible", "playbook_file": "remote.yml"}},
    {{"type": "shell", "inline": [
      "echo OUT: $(cat /etc/kiln-ansible-local.txt) / $(cat /etc/kiln-ansible.txt)",
      "echo OUT: staging left: $(ls /tmp/packer-provisioner-ansible-local 2>/dev/null | wc -l)"
    ]}}
  ]
}}"#,
        base = base.display()
    );
    std::fs::write(d.path().join("t.json"), template).unwrap();
    let start = Instant::now();
    let (code, text) = kiln(d.path(), &["build", "-color=false", "t.json"]);
    let took = start.elapsed();
    eprintln!(
        "ansible in a QEMU guest: kiln build took {:.0} s",
        took.as_secs_f64()
    );
    assert_eq!(code, Some(0), "{text}");
    let plain = strip_ansi(&text);
    let out: Vec<&str> = plain
        .lines()
        .filter_map(|l| {
            l.find("OUT:")
                .map(|i| l[i..].trim_end().trim_end_matches('"'))
        })
        .collect();
    assert!(
        out.iter()
            .any(|l| l.starts_with("OUT: installed ansible-playbook [core 2.14")),
        "{text}"
    );
    assert!(
        out.iter()
            .any(|l| l.starts_with("OUT: ansible-local in") && l.ends_with("as debian")),
        "{text}"
    );
    assert!(
        out.iter().any(|l| l
            .strip_prefix("OUT: ansible from the host, kernel ")
            .is_some_and(|k| k.starts_with(|c: char| c.is_ascii_digit()))),
        "{text}"
    );
    assert!(
        out.contains(&"OUT: local on Debian 12 / remote qemu"),
        "{text}"
    );
    assert!(out.contains(&"OUT: staging left: 0"), "{text}");
    assert!(text.contains("Not using Proxy adapter"), "{text}");
    assert!(d.path().join("out").is_dir());
}

/// `text` without ANSI colour sequences (ansible-local's output is
/// coloured: Packer's default command sets ANSIBLE_FORCE_COLOR=1).
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' && it.peek() == Some(&'[') {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
