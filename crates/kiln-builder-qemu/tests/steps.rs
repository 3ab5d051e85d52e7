//! Step logic behind the driver traits, without QEMU: shutdown fallbacks,
//! machine-death detection, port retries, what a build runs and what a
//! failed build leaves (nothing).
use kiln_builder_qemu::config::{Accel, Config};
use kiln_builder_qemu::driver::{Driver, Vm, VmExit};
use kiln_builder_qemu::steps::{machine_stopped, stop_machine, Stopped};
use kiln_builder_qemu::QemuBuilder;
use kiln_commonsteps::Connector;
use kiln_core::ui::{Mode, OutputConfig};
use kiln_core::{
    async_trait, BuildCtx, BuildError, Builder, Communicator, ExitStatus, Hook, Output,
};
use kiln_testkit::FakeComm;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a fake machine reacts.
#[derive(Default, Clone, Copy)]
struct Behaviour {
    /// Exits by itself this long after starting (shutdown_command works).
    exits_after: Option<Duration>,
    /// Exits when the power button is pressed.
    obeys_powerdown: bool,
    /// Exits at once, printing a port conflict.
    port_conflict: bool,
    /// QMP says this state.
    status: Option<&'static str>,
}

struct FakeVm {
    b: Behaviour,
    exit: Mutex<Option<VmExit>>,
    killed: AtomicBool,
    powerdowns: AtomicUsize,
    tx: tokio::sync::watch::Sender<bool>,
    out: Vec<String>,
}

impl FakeVm {
    fn new(b: Behaviour) -> Arc<FakeVm> {
        let (tx, _) = tokio::sync::watch::channel(false);
        let vm = Arc::new(FakeVm {
            b,
            exit: Mutex::new(None),
            killed: AtomicBool::new(false),
            powerdowns: AtomicUsize::new(0),
            tx,
            out: if b.port_conflict {
                vec!["qemu-system-x86_64: -netdev user,id=user.0,hostfwd=tcp:127.0.0.1:2300-:22: Could not set up host forwarding rule 'tcp:127.0.0.1:2300-:22'".into()]
            } else {
                vec![]
            },
        });
        if b.port_conflict {
            vm.end(1);
        } else if let Some(d) = b.exits_after {
            let v = vm.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                v.end(0);
            });
        }
        vm
    }
    fn end(&self, code: i32) {
        let mut e = self.exit.lock().unwrap();
        if e.is_none() {
            *e = Some(VmExit {
                code: Some(code),
                signal: None,
            });
        }
        self.tx.send_replace(true);
    }
}

#[async_trait]
impl Vm for FakeVm {
    fn pid(&self) -> u32 {
        4242
    }
    fn exited(&self) -> Option<VmExit> {
        self.exit.lock().unwrap().clone()
    }
    async fn wait(&self) -> VmExit {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
        self.exited().unwrap()
    }
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        let mut e = self.exit.lock().unwrap();
        if e.is_none() {
            *e = Some(VmExit {
                code: None,
                signal: Some(9),
            });
        }
        self.tx.send_replace(true);
    }
    fn output_tail(&self, _: usize) -> Vec<String> {
        self.out.clone()
    }
    async fn powerdown(&self) -> Result<(), String> {
        self.powerdowns.fetch_add(1, Ordering::SeqCst);
        if self.b.obeys_powerdown {
            self.end(0);
        }
        Ok(())
    }
    async fn status(&self) -> Result<String, String> {
        Ok(self.b.status.unwrap_or("running").to_string())
    }
}

fn ctx() -> (Output, BuildCtx, tempfile::TempDir) {
    let out = Output::capturing(OutputConfig {
        mode: Mode::Human,
        color: false,
        timestamp: false,
    });
    let d = tempfile::tempdir().unwrap();
    let ctx = BuildCtx::for_test(out.build_ui("q"), d.path().to_path_buf());
    (out, ctx, d)
}

