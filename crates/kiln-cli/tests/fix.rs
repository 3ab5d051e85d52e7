//! `kiln fix` end to end, against Packer 1.6.6's `packer fix` (the oracle,
//! installed by scripts/setup.sh), and real old templates from public
//! repositories (tests/fixtures/real-templates, sources in SOURCES.md):
//! `kiln fix` writes what `packer fix` writes (as a JSON value), `kiln
//! validate` reports every key `kiln fix` rewrites at its position, and
//! once fixed, `kiln validate` accepts what `packer validate` accepts, for
//! the builders kiln has; for the others it says once what kiln lacks.
mod common;
use common::{kiln, write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Packer 1.6.6's path (checked once).
fn packer_path() -> String {
    static PACKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PACKER
        .get_or_init(|| {
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
        })
        .clone()
}

fn packer(dir: &Path) -> Command {
    let mut c = Command::new(packer_path());
    c.current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CACHE_DIR", dir.join("packer_cache"));
    c
}

struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

/// Run `c ARGS` (kiln or Packer).
fn run(mut c: Command, args: &[&str]) -> Run {
    let o: Output = c.args(args).output().unwrap();
    let (out, err) = common::text(&o);
    Run {
        code: o.status.code(),
        out,
        err,
    }
}

/// JSON equal up to number representation (Packer re-prints numbers).
fn normalize(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::Number(n) => J::String(format!("{}", n.as_f64().unwrap_or(f64::NAN))),
        J::Array(a) => J::Array(a.into_iter().map(normalize).collect()),
        J::Object(o) => J::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        v => v,
    }
}

/// The JSON value at the start of `s` (Packer prints its validation
/// errors after the fixed template, on the same stream).
fn json(s: &str) -> serde_json::Value {
    let v = serde_json::Deserializer::from_str(s)
        .into_iter::<serde_json::Value>()
        .next()
        .unwrap_or_else(|| panic!("no JSON in:\n{s}"))
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"));
    normalize(v)
}

/// The `file:line:col: message` lines of kiln's output (errors and
/// warnings), without the `Warning: ` prefix.
fn located(s: &str, file: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.strip_prefix("Warning: ").unwrap_or(l))
        .filter(|l| l.starts_with(&format!("{file}:")))
        .map(str::to_string)
        .collect()
}

/// kiln's error lines (not warnings) of a `validate` run.
fn errors(s: &str) -> Vec<String> {
    s.lines()
        .filter(|l| !l.starts_with("Warning: ") && l.contains(".json:") && l.contains(": "))
        .filter(|l| !l.starts_with(' '))
        .map(str::to_string)
        .collect()
}

#[test]
fn fix_keeps_order_comments_and_indentation_and_says_what_changed() {
    let d = tempfile::tempdir().unwrap();
    let text = "{\n    \"_comment\": \"an old template\",\n    \"builders\": [\n        {\n            \"type\": \"null\",\n            \"_note\": \"kept\",\n            \"communicator\": \"none\",\n            \"iso_checksum\": \"abc\",\n            \"iso_checksum_type\": \"md5\",\n            \"ssh_wait_timeout\": \"5m\",\n            \"zz\": 1.50\n        }\n    ],\n    \"post-processors\": [{\"type\": \"manifest\", \"filename\": \"m.json\"}]\n}\n";
    write(d.path(), "t.json", text);
    let k = run(kiln(d.path()), &["fix", "-validate=false", "t.json"]);
    assert_eq!(k.code, Some(0), "{}", k.err);
    // The exact text: the file's order and four-space indentation, the
    // renamed keys in the old keys' places, numbers as written.
    assert_eq!(
        k.out,
        "{\n    \"_comment\": \"an old template\",\n    \"builders\": [\n        {\n            \"type\": \"null\",\n            \"_note\": \"kept\",\n            \"communicator\": \"none\",\n            \"iso_checksum\": \"md5:abc\",\n            \"ssh_timeout\": \"5m\",\n            \"zz\": 1.50\n        }\n    ],\n    \"post-processors\": [\n        {\n            \"type\": \"manifest\",\n            \"output\": \"m.json\"\n        }\n    ]\n}\n"
    );
    // What changed, on standard error, at the old keys' places.
    let notes = located(&k.err, "t.json");
    assert_eq!(notes.len(), 3, "{}", k.err);
    assert!(
        notes[0].starts_with("t.json:9:13: `iso_checksum_type` is now part of `iso_checksum`"),
        "{notes:?}"
    );
    assert!(
        notes[0].ends_with("`\"iso_checksum\": \"md5:abc\"`"),
        "{notes:?}"
    );
    assert!(
        notes[1].starts_with("t.json:10:13: `ssh_wait_timeout` is now `ssh_timeout`"),
        "{notes:?}"
    );
    assert!(
        notes[2].starts_with(
            "t.json:14:46: `filename` of the `manifest` post-processor is now `output`"
        ),
        "{notes:?}"
    );
    // The file itself is untouched.
    assert_eq!(
        std::fs::read_to_string(d.path().join("t.json")).unwrap(),
        text
    );
    // Packer's output is the same JSON value.
    let p = run(packer(d.path()), &["fix", "-validate=false", "t.json"]);
    assert_eq!(p.code, Some(0), "{}", p.err);
    assert_eq!(json(&k.out), json(&p.out));
}

