//! The qemu builder's steps, in Packer 1.6.6's order. Each records what it
//! creates (in the state and the ledger) as soon as it exists, and its
//! cleanup removes it.
use crate::args::{self, AccelChoice, Runtime};
use crate::config::{Accel, Config};
use crate::driver::{Driver, Vm};
use crate::{iso, memory, ports};
use kiln_commonsteps::{Connector, HasMachine, HasMedia, Liveness, Machine, MachineStopped, Media};
use kiln_core::context::LedgerId;
use kiln_core::{async_trait, BuildCtx, BuildError, Outcome, Step};
use kiln_ssh::TempKeyPair;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What the steps share.
#[derive(Default)]
pub struct State {
    /// What the shared media steps made: the downloaded (or local) ISO or
    /// source disk, the floppy, the HTTP server and its port.
    pub media: Media,
    pub disks: Vec<PathBuf>,
    pub cds: Vec<PathBuf>,
    pub ssh_host_port: Option<u16>,
    pub vnc_display: Option<u16>,
    pub accel: Option<AccelChoice>,
    /// Why KVM could not be used, until the TCG fallback is announced
    /// (with the CPU model of the command line).
    pub tcg_why: Option<String>,
    /// The KVM probe, started by the first step so that it runs while the
    /// disk is prepared; the run step waits for its answer.
    pub kvm_probe: Option<tokio::task::JoinHandle<Result<(), String>>>,
    pub vm: Option<Arc<dyn Vm>>,
    /// What the common steps share: the address, the per-build key put on
    /// the machine through cloud-init, the communicator, QEMU's liveness.
    pub machine: Machine,
    pub serial_log: PathBuf,
    pub qemu_log: PathBuf,
    pub qmp_socket: PathBuf,
    /// kiln's second QMP socket, for QEMU's events.
    pub qmp_events: PathBuf,
    /// kiln's QMP socket for typing the boot command.
    pub qmp_keys: PathBuf,
    /// Watches QEMU's events while it runs.
    pub event_watch: Option<tokio::task::JoinHandle<()>>,
    /// The provisioning cache, when this build uses it.
    pub cache: Option<crate::cache::CacheRun>,
    /// The shape of QEMU's command line (`crate::memory::signature`).
    pub machine_signature: Option<String>,
    /// The machine continues a cached state's memory (not booted): when
    /// that state was saved (Unix seconds).
    pub resumed_from: Option<i64>,
}

impl HasMachine for State {
    fn machine(&mut self) -> &mut Machine {
        &mut self.machine
    }
    /// With the provisioning cache: skip the reused steps, save a state
    /// after each one that runs.
    fn resume(&mut self) -> Option<(usize, Arc<dyn kiln_core::StepDone>)> {
        let cache = self.cache.as_ref()?;
        crate::cache::attach(cache, self);
        Some((cache.hits.len(), cache.saver.clone()))
    }
}

impl HasMedia for State {
    fn media(&mut self) -> &mut Media {
        &mut self.media
    }
}

impl State {
    pub fn new(work_dir: &Path) -> State {
        State {
            serial_log: work_dir.join("serial.log"),
            qemu_log: work_dir.join("qemu.log"),
            qmp_socket: work_dir.join("qmp.sock"),
            qmp_events: work_dir.join("qmp-events.sock"),
            qmp_keys: work_dir.join("qmp-keys.sock"),
            ..Default::default()
        }
    }
}

fn io_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> BuildError {
    BuildError::msg(format!("{what}: {e}"))
}

/// The last `n` lines of the serial console log.
pub fn serial_tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(b) = std::fs::read(path) else {
        return vec![];
    };
    let text = String::from_utf8_lossy(&b);
    let lines: Vec<String> = text
        .lines()
        .map(|l| strip_ansi(l).trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// A description of the machine's end for an error: QEMU's last words and
/// the serial console's last lines.
pub fn death_report(vm: &dyn Vm, why: &str, serial_log: &Path) -> String {
    let mut s = why.to_string();
    let out = vm.output_tail(12);
    if !out.is_empty() {
        s.push_str("\nQEMU said:\n  ");
        s.push_str(&out.join("\n  "));
    }
    let tail = serial_tail(serial_log, 20);
    if !tail.is_empty() {
        s.push_str(&format!(
            "\nLast lines of the serial console ({}):\n  ",
            serial_log.display()
        ));
        s.push_str(&tail.join("\n  "));
    }
    s
}

/// Resolves (with the reason) when the machine can no longer run: QEMU
/// exited, reported a KVM internal error, or its state is one it does not
/// leave by itself (internal-error, guest-panicked, shutdown, io-error).
pub async fn machine_stopped(vm: &dyn Vm, poll: Duration) -> String {
    let mut n: u64 = 0;
    loop {
        if let Some(e) = vm.exited() {
            return format!("QEMU exited ({e})");
        }
        if vm
            .output_tail(50)
            .iter()
            .any(|l| l.contains("KVM internal error"))
        {
            return "QEMU reported a KVM internal error and paused the machine".into();
        }
        if n % 4 == 3 {
            if let Ok(s) = vm.status().await {
                if matches!(
                    s.as_str(),
                    "internal-error" | "guest-panicked" | "shutdown" | "io-error"
                ) {
                    return format!("the machine stopped: QEMU reports its state as `{s}`");
                }
            }
        }
        n += 1;
        tokio::time::sleep(poll).await;
    }
}

/// QEMU as the common steps watch it: stopped when QEMU exits or stops
/// the machine (see [`machine_stopped`]), with QEMU's last words and the
/// console's tail as the report.
pub struct QemuLiveness {
    pub vm: Arc<dyn Vm>,
    pub serial_log: PathBuf,
}

/// What a guest built for a newer x86-64 level than the machine's CPU
/// model prints on its console before it stops working: glibc's loader,
/// glibc's own check, the kernel's boot check.
const CPU_REFUSALS: &[&str] = &[
    "CPU ISA level is lower than required",
    "CPU does not support x86-64-v",
    "This kernel requires the following features not present on the CPU",
    "This kernel requires an x86-64 CPU",
];

/// If the console shows the guest refusing its CPU, why (with the
/// `qemuargs` that fix it).
pub fn cpu_refusal(console: &[String]) -> Option<String> {
    let line = console
        .iter()
        .find(|l| CPU_REFUSALS.iter().any(|m| l.contains(m)))?;
    Some(format!(
        "the guest refuses the machine's CPU model (its console says \"{}\"): it was built for a newer x86-64 level than the TCG default `qemu64` offers; set `qemuargs: [[\"-cpu\", \"max\"]]` (or a named model such as `Nehalem` for x86-64-v2, `Haswell` for x86-64-v3)",
        line.trim()
    ))
}

/// The console's last 64 KiB as lines (a long build's console grows; only
/// its end is looked at).
fn console_end(serial_log: &Path) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(serial_log) else {
        return vec![];
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 << 10)));
    let mut b = Vec::new();
    let _ = f.read_to_end(&mut b);
    String::from_utf8_lossy(&b)
        .lines()
        .map(|l| strip_ansi(l).trim_end().to_string())
        .collect()
}

