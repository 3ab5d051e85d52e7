//! Helpers for kiln's tests.
//!
//! - [`Sshd`]: a real OpenSSH `sshd` (Debian's `/usr/sbin/sshd`) on
//!   `127.0.0.1` and a free port, with a temporary host key, a temporary
//!   user key and a dedicated unix user (`kiln-test`) that may log in with
//!   either the key or a password. Everything it started (the listener and
//!   every process of its sessions, found by an environment marker) is
//!   killed on drop, also when the test panics.
//!
//! # The `kiln-test` user is not a way into the host
//!
//! The user has password-less sudo (the seed's scripts run `sudo bash`), so
//! a password anyone knows would be a root login wherever the system's own
//! sshd accepts passwords. So its password is random (32 characters from
//! `/dev/urandom`), made when the first [`Sshd`] of any test process
//! starts, kept only in a root-only file under `/run/kiln-testkit` while
//! test servers run (every running [`Sshd`], in any process, is registered
//! there), and when the last one stops the password is locked
//! (`usermod -L`) and the sudo rule removed. A test process killed outright
//! leaves its registration behind; the next start or stop notices that the
//! process is gone.
//! - [`ProcessGuard`]: a child process killed (with its process group) on
//!   drop.
//! - [`test_ctx`]: a [`kiln_core::BuildCtx`] with a capturing output, for
//!   calling builders and provisioners directly; [`test_ui`]: the output
//!   and UI alone.
//! - [`require_tool`]: fail (under CI) or say why a test cannot run.
//! - [`FakeComm`]: a communicator with no machine behind it, recording
//!   the commands it is given and answering them as a test says.
//!
//! These helpers panic with a clear message on any setup failure: they are
//! for tests only.
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod fake_comm;

pub use fake_comm::FakeComm;
pub use tempfile::{tempdir, TempDir};

/// The unix user sessions of [`Sshd`] log in as.
pub const TEST_USER: &str = "kiln-test";

/// True when running under CI (`CI=true`): tests must then fail rather
/// than skip when something they need is missing.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `Some(path)` of an executable found on `PATH` (or given as a path):
/// kiln's one lookup, [`kiln_core::local::which`].
pub use kiln_core::local::which;

/// Find a tool a test needs. Under CI a missing tool is a failure (panic);
/// elsewhere it returns `None` after printing why, so the caller can
/// return early.
pub fn require_tool(name: &str, install_hint: &str) -> Option<PathBuf> {
    match which(name) {
        Some(p) => Some(p),
        None if is_ci() => panic!("`{name}` is required by this test under CI: {install_hint}"),
        None => {
            eprintln!("SKIPPED: `{name}` not found ({install_hint})");
            None
        }
    }
}

/// A child process that is killed on drop (SIGKILL to its process group
/// when it leads one, then to itself), and reaped.
pub struct ProcessGuard {
    child: Option<Child>,
    group: bool,
}

impl ProcessGuard {
    /// Guard a child. If `group` is true the child is assumed to have been
    /// started as a process group leader (`process_group(0)`), and the whole
    /// group is killed.
    pub fn new(child: Child, group: bool) -> Self {
        ProcessGuard {
            child: Some(child),
            group,
        }
    }
    /// Spawn `cmd` in its own process group, guarded.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        Ok(ProcessGuard::new(cmd.spawn()?, true))
    }
    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("process already reaped")
    }
    /// Has it exited? (Non-blocking.)
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
    /// Kill and reap now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.group {
                kill_pid(-(c.id() as i32), libc::SIGKILL);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kill_pid(pid: i32, sig: i32) {
    // SAFETY-free: libc::kill is safe to call with any pid/signal; the
    // workspace denies `unsafe`, so go through the `kill` binary instead.
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A [`kiln_core::BuildCtx`] for tests, with a capturing output. The
/// returned [`kiln_core::Output`] gives what was printed
/// (`out.captured()`).
pub fn test_ctx(name: &str, work_dir: &Path) -> (kiln_core::Output, kiln_core::BuildCtx) {
    let (out, ui) = test_ui(name);
    let ctx = kiln_core::BuildCtx::for_test(ui, work_dir.to_path_buf());
    (out, ctx)
}

/// A capturing output (plain human text: no colour, no timestamps) and the
/// UI of build `name` writing to it. `out.captured()` gives what was
/// printed.
pub fn test_ui(name: &str) -> (kiln_core::Output, std::sync::Arc<dyn kiln_core::Ui>) {
    let out = kiln_core::Output::capturing(kiln_core::ui::OutputConfig {
        mode: kiln_core::ui::Mode::Human,
        color: false,
        timestamp: false,
    });
    let ui = out.build_ui(name);
    (out, ui)
}

/// A free TCP port on 127.0.0.1 (bound then released; a small race that
/// callers tolerate by retrying).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Wait until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

static USER_SETUP: Mutex<bool> = Mutex::new(false);

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).is_ok_and(|s| s.trim() == "0")
}

