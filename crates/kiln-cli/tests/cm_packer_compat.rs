//! The configuration-management provisioners (`ansible`, `ansible-local`,
//! `salt-masterless`, `puppet-masterless`) through kiln and through
//! Debian's Packer 1.6.6 (the oracle), with the `null` builder over SSH to
//! a real sshd (`kiln_testkit::Sshd`; the machine is this host, reached as
//! the test user): the same template, run by each tool against a fresh
//! directory on the machine, must give the same exit status, print the
//! same `OUT:` lines and leave the same files.
//!
//! What Packer needs to work here is set in the templates for both tools:
//! Packer's default `sftp_command` (`/usr/lib/sftp-server`) is not where
//! Debian has it, and its proxy's default `user` (the user running the
//! tests, root) makes Ansible put its temporary files in `~root` on the
//! machine, which the login user cannot write. And Packer 1.6.6's proxy
//! offers only an `ssh-rsa` host key and generates an RSA client key,
//! which OpenSSH 8.8 and later (Debian 12 has 9.2) refuse unless told:
//! `ansible_ssh_extra_args` allows them again (kiln's proxy uses ed25519
//! keys and needs none of it). Packer's proxy also fails to pass the
//! SFTP protocol through (`failed to transfer file`), which is what
//! OpenSSH 9's `scp` speaks: the templates ask for the old scp protocol
//! (`--scp-extra-args '-O'`), which Packer's proxy (and kiln's) serves
//! itself. kiln's proxy passes SFTP through too (the crate's tests).
use kiln_testkit::Sshd;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn packer() -> String {
    let p = std::env::var("KILN_PACKER").unwrap_or_else(|_| "packer".into());
    let ok = Command::new(&p)
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("1.6.6"))
        .unwrap_or(false);
    assert!(
        ok,
        "Packer 1.6.6 is the oracle of this test: install it with `apt-get install packer` \
         (scripts/setup.sh does) or point KILN_PACKER at it"
    );
    p
}

struct Run {
    code: Option<i32>,
    /// `OUT:` lines (colours and Ansible's closing quote removed, the
    /// machine directory replaced by `<remote>`).
    printed: Vec<String>,
    /// Files left in the machine directory: path -> content.
    files: BTreeMap<String, String>,
    raw: String,
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' && it.peek() == Some(&'[') {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            out.insert(rel, std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    out
}

fn world_writable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
}

/// Run `tool build` on the template `make(remote)` in a fresh directory
/// holding `files` (relative path -> content, `{remote}` replaced).
fn run(tool: &str, files: &[(&str, &str)], make: &dyn Fn(&str) -> String, args: &[&str]) -> Run {
    let d = tempfile::tempdir().unwrap();
    world_writable(d.path());
    let remote = d.path().join("machine");
    std::fs::create_dir(&remote).unwrap();
    world_writable(&remote);
    let r = remote.display().to_string();
    let src = d.path().join("src");
    for (rel, text) in files {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text.replace("{remote}", &r)).unwrap();
    }
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(d.path())
        .status();
    std::fs::write(d.path().join("t.json"), make(&r)).unwrap();
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let mut c = if tool == "kiln" {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
    } else {
        Command::new(packer())
    };
    c.current_dir(d.path())
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CONFIG_DIR", home.join(".packer.d"))
        .env("NO_COLOR", "1")
        .env("HOME", &home)
        .arg("build")
        .arg("-color=false")
        .args(args)
        .arg("t.json");
    let o = c.output().unwrap();
    let raw = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let printed = strip_ansi(&raw)
        .lines()
        .filter_map(|l| {
            l.find("OUT:").map(|i| {
                l[i..]
                    .trim_end()
                    .trim_end_matches('"')
                    .replace(&r, "<remote>")
            })
        })
        .collect();
    let files = snapshot(&remote)
        .into_iter()
        .map(|(k, v)| (k, v.replace(&r, "<remote>")))
        .collect();
    Run {
        code: o.status.code(),
        printed,
        files,
        raw,
    }
}

/// Both tools; returns (packer, kiln).
fn compare(files: &[(&str, &str)], make: &dyn Fn(&str) -> String) -> (Run, Run) {
    let p = run("packer", files, make, &[]);
    let k = run("kiln", files, make, &[]);
    assert_eq!(
        k.code, p.code,
        "exit status differs\n--- packer:\n{}\n--- kiln:\n{}",
        p.raw, k.raw
    );
    assert_eq!(
        k.printed, p.printed,
        "printed lines differ\n--- packer:\n{}\n--- kiln:\n{}",
        p.raw, k.raw
    );
    assert_eq!(
        k.files, p.files,
        "files on the machine differ\n--- packer:\n{}\n--- kiln:\n{}",
        p.raw, k.raw
    );
    (p, k)
}

