//! QEMU, qemu-img and the ISO maker, behind small traits so the steps can
//! be tested without them.
//!
//! QEMU never outlives kiln: the process is started by a supervisor thread
//! that lives exactly as long as QEMU, with `PR_SET_PDEATHSIG` = SIGKILL
//! (so QEMU dies with kiln, even on SIGKILL or abort), and the handle kills
//! it when dropped (a panic, a dropped step on Ctrl-C). Cleanup steps stop
//! it gracefully first.
use crate::qmp;
use async_trait::async_trait;
use kiln_core::{BuildCtx, BuildError};
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How QEMU ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExit {
    /// Exit code, or `None` if killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit status {c}"),
            (None, Some(s)) => write!(f, "signal {s}"),
            _ => write!(f, "unknown status"),
        }
    }
}

/// A running QEMU.
#[async_trait]
pub trait Vm: Send + Sync {
    fn pid(&self) -> u32;
    /// `Some` once QEMU has exited.
    fn exited(&self) -> Option<VmExit>;
    /// Wait until QEMU exits.
    async fn wait(&self) -> VmExit;
    /// SIGKILL (no-op if it already exited).
    fn kill(&self);
    /// The last lines QEMU printed (stdout and stderr).
    fn output_tail(&self, n: usize) -> Vec<String>;
    /// QMP `system_powerdown` (ACPI power button).
    async fn powerdown(&self) -> Result<(), String>;
    /// QMP `query-status`: `running`, `paused`, `internal-error`,
    /// `guest-panicked`, `shutdown`, ...
    async fn status(&self) -> Result<String, String>;
}

/// What the steps need from the host.
#[async_trait]
pub trait Driver: Send + Sync {
    /// The real programs (host checks apply).
    fn is_host(&self) -> bool {
        false
    }
    /// Start QEMU. `qmp_socket` is where its QMP server listens (kiln's
    /// `-qmp` argument); `log` receives everything QEMU prints.
    async fn start_vm(
        &self,
        binary: &str,
        args: &[String],
        qmp_socket: &Path,
        log: &Path,
    ) -> Result<Arc<dyn Vm>, BuildError>;
    /// `qemu-img ARGS`; stdout on success.
    async fn qemu_img(&self, ctx: &BuildCtx, args: &[String]) -> Result<String, BuildError>;
    /// Can KVM run a guest here? `Err(reason)` if not.
    async fn probe_kvm(&self, binary: &str, work_dir: &Path) -> Result<(), String>;
    /// An ISO 9660 image (Joliet and Rock Ridge) of `dir`'s contents,
    /// with volume label `label`.
    async fn make_iso(
        &self,
        ctx: &BuildCtx,
        dir: &Path,
        label: &str,
        out: &Path,
    ) -> Result<(), BuildError>;
}

/// The real programs.
#[derive(Debug, Default, Clone)]
pub struct HostDriver;

struct Shared {
    child: Mutex<Option<Child>>,
    exit: Mutex<Option<VmExit>>,
    tail: Mutex<VecDeque<String>>,
}

/// A QEMU started by [`HostDriver`].
pub struct HostVm {
    pid: u32,
    shared: Arc<Shared>,
    exited_rx: tokio::sync::watch::Receiver<bool>,
    qmp_socket: PathBuf,
}

fn exit_of(st: ExitStatus) -> VmExit {
    use std::os::unix::process::ExitStatusExt;
    VmExit {
        code: st.code(),
        signal: st.signal(),
    }
}

#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe system calls (prctl, getppid, kill on self).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then die now.
            if libc::getppid() == 1 {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
}

