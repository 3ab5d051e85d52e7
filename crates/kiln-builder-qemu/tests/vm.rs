//! Real QEMU guests (TCG here): the base image from the debootstrap
//! builder, booted by the qemu builder, provisioned over SSH, shut down,
//! converted. Slow (a minute or two per guest): ignored by default;
//! scripts/test.sh runs them (`--include-ignored`), and then they never
//! skip. `cargo test` alone runs the fast suites only.
//!
//! The base image is built once into `target/tmp` and reused for a day
//! (KILN_TEST_BASE_IMAGE=path uses another one).
use kiln_builder_debootstrap::DebootstrapBuilder;
use kiln_builder_qemu::config::Config;
use kiln_builder_qemu::QemuBuilder;
use kiln_core::component::NoHook;
use kiln_core::ui::{Mode, OutputConfig};
use kiln_core::{async_trait, BuildCtx, BuildError, Builder, Communicator, Hook, OnError, Output};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One guest at a time: the machine has two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn output() -> Output {
    Output::capturing(OutputConfig {
        mode: Mode::Human,
        color: false,
        timestamp: false,
    })
}

async fn base_image() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_TEST_BASE_IMAGE") {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-base");
    let img = dir.join("debian-12.qcow2");
    let fresh = std::fs::metadata(&img)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(86400));
    if fresh {
        return img;
    }
    let work = tempfile::tempdir().unwrap();
    let mut c = kiln_builder_debootstrap::config::Config::with_defaults("base");
    c.output_directory = dir.clone();
    c.vm_name = "debian-12.qcow2".into();
    c.force = true;
    let out = output();
    let ctx = BuildCtx::for_test(out.build_ui("base"), work.path().to_path_buf());
    DebootstrapBuilder::new(c)
        .run(&ctx, &NoHook)
        .await
        .unwrap_or_else(|e| panic!("base image: {e}\n{}", out.captured()));
    img
}

fn config(dir: &Path, base: &Path) -> Config {
    let mut c = Config::with_defaults("vm", "debian");
    c.iso.urls = vec![base.display().to_string()];
    c.iso.checksum = "none".into();
    c.disk_image = true;
    c.headless = true;
    c.cloud_init_seed = true;
    c.memory = 1024;
    c.cpus = 2;
    c.disk_size = "3G".into();
    c.output_directory = dir.join("output-vm");
    c.shutdown_command = Some("sudo shutdown -P now".into());
    c.comm.timeout = Duration::from_secs(300);
    c
}

/// Runs shell commands through the communicator; fails on a non-zero
/// exit; keeps what they printed.
struct Commands {
    cmds: Vec<String>,
    out: Mutex<Vec<String>>,
}

struct Sink<'a>(&'a Mutex<Vec<String>>);
impl kiln_core::OutputSink for Sink<'_> {
    fn stdout_line(&self, l: &str) {
        self.0.lock().unwrap().push(l.to_string());
    }
    fn stderr_line(&self, l: &str) {
        self.0.lock().unwrap().push(l.to_string());
    }
}

#[async_trait]
impl Hook for Commands {
    async fn provision(
        &self,
        _: &BuildCtx,
        comm: Option<Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        let comm = comm.expect("a communicator");
        for c in &self.cmds {
            match comm.start(c, &Sink(&self.out)).await? {
                kiln_core::ExitStatus::Code(0) => {}
                s => return Err(BuildError::msg(format!("`{c}` ended with {s:?}"))),
            }
        }
        Ok(())
    }
}

/// QEMU children still alive after a grace period for a SIGKILL sent at
/// drop time to land (the supervisor thread reaps asynchronously).
async fn qemu_left() -> Vec<u32> {
    for _ in 0..50 {
        if pids_of_children().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pids_of_children()
}

fn pids_of_children() -> Vec<u32> {
    // QEMU processes whose parent is this test process.
    let me = std::process::id();
    let mut v = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit(") ").next() else {
            continue;
        };
        // A killed QEMU not yet reaped (a zombie) is gone for our purpose.
        if rest.starts_with('Z') {
            continue;
        }
        let ppid: u32 = rest
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if ppid == me && comm.starts_with("qemu-system") {
            v.push(pid);
        }
    }
    v
}

