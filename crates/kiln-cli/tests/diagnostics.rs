//! The `kiln` binary's diagnostics and secret scrubbing, end to end: every
//! problem once, in one run, with did-you-mean; builder names interpolated
//! (and the raw name used for provisioner `only`/`override`); secrets never
//! printed, whatever the mode or the stage that fails.
mod common;
use common::{kiln, run, write};

// ------------------------------------------------------------ diagnostics

#[test]
fn unknown_provisioner_and_post_processor_types_suggest_the_nearest() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{
  "builders": [{"type": "null", "communicator": "none"}],
  "provisioners": [{"type": "shel-local", "inline": ["true"]}],
  "post-processors": [{"type": "checksun"}, {"type": "zzzzzz"}]
}
"#,
    );
    let (code, _, err) = run(d.path(), &["validate", "t.json"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("t.json:3:29: unknown provisioner type `shel-local`"),
        "{err}"
    );
    assert!(err.contains("did you mean `shell-local`?"), "{err}");
    assert!(
        err.contains("t.json:4:32: unknown post-processor type `checksun`"),
        "{err}"
    );
    assert!(err.contains("did you mean `checksum`?"), "{err}");
    // No close name: the known ones are listed instead.
    assert!(
        err.contains("unknown post-processor type `zzzzzz`"),
        "{err}"
    );
    assert!(err.contains("kiln's post-processors are: "), "{err}");
    assert!(err.contains("3 errors found."), "{err}");
}

#[test]
fn each_problem_is_reported_once_whatever_the_number_of_builds() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{
  "builders": [
    {"type": "null", "name": "a", "communicator": "none"},
    {"type": "null", "name": "b", "communicator": "none"}
  ],
  "provisioners": [{"type": "shell-local", "inlin": ["true"], "valid_exit_codes": "x"}],
  "error-cleanup-provisioner": {"type": "shel-local"},
  "post-processors": [{"type": "checksum", "checksum_type": ["md5"]}, "nope"]
}
"#,
    );
    for cmd in ["validate", "build"] {
        let (code, _, err) = run(d.path(), &[cmd, "t.json"]);
        assert_eq!(code, Some(1), "{err}");
        let reported: Vec<&str> = err.lines().filter(|l| l.starts_with("t.json:")).collect();
        assert_eq!(
            reported,
            [
                "t.json:6:20: Command, Inline, Script and Scripts options cannot all be empty.",
                "t.json:6:44: unknown key `inlin` in the `shell-local` provisioner",
                "t.json:6:83: `valid_exit_codes[0]` must be an integer, found string \"x\"",
                "t.json:7:41: unknown provisioner type `shel-local`",
                "t.json:8:44: unknown key `checksum_type` in the `checksum` post-processor",
                "t.json:8:71: unknown post-processor type `nope`",
            ],
            "{cmd}:\n{err}"
        );
        assert!(err.contains("6 errors found."), "{cmd}:\n{err}");
    }
}

#[test]
fn structural_and_component_problems_come_in_one_run() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{
  "bogus": 1,
  "builders": [{"type": "file", "target": "x", "contnet": "y"}, {"name": "no-type"}],
  "provisioners": [{"type": "shell-local", "inlin": ["true"], "pause_before": "soon"}]
}
"#,
    );
    let (code, _, err) = run(d.path(), &["validate", "t.json"]);
    assert_eq!(code, Some(1), "{err}");
    for want in [
        "t.json:2:3: unknown root key `bogus`",
        "builder 2: missing `type`",
        "t.json:4:79: provisioner 1: `pause_before`: time: invalid duration \"soon\"",
        "t.json:3:48: unknown key `contnet` in the `file` builder",
        "did you mean `content`?",
        "unknown key `inlin`",
    ] {
        assert!(err.contains(want), "missing {want:?}:\n{err}");
    }
    assert!(err.contains("6 errors found."), "{err}");
    // Variable problems stop before the components (their values depend
    // on the variables): documented staging.
    write(
        d.path(),
        "v.json",
        r#"{
  "variables": {"req": null},
  "builders": [{"type": "file", "target": "{{user `req`}}", "contnet": "y"}]
}
"#,
    );
    let (code, _, err) = run(d.path(), &["validate", "v.json"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("required variable not set: req"), "{err}");
    assert!(!err.contains("contnet"), "{err}");
    assert!(err.contains("1 error found."), "{err}");
}