/// Resolves when the serial console shows the guest refusing its CPU
/// (looked at again only when it grew).
pub async fn watch_cpu_refusal(serial_log: &Path, poll: Duration) -> String {
    let mut seen = None;
    loop {
        let len = std::fs::metadata(serial_log).map(|m| m.len()).ok();
        if len != seen {
            seen = len;
            if let Some(why) = cpu_refusal(&console_end(serial_log)) {
                return why;
            }
        }
        tokio::time::sleep(poll).await;
    }
}

#[async_trait]
impl Liveness for QemuLiveness {
    async fn stopped(&self, what: &str) -> MachineStopped {
        let why = tokio::select! {
            why = machine_stopped(self.vm.as_ref(), Duration::from_millis(250)) => why,
            why = watch_cpu_refusal(&self.serial_log, Duration::from_millis(500)) => why,
        };
        MachineStopped {
            report: death_report(
                self.vm.as_ref(),
                &format!("{why} while {what}"),
                &self.serial_log,
            ),
        }
    }
}

pub struct StepCheckHost<'a> {
    pub c: &'a Config,
    pub d: Arc<dyn Driver>,
}

#[async_trait]
impl Step<State> for StepCheckHost<'_> {
    fn name(&self) -> &'static str {
        "check host"
    }
    async fn run(&mut self, _: &mut State, _: &BuildCtx) -> Result<(), BuildError> {
        if self.d.is_host() {
            let has = |p: &str| kiln_core::local::which(p).is_some();
            let mut missing = vec![];
            if !has(&self.c.qemu_binary) {
                missing.push(format!("{} (package qemu-system-x86)", self.c.qemu_binary));
            }
            if !has("qemu-img") {
                missing.push("qemu-img (package qemu-utils)".to_string());
            }
            if !missing.is_empty() {
                kiln_core::bail!(
                    "missing programs: {} (scripts/setup.sh installs them)",
                    missing.join(", ")
                );
            }
        }
        Ok(())
    }
}

/// Starts the KVM probe (`accelerator` unset), in the background while
/// the disk is prepared; [`StepRun`] waits for its answer. After the cache
/// lookup: a build that needs no machine does not probe.
pub struct StepProbeKvm<'a> {
    pub c: &'a Config,
    pub d: Arc<dyn Driver>,
}

#[async_trait]
impl Step<State> for StepProbeKvm<'_> {
    fn name(&self) -> &'static str {
        "probe kvm"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        if matches!(self.c.accelerator, Accel::Auto) && PROBE.get().is_none() {
            let (d, binary, dir) = (
                self.d.clone(),
                self.c.qemu_binary.clone(),
                ctx.work_dir.clone(),
            );
            state.kvm_probe = Some(tokio::spawn(
                async move { d.probe_kvm(&binary, &dir).await },
            ));
        }
        Ok(())
    }
    async fn cleanup(
        &mut self,
        state: &mut State,
        _: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        // Dropping the probe's future kills its QEMU (kill_on_drop).
        if let Some(p) = state.kvm_probe.take() {
            p.abort();
        }
        Ok(())
    }
}

/// `cd_files` on a CD, and the cloud-init seed (a CD labelled `cidata`
/// with the per-build key and user) when the build makes one.
pub struct StepCreateCd<'a> {
    pub c: &'a Config,
    pub d: Arc<dyn Driver>,
}

#[async_trait]
impl Step<State> for StepCreateCd<'_> {
    fn name(&self) -> &'static str {
        "create CD"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        if !c.disk_image {
            if let Some(src) = &state.media.source {
                state.cds.push(src.clone());
            }
        }
        let seed_in_cd = c.cloud_init_seed
            && (c.cd.label.is_empty() || c.cd.label.eq_ignore_ascii_case("cidata"));
        if !c.cd.files.is_empty() {
            ctx.ui.say("Creating CD disk...");
            let dir = ctx.work_dir.join("cd");
            stage(&dir, &c.cd.files)?;
            let label = if seed_in_cd {
                "cidata".to_string()
            } else if c.cd.label.is_empty() {
                // Packer's default volume label.
                "packer".to_string()
            } else {
                c.cd.label.clone()
            };
            if seed_in_cd {
                self.write_seed(state, &dir, ctx)?;
            }
            let out = ctx.work_dir.join("cd.iso");
            self.d.make_iso(ctx, &dir, &label, &out).await?;
            state.cds.push(out);
        }
        let seed_done = seed_in_cd && !c.cd.files.is_empty();
        if c.cloud_init_seed && !seed_done {
            let dir = ctx.work_dir.join("seed");
            stage(&dir, &[])?;
            self.write_seed(state, &dir, ctx)?;
            let out = ctx.work_dir.join("seed.iso");
            self.d.make_iso(ctx, &dir, "cidata", &out).await?;
            state.cds.push(out);
        }
        Ok(())
    }
    async fn cleanup(
        &mut self,
        state: &mut State,
        ctx: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        for f in CD_FILES {
            let p = ctx.work_dir.join(f);
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
        state.machine.key = None;
        Ok(())
    }
}

