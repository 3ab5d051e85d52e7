//! `ssh_agent_auth` with a real ssh-agent (its own test binary: it sets
//! `SSH_AUTH_SOCK` for the process).
use kiln_core::{Communicator, ExitStatus};
use kiln_ssh::{connect, CollectOutput, SshConfig};
use kiln_testkit::{test_ctx, ProcessGuard, Sshd};
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_keys_log_in_and_an_empty_agent_is_refused() {
    let s = Sshd::start();
    let wd = tempfile::tempdir().unwrap();
    let sock = wd.path().join("agent.sock");
    let _agent = ProcessGuard::spawn(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(std::process::Stdio::null()),
    )
    .expect("starting ssh-agent");
    while !sock.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Only this process's tests use the variable (one test in this binary).
    std::env::set_var("SSH_AUTH_SOCK", &sock);
    let cfg = SshConfig {
        username: s.user.clone(),
        agent_auth: true,
        timeout: Duration::from_secs(30),
        ..Default::default()
    };

    // No key in the agent: refused, at once, saying what was tried.
    let (_out, ctx) = test_ctx("t", wd.path());
    let e = connect(&cfg, &s.host, s.port, None, &ctx)
        .await
        .expect_err("an empty agent")
        .to_string();
    assert!(e.contains("SSH authentication refused"), "{e}");
    assert!(e.contains("keys of the SSH agent"), "{e}");

    // The user's key in the agent (and nowhere else kiln looks).
    let st = Command::new("ssh-add")
        .arg(&s.key_path)
        .env("SSH_AUTH_SOCK", &sock)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let (_out, ctx) = test_ctx("t", wd.path());
    let c = connect(&cfg, &s.host, s.port, None, &ctx)
        .await
        .expect("the agent's key logs in");
    let out = CollectOutput::default();
    assert_eq!(c.start("id -un", &out).await.unwrap(), ExitStatus::Code(0));
    assert_eq!(*out.stdout.lock().unwrap(), vec![s.user.clone()]);
    assert_eq!(s.log_count("Accepted publickey for kiln-test"), 1);
}
