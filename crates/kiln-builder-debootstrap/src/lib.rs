//! The `debootstrap` builder: a bootable cloud-style Debian disk image made
//! from packages, without booting anything. Packer has no such builder;
//! kiln uses it to make the base image its `qemu` builds start from, with
//! nothing downloaded but Debian packages.
//!
//! ```json
//! { "type": "debootstrap", "suite": "bookworm", "disk_size": "2G",
//!   "extra_packages": ["less"], "output_directory": "output-base",
//!   "vm_name": "debian-12.qcow2" }
//! ```
//!
//! The image: an MBR partition table with one bootable ext4 partition
//! (label `root`, UUID reproducible from the inputs) booted by extlinux
//! (works under QEMU's SeaBIOS and on KVM clouds), Debian's cloud kernel,
//! systemd, dbus, openssh-server, sudo, cloud-init (NoCloud, ConfigDrive,
//! OpenStack, EC2), DHCP on every Ethernet interface (systemd-networkd),
//! console on the screen and the first serial port, `/etc/hosts` naming the
//! host, no SSH host keys (made on first boot), an empty machine id, and
//! nothing listening but sshd (and the DHCP client's port 68).
//!
//! See [`image`] for how the disk is assembled without partition devices.
//!
//! Reproducibility, measured: two builds of `examples/seed/base.json` an
//! hour apart gave images with the same size, the same files, contents,
//! modes, owners and modification times (mmdebstrap with
//! `SOURCE_DATE_EPOCH`, a file-system UUID and hash seed derived from the
//! inputs). What still differs (129,767 of 2 GiB bytes): every inode's
//! change time (mke2fs `-d` stamps the build time), `/boot/extlinux` and
//! its files (installed after mke2fs), and the superblock's timestamps.
//! Needs root (mmdebstrap's root mode, a loop mount for extlinux).
pub mod config;
pub mod driver;
pub mod fsutil;
pub mod image;

use config::{Config, Format, PARTITION_OFFSET};
use driver::{Driver, HostDriver};
use kiln_commonsteps::{HasMachine, Machine, StepOutputDir, StepProvision};
use kiln_core::context::LedgerId;
use kiln_core::{
    async_trait, run_steps, Artifact, BuildCtx, BuildError, Builder, FileArtifact, Hook, Outcome,
    PrepareOpts, Registry, Step,
};
use kiln_template::Decoder;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The builder id of the artifacts.
pub const BUILDER_ID: &str = "kiln.debootstrap";

/// Registers the `debootstrap` builder.
pub fn register(reg: &mut Registry) {
    reg.builder("debootstrap", factory);
}

fn factory(d: &mut Decoder<'_>, opts: &PrepareOpts) -> Option<Box<dyn Builder>> {
    let c = config::decode(d, opts.force);
    Some(Box::new(DebootstrapBuilder::new(c?)))
}

pub struct DebootstrapBuilder {
    pub config: Config,
    driver: Arc<dyn Driver>,
}

impl DebootstrapBuilder {
    pub fn new(config: Config) -> Self {
        DebootstrapBuilder {
            config,
            driver: Arc::new(HostDriver),
        }
    }
    /// With another driver (tests).
    pub fn with_driver(config: Config, driver: Arc<dyn Driver>) -> Self {
        DebootstrapBuilder { config, driver }
    }
}

/// What the steps share.
#[derive(Default)]
pub struct State {
    pub epoch: i64,
    /// The root file system directory (in the build's working directory).
    pub root: PathBuf,
    /// The raw disk being assembled.
    pub raw: PathBuf,
    /// Where the file system is mounted for extlinux.
    pub mnt: PathBuf,
    /// mmdebstrap's process group, once started.
    pub pgid: Arc<AtomicI32>,
    /// The finished image.
    pub image: Option<PathBuf>,
    /// No machine runs: provisioners get no communicator.
    pub machine: Machine,
}

impl HasMachine for State {
    fn machine(&mut self) -> &mut Machine {
        &mut self.machine
    }
}

