//! `salt-masterless` against a real sshd with Salt from PyPI (in a venv
//! of the tests' own, see `common::salt_venv`: Salt is not in Debian 12),
//! `skip_bootstrap: true`, `salt-call --local` as root through sudo on
//! this host as the test machine.
mod common;
use common::*;

fn salt() -> Factory {
    kiln_provisioners_cm::salt::factory
}

/// A state tree with a pillar: highstate changes files (with a grain and
/// a pillar value) and prints; `custom_state` runs one state; the state
/// tree is replaced on a second run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn highstate_pillar_and_custom_state() {
    let bin = salt_venv();
    let _one_at_a_time = salt_lock();
    let e = env(Login::KeyFile).await;
    let local = local_dir();
    let remote = remote_dir();
    let l = local.path();
    let r = remote.path().display().to_string();
    write(l, "states/top.sls", "base:\n  '*':\n    - hello\n");
    write(
        l,
        "states/hello.sls",
        &format!(
            "{r}/salt.txt:\n  file.managed:\n    - contents: \"os={{{{ grains['os_family'] }}}} role={{{{ pillar['role'] }}}}\"\nsay:\n  cmd.run:\n    - name: 'echo \"OUT: salt ran as $(id -un)\"'\n"
        ),
    );
    write(
        l,
        "states/other.sls",
        &format!("{r}/other.txt:\n  file.managed:\n    - contents: other\n"),
    );
    write(l, "states/.git/ignored", "not uploaded\n");
    write(l, "pillar/top.sls", "base:\n  '*':\n    - data\n");
    write(l, "pillar/data.sls", "role: web\n");
    let cfg = |custom: &str| {
        format!(
            r#"{{"local_state_tree": {}, "local_pillar_roots": {}, "remote_state_tree": {},
                "remote_pillar_roots": {}, "temp_config_dir": {}, "skip_bootstrap": true,
                "salt_bin_dir": {}, "log_level": "warning" {custom}}}"#,
            js(&p(&l.join("states"))),
            js(&p(&l.join("pillar"))),
            js(&format!("{r}/srv/salt")),
            js(&format!("{r}/srv/pillar")),
            js(&format!("{r}/tmp-salt")),
            js(&p(&bin)),
        )
    };
    e.run(salt(), &cfg(""))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", e.printed()));
    let out = e.printed();
    assert!(out.contains("==> t: Provisioning with Salt..."), "{out}");
    assert!(
        out.contains(&format!(
            "Running: salt-call --local  state.highstate --file-root={r}/srv/salt --pillar-root={r}/srv/pillar --retcode-passthrough -l warning"
        )),
        "{out}"
    );
    assert!(out.contains("OUT: salt ran as root"), "{out}");
    assert_eq!(
        std::fs::read_to_string(remote.path().join("salt.txt")).unwrap(),
        "os=Debian role=web\n"
    );
    assert!(remote.path().join("srv/salt/top.sls").is_file());
    assert!(!remote.path().join("srv/salt/.git").exists());
    assert!(remote.path().join("srv/pillar/data.sls").is_file());
    // Again, with one state: the trees are replaced, not nested.
    e.run(salt(), &cfg(r#", "custom_state": "other""#))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", e.printed()));
    assert_eq!(
        std::fs::read_to_string(remote.path().join("other.txt")).unwrap(),
        "other\n"
    );
    assert!(!remote.path().join("srv/salt/states").exists());
}

/// A failing state fails the provisioner with salt-call's exit status,
/// unless `no_exit_on_failure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_state_fails_the_build() {
    let bin = salt_venv();
    let _one_at_a_time = salt_lock();
    let e = env(Login::KeyFile).await;
    let local = local_dir();
    let remote = remote_dir();
    let l = local.path();
    let r = remote.path().display().to_string();
    write(l, "states/top.sls", "base:\n  '*':\n    - broken\n");
    write(
        l,
        "states/broken.sls",
        "fail:\n  cmd.run:\n    - name: \"echo OUT: failing; exit 3\"\n",
    );
    let cfg = |extra: &str| {
        format!(
            r#"{{"local_state_tree": {}, "remote_state_tree": {}, "remote_pillar_roots": {},
                "temp_config_dir": {}, "skip_bootstrap": true, "salt_bin_dir": {} {extra}}}"#,
            js(&p(&l.join("states"))),
            js(&format!("{r}/srv/salt")),
            js(&format!("{r}/srv/pillar")),
            js(&format!("{r}/tmp-salt")),
            js(&p(&bin)),
        )
    };
    let err = e.run(salt(), &cfg("")).await.unwrap_err();
    assert_eq!(err, "Error executing salt-call: Bad exit status: 2");
    e.run(salt(), &cfg(r#", "no_exit_on_failure": true"#))
        .await
        .unwrap();
    assert!(e.printed().contains("OUT: failing"), "{}", e.printed());
}

/// Without `skip_bootstrap`, the machine downloads Salt's bootstrap
/// script: on a machine with no internet the error says so and how to do
/// without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_without_internet_says_why_it_failed() {
    let e = env(Login::KeyFile).await;
    let local = local_dir();
    write(local.path(), "states/top.sls", "base: {}\n");
    let err = e
        .run(
            salt(),
            &format!(
                r#"{{"local_state_tree": {}, "temp_config_dir": "/tmp/kiln-salt-unused"}}"#,
                js(&p(&local.path().join("states")))
            ),
        )
        .await
        .unwrap_err();
    assert!(
        err.contains("fetching the bootstrap script from https://bootstrap.saltstack.com failed"),
        "{err}"
    );
    assert!(err.contains("access to the internet"), "{err}");
    assert!(err.contains("\"skip_bootstrap\": true"), "{err}");
    assert!(
        e.printed()
            .contains("Downloading saltstack bootstrap to /tmp/install_salt.sh"),
        "{}",
        e.printed()
    );
}

