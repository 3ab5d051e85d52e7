//! The provisioning cache (issue #15) with real QEMU guests (TCG here): one
//! template built several times in a row, each build checking what the
//! previous ones left in the cache and what the machine holds at the end
//! (the last provisioner prints it). The builds:
//!
//! 1. a full build whose fifth step fails: the states after steps 1-3 are
//!    saved, none after step 4 (a `file` upload into `/tmp`, which a boot
//!    empties), none after the failing step;
//! 2. the failing step fixed (a user variable in its command): the build
//!    continues the machine from its memory saved after step 3 (a file
//!    step 1 wrote in `/dev/shm` is still there; the clock is set),
//!    uploads step 4 again (so step 5 finds it), and the machine still
//!    holds what steps 1-3 wrote in build 1;
//! 3. one script of the shell provisioner edited (step 3), with
//!    `KILN_CACHE_MEMORY=off`: resumes after step 2 by booting its disk
//!    (the `/dev/shm` file is gone), step 3's new output is on the machine,
//!    step 2's is build 1's;
//! 4. the state after step 2 and the memory after step 1 truncated on
//!    disk: each reported in one line, dropped, the build boots step 1's
//!    disk and runs step 2 again; with a 1-byte size limit, each save
//!    prunes the older chains but none of the states this build boots
//!    from or saved;
//! 5. nothing changed: no machine is started, the output is converted from
//!    the cached stopped machine and is identical to build 4's;
//! 6. only `shutdown_command` changed: every provisioner is reused, the
//!    machine is continued from its memory to be shut down the new way,
//!    and its stopped state is saved beside build 4's.
//!
//! A second test (in parallel with the first) checks the faults: a cache
//! on a full file system fails the save, not the build; `kiln build`
//! killed with SIGKILL while writing a state leaves no entry and the next
//! kiln removes the dead writer's files; two builds of one template at
//! once both succeed and leave one entry per state (the one that loses the
//! race to publish a state saves no more: its later deltas were made over
//! its own disk).
//!
//! Each output image is a standalone qcow2 (no backing file into the
//! cache) that `qemu-img check` accepts. The base image is the seed's
//! (`KILN_TEST_BASE_IMAGE`, which scripts/test.sh builds once for the
//! suite). Measured here: the two tests together about 10 minutes (six
//! builds, five of them booting, beside three at once in the second test).
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn kiln(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    kiln_env(dir, args, &[])
}

fn kiln_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let o = common::kiln(dir)
        .args(args)
        .env("HOME", dir)
        .env("KILN_CACHE_DIR", dir.join("kiln-cache"))
        .env_remove("KILN_CACHE_MEMORY")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let (out, err) = common::text(&o);
    (o.status.code(), format!("{out}{err}"))
}

/// The qemu builder both tests use: the base image, TCG, 2 vCPUs.
fn builder(name: &str, base: &Path, output_directory: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "qemu",
        "name": name,
        "iso_url": base.display().to_string(),
        "iso_checksum": "none",
        "disk_image": true,
        "format": "qcow2",
        "disk_size": "3G",
        "headless": true,
        "cpus": 2,
        "memory": 1024,
        "output_directory": output_directory,
        "vm_name": format!("{name}.qcow2"),
        "ssh_username": "debian",
        "ssh_timeout": "10m",
        "shutdown_command": "sudo shutdown -P now"
    })
}