#[test]
fn fix_validates_the_fixed_template_unless_told_not_to() {
    let d = tempfile::tempdir().unwrap();
    // No builders: fixed, but not a valid template.
    write(d.path(), "t.json", r#"{"variables": {"a": "b"}}"#);
    for args in [
        &["fix", "t.json"][..],
        &["fix", "-validate=false", "t.json"],
    ] {
        let k = run(kiln(d.path()), args);
        let p = run(packer(d.path()), args);
        assert_eq!(
            k.code, p.code,
            "{args:?}: kiln {} / packer {}",
            k.err, p.err
        );
        assert_eq!(json(&k.out), json(&p.out), "{args:?}");
    }
    let k = run(kiln(d.path()), &["fix", "t.json"]);
    assert_eq!(k.code, Some(1));
    assert!(
        k.err.contains("at least one builder must be defined"),
        "{}",
        k.err
    );
    // Two spaces for a file on one line, as Packer.
    assert!(
        k.out
            .starts_with("{\n  \"variables\": {\n    \"a\": \"b\"\n  },\n  \"builders\": null"),
        "{}",
        k.out
    );
}

#[test]
fn fix_fails_where_packer_fails_and_says_where() {
    let d = tempfile::tempdir().unwrap();
    for (text, place) in [
        (r#"{"builders": {"type": "null"}}"#, "t.json:1:14:"),
        (
            r#"{"builders": [{"type": "amazon-ebs", "ssh_private_ip": "maybe"}]}"#,
            "t.json:1:56:",
        ),
        ("{\"builders\": [", "t.json:1:15:"),
    ] {
        write(d.path(), "t.json", text);
        let k = run(kiln(d.path()), &["fix", "t.json"]);
        let p = run(packer(d.path()), &["fix", "t.json"]);
        assert_eq!(p.code, Some(1), "packer on {text}: {}", p.out);
        assert_eq!(k.code, Some(1), "kiln on {text}: {}", k.out);
        assert!(k.out.is_empty(), "nothing on stdout: {}", k.out);
        assert!(k.err.contains(place), "{text}: {}", k.err);
    }
}

#[test]
fn fix_help_says_it_all() {
    let d = tempfile::tempdir().unwrap();
    let k = run(kiln(d.path()), &["fix", "--help"]);
    assert_eq!(k.code, Some(0));
    for needle in [
        "standard output",
        "keys stay in the order",
        "_comment",
        "indentation",
        "kiln validate",
        "-validate",
        "Exit status",
    ] {
        assert!(k.out.contains(needle), "help lacks {needle:?}:\n{}", k.out);
    }
    // Every fixer, in Packer's order.
    let mut at = 0;
    for f in kiln_fix_names() {
        let i = k.out[at..]
            .find(&format!("\n  {f}\n"))
            .unwrap_or_else(|| panic!("fixer {f} missing or out of order:\n{}", k.out));
        at += i + 1;
    }
    // Packer's own list has the same names in the same order.
    let p = run(packer(d.path()), &["fix", "-h"]);
    let text = p.out + &p.err;
    let listed: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Fixes that are run"))
        .skip(1)
        .take_while(|l| !l.starts_with("Options:"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed, kiln_fix_names());
}

fn kiln_fix_names() -> Vec<&'static str> {
    vec![
        "iso-md5",
        "createtime",
        "virtualbox-gaattach",
        "pp-vagrant-override",
        "virtualbox-rename",
        "vmware-rename",
        "parallels-headless",
        "parallels-deprecations",
        "sshkeypath",
        "sshdisableagent",
        "scaleway-access-key",
        "manifest-filename",
        "amazon-shutdown_behavior",
        "amazon-enhanced-networking",
        "amazon-private-ip",
        "amazon-temp-sec-cidrs",
        "docker-email",
        "docker-tag-tags",
        "powershell-escapes",
        "vmware-compaction",
        "hyperv-deprecations",
        "hyperv-vmxc-typo",
        "hyperv-cpu-and-ram",
        "clean-image-name",
        "spot-price-auto-product",
        "qemu-disk-size",
        "galaxy-command",
        "comm-config",
        "ssh-wait-timeout",
        "vsphere-iso-net-disk",
        "iso-checksum-type-and-url",
        "qemu-host-port",
        "azure-exclude_from_latest",
        "proxmox-type",
    ]
}

#[test]
fn validate_and_build_report_each_rewritten_key_and_suggest_fix() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{
  "builders": [{
    "type": "null",
    "communicator": "ssh",
    "ssh_host": "127.0.0.1",
    "ssh_username": "u",
    "ssh_password": "p",
    "ssh_key_path": "id_rsa",
    "ssh_disable_agent": true,
    "ssh_wait_timeout": "1m"
  }]
}
"#,
    );
    for cmd in ["validate", "build"] {
        let k = run(kiln(d.path()), &[cmd, "t.json"]);
        assert_eq!(k.code, Some(1), "{cmd}: {}", k.out);
        // Refused keys are errors at their place, with what they become.
        assert!(k.err.contains("t.json:8:5: `ssh_key_path` is now `ssh_private_key_file` (Packer's `sshkeypath` fixer): `kiln fix` writes `\"ssh_private_key_file\": \"id_rsa\"`"), "{cmd}: {}", k.err);
        assert!(
            k.err
                .contains("t.json:9:5: `ssh_disable_agent` is now `ssh_disable_agent_forwarding`"),
            "{cmd}: {}",
            k.err
        );
        // A key kiln (and Packer) still accept is a warning.
        assert!(
            k.err
                .contains("Warning: t.json:10:5: `ssh_wait_timeout` is now `ssh_timeout`"),
            "{cmd}: {}",
            k.err
        );
        assert!(
            k.err.contains(
                "help: `kiln fix t.json` writes the template with every such key rewritten"
            ),
            "{cmd}: {}",
            k.err
        );
        assert!(!k.err.contains("unknown key"), "{cmd}: {}", k.err);
        assert!(k.err.contains("2 errors found."), "{cmd}: {}", k.err);
    }
    // Packer 1.6.6 refuses the same keys.
    let p = run(packer(d.path()), &["validate", "t.json"]);
    assert_eq!(p.code, Some(1));
    assert!(p.err.contains("ssh_key_path") || p.out.contains("ssh_key_path"));
}

