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

/// A TCP forwarder in front of the test sshd that can be taken down (every
/// forwarded connection cut, new ones closed at once and counted) and up
/// again: a machine whose network goes away and comes back.
pub struct Proxy {
    pub port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(sshd: &kiln_testkit::Sshd) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let target = format!("{}:{}", sshd.host, sshd.port);
        let (up2, refused2, conns2) = (up.clone(), refused.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    refused2.fetch_add(1, Ordering::SeqCst);
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().unwrap().push(h.abort_handle());
            }
        });
        Proxy {
            port,
            up,
            refused,
            conns,
            task,
        }
    }
    /// Cut every connection; close new ones at once.
    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
    pub fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    /// Connections closed while down.
    pub fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

/// Like [`env`], with the connection going through a [`Proxy`].
pub async fn env_behind_proxy() -> (Env, Proxy) {
    let sshd = kiln_testkit::Sshd::start();
    let proxy = Proxy::start(&sshd).await;
    let work = tempfile::tempdir().unwrap();
    let (out, mut ctx) = kiln_testkit::test_ctx("t", work.path());
    ctx.build_type = "null".into();
    let cfg = kiln_ssh::SshConfig {
        username: sshd.user.clone(),
        private_key_file: Some(sshd.key_path.clone()),
        timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let comm = kiln_ssh::connect(&cfg, "127.0.0.1", proxy.port, None, &ctx)
        .await
        .expect("connecting to the test sshd");
    (
        Env {
            sshd,
            out,
            ctx,
            comm,
            work,
        },
        proxy,
    )
}

/// Poll `cond` (every 20 ms) until it holds; panics with `what` if it
/// never does (a guard against hanging, not a speed check).
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..15_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} never happened");
}