/// What [`StepCreateCd`] makes in the working directory.
const CD_FILES: &[&str] = &["cd", "seed", "cd.iso", "seed.iso"];

fn stage(dir: &Path, files: &[PathBuf]) -> Result<(), BuildError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| io_err(format!("creating {}", dir.display()), e))?;
    iso::stage_files(files, dir).map_err(|e| io_err("copying cd_files", e))
}

impl StepCreateCd<'_> {
    fn write_seed(&self, state: &mut State, dir: &Path, ctx: &BuildCtx) -> Result<(), BuildError> {
        // A machine resumed from its saved memory does not run cloud-init
        // again: it accepts the key of the build that saved it.
        let saved = state
            .cache
            .as_ref()
            .and_then(|c| c.memory.as_ref())
            .and_then(|m| m.key.clone());
        let key = match saved {
            Some(k) => {
                ctx.ui.say(&format!(
                    "Using the temporary SSH key saved with the machine's memory ({}) for the user `{}`",
                    k.name, self.c.comm.username
                ));
                k
            }
            None => {
                let k = TempKeyPair::generate();
                ctx.ui.say(&format!(
                    "Giving the machine a temporary SSH key ({}) and the user `{}` through cloud-init",
                    k.name, self.c.comm.username
                ));
                k
            }
        };
        ctx.ui.add_secret(key.private_openssh.trim());
        std::fs::write(
            dir.join("user-data"),
            iso::seed_user_data(&self.c.comm.username, &key.public_authorized),
        )
        .map_err(|e| io_err("writing user-data", e))?;
        std::fs::write(
            dir.join("meta-data"),
            iso::seed_meta_data(&key.name, &self.c.vm_name.replace(['.', '_'], "-")),
        )
        .map_err(|e| io_err("writing meta-data", e))?;
        ctx.set_generated("SSHPublicKey", key.public_authorized.clone());
        ctx.set_generated("SSHPrivateKey", key.private_openssh.clone());
        state.machine.key = Some(key);
        Ok(())
    }
}

/// Packer's `stepCreateDisk`: empty disks, or a backing-file overlay.
pub struct StepCreateDisk<'a> {
    pub c: &'a Config,
    pub d: Arc<dyn Driver>,
}

/// `qemu-img create` arguments (`backing` = (file, its format) for an
/// overlay; kiln passes the backing format, which current qemu-img needs).
pub fn create_args(
    c: &Config,
    path: &Path,
    size: &str,
    backing: Option<(&Path, &str)>,
) -> Vec<String> {
    let mut a = vec!["create".to_string(), "-f".into(), c.format.clone()];
    if let Some((b, fmt)) = backing {
        a.extend([
            "-b".into(),
            b.display().to_string(),
            "-F".into(),
            fmt.to_string(),
        ]);
    }
    a.extend(c.qemu_img_args.create.iter().cloned());
    a.extend([path.display().to_string(), size.to_string()]);
    a
}

/// The format `qemu-img info --output=json` reports.
pub fn info_format(json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get("format")?.as_str().map(str::to_string)
}

#[async_trait]
impl Step<State> for StepCreateDisk<'_> {
    fn name(&self) -> &'static str {
        "create disk"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        let mut paths = vec![c.disk_path()];
        let mut sizes = vec![c.disk_size.clone()];
        for (i, s) in c.disk_additional_size.iter().enumerate() {
            paths.push(c.output_directory.join(format!("{}-{}", c.vm_name, i + 1)));
            sizes.push(crate::config::normalize_disk_size(s).unwrap_or_else(|| s.clone()));
        }
        if !c.disk_additional_size.is_empty() || c.use_backing_file {
            ctx.ui.say("Creating required virtual machine disks");
        }
        for (i, p) in paths.iter().enumerate() {
            if c.disk_image && !c.use_backing_file && i == 0 {
                continue;
            }
            let backing = if c.disk_image && c.use_backing_file && i == 0 {
                let src = state
                    .media
                    .source
                    .clone()
                    .ok_or_else(|| BuildError::msg("no source disk"))?;
                let src = src.canonicalize().unwrap_or(src);
                let info = self
                    .d
                    .qemu_img(
                        ctx,
                        &[
                            "info".into(),
                            "--output=json".into(),
                            src.display().to_string(),
                        ],
                    )
                    .await?;
                let fmt = info_format(&info).unwrap_or_else(|| "qcow2".into());
                Some((src, fmt))
            } else {
                None
            };
            let args = create_args(
                c,
                p,
                &sizes[i],
                backing.as_ref().map(|(p, f)| (p.as_path(), f.as_str())),
            );
            self.d
                .qemu_img(ctx, &args)
                .await
                .map_err(|e| e.context("Error creating hard drive"))?;
        }
        state.disks = paths;
        Ok(())
    }
}

/// Packer's `stepCopyDisk`: the source disk image into the output
/// directory, in the output format.
pub struct StepCopyDisk<'a> {
    pub c: &'a Config,
    pub d: Arc<dyn Driver>,
}

#[async_trait]
impl Step<State> for StepCopyDisk<'_> {
    fn name(&self) -> &'static str {
        "copy disk"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        if !c.disk_image || c.use_backing_file {
            return Ok(());
        }
        if let Some(cache) = &state.cache {
            // Absolute: QEMU writes it into the overlays it makes.
            let abs = std::path::absolute(c.disk_path())
                .map_err(|e| io_err("the disk's absolute path", e))?;
            state.disks[0] = abs.clone();
            if let Some(last) = cache.resume_from() {
                let args = create_args(
                    c,
                    &abs,
                    &c.disk_size,
                    Some((&last.path(crate::cache::DISK), "qcow2")),
                );
                self.d
                    .qemu_img(ctx, &args)
                    .await
                    .map_err(|e| e.context("Error creating hard drive"))?;
                return Ok(());
            }
        }
        let src = state
            .media
            .source
            .clone()
            .ok_or_else(|| BuildError::msg("no source disk"))?;
        let dst = c.disk_path();
        let ext = src.extension().map(|e| e.to_string_lossy().to_string());
        if ext.as_deref() == Some(c.format.as_str()) && c.qemu_img_args.convert.is_empty() {
            ctx.ui.message(
                "File extension already matches desired output format. Skipping qemu-img convert step",
            );
            let (s, d) = (src.clone(), dst.clone());
            tokio::task::spawn_blocking(move || std::fs::copy(&s, &d))
                .await
                .map_err(|e| BuildError::msg(e.to_string()))?
                .map_err(|e| {
                    io_err(format!("copying {} to {}", src.display(), dst.display()), e)
                })?;
            return Ok(());
        }
        ctx.ui.say("Copying hard drive...");
        let mut a = vec!["convert".to_string()];
        a.extend(c.qemu_img_args.convert.iter().cloned());
        a.extend([
            "-O".into(),
            c.format.clone(),
            src.display().to_string(),
            dst.display().to_string(),
        ]);
        self.d
            .qemu_img(ctx, &a)
            .await
            .map_err(|e| e.context("Error creating hard drive"))?;
        Ok(())
    }
}

