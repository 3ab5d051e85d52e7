//! The `qemu` builder, compatible with Packer 1.6.6's: boots an ISO or a
//! disk image (`disk_image: true`) under QEMU, provisions it over SSH,
//! shuts it down and writes the disk into `output_directory` with
//! `qemu-img` (compacted, optionally compressed).
//!
//! Where kiln differs from Packer (all visible in the output):
//!
//! - `accelerator` unset: kiln boots a 512-byte test guest under KVM (real
//!   mode, long mode, `lock cmpxchg16b`, which nested KVM may fail to
//!   emulate) and uses KVM only if it runs; otherwise TCG (`-accel
//!   tcg,thread=multi -cpu qemu64`), said once, with the CPU model really
//!   passed (a `-cpu` row in `qemuargs` replaces `qemu64`). Packer picks
//!   KVM whenever `/dev/kvm` opens, and its guest then dies. `qemu64` is
//!   Packer's own default and the fastest model under TCG measured here
//!   (issue #15: CPU-bound guest work 20-30 % faster than `-cpu max`,
//!   whose AVX2/SSE4.2 string routines TCG emulates slowly; see the
//!   `seed_vs_packer` benchmark's CPU table). A guest built for
//!   x86-64-v2 or later (RHEL 9, RHEL 10) needs `qemuargs: [["-cpu",
//!   "max"]]`.
//!   The probe runs in the background while the disk is prepared.
//! - Disk images with no credentials in the template (no `ssh_password`,
//!   `ssh_private_key_file` or `ssh_agent_auth`) get a cloud-init NoCloud
//!   seed: a CD labelled `cidata` creating `ssh_username` with a per-build
//!   ed25519 key (`cloud_init_seed` forces it on or off). The key's line is
//!   removed from `authorized_keys` before shutdown.
//! - The guest's serial console goes to `serial.log` in the build's working
//!   directory; when the build fails its last lines are shown.
//! - If QEMU exits or stops (a KVM internal error pauses it) while kiln
//!   waits for SSH or provisions, the build fails at once with QEMU's
//!   message and the console's tail (Packer waits out `ssh_timeout`).
//! - Shutdown: `shutdown_command`, then up to `shutdown_timeout` for QEMU
//!   to exit; then the ACPI power button (QMP `system_powerdown`); then
//!   SIGKILL (a build error: the disk may be inconsistent). Without
//!   `shutdown_command`, kiln presses the power button (Packer kills QEMU).
//! - `boot_command` is typed through QMP (`input-send-event`, US keyboard
//!   key codes, on a QMP socket of its own), not VNC: see the crate
//!   `kiln-bootcommand` for why and what differs. The VNC display is still
//!   started as the `vnc_*` keys say, to watch; a boot command also works
//!   with `disable_vnc` (Packer refuses it). `boot_wait` only delays
//!   `boot_command`; without one there is nothing to wait for. The SSH
//!   forward and the HTTP server listen on 127.0.0.1 only.
//! - What an ISO install needs around the boot command is shared with
//!   other builders (`kiln_commonsteps`): `iso_url`/`iso_urls` with
//!   `iso_checksum` (a value, a `file:` checksum list, `none`) and
//!   `iso_target_path`; `http_directory` (streamed, with ranges);
//!   `floppy_files`/`floppy_dirs`, a FAT12 image kiln writes itself and
//!   attaches as `-fda` (Packer's); `cd_files`/`cd_label`. See
//!   `docs/boot_command.md`.
//! - `use_backing_file` passes the backing file's format (`-F`), which the
//!   qemu-img of Debian 12 and later requires (Packer 1.6.6 fails there).
//! - A guest that reboots itself (the seed's `update.sh`) is seen at once:
//!   kiln listens to QEMU's events on a second QMP socket and, on a
//!   guest-initiated `RESET`, drops the SSH connection, so the running
//!   command ends as disconnected (`expect_disconnect`) without waiting
//!   for keep-alives to give up (15 to 20 s with the defaults; Packer
//!   waits for those).
//! - Paths in QEMU's option lists have their commas doubled (`,,`), so an
//!   `output_directory` with a comma works (with Packer QEMU cannot open
//!   the disk).
//! - QEMU never outlives kiln (see [`driver`]).
//!
//! Speed under TCG (no usable KVM): almost all of a build's time is guest
//! work that is the same whichever tool starts QEMU (see the
//! `seed_vs_packer` benchmark's phase table). Tried and measured here, with
//! no gain beyond run-to-run noise: `cache=unsafe` on the disk (apt and
//! dpkg are CPU-bound under TCG, not fsync-bound), a 2 GiB translation
//! cache (`tb-size`; a seed-like build flushes the default 1 GiB twice).
pub mod args;
pub mod cache;
pub mod config;
pub mod driver;
pub mod iso;
pub mod memory;
pub mod qmp;
pub mod steps;
/// Shared with other builders (`kiln-commonsteps`).
pub use kiln_commonsteps::{download, http, ports};

