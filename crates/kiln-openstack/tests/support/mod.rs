//! Test support for the lab tests: the lab's location and credentials, a
//! connector that uses the system `ssh` client (a stand-in for kiln's SSH
//! communicator, as a `kiln_commonsteps::Connector`), hooks, a
//! fault-injecting HTTP proxy, and the leftover check.
#![allow(dead_code)]
use kiln_core::communicator::{
    CommError, Communicator, ExitStatus, FileMeta, OutputSink, TransferProgress,
};
use kiln_core::ui::{Mode, Output, OutputConfig};
use kiln_core::{async_trait, BuildCtx, BuildError, Hook};
use kiln_openstack::builder::{Connector, TempKeyPair};
use kiln_openstack::client::{auth, AccessKeys, Cloud, Session};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The lab's root (`KILN_OPENSTACK_LAB`); a lab test run without it fails.
pub fn lab() -> Option<PathBuf> {
    match std::env::var("KILN_OPENSTACK_LAB") {
        Ok(r) if !r.is_empty() => {
            let p = PathBuf::from(r);
            assert!(
                p.join("seedrc").is_file(),
                "KILN_OPENSTACK_LAB={} has no seedrc: run testlab/openstack/up.sh first",
                p.display()
            );
            Some(p)
        }
        _ => panic!(
            "KILN_OPENSTACK_LAB is not set: start the lab with testlab/openstack/with-lab.sh ROOT <command>"
        ),
    }
}

/// One lab test at a time: they assert on what the project holds.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `export K=V` lines of an rc file.
pub fn read_rc(path: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let l = line.trim().trim_start_matches("export ").trim();
        for part in l.split_whitespace() {
            if let Some((k, v)) = part.split_once('=') {
                m.insert(k.to_string(), v.trim_matches('"').to_string());
            }
        }
    }
    m
}

/// Put the seed's rc file into this process's environment (the way a
/// user's shell has it). All lab tests use the same values.
pub fn export_seedrc(root: &Path) {
    for (k, v) in read_rc(&root.join("seedrc")) {
        std::env::set_var(k, v);
    }
}

/// A session as the seed's user.
pub async fn seed_cloud(root: &Path) -> Cloud {
    let rc = read_rc(&root.join("seedrc"));
    let o = auth::resolve(&AccessKeys::default(), &|k| rc.get(k).cloned(), &|_| None).unwrap();
    Cloud::new(Session::connect(o).await.unwrap())
}

/// A session as the lab's admin (to do to servers what only an operator
/// can, as Nova's `os-resetState`).
pub async fn admin_cloud(root: &Path) -> Cloud {
    let rc = read_rc(&root.join("adminrc"));
    let o = auth::resolve(&AccessKeys::default(), &|k| rc.get(k).cloned(), &|_| None).unwrap();
    Cloud::new(Session::connect(o).await.unwrap())
}

/// A capturing UI and a build context.
pub fn ctx(dir: &Path) -> (Output, BuildCtx) {
    let out = Output::capturing(OutputConfig {
        mode: Mode::Human,
        color: false,
        timestamp: false,
    });
    let ui = out.build_ui("openstack");
    (out.clone(), BuildCtx::for_test(ui, dir.to_path_buf()))
}

// ---------------------------------------------------------------- SSH

/// Connects with the system `ssh` client as `user`, with the machine's
/// temporary key.
pub struct CliSsh {
    pub user: String,
    pub timeout: Duration,
    pub dir: PathBuf,
}

