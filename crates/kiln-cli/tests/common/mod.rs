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
