//! The same templates through kiln and through Debian's Packer 1.6.6 (the
//! oracle, installed by scripts/setup.sh): what the provisioners printed,
//! the exit status, and which files exist afterwards must agree.
//!
//! Only machine-free components are used here (null with `communicator:
//! none`, file, shell-local, post-processors); SSH and QEMU have their own
//! comparisons in their crates.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn packer() -> String {
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

struct Run {
    code: Option<i32>,
    /// Lines the provisioners printed that carry the marker `OUT:`, from
    /// the marker on, in order.
    printed: Vec<String>,
    /// Files in the working directory afterwards (path -> content, or the
    /// size for big or binary files).
    files: BTreeMap<String, String>,
    raw: String,
}

fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if rel == "t.json" || rel.starts_with("packer_cache") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            // Compressed files: compare what they hold, not their bytes
            // (gzip headers and block boundaries differ between tools).
            let sh = |cmd: &str| {
                let o = Command::new("sh")
                    .arg("-c")
                    .arg(format!("{cmd} '{}'", p.display()))
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{cmd} {rel}");
                String::from_utf8_lossy(&o.stdout).into_owned()
            };
            if rel.ends_with(".tar.gz") {
                out.insert(
                    rel.clone(),
                    format!("names: {}\ncontent: {}", sh("tar -tzf"), sh("tar -xzOf")),
                );
                continue;
            }
            if rel.ends_with(".gz") {
                out.insert(rel.clone(), sh("gzip -dc"));
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            if rel.ends_with("manifest.json") {
                out.insert(rel, normalized_manifest(&bytes));
                continue;
            }
            let content = match String::from_utf8(bytes.clone()) {
                Ok(s) => s,
                _ => format!("<{} bytes>", bytes.len()),
            };
            out.insert(rel, content);
        }
    }
    out
}

/// A manifest with what differs between any two runs (the run's UUID, the
/// build time) replaced by placeholders, pretty-printed: everything else
/// (names, builder types, files and sizes, artifact ids, custom data) is
/// compared.
fn normalized_manifest(bytes: &[u8]) -> String {
    let mut v: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return format!("<unparsable manifest: {e}>"),
    };
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    match k.as_str() {
                        "packer_run_uuid" | "last_run_uuid" => {
                            let ok = x.as_str().is_some_and(|s| s.len() == 36);
                            *x = format!("<uuid: {ok}>").into();
                        }
                        "build_time" => {
                            let ok = x.as_i64().is_some_and(|t| t > 1_500_000_000);
                            *x = format!("<time: {ok}>").into();
                        }
                        _ => walk(x),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    serde_json::to_string_pretty(&v).unwrap()
}

fn run(tool: &str, template: &str, args: &[&str]) -> Run {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("t.json"), template).unwrap();
    std::fs::write(d.path().join("input.txt"), "input data\n").unwrap();
    let mut c = if tool == "kiln" {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
    } else {
        Command::new(packer())
    };
    c.current_dir(d.path())
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CONFIG_DIR", d.path().join(".packer.d"))
        .env("NO_COLOR", "1")
        .env("HOME", d.path())
        .arg("build")
        .arg("-color=false")
        .args(args)
        .arg("t.json");
    let o = c.output().unwrap();
    let raw = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let printed = raw
        .lines()
        .filter_map(|l| l.find("OUT:").map(|i| l[i..].trim_end().to_string()))
        .collect();
    let _ = std::fs::remove_dir_all(d.path().join(".packer.d"));
    let mut files = snapshot(d.path());
    files.remove("input.txt");
    Run {
        code: o.status.code(),
        printed,
        files,
        raw,
    }
}

fn compare(template: &str, args: &[&str]) -> Run {
    let p = run("packer", template, args);
    let k = run("kiln", template, args);
    assert_eq!(
        k.code, p.code,
        "exit status differs\n--- packer:\n{}\n--- kiln:\n{}",
        p.raw, k.raw
    );
    assert_eq!(
        k.printed, p.printed,
        "provisioner output differs\n--- packer:\n{}\n--- kiln:\n{}",
        p.raw, k.raw
    );
    assert_eq!(
        k.files.keys().collect::<Vec<_>>(),
        p.files.keys().collect::<Vec<_>>(),
        "artifacts differ\n--- packer:\n{}\n--- kiln:\n{}",
        p.raw,
        k.raw
    );
    for (name, content) in &p.files {
        assert_eq!(&k.files[name], content, "content of {name} differs");
    }
    k
}