fn template(base: &Path) -> String {
    serde_json::json!({
        "variables": {"check": "true", "greeting": "hello"},
        "builders": [builder("cached", base, "out")],
        "provisioners": [
            {"type": "shell", "inline": ["date +%s%N | sudo tee /var/tmp/one /dev/shm/one"]},
            {
                "type": "shell",
                "scripts": ["scripts/two.sh", "scripts/three.sh"],
                "environment_vars": ["GREETING={{user `greeting`}}"],
                "execute_command": "sudo {{.Vars}} bash '{{.Path}}'"
            },
            {"type": "file", "source": "data", "destination": "/tmp"},
            {"type": "shell", "inline": [
                "sudo cp -r /tmp/data /var/tmp/",
                "{{user `check`}}"
            ]},
            {"type": "shell", "inline": [
                "echo \"REPORT one=$(cat /var/tmp/one) two=$(cat /var/tmp/two) three=$(cat /var/tmp/three) data=$(cat /var/tmp/data/x.txt) shm=$(cat /dev/shm/one 2>/dev/null || echo none)\""
            ]}
        ]
    })
    .to_string()
}

/// The machine's files, as the last provisioner printed them.
#[derive(Debug, PartialEq, Clone)]
struct Report {
    one: String,
    two: String,
    three: String,
    data: String,
    /// Step 1's file in memory only (`/dev/shm`): there when the machine
    /// was continued from a saved memory, `none` when it was booted.
    shm: String,
}

