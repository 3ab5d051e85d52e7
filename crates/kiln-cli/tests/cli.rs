//! The `kiln` binary, end to end, on templates that need no machine.
mod common;
use common::{kiln, text, write};

/// The seed's template, verbatim (from the seed README).
pub const SEED_TEMPLATE: &str = r#"{
    "builders": [
        {
            "flavor": "m1.small",
            "image_name": "image built by Packer",
            "source_image": "82b55c8c-cce1-4301-92c4-b005180531de",
            "ssh_username": "ubuntu",
            "use_floating_ip" : "true",
            "floating_ip_pool" : "nova",
            "type": "openstack",
            "security_groups" : "ssh"
        }
    ],
    "provisioners": [
        {
            "scripts": [
                "scripts/update.sh",
                "scripts/sudoers.sh",
                "scripts/compiler_tools.sh"
            ],
            "type": "shell",
            "execute_command": "sudo bash '{{.Path}}'"
        },
        {
            "destination": "/stash",
            "source": "./data/",
            "type": "file"
        }
    ]
}
"#;

#[test]
fn version_and_help() {
    let d = tempfile::tempdir().unwrap();
    let o = kiln(d.path()).arg("version").output().unwrap();
    assert!(o.status.success());
    assert!(text(&o).0.starts_with("kiln "));
    let o = kiln(d.path()).args(["build", "--help"]).output().unwrap();
    assert!(o.status.success());
    let (out, _) = text(&o);
    for flag in [
        "--var",
        "--var-file",
        "--only",
        "--except",
        "--force",
        "--on-error",
        "--parallel-builds",
        "--timestamp-ui",
        "Ctrl-C",
    ] {
        assert!(out.contains(flag), "help lacks {flag}:\n{out}");
    }
}

#[test]
fn bad_flags_exit_1() {
    let d = tempfile::tempdir().unwrap();
    let o = kiln(d.path())
        .args(["build", "-on-error=explode", "t.json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("explode"));
}

#[test]
fn file_builder_with_vars_in_command_line_order() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{"variables": {"a": "default"},
            "builders": [{"type": "file", "target": "out.txt", "content": "a={{user `a`}}"}]}"#,
    );
    write(d.path(), "one.json", r#"{"a": "one"}"#);
    write(d.path(), "three.json", r#"{"a": "three"}"#);
    let run = |args: &[&str]| {
        let o = kiln(d.path())
            .arg("build")
            .args(args)
            .arg("t.json")
            .output()
            .unwrap();
        assert!(o.status.success(), "{:?}", text(&o));
        std::fs::read_to_string(d.path().join("out.txt")).unwrap()
    };
    assert_eq!(run(&[]), "a=default");
    assert_eq!(run(&["-var-file", "one.json"]), "a=one");
    assert_eq!(run(&["-var-file=one.json", "-var", "a=two"]), "a=two");
    assert_eq!(
        run(&[
            "-var-file=one.json",
            "-var",
            "a=two",
            "-var-file",
            "three.json"
        ]),
        "a=three"
    );
    assert_eq!(run(&["-var", "a=x=y"]), "a=x=y");
}

#[test]
fn build_prints_packer_style_output_and_summary() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{"builders": [{"type": "file", "name": "one", "target": "one.txt", "content": "1"}]}"#,
    );
    let o = kiln(d.path()).args(["build", "t.json"]).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("==> one: Writing content to one.txt"), "{out}");
    assert!(out.contains("==> one: Build 'one' finished after"), "{out}");
    assert!(
        out.contains("==> Builds finished. The artifacts of successful builds are:"),
        "{out}"
    );
    assert!(out.contains("--> one: Stored file: one.txt"), "{out}");
}

#[test]
fn machine_readable_lines() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{"builders": [{"type": "file", "target": "a,b.txt", "content": "x"}]}"#,
    );
    let o = kiln(d.path())
        .args(["-machine-readable", "build", "t.json"])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for line in out.lines() {
        let f: Vec<&str> = line.split(',').collect();
        assert!(f.len() >= 3, "not machine-readable: {line}");
        assert!(f[0].parse::<i64>().is_ok(), "no timestamp: {line}");
    }
    assert!(out.contains(",file,artifact-count,1"), "{out}");
    assert!(
        out.contains(",file,artifact,0,builder-id,packer.file"),
        "{out}"
    );
    assert!(out.contains("a%!(PACKER_COMMA)b.txt"), "{out}");
}

