//! The shell provisioner against a real sshd.
mod common;
use common::*;
use std::time::Duration;

fn write_script(dir: &std::path::Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_env_vars_and_live_output() {
    let e = env().await;
    e.run(
        shell(),
        r#"{"inline": [
            "echo \"name=$PACKER_BUILD_NAME type=$PACKER_BUILDER_TYPE\"",
            "echo \"FOO=$FOO\"; echo \"Q=$Q\"; echo \"EMPTY=[$EMPTY]\"",
            "echo to-stderr >&2",
            "echo shell=$0"
        ],
        "environment_vars": ["FOO=bar baz", "Q=it's \"quoted\" $HOME", "EMPTY="]}"#,
    )
    .await
    .unwrap();
    let out = e.printed();
    assert!(
        out.contains("==> t: Provisioning with shell script: "),
        "{out}"
    );
    assert!(out.contains("    t: name=t type=null\n"), "{out}");
    assert!(out.contains("    t: FOO=bar baz\n"), "{out}");
    // Single quotes survive Packer's quoting; nothing is expanded.
    assert!(out.contains("    t: Q=it's \"quoted\" $HOME\n"), "{out}");
    assert!(out.contains("    t: EMPTY=[]\n"), "{out}");
    assert!(out.contains("==> t: to-stderr\n"), "{out}");
    // The default remote path is /tmp/script_N.sh, removed afterwards.
    let shell_line = out.lines().find(|l| l.contains("shell=")).unwrap();
    let path = shell_line.split("shell=").nth(1).unwrap();
    assert!(
        path.starts_with("/tmp/script_") && path.ends_with(".sh"),
        "{path}"
    );
    assert!(!std::path::Path::new(path).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_execute_command_runs_scripts_as_root() {
    let e = env().await;
    let dir = tempfile::tempdir().unwrap();
    let a = write_script(dir.path(), "a.sh", "#!/bin/bash\necho \"a as $(id -un)\"\n");
    let b = write_script(
        dir.path(),
        "b.sh",
        "#!/bin/bash\necho \"b as $(id -un) in $0\"\n",
    );
    e.run(
        shell(),
        &format!(
            r#"{{"scripts": [{}, {}], "execute_command": "sudo bash '{{{{.Path}}}}'"}}"#,
            js(&a),
            js(&b)
        ),
    )
    .await
    .unwrap();
    let out = e.printed();
    assert!(
        out.contains(&format!("==> t: Provisioning with shell script: {a}")),
        "{out}"
    );
    assert!(out.contains("    t: a as root\n"), "{out}");
    assert!(out.contains("    t: b as root in /tmp/script_"), "{out}");
    // `script` alone, with .Vars in a custom execute_command and format.
    e.run(
        shell(),
        &format!(
            r#"{{"script": {}, "environment_vars": ["X=1"], "env_var_format": "export %s=\"%s\"; ",
               "execute_command": "{{{{.Vars}}}} echo vars-then; bash {{{{.Path}}}}; echo X=$X"}}"#,
            js(&a)
        ),
    )
    .await
    .unwrap();
    let out = e.printed();
    assert!(out.contains("    t: vars-then\n"), "{out}");
    assert!(out.contains("    t: a as kiln-test\n"), "{out}");
    assert!(out.contains("    t: X=1\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_paths_skip_clean_binary_and_shebang() {
    let e = env().await;
    let r = remote_dir();
    let rp = r.path().join("my script.sh");
    let dir = tempfile::tempdir().unwrap();
    let crlf = write_script(dir.path(), "crlf.sh", "#!/bin/sh\r\necho crlf-ok\r\n");
    // remote_path (quoted by execute_command as the user wants it).
    e.run(
        shell(),
        &format!(
            r#"{{"script": {}, "remote_path": {}, "skip_clean": true,
               "execute_command": "sh '{{{{.Path}}}}'"}}"#,
            js(&crlf),
            js(&p(&rp))
        ),
    )
    .await
    .unwrap();
    assert!(e.printed().contains("    t: crlf-ok\n"));
    // Kept (skip_clean), with CRLF converted.
    assert_eq!(std::fs::read(&rp).unwrap(), b"#!/bin/sh\necho crlf-ok\n");
    // binary: uploaded as is.
    e.run(
        shell(),
        &format!(
            r#"{{"script": {}, "remote_path": {}, "skip_clean": true, "binary": true,
               "execute_command": "true"}}"#,
            js(&crlf),
            js(&p(&rp))
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(&rp).unwrap(),
        b"#!/bin/sh\r\necho crlf-ok\r\n"
    );
    // remote_folder + remote_file, inline_shebang; cleaned afterwards.
    e.run(
        shell(),
        &format!(
            r#"{{"inline": ["echo \"bash=${{BASH_VERSION:+yes}} at $0\""], "inline_shebang": "/bin/bash -e",
               "remote_folder": {}, "remote_file": "in.sh"}}"#,
            js(&p(r.path()))
        ),
    )
    .await
    .unwrap();
    let out = e.printed();
    assert!(
        out.contains(&format!(
            "    t: bash=yes at {}/in.sh\n",
            r.path().display()
        )),
        "{out}"
    );
    assert!(!r.path().join("in.sh").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_pause_after() {
    let e = env().await;
    let err = e
        .run(shell(), r#"{"inline": ["echo before", "exit 3"]}"#)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        "Script exited with non-zero exit status: 3. Allowed exit codes are: [0]"
    );
    e.run(
        shell(),
        r#"{"inline": ["exit 3"], "valid_exit_codes": [0, 3], "pause_after": "1s"}"#,
    )
    .await
    .unwrap();
    assert!(e
        .printed()
        .contains("==> t: Pausing 1s after this provisioner..."));
    // A script killed by a signal: 128 + its number, as Packer.
    let err = e
        .run(
            shell(),
            r#"{"inline": ["kill -9 $$"], "inline_shebang": "/bin/sh"}"#,
        )
        .await
        .unwrap_err();
    assert!(err.contains("killed by signal KILL"), "{err}");
    assert!(err.contains("status: 137"), "{err}");
    e.run(
        shell(),
        r#"{"inline": ["kill -9 $$"], "inline_shebang": "/bin/sh", "valid_exit_codes": [137]}"#,
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_var_file() {
    let e = env().await;
    let r = remote_dir();
    e.run(
        shell(),
        &format!(
            r#"{{"inline": ["echo \"V=$V name=$PACKER_BUILD_NAME\"", "ls {}"], "use_env_var_file": true,
               "environment_vars": ["V=it's"], "remote_folder": {}}}"#,
            p(r.path()),
            js(&p(r.path()))
        ),
    )
    .await
    .unwrap();
    let out = e.printed();
    assert!(out.contains("    t: V=it's name=t\n"), "{out}");
    assert!(out.contains("    t: varfile_"), "{out}");
    // Both the script and the variables file are cleaned up.
    assert_eq!(std::fs::read_dir(r.path()).unwrap().count(), 0);
}

/// A script that drops its own connection (kills its sshd session process),
/// then hangs like the seed's `reboot; sleep 999999`.
const DROP: &str = "p=$$; while [ \"$p\" -gt 1 ]; do case \"$(cat /proc/$p/comm)\" in sshd*) kill -9 $p; break;; esac; p=$(awk '/^PPid:/{print $2}' /proc/$p/status); done; sleep 60";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_without_and_with_expect_disconnect() {
    let e = env().await;
    let dir = tempfile::tempdir().unwrap();
    let drop = write_script(
        dir.path(),
        "drop.sh",
        &format!("#!/bin/sh\necho dropping\n{DROP}\n"),
    );
    let after = write_script(dir.path(), "after.sh", "#!/bin/sh\necho after-reconnect\n");
    let err = e
        .run(
            shell(),
            &format!(r#"{{"scripts": [{}, {}]}}"#, js(&drop), js(&after)),
        )
        .await
        .unwrap_err();
    assert!(err.contains("Script disconnected unexpectedly"), "{err}");
    assert!(err.contains("expect_disconnect"), "{err}");
    assert!(!e.printed().contains("after-reconnect"));

    e.run(
        shell(),
        &format!(
            r#"{{"scripts": [{}, {}], "expect_disconnect": true, "start_retry_timeout": "30s"}}"#,
            js(&drop),
            js(&after)
        ),
    )
    .await
    .unwrap();
    let out = e.printed();
    assert!(out.contains("    t: after-reconnect\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_machine_down_for_a_while() {
    let mut e = env().await;
    let r = remote_dir();
    let marker = r.path().join("rebooting");
    let dir = tempfile::tempdir().unwrap();
    // The seed's update.sh: ... reboot; sleep 999999. Here the test plays
    // the machine: when the marker appears, sshd goes down for 2 seconds.
    let update = write_script(
        dir.path(),
        "update.sh",
        &format!(
            "#!/bin/bash\necho updating\ntouch {}\nsleep 999999\n",
            p(&marker)
        ),
    );
    let next = write_script(
        dir.path(),
        "sudoers.sh",
        "#!/bin/bash\necho \"next as $(id -un)\"\n",
    );
    let mut sshd = std::mem::replace(&mut e.sshd, kiln_testkit::Sshd::start());
    let m2 = marker.clone();
    let machine = std::thread::spawn(move || {
        for _ in 0..600 {
            if m2.exists() {
                sshd.stop();
                std::thread::sleep(Duration::from_secs(2));
                sshd.restart();
                return sshd;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the script never started");
    });
    e.run(
        shell(),
        &format!(
            r#"{{"scripts": [{}, {}], "execute_command": "sudo bash '{{{{.Path}}}}'",
               "expect_disconnect": true, "start_retry_timeout": "1m"}}"#,
            js(&update),
            js(&next)
        ),
    )
    .await
    .unwrap();
    let sshd = machine.join().unwrap();
    let out = e.printed();
    assert!(out.contains("    t: updating\n"), "{out}");
    assert!(out.contains("    t: next as root\n"), "{out}");
    assert!(out.contains("expect_disconnect"), "{out}");

    // A machine that does not come back within start_retry_timeout.
    let mut sshd = sshd;
    let _ = std::fs::remove_file(&marker);
    let machine = std::thread::spawn(move || {
        for _ in 0..600 {
            if marker.exists() {
                sshd.stop();
                return sshd;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the script never started");
    });
    let err = e
        .run(
            shell(),
            &format!(
                r#"{{"scripts": [{}, {}], "expect_disconnect": true, "start_retry_timeout": "3s"}}"#,
                js(&update),
                js(&next)
            ),
        )
        .await;
    let err = match err {
        Ok(()) => panic!("the machine stayed down, yet:\n{}", e.printed()),
        Err(err) => err,
    };
    drop(machine.join().unwrap());
    assert!(err.contains("start_retry_timeout"), "{err}");
}

#[test]
fn decode_errors_are_packers() {
    let e = decode(shell(), r#"{}"#).err().unwrap();
    assert!(
        e.contains("Either a script file or inline script must be specified."),
        "{e}"
    );
    let e = decode(
        shell(),
        r#"{"script": "/nonexistent/x.sh", "scripts": ["/nonexistent/y.sh"]}"#,
    )
    .err()
    .unwrap();
    assert!(
        e.contains("Only one of script or scripts can be specified."),
        "{e}"
    );
    assert!(e.contains("Bad script '/nonexistent/x.sh'"), "{e}");
    let e = decode(
        shell(),
        r#"{"inline": ["true"], "scripts": ["/etc/hostname"]}"#,
    )
    .err()
    .unwrap();
    assert!(
        e.contains("Only a script file or an inline script can be specified, not both."),
        "{e}"
    );
    let e = decode(
        shell(),
        r#"{"inline": ["true"], "environment_vars": ["NOEQUALS"]}"#,
    )
    .err()
    .unwrap();
    assert!(
        e.contains("Environment variable not in format 'key=value': NOEQUALS"),
        "{e}"
    );
    let e = decode(
        shell(),
        r#"{"inline": ["true"], "inlin_shebang": "/bin/sh"}"#,
    )
    .err()
    .unwrap();
    assert!(e.contains("inlin_shebang"), "{e}");
    assert!(decode(shell(), r#"{"inline": ["true"], "start_retry_timeout": "5m", "pause_after": "10s", "valid_exit_codes": [0, 1]}"#).is_ok());
}

/// Output reaches the UI while the script runs: the script prints a line,
/// then waits for a file that the test creates only once it has seen that
/// line printed (buffered output would never let it finish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_streams_while_the_script_runs() {
    let e = env().await;
    let shared = remote_dir();
    let go = shared.path().join("go");
    let json = format!(
        r#"{{"inline": ["echo first-line", "echo err-line >&2", "while [ ! -e {go} ]; do sleep 0.05; done", "echo after-go"]}}"#,
        go = go.display()
    );
    let run = e.run(shell(), &json);
    let watch = async {
        wait_until(
            "the first line reaching the UI while the script waits",
            || {
                let p = e.printed();
                p.contains("    t: first-line\n") && p.contains("==> t: err-line\n")
            },
        )
        .await;
        assert!(!e.printed().contains("after-go"));
        std::fs::write(&go, "").unwrap();
    };
    let (r, ()) = tokio::join!(run, watch);
    r.unwrap();
    let out = e.printed();
    assert!(out.find("first-line") < out.find("after-go"), "{out}");
}

/// `pause_after` pauses after the scripts, before the provisioner returns:
/// the pause is announced after the script's output and the provisioner
/// is still running when it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_after_pauses_before_the_provisioner_returns() {
    let e = env().await;
    let done = std::sync::atomic::AtomicBool::new(false);
    let run = async {
        let r = e
            .run(
                shell(),
                r#"{"inline": ["echo the-script-ran"], "pause_after": "3s"}"#,
            )
            .await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    };
    let watch = async {
        wait_until("the pause announcement", || {
            e.printed()
                .contains("==> t: Pausing 3s after this provisioner...")
        })
        .await;
        assert!(
            !done.load(std::sync::atomic::Ordering::SeqCst),
            "returned without pausing"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !done.load(std::sync::atomic::Ordering::SeqCst),
            "returned without pausing"
        );
    };
    let (r, ()) = tokio::join!(run, watch);
    r.unwrap();
    let out = e.printed();
    assert!(
        out.find("the-script-ran").unwrap() < out.find("Pausing 3s").unwrap(),
        "{out}"
    );
}

/// The upload and start of a script are retried within
/// `start_retry_timeout`: the machine's network is down when the
/// provisioner starts and comes back once it has been tried (and refused);
/// with too short a `start_retry_timeout` the provisioner fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_start_are_retried_within_start_retry_timeout() {
    let (e, proxy) = env_behind_proxy().await;
    proxy.down();
    let run = e.run(
        shell(),
        r#"{"inline": ["echo ran-after-retry"], "start_retry_timeout": "2m"}"#,
    );
    let watch = async {
        wait_until("a refused try", || proxy.refused() >= 1).await;
        assert!(!e.printed().contains("ran-after-retry"));
        proxy.up();
    };
    let (r, ()) = tokio::join!(run, watch);
    r.unwrap();
    assert!(e.printed().contains("    t: ran-after-retry\n"));
    assert!(proxy.refused() >= 1);

    // Down for good, 1s to retry: at least two tries, then the error.
    proxy.down();
    let before = proxy.refused();
    let err = e
        .run(
            shell(),
            r#"{"inline": ["echo never"], "start_retry_timeout": "1s"}"#,
        )
        .await
        .unwrap_err();
    assert!(err.contains("Error uploading script"), "{err}");
    assert!(
        proxy.refused() >= before + 2,
        "{} tries",
        proxy.refused() - before
    );
    assert!(!e.printed().contains("never"));
}