#[test]
fn builder_names_are_interpolated_and_provisioners_use_the_raw_name() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{
  "variables": {"env": "dev"},
  "builders": [
    {"type": "null", "name": "box-{{user `env`}}", "communicator": "none"},
    {"type": "null", "name": "other", "communicator": "none"}
  ],
  "provisioners": [
    {"type": "shell-local", "only": ["box-{{user `env`}}"], "inline": ["echo OUT: only {{build_name}}"]},
    {"type": "shell-local", "inline": ["echo OUT: default {{build_name}}"],
     "override": {"box-{{user `env`}}": {"inline": ["echo OUT: override {{build_name}}"]}}}
  ]
}
"#,
    );
    let (code, out, err) = run(
        d.path(),
        &["build", "-parallel-builds=1", "-var", "env=prod", "t.json"],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    let printed: Vec<&str> = out
        .lines()
        .filter_map(|l| l.find("OUT:").map(|i| &l[i..]))
        .collect();
    assert_eq!(
        printed,
        [
            "OUT: only box-prod",
            "OUT: override box-prod",
            "OUT: default other"
        ],
        "{out}"
    );
    assert!(
        out.contains("==> box-prod: Build 'box-prod' finished"),
        "{out}"
    );
    // -only matches the interpolated name, not the raw one.
    let (code, out, err) = run(d.path(), &["build", "-only=box-dev", "t.json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("OUT: only box-dev"), "{out}");
    assert!(!out.contains("other"), "{out}");
    let (code, _, err) = run(d.path(), &["build", "-only=box-prod", "t.json"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("-only `box-prod` matches no build"), "{err}");
    assert!(err.contains("did you mean `box-dev`?"), "{err}");
}

#[test]
fn duplicate_interpolated_build_names_are_an_error() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{
  "variables": {"a": "one", "b": "two"},
  "builders": [
    {"type": "null", "name": "{{user `a`}}", "communicator": "none"},
    {"type": "null", "name": "{{user `b`}}", "communicator": "none"}
  ]
}
"#,
    );
    let (code, _, err) = run(d.path(), &["validate", "t.json"]);
    assert_eq!(code, Some(0), "{err}");
    // Packer 1.6.6 silently keeps only the last of such builds.
    let (code, _, err) = run(d.path(), &["validate", "-var", "b=one", "t.json"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("t.json:5:30: duplicate build name `one` (first at 4:30)"),
        "{err}"
    );
    let (code, _, err) = run(d.path(), &["build", "-var", "b=one", "t.json"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("duplicate build name `one`"), "{err}");
}

#[test]
fn except_on_a_named_post_processor_and_its_type() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{
  "builders": [{"type": "file", "content": "x", "target": "out.txt"}],
  "post-processors": [
    [{"type": "shell-local", "inline": ["echo OUT: first"]},
     {"type": "checksum", "name": "sums", "output": "sums.txt"},
     {"type": "shell-local", "inline": ["echo OUT: after sums"]}]
  ]
}
"#,
    );
    let (code, out, err) = run(d.path(), &["build", "-except=sums", "t.json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("OUT: first"), "{out}");
    assert!(
        !out.contains("OUT: after sums"),
        "the rest of the chain is skipped:\n{out}"
    );
    assert!(!d.path().join("sums.txt").exists());
    // A named post-processor is not skipped by its type.
    let (code, _, err) = run(d.path(), &["build", "-except=checksum", "t.json"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("-except `checksum` matches no build"), "{err}");
    assert!(
        err.contains("the `checksum` post-processor is `sums`"),
        "{err}"
    );
}

#[test]
fn file_builder_without_content_warns_and_writes_an_empty_file() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{"builders": [{"type": "file", "target": "deep/er/out.txt"}]}"#,
    );
    let (code, out, err) = run(d.path(), &["validate", "t.json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        err.contains("Warning: t.json:1:15: Both source file and contents are blank; target will have no content"),
        "{err}"
    );
    assert!(out.contains("Template validated successfully."), "{out}");
    let (code, out, err) = run(d.path(), &["-machine-readable", "build", "t.json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(err.matches("Both source file").count(), 0, "{err}");
    assert_eq!(out.matches("Both source file").count(), 1, "{out}");
    assert_eq!(
        std::fs::read_to_string(d.path().join("deep/er/out.txt")).unwrap(),
        ""
    );
    assert!(out.contains(",file,artifact,0,id,File\n"), "{out}");
}

#[test]
fn null_artifact_id_is_null() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{"builders": [{"type": "null", "communicator": "none"}]}"#,
    );
    let (code, out, err) = run(d.path(), &["-machine-readable", "build", "t.json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains(",null,artifact,0,id,Null\n"), "{out}");
    assert!(
        out.contains(",null,artifact,0,builder-id,fnoeding.null\n"),
        "{out}"
    );
}

// ------------------------------------------------------------ secrets

/// A secret with a comma and a newline, in `-machine-readable` mode, and a
/// multi-line one printed line by line in human mode.
#[test]
fn secrets_with_commas_and_newlines_never_reach_output() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{
  "variables": {"secret": "", "key": ""},
  "sensitive-variables": ["secret", "key"],
  "builders": [{"type": "file", "target": "out-{{user `secret`}}.txt", "content": "x"}],
  "provisioners": [{"type": "shell-local", "inline": [
    "echo 'whole: {{user `secret`}}'",
    "printf '%s\\n' '{{user `key`}}'",
    "echo 'key again: {{user `key`}}' >&2"
  ]}]
}
"#,
    );
    let secret = "s3,cr\net-v4lue";
    let key = "-----BEGIN KEY-----\nAAAAbbbbCCCCdddd\nEEEEffffGGGGhhhh\n-----END KEY-----";
    for mode in [&[][..], &["-machine-readable"][..]] {
        let o = kiln(d.path())
            .args(mode)
            .args(["build", "-var"])
            .arg(format!("secret={secret}"))
            .arg("-var")
            .arg(format!("key={key}"))
            .arg("t.json")
            .output()
            .unwrap();
        let all = format!(
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{all}");
        for part in [
            "s3,",
            "s3%!(PACKER_COMMA)",
            "cr\\net",
            "et-v4lue",
            "AAAA",
            "EEEE",
            "hhhh",
            "BEGIN KEY",
            "END KEY",
        ] {
            assert!(!all.contains(part), "{part:?} leaked in {mode:?}:\n{all}");
        }
        assert!(all.contains("whole: <sensitive>"), "{all}");
        assert!(all.contains("out-<sensitive>.txt"), "{all}");
    }
    assert!(d.path().join(format!("out-{secret}.txt")).exists());
}

#[test]
fn secrets_are_hidden_from_variable_and_template_errors() {
    let d = tempfile::tempdir().unwrap();
    // A variable error on the line of a sensitive default.
    write(
        d.path(),
        "vars.json",
        r#"{"variables": {"pw": "hunter2-default", "x": "{{user `nope`}}"}, "sensitive-variables": ["pw"],
 "builders": [{"type": "null", "communicator": "none"}]}
"#,
    );
    // A structural error on the line of a sensitive default.
    write(
        d.path(),
        "root.json",
        r#"{"variables": {"pw": "hunter2-default"}, "bogus": 1, "sensitive-variables": ["pw"],
 "builders": [{"type": "null", "communicator": "none"}]}
"#,
    );
    // A -var-file error on the line of the sensitive value it sets.
    write(
        d.path(),
        "ok.json",
        r#"{"variables": {"pw": "hunter2-default"}, "sensitive-variables": ["pw"],
 "builders": [{"type": "null", "communicator": "none"}]}
"#,
    );
    write(
        d.path(),
        "values.json",
        r#"{"pw": "from-var-file", "n": 5}"#,
    );
    let cases: &[&[&str]] = &[
        &["validate", "vars.json"],
        &["build", "vars.json"],
        &["validate", "root.json"],
        &["validate", "-syntax-only", "root.json"],
        &["inspect", "root.json"],
        &["build", "-var-file=values.json", "ok.json"],
        &["validate", "-var-file=values.json", "ok.json"],
    ];
    for args in cases {
        for mode in [&[][..], &["-machine-readable"][..]] {
            let mut all_args: Vec<&str> = mode.to_vec();
            all_args.extend_from_slice(args);
            let (code, out, err) = run(d.path(), &all_args);
            assert_eq!(code, Some(1), "{args:?}: {out}\n{err}");
            let all = format!("{out}\n{err}");
            assert!(!all.contains("hunter2"), "{args:?}:\n{all}");
            assert!(!all.contains("from-var-file"), "{args:?}:\n{all}");
            // The excerpt is still shown, scrubbed.
            assert!(all.contains("<sensitive>"), "{args:?}:\n{all}");
        }
    }
}

#[test]
fn null_builder_over_ssh_needs_a_way_to_authenticate() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{"builders": [{"type": "null", "ssh_host": "127.0.0.1", "ssh_username": "u"}]}"#,
    );
    let (code, _, err) = run(d.path(), &["validate", "t.json"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("one authentication method must be specified"),
        "{err}"
    );
    // Any one of them is enough.
    for key in [
        r#""ssh_password": "pw""#,
        r#""ssh_private_key_file": "k""#,
        r#""ssh_agent_auth": true"#,
    ] {
        write(
            d.path(),
            "t.json",
            &format!(
                r#"{{"builders": [{{"type": "null", "ssh_host": "127.0.0.1", "ssh_username": "u", {key}}}]}}"#
            ),
        );
        let (_, _, err) = run(d.path(), &["validate", "t.json"]);
        assert!(!err.contains("one authentication method"), "{key}: {err}");
    }
}
