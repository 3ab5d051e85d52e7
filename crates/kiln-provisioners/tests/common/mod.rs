//! Shared by the provisioner tests: decode a provisioner from JSON the way
//! the core does, connect to a test sshd, run provisioners.
#![allow(dead_code)]
use kiln_core::{BuildCtx, Communicator, Output, PrepareOpts, ProvisionCtx, Provisioner};
use kiln_template::{Context, Decoder, Diagnostics, Source};
use std::path::Path;
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

pub fn shell() -> Factory {
    kiln_provisioners::shell::factory
}
pub fn file() -> Factory {
    kiln_provisioners::file::factory
}
pub fn shell_local() -> Factory {
    kiln_provisioners::shell_local::factory
}

/// A connected test environment.
pub struct Env {
    pub sshd: kiln_testkit::Sshd,
    pub out: Output,
    pub ctx: BuildCtx,
    pub comm: Arc<dyn Communicator>,
    pub work: tempfile::TempDir,
}

pub async fn env() -> Env {
    let sshd = kiln_testkit::Sshd::start();
    let work = tempfile::tempdir().unwrap();
    let (out, mut ctx) = kiln_testkit::test_ctx("t", work.path());
    ctx.build_type = "null".into();
    let cfg = kiln_ssh::SshConfig {
        username: sshd.user.clone(),
        private_key_file: Some(sshd.key_path.clone()),
        timeout: Duration::from_secs(30),
        ..Default::default()
    };
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

/// JSON string literal.
pub fn js(s: &str) -> String {
    serde_json_like(s)
}

fn serde_json_like(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

pub fn p(path: &Path) -> String {
    path.display().to_string()
}