#[tokio::test]
#[ignore = "boots or builds a real image (slow): scripts/test.sh runs it with --include-ignored"]
async fn boots_the_base_image_provisions_and_writes_the_disk() {
    let _one = SERIAL.lock().await;
    let base = base_image().await;
    let d = tempfile::tempdir().unwrap();
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let c = config(d.path(), &base);
    let hook = Commands {
        cmds: vec![
            "echo user=$(id -un) && sudo -n true && echo sudo=ok".into(),
            "echo kiln > /tmp/x && sudo mkdir -p /stash && sudo chmod 777 /stash && echo data > /stash/f".into(),
            "hostname && grep -c \"$(hostname)\" /etc/hosts".into(),
            // After the boot settles: kiln logs in as soon as sshd listens,
            // and cloud-init's later stages may still restart sshd (for
            // `ssh_pwauth`), leaving a moment with no listener at all.
            "sudo systemctl is-system-running --wait >/dev/null || true; \
             sudo ss -Htln | awk '{print $4}' | sort -u | tr '\\n' ' '"
                .into(),
        ],
        out: Mutex::new(vec![]),
    };
    let out = output();
    let ctx = BuildCtx::for_test(out.build_ui("vm"), work.clone());
    let a = QemuBuilder::new(c.clone())
        .run(&ctx, &hook)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", out.captured()))
        .unwrap();
    let said = hook.out.lock().unwrap().clone();
    assert!(said.contains(&"user=debian".to_string()), "{said:?}");
    assert!(said.contains(&"sudo=ok".to_string()), "{said:?}");
    // Only sshd listens (on port 22, IPv4 and IPv6).
    let listening = said.last().unwrap();
    assert_eq!(listening.trim(), "0.0.0.0:22 [::]:22", "{said:?}");
    let log = out.captured();
    assert!(log.contains("SSH answered"), "{log}");
    assert!(log.contains("The machine powered off."), "{log}");
    let img = d.path().join("output-vm/packer-vm");
    assert_eq!(a.files(), vec![img.clone()]);
    assert_eq!(a.builder_id(), "transcend.qemu");
    assert!(qemu_left().await.is_empty(), "no QEMU left");
    assert!(ctx.ledger.live().is_empty(), "{:?}", ctx.ledger.live());
    // The disk is a sound qcow2 with the resized virtual size.
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&img)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    assert!(
        info.contains(&format!("\"virtual-size\": {}", 3u64 << 30)),
        "{info}"
    );
    // The build's files are gone from the working directory.
    let left: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
#[ignore = "boots or builds a real image (slow): scripts/test.sh runs it with --include-ignored"]
async fn a_failing_provisioner_leaves_no_qemu_no_files_no_output() {
    let _one = SERIAL.lock().await;
    let base = base_image().await;
    for on_error in [OnError::Cleanup, OnError::Abort] {
        let d = tempfile::tempdir().unwrap();
        let work = d.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let c = config(d.path(), &base);
        let hook = Commands {
            cmds: vec!["echo failing; exit 1".into()],
            out: Mutex::new(vec![]),
        };
        let out = output();
        let mut ctx = BuildCtx::for_test(out.build_ui("vm"), work.clone());
        ctx.on_error = on_error;
        let e = QemuBuilder::new(c.clone())
            .run(&ctx, &hook)
            .await
            .err()
            .expect("the build fails");
        assert!(e.to_string().contains("ended with Code(1)"), "{e}");
        assert!(qemu_left().await.is_empty(), "{on_error:?}: no QEMU left");
        let out_dir = d.path().join("output-vm");
        if on_error == OnError::Abort {
            assert!(out_dir.join("packer-vm").exists(), "kept for debugging");
        } else {
            assert!(!out_dir.exists(), "output removed");
            let left: Vec<_> = std::fs::read_dir(&work)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert!(left.is_empty(), "{left:?}");
            assert!(ctx.ledger.live().is_empty());
            assert!(
                out.captured().contains("Last lines of the serial console"),
                "{}",
                out.captured()
            );
        }
    }
}

#[tokio::test]
#[ignore = "boots or builds a real image (slow): scripts/test.sh runs it with --include-ignored"]
async fn a_guest_that_dies_fails_at_once_with_qemus_words() {
    let _one = SERIAL.lock().await;
    let base = base_image().await;
    let d = tempfile::tempdir().unwrap();
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut c = config(d.path(), &base);
    // The guest powers itself off at boot, before sshd: kiln must not wait
    // out ssh_timeout.
    c.comm.timeout = Duration::from_secs(600);
    c.qemuargs = vec![vec!["-no-reboot".into()]];
    // No KVM probe: the killer below must hit the build's QEMU, not the
    // probe's.
    c.accelerator = kiln_builder_qemu::config::Accel::Named("tcg".into());
    let hook = NoHook;
    let out = output();
    let ctx = BuildCtx::for_test(out.build_ui("vm"), work.clone());
    let b = QemuBuilder::new(c);
    let run = b.run(&ctx, &hook);
    // Kill QEMU from outside once it runs: the build must notice at once.
    let killer = async {
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if let Some(p) = pids_of_children().first() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*p as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                return;
            }
        }
    };
    let (r, ()) = tokio::join!(run, killer);
    let e = r.err().expect("fails").to_string();
    assert!(
        e.contains("QEMU exited") && e.contains("while waiting for SSH"),
        "{e}"
    );
    assert!(qemu_left().await.is_empty());
}

/// Reboots the machine over SSH and checks it came back as a new boot.
struct Reboot {
    out: Mutex<Vec<String>>,
}

