//! The `kiln` binary running real builds: provisioner `pause_before`,
//! `max_retries` (templated too) and `timeout`; `-parallel-builds`;
//! `-timestamp-ui`; `-color=false`; `-on-error=abort`; and what a failed
//! build says it cleaned up.
mod common;
use common::{kiln, write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run with a watchdog: a kiln that does not end within `limit` is killed
/// and the test fails (a timeout that does not work would otherwise hang
/// here for the length of the command's `sleep`).
fn run_limited(mut c: Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kiln still running after {limit:?}\n{}\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), out.join().unwrap(), err.join().unwrap())
}

fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut c = kiln(dir);
    c.args(args);
    run_limited(c, Duration::from_secs(120))
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// `OUT:` lines, from the marker on.
fn printed(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.find("OUT:").map(|i| l[i..].to_string()))
        .collect()
}

/// A shell-local step that fails until it has run `n` times (counting in
/// `count`).
const FAIL_UNTIL: &str = r#"n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo \"OUT: attempt $n\"; [ $n -ge 3 ]"#;

#[test]
fn templated_max_retries_is_applied() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        &format!(
            r#"{{
  "variables": {{"retries": "2"}},
  "builders": [{{"type": "null", "communicator": "none"}}],
  "provisioners": [
    {{"type": "shell-local", "max_retries": "{{{{user `retries`}}}}", "inline": ["{FAIL_UNTIL}"]}},
    {{"type": "shell-local", "inline": ["echo OUT: next"]}}
  ]
}}"#
        ),
    );
    // Two retries: the third attempt succeeds.
    let (code, out, err) = run(d.path(), &["build", "t.json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(
        printed(&out),
        [
            "OUT: attempt 1",
            "OUT: attempt 2",
            "OUT: attempt 3",
            "OUT: next"
        ],
        "{out}"
    );
    assert!(out.contains("retrying with 2 trie(s) left"), "{out}");
    assert!(out.contains("retrying with 1 trie(s) left"), "{out}");
    assert!(!out.contains("retry limit reached."), "{out}");

    // One retry: both attempts fail, and so does the build.
    std::fs::remove_file(d.path().join("count")).unwrap();
    let (code, out, err) = run(d.path(), &["build", "-var", "retries=1", "t.json"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert_eq!(printed(&out), ["OUT: attempt 1", "OUT: attempt 2"], "{out}");
    assert!(out.contains("retry limit reached."), "{out}");
    assert_eq!(
        std::fs::read_to_string(d.path().join("count"))
            .unwrap()
            .trim(),
        "2"
    );

    // Not a number once rendered: an error before anything runs.
    std::fs::remove_file(d.path().join("count")).unwrap();
    let (code, out, err) = run(d.path(), &["build", "-var", "retries=many", "t.json"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("`max_retries` must be a valid integer, found \"many\""),
        "{err}"
    );
    assert!(!d.path().join("count").exists());
}

#[test]
fn pause_before_is_waited_before_every_attempt() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        &format!(
            r#"{{
  "builders": [{{"type": "null", "communicator": "none"}}],
  "provisioners": [
    {{"type": "shell-local", "pause_before": "1s", "max_retries": 2, "inline": ["{FAIL_UNTIL}"]}}
  ]
}}"#
        ),
    );
    let start = Instant::now();
    let (code, out, err) = run(d.path(), &["build", "t.json"]);
    let took = start.elapsed();
    assert_eq!(code, Some(0), "{out}\n{err}");
    // Each attempt is preceded by its pause, as Packer's paused provisioner
    // sits inside its retried one.
    let seq: Vec<&str> = out
        .lines()
        .filter_map(|l| {
            if l.contains("Pausing 1s before the next provisioner...") {
                Some("pause")
            } else if l.contains("OUT: attempt") {
                Some("attempt")
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        seq,
        ["pause", "attempt", "pause", "attempt", "pause", "attempt"],
        "{out}"
    );
    // A lower bound only: three pauses of a second were waited.
    assert!(took >= Duration::from_secs(3), "{took:?}");
}

#[test]
fn timeout_kills_the_command_and_fails_the_attempt() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{
  "builders": [{"type": "null", "communicator": "none"}],
  "provisioners": [
    {"type": "shell-local", "timeout": "2s", "inline": ["sleep 600 & echo $! > sleep.pid; wait"]},
    {"type": "shell-local", "inline": ["touch never-reached"]}
  ]
}"#,
    );
    let (code, out, err) = run(d.path(), &["build", "t.json"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        out.contains("==> null: Setting a 2s timeout for the next provisioner..."),
        "{out}"
    );
    assert!(
        err.contains("==> null: Cancelling provisioner after a timeout..."),
        "{err}"
    );
    assert!(
        err.contains("shell-local provisioner timed out after 2s"),
        "{err}"
    );
    assert!(!d.path().join("never-reached").exists());
    let pid: i32 = std::fs::read_to_string(d.path().join("sleep.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let start = Instant::now();
    while alive(pid) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "the timed-out command is still running");
}

#[test]
fn a_timed_out_attempt_is_retried() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{
  "builders": [{"type": "null", "communicator": "none"}],
  "provisioners": [
    {"type": "shell-local", "timeout": "1s", "max_retries": 1, "inline": [
      "if [ -e first ]; then echo OUT: second attempt; else touch first; echo OUT: first attempt; sleep 600; fi"
    ]}
  ]
}"#,
    );
    let (code, out, err) = run(d.path(), &["build", "t.json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(
        printed(&out),
        ["OUT: first attempt", "OUT: second attempt"],
        "{out}"
    );
    assert!(
        out.contains("timed out after 1s\", retrying with 1 trie(s) left"),
        "{out}"
    );
}