use config::Config;
use driver::{Driver, HostDriver};
use kiln_commonsteps::{
    Connector, MachineStopped, SshConnector, StepConnect, StepCreateFloppy, StepDownload,
    StepHttpServer, StepOutputDir, StepProvision,
};
use kiln_core::{
    async_trait, run_steps, Artifact, BuildCtx, BuildError, Builder, FileArtifact, Hook,
    PrepareOpts, Registry, SkipWhen, Step,
};
use kiln_template::Decoder;
use std::sync::Arc;
use std::time::Duration;
use steps::*;

/// Packer's builder id for qemu artifacts (consumers recognise it).
pub const BUILDER_ID: &str = "transcend.qemu";

/// Registers the `qemu` builder.
pub fn register(reg: &mut Registry) {
    reg.builder("qemu", factory);
}

fn factory(d: &mut Decoder<'_>, opts: &PrepareOpts) -> Option<Box<dyn Builder>> {
    let raw = d.object().to_json();
    let c = config::decode(d, opts.force)?;
    let mut b = QemuBuilder::new(c);
    if !opts.no_cache {
        b.cache = cache::CacheOpts {
            config: Some(kiln_template::interp::render_json(&raw, &b.config.interp)),
            max_age: opts.cache_max_age,
        };
    }
    Some(Box::new(b))
}

pub struct QemuBuilder {
    pub config: Config,
    driver: Arc<dyn Driver>,
    connector: Arc<dyn Connector>,
    /// How long QEMU must stay up after starting to count as started.
    pub settle: Duration,
    /// How long to wait after the ACPI power button before killing.
    pub after_powerdown: Duration,
    /// The provisioning cache (on for builds `kiln build` prepares, unless
    /// `-no-cache`; off for a builder made by [`QemuBuilder::new`]).
    pub cache: cache::CacheOpts,
}

impl QemuBuilder {
    pub fn new(config: Config) -> Self {
        QemuBuilder {
            connector: Arc::new(SshConnector::new(config.comm.clone())),
            config,
            driver: Arc::new(HostDriver),
            settle: Duration::from_millis(700),
            after_powerdown: Duration::from_secs(60),
            cache: cache::CacheOpts::default(),
        }
    }
    /// With other programs and another way to connect (tests).
    pub fn with(config: Config, driver: Arc<dyn Driver>, connector: Arc<dyn Connector>) -> Self {
        QemuBuilder {
            driver,
            connector,
            ..QemuBuilder::new(config)
        }
    }
}