pub struct StepResizeDisk<'a> {
    pub c: &'a Config,
    pub d: Arc<dyn Driver>,
}

#[async_trait]
impl Step<State> for StepResizeDisk<'_> {
    fn name(&self) -> &'static str {
        "resize disk"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        if !c.disk_image || c.skip_resize_disk {
            return Ok(());
        }
        if state.cache.as_ref().is_some_and(|k| !k.hits.is_empty()) {
            // The cached state has the size already (it is in its key).
            return Ok(());
        }
        ctx.ui.say("Resizing hard drive...");
        let mut a = vec!["resize".to_string(), "-f".into(), c.format.clone()];
        a.extend(c.qemu_img_args.resize.iter().cloned());
        a.extend([c.disk_path().display().to_string(), c.disk_size.clone()]);
        self.d
            .qemu_img(ctx, &a)
            .await
            .map_err(|e| e.context("Error creating hard drive"))?;
        Ok(())
    }
}

/// Host ports: SSH forwarding and VNC.
pub struct StepPorts<'a> {
    pub c: &'a Config,
    pub exclude: Vec<u16>,
}

impl StepPorts<'_> {
    pub fn pick_ssh(c: &Config, exclude: &[u16]) -> Result<u16, BuildError> {
        ports::pick(
            c.host_port_min,
            c.host_port_max,
            ports::seed(),
            exclude,
            |p| ports::tcp_free("127.0.0.1", p),
        )
        .ok_or_else(|| {
            BuildError::msg(format!(
                "Error finding port: no free port between {} and {}",
                c.host_port_min, c.host_port_max
            ))
        })
    }
    pub fn pick_vnc(c: &Config, exclude: &[u16]) -> Result<u16, BuildError> {
        let min = c.vnc_port_min.max(5900);
        ports::pick(
            min,
            c.vnc_port_max.max(min),
            ports::seed() ^ 0x5a5a,
            exclude,
            |p| ports::tcp_free(&c.vnc_bind_address, p),
        )
        .map(|p| p - 5900)
        .ok_or_else(|| {
            BuildError::msg(format!(
                "Error finding VNC port: no free port between {} and {}",
                c.vnc_port_min, c.vnc_port_max
            ))
        })
    }
}

#[async_trait]
impl Step<State> for StepPorts<'_> {
    fn name(&self) -> &'static str {
        "port forward"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        if c.comm.is_none() {
            ctx.ui
                .message("No communicator is set; skipping port forwarding setup.");
        } else if c.skip_nat_mapping {
            state.ssh_host_port = None;
        } else {
            let p = Self::pick_ssh(c, &self.exclude)?;
            ctx.ui.say(&format!(
                "Found port for communicator (SSH, WinRM, etc): {p}."
            ));
            state.ssh_host_port = Some(p);
        }
        if !c.disable_vnc {
            state.vnc_display = Some(Self::pick_vnc(c, &[])?);
        }
        Ok(())
    }
}

static ACCEL_SAID: AtomicBool = AtomicBool::new(false);
static PROBE: OnceLock<Result<(), String>> = OnceLock::new();

/// Starts QEMU; its cleanup stops it (kill) if it still runs.
pub struct StepRun<'a> {
    pub c: &'a Config,
    pub d: Arc<dyn Driver>,
    /// Told when the guest resets itself.
    pub connector: Arc<dyn Connector>,
    pub id: Option<LedgerId>,
    /// How long QEMU must stay up to count as started.
    pub settle: Duration,
}

impl StepRun<'_> {
    /// Waits for QEMU to load the saved memory, then lets the machine
    /// run.
    async fn continue_saved(&self, vm: &dyn Vm, qmp: &Path) -> Result<(), String> {
        tokio::select! {
            r = memory::wait_migration(qmp, Duration::from_secs(300)) => r?,
            exit = vm.wait() => return Err(format!("QEMU exited ({exit}): {}", vm.output_tail(5).join(" / "))),
        }
        crate::qmp::execute(qmp, "cont").await.map(|_| ())
    }

    async fn accel(&self, state: &mut State, ctx: &BuildCtx) -> AccelChoice {
        match &self.c.accelerator {
            Accel::Named(n) if n == "none" => AccelChoice::NoAccel,
            Accel::Named(n) => AccelChoice::Machine(n.clone()),
            Accel::Auto => {
                let r = if let Some(r) = PROBE.get() {
                    r.clone()
                } else {
                    // Awaited in place (not taken) so that a cancel meanwhile
                    // still finds it in the state for the cleanup to abort.
                    let r = match state.kvm_probe.as_mut() {
                        Some(p) => p
                            .await
                            .unwrap_or_else(|e| Err(format!("the KVM probe failed: {e}"))),
                        None => self.d.probe_kvm(&self.c.qemu_binary, &ctx.work_dir).await,
                    };
                    let _ = PROBE.set(r.clone());
                    r
                };
                state.kvm_probe = None;
                match r {
                    Ok(()) => AccelChoice::Machine("kvm".into()),
                    Err(why) => {
                        state.tcg_why = Some(why);
                        AccelChoice::TcgFallback
                    }
                }
            }
        }
    }

    fn runtime(&self, state: &State, accel: AccelChoice) -> Runtime {
        let no_display = self.c.headless
            || (std::env::var_os("DISPLAY").is_none()
                && std::env::var_os("WAYLAND_DISPLAY").is_none()
                && self.c.display.as_deref() != Some("none")
                && !self.c.use_default_display);
        Runtime {
            accel,
            disks: state.disks.clone(),
            cds: state.cds.clone(),
            ssh_host_port: state.ssh_host_port,
            vnc_display: state.vnc_display,
            no_display,
            serial_log: Some(state.serial_log.clone()),
            qmp_socket: state.qmp_socket.clone(),
            qmp_events: Some(state.qmp_events.clone()),
            qmp_keys: (!self.c.boot_command.is_empty()).then(|| state.qmp_keys.clone()),
            http_ip: "10.0.2.2".into(),
            http_port: state.media.http_port,
            floppy: state.media.floppy.clone(),
        }
    }
}