/// The null builder's keys for the test sshd.
fn null_builder(sshd: &Sshd) -> String {
    format!(
        r#"{{"type": "null", "ssh_host": "{}", "ssh_port": {}, "ssh_username": "{}",
            "ssh_private_key_file": "{}"}}"#,
        sshd.host,
        sshd.port,
        sshd.user,
        sshd.key_path.display()
    )
}

fn have(tool: &str, hint: &str) -> bool {
    kiln_testkit::require_tool(tool, hint).is_some()
}

/// What Packer's proxy needs from OpenSSH 9 (see the module docs).
const SSH_RSA: &str = r#""ansible_ssh_extra_args": ["-o IdentitiesOnly=yes -o HostKeyAlgorithms=+ssh-rsa -o PubkeyAcceptedAlgorithms=+ssh-rsa"]"#;

const PLAYBOOK: &str = r#"- hosts: all
  tasks:
    - copy:
        dest: "{remote}/as-user.txt"
        content: "user={{ ansible_user_id }} build={{ packer_build_name }} type={{ packer_builder_type }}\n"
    - become: true
      shell: "echo root=$(id -un) > {remote}/as-root.txt"
    - debug:
        msg: "OUT: os={{ ansible_facts['os_family'] }} user={{ ansible_user_id }} x={{ x | default('none') }}"
"#;

#[test]
fn ansible_on_the_build_host() {
    if !have("ansible-playbook", "apt-get install ansible-core") {
        return;
    }
    let sshd = Sshd::start();
    let b = null_builder(&sshd);
    let user = sshd.user.clone();
    let make = |extra: &'static str| {
        let b = b.clone();
        let user = user.clone();
        move |_r: &str| {
            format!(
                r#"{{"builders": [{b}],
                    "provisioners": [{{"type": "ansible", "playbook_file": "src/site.yml",
                      "user": "{user}", "sftp_command": "/usr/lib/openssh/sftp-server -e",
                      "extra_arguments": ["-e", "x=1", "--scp-extra-args", "'-O'"], {SSH_RSA} {extra}}}]}}"#
            )
        }
    };
    let files = [("site.yml", PLAYBOOK)];
    // kiln goes to the machine's sshd directly, Packer through its proxy.
    let (_, k) = compare(&files, &make(""));
    assert!(k.raw.contains("Not using Proxy adapter"), "{}", k.raw);
    assert_eq!(
        k.printed,
        [format!("OUT: os=Debian user={} x=1", sshd.user)]
    );
    assert_eq!(
        k.files["as-user.txt"],
        format!("user={} build=null type=null\n", sshd.user)
    );
    assert_eq!(k.files["as-root.txt"], "root=root\n");
    // Both through their proxies.
    let (_, k) = compare(&files, &make(r#", "use_proxy": true"#));
    assert!(k.raw.contains("Setting up proxy adapter"), "{}", k.raw);
}

#[test]
fn ansible_failing_task_and_bad_playbook_path() {
    if !have("ansible-playbook", "apt-get install ansible-core") {
        return;
    }
    let sshd = Sshd::start();
    let b = null_builder(&sshd);
    let user = sshd.user.clone();
    let files = [(
        "fail.yml",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: 'OUT: before'\n    - command: /bin/false\n    - debug:\n        msg: 'OUT: never'\n",
    )];
    let make = |_r: &str| {
        format!(
            r#"{{"builders": [{b}],
                "provisioners": [{{"type": "ansible", "playbook_file": "src/fail.yml", "user": "{user}",
                  "sftp_command": "/usr/lib/openssh/sftp-server -e", {SSH_RSA}}},
                  {{"type": "shell", "inline": ["echo OUT: never reached"]}}]}}"#
        )
    };
    let (_, k) = compare(&files, &make);
    assert_eq!(k.code, Some(1));
    assert_eq!(k.printed, ["OUT: before"]);
    assert!(
        k.raw.contains("Non-zero exit status: exit status 2"),
        "{}",
        k.raw
    );

    // A playbook that does not exist: both refuse at validate time, kiln
    // with the key's position.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("t.json"),
        format!(
            r#"{{"builders": [{b}],
  "provisioners": [{{"type": "ansible", "playbook_file": "missing.yml"}}]}}"#
        ),
    )
    .unwrap();
    let v = |tool: &str| {
        let mut c = if tool == "kiln" {
            Command::new(env!("CARGO_BIN_EXE_kiln"))
        } else {
            Command::new(packer())
        };
        let o = c
            .current_dir(d.path())
            .env("CHECKPOINT_DISABLE", "1")
            .args(["validate", "t.json"])
            .output()
            .unwrap();
        (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let (pc, pt) = v("packer");
    let (kc, kt) = v("kiln");
    assert_eq!((pc, kc), (Some(1), Some(1)), "{pt}\n{kt}");
    assert!(pt.contains("playbook_file: missing.yml is invalid"), "{pt}");
    assert!(
        kt.contains("t.json:3:57: playbook_file: missing.yml is invalid: stat missing.yml: no such file or directory"),
        "{kt}"
    );
}

#[test]
fn ansible_local_on_the_machine() {
    if !have("ansible-playbook", "apt-get install ansible-core") {
        return;
    }
    let sshd = Sshd::start();
    let b = null_builder(&sshd);
    let files = [
        (
            "site.yml",
            "- hosts: all\n  roles: [greeter]\n  tasks:\n    - debug:\n        msg: \"OUT: {{ greeting }} build={{ packer_build_name }} type={{ packer_builder_type }} http={{ packer_http_addr }}\"\n",
        ),
        (
            "roles/greeter/tasks/main.yml",
            "- copy:\n    dest: \"{remote}/from-role.txt\"\n    content: \"{{ greeting }} from {{ ansible_facts['os_family'] }}\\n\"\n",
        ),
        ("group_vars/all.yml", "greeting: hello\n"),
    ];
    let make = |r: &str| {
        format!(
            r#"{{"builders": [{b}],
                "provisioners": [{{"type": "ansible-local", "playbook_file": "src/site.yml",
                  "role_paths": ["src/roles/greeter"], "group_vars": "src/group_vars",
                  "staging_directory": "{r}/staging", "clean_staging_directory": true}}]}}"#
        )
    };
    let (_, k) = compare(&files, &make);
    assert_eq!(
        k.printed,
        ["OUT: hello build=null type=null http=ERR_HTTP_ADDR_NOT_IMPLEMENTED_BY_BUILDER"]
    );
    assert_eq!(k.files["from-role.txt"], "hello from Debian\n");
}