/// `formulas`: a git repository with a `//subdirectory` is cloned and the
/// formula copied into the state tree for the run, then removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formulas_from_a_git_repository() {
    if tool("git", "apt-get install git").is_none() {
        return;
    }
    let bin = salt_venv();
    let _one_at_a_time = salt_lock();
    let e = env(Login::KeyFile).await;
    let local = local_dir();
    let remote = remote_dir();
    let l = local.path();
    let r = remote.path().display().to_string();
    let repo = l.join("repo");
    write(
        &repo,
        "greet/init.sls",
        &format!("{r}/formula.txt:\n  file.managed:\n    - contents: from a formula\n"),
    );
    let git = |args: &[&str]| {
        let st = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(&repo)
            .status()
            .unwrap();
        assert!(st.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "formula"]);
    let bare = l.join("greet-formula.git");
    let st = std::process::Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&repo)
        .arg(&bare)
        .status()
        .unwrap();
    assert!(st.success());
    write(l, "states/top.sls", "base:\n  '*':\n    - greet\n");
    e.run(
        salt(),
        &format!(
            r#"{{"local_state_tree": {}, "remote_state_tree": {}, "remote_pillar_roots": {},
                "temp_config_dir": {}, "skip_bootstrap": true, "salt_bin_dir": {},
                "formulas": [{}]}}"#,
            js(&p(&l.join("states"))),
            js(&format!("{r}/srv/salt")),
            js(&format!("{r}/srv/pillar")),
            js(&format!("{r}/tmp-salt")),
            js(&p(&bin)),
            js(&format!("git::file://{}//greet?ref=main", bare.display())),
        ),
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", e.printed()));
    assert_eq!(
        std::fs::read_to_string(remote.path().join("formula.txt")).unwrap(),
        "from a formula\n"
    );
    assert!(
        !l.join("states/greet").exists(),
        "the downloaded formula was kept"
    );
}

#[test]
fn validate_time_errors() {
    let e = decode(salt(), r#"{}"#).err().unwrap();
    assert!(e.contains("local_state_tree cannot be empty"), "{e}");
    let e = decode(
        salt(),
        r#"{"local_state_tree": "/nonexistent", "grains_file": "/nope", "formulas": ["https://x.invalid/f"]}"#,
    )
    .err()
    .unwrap();
    assert!(
        e.contains("local_state_tree: path '/nonexistent' is invalid: stat /nonexistent: no such file or directory"),
        "{e}"
    );
    assert!(e.contains("grains_file: path '/nope' is invalid"), "{e}");
    assert!(e.contains("Invalid formula URL"), "{e}");
    let d = local_dir();
    let m = write(d.path(), "minion", "");
    let e = decode(
        salt(),
        &format!(
            r#"{{"local_state_tree": {}, "minion_config": {}, "remote_state_tree": "/srv/x",
                "guest_os_type": "windows", "skip_bootstrp": true}}"#,
            js(&p(d.path())),
            js(&p(&m))
        ),
    )
    .err()
    .unwrap();
    assert!(
        e.contains(
            "remote_state_tree and remote_pillar_roots only apply when minion_config is not used"
        ),
        "{e}"
    );
    assert!(
        e.contains("kiln does not support Windows guests yet"),
        "{e}"
    );
    assert!(e.contains("unknown key `skip_bootstrp`"), "{e}");
}