/// What kiln says when it falls back to TCG: the CPU model named is the one
/// really passed (`qemuargs` included).
pub fn tcg_fallback_message(why: &str, args: &[String]) -> String {
    let cpu = match args::cpu_model(args) {
        Some(m) => format!("-cpu {m}"),
        None => "QEMU's default CPU".into(),
    };
    format!(
        "KVM cannot run a guest here ({why}): using TCG, QEMU's software emulation (-accel tcg,thread=multi {cpu}), which is slower"
    )
}

#[cfg(test)]
mod tcg_message_tests {
    use super::*;

    #[test]
    fn a_guest_refusing_its_cpu_is_named_with_the_fix() {
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for said in [
            // glibc's loader (ld.so) for a program built for x86-64-v2.
            "/sbin/init: CPU ISA level is lower than required",
            // glibc 2.34+ built for x86-64-v2 (RHEL 9).
            "Fatal glibc error: CPU does not support x86-64-v2",
            // The kernel's boot check (arch/x86/boot/cpu.c).
            "This kernel requires the following features not present on the CPU:",
        ] {
            let why = cpu_refusal(&lines(&["[    1.2] Run /sbin/init as init process", said]))
                .unwrap_or_else(|| panic!("{said}"));
            assert!(why.contains(said.trim()), "{why}");
            assert!(why.contains(r#"qemuargs: [["-cpu", "max"]]"#), "{why}");
        }
        assert!(cpu_refusal(&lines(&["Kernel panic - not syncing: VFS", "ok"])).is_none());
    }

    #[tokio::test]
    async fn the_console_is_watched_for_it() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("serial.log");
        std::fs::write(&log, "booting\r\n").unwrap();
        let w = tokio::spawn({
            let log = log.clone();
            async move { watch_cpu_refusal(&log, Duration::from_millis(20)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!w.is_finished());
        std::fs::write(
            &log,
            "booting\r\n\x1b[0mFatal glibc error: CPU does not support x86-64-v2\r\n",
        )
        .unwrap();
        let why = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .unwrap()
            .unwrap();
        assert!(why.contains("x86-64-v2"), "{why}");
    }

    #[test]
    fn the_fallback_message_names_the_cpu_passed() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let m = tcg_fallback_message("no /dev/kvm", &args(&["-m", "1G", "-cpu", "qemu64"]));
        assert!(m.contains("(no /dev/kvm)"), "{m}");
        assert!(m.contains("-accel tcg,thread=multi -cpu qemu64)"), "{m}");
        let m = tcg_fallback_message("x", &args(&["-cpu", "Nehalem,+avx"]));
        assert!(m.contains("-cpu Nehalem,+avx)"), "{m}");
        assert!(!m.contains("qemu64"), "{m}");
        let m = tcg_fallback_message("x", &args(&["-m", "1G"]));
        assert!(m.contains("QEMU's default CPU"), "{m}");
    }
}

/// Whether QEMU's output says a forwarded or VNC port was taken.
pub fn port_conflict(output: &[String]) -> bool {
    output.iter().any(|l| {
        l.contains("Could not set up host forwarding rule")
            || l.contains("Failed to find an available port")
            || l.contains("Address already in use")
    })
}

#[async_trait]
impl Step<State> for StepRun<'_> {
    fn name(&self) -> &'static str {
        "run"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        let accel = self.accel(state, ctx).await;
        state.accel = Some(accel.clone());
        // The memory saved with the state the build resumes from: QEMU
        // loads it (`-incoming`) and the machine continues, not booted.
        let mut memory = state.cache.as_ref().and_then(|c| c.memory.clone());
        if let Some(m) = &memory {
            let sig = memory::signature(c, &self.runtime(state, accel.clone()))
                .map_err(|e| io_err("Error processing QemuArgs", e))?;
            if sig != m.signature {
                ctx.ui.say("The cached memory was saved by a differently shaped machine (devices, CPU, accelerator or memory size differ): booting the saved disk");
                memory = None;
            }
        }
        ctx.ui.say(&match (&memory, c.disk_image) {
            (Some(m), _) => format!(
                "Starting VM, continuing the machine saved after provisioner {} (its memory and disk)",
                m.entry.meta.step
            ),
            (None, true) => "Starting VM, booting disk image".into(),
            (None, false) => "Starting VM, booting from CD-ROM".into(),
        });
        if !c.headless && self.runtime(state, accel.clone()).no_display {
            ctx.ui
                .message("No display to open a window on (DISPLAY is not set): running headless.");
        }
        if !c.qemuargs.is_empty() {
            ctx.ui
                .say("Overriding default Qemu arguments with qemuargs template option...");
        }
        let mut used_ports = vec![];
        for attempt in 0..4 {
            let rt = self.runtime(state, accel.clone());
            let mut args =
                args::command_line(c, &rt).map_err(|e| io_err("Error processing QemuArgs", e))?;
            state.machine_signature = memory::signature(c, &rt).ok();
            if let Some(m) = &memory {
                args.push("-incoming".into());
                args.push(memory::incoming_uri(&m.entry.path(memory::MEMORY)));
            }
            if let Some(why) = state.tcg_why.take() {
                if !ACCEL_SAID.swap(true, Ordering::SeqCst) {
                    ctx.ui.say(&tcg_fallback_message(&why, &args));
                }
            }
            let _ = std::fs::remove_file(&state.serial_log);
            let _ = std::fs::remove_file(&state.qmp_socket);
            let _ = std::fs::remove_file(&state.qmp_events);
            let _ = std::fs::remove_file(&state.qmp_keys);
            let vm = self
                .d
                .start_vm(&c.qemu_binary, &args, &state.qmp_socket, &state.qemu_log)
                .await
                .map_err(|e| e.context("Error launching VM"))?;
            self.id = Some(ctx.ledger.track(format!("QEMU process {}", vm.pid())));
            state.vm = Some(vm.clone());
            state.machine.started = Some(Instant::now());
            // QEMU fails fast on bad arguments or a taken port.
            let settled = tokio::time::timeout(self.settle, vm.wait()).await;
            if let (Err(_), Some(m)) = (&settled, &memory) {
                match self.continue_saved(vm.as_ref(), &state.qmp_socket).await {
                    Ok(()) => state.resumed_from = Some(m.entry.meta.created),
                    Err(e) => {
                        ctx.ui.error(&format!(
                            "Could not continue the machine from its saved memory ({e}): booting the saved disk"
                        ));
                        vm.kill();
                        let _ = tokio::time::timeout(Duration::from_secs(10), vm.wait()).await;
                        if let Some(id) = self.id.take() {
                            ctx.ledger.release(id);
                        }
                        state.vm = None;
                        memory = None;
                        continue;
                    }
                }
            }
            match settled {
                Err(_) => {
                    ctx.set_generated("QemuPid", vm.pid().to_string());
                    state.event_watch = Some(watch_resets(state, ctx, self.connector.clone()));
                    state.machine.liveness = Some(Arc::new(QemuLiveness {
                        vm,
                        serial_log: state.serial_log.clone(),
                    }));
                    state.machine.host =
                        Some(c.comm.host.clone().unwrap_or_else(|| "127.0.0.1".into()));
                    state.machine.port = Some(state.ssh_host_port.unwrap_or(c.comm.port));
                    return Ok(());
                }
                Ok(exit) => {
                    if let Some(id) = self.id.take() {
                        ctx.ledger.release(id);
                    }
                    state.vm = None;
                    let out = vm.output_tail(20);
                    if memory.take().is_some() {
                        ctx.ui.error(&format!(
                            "Could not continue the machine from its saved memory (QEMU exited: {}): booting the saved disk",
                            out.join(" / ")
                        ));
                        continue;
                    }
                    if port_conflict(&out) && attempt < 3 && !c.skip_nat_mapping {
                        if let Some(p) = state.ssh_host_port {
                            used_ports.push(p);
                            let p = StepPorts::pick_ssh(c, &used_ports)?;
                            ctx.ui
                                .say(&format!("Port taken meanwhile; trying port {p}."));
                            state.ssh_host_port = Some(p);
                        }
                        if state.vnc_display.is_some() {
                            state.vnc_display = Some(StepPorts::pick_vnc(c, &[])?);
                        }
                        continue;
                    }
                    kiln_core::bail!(
                        "Error launching VM: QEMU exited at once ({exit}):\n  {}\nCommand: {} {}",
                        out.join("\n  "),
                        c.qemu_binary,
                        args.join(" ")
                    );
                }
            }
        }
        kiln_core::bail!("Error launching VM: no free port")
    }
    async fn cleanup(
        &mut self,
        state: &mut State,
        ctx: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        if let Some(w) = state.event_watch.take() {
            w.abort();
        }
        state.machine.liveness = None;
        if let Some(vm) = state.vm.clone() {
            if vm.exited().is_none() {
                ctx.ui.say("Stopping the virtual machine (QEMU)...");
                vm.kill();
                if tokio::time::timeout(Duration::from_secs(10), vm.wait())
                    .await
                    .is_err()
                {
                    kiln_core::bail!("QEMU (pid {}) did not exit after SIGKILL", vm.pid());
                }
            }
        }
        if let Some(id) = self.id.take() {
            ctx.ledger.release(id);
        }
        let _ = std::fs::remove_file(&state.qmp_socket);
        let _ = std::fs::remove_file(&state.qmp_events);
        let _ = std::fs::remove_file(&state.qmp_keys);
        Ok(())
    }
}

/// Listen to QEMU's events: when the guest resets itself (a reboot, as in
/// the seed's `update.sh`), say so and drop the SSH connection at once.
/// Without this the build only learns of the reboot from missed SSH
/// keep-alives, 15 to 20 s later (Packer waits likewise). If the events
/// socket cannot be reached, nothing changes but that.
fn watch_resets(
    state: &State,
    ctx: &BuildCtx,
    connector: Arc<dyn Connector>,
) -> tokio::task::JoinHandle<()> {
    let socket = state.qmp_events.clone();
    let ui = ctx.ui.clone();
    tokio::spawn(async move {
        let _ = crate::qmp::watch_events(&socket, Duration::from_secs(5), |name, data| {
            if crate::qmp::is_guest_reset(name, data) && connector.machine_reset() {
                ui.message("The machine reset itself (a reboot): dropping the SSH connection now");
            }
        })
        .await;
    })
}

/// Packer's `stepTypeBootCommand`: waits `boot_wait`, then types
/// `boot_command` through kiln's QMP socket for keys (crate
/// `kiln-bootcommand`), failing at once if QEMU stops meanwhile.
pub struct StepTypeBootCommand<'a> {
    pub c: &'a Config,
}