#[test]
fn puppet_masterless_on_the_machine() {
    if !have("puppet", "apt-get install puppet-agent") {
        return;
    }
    let sshd = Sshd::start();
    let b = null_builder(&sshd);
    let files = [
        (
            "site.pp",
            "include greeter\nfile { '{remote}/puppet.txt':\n  content => \"build=${facts['packer_build_name']} role=${facts['role']} os=${facts['os']['family']}\\n\",\n}\nnotify { \"OUT: puppet as ${facts['identity']['user']}\": }\n",
        ),
        (
            "modules/greeter/manifests/init.pp",
            "class greeter {\n  file { '{remote}/module.txt': content => \"from a module\\n\" }\n}\n",
        ),
    ];
    let make = |r: &str| {
        format!(
            r#"{{"builders": [{b}],
                "provisioners": [{{"type": "puppet-masterless", "manifest_file": "src/site.pp",
                  "module_paths": ["src/modules"], "facter": {{"role": "web"}},
                  "staging_directory": "{r}/staging", "clean_staging_directory": true}}]}}"#
        )
    };
    let (_, k) = compare(&files, &make);
    assert!(
        k.printed.iter().any(|l| l == "OUT: puppet as root"),
        "{:?}",
        k.printed
    );
    assert_eq!(k.files["puppet.txt"], "build=null role=web os=Debian\n");
    assert_eq!(k.files["module.txt"], "from a module\n");
    // A failing resource: Puppet's detailed exit code 6 fails both.
    let files = [(
        "fail.pp",
        "exec { '/bin/false': }\nnotify { 'OUT: still applied': }\n",
    )];
    let make = |r: &str| {
        format!(
            r#"{{"builders": [{b}],
                "provisioners": [{{"type": "puppet-masterless", "manifest_file": "src/fail.pp",
                  "staging_directory": "{r}/staging"}}]}}"#
        )
    };
    let (_, k) = compare(&files, &make);
    assert_eq!(k.code, Some(1));
    assert!(
        k.raw
            .contains("Puppet exited with a non-zero exit status: 6"),
        "{}",
        k.raw
    );
}