#[test]
fn only_and_except_select_builds() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{"builders": [
            {"type": "file", "name": "a", "target": "a.txt", "content": "a"},
            {"type": "file", "name": "b", "target": "b.txt", "content": "b"}]}"#,
    );
    let o = kiln(d.path())
        .args(["build", "-only=a", "t.json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(d.path().join("a.txt").exists() && !d.path().join("b.txt").exists());
    let o = kiln(d.path())
        .args(["build", "-except", "a", "t.json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(d.path().join("b.txt").exists());
    let o = kiln(d.path())
        .args(["build", "-only=c", "t.json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("`c` matches no build"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn sensitive_variables_never_reach_output() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{"variables": {"secret": "hunter2"},
            "sensitive-variables": ["secret"],
            "builders": [{"type": "file", "target": "out-{{user `secret`}}.txt", "content": "x"}]}"#,
    );
    for extra in [&[][..], &["-machine-readable"][..]] {
        let o = kiln(d.path())
            .args(extra)
            .args(["build", "-var", "secret=s3cr3t-value", "t.json"])
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        assert!(
            !out.contains("s3cr3t-value") && !err.contains("s3cr3t-value"),
            "{out}\n{err}"
        );
        assert!(out.contains("out-<sensitive>.txt"), "{out}");
    }
    assert!(d.path().join("out-s3cr3t-value.txt").exists());
}

#[test]
fn validate_reports_every_error_with_position_and_suggestion() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{
  "builders": [
    {"type": "file", "target": "x", "contnet": "y"},
    {"type": "nul", "name": "second"}
  ]
}
"#,
    );
    let o = kiln(d.path())
        .args(["validate", "t.json"])
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("t.json:3:"), "{err}");
    assert!(err.contains("contnet"), "{err}");
    assert!(err.contains("did you mean `content`?"), "{err}");
    assert!(err.contains("t.json:4:14"), "{err}");
    assert!(err.contains("unknown builder type `nul`"), "{err}");
    assert!(
        err.contains("did you mean `null`?") || err.contains("known builder types"),
        "{err}"
    );
}

#[test]
fn validate_syntax_error_shows_the_line() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        "{\n  \"builders\": [\n    {\"type\": \"file\",}\n  ]\n}\n",
    );
    let o = kiln(d.path())
        .args(["validate", "t.json"])
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("t.json:3:"), "{err}");
    assert!(err.contains("{\"type\": \"file\",}"), "{err}");
    let o = kiln(d.path())
        .args(["validate", "-syntax-only", "t.json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn validate_ok_and_missing_file() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{"builders": [{"type": "file", "target": "x", "content": "y"}]}"#,
    );
    let o = kiln(d.path())
        .args(["validate", "t.json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("Template validated successfully."));
    let o = kiln(d.path())
        .args(["validate", "nope.json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("nope.json"), "{:?}", text(&o));
}

#[test]
fn inspect_lists_the_template() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{"description": "demo", "variables": {"req": null, "opt": "v", "pw": "hunter2"},
            "sensitive-variables": ["pw"],
            "builders": [{"type": "file", "name": "f", "target": "x", "content": "y"}],
            "post-processors": ["checksum"]}"#,
    );
    let o = kiln(d.path()).args(["inspect", "t.json"]).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("demo"));
    assert!(
        out.contains("Required variables:") && out.contains("  req"),
        "{out}"
    );
    assert!(out.contains("opt = v"), "{out}");
    assert!(out.contains("pw  = <sensitive>"), "{out}");
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "{out}"
    );
    assert!(out.contains("f                    (file)"), "{out}");
    assert!(out.contains("0: checksum"), "{out}");
}

#[test]
fn console_evaluates_expressions() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{"variables": {"name": "World"},
            "builders": [{"type": "file", "target": "x", "content": "y"}]}"#,
    );
    let mut child = kiln(d.path())
        .args(["console", "t.json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{{user `name`}}\n{{ upper (user `name`) }}\n{{nosuchfunc}}\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success());
    assert_eq!(out.lines().collect::<Vec<_>>(), ["World", "WORLD"], "{out}");
    assert!(err.contains("nosuchfunc"), "{err}");
}

#[test]
fn seed_template_parses_and_names_missing_builder_cleanly() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "template.json", SEED_TEMPLATE);
    let o = kiln(d.path())
        .args(["validate", "-syntax-only", "template.json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    let o = kiln(d.path())
        .args(["inspect", "template.json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    let (out, _) = text(&o);
    assert!(out.contains("  openstack") && out.contains("  shell") && out.contains("  file"));
}