/// Create the `kiln-test` user (once per process; idempotent across
/// processes) with a home.
fn ensure_test_user() {
    let mut done = USER_SETUP.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    if !is_root() {
        panic!("kiln_testkit::Sshd needs root (to create the `{TEST_USER}` user and run sshd with privilege separation)");
    }
    // useradd may race with another test binary doing the same: retry.
    for attempt in 0.. {
        if run(Command::new("id").arg(TEST_USER)).is_ok() {
            break;
        }
        match run(Command::new("useradd").args(["-m", "-s", "/bin/bash", TEST_USER])) {
            Ok(_) => break,
            Err(e) if attempt < 20 => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("creating user {TEST_USER}: {e}"),
        }
    }
    *done = true;
}

/// Where the running servers are registered and the password is kept.
const STATE_DIR: &str = "/run/kiln-testkit";
const SUDOERS: &str = "/etc/sudoers.d/kiln-test";

/// A registration of one running [`Sshd`] (see the crate docs).
struct Registration {
    file: PathBuf,
}

/// The start time of a process (field 22 of `/proc/<pid>/stat`), which
/// tells a live process from a later one with the same pid.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// Run `f` holding the state directory's lock (across processes).
fn with_state_lock<T>(f: impl FnOnce(&Path) -> T) -> T {
    let dir = Path::new(STATE_DIR);
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {STATE_DIR}: {e}"));
    chmod(dir, 0o700);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .unwrap_or_else(|e| panic!("opening {STATE_DIR}/lock: {e}"));
    lock.lock()
        .unwrap_or_else(|e| panic!("locking {STATE_DIR}/lock: {e}"));
    let r = f(dir);
    let _ = lock.unlock();
    r
}