#[test]
fn interpolation_functions_and_variables() {
    let k = compare(
        r#"{
  "variables": {
    "a": "alpha",
    "b": "{{user `a`}}-beta",
    "num": "22"
  },
  "builders": [{"type": "null", "name": "one", "communicator": "none"}],
  "provisioners": [{
    "type": "shell-local",
    "inline": [
      "echo 'OUT: {{user `a`}} {{user `b`}} {{build_name}} {{build_type}}'",
      "echo 'OUT: {{upper `x`}} {{lower `Y`}} {{split `a-b-c` `-` 1}} {{replace_all `-` `+` `a-b-c`}} {{replace `-` `+` 1 `a-b-c`}}'",
      "echo 'OUT: {{if eq (user `num`) `22`}}yes{{else}}no{{end}} {{ `piped` | upper }}'",
      "echo \"OUT: $PACKER_BUILD_NAME $PACKER_BUILDER_TYPE\"",
      "echo 'OUT: {{packer_version}}'"
    ]
  }]
}"#,
        &["-var", "a=cli"],
    );
    assert!(k.printed.len() == 5, "{:?}", k.printed);
}

#[test]
fn environment_vars_quoting() {
    compare(
        r#"{
  "builders": [{"type": "null", "communicator": "none"}],
  "provisioners": [{
    "type": "shell-local",
    "environment_vars": ["PLAIN=value", "QUOTED=it's \"here\" $HOME", "EMPTY=", "EQ=a=b"],
    "inline": ["echo \"OUT: [$PLAIN] [$QUOTED] [$EMPTY] [$EQ]\""]
  }]
}"#,
        &[],
    );
}

#[test]
fn only_except_and_override_per_build() {
    compare(
        r#"{
  "builders": [
    {"type": "null", "name": "a", "communicator": "none"},
    {"type": "null", "name": "b", "communicator": "none"}
  ],
  "provisioners": [
    {"type": "shell-local", "only": ["a"], "inline": ["echo OUT: only-a"]},
    {"type": "shell-local", "except": ["a"], "inline": ["echo OUT: except-a"]},
    {"type": "shell-local", "inline": ["echo OUT: default"],
     "override": {"b": {"inline": ["echo OUT: overridden-for-b"]}}}
  ]
}"#,
        &["-parallel-builds=1", "-only=b"],
    );
}

#[test]
fn failing_provisioner_fails_the_build() {
    compare(
        r#"{
  "builders": [{"type": "null", "communicator": "none"}],
  "provisioners": [
    {"type": "shell-local", "inline": ["echo OUT: before", "exit 3"]},
    {"type": "shell-local", "inline": ["echo OUT: never"]}
  ]
}"#,
        &[],
    );
}

#[test]
fn valid_exit_codes_and_weak_types() {
    compare(
        r#"{
  "builders": [{"type": "null", "communicator": "none"}],
  "provisioners": [
    {"type": "shell-local", "valid_exit_codes": ["0", "3"], "max_retries": "0",
     "inline": ["echo OUT: three", "exit 3"]},
    {"type": "shell-local", "inline": ["echo OUT: after"]}
  ]
}"#,
        &[],
    );
}

#[test]
fn post_processor_chains_and_kept_artifacts() {
    compare(
        r#"{
  "builders": [{"type": "file", "name": "f", "content": "hello\n", "target": "out.txt"}],
  "post-processors": [
    [
      {"type": "checksum", "checksum_types": ["sha256", "md5"], "output": "sums/{{.ChecksumType}}.txt"}
    ],
    [
      {"type": "compress", "output": "out.tar.gz", "keep_input_artifact": true},
      {"type": "shell-local", "inline": ["echo OUT: chained"]}
    ],
    {"type": "shell-local", "inline": ["echo OUT: second chain"]}
  ]
}"#,
        &[],
    );
}

#[test]
fn builder_artifact_destroyed_when_no_chain_keeps_it() {
    compare(
        r#"{
  "builders": [{"type": "file", "content": "data\n", "target": "out.txt"}],
  "post-processors": [
    {"type": "compress", "output": "out.gz"}
  ]
}"#,
        &[],
    );
}

#[test]
fn artifice_replaces_the_artifact() {
    compare(
        r#"{
  "builders": [{"type": "file", "content": "data\n", "target": "out.txt"}],
  "post-processors": [[
    {"type": "artifice", "files": ["input.txt"]},
    {"type": "checksum", "checksum_types": ["sha1"], "output": "art.sha1"}
  ]]
}"#,
        &[],
    );
}