#[async_trait]
impl Connector for CliSsh {
    async fn connect(
        &self,
        ctx: &BuildCtx,
        host: &str,
        port: u16,
        key: Option<&TempKeyPair>,
    ) -> Result<Arc<dyn Communicator>, BuildError> {
        let keyfile = self.dir.join(format!("id-{}", uuid::Uuid::new_v4()));
        let k = key.ok_or_else(|| BuildError::msg("test connector needs a temporary key"))?;
        std::fs::write(&keyfile, &k.private_openssh).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keyfile, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = CliComm {
            user: self.user.clone(),
            host: host.to_string(),
            port,
            key: keyfile,
        };
        ctx.ui.say("Waiting for SSH to become available...");
        let start = Instant::now();
        loop {
            let o = c
                .ssh("true")
                .output()
                .await
                .map_err(|e| BuildError::new(e).context("running ssh"))?;
            if o.status.success() {
                ctx.ui.say("Connected to SSH!");
                return Ok(Arc::new(c));
            }
            if start.elapsed() > self.timeout {
                return Err(BuildError::msg(format!(
                    "Timeout waiting for SSH: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )));
            }
            ctx.sleep(Duration::from_millis(300)).await?;
        }
    }
}

pub struct CliComm {
    user: String,
    host: String,
    port: u16,
    key: PathBuf,
}

impl CliComm {
    fn ssh(&self, cmd: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ssh");
        c.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=3",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
        ])
        .arg(&self.key)
        .arg("-p")
        .arg(self.port.to_string())
        .arg(format!("{}@{}", self.user, self.host))
        .arg(cmd)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
        c
    }
}

#[async_trait]
impl Communicator for CliComm {
    async fn start(&self, command: &str, out: &dyn OutputSink) -> Result<ExitStatus, CommError> {
        let o = self
            .ssh(command)
            .output()
            .await
            .map_err(|e| CommError::Other(e.to_string()))?;
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            out.stdout_line(l);
        }
        for l in String::from_utf8_lossy(&o.stderr).lines() {
            out.stderr_line(l);
        }
        Ok(ExitStatus::Code(o.status.code().unwrap_or(-1)))
    }
    async fn upload(
        &self,
        dst: &str,
        src: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
        _meta: FileMeta,
        _p: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        let mut child = self
            .ssh(&format!("cat > '{dst}'"))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| CommError::Other(e.to_string()))?;
        let mut stdin = child.stdin.take().unwrap();
        tokio::io::copy(src, &mut stdin)
            .await
            .map_err(|e| CommError::Other(e.to_string()))?;
        drop(stdin);
        let st = child
            .wait()
            .await
            .map_err(|e| CommError::Other(e.to_string()))?;
        if st.success() {
            Ok(())
        } else {
            Err(CommError::Remote(format!("upload to {dst} failed")))
        }
    }
    async fn upload_dir(
        &self,
        _: &str,
        _: &Path,
        _: &[String],
        _: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        Err(CommError::Other("not in the test communicator".into()))
    }
    async fn download(
        &self,
        _: &str,
        _: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
        _: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        Err(CommError::Other("not in the test communicator".into()))
    }
    async fn download_dir(
        &self,
        _: &str,
        _: &Path,
        _: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        Err(CommError::Other("not in the test communicator".into()))
    }
    async fn reconnect(&self, _: Duration) -> Result<(), CommError> {
        Ok(())
    }
}

// ---------------------------------------------------------------- hooks

struct Lines(Mutex<Vec<String>>);
impl OutputSink for Lines {
    fn stdout_line(&self, l: &str) {
        self.0.lock().unwrap().push(l.to_string());
    }
    fn stderr_line(&self, l: &str) {
        self.0.lock().unwrap().push(l.to_string());
    }
}

/// Runs shell commands over the communicator, as the shell provisioner
/// would; fails on the first non-zero exit.
pub struct CommandsHook {
    pub commands: Vec<String>,
    pub output: Mutex<Vec<String>>,
}