#[test]
fn an_error_inside_a_rewritten_value_gets_the_note() {
    let d = tempfile::tempdir().unwrap();
    // qemu accepts ssh_host_port_min (Packer warns), but its value here is
    // bad: the error there says what the key becomes.
    write(
        d.path(),
        "t.json",
        r#"{"builders": [{"type": "qemu", "iso_url": "x.iso", "iso_checksum": "none", "ssh_username": "u", "ssh_host_port_min": "lots"}]}"#,
    );
    let k = run(kiln(d.path()), &["validate", "t.json"]);
    assert_eq!(k.code, Some(1));
    assert!(
        k.err
            .contains("t.json:1:118: `ssh_host_port_min` must be an integer"),
        "{}",
        k.err
    );
    assert!(
        k.err.contains(
            "help: `ssh_host_port_min` is now `host_port_min` (Packer's `qemu-host-port` fixer)"
        ),
        "{}",
        k.err
    );
}

// ------------------------------------------------------ real templates

/// What kiln's `validate` of a fixed template may say beyond Packer's
/// verdict, and why.
#[derive(Clone, Copy)]
enum Expect {
    /// The same verdict as Packer.
    Same,
    /// A Windows guest: kiln's one message, Packer accepts.
    Windows,
    /// Packer's verdict needs the network (it downloads the checksum file
    /// while preparing): only kiln's side is checked, and kiln accepts it
    /// (it fetches a checksum file when the build runs).
    PackerNeedsNetwork,
}