impl HostVm {
    /// Spawn `binary args` from a supervisor thread that lives as long as
    /// the process.
    pub fn spawn(
        binary: &str,
        args: &[String],
        qmp_socket: &Path,
        log: &Path,
    ) -> Result<HostVm, BuildError> {
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let log_file = std::fs::File::create(log)
            .map_err(|e| BuildError::msg(format!("creating {}: {e}", log.display())))?;
        let log_file = Arc::new(Mutex::new(log_file));
        let shared = Arc::new(Shared {
            child: Mutex::new(None),
            exit: Mutex::new(None),
            tail: Mutex::new(VecDeque::new()),
        });
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        let binary_name = binary.to_string();
        std::thread::Builder::new()
            .name("kiln-qemu".into())
            .spawn(move || {
                let mut child = match cmd.spawn() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = started_tx.send(Err(format!("starting {binary_name}: {e}")));
                        return;
                    }
                };
                let pid = child.id();
                let mut readers = Vec::new();
                for pipe in [
                    child
                        .stdout
                        .take()
                        .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
                    child
                        .stderr
                        .take()
                        .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
                ]
                .into_iter()
                .flatten()
                {
                    let sh = sh.clone();
                    let log = log_file.clone();
                    readers.push(std::thread::spawn(move || {
                        let r = std::io::BufReader::new(pipe);
                        for line in r.lines() {
                            let Ok(line) = line else { break };
                            if let Ok(mut f) = log.lock() {
                                let _ = writeln!(f, "{line}");
                            }
                            let mut t = sh.tail.lock().unwrap_or_else(|e| e.into_inner());
                            t.push_back(line);
                            if t.len() > 200 {
                                t.pop_front();
                            }
                        }
                    }));
                }
                *sh.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
                let _ = started_tx.send(Ok(pid));
                loop {
                    {
                        let mut g = sh.child.lock().unwrap_or_else(|e| e.into_inner());
                        let c = g.as_mut().expect("child");
                        match c.try_wait() {
                            Ok(Some(st)) => {
                                // Output first, so the tail is complete when
                                // waiters wake up.
                                drop(g);
                                for r in readers {
                                    let _ = r.join();
                                }
                                *sh.exit.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(exit_of(st));
                                tx.send_replace(true);
                                return;
                            }
                            Ok(None) => {}
                            Err(_) => {
                                let _ = c.kill();
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
            .map_err(|e| BuildError::msg(format!("starting a thread: {e}")))?;
        let pid = started_rx
            .recv()
            .map_err(|_| BuildError::msg("the QEMU supervisor thread died"))?
            .map_err(BuildError::msg)?;
        Ok(HostVm {
            pid,
            shared,
            exited_rx: rx,
            qmp_socket: qmp_socket.to_path_buf(),
        })
    }
}

#[async_trait]
impl Vm for HostVm {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn exited(&self) -> Option<VmExit> {
        self.shared
            .exit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    async fn wait(&self) -> VmExit {
        let mut rx = self.exited_rx.clone();
        let _ = rx.wait_for(|v| *v).await;
        self.exited().unwrap_or(VmExit {
            code: None,
            signal: None,
        })
    }
    fn kill(&self) {
        let mut g = self.shared.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = g.as_mut() {
            // std never signals a child it has already reaped.
            let _ = c.kill();
        }
    }
    fn output_tail(&self, n: usize) -> Vec<String> {
        let t = self.shared.tail.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().skip(t.len().saturating_sub(n)).cloned().collect()
    }
    async fn powerdown(&self) -> Result<(), String> {
        qmp::execute(&self.qmp_socket, "system_powerdown")
            .await
            .map(|_| ())
    }
    async fn status(&self) -> Result<String, String> {
        let v = qmp::execute(&self.qmp_socket, "query-status").await?;
        v.get("status")
            .and_then(|s| s.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("unexpected query-status answer: {v}"))
    }
}

impl Drop for HostVm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The KVM probe: a boot sector that prints `kiln-kvm-ok` on the serial
/// port and exits QEMU with status 33 (through `isa-debug-exit`) after
/// running real-mode code, entering long mode and executing
/// `lock cmpxchg16b`: the instructions nested KVM here cannot emulate.
/// Source: `assets/kvm-probe.S`.
pub const KVM_PROBE: &[u8; 512] = include_bytes!("../assets/kvm-probe.bin");

/// Arguments to run the probe under KVM.
pub fn probe_args(image: &Path) -> Vec<String> {
    [
        "-accel",
        "kvm",
        "-machine",
        "pc",
        "-m",
        "16",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-drive",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!(
        "file={},format=raw,if=ide",
        crate::args::opt_path(image)
    )])
    .collect()
}

/// Run the probe guest: `Ok` if it printed its message and exited with
/// 33; stops at once when QEMU reports a KVM error (it would pause the
/// guest forever), else after 5 s.
async fn run_probe(binary: &str, image: &Path) -> Result<(), String> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(binary)
        .args(probe_args(image))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("running {binary}: {e}"))?;
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = tokio::io::BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut ok = false;
    let mut first_error: Option<String> = None;
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        tokio::select! {
            l = out.next_line(), if out_open => match l {
                Ok(Some(l)) => ok |= l.contains("kiln-kvm-ok"),
                _ => out_open = false,
            },
            l = err.next_line(), if err_open => match l {
                Ok(Some(l)) => {
                    if first_error.is_none() && !l.contains("warning:") {
                        first_error = Some(l.clone());
                    }
                    if l.contains("KVM internal error") || l.contains("emulation failure") {
                        let _ = child.kill().await;
                        return Err(format!("a test guest failed under KVM: {l}"));
                    }
                }
                _ => err_open = false,
            },
            _ = &mut deadline => {
                let _ = child.kill().await;
                return Err(match first_error {
                    Some(e) => format!("a test guest failed under KVM: {e}"),
                    None => "a test guest did not finish in 5 s under KVM".into(),
                });
            }
        }
    }
    let st = child.wait().await.map_err(|e| e.to_string())?;
    if ok && st.code() == Some(33) {
        Ok(())
    } else {
        Err(format!(
            "a test guest failed under KVM: {}",
            first_error.unwrap_or_else(|| format!("QEMU ended with {st}"))
        ))
    }
}