#[tokio::test]
async fn shutdown_waits_then_presses_the_power_button_then_kills() {
    let (out, ctx, _d) = ctx();
    let short = Duration::from_millis(200);

    let vm = FakeVm::new(Behaviour {
        exits_after: Some(Duration::from_millis(50)),
        ..Default::default()
    });
    assert_eq!(
        stop_machine(vm.as_ref(), short, short, &ctx, false).await,
        Stopped::ByItself
    );
    assert_eq!(vm.powerdowns.load(Ordering::SeqCst), 0);

    let vm = FakeVm::new(Behaviour {
        obeys_powerdown: true,
        ..Default::default()
    });
    assert_eq!(
        stop_machine(vm.as_ref(), short, short, &ctx, false).await,
        Stopped::Powerdown
    );
    assert!(!vm.killed.load(Ordering::SeqCst));
    assert!(
        out.captured().contains("pressing its power button"),
        "{}",
        out.captured()
    );

    let vm = FakeVm::new(Behaviour::default());
    assert_eq!(
        stop_machine(vm.as_ref(), short, short, &ctx, false).await,
        Stopped::Killed
    );
    assert!(vm.killed.load(Ordering::SeqCst));
    assert_eq!(vm.powerdowns.load(Ordering::SeqCst), 1);
    assert!(
        out.captured().contains("ignored the power button"),
        "{}",
        out.captured()
    );

    // Without a shutdown_command: the power button first.
    let vm = FakeVm::new(Behaviour {
        obeys_powerdown: true,
        ..Default::default()
    });
    assert_eq!(
        stop_machine(vm.as_ref(), short, short, &ctx, true).await,
        Stopped::Powerdown
    );
}

#[tokio::test]
async fn a_stopped_machine_is_noticed() {
    let poll = Duration::from_millis(10);
    let vm = FakeVm::new(Behaviour {
        exits_after: Some(Duration::from_millis(30)),
        ..Default::default()
    });
    assert!(machine_stopped(vm.as_ref(), poll)
        .await
        .starts_with("QEMU exited (exit status 0)"));
    let vm = FakeVm::new(Behaviour {
        status: Some("internal-error"),
        ..Default::default()
    });
    assert_eq!(
        machine_stopped(vm.as_ref(), poll).await,
        "the machine stopped: QEMU reports its state as `internal-error`"
    );
    let vm = FakeVm::new(Behaviour {
        status: Some("running"),
        ..Default::default()
    });
    let still = tokio::time::timeout(
        Duration::from_millis(200),
        machine_stopped(vm.as_ref(), poll),
    )
    .await;
    assert!(still.is_err(), "a running machine is not reported");
}

/// A driver whose machines behave as scripted, one behaviour per start.
struct FakeDriver {
    behaviours: Mutex<Vec<Behaviour>>,
    started: Mutex<Vec<Vec<String>>>,
    vms: Mutex<Vec<Arc<FakeVm>>>,
    img: Mutex<Vec<String>>,
}

impl FakeDriver {
    fn new(b: Vec<Behaviour>) -> Arc<FakeDriver> {
        Arc::new(FakeDriver {
            behaviours: Mutex::new(b),
            started: Mutex::new(vec![]),
            vms: Mutex::new(vec![]),
            img: Mutex::new(vec![]),
        })
    }
}

#[async_trait]
impl Driver for FakeDriver {
    async fn start_vm(
        &self,
        _: &str,
        args: &[String],
        _: &Path,
        _: &Path,
    ) -> Result<Arc<dyn Vm>, BuildError> {
        self.started.lock().unwrap().push(args.to_vec());
        let b = {
            let mut v = self.behaviours.lock().unwrap();
            if v.len() > 1 {
                v.remove(0)
            } else {
                v[0]
            }
        };
        let vm = FakeVm::new(b);
        self.vms.lock().unwrap().push(vm.clone());
        Ok(vm)
    }
    async fn qemu_img(&self, _: &BuildCtx, args: &[String]) -> Result<String, BuildError> {
        self.img.lock().unwrap().push(args.join(" "));
        if args[0] == "convert" {
            std::fs::write(args.last().unwrap(), "converted").unwrap();
        }
        Ok(String::new())
    }
    async fn probe_kvm(&self, _: &str, _: &Path) -> Result<(), String> {
        Err("scripted: no KVM".into())
    }
    async fn make_iso(
        &self,
        _: &BuildCtx,
        dir: &Path,
        label: &str,
        out: &Path,
    ) -> Result<(), BuildError> {
        assert_eq!(label, "cidata");
        let ud = std::fs::read_to_string(dir.join("user-data")).unwrap();
        assert!(ud.contains("ssh-ed25519 "));
        std::fs::write(out, "iso").unwrap();
        Ok(())
    }
}

/// Hands out `comm` (kiln-testkit's fake communicator) for every
/// connection, keeping the ports asked for.
struct FakeConnector {
    comm: Arc<FakeComm>,
    ports: Mutex<Vec<u16>>,
}

impl FakeConnector {
    fn new(comm: FakeComm) -> Arc<FakeConnector> {
        Arc::new(FakeConnector {
            comm: Arc::new(comm),
            ports: Mutex::new(vec![]),
        })
    }
}