#[async_trait]
impl Step<State> for StepTypeBootCommand<'_> {
    fn name(&self) -> &'static str {
        "type boot command"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        use kiln_bootcommand::{QmpKeySink, TypeError, Typist, Values};
        let c = self.c;
        if c.boot_command.is_empty() {
            return Ok(());
        }
        if state.resumed_from.is_some() {
            // The machine booted and was typed to in the build that saved
            // it: keys now would go to whatever it runs.
            ctx.ui
                .say("Not typing the boot command: the machine was continued, not booted");
            return Ok(());
        }
        let live = state.machine.liveness.clone();
        if !c.boot_wait.is_zero() {
            ctx.ui
                .say(&format!("Waiting {:?} for boot...", c.boot_wait));
            kiln_commonsteps::while_alive(live.clone(), "waiting for boot", ctx.sleep(c.boot_wait))
                .await?;
        }
        let values = Values {
            http_ip: "10.0.2.2".into(),
            http_port: state.media.http_port,
            name: c.vm_name.clone(),
        };
        let steps = c
            .boot_command
            .render(&c.interp, &values)
            .map_err(BuildError::new)?;
        ctx.ui.say("Typing the boot command (QMP)...");
        let socket = state.qmp_keys.clone();
        let typing = async {
            let mut keys = QmpKeySink::connect(&socket, Duration::from_secs(10))
                .await
                .map_err(BuildError::new)?;
            Typist {
                key_interval: c.boot_key_interval,
            }
            .type_steps(&steps, &mut keys, &ctx.cancel)
            .await
            .map_err(|e| match e {
                TypeError::Cancelled => BuildError::Cancelled,
                e => BuildError::new(e),
            })
        };
        kiln_commonsteps::while_alive(live, "typing the boot command", typing).await
    }
}