impl Reboot {
    async fn boot_id(&self, comm: &dyn Communicator) -> Result<String, BuildError> {
        let before = self.out.lock().unwrap().len();
        match comm
            .start("cat /proc/sys/kernel/random/boot_id", &Sink(&self.out))
            .await?
        {
            kiln_core::ExitStatus::Code(0) => {}
            s => return Err(BuildError::msg(format!("boot_id: {s:?}"))),
        }
        Ok(self.out.lock().unwrap()[before..].join(""))
    }
}

#[async_trait]
impl Hook for Reboot {
    async fn provision(
        &self,
        _: &BuildCtx,
        comm: Option<Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        let comm = comm.expect("a communicator");
        let first = self.boot_id(&*comm).await?;
        // The reboot takes the connection down without a FIN. Keep-alives
        // are off in this test, so only QEMU's RESET event can end this
        // command: without it, it would wait out the guard below.
        let st = tokio::time::timeout(
            Duration::from_secs(600),
            comm.start("sudo systemctl reboot; sleep 600", &Sink(&self.out)),
        )
        .await
        .map_err(|_| BuildError::msg("the reboot was never noticed"))??;
        if st != kiln_core::ExitStatus::Disconnected {
            return Err(BuildError::msg(format!("reboot command ended with {st:?}")));
        }
        comm.reconnect(Duration::from_secs(300)).await?;
        let second = self.boot_id(&*comm).await?;
        if first == second || second.is_empty() {
            return Err(BuildError::msg(format!(
                "not a new boot: {first:?} then {second:?}"
            )));
        }
        Ok(())
    }
}

#[tokio::test]
#[ignore = "boots or builds a real image (slow): scripts/test.sh runs it with --include-ignored"]
async fn a_reboot_is_seen_through_qemus_reset_event_not_keep_alives() {
    let _one = SERIAL.lock().await;
    let base = base_image().await;
    let d = tempfile::tempdir().unwrap();
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut c = config(d.path(), &base);
    c.comm.keep_alive_interval = None;
    c.skip_compaction = true;
    let hook = Reboot {
        out: Mutex::new(vec![]),
    };
    let out = output();
    let ctx = BuildCtx::for_test(out.build_ui("vm"), work.clone());
    QemuBuilder::new(c)
        .run(&ctx, &hook)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", out.captured()));
    let log = out.captured();
    assert!(
        log.contains("The machine reset itself (a reboot): dropping the SSH connection now"),
        "{log}"
    );
    assert!(qemu_left().await.is_empty(), "no QEMU left");
}

/// Ctrl-C (the build's cancel token, which the CLI's SIGINT handler
/// cancels: crates/kiln-cli/tests/signals.rs) with a real guest, once while
/// it boots and kiln waits for SSH, once while a provisioner command runs
/// in it: QEMU is stopped, the output directory and every file kiln made
/// are removed, and nothing is left in the ledger.
#[tokio::test]
#[ignore = "boots or builds a real image (slow): scripts/test.sh runs it with --include-ignored"]
async fn a_cancelled_build_leaves_no_qemu_no_files_no_output() {
    let _one = SERIAL.lock().await;
    let base = base_image().await;
    // What runs in the guest; whether to cancel while it boots (as soon as
    // QEMU runs) or once the command has started.
    let cases = [("true", true), ("echo started; sleep 600", false)];
    for (cmd, while_booting) in cases {
        let d = tempfile::tempdir().unwrap();
        let work = d.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let c = config(d.path(), &base);
        let hook = Commands {
            cmds: vec![cmd.into()],
            out: Mutex::new(vec![]),
        };
        let out = output();
        let ctx = BuildCtx::for_test(out.build_ui("vm"), work.clone());
        let cancel = ctx.cancel.clone();
        let builder = QemuBuilder::new(c.clone());
        let started = std::time::Instant::now();
        let run = builder.run(&ctx, &hook);
        tokio::pin!(run);
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    let now = if while_booting {
                        // QEMU runs: the guest is booting, no SSH yet.
                        let said = out.captured();
                        !pids_of_children().is_empty()
                            && said.contains("Waiting for SSH to become available")
                            && !said.contains("Connected to SSH")
                    } else {
                        hook.out.lock().unwrap().iter().any(|l| l == "started")
                    };
                    if now && !cancel.is_cancelled() {
                        cancel.cancel();
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(600),
                        "{cmd}: never reached the point to cancel at: {}",
                        out.captured()
                    );
                }
            }
        };
        let e = result.err().expect("a cancelled build fails");
        assert!(e.is_cancelled(), "{cmd}: cancelled, not another error: {e}");
        assert!(qemu_left().await.is_empty(), "{cmd}: no QEMU left");
        assert!(
            !d.path().join("output-vm").exists(),
            "{cmd}: output removed"
        );
        let left: Vec<_> = std::fs::read_dir(&work)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{cmd}: {left:?}");
        assert!(ctx.ledger.live().is_empty(), "{cmd}");
    }
}