/// The live registrations (stale ones, of processes that are gone, removed).
fn live_registrations(dir: &Path) -> Vec<PathBuf> {
    let mut live = Vec::new();
    for e in std::fs::read_dir(dir.join("servers"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path();
        let content = std::fs::read_to_string(&p).unwrap_or_default();
        let mut it = content.split_whitespace();
        let alive = match (it.next().and_then(|x| x.parse::<u32>().ok()), it.next()) {
            (Some(pid), Some(t)) => start_time(pid).as_deref() == Some(t),
            _ => false,
        };
        if alive {
            live.push(p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
    live
}

fn random_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn set_password(password: &str) {
    for attempt in 0.. {
        let mut c = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running chpasswd");
        {
            use std::io::Write;
            let mut stdin = c.stdin.take().expect("stdin");
            let _ = writeln!(stdin, "{TEST_USER}:{password}");
        }
        let out = c.wait_with_output().expect("chpasswd");
        if out.status.success() {
            // chpasswd leaves a locked password locked.
            let _ = run(Command::new("usermod").args(["-U", TEST_USER]));
            return;
        }
        if attempt > 20 {
            panic!(
                "setting the password of {TEST_USER}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

static REGISTRATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Registration {
    /// Register a starting server; returns the password to use (a fresh
    /// random one when no other server runs).
    fn new() -> (Registration, String) {
        with_state_lock(|dir| {
            let servers = dir.join("servers");
            std::fs::create_dir_all(&servers).expect("creating the registrations directory");
            let live = live_registrations(dir);
            let pw_file = dir.join("password");
            let existing = std::fs::read_to_string(&pw_file)
                .ok()
                .filter(|p| p.len() >= 32 && !live.is_empty());
            let password = match existing {
                Some(p) => p,
                None => {
                    let p = random_password();
                    {
                        use std::io::Write;
                        use std::os::unix::fs::OpenOptionsExt;
                        let mut f = std::fs::OpenOptions::new()
                            .create(true)
                            .truncate(true)
                            .write(true)
                            .mode(0o600)
                            .open(&pw_file)
                            .expect("writing the test password file");
                        f.write_all(p.as_bytes())
                            .expect("writing the test password file");
                    }
                    set_password(&p);
                    p
                }
            };
            if Path::new("/etc/sudoers.d").is_dir() {
                let line = format!("{TEST_USER} ALL=(ALL) NOPASSWD: ALL\n");
                if std::fs::read_to_string(SUDOERS).ok().as_deref() != Some(line.as_str()) {
                    std::fs::write(SUDOERS, line).expect("writing /etc/sudoers.d/kiln-test");
                    chmod(Path::new(SUDOERS), 0o440);
                }
            }
            let me = std::process::id();
            let n = REGISTRATIONS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let file = servers.join(format!("{me}.{n}"));
            std::fs::write(
                &file,
                format!("{me} {}", start_time(me).unwrap_or_default()),
            )
            .expect("registering the test sshd");
            (Registration { file }, password)
        })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        with_state_lock(|dir| {
            let _ = std::fs::remove_file(&self.file);
            if live_registrations(dir).is_empty() {
                // The last test server: nobody may log in with the password
                // any more, and the sudo rule goes.
                let _ = run(Command::new("usermod").args(["-L", TEST_USER]));
                let _ = std::fs::remove_file(dir.join("password"));
                let _ = std::fs::remove_file(SUDOERS);
            }
        })
    }
}

fn keygen(path: &Path, comment: &str) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path))
    .unwrap_or_else(|e| panic!("generating a key with ssh-keygen: {e}"));
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A real OpenSSH server for tests. See the crate docs.
pub struct Sshd {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The user's private key (OpenSSH format, no passphrase).
    pub key_path: PathBuf,
    /// The user's public key line.
    pub public_key: String,
    dir: TempDir,
    id: String,
    sshd: Option<ProcessGuard>,
    /// Extra `sshd_config` lines given at start.
    extra: Vec<String>,
    log: Arc<PathBuf>,
    /// Dropped last (after the server is stopped).
    _registration: Registration,
}

/// Is Debian's sshd installed? Panics (with how to install it) if not.
fn sshd_binary() -> PathBuf {
    let p = PathBuf::from("/usr/sbin/sshd");
    if p.is_file() {
        return p;
    }
    panic!(
        "/usr/sbin/sshd is missing: install Debian's OpenSSH server (`apt-get install -y openssh-server`); .ci/run installs it"
    );
}

impl Sshd {
    /// Start an sshd allowing key and password login for [`TEST_USER`].
    pub fn start() -> Sshd {
        Sshd::start_with(&[])
    }

    /// Start with extra `sshd_config` lines (e.g. `"PasswordAuthentication no"`;
    /// they come first, so they win over the defaults).
    pub fn start_with(extra: &[&str]) -> Sshd {
        sshd_binary();
        ensure_test_user();
        let (registration, password) = Registration::new();
        let dir = tempfile::Builder::new()
            .prefix("kiln-sshd-")
            .tempdir()
            .expect("creating a temporary directory for sshd");
        // sshd reads authorized_keys as the user: the path must be readable.
        chmod(dir.path(), 0o755);
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd");
        let id = format!(
            "{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        keygen(&dir.path().join("host_ed25519"), "kiln-test-host");
        let key_path = dir.path().join("user_ed25519");
        keygen(&key_path, "kiln-test-user");
        let public_key = std::fs::read_to_string(key_path.with_extension("pub"))
            .expect("reading the user public key")
            .trim()
            .to_string();
        std::fs::write(
            dir.path().join("authorized_keys"),
            format!("{public_key}\n"),
        )
        .expect("writing authorized_keys");
        chmod(&dir.path().join("authorized_keys"), 0o644);
        let log = Arc::new(dir.path().join("sshd.log"));
        let mut s = Sshd {
            host: "127.0.0.1".into(),
            port: 0,
            user: TEST_USER.into(),
            password,
            key_path,
            public_key,
            dir,
            id,
            sshd: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log,
            _registration: registration,
        };
        for attempt in 0..5 {
            s.port = free_port();
            match s.spawn() {
                Ok(()) => return s,
                Err(e) if attempt < 4 => eprintln!("sshd did not start ({e}); retrying"),
                Err(e) => panic!("starting sshd: {e}"),
            }
        }
        unreachable!()
    }

    /// The directory holding the keys and configuration (readable by the
    /// test user).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's host public key line.
    pub fn host_public_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_ed25519.pub"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&*self.log).unwrap_or_default()
    }

    fn config(&self) -> String {
        let d = self.dir.path();
        let mut c = String::new();
        for l in &self.extra {
            c.push_str(l);
            c.push('\n');
        }
        c.push_str(&format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {d}/host_ed25519\n\
             PidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin no\n\
             AllowUsers {user}\n\
             UsePAM no\n\
             StrictModes no\n\
             MaxStartups 200\n\
             MaxSessions 200\n\
             MaxAuthTries 10\n\
             LoginGraceTime 60\n\
             SetEnv KILN_SSHD_INSTANCE={id}\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\n\
             LogLevel VERBOSE\n",
            port = self.port,
            d = d.display(),
            user = self.user,
            id = self.id,
        ));
        c
    }

    fn spawn(&mut self) -> Result<(), String> {
        let cfg = self.dir.path().join("sshd_config");
        std::fs::write(&cfg, self.config()).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(sshd_binary());
        cmd.arg("-D")
            .arg("-f")
            .arg(&cfg)
            .arg("-E")
            .arg(&*self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut g = ProcessGuard::spawn(&mut cmd).map_err(|e| format!("spawning sshd: {e}"))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = g.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = g.child().stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("sshd exited ({st}): {err} {}", self.log()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("sshd did not listen on {addr}: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.sshd = Some(g);
        Ok(())
    }

    /// Kill every process of this server's sessions (drops every
    /// connection, like a crash of the machine's network).
    pub fn kill_sessions(&self) {
        let marker = format!("KILN_SSHD_INSTANCE={}", self.id);
        let listener = self.sshd.as_ref().map(|g| g.id() as i32);
        for _ in 0..3 {
            // Collect first, then kill: killing a parent first would orphan
            // its children out of reach (sudo drops the marker variable).
            let mut pids = pids_with_env(&marker);
            for p in pids.clone() {
                pids.extend(descendants(p));
            }
            if let Some(l) = listener {
                pids.extend(descendants(l));
            }
            pids.sort_unstable();
            pids.dedup();
            if pids.is_empty() {
                break;
            }
            let _ = Command::new("kill")
                .arg("-9")
                .arg("--")
                .args(pids.iter().map(|p| p.to_string()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Stop the server and its sessions (the machine "goes down"): the
    /// listener first, so no new connection can slip in while the sessions
    /// are being killed.
    pub fn stop(&mut self) {
        let sessions = self
            .sshd
            .as_ref()
            .map(|g| descendants(g.id() as i32))
            .unwrap_or_default();
        if let Some(mut g) = self.sshd.take() {
            g.kill();
        }
        if !sessions.is_empty() {
            let _ = Command::new("kill")
                .arg("-9")
                .arg("--")
                .args(sessions.iter().map(|p| p.to_string()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        self.kill_sessions();
    }

    /// Start the server again on the same port with the same keys.
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("restarting sshd on port {}: {last}", self.port);
    }

    /// Replace the host key (takes effect at the next [`Sshd::restart`]).
    pub fn regenerate_host_key(&self) {
        keygen(&self.dir.path().join("host_ed25519"), "kiln-test-host");
    }

    /// How many lines of sshd's log contain `needle` (e.g. `"Failed
    /// password for kiln-test"`, `"Accepted publickey for"`): what the
    /// server saw, for tests that count attempts instead of timing them.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// The processes of this server's sessions (the per-connection sshd
    /// processes and what runs under them), not the listener.
    pub fn session_pids(&self) -> Vec<i32> {
        self.sshd
            .as_ref()
            .map(|g| descendants(g.id() as i32))
            .unwrap_or_default()
    }

    /// Send `signal` (a `kill` name: `STOP`, `CONT`, ...) to every process
    /// of this server's sessions. `STOP` makes the machine look dead to a
    /// connected client (nothing answers, nothing closes), as a guest that
    /// was reset does.
    pub fn signal_sessions(&self, signal: &str) {
        let pids = self.session_pids();
        if pids.is_empty() {
            return;
        }
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg("--")
            .args(pids.iter().map(|p| p.to_string()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Is the server running?
    pub fn is_running(&mut self) -> bool {
        self.sshd.as_mut().is_some_and(|g| g.try_wait().is_none())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may contain spaces; split after ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every descendant of `root` (not `root` itself).
pub fn descendants(root: i32) -> Vec<i32> {
    let pids: Vec<(i32, i32)> = all_pids()
        .into_iter()
        .filter_map(|p| Some((p, read_ppid(p)?)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (p, pp) in &pids {
            if *pp == parent && !out.contains(p) {
                out.push(*p);
                frontier.push(*p);
            }
        }
    }
    out
}

fn pids_with_env(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|p| *p != me)
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        })
        .collect()
}