/// Removes the per-build key from the machine's `authorized_keys` (it is
/// useless after the build, but kiln leaves nothing of its own behind).
pub struct StepCleanupTempKeys<'a> {
    pub c: &'a Config,
}

#[async_trait]
impl Step<State> for StepCleanupTempKeys<'_> {
    fn name(&self) -> &'static str {
        "cleanup temp keys"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let (Some(comm), Some(key)) = (&state.machine.comm, &state.machine.key) else {
            return Ok(());
        };
        if self.c.comm.clear_authorized_keys {
            kiln_ssh::clear_authorized_keys(comm.as_ref(), key, ctx.ui.as_ref()).await;
            return Ok(());
        }
        let pat = key
            .name
            .replace(['.', '*', '[', ']', '\\', '^', '$', '/'], ".");
        let mut cmd = format!("sed -i '/ {pat}$/d' ~/.ssh/authorized_keys");
        if state.cache.as_ref().is_some_and(|k| !k.hits.is_empty()) {
            // A resumed disk has the keys of the builds that saved its
            // states: kiln's temporary keys are all named `kiln-UUID`.
            cmd = "sed -i -E '/ kiln-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/d' ~/.ssh/authorized_keys".into();
        }
        let out = kiln_ssh::CollectOutput::default();
        match comm.start(&cmd, &out).await {
            Ok(kiln_core::ExitStatus::Code(0)) => {}
            r => ctx.ui.error(&format!(
                "Could not remove the temporary key from ~/.ssh/authorized_keys ({r:?}); its private half is in no output (only the provisioning cache's saved memory states hold it, for the machines they continue)"
            )),
        }
        Ok(())
    }
}

/// A machine continued from a cached state's memory has that state's
/// clock, behind by the state's age: set it to the host's time
/// (`sudo -n date`), or say by how much it is behind.
pub struct StepClock<'a> {
    pub c: &'a Config,
}

#[async_trait]
impl Step<State> for StepClock<'_> {
    fn name(&self) -> &'static str {
        "set clock"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let (Some(saved), Some(comm)) = (state.resumed_from, &state.machine.comm) else {
            return Ok(());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let out = kiln_ssh::CollectOutput::default();
        let r = comm.start(&memory::clock_command(now), &out).await;
        let guest = out
            .stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .and_then(|l| l.trim().parse::<i64>().ok());
        let saved_at = kiln_cache::store::saved_at(saved);
        let behind = guest.map(|g| now as i64 - g);
        match (r, behind) {
            (Ok(kiln_core::ExitStatus::Code(0)), Some(b)) if b.abs() > 1 => ctx.ui.say(&format!(
                "The continued machine's clock was {} behind (it was saved {saved_at}): set to the host's",
                kiln_core::build::go_duration(Duration::from_secs(b.unsigned_abs()))
            )),
            (Ok(kiln_core::ExitStatus::Code(0)), _) => {}
            (r, b) => ctx.ui.error(&format!(
                "The continued machine's clock is {} (it was saved {saved_at}) and could not be set to the host's (`sudo -n date` as `{}`: {r:?}): its provisioners see that time",
                b.map_or("unknown".into(), |b| format!(
                    "{} behind",
                    kiln_core::build::go_duration(Duration::from_secs(b.unsigned_abs()))
                )),
                self.c.comm.username
            )),
        }
        Ok(())
    }
}

/// How the machine ended up stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// It powered off by itself (shutdown_command, or the guest).
    ByItself,
    /// kiln pressed the (ACPI) power button through QMP.
    Powerdown,
    /// kiln killed QEMU.
    Killed,
}

/// Wait for QEMU to exit; then ACPI power-down; then kill. `first` is how
/// long to wait for the machine to stop by itself.
pub async fn stop_machine(
    vm: &dyn Vm,
    first: Duration,
    after_powerdown: Duration,
    ctx: &BuildCtx,
    press_button_first: bool,
) -> Stopped {
    if !press_button_first && tokio::time::timeout(first, vm.wait()).await.is_ok() {
        return Stopped::ByItself;
    }
    if !press_button_first {
        ctx.ui.error(&format!(
            "The machine did not power off within {}: pressing its power button (QMP system_powerdown)...",
            kiln_core::build::go_duration(first)
        ));
    }
    let wait = if press_button_first {
        first
    } else {
        after_powerdown
    };
    match vm.powerdown().await {
        Ok(()) => {
            if tokio::time::timeout(wait, vm.wait()).await.is_ok() {
                return Stopped::Powerdown;
            }
            ctx.ui.error(&format!(
                "The machine ignored the power button for {}: killing QEMU",
                kiln_core::build::go_duration(wait)
            ));
        }
        Err(e) => ctx
            .ui
            .error(&format!("QMP system_powerdown failed ({e}): killing QEMU")),
    }
    vm.kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), vm.wait()).await;
    Stopped::Killed
}

pub struct StepShutdown<'a> {
    pub c: &'a Config,
    /// How long to wait after the power button (tests shorten it).
    pub after_powerdown: Duration,
}