#[async_trait]
impl Builder for QemuBuilder {
    async fn run(
        &self,
        ctx: &BuildCtx,
        hook: &dyn Hook,
    ) -> Result<Option<Arc<dyn Artifact>>, BuildError> {
        let c = &self.config;
        let d = &self.driver;
        let mut state = State::new(&ctx.work_dir);
        // A build whose final state is cached needs no machine: the steps
        // that make, boot, connect and stop one are passed over.
        fn machine<'a>(step: impl Step<State> + 'a) -> Box<dyn Step<State> + 'a> {
            Box::new(SkipWhen {
                step: Box::new(step),
                when: cache::finished,
            })
        }
        let mut steps: Vec<Box<dyn Step<State> + '_>> = vec![
            Box::new(StepCheckHost { c, d: d.clone() }),
            Box::new(StepDownload { config: &c.iso }),
            Box::new(StepOutputDir::new(&c.output_directory, c.force)),
            Box::new(StepCacheLookup {
                c,
                opts: &self.cache,
                hook,
                d: d.clone(),
            }),
            machine(StepCreateFloppy { config: &c.floppy }),
            machine(StepCreateCd { c, d: d.clone() }),
            machine(StepProbeKvm { c, d: d.clone() }),
            machine(StepCreateDisk { c, d: d.clone() }),
            machine(StepCopyDisk { c, d: d.clone() }),
            machine(StepResizeDisk { c, d: d.clone() }),
            machine(StepHttpServer {
                config: &c.http,
                http_ip: "10.0.2.2",
            }),
            machine(StepPorts { c, exclude: vec![] }),
            machine(StepRun {
                c,
                d: d.clone(),
                connector: self.connector.clone(),
                id: None,
                settle: self.settle,
            }),
            machine(StepTypeBootCommand { c }),
            machine(StepConnect {
                connector: self.connector.clone(),
                none: c.comm.is_none(),
                user: c.comm.username.clone(),
            }),
            machine(StepClock { c }),
            // Passed a cached final state, it only shows the provisioners
            // as taken from the cache in the timeline.
            Box::new(StepProvision { hook }),
            machine(StepCleanupTempKeys { c }),
            machine(StepShutdown {
                c,
                after_powerdown: self.after_powerdown,
            }),
            machine(StepCacheFinal),
            Box::new(StepConvertDisk { c, d: d.clone() }),
        ];
        let r = run_steps(&mut steps, &mut state, ctx).await;
        if let Err(e) = &r {
            let console_shown = e.find::<MachineStopped>().is_some();
            if state.machine.started.is_some() && !console_shown && !e.is_cancelled() {
                let tail = serial_tail(&state.serial_log, 20);
                if !tail.is_empty() {
                    ctx.ui.error(&format!(
                        "Last lines of the serial console ({}):\n  {}",
                        state.serial_log.display(),
                        tail.join("\n  ")
                    ));
                }
            }
        }
        if ctx.on_error != kiln_core::OnError::Abort || r.is_ok() {
            for p in [&state.serial_log, &state.qemu_log] {
                let _ = std::fs::remove_file(p);
            }
        }
        r?;
        Ok(Some(Arc::new(artifact(c, &state))))
    }
}

fn artifact(c: &Config, state: &State) -> FileArtifact {
    let mut files = vec![];
    let mut stack = vec![c.output_directory.clone()];
    while let Some(dir) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    files.push(e.path());
                }
            }
        }
    }
    files.sort();
    let mut a = FileArtifact::new(BUILDER_ID, files);
    a.id = "VM".into();
    a.description = Some(format!(
        "VM files in directory: {}",
        c.output_directory.display()
    ));
    let accel = match &state.accel {
        Some(args::AccelChoice::Machine(n)) => n.clone(),
        Some(args::AccelChoice::NoAccel) => "none".into(),
        Some(args::AccelChoice::TcgFallback) => "tcg".into(),
        None => match &c.accelerator {
            config::Accel::Named(n) => n.clone(),
            config::Accel::Auto => "tcg".into(),
        },
    };
    for (k, v) in [
        ("diskName", c.vm_name.clone()),
        ("diskType", c.format.clone()),
        ("diskSize", c.disk_size.clone()),
        ("domainType", accel),
        (
            "diskPaths",
            state
                .disks
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ] {
        a.state.insert(k.into(), v);
    }
    if let Some(t) = state.machine.time_to_connect {
        a.state
            .insert("timeToSSH".into(), format!("{:.3}", t.as_secs_f64()));
    }
    a
}
