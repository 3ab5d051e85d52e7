//! The `ansible` provisioner against a real sshd with the real
//! `ansible-playbook` (Debian's ansible-core): directly to the machine's
//! sshd, and through kiln's SSH proxy over the communicator (sftp, and the
//! legacy scp protocol).
mod common;
use common::*;

fn ansible() -> Factory {
    kiln_provisioners_cm::ansible::factory
}

/// A playbook that changes a file on the machine (as root, through sudo,
/// and as the login user) and prints facts.
fn playbook(dir: &std::path::Path, remote: &std::path::Path) -> String {
    let pb = format!(
        r#"- hosts: all
  gather_facts: true
  tasks:
    - name: write a file as the login user
      copy:
        dest: {remote}/as-user.txt
        content: "user={{{{ ansible_user_id }}}} build={{{{ packer_build_name }}}} type={{{{ packer_builder_type }}}}\n"
    - name: write a file as root
      become: true
      shell: "echo root=$(id -un) > {remote}/as-root.txt"
    - name: print facts
      debug:
        msg: "OUT: os={{{{ ansible_facts['os_family'] }}}} user={{{{ ansible_user_id }}}}"
    - name: read back
      slurp:
        src: {remote}/as-user.txt
      register: back
    - debug:
        msg: "OUT: back={{{{ back.content | b64decode | trim }}}}"
"#,
        remote = remote.display()
    );
    p(&write(dir, "site.yml", &pb))
}

