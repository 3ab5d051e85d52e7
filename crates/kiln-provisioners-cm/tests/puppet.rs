//! `puppet-masterless` against a real sshd with Debian's Puppet 7
//! (`puppet apply` as root through `sudo -E`, on this host as the test
//! machine).
mod common;
use common::*;

fn puppet() -> Factory {
    kiln_provisioners_cm::puppet::factory
}

/// A manifest using a module (module_paths), facts from `facter`, and a
/// Hiera configuration; it changes files and prints facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_modules_facts_and_hiera() {
    if tool("puppet", "apt-get install puppet-agent").is_none() {
        return;
    }
    let e = env(Login::KeyFile).await;
    let local = local_dir();
    let remote = remote_dir();
    let staging = remote.path().join("staging");
    let l = local.path();
    let r = remote.path().display().to_string();
    write(
        l,
        "modules/greeter/manifests/init.pp",
        &format!("class greeter {{\n  file {{ '{r}/module.txt': content => \"from a module\\n\" }}\n}}\n"),
    );
    write(
        l,
        "hiera.yaml",
        "---\nversion: 5\nhierarchy:\n  - name: common\n    path: common.yaml\ndefaults:\n  datadir: data\n  data_hash: yaml_data\n",
    );
    write(
        l,
        "site.pp",
        &format!(
            "include greeter\nfile {{ '{r}/puppet.txt':\n  content => \"build=${{facts['packer_build_name']}} type=${{facts['packer_builder_type']}} role=${{facts['role']}} os=${{facts['os']['family']}}\\n\",\n}}\nnotify {{ \"OUT: hello from puppet as ${{facts['identity']['user']}}\": }}\n"
        ),
    );
    e.run(
        puppet(),
        &format!(
            r#"{{"manifest_file": {}, "module_paths": [{}], "hiera_config_path": {},
                "facter": {{"role": "web"}}, "staging_directory": {},
                "clean_staging_directory": true}}"#,
            js(&p(&l.join("site.pp"))),
            js(&p(&l.join("modules"))),
            js(&p(&l.join("hiera.yaml"))),
            js(&p(&staging)),
        ),
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", e.printed()));
    let out = e.printed();
    assert!(out.contains("==> t: Provisioning with Puppet..."), "{out}");
    assert!(
        out.contains(&format!(
            "Running Puppet: cd {0} && FACTER_packer_build_name='t' FACTER_packer_builder_type='null' FACTER_role='web' sudo -E puppet apply --detailed-exitcodes --modulepath='{0}/module-0' --hiera_config='{0}/hiera.yaml' {0}/manifests/site.pp",
            staging.display()
        )),
        "{out}"
    );
    assert!(
        out_lines(&out)
            .iter()
            .any(|l| l.starts_with("OUT: hello from puppet as root")),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(remote.path().join("puppet.txt")).unwrap(),
        "build=t type=null role=web os=Debian\n"
    );
    assert_eq!(
        std::fs::read_to_string(remote.path().join("module.txt")).unwrap(),
        "from a module\n"
    );
    assert!(!staging.exists());
}

/// Failures (Puppet's detailed exit codes 4 and 6, a compile error) fail
/// the provisioner with Puppet's status; `ignore_exit_codes` lets them
/// pass. A custom `execute_command` sees Packer's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_execute_command() {
    if tool("puppet", "apt-get install puppet-agent").is_none() {
        return;
    }
    let e = env(Login::KeyFile).await;
    let local = local_dir();
    let remote = remote_dir();
    let r = remote.path().display().to_string();
    let failing = write(
        local.path(),
        "fail.pp",
        &format!("file {{ '{r}/ok.txt': content => \"ok\\n\" }}\nexec {{ '/bin/false': }}\n"),
    );
    let staging = js(&p(&remote.path().join("staging")));
    let err = e
        .run(
            puppet(),
            &format!(
                r#"{{"manifest_file": {}, "staging_directory": {staging}}}"#,
                js(&p(&failing))
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err, "Puppet exited with a non-zero exit status: 6");
    assert!(remote.path().join("ok.txt").is_file());
    e.run(
        puppet(),
        &format!(
            r#"{{"manifest_file": {}, "staging_directory": {staging}, "ignore_exit_codes": true}}"#,
            js(&p(&failing))
        ),
    )
    .await
    .unwrap();
    let broken = write(
        local.path(),
        "broken.pp",
        "fail('OUT: failing on purpose')\n",
    );
    let err = e
        .run(
            puppet(),
            &format!(
                r#"{{"manifest_file": {}, "staging_directory": {staging}}}"#,
                js(&p(&broken))
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err, "Puppet exited with a non-zero exit status: 1");
    let fine = write(local.path(), "fine.pp", "notify { 'fine': }\n");
    // Without sudo, in a staging directory the login user can create.
    let staging = js(&p(&remote.path().join("staging2")));
    e.run(
        puppet(),
        &format!(
            r#"{{"manifest_file": {}, "staging_directory": {staging}, "prevent_sudo": true,
                "extra_arguments": ["--noop", "--tags={{{{.ModulePathJoiner}}}}x"],
                "execute_command": "echo 'OUT: wd={{{{.WorkingDir}}}} sudo=[{{{{.Sudo}}}}] extra={{{{.ExtraArguments}}}} manifest={{{{.ManifestFile}}}} host={{{{.Host}}}}'"}}"#,
            js(&p(&fine))
        ),
    )
    .await
    .unwrap();
    let st = p(&remote.path().join("staging2"));
    assert!(
        out_lines(&e.printed()).contains(&format!(
            "OUT: wd={st} sudo=[] extra=--noop --tags=:x manifest={st}/manifests/fine.pp host=127.0.0.1"
        )),
        "{}",
        e.printed()
    );
}

#[test]
fn validate_time_errors() {
    let e = decode(
        puppet(),
        r#"{"manifest_file": "/nonexistent.pp", "module_paths": ["/nope"]}"#,
    )
    .err()
    .unwrap();
    assert!(
        e.contains("manifest_file is invalid: stat /nonexistent.pp: no such file or directory"),
        "{e}"
    );
    assert!(e.contains("module_path[0] is invalid: stat /nope"), "{e}");
    let e = decode(puppet(), r#"{}"#).err().unwrap();
    assert!(e.contains("A manifest_file must be specified."), "{e}");
    let d = local_dir();
    let m = write(d.path(), "x.pp", "");
    let e = decode(
        puppet(),
        &format!(
            r#"{{"manifest_file": {}, "guest_os_type": "windows", "elevated_user": "Administrator", "manifest_dri": "x"}}"#,
            js(&p(&m))
        ),
    )
    .err()
    .unwrap();
    assert!(
        e.contains("kiln does not support Windows guests yet"),
        "{e}"
    );
    assert!(
        e.contains("`elevated_user` runs Puppet as another user on Windows guests"),
        "{e}"
    );
    assert!(e.contains("unknown key `manifest_dri`"), "{e}");
    assert!(decode(
        puppet(),
        &format!(
            r#"{{"manifest_file": {}, "guest_os_type": "Unix"}}"#,
            js(&p(&m))
        )
    )
    .is_ok());
}