impl CommandsHook {
    pub fn new(cmds: &[&str]) -> Self {
        CommandsHook {
            commands: cmds.iter().map(|s| s.to_string()).collect(),
            output: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Hook for CommandsHook {
    async fn provision(
        &self,
        ctx: &BuildCtx,
        comm: Option<Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        let comm = comm.ok_or_else(|| BuildError::msg("no communicator"))?;
        for c in &self.commands {
            ctx.ui.say(&format!("Provisioning with shell script: {c}"));
            let lines = Lines(Mutex::new(Vec::new()));
            let st = ctx
                .cancellable(async { Ok(comm.start(c, &lines).await?) })
                .await?;
            let got = lines.0.into_inner().unwrap();
            for l in &got {
                ctx.ui.message(l);
            }
            self.output.lock().unwrap().extend(got);
            if st != ExitStatus::Code(0) {
                return Err(BuildError::msg(format!(
                    "Script exited with non-zero exit status: {st:?}"
                )));
            }
        }
        Ok(())
    }
}

/// Signals when provisioning starts, then waits until cancelled.
pub struct BlockingHook {
    pub started: tokio::sync::Notify,
}

#[async_trait]
impl Hook for BlockingHook {
    async fn provision(
        &self,
        ctx: &BuildCtx,
        _comm: Option<Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        self.started.notify_one();
        ctx.cancel.cancelled().await;
        Err(BuildError::Cancelled)
    }
}

// ---------------------------------------------------------------- leftovers

/// What the seed's project holds: servers, floating IPs, key pairs (but
/// `testkey`), and images it owns.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Holdings {
    pub servers: Vec<String>,
    pub floating_ips: Vec<String>,
    pub keypairs: Vec<String>,
    pub images: Vec<String>,
}

pub async fn holdings(cloud: &Cloud) -> Holdings {
    let project = cloud.session.project_id().await.unwrap().unwrap();
    let mut images: Vec<String> = cloud
        .list_images(&[("owner".into(), project)])
        .await
        .unwrap()
        .into_iter()
        .map(|i| format!("{} {} {}", i.id, i.name, i.status))
        .collect();
    images.sort();
    Holdings {
        servers: cloud
            .list_servers()
            .await
            .unwrap()
            .into_iter()
            .map(|s| format!("{} {}", s.id, s.status))
            .collect(),
        floating_ips: cloud
            .list_floating_ips()
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.address)
            .collect(),
        keypairs: cloud
            .keypair_names()
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k != "testkey")
            .collect(),
        images,
    }
}

/// Remove what a previous (crashed) run left, so each test starts clean.
pub async fn sweep(cloud: &Cloud) {
    let h = holdings(cloud).await;
    for s in &h.servers {
        let id = s.split(' ').next().unwrap();
        let _ = cloud.delete_server(id, true).await;
    }
    for k in &h.keypairs {
        let _ = cloud.delete_keypair(k).await;
    }
    for f in cloud.list_floating_ips().await.unwrap() {
        let _ = cloud.delete_floating_ip(&f.id).await;
    }
    for i in &h.images {
        let _ = cloud.delete_image(i.split(' ').next().unwrap()).await;
    }
    for _ in 0..100 {
        if cloud.list_servers().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------- fault proxy

/// What the proxy does with a request that matches a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer 500 without forwarding.
    Status500,
    /// Forward it (the cloud does the work) but never answer: the client
    /// times out not knowing the outcome.
    ForwardAndHang,
    /// Forward it, then hold the cloud's answer until
    /// [`FaultProxy::release`] (a slow answer, as long as the test wants).
    Hold,
    /// Never answer, never forward.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    /// Substring of the request path.
    pub path: String,
    pub fault: Fault,
    /// Matching requests to let through first.
    pub skip: usize,
    /// How many to fault (None: all); an exhausted rule lets the next
    /// matching rule decide.
    pub times: Option<usize>,
    /// Only once a request with this method and path substring has been
    /// seen (e.g. the waits after the stop action).
    pub after: Option<(&'static str, String)>,
    pub seen: usize,
    pub faulted: usize,
    /// Faulted requests the cloud has answered (ForwardAndHang, Hold).
    pub forwarded: usize,
}

impl Rule {
    pub fn new(method: &'static str, path: &str, fault: Fault) -> Rule {
        Rule {
            method,
            path: path.to_string(),
            fault,
            skip: 0,
            times: None,
            after: None,
            seen: 0,
            faulted: 0,
            forwarded: 0,
        }
    }
    pub fn once(self) -> Rule {
        self.times(1)
    }
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }
    pub fn after(mut self, method: &'static str, path: &str) -> Rule {
        self.after = Some((method, path.to_string()));
        self
    }
}

/// An HTTP proxy in front of the lab's APIs. Keystone's answers are
/// rewritten so the service catalog points at the proxy's ports. It logs
/// every request, and the body of every small non-GET request (what kiln
/// sent, for the tests to check).
pub struct FaultProxy {
    pub keystone_url: String,
    pub rules: Arc<Mutex<Vec<Rule>>>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// `(method :port/path, body)` of the requests with a small body.
    pub bodies: Arc<Mutex<Vec<(String, String)>>>,
    release: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Clone)]
struct Shared {
    rules: Arc<Mutex<Vec<Rule>>>,
    log: Arc<Mutex<Vec<String>>>,
    bodies: Arc<Mutex<Vec<(String, String)>>>,
    map: Arc<Vec<(u16, u16)>>,
    keystone: u16,
    release: tokio::sync::watch::Receiver<bool>,
    hung: Arc<Mutex<Vec<TcpStream>>>,
}

