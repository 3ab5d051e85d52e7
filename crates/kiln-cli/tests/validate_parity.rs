//! Validate parity with Packer 1.6.6 (the oracle, installed by
//! scripts/setup.sh): templates with errors that Packer reports while it
//! prepares a build (so at `packer validate`), and near misses it accepts,
//! through both tools: the same verdict, and kiln's error at the place of
//! the mistake. See `kiln_core::parity` for which fields are rendered
//! when.
mod common;
use common::run_joined as kiln;
use std::path::Path;
use std::process::Command;

fn packer(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let p = std::env::var("KILN_PACKER").unwrap_or_else(|_| "packer".into());
    let o = Command::new(&p)
        .current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "Packer 1.6.6 is the oracle of this test ({e}): install it with `apt-get install \
                 packer` (scripts/setup.sh does) or point KILN_PACKER at it"
            )
        });
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// One case: a template, whether Packer 1.6.6 accepts it at validate time,
/// and for a rejected one, the text kiln's error must point at (the
/// first occurrence of `at` in the template: its line and column).
struct Case {
    name: &'static str,
    template: &'static str,
    accepted: bool,
    at: &'static str,
}

const NULL: &str = r#"{"type": "null", "communicator": "none"}"#;

fn cases() -> Vec<Case> {
    let with = |prov: &str| format!(r#"{{"builders": [{NULL}], "provisioners": [{prov}]}}"#);
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    vec![
        // env: only in variable defaults.
        Case {
            name: "env in a shell-local provisioner's inline (kiln renders inline at run time)",
            template: leak(with(
                r#"{"type": "shell-local", "inline": ["echo {{env `HOME`}}"]}"#,
            )),
            accepted: false,
            at: "env `",
        },
        Case {
            name: "env in a file builder's content",
            template: r#"{"builders": [{"type": "file", "target": "out", "content": "{{ env `HOME` }}"}]}"#,
            accepted: false,
            at: "env `",
        },
        Case {
            name: "env in a variable default",
            template: r#"{"variables": {"h": "{{env `HOME`}}"}, "builders": [{"type": "file", "target": "out", "content": "{{user `h`}}"}]}"#,
            accepted: true,
            at: "",
        },
        Case {
            name: "env in shell-local's execute_command (rendered at run time by both)",
            template: leak(with(
                r#"{"type": "shell-local", "inline": ["true"], "execute_command": ["sh", "-c", "{{env `X`}} {{.Vars}} {{.Script}}"]}"#,
            )),
            accepted: true,
            at: "",
        },
        Case {
            name: "env in a shell-local post-processor",
            template: r#"{"builders": [{"type": "null", "communicator": "none"}], "post-processors": [{"type": "shell-local", "inline": ["echo {{env `X`}}"]}]}"#,
            accepted: false,
            at: "env `",
        },
        Case {
            name: "env in a manifest's output (rendered while preparing)",
            template: r#"{"builders": [{"type": "null", "communicator": "none"}], "post-processors": [{"type": "manifest", "output": "{{env `X`}}.json"}]}"#,
            accepted: false,
            at: "env `",
        },
        Case {
            name: "env in a checksum's output (rendered at run time by both)",
            template: r#"{"builders": [{"type": "null", "communicator": "none"}], "post-processors": [{"type": "checksum", "output": "{{env `X`}}.sum"}]}"#,
            accepted: true,
            at: "",
        },
        Case {
            name: "env in a compress's output (rendered at run time by both)",
            template: r#"{"builders": [{"type": "null", "communicator": "none"}], "post-processors": [{"type": "compress", "output": "{{env `X`}}.tgz"}]}"#,
            accepted: true,
            at: "",
        },
        Case {
            name: "env in the error-cleanup-provisioner",
            template: r#"{"builders": [{"type": "null", "communicator": "none"}], "error-cleanup-provisioner": {"type": "shell-local", "inline": ["{{env `X`}}"]}}"#,
            accepted: false,
            at: "env `",
        },
        Case {
            name: "env in a provisioner's override for the build",
            template: leak(with(
                r#"{"type": "shell-local", "inline": ["true"], "override": {"null": {"inline": ["{{env `X`}}"]}}}"#,
            )),
            accepted: false,
            at: "env `",
        },
        Case {
            name: "env in a shell-local provisioner's environment_vars",
            template: leak(with(
                r#"{"type": "shell-local", "inline": ["true"], "environment_vars": ["A={{env `X`}}"]}"#,
            )),
            accepted: false,
            at: "env `",
        },
        Case {
            name: "env in ansible's extra_arguments (kiln renders them at run time)",
            template: leak(with(
                r#"{"type": "ansible", "playbook_file": "p.yml", "extra_arguments": ["-e", "x={{env `X`}}"]}"#,
            )),
            accepted: false,
            at: "env `",
        },
        Case {
            name: "env in puppet-masterless's extra_arguments (rendered at run time by both)",
            template: leak(with(
                r#"{"type": "puppet-masterless", "manifest_file": "m.pp", "extra_arguments": ["{{env `X`}}"]}"#,
            )),
            accepted: true,
            at: "",
        },
        Case {
            name: "env in qemu's qemuargs (rendered at run time by both)",
            template: r#"{"builders": [{"type": "qemu", "iso_url": "x.iso", "iso_checksum": "none", "ssh_username": "u", "qemuargs": [["-name", "{{env `X`}}"]]}]}"#,
            accepted: true,
            at: "",
        },
        Case {
            name: "env in qemu's vm_name",
            template: r#"{"builders": [{"type": "qemu", "iso_url": "x.iso", "iso_checksum": "none", "ssh_username": "u", "vm_name": "{{env `X`}}"}]}"#,
            accepted: false,
            at: "env `",
        },
        // build: provisioners and post-processors may name Packer's common
        // builder data; builders none.
        Case {
            name: "unknown name in build, shell-local inline",
            template: leak(with(
                r#"{"type": "shell-local", "inline": ["echo {{ build `Nope` }}"]}"#,
            )),
            accepted: false,
            at: "build `",
        },
        Case {
            name: "unknown name in build, environment_vars",
            template: leak(with(
                r#"{"type": "shell-local", "inline": ["true"], "environment_vars": ["A={{build `Nope`}}"]}"#,
            )),
            accepted: false,
            at: "build `",
        },
        Case {
            name: "unknown name in build, post-processor",
            template: r#"{"builders": [{"type": "null", "communicator": "none"}], "post-processors": [{"type": "shell-local", "inline": ["echo {{build `Nope`}}"]}]}"#,
            accepted: false,
            at: "build `",
        },
        Case {
            name: "unknown name in build, a file provisioner's destination",
            template: r#"{"builders": [{"type": "null", "communicator": "none"}], "provisioners": [{"type": "file", "content": "x", "destination": "/tmp/{{build `Nope`}}"}]}"#,
            accepted: false,
            at: "build `",
        },
        Case {
            name: "common names in build",
            template: leak(with(
                r#"{"type": "shell-local", "inline": ["echo {{build `ID`}} {{build `Host`}} {{build `PackerRunUUID`}} {{build `SSHPublicKey`}}"]}"#,
            )),
            accepted: true,
            at: "",
        },
        Case {
            name: "build in a builder's own configuration",
            template: r#"{"builders": [{"type": "file", "target": "out", "content": "{{build `ID`}}"}]}"#,
            accepted: false,
            at: "build `",
        },
        Case {
            name: "build in qemu's vm_name",
            template: r#"{"builders": [{"type": "qemu", "iso_url": "x.iso", "iso_checksum": "none", "ssh_username": "u", "vm_name": "{{build `ID`}}"}]}"#,
            accepted: false,
            at: "build `",
        },
        // Other functions that fail while rendering.
        Case {
            name: "split out of range in a builder field",
            template: r#"{"builders": [{"type": "file", "target": "out", "content": "{{ split `a-b` `-` 5 }}"}]}"#,
            accepted: false,
            at: "split `",
        },
        Case {
            name: "an undefined function",
            template: leak(with(r#"{"type": "shell-local", "inline": ["{{ nope }}"]}"#)),
            accepted: false,
            at: "nope }}",
        },
        Case {
            name: "an unknown variable is empty",
            template: leak(with(
                r#"{"type": "shell-local", "inline": ["echo {{user `nope`}}"]}"#,
            )),
            accepted: true,
            at: "",
        },
        Case {
            name: "a context value Packer does not know in a provisioner",
            template: leak(with(
                r#"{"type": "shell-local", "inline": ["echo {{.Nope}}"]}"#,
            )),
            accepted: true,
            at: "",
        },
        Case {
            name: "env in an unknown key's value (Packer renders it too)",
            template: leak(with(
                r#"{"type": "shell-local", "inline": ["true"], "bogus": "{{env `X`}}"}"#,
            )),
            accepted: false,
            at: "\"bogus\"",
        },
        // Keys that Packer's fixers rewrite.
        Case {
            name: "iso_checksum_type (a fixer folds it into iso_checksum)",
            template: r#"{"builders": [{"type": "qemu", "iso_url": "x.iso", "iso_checksum": "abc", "iso_checksum_type": "md5", "ssh_username": "u"}]}"#,
            accepted: false,
            at: "\"iso_checksum_type\"",
        },
        Case {
            name: "ssh_key_path (a fixer renames it)",
            template: r#"{"builders": [{"type": "null", "ssh_host": "h", "ssh_username": "u", "ssh_password": "p", "ssh_key_path": "k"}]}"#,
            accepted: false,
            at: "\"ssh_key_path\"",
        },
        Case {
            name: "ssh_wait_timeout (still accepted; a fixer renames it)",
            template: r#"{"builders": [{"type": "null", "ssh_host": "h", "ssh_username": "u", "ssh_password": "p", "ssh_wait_timeout": "1m"}]}"#,
            accepted: true,
            at: "",
        },
    ]
}

/// `line:col` of the first occurrence of `needle` in `text`.
fn line_col(text: &str, needle: &str) -> String {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in {text}"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap().chars().count() + 1;
    format!("{line}:{col}")
}

#[test]
fn packer_validate_errors_are_kiln_validate_errors_at_their_place() {
    let d = tempfile::tempdir().unwrap();
    // Files some components check for.
    std::fs::write(d.path().join("p.yml"), "- hosts: all\n").unwrap();
    std::fs::write(d.path().join("m.pp"), "").unwrap();
    let mut failures = Vec::new();
    let cases = cases();
    for c in &cases {
        std::fs::write(d.path().join("t.json"), c.template).unwrap();
        let (pc, pout) = packer(d.path(), &["validate", "t.json"]);
        let (kc, kout) = kiln(d.path(), &["validate", "t.json"]);
        let want = if c.accepted { Some(0) } else { Some(1) };
        if pc != want {
            failures.push(format!(
                "{}: Packer's verdict is {pc:?}, the table says {want:?}:\n{pout}",
                c.name
            ));
            continue;
        }
        if kc != pc {
            failures.push(format!(
                "{}: packer {pc:?}, kiln {kc:?}\npacker: {pout}\nkiln: {kout}",
                c.name
            ));
            continue;
        }
        if !c.accepted {
            let place = format!("t.json:{}:", line_col(c.template, c.at));
            if !kout.contains(&place) {
                failures.push(format!(
                    "{}: kiln's error is not at {place}\n{kout}",
                    c.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn with_only_the_builds_kiln_cannot_build_are_not_looked_at() {
    let d = tempfile::tempdir().unwrap();
    let t = r#"{
  "builders": [
    {"type": "virtualbox-iso", "name": "vb", "guest_os_type": "Debian_64", "iso_url": "x.iso", "iso_checksum": "none", "ssh_username": "u"},
    {"type": "qemu", "name": "win", "iso_url": "w.iso", "iso_checksum": "none", "communicator": "winrm", "winrm_username": "a", "winrm_password": "b"},
    {"type": "null", "name": "linux", "communicator": "none"}
  ],
  "provisioners": [
    {"type": "powershell", "only": ["win"], "inline": ["Write-Host hi"]},
    {"type": "windows-restart", "only": ["win"]},
    {"type": "shell-local", "inline": ["true"]}
  ]
}
"#;
    std::fs::write(d.path().join("t.json"), t).unwrap();
    for args in [
        &["validate", "-only=linux", "t.json"][..],
        &["validate", "-except=vb,win", "t.json"],
    ] {
        let (pc, pout) = packer(d.path(), args);
        let (kc, kout) = kiln(d.path(), args);
        assert_eq!(pc, Some(0), "{args:?}: {pout}");
        assert_eq!(kc, Some(0), "{args:?}: {kout}");
    }
    // Everything: one message for the Windows guest, one for the builder
    // kiln lacks, nothing about WinRM keys or Windows provisioners one by
    // one.
    let (kc, kout) = kiln(d.path(), &["validate", "t.json"]);
    assert_eq!(kc, Some(1));
    assert_eq!(
        kout.matches("kiln does not support Windows guests yet")
            .count(),
        1,
        "{kout}"
    );
    let msg = format!(
        "t.json:{}: kiln does not support Windows guests yet: `communicator: winrm` in the `win` builder makes this a template for one (so do the `powershell` provisioner at {}, the `windows-restart` provisioner at {})",
        line_col(t, "\"winrm\","),
        line_col(t, "\"powershell\""),
        line_col(t, "\"windows-restart\"")
    );
    assert!(kout.contains(&msg), "{msg}\n{kout}");
    assert_eq!(
        kout.matches("kiln has no `virtualbox-iso` builder").count(),
        1,
        "{kout}"
    );
    let messages: Vec<&str> = kout.lines().filter(|l| l.starts_with("t.json:")).collect();
    assert!(
        !messages
            .iter()
            .any(|l| l.contains("winrm_") || l.contains("unknown provisioner")),
        "{kout}"
    );
    assert!(kout.contains("2 errors found."), "{kout}");
    // Only the Windows build: just the Windows message.
    let (kc, kout) = kiln(d.path(), &["validate", "-only=win", "t.json"]);
    assert_eq!(kc, Some(1));
    assert!(kout.contains("1 error found."), "{kout}");
}