#[async_trait]
impl Connector for FakeConnector {
    async fn connect(
        &self,
        _: &BuildCtx,
        host: &str,
        port: u16,
        key: Option<&kiln_ssh::TempKeyPair>,
    ) -> Result<Arc<dyn Communicator>, BuildError> {
        assert_eq!(host, "127.0.0.1");
        assert!(key.is_some(), "the per-build key is offered");
        self.ports.lock().unwrap().push(port);
        Ok(self.comm.clone())
    }
}

struct FailingHook;
#[async_trait]
impl Hook for FailingHook {
    async fn provision(
        &self,
        _: &BuildCtx,
        _: Option<Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        Err(BuildError::msg(
            "Script exited with non-zero exit status: 1",
        ))
    }
}

fn config(dir: &Path) -> Config {
    let base = dir.join("base.qcow2");
    std::fs::write(&base, "base").unwrap();
    let mut c = Config::with_defaults("q", "debian");
    c.iso.urls = vec![base.display().to_string()];
    c.disk_image = true;
    c.headless = true;
    c.cloud_init_seed = true;
    c.disable_vnc = true;
    c.accelerator = Accel::Auto;
    c.output_directory = dir.join("out");
    c.shutdown_command = Some("sudo poweroff".into());
    c.shutdown_timeout = Duration::from_secs(1);
    c
}

fn builder(c: Config, d: Arc<FakeDriver>, conn: Arc<FakeConnector>) -> QemuBuilder {
    let mut b = QemuBuilder::with(c, d, conn);
    b.settle = Duration::from_millis(100);
    b.after_powerdown = Duration::from_millis(200);
    b
}

#[tokio::test]
async fn a_build_runs_the_steps_in_packers_order() {
    let (out, ctx, d) = ctx();
    let c = config(d.path());
    let driver = FakeDriver::new(vec![Behaviour {
        exits_after: Some(Duration::from_millis(400)),
        ..Default::default()
    }]);
    let conn = FakeConnector::new(FakeComm::new());
    let a = builder(c.clone(), driver.clone(), conn.clone())
        .run(&ctx, &kiln_core::component::NoHook)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", out.captured()))
        .unwrap();
    let img = driver.img.lock().unwrap().clone();
    let disk = d.path().join("out/packer-q").display().to_string();
    assert_eq!(img.len(), 2, "{img:?}");
    assert_eq!(img[0], format!("resize -f qcow2 {disk} 40960M"));
    assert_eq!(img[1], format!("convert -O qcow2 {disk} {disk}.convert"));
    // The copy of the source (same extension: a file copy).
    assert_eq!(std::fs::read_to_string(&disk).unwrap(), "converted");
    let args = driver.started.lock().unwrap()[0].join(" ");
    assert!(
        args.contains("-accel tcg,thread=multi -cpu qemu64"),
        "{args}"
    );
    assert!(args.contains("media=cdrom"), "the seed CD: {args}");
    let port = conn.ports.lock().unwrap()[0];
    assert!(
        args.contains(&format!("hostfwd=tcp:127.0.0.1:{port}-:22")),
        "{args}"
    );
    let cmds = conn.comm.commands();
    assert!(
        cmds[0].starts_with("sed -i '/ kiln-"),
        "temporary key removed: {cmds:?}"
    );
    assert_eq!(cmds[1], "sudo poweroff");
    assert_eq!(a.files(), vec![PathBuf::from(&disk)]);
    assert_eq!(a.state("domainType").as_deref(), Some("tcg"));
    let log = out.captured();
    assert!(
        log.contains("KVM cannot run a guest here (scripted: no KVM)")
            || log.contains("Starting VM"),
        "{log}"
    );
    assert!(log.contains("The machine powered off."), "{log}");
    assert!(ctx.ledger.live().is_empty());
}

#[tokio::test]
async fn a_taken_port_is_retried_with_another() {
    let (out, ctx, d) = ctx();
    let c = config(d.path());
    let driver = FakeDriver::new(vec![
        Behaviour {
            port_conflict: true,
            ..Default::default()
        },
        Behaviour {
            exits_after: Some(Duration::from_millis(400)),
            ..Default::default()
        },
    ]);
    let conn = FakeConnector::new(FakeComm::new());
    builder(c, driver.clone(), conn.clone())
        .run(&ctx, &kiln_core::component::NoHook)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", out.captured()));
    let started = driver.started.lock().unwrap().clone();
    assert_eq!(started.len(), 2);
    let fwd = |a: &Vec<String>| a.iter().find(|x| x.contains("hostfwd")).unwrap().clone();
    assert_ne!(fwd(&started[0]), fwd(&started[1]));
    assert!(
        out.captured().contains("Port taken meanwhile"),
        "{}",
        out.captured()
    );
}