#[test]
fn error_cleanup_provisioner_runs_when_a_provisioner_fails() {
    let k = compare(
        r#"{
  "builders": [{"type": "null", "communicator": "none"}],
  "provisioners": [
    {"type": "shell-local", "inline": ["echo OUT: first", "echo made > made.txt"]},
    {"type": "shell-local", "inline": ["echo OUT: failing", "exit 1"]},
    {"type": "shell-local", "inline": ["echo OUT: never"]}
  ],
  "error-cleanup-provisioner": {
    "type": "shell-local",
    "inline": ["echo \"OUT: cleaning up after {{build_name}} ($PACKER_BUILD_NAME)\"", "rm made.txt", "echo done > cleaned.txt"]
  }
}"#,
        &[],
    );
    assert_eq!(k.code, Some(1));
    assert!(k.files.contains_key("cleaned.txt"), "{:?}", k.files);
    assert!(!k.files.contains_key("made.txt"), "{:?}", k.files);
    assert!(k
        .printed
        .iter()
        .any(|l| l.contains("cleaning up after null (null)")));
}

#[test]
fn error_cleanup_provisioner_stays_idle_when_the_build_succeeds() {
    let k = compare(
        r#"{
  "builders": [{"type": "file", "content": "x", "target": "out.txt"}],
  "provisioners": [{"type": "shell-local", "inline": ["echo OUT: fine"]}],
  "error-cleanup-provisioner": {"type": "shell-local", "inline": ["echo OUT: must not run", "touch cleaned.txt"]}
}"#,
        &[],
    );
    assert_eq!(k.code, Some(0));
    assert!(!k.files.contains_key("cleaned.txt"), "{:?}", k.files);
}

/// A deliberate difference: Packer 1.6.6's file builder never runs the
/// error-cleanup-provisioner (it calls only the provisioning hook); kiln
/// runs it after a failed build whatever the builder.
#[test]
fn error_cleanup_provisioner_after_the_file_builder_fails() {
    let t = r#"{
  "builders": [{"type": "file", "content": "x", "target": "out.txt"}],
  "provisioners": [{"type": "shell-local", "inline": ["exit 2"]}],
  "error-cleanup-provisioner": {"type": "shell-local", "inline": ["echo OUT: cleanup ran", "touch cleaned.txt"]}
}"#;
    let p = run("packer", t, &[]);
    let k = run("kiln", t, &[]);
    assert_eq!((k.code, p.code), (Some(1), Some(1)));
    assert!(!p.files.contains_key("cleaned.txt"), "{}", p.raw);
    assert!(k.files.contains_key("cleaned.txt"), "{}", k.raw);
    assert_eq!(k.printed, vec!["OUT: cleanup ran".to_string()]);
}

/// The manifest's records: build names and types, files with sizes, and the
/// artifact ids (`File` for the file builder, `Null` for the null builder,
/// as Packer's artifacts' `Id()`), for two builds appending to one file.
#[test]
fn manifest_records_artifact_ids() {
    let k = compare(
        r#"{
  "builders": [
    {"type": "file", "name": "a-file", "content": "hello\n", "target": "out/a.txt"},
    {"type": "null", "name": "b-null", "communicator": "none"}
  ],
  "post-processors": [
    {"type": "manifest", "output": "manifest.json", "custom_data": {"who": "{{build_name}}"}},
    {"type": "manifest", "output": "stripped-manifest.json", "strip_path": true, "strip_time": true}
  ]
}"#,
        &["-parallel-builds=1"],
    );
    let m = &k.files["manifest.json"];
    assert!(m.contains("\"artifact_id\": \"File\""), "{m}");
    assert!(m.contains("\"artifact_id\": \"Null\""), "{m}");
    assert!(m.contains("\"who\": \"a-file\""), "{m}");
    assert!(
        m.contains("<uuid: true>") && m.contains("<time: true>"),
        "{m}"
    );
    assert!(
        !k.files["stripped-manifest.json"].contains("<time"),
        "{}",
        k.files["stripped-manifest.json"]
    );
    assert!(k.files.contains_key("out/a.txt"), "{:?}", k.files);
}