struct Real {
    file: &'static str,
    /// Files and directories the template refers to (empty stand-ins).
    stubs: &'static [&'static str],
    args: &'static [&'static str],
    expect: Expect,
}

const REAL: &[Real] = &[
    Real {
        file: "sammcj-jessie.json",
        stubs: &[
            "http/",
            "scripts/zram",
            "scripts/packages.sh",
            "scripts/cleanup.sh",
            "scripts/tuning.sh",
        ],
        args: &[],
        expect: Expect::Same,
    },
    Real {
        file: "jakobadam-debian87.json",
        stubs: &[
            "http/",
            "scripts/update.sh",
            "scripts/packages.sh",
            "scripts/cleanup.sh",
        ],
        args: &[],
        expect: Expect::Same,
    },
    Real {
        file: "leanderjanssen-ubuntu-16.04.json",
        stubs: &[
            "http/",
            "scripts/update.sh",
            "scripts/console.sh",
            "scripts/network.sh",
            "scripts/sudo.sh",
            "scripts/ansible.sh",
            "scripts/cleanup.sh",
            "ansible/playbook.yml",
        ],
        args: &[],
        expect: Expect::Same,
    },
    Real {
        file: "miry-docker.json",
        stubs: &["docker.sh"],
        args: &[],
        expect: Expect::Same,
    },
    Real {
        file: "miry-centos.json",
        stubs: &["http/"],
        args: &[],
        expect: Expect::PackerNeedsNetwork,
    },
    Real {
        file: "kaorimatz-debian-9.4-amd64.json",
        stubs: &[
            "http/",
            "scripts/debian/virtualbox.sh",
            "scripts/debian-9.4/vmware.sh",
            "scripts/common/vagrant.sh",
            "scripts/common/sshd.sh",
            "scripts/debian/cleanup.sh",
            "scripts/common/minimize.sh",
        ],
        args: &["-only=qemu"],
        expect: Expect::Same,
    },
    Real {
        file: "jakobadam-windows.json",
        stubs: &[
            "http/",
            "scripts/unlimited-password-expiration.bat",
            "scripts/enable-rdp.bat",
            "scripts/uac-disable.bat",
            "scripts/disablewinupdate.bat",
            "scripts/disable-hibernate.bat",
            "scripts/firewall-open-ping.bat",
            "scripts/firewall-open-rdp.bat",
        ],
        args: &[],
        expect: Expect::Windows,
    },
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real-templates")
}