#[tokio::test]
async fn a_failed_provisioner_stops_qemu_and_removes_the_output() {
    let (out, ctx, d) = ctx();
    let c = config(d.path());
    let driver = FakeDriver::new(vec![Behaviour::default()]);
    let conn = FakeConnector::new(FakeComm::new());
    let e = builder(c, driver.clone(), conn)
        .run(&ctx, &FailingHook)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("non-zero exit status"), "{e}");
    let vm = driver.vms.lock().unwrap()[0].clone();
    assert!(vm.killed.load(Ordering::SeqCst), "QEMU stopped");
    assert!(!d.path().join("out").exists(), "output removed");
    for f in ["seed", "seed.iso", "serial.log", "qemu.log"] {
        assert!(!d.path().join(f).exists(), "{f} removed");
    }
    assert!(ctx.ledger.live().is_empty(), "{:?}", ctx.ledger.live());
    assert!(
        out.captured().contains("Deleting output directory"),
        "{}",
        out.captured()
    );
}

#[tokio::test]
async fn a_machine_ignoring_shutdown_is_powered_down_then_killed_and_the_build_fails() {
    let (out, ctx, d) = ctx();
    let c = config(d.path());
    let driver = FakeDriver::new(vec![Behaviour::default()]);
    let conn = FakeConnector::new(FakeComm::new());
    let e = builder(c, driver.clone(), conn)
        .run(&ctx, &kiln_core::component::NoHook)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("QEMU was killed"), "{e}");
    let vm = driver.vms.lock().unwrap()[0].clone();
    assert_eq!(vm.powerdowns.load(Ordering::SeqCst), 1);
    assert!(vm.killed.load(Ordering::SeqCst));
    let log = out.captured();
    assert!(
        log.contains("pressing its power button") && log.contains("killing QEMU"),
        "{log}"
    );
    assert!(!d.path().join("out").exists());
}

#[tokio::test]
async fn a_failing_shutdown_command_presses_the_power_button_at_once() {
    let (out, ctx, d) = ctx();
    let mut c = config(d.path());
    // Long: the build must not wait for it.
    c.shutdown_timeout = Duration::from_secs(3600);
    let driver = FakeDriver::new(vec![Behaviour {
        obeys_powerdown: true,
        ..Default::default()
    }]);
    // A communicator whose shutdown command fails.
    let conn = FakeConnector::new(FakeComm::answering(|command, out| {
        if command.contains("poweroff") {
            out.stderr_line("sudo: poweroff: command not found");
            ExitStatus::Code(1)
        } else {
            ExitStatus::Code(0)
        }
    }));
    let mut b = QemuBuilder::with(c, driver.clone(), conn);
    b.settle = Duration::from_millis(100);
    b.after_powerdown = Duration::from_secs(5);
    b.run(&ctx, &kiln_core::component::NoHook)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", out.captured()));
    let vm = driver.vms.lock().unwrap()[0].clone();
    assert_eq!(vm.powerdowns.load(Ordering::SeqCst), 1);
    assert!(!vm.killed.load(Ordering::SeqCst));
    let log = out.captured();
    assert!(
        log.contains("The shutdown command failed (exit status 1)"),
        "{log}"
    );
    assert!(log.contains("powered off after the power button"), "{log}");
}

#[tokio::test]
async fn a_continued_machine_is_not_typed_to() {
    use kiln_builder_qemu::steps::{State, StepTypeBootCommand};
    use kiln_core::Step;
    let (out, ctx, d) = ctx();
    let mut c = config(d.path());
    c.boot_command = kiln_bootcommand::BootCommand::new(vec!["<enter>".into()]);
    c.boot_wait = Duration::from_secs(3600);
    let mut state = State::new(d.path());
    // Continued from a cached memory: no wait, no keys (there is no QMP
    // socket: typing would fail).
    state.resumed_from = Some(1_796_000_000);
    let mut step = StepTypeBootCommand { c: &c };
    tokio::time::timeout(Duration::from_secs(5), step.run(&mut state, &ctx))
        .await
        .expect("no boot_wait")
        .unwrap();
    assert!(
        out.captured()
            .contains("Not typing the boot command: the machine was continued, not booted"),
        "{}",
        out.captured()
    );
    // Booted: it waits for boot_wait first.
    state.resumed_from = None;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), step.run(&mut state, &ctx))
            .await
            .is_err(),
        "a booted machine waits boot_wait, then types"
    );
}