/// `-except` naming a post-processor (by its name, which defaults to its
/// type) skips it and the rest of its chain; other chains run.
#[test]
fn except_skips_a_post_processor_and_the_rest_of_its_chain() {
    let t = r#"{
  "builders": [{"type": "file", "name": "f", "content": "data\n", "target": "out.txt"}],
  "post-processors": [
    [
      {"type": "shell-local", "name": "first", "inline": ["echo OUT: first"]},
      {"type": "shell-local", "name": "skipme", "inline": ["echo OUT: skipped"]},
      {"type": "shell-local", "inline": ["echo OUT: after the skipped one"]}
    ],
    [
      {"type": "checksum", "checksum_types": ["md5"], "output": "out.md5"},
      {"type": "shell-local", "inline": ["echo OUT: after checksum"]}
    ],
    {"type": "shell-local", "name": "other", "inline": ["echo OUT: other chain"]}
  ]
}"#;
    let k = compare(t, &["-except=skipme"]);
    assert_eq!(
        k.printed,
        ["OUT: first", "OUT: after checksum", "OUT: other chain"]
    );
    // By type, when the post-processor has no name.
    let k = compare(t, &["-except=checksum"]);
    assert!(!k.files.contains_key("out.md5"), "{:?}", k.files);
    assert!(
        !k.printed.iter().any(|l| l.contains("after checksum")),
        "{:?}",
        k.printed
    );
}

/// `max_retries` as a template, rendered with the user variables;
/// `pause_before` before every attempt.
#[test]
fn templated_max_retries_and_pause_before() {
    let t = r#"{
  "variables": {"retries": "1"},
  "builders": [{"type": "null", "communicator": "none"}],
  "provisioners": [
    {"type": "shell-local", "max_retries": "{{user `retries`}}", "pause_before": "100ms",
     "inline": ["n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo \"OUT: attempt $n\"; [ $n -ge 3 ]"]},
    {"type": "shell-local", "inline": ["echo OUT: after"]}
  ]
}"#;
    let k = compare(t, &["-var", "retries=2"]);
    assert_eq!(k.code, Some(0));
    assert_eq!(k.printed.len(), 4, "{:?}", k.printed);
    assert_eq!(k.raw.matches("retrying with").count(), 2, "{}", k.raw);
    let k = compare(t, &[]);
    assert_eq!(k.code, Some(1));
    assert_eq!(k.files["count"], "2\n");
}

/// A builder name that is a template: the build is named after its
/// rendering, while provisioners' `only` and `override` name its raw text.
#[test]
fn templated_builder_name_raw_for_only_and_override() {
    compare(
        r#"{
  "variables": {"env": "dev"},
  "builders": [
    {"type": "null", "name": "box-{{user `env`}}", "communicator": "none"},
    {"type": "null", "name": "zz-other", "communicator": "none"}
  ],
  "provisioners": [
    {"type": "shell-local", "only": ["box-{{user `env`}}"], "inline": ["echo OUT: only {{build_name}}"]},
    {"type": "shell-local", "except": ["box-{{user `env`}}"], "inline": ["echo OUT: except {{build_name}}"]},
    {"type": "shell-local", "inline": ["echo OUT: default {{build_name}}"],
     "override": {"box-{{user `env`}}": {"inline": ["echo OUT: override {{build_name}}"]}}}
  ]
}"#,
        &["-parallel-builds=1", "-var", "env=prod"],
    );
}

#[test]
fn build_values_a_builder_does_not_provide() {
    // Packer 1.6.6 gives every build an ID, the run's UUID and HTTP
    // placeholders, and renders a communicator value the builder did not
    // set (communicator none) as `<no value>`; the null builder's ID is
    // "Null". The run's UUID is the one its scripts get as PACKER_RUN_UUID.
    let k = compare(
        r#"{
  "builders": [{"type": "null", "communicator": "none"}],
  "provisioners": [{
    "type": "shell-local",
    "inline": [
      "echo 'OUT: {{build `ID`}} {{build `PackerHTTPIP`}} {{build `PackerHTTPPort`}} {{build `PackerHTTPAddr`}}'",
      "echo 'OUT: {{build `Host`}} {{build `Port`}} {{build `User`}} {{build `SSHPublicKey`}}'",
      "if [ -n \"$PACKER_RUN_UUID\" ] && [ '{{build `PackerRunUUID`}}' = \"$PACKER_RUN_UUID\" ]; then echo 'OUT: one run id'; fi"
    ]
  }]
}"#,
        &[],
    );
    assert_eq!(k.printed.len(), 3, "{:?}", k.printed);
    assert!(
        k.printed[0].starts_with("OUT: Null ERR_HTTP_IP_NOT"),
        "{:?}",
        k.printed
    );
    assert_eq!(
        k.printed[1],
        "OUT: <no value> <no value> <no value> <no value>"
    );
    assert_eq!(k.printed[2], "OUT: one run id");
}