impl FaultProxy {
    /// In front of the lab's Keystone (5000).
    pub async fn start(rules: Vec<Rule>) -> FaultProxy {
        FaultProxy::start_with(5000, rules).await
    }
    /// In front of the Keystone on `keystone_port` (the lab also runs one
    /// with short-lived tokens).
    pub async fn start_with(keystone_port: u16, rules: Vec<Rule>) -> FaultProxy {
        let rules = Arc::new(Mutex::new(rules));
        let log = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (release, release_rx) = tokio::sync::watch::channel(false);
        let upstreams = [keystone_port, 8774, 9292, 9696, 8778];
        let mut listeners = Vec::new();
        let mut map = Vec::new();
        for up in upstreams {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            map.push((up, l.local_addr().unwrap().port()));
            listeners.push((up, l));
        }
        let shared = Shared {
            rules: rules.clone(),
            log: log.clone(),
            bodies: bodies.clone(),
            map: Arc::new(map),
            keystone: keystone_port,
            release: release_rx,
            hung: Arc::new(Mutex::new(Vec::new())),
        };
        let mut tasks = Vec::new();
        let mut keystone_url = String::new();
        for (up, l) in listeners {
            if up == keystone_port {
                keystone_url = format!("http://127.0.0.1:{}/v3", l.local_addr().unwrap().port());
            }
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((c, _)) = l.accept().await else { return };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let _ = serve(c, up, shared).await;
                    });
                }
            }));
        }
        FaultProxy {
            keystone_url,
            rules,
            log,
            bodies,
            release,
            tasks,
        }
    }
    pub fn faulted(&self) -> usize {
        self.rules.lock().unwrap().iter().map(|r| r.faulted).sum()
    }
    /// Faulted requests the cloud has already carried out.
    pub fn forwarded(&self) -> usize {
        self.rules.lock().unwrap().iter().map(|r| r.forwarded).sum()
    }
    /// Let held answers ([`Fault::Hold`]) through.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }
    /// Wait (polling) until `n` faulted requests were carried out.
    pub async fn wait_forwarded(&self, n: usize) {
        while self.forwarded() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    /// Requests seen, as `METHOD :port/path`, that contain `part`.
    pub fn requests(&self, part: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(part))
            .cloned()
            .collect()
    }
    /// The JSON bodies of the requests whose line contains `part`.
    pub fn bodies(&self, part: &str) -> Vec<serde_json::Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| l.contains(part))
            .filter_map(|(_, b)| serde_json::from_str(b).ok())
            .collect()
    }
    /// How many token requests reached Keystone.
    pub fn token_requests(&self) -> usize {
        self.requests("/auth/tokens")
            .iter()
            .filter(|l| l.starts_with("POST "))
            .count()
    }
}

async fn read_head(c: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = c.read(&mut b).await?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&b[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(buf);
        }
    }
}

fn content_length(head: &str) -> Option<usize> {
    head.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-length:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
}

/// Which fault (and which rule's index) applies to a request.
fn pick_fault(sh: &Shared, method: &str, path: &str) -> Option<(usize, Fault)> {
    let log = sh.log.lock().unwrap().clone();
    let mut rs = sh.rules.lock().unwrap();
    for (i, r) in rs.iter_mut().enumerate() {
        if r.method != method || !path.contains(&r.path) {
            continue;
        }
        if let Some((m, p)) = &r.after {
            let seen = log
                .iter()
                .any(|l| l.starts_with(&format!("{m} ")) && l.contains(p.as_str()));
            if !seen {
                continue;
            }
        }
        if r.times.is_some_and(|t| r.faulted >= t) {
            continue;
        }
        r.seen += 1;
        if r.seen <= r.skip {
            return None;
        }
        r.faulted += 1;
        return Some((i, r.fault));
    }
    None
}