#[async_trait]
impl Builder for DebootstrapBuilder {
    async fn run(
        &self,
        ctx: &BuildCtx,
        hook: &dyn Hook,
    ) -> Result<Option<Arc<dyn Artifact>>, BuildError> {
        let c = &self.config;
        let d = &self.driver;
        let mut state = State {
            root: ctx.work_dir.join("rootfs"),
            raw: ctx.work_dir.join("disk.raw"),
            mnt: ctx.work_dir.join("mnt"),
            ..Default::default()
        };
        let mut steps: Vec<Box<dyn Step<State> + '_>> = vec![
            Box::new(StepCheckHost { driver: d.clone() }),
            Box::new(StepOutputDir::new(&c.output_directory, c.force)),
            Box::new(StepEpoch { c, d: d.clone() }),
            Box::new(StepBootstrap {
                c,
                d: d.clone(),
                id: None,
            }),
            Box::new(StepCustomize { c, d: d.clone() }),
            Box::new(StepDisk {
                c,
                d: d.clone(),
                mounted: None,
                raw_id: None,
            }),
            Box::new(StepConvert { c, d: d.clone() }),
            Box::new(StepProvision { hook }),
        ];
        run_steps(&mut steps, &mut state, ctx).await?;
        let image = state
            .image
            .clone()
            .ok_or_else(|| BuildError::msg("no image was made"))?;
        let mut a = FileArtifact::new(BUILDER_ID, vec![image.clone()]);
        a.id = c.fs_uuid.clone();
        a.description = Some(format!(
            "Debian {} image ({}): {}",
            c.suite,
            c.format.as_str(),
            image.display()
        ));
        for (k, v) in [
            ("image", image.display().to_string()),
            ("format", c.format.as_str().to_string()),
            ("suite", c.suite.clone()),
            ("fs_uuid", c.fs_uuid.clone()),
            ("source_date_epoch", state.epoch.to_string()),
        ] {
            a.state.insert(k.to_string(), v);
        }
        Ok(Some(Arc::new(a)))
    }
}

fn io_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> BuildError {
    BuildError::msg(format!("{what}: {e}"))
}

/// Root and the programs are there.
struct StepCheckHost {
    driver: Arc<dyn Driver>,
}

#[async_trait]
impl Step<State> for StepCheckHost {
    fn name(&self) -> &'static str {
        "check host"
    }
    async fn run(&mut self, _: &mut State, _ctx: &BuildCtx) -> Result<(), BuildError> {
        // Only the host driver needs the host's programs and root.
        if self.driver.is_host() {
            if !nix::unistd::geteuid().is_root() {
                kiln_core::bail!(
                    "the debootstrap builder must run as root (mmdebstrap --mode=root, and a loop mount to install extlinux)"
                );
            }
            let missing = driver::missing_programs();
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

/// The timestamp files get: given, or the mirror's Release date.
struct StepEpoch<'a> {
    c: &'a Config,
    d: Arc<dyn Driver>,
}

#[async_trait]
impl Step<State> for StepEpoch<'_> {
    fn name(&self) -> &'static str {
        "source date"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        state.epoch = match self.c.source_date_epoch {
            Some(e) => e,
            None => {
                let e = self
                    .d
                    .release_date(ctx, &self.c.mirror, &self.c.suite)
                    .await?;
                ctx.ui.message(&format!(
                    "SOURCE_DATE_EPOCH={e} (the Date of {}/dists/{}/InRelease)",
                    self.c.mirror, self.c.suite
                ));
                e
            }
        };
        Ok(())
    }
}

/// mmdebstrap: the root file system, in a directory.
struct StepBootstrap<'a> {
    c: &'a Config,
    d: Arc<dyn Driver>,
    id: Option<LedgerId>,
}