/// Salt from PyPI in the same cached venv as the crate's own tests.
fn salt_venv() -> PathBuf {
    const SALT_VERSION: &str = "3008.4";
    let root = PathBuf::from(
        std::env::var("KILN_CM_CACHE").unwrap_or_else(|_| "/var/cache/kiln-cm".into()),
    );
    let venv = root.join(format!("salt-{SALT_VERSION}"));
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("salt.lock"))
        .unwrap();
    lock.lock().unwrap();
    if !venv.join(".kiln-ok").exists() {
        let _ = std::fs::remove_dir_all(&venv);
        let st = Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(st.success(), "python3 -m venv (install python3-venv)");
        let st = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", &format!("salt=={SALT_VERSION}")])
            .status()
            .unwrap();
        assert!(st.success(), "pip install salt");
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&root)
            .status();
        std::fs::write(venv.join(".kiln-ok"), "").unwrap();
    }
    let _ = lock.unlock();
    venv.join("bin")
}

#[test]
fn salt_masterless_on_the_machine() {
    let bin = salt_venv();
    let root = PathBuf::from(
        std::env::var("KILN_CM_CACHE").unwrap_or_else(|_| "/var/cache/kiln-cm".into()),
    );
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("salt-run.lock"))
        .unwrap();
    lock.lock().unwrap();
    let sshd = Sshd::start();
    let b = null_builder(&sshd);
    let files = [
        ("states/top.sls", "base:\n  '*':\n    - hello\n"),
        (
            "states/hello.sls",
            "{remote}/salt.txt:\n  file.managed:\n    - contents: \"os={{ grains['os_family'] }} role={{ pillar['role'] }}\"\nsay:\n  cmd.run:\n    - name: 'echo \"OUT: salt ran as $(id -un)\"'\n",
        ),
        ("pillar/top.sls", "base:\n  '*':\n    - data\n"),
        ("pillar/data.sls", "role: web\n"),
    ];
    let bin = bin.display().to_string();
    let make = |r: &str| {
        // Packer moves the trees into place with `mv`: their parent must
        // exist.
        std::fs::create_dir_all(format!("{r}/srv")).unwrap();
        format!(
            r#"{{"builders": [{b}],
                "provisioners": [{{"type": "salt-masterless", "local_state_tree": "src/states",
                  "local_pillar_roots": "src/pillar", "remote_state_tree": "{r}/srv/salt",
                  "remote_pillar_roots": "{r}/srv/pillar", "temp_config_dir": "{r}/tmp-salt",
                  "skip_bootstrap": true, "salt_bin_dir": "{bin}", "log_level": "warning"}}]}}"#
        )
    };
    let (_, k) = compare(&files, &make);
    assert_eq!(k.code, Some(0), "{}", k.raw);
    assert_eq!(k.files["salt.txt"], "os=Debian role=web\n");
    assert!(
        k.files.contains_key("srv/salt/hello.sls"),
        "{:?}",
        k.files.keys()
    );
    // Packer uploads through the login user's home directory under fixed
    // names: leave nothing there for the next run.
    let _ = Command::new("rm")
        .args([
            "-rf",
            &format!("/home/{}/states", sshd.user),
            &format!("/home/{}/pillar", sshd.user),
        ])
        .status();
}

/// `chef-solo` and `chef-client` are refused at validate time by name,
/// with the reason, once (not once per key).
#[test]
fn chef_is_refused_with_the_reason() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("t.json"),
        r#"{"builders": [{"type": "null", "communicator": "none"}],
  "provisioners": [{"type": "chef-solo", "cookbook_paths": ["cookbooks"], "run_list": ["recipe[x]"]},
                   {"type": "chef-client", "server_url": "https://chef.invalid"}]}"#,
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(d.path())
        .args(["validate", "t.json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("the `chef-solo` provisioner is not supported by kiln: Chef is in neither Debian 12 nor PyPI"),
        "{text}"
    );
    assert!(
        text.contains("the `chef-client` provisioner is not supported"),
        "{text}"
    );
    assert!(!text.contains("unknown key"), "{text}");
    assert!(text.contains("2 errors found"), "{text}");
}
