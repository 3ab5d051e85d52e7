//! What the `kiln` binary's tests share: running it in a directory and
//! writing files there. Each test file includes it with `mod common;`
//! and adds only what is its own (an environment variable, a watchdog).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `kiln` in `dir`, colours off.
pub fn kiln(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.current_dir(dir).env("NO_COLOR", "1");
    c
}

/// Write `text` to `dir/name` (parent directories created).
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

/// A finished command's exit code, stdout and stderr.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A finished command's stdout followed by its stderr, as one text.
pub fn joined(o: &Output) -> String {
    let (out, err) = text(o);
    out + &err
}

/// Run `kiln ARGS` in `dir`: exit code, stdout, stderr.
pub fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let o: Output = kiln(dir).args(args).output().unwrap();
    let (out, err) = text(&o);
    (o.status.code(), out, err)
}

/// Run `kiln ARGS` in `dir`: exit code, and stdout followed by stderr.
pub fn run_joined(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let o: Output = kiln(dir).args(args).output().unwrap();
    (o.status.code(), joined(&o))
}

/// The seed's base image for the guest tests: `KILN_TEST_BASE_IMAGE`
/// (scripts/test.sh builds one for the whole suite), else
/// `examples/seed/base.json` built under the target's temporary directory
/// unless a build younger than a day is there.
pub fn base_image() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_TEST_BASE_IMAGE") {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-base");
    let img = dir.join("debian-12.qcow2");
    let fresh = std::fs::metadata(&img)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().unwrap_or_default() < std::time::Duration::from_secs(86400));
    if fresh {
        return img;
    }
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed");
    let out = format!("output_directory={}", dir.display());
    let (code, stdout, stderr) = run(&seed, &["build", "-force", "-var", &out, "base.json"]);
    assert_eq!(code, Some(0), "building the base image:\n{stdout}{stderr}");
    img
}