#[async_trait]
impl Step<State> for StepBootstrap<'_> {
    fn name(&self) -> &'static str {
        "mmdebstrap"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        ctx.ui.say(&format!(
            "Installing Debian {} from {} with mmdebstrap ({} packages)...",
            c.suite,
            c.mirror,
            c.packages().len()
        ));
        let _ = tokio::fs::remove_dir_all(&state.root).await;
        tokio::fs::create_dir_all(&state.root)
            .await
            .map_err(|e| io_err(format!("creating {}", state.root.display()), e))?;
        self.id = Some(
            ctx.ledger
                .track(format!("root file system {}", state.root.display())),
        );
        let args = image::mmdebstrap_args(c, &state.root);
        let pg = state.pgid.clone();
        let started = move |p: i32| pg.store(p, Ordering::SeqCst);
        let t = Instant::now();
        self.d.mmdebstrap(ctx, &args, state.epoch, &started).await?;
        ctx.ui.message(&format!(
            "mmdebstrap finished in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }
    async fn cleanup(
        &mut self,
        state: &mut State,
        ctx: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        let pgid = state.pgid.load(Ordering::SeqCst);
        if pgid > 0 && kiln_core::local::group_alive(pgid) {
            // Cancelled mid-way: mmdebstrap got SIGTERM and unmounts what it
            // mounted in the chroot; wait for it before deleting anything.
            ctx.ui.say("Waiting for mmdebstrap to stop...");
            if !kiln_core::local::wait_group_gone(pgid, Duration::from_secs(30)).await {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                kiln_core::local::wait_group_gone(pgid, Duration::from_secs(5)).await;
            }
        }
        if let Some(id) = self.id.take() {
            let root = state.root.clone();
            tokio::task::spawn_blocking(move || fsutil::remove_tree(&root))
                .await
                .map_err(|e| BuildError::msg(e.to_string()))?
                .map_err(BuildError::msg)?;
            ctx.ledger.release(id);
        }
        Ok(())
    }
}

/// Configuration files, links, removals, enabled units, timestamps.
struct StepCustomize<'a> {
    c: &'a Config,
    d: Arc<dyn Driver>,
}

#[async_trait]
impl Step<State> for StepCustomize<'_> {
    fn name(&self) -> &'static str {
        "configure"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        ctx.ui
            .say("Configuring the image (host name, network, cloud-init, boot loader)...");
        let root = state.root.clone();
        let c = self.c.clone();
        tokio::task::spawn_blocking(move || write_config(&root, &c))
            .await
            .map_err(|e| BuildError::msg(e.to_string()))??;
        self.d
            .enable_units(ctx, &state.root, image::ENABLED_UNITS)
            .await?;
        let root = state.root.clone();
        let epoch = state.epoch;
        let n = tokio::task::spawn_blocking(move || fsutil::clamp_mtimes(&root, epoch))
            .await
            .map_err(|e| BuildError::msg(e.to_string()))?
            .map_err(|e| io_err("setting file times", e))?;
        ctx.ui.message(&format!(
            "{n} files made during installation dated {epoch} (SOURCE_DATE_EPOCH)"
        ));
        Ok(())
    }
}

/// Writes [`image::config_files`] and [`image::config_links`], removes
/// [`image::removed_globs`].
pub fn write_config(root: &Path, c: &Config) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    for pattern in image::removed_globs() {
        fsutil::remove_matching(root, pattern)
            .map_err(|e| io_err(format!("removing {pattern}"), e))?;
    }
    for (rel, mode, content) in image::config_files(c) {
        let p = root.join(rel);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| io_err(format!("creating {}", dir.display()), e))?;
        }
        // Replace links (e.g. a dangling one) rather than write through them.
        if p.symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            std::fs::remove_file(&p).map_err(|e| io_err(format!("removing {}", p.display()), e))?;
        }
        std::fs::write(&p, content).map_err(|e| io_err(format!("writing {}", p.display()), e))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_err(format!("chmod {}", p.display()), e))?;
    }
    for (rel, target) in image::config_links() {
        let p = root.join(rel);
        if p.symlink_metadata().is_ok() {
            std::fs::remove_file(&p).map_err(|e| io_err(format!("removing {}", p.display()), e))?;
        }
        std::os::unix::fs::symlink(target, &p)
            .map_err(|e| io_err(format!("linking {}", p.display()), e))?;
    }
    Ok(())
}

/// The raw disk: ext4 populated from the directory at 1 MiB, extlinux,
/// the MBR.
struct StepDisk<'a> {
    c: &'a Config,
    d: Arc<dyn Driver>,
    mounted: Option<LedgerId>,
    raw_id: Option<LedgerId>,
}

