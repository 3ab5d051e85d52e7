//! Shared by the tests: decode a provisioner from JSON the way the core
//! does, connect to a real test sshd (the "machine" is this host, reached
//! as the `kiln-test` user), run provisioners, find the tools.
#![allow(dead_code)]
use kiln_core::{BuildCtx, Communicator, Output, PrepareOpts, ProvisionCtx, Provisioner};
use kiln_template::{Context, Decoder, Diagnostics, Source};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub type Factory = fn(&mut Decoder<'_>, &PrepareOpts) -> Option<Box<dyn Provisioner>>;

pub fn interp() -> Context {
    let mut c = Context::new(std::env::current_dir().unwrap());
    c.build_name = Some("t".into());
    c.build_type = Some("null".into());
    c
}

/// Decode a provisioner from JSON text; `Err` has every diagnostic.
pub fn decode(f: Factory, json: &str) -> Result<Box<dyn Provisioner>, String> {
    let src = Arc::new(Source {
        path: "test.json".into(),
        text: json.to_string(),
    });
    let node = kiln_template::json::parse(src).map_err(|d| d.to_string())?;
    let ctx = interp();
    let mut diags = Diagnostics::default();
    let p = {
        let mut d = Decoder::new(&node, &ctx, &mut diags);
        d.ignore(&["type"]);
        let p = f(&mut d, &PrepareOpts::default());
        d.finish();
        p
    };
    if !diags.is_empty() {
        return Err(diags.to_string());
    }
    p.ok_or_else(|| "factory returned None without diagnostics".to_string())
}

/// How the test logs in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// With the test user's key file (`ssh_private_key_file`).
    KeyFile,
    /// With a password only (nothing Ansible could use directly).
    Password,
}

/// A connected test environment.
pub struct Env {
    pub sshd: kiln_testkit::Sshd,
    pub out: Output,
    pub ctx: BuildCtx,
    pub comm: Arc<dyn Communicator>,
    pub work: tempfile::TempDir,
}

pub async fn env(login: Login) -> Env {
    let sshd = kiln_testkit::Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let (out, mut ctx) = kiln_testkit::test_ctx("t", work.path());
    ctx.build_type = "null".into();
    let mut cfg = kiln_ssh::SshConfig {
        username: sshd.user.clone(),
        timeout: Duration::from_secs(30),
        ..Default::default()
    };
    match login {
        Login::KeyFile => cfg.private_key_file = Some(sshd.key_path.clone()),
        Login::Password => cfg.password = Some(sshd.password.clone()),
    }
    // What the null builder records.
    ctx.set_generated("Host", &sshd.host);
    ctx.set_generated("Port", sshd.port.to_string());
    ctx.set_generated("User", &sshd.user);
    let comm = kiln_ssh::connect(&cfg, &sshd.host, sshd.port, None, &ctx)
        .await
        .expect("connecting to the test sshd");
    Env {
        sshd,
        out,
        ctx,
        comm,
        work,
    }
}

impl Env {
    pub async fn run(&self, f: Factory, json: &str) -> Result<(), String> {
        let p = decode(f, json)?;
        let pctx = ProvisionCtx {
            build: &self.ctx,
            interp: interp(),
        };
        p.provision(&pctx, Some(&self.comm))
            .await
            .map_err(|e| e.to_string())
    }
    pub fn printed(&self) -> String {
        self.out.captured()
    }
}

/// A directory the test user may write into (the "machine" is this host).
pub fn remote_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new()
        .prefix("kiln-remote-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// A local directory the test user can read (its files are uploaded from
/// here, and on this host the "machine" may read them too).
pub fn local_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new()
        .prefix("kiln-local-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Write a file (parents created).
pub fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

/// JSON string literal.
pub fn js(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

pub fn p(path: &Path) -> String {
    path.display().to_string()
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
pub fn strip_ansi(text: &str) -> String {
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

/// The lines printed from the marker `OUT:` on (colours removed, and the
/// closing quote of Ansible's `"msg": "..."`).
pub fn out_lines(printed: &str) -> Vec<String> {
    strip_ansi(printed)
        .lines()
        .filter_map(|l| {
            l.find("OUT:")
                .map(|i| l[i..].trim_end().trim_end_matches('"').to_string())
        })
        .collect()
}

/// A tool the test needs: under CI a missing one fails the test.
pub fn tool(name: &str, hint: &str) -> Option<PathBuf> {
    kiln_testkit::require_tool(name, hint)
}

/// Salt from PyPI in a venv of its own (Salt is not in Debian 12), made
/// once per machine under `KILN_CM_CACHE` (default `/var/cache/kiln-cm`)
/// and reused; readable by the test user. Returns its `bin` directory.
pub fn salt_venv() -> PathBuf {
    let root = PathBuf::from(
        std::env::var("KILN_CM_CACHE").unwrap_or_else(|_| "/var/cache/kiln-cm".into()),
    );
    let venv = root.join(format!("salt-{SALT_VERSION}"));
    let ok = venv.join(".kiln-ok");
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("salt.lock"))
        .unwrap();
    lock.lock().unwrap();
    if !ok.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let st = std::process::Command::new(python)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(st.success(), "python3 -m venv (install python3-venv)");
        let st = std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "-q", &format!("salt=={SALT_VERSION}")])
            .status()
            .unwrap();
        assert!(st.success(), "pip install salt=={SALT_VERSION}");
        // The test user reaches it through sudo, but let it read it too.
        let _ = std::process::Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&root)
            .status();
        std::fs::write(&ok, "").unwrap();
    }
    let _ = lock.unlock();
    venv.join("bin")
}

/// The Salt release the tests install.
pub const SALT_VERSION: &str = "3008.4";

/// `salt-call --local` runs one highstate at a time per machine (it
/// refuses a second one): the Salt tests on this host take turns. Held
/// until dropped.
pub fn salt_lock() -> std::fs::File {
    let root = PathBuf::from(
        std::env::var("KILN_CM_CACHE").unwrap_or_else(|_| "/var/cache/kiln-cm".into()),
    );
    std::fs::create_dir_all(&root).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("salt-run.lock"))
        .unwrap();
    f.lock().unwrap();
    f
}