#[test]
fn real_old_templates_fix_and_validate_as_with_packer() {
    let mut report = Vec::new();
    for r in REAL {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let text = std::fs::read_to_string(fixtures().join(r.file)).unwrap();
        write(dir, "t.json", &text);
        for s in r.stubs {
            if let Some(d) = s.strip_suffix('/') {
                std::fs::create_dir_all(dir.join(d)).unwrap();
            } else {
                write(dir, s, "");
            }
        }
        // 1. Packer 1.6.6 refuses the template as it is; kiln refuses it
        //    too and names every key `kiln fix` rewrites, at its place.
        let p0 = run(
            packer(dir),
            &[&["validate"][..], r.args, &["t.json"]].concat(),
        );
        assert_eq!(p0.code, Some(1), "{}: Packer accepts it unfixed", r.file);
        let k0 = run(
            kiln(dir),
            &[&["validate"][..], r.args, &["t.json"]].concat(),
        );
        assert_eq!(k0.code, Some(1), "{}: kiln accepts it unfixed", r.file);

        // 2. Both fix it to the same JSON value.
        let kf = run(kiln(dir), &["fix", "-validate=false", "t.json"]);
        assert_eq!(kf.code, Some(0), "{}: {}", r.file, kf.err);
        let pf = run(packer(dir), &["fix", "-validate=false", "t.json"]);
        assert_eq!(pf.code, Some(0), "{}: {}", r.file, pf.err);
        assert_eq!(
            json(&kf.out),
            json(&pf.out),
            "{}: kiln fix and packer fix differ",
            r.file
        );
        let rewritten = located(&kf.err, "t.json");
        assert!(
            !rewritten.is_empty(),
            "{}: kiln fix changed nothing",
            r.file
        );
        for line in &rewritten {
            // A rewritten key in a build left out by -only is not looked
            // at; nor are the keys of a Windows guest's builder (kiln says
            // once that it cannot build it), whose template also has a
            // duplicate key, which kiln refuses before anything else.
            if !r.args.is_empty() || matches!(r.expect, Expect::Windows) {
                continue;
            }
            assert!(
                located(&k0.err, "t.json").contains(line),
                "{}: `kiln validate` does not report what `kiln fix` did: {line}\n{}",
                r.file,
                k0.err
            );
        }

        // 3. Validate the fixed templates.
        write(dir, "k.json", &kf.out);
        write(dir, "p.json", &pf.out);
        let pv = run(
            packer(dir),
            &[&["validate"][..], r.args, &["p.json"]].concat(),
        );
        let kv = run(
            kiln(dir),
            &[&["validate"][..], r.args, &["k.json"]].concat(),
        );
        let kerr = errors(&kv.err);
        assert!(
            !kv.err.contains("kiln fix"),
            "{}: the fixed template still has keys to fix:\n{}",
            r.file,
            kv.err
        );
        match r.expect {
            Expect::Same => assert_eq!(
                kv.code, pv.code,
                "{}: packer {}{}\nkiln {}",
                r.file, pv.out, pv.err, kv.err
            ),
            Expect::PackerNeedsNetwork => {
                assert_eq!(kv.code, Some(0), "{}: {}", r.file, kv.err);
            }
            Expect::Windows => {
                assert!(k0.err.contains("duplicate key `qemuargs`"), "{}", k0.err);
                assert_eq!(pv.code, Some(0), "{}: {}{}", r.file, pv.out, pv.err);
                assert_eq!(kerr.len(), 1, "{}: one message:\n{}", r.file, kv.err);
                assert!(
                    kerr[0].contains("kiln does not support Windows guests yet"),
                    "{}",
                    kv.err
                );
            }
        }
        report.push(format!(
            "{}: packer fix+validate {:?}, kiln fix+validate {:?} ({} keys rewritten)",
            r.file,
            pv.code,
            kv.code,
            rewritten.len()
        ));
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn a_multi_builder_template_says_once_what_kiln_lacks() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let text = std::fs::read_to_string(fixtures().join("kaorimatz-debian-9.4-amd64.json")).unwrap();
    write(dir, "t.json", &text);
    let k = run(kiln(dir), &["validate", "t.json"]);
    assert_eq!(k.code, Some(1));
    for b in ["virtualbox-iso", "vmware-iso"] {
        let msg = format!("kiln has no `{b}` builder");
        assert_eq!(k.err.matches(&msg).count(), 1, "{b}:\n{}", k.err);
    }
    assert!(k.err.contains("kiln's builders are: "), "{}", k.err);
    // Nothing about the keys of the builders kiln does not have.
    assert!(
        !k.err.contains("vboxmanage") && !k.err.contains("vmx_data"),
        "{}",
        k.err
    );
    // Their `iso_checksum_type` is not reported either (not decoded); the
    // qemu build's is, once.
    assert_eq!(
        k.err.matches("`iso_checksum_type` is now part of").count(),
        1,
        "{}",
        k.err
    );
}