/// Three builds that log their start and end: with `-parallel-builds 1`
/// one ends before the next starts, in template order; with 2, never more
/// than two run at once; with no limit, all three are running together
/// (each waits, boundedly, until it has seen the other two start).
#[test]
fn parallel_builds_limit() {
    let d = tempfile::tempdir().unwrap();
    let t = r#"{
  "variables": {"wait_for": "1"},
  "builders": [
    {"type": "null", "name": "a", "communicator": "none"},
    {"type": "null", "name": "b", "communicator": "none"},
    {"type": "null", "name": "c", "communicator": "none"}
  ],
  "provisioners": [{"type": "shell-local", "inline": [
    "echo \"start {{build_name}}\" >> log",
    "i=0; while [ $(grep -c start log) -lt {{user `wait_for`}} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done",
    "sleep 0.3",
    "echo \"end {{build_name}}\" >> log"
  ]}]
}"#;
    write(d.path(), "t.json", t);
    let log = |args: &[&str]| -> Vec<String> {
        let _ = std::fs::remove_file(d.path().join("log"));
        let mut all = vec!["build"];
        all.extend_from_slice(args);
        all.push("t.json");
        let (code, out, err) = run(d.path(), &all);
        assert_eq!(code, Some(0), "{out}\n{err}");
        std::fs::read_to_string(d.path().join("log"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    };
    let most_at_once = |log: &[String]| {
        let (mut now, mut most) = (0, 0);
        for l in log {
            if l.starts_with("start") {
                now += 1;
                most = most.max(now);
            } else {
                now -= 1;
            }
        }
        most
    };
    let l = log(&["-parallel-builds", "1"]);
    assert_eq!(
        l,
        ["start a", "end a", "start b", "end b", "start c", "end c"],
        "{l:?}"
    );
    let l = log(&["-parallel-builds=2", "-var", "wait_for=2"]);
    assert_eq!(l.len(), 6, "{l:?}");
    assert_eq!(most_at_once(&l), 2, "{l:?}");
    let l = log(&["-var", "wait_for=3"]);
    assert_eq!(l.len(), 6, "{l:?}");
    assert_eq!(most_at_once(&l), 3, "{l:?}");
    assert!(l[..3].iter().all(|x| x.starts_with("start")), "{l:?}");
}

#[test]
fn timestamp_ui_prefixes_build_lines() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{"builders": [{"type": "file", "name": "f", "target": "out.txt", "content": "x"}],
            "provisioners": [{"type": "shell-local", "inline": ["echo OUT: hello", "echo OUT: to stderr >&2"]}]}"#,
    );
    let is_stamp = |s: &str| {
        // 2006-01-02T15:04:05Z: (RFC 3339, UTC)
        let b = s.as_bytes();
        b.len() >= 22
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && &s[19..22] == "Z: "
    };
    let (code, out, err) = run(d.path(), &["build", "-timestamp-ui", "t.json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let build_lines: Vec<&str> = out
        .lines()
        .chain(err.lines())
        .filter(|l| !l.starts_with("--> ") && (l.contains(" f: ") || l.contains("==> f:")))
        .collect();
    assert!(build_lines.len() >= 4, "{out}\n{err}");
    for l in &build_lines {
        assert!(is_stamp(l), "not stamped: {l:?}");
    }
    assert!(
        build_lines
            .iter()
            .any(|l| l.ends_with("Z:     f: OUT: hello")),
        "{build_lines:?}"
    );
    assert!(
        build_lines
            .iter()
            .any(|l| l.ends_with("Z: ==> f: OUT: to stderr")),
        "{build_lines:?}"
    );
    let (_, out, err) = run(d.path(), &["build", "t.json"]);
    assert!(
        !out.lines().chain(err.lines()).any(is_stamp),
        "stamped without -timestamp-ui:\n{out}\n{err}"
    );
}

/// Colour is only chosen on a terminal: run kiln under `script(1)`, which
/// gives it one, with and without `-color=false`.
#[test]
fn color_false_on_a_terminal_prints_no_escape_codes() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{"builders": [{"type": "file", "name": "f", "target": "out.txt", "content": "x"}],
            "provisioners": [{"type": "shell-local", "inline": ["echo OUT: hi", "exit 1"]}]}"#,
    );
    let on_tty = |flags: &str| -> String {
        let mut c = Command::new("script");
        c.current_dir(d.path())
            .env_remove("NO_COLOR")
            .env("TERM", "xterm")
            .args(["-q", "-e", "-c"])
            .arg(format!(
                "{} build {flags} t.json",
                env!("CARGO_BIN_EXE_kiln")
            ))
            .arg("/dev/null")
            .stdin(Stdio::null());
        let (code, out, err) = run_limited(c, Duration::from_secs(120));
        assert_eq!(code, Some(1), "{out}\n{err}");
        assert!(out.contains("OUT: hi"), "{out}\n{err}");
        out
    };
    let coloured = on_tty("");
    assert!(
        coloured.contains("\x1b[1;32m"),
        "no build colour on a terminal:\n{coloured:?}"
    );
    assert!(
        coloured.contains("\x1b[1;31m"),
        "no error colour:\n{coloured:?}"
    );
    let plain = on_tty("-color=false");
    assert!(
        !plain.contains('\x1b'),
        "escape codes with -color=false:\n{plain:?}"
    );
}

