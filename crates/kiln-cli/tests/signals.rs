//! A real SIGINT sent to a real `kiln build` in the middle of a step: every
//! started step is cleaned up, in reverse order, the running command is
//! killed, and kiln exits 1 saying it cancelled cleanly.
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for(path: &Path, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if path.exists()
            && std::fs::metadata(path)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn alive(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie of an exited child is reaped by
    // init, so a real process is what this finds.
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn interrupt(signal: i32) {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("t.json"),
        r#"{
  "builders": [{"type": "null", "communicator": "none"}],
  "provisioners": [
    {"type": "shell-local", "inline": ["sleep 600 & echo $! > sleep.pid; wait"]},
    {"type": "shell-local", "inline": ["touch never-reached"]}
  ]
}"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(d.path())
        .args(["-machine-readable", "build", "t.json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pidfile = d.path().join("sleep.pid");
    assert!(
        wait_for(&pidfile, Duration::from_secs(60)),
        "provisioner never started"
    );
    let sleep_pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(sleep_pid));
    let kiln_pid = child.id() as i32;
    // SAFETY-free: kill(2) through the libc crate.
    let rc = unsafe_kill(kiln_pid, signal);
    assert_eq!(rc, 0);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "kiln did not stop after the interrupt"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    // Both started steps were cleaned up, in reverse order.
    let starts: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(",step-start,"))
        .map(|l| l.rsplit(',').next().unwrap())
        .collect();
    let cleanups: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(",step-cleanup,"))
        .map(|l| l.rsplit(',').next().unwrap())
        .collect();
    assert_eq!(starts, ["connect", "provision"], "{out}");
    assert_eq!(cleanups, ["provision", "connect"], "{out}");
    assert!(
        out.contains("Cleanly cancelled builds after being interrupted")
            || err.contains("Cleanly cancelled builds after being interrupted"),
        "{out}\n{err}"
    );
    assert!(!d.path().join("never-reached").exists());
    // The provisioner's command was killed with the build.
    let start = Instant::now();
    while alive(sleep_pid) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(sleep_pid), "the provisioner's process outlived kiln");
}

fn unsafe_kill(pid: i32, sig: i32) -> i32 {
    // The workspace denies unsafe code; use the kill(1) program instead.
    let s = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    if s.success() {
        0
    } else {
        -1
    }
}

#[test]
fn sigint_mid_step_cleans_up_every_started_step() {
    interrupt(2);
}

#[test]
fn sigterm_mid_step_cleans_up_every_started_step() {
    interrupt(15);
}

/// Collects a child's stdout on a thread, for waiting on what it printed.
struct Collector {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn new(mut r: impl Read + Send + 'static) -> Self {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let t = text.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                t.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Collector {
            text,
            thread: Some(thread),
        }
    }
    fn now(&self) -> String {
        self.text.lock().unwrap().clone()
    }
    fn wait_for(&self, what: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.now().contains(what) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
    fn finish(mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.now()
    }
}

/// Kills a child that outlives a failed test.
struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first Ctrl-C lets a running cleanup (here the template's
/// error-cleanup-provisioner) go on; the second abandons it: its command is
/// killed, the steps not yet cleaned stay so, and kiln lists what may be
/// left behind (the build's working directory, kept) before exiting 1.
#[test]
fn second_sigint_abandons_cleanup_and_lists_what_is_left() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("t.json"),
        r#"{
  "builders": [{"type": "null", "communicator": "none"}],
  "provisioners": [{"type": "shell-local", "inline": ["exit 1"]}],
  "error-cleanup-provisioner": {"type": "shell-local", "inline": ["sleep 600 & echo $! > sleep.pid; wait"]}
}"#,
    )
    .unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .current_dir(d.path())
            .args(["-machine-readable", "build", "t.json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = Collector::new(child.0.stdout.take().unwrap());
    let pidfile = d.path().join("sleep.pid");
    assert!(
        wait_for(&pidfile, Duration::from_secs(60)),
        "the error-cleanup-provisioner never started:\n{}",
        out.now()
    );
    let sleep_pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let kiln_pid = child.0.id() as i32;

    assert_eq!(unsafe_kill(kiln_pid, 2), 0);
    assert!(
        out.wait_for("Interrupt received", Duration::from_secs(30)),
        "{}",
        out.now()
    );
    // The cleanup goes on after the first interrupt (a kill would follow
    // the message at once; a second is ample).
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        alive(sleep_pid),
        "the first interrupt stopped the cleanup:\n{}",
        out.now()
    );
    assert!(child.0.try_wait().unwrap().is_none(), "{}", out.now());

    assert_eq!(unsafe_kill(kiln_pid, 2), 0);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "kiln did not stop after the second interrupt:\n{}",
            out.now()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.finish();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("Second interrupt received. Abandoning cleanup"),
        "{out}"
    );
    assert!(
        out.contains("Cleanup abandoned. These may be left behind and need removing by hand:"),
        "{out}"
    );
    let cleanups: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(",step-cleanup,"))
        .map(|l| l.rsplit(',').next().unwrap())
        .collect();
    assert_eq!(
        cleanups,
        ["provision"],
        "abandoned before `connect`:\n{out}"
    );
    // What is left is listed, and is really there.
    let marker = "  - null: working directory ";
    let at = out
        .find(marker)
        .unwrap_or_else(|| panic!("no leftover listed:\n{out}"));
    let rest = &out[at + marker.len()..];
    let end = rest.find(['\\', '\n']).unwrap_or(rest.len());
    let left = Path::new(&rest[..end]);
    assert!(left.is_dir(), "{} is not there:\n{out}", left.display());
    std::fs::remove_dir_all(left).unwrap();
    // The abandoned cleanup's command was killed.
    let start = Instant::now();
    while alive(sleep_pid) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive(sleep_pid),
        "the abandoned cleanup's command outlived kiln"
    );
}
