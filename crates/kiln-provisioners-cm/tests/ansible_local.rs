//! `ansible-local` against a real sshd: Ansible (Debian's ansible-core) runs
//! "on the machine" (this host, as the test user) from the staging
//! directory kiln uploaded to.
mod common;
use common::*;

fn ansible_local() -> Factory {
    kiln_provisioners_cm::ansible_local::factory
}

/// A playbook using a role (role_paths), group variables, and a second
/// playbook (playbook_paths), changing files and printing facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playbook_roles_group_vars_and_clean_staging() {
    if tool("ansible-playbook", "apt-get install ansible-core").is_none() {
        return;
    }
    let e = env(Login::KeyFile).await;
    let local = local_dir();
    let remote = remote_dir();
    let staging = remote.path().join("staging");
    let l = local.path();
    write(
        l,
        "roles/greeter/tasks/main.yml",
        &format!(
            "- copy:\n    dest: {}/from-role.txt\n    content: \"{{{{ greeting }}}} from {{{{ ansible_facts['os_family'] }}}}\\n\"\n",
            remote.path().display()
        ),
    );
    write(l, "group_vars/all.yml", "greeting: hello\n");
    write(
        l,
        "site.yml",
        &format!(
            "- hosts: all\n  roles: [greeter]\n  tasks:\n    - debug:\n        msg: \"OUT: {{{{ greeting }}}} build={{{{ packer_build_name }}}} type={{{{ packer_builder_type }}}} http={{{{ packer_http_addr }}}}\"\n    - shell: \"echo conn=$(id -un) > {}/who.txt\"\n",
            remote.path().display()
        ),
    );
    e.run(
        ansible_local(),
        &format!(
            r#"{{"playbook_file": {}, "role_paths": [{}], "group_vars": {},
                "staging_directory": {}, "clean_staging_directory": true,
                "extra_arguments": ["-e", "extra=1"], "inventory_groups": ["web"]}}"#,
            js(&p(&l.join("site.yml"))),
            js(&p(&l.join("roles/greeter"))),
            js(&p(&l.join("group_vars"))),
            js(&p(&staging)),
        ),
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", e.printed()));
    let out = e.printed();
    assert!(out.contains("==> t: Provisioning with Ansible..."), "{out}");
    assert!(
        out.contains("    t: Uploading role directories..."),
        "{out}"
    );
    assert!(out.contains("-c local -i"), "{out}");
    assert_eq!(
        out_lines(&out),
        ["OUT: hello build=t type=null http=ERR_HTTP_ADDR_NOT_IMPLEMENTED_BY_BUILDER"],
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(remote.path().join("from-role.txt")).unwrap(),
        "hello from Debian\n"
    );
    assert_eq!(
        std::fs::read_to_string(remote.path().join("who.txt")).unwrap(),
        format!("conn={}\n", e.sshd.user)
    );
    assert!(!staging.exists(), "the staging directory was not removed");
}

/// `playbook_files` (each at its absolute path under the staging
/// directory, or relative to `playbook_dir`), the staging directory kept
/// when not asked to clean it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playbook_files_and_playbook_dir() {
    if tool("ansible-playbook", "apt-get install ansible-core").is_none() {
        return;
    }
    let e = env(Login::KeyFile).await;
    let local = local_dir();
    let remote = remote_dir();
    let staging = remote.path().join("staging");
    let l = local.path();
    let one = write(
        l,
        "pbdir/one.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: 'OUT: one'\n",
    );
    let two = write(
        l,
        "elsewhere/two.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: 'OUT: two'\n",
    );
    write(l, "pbdir/extra.txt", "uploaded with the directory\n");
    e.run(
        ansible_local(),
        &format!(
            r#"{{"playbook_files": [{}, {}], "playbook_dir": {}, "staging_directory": {}}}"#,
            js(&p(&one)),
            js(&p(&two)),
            js(&p(&l.join("pbdir"))),
            js(&p(&staging)),
        ),
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", e.printed()));
    let out = e.printed();
    assert_eq!(out_lines(&out), ["OUT: one", "OUT: two"], "{out}");
    assert!(staging.join("one.yml").is_file());
    assert!(staging.join("extra.txt").is_file());
    // Outside playbook_dir: under its absolute path.
    assert!(staging.join(p(&two).trim_start_matches('/')).is_file());
}

/// A failing task: the provisioner fails with ansible-playbook's exit
/// status; a missing ansible-playbook is said to be missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_name_the_exit_status() {
    if tool("ansible-playbook", "apt-get install ansible-core").is_none() {
        return;
    }
    let e = env(Login::KeyFile).await;
    let local = local_dir();
    let remote = remote_dir();
    let pb = write(
        local.path(),
        "fail.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: 'OUT: before'\n    - command: /bin/false\n",
    );
    let err = e
        .run(
            ansible_local(),
            &format!(
                r#"{{"playbook_file": {}, "staging_directory": {}}}"#,
                js(&p(&pb)),
                js(&p(&remote.path().join("s1")))
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err, "Error executing Ansible: Non-zero exit status: 2");
    let err = e
        .run(
            ansible_local(),
            &format!(
                r#"{{"playbook_file": {}, "staging_directory": {}, "command": "no-such-ansible-playbook"}}"#,
                js(&p(&pb)),
                js(&p(&remote.path().join("s2")))
            ),
        )
        .await
        .unwrap_err();
    assert!(
        err.contains("no-such-ansible-playbook could not be found"),
        "{err}"
    );
    assert_eq!(out_lines(&e.printed()), ["OUT: before"]);
}

#[test]
fn validate_time_errors() {
    let e = decode(ansible_local(), r#"{"playbook_file": "/nonexistent.yml"}"#)
        .err()
        .unwrap();
    assert!(
        e.contains("playbook_file: /nonexistent.yml is invalid: stat /nonexistent.yml: no such file or directory"),
        "{e}"
    );
    let e = decode(ansible_local(), r#"{}"#).err().unwrap();
    assert!(
        e.contains("Either playbook_file or playbook_files must be specified"),
        "{e}"
    );
    let d = local_dir();
    let pb = write(d.path(), "x.yml", "- hosts: all\n");
    let e = decode(
        ansible_local(),
        &format!(
            r#"{{"playbook_file": {0}, "playbook_files": [{0}], "role_paths": [{0}], "group_vars": "/nope", "inventry_file": "x"}}"#,
            js(&p(&pb))
        ),
    )
    .err()
    .unwrap();
    assert!(
        e.contains("Either playbook_file or playbook_files can be specified, not both"),
        "{e}"
    );
    assert!(e.contains("must point to a directory"), "{e}");
    assert!(e.contains("group_vars: /nope is invalid"), "{e}");
    assert!(e.contains("unknown key `inventry_file`"), "{e}");
}
