//! The `null` builder over SSH, end to end through the `kiln` binary,
//! against a real OpenSSH sshd started by the test: the seed's provisioners
//! (`sudo bash '{{.Path}}'`, `./data/` to a directory), a password that
//! never reaches the output, and a wrong password that fails at once.
mod common;
use common::run_joined as kiln;
use kiln_testkit::Sshd;
use std::time::{Duration, Instant};

#[test]
fn seed_provisioners_over_ssh_with_the_null_builder() {
    let sshd = Sshd::start();
    let d = tempfile::tempdir().unwrap();
    // The SSH user is an ordinary user: let it reach and fill `stash`.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dest = d.path().join("stash");
    std::fs::create_dir(&dest).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::create_dir_all(d.path().join("scripts")).unwrap();
    std::fs::create_dir_all(d.path().join("data/sub")).unwrap();
    std::fs::write(d.path().join("data/placeholder.txt"), "placeholder\n").unwrap();
    std::fs::write(d.path().join("data/sub/x.txt"), "x\n").unwrap();
    std::fs::write(
        d.path().join("scripts/whoami.sh"),
        "echo \"OUT: running as $(id -un)\"\n",
    )
    .unwrap();
    let template = format!(
        r#"{{
  "variables": {{"pw": "{pw}"}},
  "sensitive-variables": ["pw"],
  "builders": [{{"type": "null", "ssh_host": "{host}", "ssh_port": "{port}",
                 "ssh_username": "{user}", "ssh_password": "{{{{user `pw`}}}}"}}],
  "provisioners": [
    {{"type": "shell", "scripts": ["scripts/whoami.sh"],
      "execute_command": "sudo bash '{{{{.Path}}}}'"}},
    {{"type": "shell", "inline": ["echo OUT: password is {{{{user `pw`}}}}"]}},
    {{"type": "file", "source": "./data/", "destination": "{dest}"}}
  ]
}}"#,
        pw = sshd.password,
        host = sshd.host,
        port = sshd.port,
        user = sshd.user,
        dest = dest.display(),
    );
    std::fs::write(d.path().join("t.json"), template).unwrap();
    let (code, text) = kiln(d.path(), &["build", "t.json"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("==> null: Connected to SSH!"), "{text}");
    assert!(text.contains("OUT: running as root"), "{text}");
    assert!(text.contains("OUT: password is <sensitive>"), "{text}");
    assert!(!text.contains(&sshd.password), "{text}");
    assert_eq!(
        std::fs::read_to_string(dest.join("placeholder.txt")).unwrap(),
        "placeholder\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("sub/x.txt")).unwrap(),
        "x\n"
    );
}

#[test]
fn a_wrong_password_fails_at_once_and_clearly() {
    let sshd = Sshd::start();
    let d = tempfile::tempdir().unwrap();
    let template = format!(
        r#"{{"builders": [{{"type": "null", "ssh_host": "{}", "ssh_port": {},
             "ssh_username": "{}", "ssh_password": "not-the-password", "ssh_timeout": "5m"}}],
           "provisioners": [{{"type": "shell", "inline": ["true"]}}]}}"#,
        sshd.host, sshd.port, sshd.user
    );
    std::fs::write(d.path().join("t.json"), template).unwrap();
    let start = Instant::now();
    let (code, text) = kiln(d.path(), &["build", "t.json"]);
    assert_eq!(code, Some(1), "{text}");
    // Not the 5 minutes of ssh_timeout: refused authentication is final.
    assert!(start.elapsed() < Duration::from_secs(120), "{text}");
    assert!(text.to_lowercase().contains("auth"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
}

/// The template's error-cleanup-provisioner runs over the build's SSH
/// connection when a provisioner fails (before the connection closes), and
/// the build still fails with the original error.
#[test]
fn error_cleanup_provisioner_runs_on_the_machine_after_a_failure() {
    let sshd = Sshd::start();
    let d = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = d.path().join("cleaned-by-remote");
    let template = format!(
        r#"{{
  "builders": [{{"type": "null", "ssh_host": "{host}", "ssh_port": "{port}",
                 "ssh_username": "{user}", "ssh_password": "{pw}"}}],
  "provisioners": [
    {{"type": "shell", "inline": ["echo OUT: about to fail", "exit 7"]}}
  ],
  "error-cleanup-provisioner": {{"type": "shell",
    "inline": ["echo OUT: cleaning as $(id -un)", "id -un > {marker}"]}}
}}"#,
        pw = sshd.password,
        host = sshd.host,
        port = sshd.port,
        user = sshd.user,
        marker = marker.display(),
    );
    std::fs::write(d.path().join("t.json"), template).unwrap();
    let (code, text) = kiln(d.path(), &["build", "t.json"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("Running the error-cleanup-provisioner (shell)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("OUT: cleaning as {}", sshd.user)),
        "{text}"
    );
    assert!(
        text.contains("exit status 7") || text.contains("status: 7"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        sshd.user,
        "the cleanup ran on the machine, as the SSH user"
    );
}