fn check_files(remote: &std::path::Path, user: &str) {
    assert_eq!(
        std::fs::read_to_string(remote.join("as-user.txt")).unwrap(),
        format!("user={user} build=t type=null\n")
    );
    assert_eq!(
        std::fs::read_to_string(remote.join("as-root.txt")).unwrap(),
        "root=root\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_to_the_machine_by_default() {
    if tool("ansible-playbook", "apt-get install ansible-core").is_none() {
        return;
    }
    let e = env(Login::KeyFile).await;
    let local = local_dir();
    let remote = remote_dir();
    let pb = playbook(local.path(), remote.path());
    e.run(ansible(), &format!(r#"{{"playbook_file": {}}}"#, js(&pb)))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", e.printed()));
    let out = e.printed();
    assert!(out.contains("==> t: Provisioning with Ansible..."), "{out}");
    assert!(out.contains("Not using Proxy adapter"), "{out}");
    assert!(
        out.contains(&format!(
            "ansible_ssh_private_key_file={}",
            e.sshd.key_path.display()
        )),
        "{out}"
    );
    assert_eq!(
        out_lines(&out),
        [
            format!("OUT: os=Debian user={}", e.sshd.user),
            format!("OUT: back=user={} build=t type=null", e.sshd.user)
        ],
        "{out}"
    );
    check_files(remote.path(), &e.sshd.user);
}

/// The builder's temporary key (`SSHPrivateKey`) is written to a 0600
/// file for Ansible, removed afterwards, and never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_with_the_builders_generated_key() {
    if tool("ansible-playbook", "apt-get install ansible-core").is_none() {
        return;
    }
    let e = env(Login::Password).await;
    let key = std::fs::read_to_string(&e.sshd.key_path).unwrap();
    e.ctx.ui.add_secret(key.trim());
    e.ctx.set_generated("SSHPrivateKey", key.clone());
    let local = local_dir();
    let remote = remote_dir();
    let pb = playbook(local.path(), remote.path());
    e.run(ansible(), &format!(r#"{{"playbook_file": {}}}"#, js(&pb)))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", e.printed()));
    let out = e.printed();
    assert!(out.contains("Not using Proxy adapter"), "{out}");
    check_files(remote.path(), &e.sshd.user);
    let key_file = out
        .split("ansible_ssh_private_key_file=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(key_file.starts_with(&p(e.work.path())), "{key_file}");
    assert!(
        !std::path::Path::new(&key_file).exists(),
        "key file left behind"
    );
    for l in key.lines().filter(|l| l.len() > 20) {
        assert!(!out.contains(l), "the private key was printed:\n{out}");
    }
}

/// `use_proxy: true`: Ansible talks to kiln's SSH server, whose sessions
/// run on the machine over the build's connection; module files travel
/// over the proxied sftp subsystem (OpenSSH 9's scp speaks SFTP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_proxy_with_sftp() {
    if tool("ansible-playbook", "apt-get install ansible-core").is_none() {
        return;
    }
    let e = env(Login::KeyFile).await;
    let local = local_dir();
    let remote = remote_dir();
    let pb = playbook(local.path(), remote.path());
    e.run(
        ansible(),
        &format!(r#"{{"playbook_file": {}, "use_proxy": true}}"#, js(&pb)),
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", e.printed()));
    let out = e.printed();
    assert!(
        out.contains("Setting up proxy adapter for Ansible...."),
        "{out}"
    );
    assert!(out.contains("ansible_ssh_private_key_file="), "{out}");
    check_files(remote.path(), &e.sshd.user);
    assert_eq!(out_lines(&out).len(), 2, "{out}");
}

/// The proxy's own scp protocol (`scp -O`), and `use_sftp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_proxy_with_legacy_scp_and_with_use_sftp() {
    if tool("ansible-playbook", "apt-get install ansible-core").is_none() {
        return;
    }
    let e = env(Login::KeyFile).await;
    let local = local_dir();
    for (i, extra) in [
        r#""extra_arguments": ["--scp-extra-args", "'-O'"]"#,
        r#""use_sftp": true"#,
    ]
    .iter()
    .enumerate()
    {
        let remote = remote_dir();
        let pb = playbook(local.path(), remote.path());
        e.run(
            ansible(),
            &format!(
                r#"{{"playbook_file": {}, "use_proxy": true, {extra}}}"#,
                js(&pb)
            ),
        )
        .await
        .unwrap_or_else(|err| panic!("case {i}: {err}\n{}", e.printed()));
        check_files(remote.path(), &e.sshd.user);
    }
}

/// A communicator that logs in with a password: nothing to hand Ansible,
/// so kiln uses the proxy without being asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_login_goes_through_the_proxy() {
    if tool("ansible-playbook", "apt-get install ansible-core").is_none() {
        return;
    }
    let e = env(Login::Password).await;
    let local = local_dir();
    let remote = remote_dir();
    let pb = playbook(local.path(), remote.path());
    e.run(
        ansible(),
        &format!(
            r#"{{"playbook_file": {}, "groups": ["web", "db"], "empty_groups": ["none"],
                "extra_arguments": ["-e", "answer=42"]}}"#,
            js(&pb)
        ),
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", e.printed()));
    let out = e.printed();
    assert!(out.contains("Setting up proxy adapter"), "{out}");
    check_files(remote.path(), &e.sshd.user);
    assert!(!out.contains(&e.sshd.password), "{out}");
}

/// A failing task fails the provisioner with Ansible's exit status, after
/// its output was shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_fails_with_ansibles_exit_status() {
    if tool("ansible-playbook", "apt-get install ansible-core").is_none() {
        return;
    }
    let e = env(Login::KeyFile).await;
    let local = local_dir();
    let pb = write(
        local.path(),
        "fail.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: 'OUT: before'\n    - command: /bin/false\n    - debug:\n        msg: 'OUT: never'\n",
    );
    for proxy in [false, true] {
        let err = e
            .run(
                ansible(),
                &format!(
                    r#"{{"playbook_file": {}, "use_proxy": {proxy}}}"#,
                    js(&p(&pb))
                ),
            )
            .await
            .unwrap_err();
        assert!(
            err.contains("Error executing Ansible: Non-zero exit status: exit status 2"),
            "{err}"
        );
    }
    let out = e.printed();
    assert_eq!(out_lines(&out), ["OUT: before", "OUT: before"], "{out}");
    assert!(out.contains("/bin/false"), "{out}");
}

/// What validate says: a missing playbook, an unknown key (by name), a
/// directory where a file is wanted, a bad port, a missing Ansible.
#[test]
fn validate_time_errors() {
    let e = match decode(ansible(), r#"{"playbook_file": "/nonexistent/site.yml"}"#) {
        Err(e) => e,
        Ok(_) => panic!("accepted"),
    };
    assert!(
        e.contains("playbook_file: /nonexistent/site.yml is invalid: stat /nonexistent/site.yml: no such file or directory"),
        "{e}"
    );
    let e = decode(ansible(), r#"{"skip_version_check": true}"#)
        .err()
        .unwrap();
    assert!(e.contains("playbook_file must be specified."), "{e}");
    let d = local_dir();
    let pb = write(d.path(), "x.yml", "- hosts: all\n");
    let e = decode(
        ansible(),
        &format!(
            r#"{{"playbook_file": {}, "skip_version_check": true, "playbok": 1, "local_port": 70000,
                 "inventory_directory": {}}}"#,
            js(&p(&pb)),
            js(&p(&pb))
        ),
    )
    .err()
    .unwrap();
    assert!(e.contains("unknown key `playbok`"), "{e}");
    assert!(e.contains("local_port: 70000 must be a valid port"), "{e}");
    assert!(e.contains("must point to a directory"), "{e}");
    let e = decode(
        ansible(),
        &format!(
            r#"{{"playbook_file": {}, "command": "no-such-ansible-playbook"}}"#,
            js(&p(&pb))
        ),
    )
    .err()
    .unwrap();
    assert!(
        e.contains("Error running \"no-such-ansible-playbook --version\""),
        "{e}"
    );
    assert!(decode(
        ansible(),
        &format!(
            r#"{{"playbook_file": {}, "skip_version_check": true}}"#,
            js(&p(&pb))
        )
    )
    .is_ok());
}