fn report(log: &str) -> Report {
    let line = log
        .lines()
        .find_map(|l| l.split_once("REPORT one=").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no REPORT line:\n{log}"));
    let field = |name: &str| {
        let start = line
            .find(&format!("{name}="))
            .map(|i| i + name.len() + 1)
            .unwrap_or(0);
        line[start..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    };
    Report {
        one: line.split_whitespace().next().unwrap_or("").to_string(),
        two: field("two"),
        three: field("three"),
        data: field("data"),
        shm: field("shm"),
    }
}

fn using(log: &str) -> Vec<usize> {
    log.lines()
        .filter_map(|l| {
            l.split_once("Using the cached state after provisioner ")
                .and_then(|(_, r)| r.split(' ').next())
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

fn cached_steps(dir: &Path) -> Vec<String> {
    cached_steps_of(dir, "cached")
}

/// The steps of `build`'s disk states in `kiln cache list`, in its order.
fn cached_steps_of(dir: &Path, build: &str) -> Vec<String> {
    listed_steps(dir, build, false)
}

/// The steps after which the machine's memory is cached.
fn memory_steps(dir: &Path) -> Vec<String> {
    listed_steps(dir, "cached", true)
}

fn listed_steps(dir: &Path, build: &str, memory: bool) -> Vec<String> {
    let (code, text) = kiln(dir, &["cache", "list"]);
    assert_eq!(code, Some(0), "{text}");
    text.lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(2) == Some(build))
        .filter(|l| l.contains("(memory)") == memory)
        .map(|l| l.split_whitespace().nth(3).unwrap_or("").to_string())
        .collect()
}

/// The output is a qcow2 of its own: no backing file into the cache.
fn standalone(dir: &Path) {
    standalone_at(&dir.join("out/cached.qcow2"));
}

fn standalone_at(img: &Path) {
    let o = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", img.display());
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["format"], "qcow2", "{info}");
    assert!(info.get("backing-filename").is_none(), "{info}");
    let o = Command::new("qemu-img")
        .arg("check")
        .arg(img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
#[ignore = "boots real QEMU guests five times (minutes under TCG): scripts/test.sh runs it with --include-ignored"]
fn a_build_resumes_from_the_last_unchanged_step() {
    let base = common::base_image();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    common::write(d, "t.json", &template(&base));
    common::write(
        d,
        "scripts/two.sh",
        "date +%s%N > /var/tmp/two\necho \"two says $GREETING\"\n",
    );
    common::write(d, "scripts/three.sh", "echo three-v1 > /var/tmp/three\n");
    common::write(d, "data/x.txt", "x1\n");

    // 1. Fails at step 5: states after 1, 2, 3; none after the /tmp upload.
    let (code, log1) = kiln(d, &["build", "-var", "check=false", "t.json"]);
    assert_ne!(code, Some(0), "{log1}");
    assert!(log1.contains("two says hello"), "{log1}");
    assert!(
        log1.contains("No cached state after provisioner 4 (file: data)"),
        "{log1}"
    );
    assert!(using(&log1).is_empty(), "{log1}");
    assert_eq!(cached_steps(d), ["1", "2", "3"]);
    assert_eq!(
        memory_steps(d),
        ["1", "2", "3"],
        "the memory with each state"
    );
    assert!(!d.join("out").exists(), "a failed build leaves no output");

    // 2. Fixed: resumes after step 3, uploads again, runs 4 and 5.
    let (code, log2) = kiln(d, &["build", "t.json"]);
    assert_eq!(code, Some(0), "{log2}");
    assert_eq!(using(&log2), [1, 2, 3], "{log2}");
    assert!(!log2.contains("two says"), "step 2 ran again:\n{log2}");
    assert!(log2.contains("Uploading data => /tmp"), "{log2}");
    let r2 = report(&log2);
    assert_eq!(r2.three, "three-v1", "{log2}");
    assert_eq!(r2.data, "x1", "{log2}");
    assert!(!r2.one.is_empty() && !r2.two.is_empty(), "{r2:?}");
    // The machine was continued, not booted: what step 1 of build 1 left
    // in memory only is still there, and its clock was set.
    assert!(
        log2.contains("Starting VM, continuing the machine saved after provisioner 3"),
        "{log2}"
    );
    assert_eq!(r2.shm, r2.one, "{log2}");
    assert!(log2.contains("set to the host's"), "{log2}");
    assert!(
        log2.contains("(from the cache)"),
        "the timeline says which steps came from the cache:\n{log2}"
    );
    standalone(d);

    // 3. Step 3's script edited: resumes after step 2; with the memory
    // turned off, by booting the saved disk (memory-only files are gone).
    common::write(d, "scripts/three.sh", "echo three-v2 > /var/tmp/three\n");
    let (code, log3) = kiln_env(
        d,
        &["build", "-force", "t.json"],
        &[("KILN_CACHE_MEMORY", "off")],
    );
    assert_eq!(code, Some(0), "{log3}");
    assert_eq!(using(&log3), [1, 2], "{log3}");
    assert!(log3.contains("Starting VM, booting disk image"), "{log3}");
    let r3 = report(&log3);
    assert_eq!(
        r3,
        Report {
            three: "three-v2".into(),
            shm: "none".into(),
            ..r2.clone()
        },
        "steps 1 and 2 are build 1's, step 3 is new"
    );
    standalone(d);

    // 4. The state after step 2 truncated: said, dropped, step 2 runs again.
    let list = kiln(d, &["cache", "list"]).1;
    let key2 = list
        .lines()
        .find(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.get(2) == Some(&"cached") && w.get(3) == Some(&"2")
        })
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{list}"))
        .to_string();
    let entry = std::fs::read_dir(d.join("kiln-cache/entries"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&key2))
        .unwrap()
        .path();
    let truncate = |f: &Path| {
        let len = std::fs::metadata(f).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(f)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    };
    truncate(&entry.join("disk.qcow2"));
    // And the memory saved after step 1: the build boots step 1's disk.
    let memory1 = std::fs::read_dir(d.join("kiln-cache/entries"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let meta = std::fs::read_to_string(p.join("meta.json")).unwrap_or_default();
            meta.contains("\"step\": 1,") && p.join("memory.bin").exists()
        })
        .unwrap_or_else(|| panic!("no memory after step 1:\n{list}"));
    truncate(&memory1.join("memory.bin"));
    // With a 1-byte size limit: each save prunes every state this build
    // does not hold (the older chains), and none it holds.
    let (code, log4) = kiln_env(
        d,
        &["build", "-force", "t.json"],
        &[("KILN_CACHE_MAX_SIZE", "1")],
    );
    assert_eq!(code, Some(0), "{log4}");
    assert_eq!(using(&log4), [1], "{log4}");
    let problem: Vec<&str> = log4.lines().filter(|l| l.contains("damaged")).collect();
    assert_eq!(problem.len(), 2, "one line about each bad file:\n{log4}");
    assert!(
        problem[0].contains("after provisioner 2 (shell: scripts/two.sh)")
            && problem[0].contains(&key2),
        "{log4}"
    );
    assert!(
        problem[1].contains("The cached memory after provisioner 1 is damaged")
            && problem[1].contains("boots from the saved disk"),
        "{log4}"
    );
    assert!(log4.contains("Starting VM, booting disk image"), "{log4}");
    assert!(log4.contains("two says hello"), "step 2 ran again:\n{log4}");
    let r4 = report(&log4);
    assert_eq!(r4.one, r2.one, "step 1 is still build 1's");
    assert_ne!(r4.two, r2.two, "step 2 ran again");
    assert_eq!(r4.three, "three-v2");
    assert_eq!(r4.shm, "none", "booted, not continued");
    standalone(d);
    assert!(
        log4.contains("The provisioning cache is over its size limit"),
        "{log4}"
    );
    assert_eq!(
        cached_steps(d),
        ["1", "2", "3", "5", "6", "7"],
        "only build 4's chain is left, with its stopped machine (7)"
    );

    // 5. Nothing changed: no machine; the output is build 4's disk.
    let out4 = d.join("out4.qcow2");
    std::fs::copy(d.join("out/cached.qcow2"), &out4).unwrap();
    let (code, log5) = kiln(d, &["build", "-force", "t.json"]);
    assert_eq!(code, Some(0), "{log5}");
    assert_eq!(using(&log5), [1, 2, 3, 5, 6], "{log5}");
    assert!(log5.contains("Nothing changed"), "{log5}");
    for not in ["Starting VM", "step run", "step connect", "step shutdown"] {
        assert!(!log5.contains(not), "{not}:\n{log5}");
    }
    standalone(d);
    let cmp = Command::new("qemu-img")
        .arg("compare")
        .arg(&out4)
        .arg(d.join("out/cached.qcow2"))
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "build 5's disk is not build 4's: {}",
        String::from_utf8_lossy(&cmp.stdout)
    );

    // 6. Only the shutdown_command changed: every provisioner comes from
    // the cache, but the machine boots to be shut down the new way.
    let t6 = template(&base).replace("sudo shutdown -P now", "sudo poweroff");
    assert_ne!(t6, template(&base));
    common::write(d, "t.json", &t6);
    let (code, log6) = kiln(d, &["build", "-force", "t.json"]);
    assert_eq!(code, Some(0), "{log6}");
    assert_eq!(using(&log6), [1, 2, 3, 5, 6], "{log6}");
    assert!(!log6.contains("Nothing changed"), "{log6}");
    assert!(
        log6.contains("Starting VM, continuing the machine saved after provisioner 6"),
        "{log6}"
    );
    // (The template, shown by a warning, holds the command's text.)
    assert!(
        !log6
            .lines()
            .any(|l| l.trim_start().starts_with("cached: REPORT one=")),
        "no provisioner ran:\n{log6}"
    );
    standalone(d);
    assert_eq!(
        cached_steps(d),
        ["1", "2", "3", "5", "6", "7", "7"],
        "a stopped machine for each shutdown_command"
    );
}

fn small_template(base: &Path) -> String {
    serde_json::json!({
        "variables": {"out": "out"},
        "builders": [builder("faults", base, "{{user `out`}}")],
        "provisioners": [
            {"type": "shell", "inline": ["echo one | sudo tee /var/tmp/one"]},
            {"type": "shell", "inline": ["echo FINAL $(cat /var/tmp/one)"]}
        ]
    })
    .to_string()
}

/// Every process whose command line mentions `needle` (a test's own
/// temporary directory): what a SIGKILLed kiln may leave running.
fn kill_all_mentioning(needle: &str) {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) && pid != std::process::id() as i32 {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

#[test]
#[ignore = "boots real QEMU guests four times and mounts a tmpfs (root; minutes under TCG): scripts/test.sh runs it with --include-ignored"]
fn a_full_disk_a_killed_save_and_two_builds_at_once() {
    let base = common::base_image();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    common::write(d, "t.json", &small_template(&base));

    // A cache on a 32 MiB file system: the first state (a copy of the whole
    // disk) cannot be written. Said once; the build goes on and succeeds.
    let small = d.join("small");
    std::fs::create_dir(&small).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a tmpfs (the test needs root)");
    let o = common::kiln(d)
        .args(["build", "t.json"])
        .env("HOME", d)
        .env("KILN_CACHE_DIR", &small)
        .output()
        .unwrap();
    let (out, err) = common::text(&o);
    let log = format!("{out}{err}");
    let listed = common::kiln(d)
        .args(["cache", "list"])
        .env("KILN_CACHE_DIR", &small)
        .output()
        .unwrap();
    let pending = std::fs::read_dir(small.join("tmp"))
        .map(|r| r.count())
        .unwrap_or(0);
    let _ = Command::new("umount").arg(&small).status();
    assert_eq!(o.status.code(), Some(0), "{log}");
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Could not save the state after provisioner 1"))
        .collect();
    assert_eq!(failed.len(), 1, "{log}");
    assert!(
        failed[0].contains("No space left on device"),
        "{}",
        failed[0]
    );
    assert!(
        !log.contains("Could not save the state after provisioner 2"),
        "saving stops after a failure:\n{log}"
    );
    assert!(log.contains("FINAL one"), "{log}");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("is empty"), "{listed}");
    assert_eq!(pending, 0, "the half-written state was removed");
    standalone_at(&d.join("out/faults.qcow2"));

    // SIGKILL while the first state is being written (its pending
    // directory exists): nothing that looks like a state is left, and the
    // next kiln removes the dead writer's directory.
    let cache = d.join("kiln-cache");
    let mut child = common::kiln(d)
        .args(["build", "-force", "t.json"])
        .env("HOME", d)
        .env("KILN_CACHE_DIR", &cache)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let tmp = cache.join("tmp");
    loop {
        let writing = std::fs::read_dir(&tmp)
            .map(|r| r.flatten().any(|e| e.path().join("disk.qcow2").exists()))
            .unwrap_or(false);
        if writing {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before saving a state"
        );
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "no save began"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    kill_all_mentioning(&d.display().to_string());
    let entries = std::fs::read_dir(cache.join("entries"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(entries, 0, "no published state");
    let (code, text) = kiln(d, &["cache", "list"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("is empty"), "{text}");
    let (code, text) = kiln(d, &["cache", "prune"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        std::fs::read_dir(&tmp).map(|r| r.count()).unwrap_or(0),
        0,
        "the dead writer's directory is removed"
    );

    // Two builds of the template at once, one cache: both save the same
    // two states; each build succeeds with a correct image, and the cache
    // ends with one valid entry per state.
    let spawn = |out: &str| {
        common::kiln(d)
            .args(["build", "-force", "-var", &format!("out={out}"), "t.json"])
            .env("HOME", d)
            .env("KILN_CACHE_DIR", &cache)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("out-a"), spawn("out-b"));
    for (name, child) in [("out-a", a), ("out-b", b)] {
        let o = child.wait_with_output().unwrap();
        let (out, err) = common::text(&o);
        assert_eq!(o.status.code(), Some(0), "{name}:\n{out}{err}");
        assert!(out.contains("FINAL one"), "{name}:\n{out}{err}");
        assert!(!out.contains("Could not save"), "{name}:\n{out}{err}");
        standalone_at(&d.join(name).join("faults.qcow2"));
    }
    // Two provisioners and the stopped machine (3).
    assert_eq!(cached_steps_of(d, "faults"), ["1", "2", "3"]);
    assert_eq!(
        std::fs::read_dir(&tmp).map(|r| r.count()).unwrap_or(0),
        0,
        "no copy left behind by the build that published second"
    );
}