/// `-on-error=abort`: the failed step's cleanup (and the
/// error-cleanup-provisioner) do not run, what kiln created is left and
/// listed, and the build's working directory is kept.
#[test]
fn on_error_abort_leaves_things_and_lists_them() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{
  "builders": [{"type": "null", "communicator": "none"}],
  "provisioners": [{"type": "shell-local", "inline": ["exit 1"]}],
  "error-cleanup-provisioner": {"type": "shell-local", "inline": ["touch cleaned"]}
}"#,
    );
    let (code, out, err) = run(d.path(), &["build", "-on-error=abort", "t.json"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains(
            "==> null: Step \"provision\" failed: aborting without cleanup (-on-error=abort)"
        ),
        "{err}"
    );
    let kept = err
        .lines()
        .find_map(|l| l.strip_prefix("==> null: Working directory kept: "))
        .unwrap_or_else(|| panic!("no kept directory:\n{err}"))
        .to_string();
    assert!(Path::new(&kept).is_dir(), "{kept}");
    assert!(
        err.contains(&format!(
            "==> null: Left in place: working directory {kept}"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "==> These resources may have been left behind:\n  - null: working directory {kept}"
        )),
        "{err}"
    );
    assert!(!d.path().join("cleaned").exists());
    std::fs::remove_dir_all(&kept).unwrap();

    // The default cleans up: the error-cleanup-provisioner runs and the
    // working directory is gone.
    let (code, out, err) = run(d.path(), &["build", "t.json"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(d.path().join("cleaned").exists(), "{out}\n{err}");
    assert!(!err.contains("left behind"), "{err}");
    assert!(!err.contains("Could not clean up"), "{err}");
    assert!(!err.contains("Working directory kept"), "{err}");
}

/// A real builder that creates something (the debootstrap builder's
/// output directory) and then fails (its mirror refuses connections):
/// kiln removes it and says so; with `-on-error=abort` it stays, listed.
#[test]
fn a_failed_build_says_what_it_cleaned_up() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "t.json",
        r#"{"builders": [{"type": "debootstrap", "mirror": "http://127.0.0.1:9/debian", "output_directory": "out"}]}"#,
    );
    let (code, out, err) = run(d.path(), &["build", "t.json"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        out.contains("==> debootstrap: Cleaned up: output directory out\n"),
        "{out}\n{err}"
    );
    assert!(!d.path().join("out").exists());

    let (code, out, err) = run(d.path(), &["build", "-on-error=abort", "t.json"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(d.path().join("out").is_dir(), "{out}\n{err}");
    assert!(!out.contains("Cleaned up:"), "{out}");
    assert!(
        err.contains("Left in place: ") && err.contains("output directory out"),
        "{err}"
    );
    assert!(
        err.contains("  - debootstrap: output directory out"),
        "{err}"
    );
    if let Some(kept) = err
        .lines()
        .find_map(|l| l.strip_prefix("==> debootstrap: Working directory kept: "))
    {
        let _ = std::fs::remove_dir_all(kept);
    }
}

/// `-on-error=ask`, answered on stdin as a user would at the prompt: an
/// unknown answer is asked again, `r` retries the failed step, `c` cleans
/// up, `a` aborts and keeps everything, and end of input means clean up.
#[test]
fn on_error_ask_retries_cleans_up_or_aborts_as_answered() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    // Fails until its second attempt.
    write(
        d.path(),
        "t.json",
        r#"{
  "builders": [{"type": "null", "communicator": "none"}],
  "provisioners": [{"type": "shell-local", "inline": ["n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo \"OUT: attempt $n\"; [ $n -ge {{user `ok_at`}} ]"]}],
  "error-cleanup-provisioner": {"type": "shell-local", "inline": ["touch cleaned"]},
  "variables": {"ok_at": "2"}
}"#,
    );
    let ask = |answers: Option<&str>, ok_at: &str| {
        let _ = std::fs::remove_file(d.path().join("count"));
        let _ = std::fs::remove_file(d.path().join("cleaned"));
        let mut c = kiln(d.path());
        c.args(["build", "-on-error=ask", "-var"])
            .arg(format!("ok_at={ok_at}"))
            .arg("t.json")
            .stdin(Stdio::piped());
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if let Some(a) = answers {
            stdin.write_all(a.as_bytes()).unwrap();
        }
        drop(stdin);
        let o = child.wait_with_output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let prompt = "[c] Clean up and exit, [a] abort without cleanup, or [r] retry step";

    // Retry once, and the step then succeeds: the build goes on and passes.
    let (code, out, err) = ask(Some("x\nr\n"), "2");
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(printed(&out), ["OUT: attempt 1", "OUT: attempt 2"], "{out}");
    assert_eq!(err.matches(prompt).count(), 2, "x is asked again:\n{err}");
    assert!(!d.path().join("cleaned").exists());

    // Retry, fail again, then clean up.
    let (code, out, err) = ask(Some("r\nc\n"), "99");
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert_eq!(printed(&out), ["OUT: attempt 1", "OUT: attempt 2"], "{out}");
    assert_eq!(err.matches(prompt).count(), 2, "{err}");
    assert!(d.path().join("cleaned").exists(), "{out}\n{err}");
    assert!(!err.contains("Working directory kept"), "{err}");

    // No answer at all (stdin closed): clean up.
    let (code, out, err) = ask(None, "99");
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert_eq!(printed(&out), ["OUT: attempt 1"], "{out}");
    assert!(d.path().join("cleaned").exists(), "{out}\n{err}");

    // Abort: nothing is cleaned up, the working directory is kept and
    // listed.
    let (code, out, err) = ask(Some("a\n"), "99");
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(!d.path().join("cleaned").exists(), "{out}\n{err}");
    let kept = err
        .lines()
        .find_map(|l| l.strip_prefix("==> null: Working directory kept: "))
        .unwrap_or_else(|| panic!("no kept directory:\n{err}"))
        .to_string();
    assert!(Path::new(&kept).is_dir(), "{kept}");
    std::fs::remove_dir_all(&kept).unwrap();
}
