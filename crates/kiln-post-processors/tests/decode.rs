//! Decoding errors (needs the template crate's Decoder).
mod common;
use common::*;

#[test]
fn unknown_key_suggests_the_nearest() {
    let (_, diags) = decode_pp(
        "checksum",
        r#"{"type": "checksum", "checksum_type": ["sha256"]}"#,
        false,
    );
    assert!(diags.contains("checksum_type"), "{diags}");
    assert!(diags.contains("checksum_types"), "{diags}");
    assert!(diags.contains("template.json"), "{diags}");
}

#[test]
fn bad_checksum_type() {
    let (_, diags) = decode_pp(
        "checksum",
        r#"{"type": "checksum", "checksum_types": ["sha256", "crc32"]}"#,
        false,
    );
    assert!(
        diags.contains("Unrecognized checksum type: crc32"),
        "{diags}"
    );
}

#[test]
fn every_post_processor_accepts_a_minimal_config() {
    for (t, json) in [
        ("checksum", r#"{"type": "checksum"}"#),
        (
            "manifest",
            r#"{"type": "manifest", "strip_path": true, "custom_data": {"a": "b"}}"#,
        ),
        (
            "compress",
            r#"{"type": "compress", "keep_input_artifact": true}"#,
        ),
        ("artifice", r#"{"type": "artifice", "files": ["a", "b"]}"#),
        (
            "shell-local",
            r#"{"type": "shell-local", "inline": ["true"], "only_on": ["linux"]}"#,
        ),
    ] {
        let (pp, diags) = decode_pp(t, json, false);
        assert_eq!(diags, "", "{t}");
        assert!(pp.is_some(), "{t}");
    }
}

#[test]
fn shell_local_option_conflicts() {
    let (_, d) = decode_pp("shell-local", r#"{"type": "shell-local"}"#, false);
    assert!(d.contains("cannot all be empty"), "{d}");
    let (_, d) = decode_pp(
        "shell-local",
        r#"{"type": "shell-local", "command": "true", "inline": ["true"]}"#,
        false,
    );
    assert!(d.contains("You may only specify one of"), "{d}");
    let (_, d) = decode_pp(
        "shell-local",
        r#"{"type": "shell-local", "inline": ["true"], "environment_vars": ["=x", "NOEQ"], "only_on": ["plan9"]}"#,
        false,
    );
    assert!(d.contains("not in format 'key=value': =x"), "{d}");
    assert!(d.contains("not in format 'key=value': NOEQ"), "{d}");
    assert!(
        d.contains("Invalid OS specified in only_on: 'plan9'"),
        "{d}"
    );
    let (_, d) = decode_pp(
        "shell-local",
        r#"{"type": "shell-local", "script": "/nonexistent/kiln.sh"}"#,
        false,
    );
    assert!(d.contains("Bad script '/nonexistent/kiln.sh'"), "{d}");
}

#[test]
fn artifice_needs_files() {
    let (_, d) = decode_pp("artifice", r#"{"type": "artifice"}"#, false);
    assert!(d.contains("No files specified"), "{d}");
}