async fn serve(mut c: TcpStream, up: u16, mut sh: Shared) -> std::io::Result<()> {
    let first = read_head(&mut c).await?;
    if first.is_empty() {
        return Ok(());
    }
    let end = first.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&first[..end]).to_string();
    let mut line = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (
        line.next().unwrap_or("").to_string(),
        line.next().unwrap_or("").to_string(),
    );
    let fault = pick_fault(&sh, &method, &path);
    let what = format!("{method} :{up}{path}");
    sh.log.lock().unwrap().push(what.clone());
    match fault.map(|f| f.1) {
        Some(Fault::Status500) => {
            let body =
                r#"{"computeFault": {"code": 500, "message": "injected by the test proxy"}}"#;
            let resp = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            c.write_all(resp.as_bytes()).await?;
            return Ok(());
        }
        Some(Fault::Hang) => {
            sh.hung.lock().unwrap().push(c);
            return Ok(());
        }
        _ => {}
    }
    let len = content_length(&head);
    let small = len.is_some_and(|l| l <= 1 << 20) && !path.ends_with("/file");
    let buffered = up == sh.keystone || fault.is_some() || (method != "GET" && small);
    let mut u = TcpStream::connect(("127.0.0.1", up)).await?;
    if !buffered {
        u.write_all(&first).await?;
        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
        return Ok(());
    }
    let mut req = first.clone();
    let want = end + len.unwrap_or(0);
    let mut b = [0u8; 8192];
    while req.len() < want {
        let n = c.read(&mut b).await?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&b[..n]);
    }
    if method != "GET" && up != sh.keystone {
        let body = String::from_utf8_lossy(&req[end..]).to_string();
        sh.bodies.lock().unwrap().push((what, body));
    }
    u.write_all(&req).await?;
    if up != sh.keystone && fault.is_none() {
        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
        return Ok(());
    }
    let mut resp = Vec::new();
    u.read_to_end(&mut resp).await?;
    if let Some((i, f)) = fault {
        sh.rules.lock().unwrap()[i].forwarded += 1;
        match f {
            Fault::ForwardAndHang => {
                sh.hung.lock().unwrap().push(c);
                return Ok(());
            }
            Fault::Hold => {
                let _ = sh.release.wait_for(|r| *r).await;
            }
            _ => {}
        }
    }
    if up != sh.keystone {
        c.write_all(&resp).await?;
        return Ok(());
    }
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(resp.len());
    let mut body = String::from_utf8_lossy(&resp[split..]).to_string();
    for (from, to) in sh.map.iter() {
        body = body.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"));
    }
    let rhead = String::from_utf8_lossy(&resp[..split]).to_string();
    let mut out = String::new();
    for l in rhead.split("\r\n") {
        if l.to_ascii_lowercase().starts_with("content-length:") {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        } else if !l.is_empty() {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    c.write_all(out.as_bytes()).await?;
    c.write_all(body.as_bytes()).await?;
    Ok(())
}

// ---------------------------------------------------------------- env

/// Sets an environment variable for the guard's life (removed even when
/// the test panics).
pub struct EnvVar(&'static str);

impl EnvVar {
    pub fn set(name: &'static str, value: &str) -> EnvVar {
        std::env::set_var(name, value);
        EnvVar(name)
    }
}

impl Drop for EnvVar {
    fn drop(&mut self) {
        std::env::remove_var(self.0);
    }
}

// ---------------------------------------------------------------- timing

/// A UI that records when each line was said (for the benchmark's
/// breakdown).
pub struct TimedUi {
    pub inner: Arc<dyn kiln_core::Ui>,
    pub start: Instant,
    pub lines: Arc<Mutex<Vec<(f64, String)>>>,
}

impl TimedUi {
    fn rec(&self, m: &str) {
        self.lines
            .lock()
            .unwrap()
            .push((self.start.elapsed().as_secs_f64(), m.to_string()));
    }
}

impl kiln_core::Ui for TimedUi {
    fn say(&self, msg: &str) {
        self.rec(msg);
        self.inner.say(msg)
    }
    fn message(&self, msg: &str) {
        self.rec(msg);
        self.inner.message(msg)
    }
    fn error(&self, msg: &str) {
        self.rec(msg);
        self.inner.error(msg)
    }
    fn machine(&self, kind: &str, data: &[&str]) {
        self.inner.machine(kind, data)
    }
    fn progress(&self, label: &str) -> Box<dyn TransferProgress> {
        self.inner.progress(label)
    }
    fn add_secret(&self, secret: &str) {
        self.inner.add_secret(secret)
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn child(&self, label: &str) -> Arc<dyn kiln_core::Ui> {
        self.inner.child(label)
    }
}