#[async_trait]
impl Driver for HostDriver {
    fn is_host(&self) -> bool {
        true
    }

    async fn start_vm(
        &self,
        binary: &str,
        args: &[String],
        qmp_socket: &Path,
        log: &Path,
    ) -> Result<Arc<dyn Vm>, BuildError> {
        let binary = binary.to_string();
        let args = args.to_vec();
        let q = qmp_socket.to_path_buf();
        let l = log.to_path_buf();
        let vm = tokio::task::spawn_blocking(move || HostVm::spawn(&binary, &args, &q, &l))
            .await
            .map_err(|e| BuildError::msg(e.to_string()))??;
        Ok(Arc::new(vm))
    }

    async fn qemu_img(&self, ctx: &BuildCtx, args: &[String]) -> Result<String, BuildError> {
        let mut cmd = tokio::process::Command::new("qemu-img");
        cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
        let out = ctx
            .cancellable(async {
                cmd.output()
                    .await
                    .map_err(|e| BuildError::msg(format!("running qemu-img: {e}")))
            })
            .await?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(BuildError::msg(format!(
                "qemu-img {}: {}",
                args.first().map(String::as_str).unwrap_or(""),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    async fn probe_kvm(&self, binary: &str, work_dir: &Path) -> Result<(), String> {
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
        {
            return Err(format!("/dev/kvm: {e}"));
        }
        let image = work_dir.join("kvm-probe.img");
        std::fs::write(&image, KVM_PROBE).map_err(|e| format!("writing the probe: {e}"))?;
        let r = run_probe(binary, &image).await;
        let _ = std::fs::remove_file(&image);
        r
    }

    async fn make_iso(
        &self,
        ctx: &BuildCtx,
        dir: &Path,
        label: &str,
        out: &Path,
    ) -> Result<(), BuildError> {
        kiln_commonsteps::cd::make_iso(ctx, dir, label, out).await
    }
}