#[async_trait]
impl Step<State> for StepShutdown<'_> {
    fn name(&self) -> &'static str {
        "shutdown"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        let Some(vm) = state.vm.clone() else {
            return Ok(());
        };
        let stopped = if c.comm.is_none() {
            ctx.ui.say("Waiting for shutdown...");
            stop_machine(
                vm.as_ref(),
                c.shutdown_timeout,
                self.after_powerdown,
                ctx,
                false,
            )
            .await
        } else if let Some(cmd) = &c.shutdown_command {
            ctx.ui.say("Gracefully halting virtual machine...");
            let comm = state
                .machine
                .comm
                .clone()
                .ok_or_else(|| BuildError::msg("no communicator"))?;
            let out = kiln_ssh::UiOutput(ctx.ui.as_ref());
            // The connection dropping (the machine going down) is fine.
            match comm.start(cmd, &out).await {
                Err(e) => kiln_core::bail!("Failed to send shutdown command: {e}"),
                // It failed (e.g. "command not found"): nothing is going to
                // power the machine off, so do not wait shutdown_timeout.
                Ok(kiln_core::ExitStatus::Code(code)) if code != 0 && vm.exited().is_none() => {
                    ctx.ui.error(&format!(
                        "The shutdown command failed (exit status {code}): pressing the machine's power button (QMP system_powerdown)..."
                    ));
                    stop_machine(
                        vm.as_ref(),
                        self.after_powerdown,
                        self.after_powerdown,
                        ctx,
                        true,
                    )
                    .await
                }
                Ok(_) => {
                    stop_machine(
                        vm.as_ref(),
                        c.shutdown_timeout,
                        self.after_powerdown,
                        ctx,
                        false,
                    )
                    .await
                }
            }
        } else {
            ctx.ui
                .say("Halting the virtual machine (ACPI power button, QMP system_powerdown)...");
            stop_machine(
                vm.as_ref(),
                c.shutdown_timeout,
                self.after_powerdown,
                ctx,
                true,
            )
            .await
        };
        state.machine.comm = None;
        match stopped {
            Stopped::ByItself => ctx.ui.message("The machine powered off."),
            Stopped::Powerdown => ctx.ui.message("The machine powered off after the power button."),
            Stopped::Killed => kiln_core::bail!(
                "Timeout while waiting for machine to shut down: QEMU was killed, the disk may be inconsistent"
            ),
        }
        Ok(())
    }
}

/// Packer's `stepConvertDisk`: compaction (and compression) through
/// `qemu-img convert`.
pub struct StepConvertDisk<'a> {
    pub c: &'a Config,
    pub d: Arc<dyn Driver>,
}

pub fn convert_args(c: &Config, src: &Path, dst: &Path) -> Vec<String> {
    let mut a = vec!["convert".to_string()];
    if c.disk_compression {
        a.push("-c".into());
    }
    a.extend(c.qemu_img_args.convert.iter().cloned());
    a.extend([
        "-O".into(),
        c.format.clone(),
        src.display().to_string(),
        dst.display().to_string(),
    ]);
    a
}

#[async_trait]
impl Step<State> for StepConvertDisk<'_> {
    fn name(&self) -> &'static str {
        "convert disk"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        // With the cache the disk is a chain of overlays: always converted.
        let top = state
            .cache
            .as_ref()
            .and_then(|k| k.saver.inner.lock().ok().and_then(|s| s.top.clone()));
        if c.skip_compaction && !c.disk_compression && state.cache.is_none() {
            return Ok(());
        }
        // A build that needs no machine converts the cached final state.
        let finished = crate::cache::finished_entry(state).map(|e| e.path(crate::cache::DISK));
        let src = finished.or(top).unwrap_or_else(|| c.disk_path());
        let dst = c.output_directory.join(format!("{}.convert", c.vm_name));
        ctx.ui.say("Converting hard drive...");
        let t = Instant::now();
        let mut tries = 0;
        loop {
            match self.d.qemu_img(ctx, &convert_args(c, &src, &dst)).await {
                Ok(_) => break,
                Err(e)
                    if e.to_string()
                        .contains("Failed to get shared \"write\" lock")
                        && tries < 10 =>
                {
                    tries += 1;
                    ctx.ui
                        .say("Error getting file lock for conversion; retrying...");
                    ctx.sleep(Duration::from_secs(tries)).await?;
                }
                Err(e) => {
                    let _ = tokio::fs::remove_file(&dst).await;
                    return Err(e.context("Error converting hard drive"));
                }
            }
        }
        // Onto the output disk (with the cache, `src` is the top of the
        // chain of overlays, in the working directory).
        let out = c.disk_path();
        tokio::fs::rename(&dst, &out)
            .await
            .map_err(|e| io_err("Error moving converted hard drive", e))?;
        if state.cache.is_some() {
            // The artifact names it as a build without the cache does.
            state.disks = vec![out];
        }
        ctx.ui
            .message(&format!("Converted in {:.1} s", t.elapsed().as_secs_f64()));
        Ok(())
    }
}

/// Looks the provisioning cache up (after the source image is known,
/// before the disk is made).
pub struct StepCacheLookup<'a> {
    pub c: &'a Config,
    pub opts: &'a crate::cache::CacheOpts,
    pub hook: &'a dyn kiln_core::Hook,
    pub d: Arc<dyn Driver>,
}

#[async_trait]
impl Step<State> for StepCacheLookup<'_> {
    fn name(&self) -> &'static str {
        "cache lookup"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        if self.opts.config.is_none() {
            return Ok(());
        }
        let Some(src) = state.media.source.clone() else {
            return Ok(());
        };
        let steps = self.hook.steps(ctx);
        state.cache = crate::cache::lookup(self.c, self.opts, &steps, &src, ctx, self.d.clone());
        Ok(())
    }
}

/// Saves the stopped machine's disk as the cache's final state, so that a
/// build with nothing changed needs no machine (`cache::Saver::save_final`).
pub struct StepCacheFinal;

#[async_trait]
impl Step<State> for StepCacheFinal {
    fn name(&self) -> &'static str {
        "cache final state"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        if let Some(cache) = &state.cache {
            cache.saver.save_final(ctx).await;
        }
        Ok(())
    }
}
