//! kiln's SSH communicator against a real OpenSSH sshd on loopback.
use kiln_core::communicator::{FileMeta, NoProgress};
use kiln_core::{Communicator, ExitStatus};
use kiln_ssh::{connect, CollectOutput, SshConfig, TempKeyPair};
use kiln_testkit::{test_ctx, Sshd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn key_cfg(s: &Sshd) -> SshConfig {
    SshConfig {
        username: s.user.clone(),
        private_key_file: Some(s.key_path.clone()),
        timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

fn pw_cfg(s: &Sshd, pw: &str) -> SshConfig {
    SshConfig {
        username: s.user.clone(),
        password: Some(pw.to_string()),
        timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

async fn run(c: &dyn Communicator, cmd: &str) -> (ExitStatus, Vec<String>, Vec<String>) {
    let out = CollectOutput::default();
    let st = c.start(cmd, &out).await.expect("start");
    let o = out.stdout.lock().unwrap().clone();
    let e = out.stderr.lock().unwrap().clone();
    (st, o, e)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_login_runs_commands_with_output_and_exit_codes() {
    let s = Sshd::start();
    let wd = tempfile::tempdir().unwrap();
    let (out, ctx) = test_ctx("t", wd.path());
    let c = connect(&key_cfg(&s), &s.host, s.port, None, &ctx)
        .await
        .expect("connect");
    let printed = out.captured();
    assert!(
        printed.contains("==> t: Waiting for SSH to become available..."),
        "{printed}"
    );
    assert!(printed.contains("==> t: Connected to SSH!"), "{printed}");
    let (st, o, e) = run(
        &*c,
        "echo hello; echo oops >&2; printf 'no newline'; exit 3",
    )
    .await;
    assert_eq!(st, ExitStatus::Code(3));
    assert_eq!(o, vec!["hello".to_string(), "no newline".to_string()]);
    assert_eq!(e, vec!["oops".to_string()]);
    let (st, o, _) = run(&*c, "id -un").await;
    assert_eq!(st, ExitStatus::Code(0));
    assert_eq!(o, vec![s.user.clone()]);
    let (st, _, _) = run(&*c, "kill -9 $$").await;
    assert_eq!(st, ExitStatus::Signal("KILL".into()));
    assert!(c.host_key_fingerprint().unwrap().starts_with("SHA256:"));
    // Several commands at once over the one connection.
    let mut hs = Vec::new();
    for i in 0..8 {
        let c = c.clone();
        hs.push(tokio::spawn(async move {
            let out = CollectOutput::default();
            let st = c
                .start(&format!("sleep 0.2; echo {i}"), &out)
                .await
                .unwrap();
            let o = out.stdout.lock().unwrap().clone();
            (st, o)
        }));
    }
    for (i, h) in hs.into_iter().enumerate() {
        let (st, o) = h.await.unwrap();
        assert_eq!(st, ExitStatus::Code(0));
        assert_eq!(o, vec![i.to_string()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_and_the_password_is_a_secret() {
    let s = Sshd::start();
    let wd = tempfile::tempdir().unwrap();
    let (out, ctx) = test_ctx("t", wd.path());
    let c = connect(&pw_cfg(&s, &s.password), &s.host, s.port, None, &ctx)
        .await
        .expect("connect");
    let (st, o, _) = run(&*c, &format!("echo the password is {}", s.password)).await;
    assert_eq!(st, ExitStatus::Code(0));
    // The sink gets raw output; what reaches the UI is scrubbed.
    ctx.ui.message(&o[0]);
    let printed = out.captured();
    assert!(printed.contains("the password is <sensitive>"), "{printed}");
    assert!(!printed.contains(&s.password), "{printed}");
}

const FAILED_PASSWORD: &str = "Failed password for kiln-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_reported_at_once_and_clearly() {
    let s = Sshd::start();
    let wd = tempfile::tempdir().unwrap();
    let (out, ctx) = test_ctx("t", wd.path());
    let mut cfg = pw_cfg(&s, "not-the-password");
    // Time enough for many retries (every 2 s): the server must see one
    // attempt only.
    cfg.timeout = Duration::from_secs(30);
    let e = connect(&cfg, &s.host, s.port, None, &ctx)
        .await
        .expect_err("wrong password")
        .to_string();
    assert_eq!(s.log_count(FAILED_PASSWORD), 1, "{}", s.log());
    assert!(e.contains("SSH authentication refused"), "{e}");
    assert!(!e.contains("Timeout"), "{e}");
    assert!(e.contains("kiln-test"), "{e}");
    assert!(e.contains("password"), "{e}");
    assert!(!e.contains("not-the-password"), "{e}");
    assert!(!out.captured().contains("not-the-password"));

    // With ssh_handshake_attempts, kiln tries again (and says so), that
    // many times.
    let (out, ctx) = test_ctx("t", wd.path());
    cfg.handshake_attempts = Some(2);
    let e = connect(&cfg, &s.host, s.port, None, &ctx)
        .await
        .expect_err("wrong password")
        .to_string();
    assert!(e.contains("SSH authentication refused"), "{e}");
    assert_eq!(s.log_count(FAILED_PASSWORD), 1 + 2, "{}", s.log());
    assert!(
        out.captured().contains("attempt 1 of 2, retrying"),
        "{}",
        out.captured()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_a_machine_that_is_not_up_yet() {
    let mut s = Sshd::start();
    s.stop();
    let wd = tempfile::tempdir().unwrap();
    let (_out, ctx) = test_ctx("t", wd.path());
    let cfg = key_cfg(&s);
    let (host, port) = (s.host.clone(), s.port);
    let h = tokio::spawn(async move { connect(&cfg, &host, port, None, &ctx).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!h.is_finished(), "connected to nothing?");
    let s = tokio::task::spawn_blocking(move || {
        s.restart();
        s
    })
    .await
    .unwrap();
    let c = h.await.unwrap().expect("connects once sshd is up");
    let (st, _, _) = run(&*c, "true").await;
    assert_eq!(st, ExitStatus::Code(0));
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_and_cancel() {
    let port = kiln_testkit::free_port();
    let wd = tempfile::tempdir().unwrap();
    let (_out, ctx) = test_ctx("t", wd.path());
    let cfg = SshConfig {
        username: "nobody".into(),
        password: Some("x".into()),
        timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let e = connect(&cfg, "127.0.0.1", port, None, &ctx)
        .await
        .expect_err("nothing listens")
        .to_string();
    assert!(e.contains("Timeout waiting for SSH"), "{e}");
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");

    let cfg = SshConfig {
        timeout: Duration::from_secs(600),
        ..cfg
    };
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let e = connect(&cfg, "127.0.0.1", port, None, &ctx)
        .await
        .expect_err("cancelled");
    assert!(e.is_cancelled(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_key_pair_logs_in() {
    let s = Sshd::start();
    let k = TempKeyPair::generate();
    assert!(k.public_authorized.starts_with("ssh-ed25519 AAAA"));
    assert!(k.public_authorized.ends_with(&format!(" {}", k.name)));
    assert!(k.name.starts_with("kiln-"));
    assert!(k
        .private_openssh
        .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let ak = s.dir().join("authorized_keys");
    let mut keys = std::fs::read_to_string(&ak).unwrap();
    keys.push_str(&format!("{}\n", k.public_authorized));
    std::fs::write(&ak, keys).unwrap();
    let wd = tempfile::tempdir().unwrap();
    let (out, ctx) = test_ctx("t", wd.path());
    let cfg = SshConfig {
        username: s.user.clone(),
        timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let c = connect(&cfg, &s.host, s.port, Some(&k), &ctx)
        .await
        .expect("temporary key works");
    let (st, _, _) = run(&*c, "true").await;
    assert_eq!(st, ExitStatus::Code(0));
    // ssh-keygen agrees the private key is valid OpenSSH.
    let kp = wd.path().join("k");
    std::fs::write(&kp, &k.private_openssh).unwrap();
    std::fs::set_permissions(&kp, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = std::process::Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&kp)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(k
        .public_authorized
        .starts_with(String::from_utf8_lossy(&o.stdout).trim()));
    assert!(!out.captured().contains("PRIVATE KEY"));
}

/// Packer's temporary key types: an RSA key (what an OpenSSH without
/// ed25519, before 6.5, accepts) and an ECDSA key log in to the real sshd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_and_ecdsa_temporary_key_pairs_log_in() {
    let s = Sshd::start();
    let wd = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#""temporary_key_pair_type": "rsa", "temporary_key_pair_bits": 2048"#,
            "ssh-rsa ",
            "2048 ",
        ),
        (r#""temporary_key_pair_bits": 3072"#, "ssh-rsa ", "3072 "),
        (
            r#""temporary_key_pair_type": "ecdsa""#,
            "ecdsa-sha2-nistp521 ",
            "521 ",
        ),
        (
            r#""temporary_key_pair_type": "ecdsa", "temporary_key_pair_bits": 256"#,
            "ecdsa-sha2-nistp256 ",
            "256 ",
        ),
    ];
    for (json, prefix, bits) in cases {
        let mut cfg = decode_cfg(&format!(r#"{{"ssh_username": "{}", {json}}}"#, s.user));
        cfg.timeout = Duration::from_secs(30);
        let k = TempKeyPair::for_config(&cfg, kiln_ssh::TempKeyType::Ed25519).unwrap();
        assert!(
            k.public_authorized.starts_with(prefix),
            "{json}: {}",
            k.public_authorized
        );
        assert!(k.public_authorized.ends_with(&format!(" {}", k.name)));
        // ssh-keygen reads the private key and agrees on the size.
        let kp = wd.path().join("k");
        std::fs::write(&kp, &k.private_openssh).unwrap();
        std::fs::set_permissions(&kp, std::fs::Permissions::from_mode(0o600)).unwrap();
        let o = std::process::Command::new("ssh-keygen")
            .arg("-l")
            .arg("-f")
            .arg(&kp)
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(listed.starts_with(bits), "{json}: {listed}");
        // Only this key is authorized: the login must use it.
        std::fs::write(
            s.dir().join("authorized_keys"),
            format!("{}\n", k.public_authorized),
        )
        .unwrap();
        let before = s.log_count("Accepted publickey for kiln-test");
        let (out, ctx) = test_ctx("t", wd.path());
        let c = connect(&cfg, &s.host, s.port, Some(&k), &ctx)
            .await
            .unwrap_or_else(|e| panic!("{json}: {e}"));
        let (st, o, _) = run(&*c, "echo in").await;
        assert_eq!(st, ExitStatus::Code(0));
        assert_eq!(o, vec!["in".to_string()]);
        assert_eq!(s.log_count("Accepted publickey for kiln-test"), before + 1);
        assert!(!out.captured().contains("PRIVATE KEY"));
    }
    // The default when neither the template nor the builder says: Packer's
    // (RSA 4096).
    let cfg = decode_cfg(&format!(r#"{{"ssh_username": "{}"}}"#, s.user));
    assert_eq!(cfg.temporary_key_pair_type, None);
    let k = TempKeyPair::for_config(&cfg, kiln_ssh::TempKeyType::default()).unwrap();
    assert!(k.public_authorized.starts_with("ssh-rsa "));
    let k = TempKeyPair::for_config(&cfg, kiln_ssh::TempKeyType::Ed25519).unwrap();
    assert!(k.public_authorized.starts_with("ssh-ed25519 "));
}

fn decode_cfg(json: &str) -> SshConfig {
    use kiln_template::{Context, Decoder, Diagnostics, Source};
    let src = Arc::new(Source {
        path: "t.json".into(),
        text: json.to_string(),
    });
    let node = kiln_template::json::parse(src).unwrap();
    let ctx = Context::new(std::env::current_dir().unwrap());
    let mut diags = Diagnostics::default();
    let c = {
        let mut d = Decoder::new(&node, &ctx, &mut diags);
        let c = SshConfig::decode(&mut d);
        d.finish();
        c
    };
    assert!(diags.is_empty(), "{diags}");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_is_disconnected_then_reconnect_and_host_key_pinning() {
    let mut s = Sshd::start();
    let wd = tempfile::tempdir().unwrap();
    let (_out, ctx) = test_ctx("t", wd.path());
    let c = connect(&key_cfg(&s), &s.host, s.port, None, &ctx)
        .await
        .expect("connect");
    // The command kills its own sshd session process: the connection drops
    // without an exit status.
    let (st, o, _) = run(
        &*c,
        "echo before; p=$$; while [ \"$p\" -gt 1 ]; do case \"$(cat /proc/$p/comm)\" in sshd*) kill -9 $p; break;; esac; p=$(awk '/^PPid:/{print $2}' /proc/$p/status); done; sleep 30",
    )
    .await;
    assert_eq!(st, ExitStatus::Disconnected);
    assert_eq!(o, vec!["before".to_string()]);
    c.reconnect(Duration::from_secs(30))
        .await
        .expect("reconnect");
    let (st, _, _) = run(&*c, "true").await;
    assert_eq!(st, ExitStatus::Code(0));

    // A "reboot": the server goes away and comes back; start() reconnects
    // by itself.
    let c2: Arc<kiln_ssh::SshCommunicator> = c.clone();
    s.restart();
    let (st, _, _) = run(&*c2, "true").await;
    assert_eq!(st, ExitStatus::Code(0));

    // Another machine answers at the address: refused.
    s.regenerate_host_key();
    s.restart();
    let e = c
        .reconnect(Duration::from_secs(10))
        .await
        .expect_err("host key changed")
        .to_string();
    assert!(e.contains("host key"), "{e}");
    assert!(e.contains("changed"), "{e}");
    let out = CollectOutput::default();
    let e = c
        .start("true", &out)
        .await
        .expect_err("refused")
        .to_string();
    assert!(e.contains("host key"), "{e}");
}

async fn upload_bytes(
    c: &dyn Communicator,
    dst: &str,
    data: &[u8],
    mode: u32,
) -> Result<(), String> {
    let mut r = data;
    c.upload(
        dst,
        &mut r,
        FileMeta {
            mode,
            size: Some(data.len() as u64),
        },
        &NoProgress,
    )
    .await
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_upload_and_download() {
    let s = Sshd::start();
    let wd = tempfile::tempdir().unwrap();
    let (_out, ctx) = test_ctx("t", wd.path());
    let c = connect(&key_cfg(&s), &s.host, s.port, None, &ctx)
        .await
        .expect("connect");
    let remote = tempfile::tempdir().unwrap();
    std::fs::set_permissions(remote.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let r = remote.path();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    upload_bytes(&*c, r.join("big").to_str().unwrap(), &data, 0o751)
        .await
        .unwrap();
    assert_eq!(std::fs::read(r.join("big")).unwrap(), data);
    // umask 022 on the machine: 0751 stays.
    assert_eq!(mode(&r.join("big")), 0o751);
    upload_bytes(&*c, r.join("w").to_str().unwrap(), b"x", 0o666)
        .await
        .unwrap();
    assert_eq!(mode(&r.join("w")), 0o644);
    // An existing file keeps its mode.
    upload_bytes(&*c, r.join("big").to_str().unwrap(), b"small", 0o600)
        .await
        .unwrap();
    assert_eq!(std::fs::read(r.join("big")).unwrap(), b"small");
    assert_eq!(mode(&r.join("big")), 0o751);
    // Quoting.
    let odd = r.join("it's a $file");
    upload_bytes(&*c, odd.to_str().unwrap(), b"q", 0o644)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&odd).unwrap(), b"q");
    // A directory at the destination, or a missing parent: errors.
    std::fs::create_dir(r.join("d")).unwrap();
    let e = upload_bytes(&*c, r.join("d").to_str().unwrap(), b"x", 0o644)
        .await
        .unwrap_err();
    assert!(e.contains("Is a directory"), "{e}");
    let e = upload_bytes(&*c, r.join("nope/x").to_str().unwrap(), b"x", 0o644)
        .await
        .unwrap_err();
    assert!(e.contains("nope"), "{e}");

    // Download.
    std::fs::write(r.join("dl"), &data).unwrap();
    let mut got = Vec::new();
    c.download(r.join("dl").to_str().unwrap(), &mut got, &NoProgress)
        .await
        .unwrap();
    assert_eq!(got, data);
    let mut got = Vec::new();
    let e = c
        .download(r.join("missing").to_str().unwrap(), &mut got, &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("No such file"), "{e}");

    // Directory download: `dir/` arrives as dst/dir.
    std::fs::create_dir_all(r.join("tree/sub")).unwrap();
    std::fs::write(r.join("tree/a"), "A").unwrap();
    std::fs::write(r.join("tree/sub/b"), "B").unwrap();
    std::fs::set_permissions(r.join("tree/a"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let local = wd.path().join("dl");
    c.download_dir(
        &format!("{}/", r.join("tree").display()),
        &local,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read_to_string(local.join("tree/a")).unwrap(), "A");
    assert_eq!(
        std::fs::read_to_string(local.join("tree/sub/b")).unwrap(),
        "B"
    );
    assert_eq!(mode(&local.join("tree/a")), 0o755);
    // A glob: each match by its own name.
    let local2 = wd.path().join("dl2");
    c.download_dir(
        &format!("{}/*", r.join("tree").display()),
        &local2,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read_to_string(local2.join("a")).unwrap(), "A");
    assert_eq!(std::fs::read_to_string(local2.join("sub/b")).unwrap(), "B");
}

/// A forwarder in front of the real sshd, accepting every TCP connection
/// at once, as QEMU's user-mode network does. `forward(n)` says what to do
/// with the n-th connection (from 0). Returns the port and the count of
/// connections.
/// What the forwarder does with a connection.
#[derive(Clone, Copy)]
enum Fwd {
    /// Keep it open, never answered (its SYN to the guest was lost).
    Silent,
    /// Forward it to the sshd after a delay.
    After(Duration),
    /// Close it at once (the guest refused it: QEMU closes the accepted
    /// connection).
    Close,
}

async fn forwarder(
    s: &Sshd,
    forward: fn(usize) -> Fwd,
) -> (
    u16,
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let target = format!("{}:{}", s.host, s.port);
    let n = accepted.clone();
    let task = tokio::spawn(async move {
        let mut silent = Vec::new();
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            let delay = match forward(n.fetch_add(1, Ordering::SeqCst)) {
                Fwd::Silent => {
                    silent.push(inbound);
                    continue;
                }
                Fwd::Close => {
                    drop(inbound);
                    continue;
                }
                Fwd::After(d) => d,
            };
            let target = target.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut outbound = TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (port, accepted, task)
}

/// While the guest boots, the forwarder's first connections go nowhere:
/// kiln must open fresh ones rather than wait on those until
/// `ssh_timeout` (20 s here, against the 60 s a silent connection could
/// otherwise hold the handshake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_but_silent_is_retried_on_a_fresh_one() {
    use std::sync::atomic::Ordering;
    let s = Sshd::start();
    let (port, accepted, task) = forwarder(&s, |n| {
        if n < 2 {
            Fwd::Silent
        } else {
            Fwd::After(Duration::ZERO)
        }
    })
    .await;
    let wd = tempfile::tempdir().unwrap();
    let (_out, ctx) = test_ctx("t", wd.path());
    let cfg = SshConfig {
        timeout: Duration::from_secs(20),
        ..key_cfg(&s)
    };
    let c = connect(&cfg, "127.0.0.1", port, None, &ctx)
        .await
        .expect("connects through the forwarder once it forwards");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "two silent connections left behind, the third used"
    );
    let (st, out, _) = run(&*c, "echo through").await;
    assert_eq!(st, ExitStatus::Code(0));
    assert_eq!(out, vec!["through".to_string()]);
    task.abort();
}

/// Opening fresh connections must not give up on a server that is only
/// slow to greet: here the first connection gets its banner after 5 s and
/// every later one stays silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_slow_to_greet_still_gets_through() {
    use std::sync::atomic::Ordering;
    let s = Sshd::start();
    let (port, accepted, task) = forwarder(&s, |n| {
        if n == 0 {
            Fwd::After(Duration::from_secs(5))
        } else {
            Fwd::Silent
        }
    })
    .await;
    let wd = tempfile::tempdir().unwrap();
    let (_out, ctx) = test_ctx("t", wd.path());
    let cfg = SshConfig {
        timeout: Duration::from_secs(20),
        ..key_cfg(&s)
    };
    let c = connect(&cfg, "127.0.0.1", port, None, &ctx)
        .await
        .expect("the slow first connection is used");
    assert!(
        accepted.load(Ordering::SeqCst) >= 2,
        "fresh connections were tried meanwhile"
    );
    let (st, _, _) = run(&*c, "true").await;
    assert_eq!(st, ExitStatus::Code(0));
    task.abort();
}

/// One connection closed without a banner must not make kiln give up
/// another one still waiting for its banner: here the first connection
/// is greeted after 4 s and every later one is closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_does_not_stop_one_still_waiting_for_its_banner() {
    use std::sync::atomic::Ordering;
    let s = Sshd::start();
    let (port, accepted, task) = forwarder(&s, |n| {
        if n == 0 {
            Fwd::After(Duration::from_secs(4))
        } else {
            Fwd::Close
        }
    })
    .await;
    let wd = tempfile::tempdir().unwrap();
    let (_out, ctx) = test_ctx("t", wd.path());
    let cfg = SshConfig {
        timeout: Duration::from_secs(20),
        ..key_cfg(&s)
    };
    let c = connect(&cfg, "127.0.0.1", port, None, &ctx)
        .await
        .expect("the first connection, slow to greet, is used");
    assert!(
        accepted.load(Ordering::SeqCst) >= 2,
        "a fresh connection was tried (and closed) meanwhile"
    );
    let (st, o, _) = run(&*c, "echo first").await;
    assert_eq!(st, ExitStatus::Code(0));
    assert_eq!(o, vec!["first".to_string()]);
    task.abort();
}

/// A directory the test user may write into.
fn shared_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// Wait (polling) until `path` exists; the command under test creates it.
async fn wait_for_file(path: &Path) {
    for _ in 0..15_000 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{} never appeared: the command did not start",
        path.display()
    );
}

/// `ssh_keep_alive_interval`: a machine that stops answering (its sshd
/// session frozen, as a guest that was reset: no FIN, no RST) is noticed,
/// and the running command ends as disconnected instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_detect_a_dead_peer() {
    let s = Sshd::start();
    let wd = tempfile::tempdir().unwrap();
    let (_out, ctx) = test_ctx("t", wd.path());
    let cfg = SshConfig {
        keep_alive_interval: Some(Duration::from_millis(500)),
        ..key_cfg(&s)
    };
    let c = connect(&cfg, &s.host, s.port, None, &ctx).await.unwrap();
    let shared = shared_dir();
    let marker = shared.path().join("started");
    let cmd = format!("touch {}; exec sleep 3600", marker.display());
    let c2 = c.clone();
    let running = tokio::spawn(async move {
        let out = CollectOutput::default();
        c2.start(&cmd, &out).await
    });
    wait_for_file(&marker).await;
    s.signal_sessions("STOP");
    // A guard against hanging forever, not a speed check.
    let st = tokio::time::timeout(Duration::from_secs(300), running)
        .await
        .expect("the dead peer was never noticed")
        .unwrap()
        .expect("start");
    assert_eq!(st, ExitStatus::Disconnected);
    s.signal_sessions("CONT");
}

/// `drop_connection_now`: a builder that knows the machine was reset drops
/// the connection at once; the command returns as disconnected (keep-alives
/// are off here, so nothing else could end it) and the next command
/// reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_connection_now_ends_the_running_command_and_the_next_reconnects() {
    let s = Sshd::start();
    let wd = tempfile::tempdir().unwrap();
    let (_out, ctx) = test_ctx("t", wd.path());
    let cfg = SshConfig {
        keep_alive_interval: None,
        ..key_cfg(&s)
    };
    let c = connect(&cfg, &s.host, s.port, None, &ctx).await.unwrap();
    let shared = shared_dir();
    let marker = shared.path().join("started");
    let cmd = format!("touch {}; exec sleep 3600", marker.display());
    let c2 = c.clone();
    let running = tokio::spawn(async move {
        let out = CollectOutput::default();
        c2.start(&cmd, &out).await
    });
    wait_for_file(&marker).await;
    // The peer vanishes without a word, then the builder learns of it.
    s.signal_sessions("STOP");
    c.drop_connection_now();
    let st = tokio::time::timeout(Duration::from_secs(300), running)
        .await
        .expect("the command did not return")
        .unwrap()
        .expect("start");
    assert_eq!(st, ExitStatus::Disconnected);
    s.kill_sessions();
    let before = s.log_count("Accepted publickey for kiln-test");
    let (st, o, _) = run(&*c, "echo again").await;
    assert_eq!(st, ExitStatus::Code(0));
    assert_eq!(o, vec!["again".to_string()]);
    assert_eq!(s.log_count("Accepted publickey for kiln-test"), before + 1);
    // Without a connection it does nothing.
    c.drop_connection_now();
    c.drop_connection_now();
    let (st, _, _) = run(&*c, "true").await;
    assert_eq!(st, ExitStatus::Code(0));
}

/// `ssh_pty`: the command gets a terminal only when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_pty_gives_the_command_a_terminal() {
    let s = Sshd::start();
    let wd = tempfile::tempdir().unwrap();
    let (_out, ctx) = test_ctx("t", wd.path());
    let c = connect(&key_cfg(&s), &s.host, s.port, None, &ctx)
        .await
        .unwrap();
    let (st, o, _) = run(&*c, "tty").await;
    assert_eq!(st, ExitStatus::Code(1));
    assert_eq!(o, vec!["not a tty".to_string()]);
    let cfg = SshConfig {
        pty: true,
        ..key_cfg(&s)
    };
    let c = connect(&cfg, &s.host, s.port, None, &ctx).await.unwrap();
    let (st, o, _) = run(&*c, "tty; test -t 0 && echo stdin-is-a-tty").await;
    assert_eq!(st, ExitStatus::Code(0));
    assert!(o[0].starts_with("/dev/pts/"), "{o:?}");
    assert_eq!(o[1], "stdin-is-a-tty");
}

/// `pause_before_connecting`: connect, pause, connect again (Packer's
/// order): the server sees two logins, the pause is announced between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_before_connecting_connects_twice() {
    let s = Sshd::start();
    let wd = tempfile::tempdir().unwrap();
    let (out, ctx) = test_ctx("t", wd.path());
    let cfg = SshConfig {
        pause_before_connecting: Some(Duration::from_secs(1)),
        ..key_cfg(&s)
    };
    let c = connect(&cfg, &s.host, s.port, None, &ctx).await.unwrap();
    assert_eq!(
        s.log_count("Accepted publickey for kiln-test"),
        2,
        "{}",
        s.log()
    );
    let printed = out.captured();
    let connected = printed.find("Connected to SSH!").expect("connected");
    let paused = printed
        .find("Pausing 1s before connecting...")
        .expect("the pause is announced");
    assert!(connected < paused, "{printed}");
    let (st, _, _) = run(&*c, "true").await;
    assert_eq!(st, ExitStatus::Code(0));
    assert_eq!(s.log_count("Accepted publickey for kiln-test"), 2);
}

/// Removes on drop what a test created outside its temporary directories.
struct RemoveOnDrop(Vec<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// `ssh_clear_authorized_keys`: the temporary key's line goes from the
/// user's `~/.ssh/authorized_keys` and (through sudo) root's; other lines
/// stay, and no backup is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_authorized_keys_removes_the_temporary_key_only() {
    let s = Sshd::start();
    let wd = tempfile::tempdir().unwrap();
    let (out, ctx) = test_ctx("t", wd.path());
    let c = connect(&key_cfg(&s), &s.host, s.port, None, &ctx)
        .await
        .unwrap();
    let key = TempKeyPair::generate();
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOtherKey1 someone@else";
    let home = Path::new("/home").join(&s.user);
    let ssh_dir = home.join(".ssh");
    let mut created = Vec::new();
    if !ssh_dir.exists() {
        std::fs::create_dir(&ssh_dir).unwrap();
        created.push(ssh_dir.clone());
    }
    let user_keys = ssh_dir.join("authorized_keys");
    assert!(!user_keys.exists(), "the test user has no keys of its own");
    created.insert(0, user_keys.clone());
    std::fs::write(&user_keys, format!("{other}\n{}\n", key.public_authorized)).unwrap();
    let ok = std::process::Command::new("chown")
        .arg("-R")
        .arg(&s.user)
        .arg(&ssh_dir)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // Root's file: made for the test when there is none (and removed
    // after); an existing one must come out unchanged.
    let root_keys = Path::new("/root/.ssh/authorized_keys");
    let root_before = std::fs::read_to_string(root_keys).ok();
    if root_before.is_none() {
        if !Path::new("/root/.ssh").exists() {
            std::fs::create_dir(Path::new("/root/.ssh")).unwrap();
            created.push("/root/.ssh".into());
        }
        std::fs::write(root_keys, format!("{}\n{other}\n", key.public_authorized)).unwrap();
        created.insert(0, root_keys.to_path_buf());
    }
    let _cleanup = RemoveOnDrop(created);

    kiln_ssh::clear_authorized_keys(&*c, &key, &*ctx.ui).await;
    assert_eq!(
        std::fs::read_to_string(&user_keys).unwrap(),
        format!("{other}\n")
    );
    assert!(!ssh_dir.join("authorized_keys.bak").exists());
    match &root_before {
        None => {
            assert_eq!(
                std::fs::read_to_string(root_keys).unwrap(),
                format!("{other}\n")
            );
            assert!(!Path::new("/root/.ssh/authorized_keys.bak").exists());
        }
        Some(before) => assert_eq!(&std::fs::read_to_string(root_keys).unwrap(), before),
    }
    let printed = out.captured();
    assert!(
        printed.contains("Trying to remove ephemeral keys from authorized_keys files"),
        "{printed}"
    );
    assert!(!printed.contains("Error cleaning up"), "{printed}");
}