#[async_trait]
impl Step<State> for StepDisk<'_> {
    fn name(&self) -> &'static str {
        "disk"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        ctx.ui.say(&format!(
            "Creating the disk: {} MBR, ext4 root {} (UUID {}), extlinux...",
            kiln_core::ui::human_bytes(c.disk_size),
            c.fs_label,
            c.fs_uuid
        ));
        let f = std::fs::File::create(&state.raw)
            .map_err(|e| io_err(format!("creating {}", state.raw.display()), e))?;
        self.raw_id = Some(ctx.ledger.track(format!("disk {}", state.raw.display())));
        f.set_len(c.disk_size)
            .map_err(|e| io_err(format!("sizing {}", state.raw.display()), e))?;
        drop(f);
        self.d
            .mkfs(
                ctx,
                &image::mkfs_args(c, &state.root, &state.raw),
                state.epoch,
            )
            .await?;
        tokio::fs::create_dir_all(&state.mnt)
            .await
            .map_err(|e| io_err(format!("creating {}", state.mnt.display()), e))?;
        self.mounted = Some(ctx.ledger.track(format!("mount {}", state.mnt.display())));
        self.d
            .mount_loop(ctx, &state.raw, PARTITION_OFFSET, &state.mnt)
            .await?;
        let r = self.d.extlinux(ctx, &state.mnt.join("boot/extlinux")).await;
        self.d.umount(&state.mnt).await?;
        if let Some(id) = self.mounted.take() {
            ctx.ledger.release(id);
        }
        r?;
        let code = self.d.mbr_code().await?;
        let uuid = config::parse_uuid(&c.fs_uuid).unwrap_or_default();
        let m = image::mbr(&code, c.disk_size, image::disk_signature(&uuid))
            .map_err(BuildError::msg)?;
        write_at(&state.raw, 0, &m)
            .map_err(|e| io_err(format!("writing the MBR of {}", state.raw.display()), e))?;
        Ok(())
    }
    async fn cleanup(
        &mut self,
        state: &mut State,
        ctx: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        if let Some(id) = self.mounted.take() {
            self.d.umount(&state.mnt).await?;
            ctx.ledger.release(id);
        }
        if let Some(id) = self.raw_id.take() {
            match tokio::fs::remove_file(&state.raw).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("removing {}", state.raw.display()), e)),
            }
            ctx.ledger.release(id);
        }
        Ok(())
    }
}

fn write_at(path: &Path, offset: u64, data: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(data)?;
    f.sync_all()
}

/// The output image, written under a temporary name and renamed, so a
/// partial image never has the final name.
struct StepConvert<'a> {
    c: &'a Config,
    d: Arc<dyn Driver>,
}

#[async_trait]
impl Step<State> for StepConvert<'_> {
    fn name(&self) -> &'static str {
        "convert"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        let out = c.image_path();
        let tmp = c.output_directory.join(format!(".{}.partial", c.vm_name));
        // The directory tree is no longer needed: free its space first.
        let root = state.root.clone();
        tokio::task::spawn_blocking(move || fsutil::remove_tree(&root))
            .await
            .map_err(|e| BuildError::msg(e.to_string()))?
            .map_err(BuildError::msg)?;
        let t = Instant::now();
        if c.format == Format::Raw && tokio::fs::rename(&state.raw, &tmp).await.is_ok() {
            ctx.ui
                .say(&format!("Moving the raw image to {}", out.display()));
        } else {
            ctx.ui.say(&format!(
                "Converting to {}{}: {}",
                c.format.as_str(),
                if c.disk_compression {
                    " (compressed)"
                } else {
                    ""
                },
                out.display()
            ));
            let r = self
                .d
                .qemu_img(ctx, &image::convert_args(c, &state.raw, &tmp))
                .await;
            if r.is_err() {
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            r?;
        }
        tokio::fs::rename(&tmp, &out)
            .await
            .map_err(|e| io_err(format!("renaming to {}", out.display()), e))?;
        let size = tokio::fs::metadata(&out)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        ctx.ui.message(&format!(
            "{} ({}) in {:.1} s",
            out.display(),
            kiln_core::ui::human_bytes(size),
            t.elapsed().as_secs_f64()
        ));
        state.image = Some(out);
        Ok(())
    }
}
