//! The builder's steps with a scripted driver: what runs, in which order,
//! and what is left after a failure (nothing).
use kiln_builder_debootstrap::config::Config;
use kiln_builder_debootstrap::driver::Driver;
use kiln_builder_debootstrap::DebootstrapBuilder;
use kiln_core::component::NoHook;
use kiln_core::ui::{Mode, OutputConfig};
use kiln_core::{async_trait, BuildCtx, BuildError, Builder, Output};
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
    fail: Option<&'static str>,
}

impl Fake {
    fn call(&self, what: &str) -> Result<(), BuildError> {
        self.calls.lock().unwrap().push(what.to_string());
        if self.fail == Some(what) {
            return Err(BuildError::msg(format!("{what} failed (scripted)")));
        }
        Ok(())
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Driver for Fake {
    async fn mmdebstrap(
        &self,
        _: &BuildCtx,
        args: &[String],
        epoch: i64,
        _started: &(dyn Fn(i32) + Send + Sync),
    ) -> Result<(), BuildError> {
        assert_eq!(epoch, 1_700_000_000);
        let target = Path::new(&args[args.len() - 2]);
        std::fs::create_dir_all(target.join("etc/ssh")).unwrap();
        std::fs::write(target.join("etc/ssh/ssh_host_ed25519_key"), "secret").unwrap();
        std::fs::write(target.join("etc/hostname"), "builder-host\n").unwrap();
        self.call("mmdebstrap")
    }
    async fn release_date(&self, _: &BuildCtx, _: &str, _: &str) -> Result<i64, BuildError> {
        self.call("release_date")?;
        Ok(1_700_000_000)
    }
    async fn enable_units(
        &self,
        _: &BuildCtx,
        root: &Path,
        units: &[&str],
    ) -> Result<(), BuildError> {
        // What the image must contain by now.
        assert!(!root.join("etc/ssh/ssh_host_ed25519_key").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "debian\n"
        );
        assert!(root.join("boot/extlinux/extlinux.conf").is_file());
        assert!(units.contains(&"systemd-networkd.service"));
        self.call("enable_units")
    }
    async fn mkfs(&self, _: &BuildCtx, args: &[String], _: i64) -> Result<(), BuildError> {
        assert!(args.iter().any(|a| a.starts_with("offset=1048576")));
        self.call("mkfs")
    }
    async fn mount_loop(
        &self,
        _: &BuildCtx,
        _: &Path,
        offset: u64,
        _: &Path,
    ) -> Result<(), BuildError> {
        assert_eq!(offset, 1 << 20);
        self.call("mount")
    }
    async fn umount(&self, _: &Path) -> Result<(), BuildError> {
        self.call("umount")
    }
    async fn extlinux(&self, _: &BuildCtx, dir: &Path) -> Result<(), BuildError> {
        assert!(dir.ends_with("mnt/boot/extlinux"));
        self.call("extlinux")
    }
    async fn mbr_code(&self) -> Result<Vec<u8>, BuildError> {
        self.call("mbr_code")?;
        Ok(vec![0xeb; 440])
    }
    async fn qemu_img(&self, _: &BuildCtx, args: &[String]) -> Result<(), BuildError> {
        self.call("qemu_img")?;
        std::fs::write(args.last().unwrap(), "image").unwrap();
        Ok(())
    }
}

fn ctx(work: &Path) -> (Output, BuildCtx) {
    let out = Output::capturing(OutputConfig {
        mode: Mode::Human,
        color: false,
        timestamp: false,
    });
    let ctx = BuildCtx::for_test(out.build_ui("base"), work.to_path_buf());
    (out, ctx)
}

fn config(dir: &Path) -> Config {
    let mut c = Config::with_defaults("base");
    c.output_directory = dir.join("output-base");
    c.vm_name = "base.qcow2".into();
    c
}

#[tokio::test]
async fn a_build_runs_every_program_in_order_and_keeps_only_the_image() {
    let d = tempfile::tempdir().unwrap();
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let fake = Arc::new(Fake::default());
    let b = DebootstrapBuilder::with_driver(config(d.path()), fake.clone());
    let (out, ctx) = ctx(&work);
    let a = b.run(&ctx, &NoHook).await.unwrap().unwrap();
    assert_eq!(
        fake.calls(),
        [
            "release_date",
            "mmdebstrap",
            "enable_units",
            "mkfs",
            "mount",
            "extlinux",
            "umount",
            "mbr_code",
            "qemu_img"
        ]
    );
    let img = d.path().join("output-base/base.qcow2");
    assert_eq!(a.files(), vec![img.clone()]);
    assert!(img.is_file());
    // Only the image in the output directory; the working files are gone.
    assert_eq!(
        std::fs::read_dir(d.path().join("output-base"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(
        std::fs::read_dir(&work)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "mnt")
            .count(),
        0,
        "{:?}",
        std::fs::read_dir(&work).unwrap().collect::<Vec<_>>()
    );
    assert!(ctx.ledger.live().is_empty(), "{:?}", ctx.ledger.live());
    assert!(out.captured().contains("Creating the disk"));
}

#[tokio::test]
async fn a_failure_leaves_nothing_mounted_and_no_output() {
    let d = tempfile::tempdir().unwrap();
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let fake = Arc::new(Fake {
        fail: Some("extlinux"),
        ..Default::default()
    });
    let b = DebootstrapBuilder::with_driver(config(d.path()), fake.clone());
    let (out, ctx) = ctx(&work);
    let err = b.run(&ctx, &NoHook).await.err().expect("fails");
    assert!(err.to_string().contains("extlinux failed"), "{err}");
    let calls = fake.calls();
    assert_eq!(
        calls.last().map(String::as_str),
        Some("umount"),
        "{calls:?}"
    );
    assert!(!d.path().join("output-base").exists());
    assert!(!work.join("rootfs").exists());
    assert!(!work.join("disk.raw").exists());
    assert!(ctx.ledger.live().is_empty(), "{:?}", ctx.ledger.live());
    assert!(out.captured().contains("Cleaned up"), "{}", out.captured());
}

#[tokio::test]
async fn an_existing_output_directory_is_an_error_without_force() {
    let d = tempfile::tempdir().unwrap();
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::create_dir(d.path().join("output-base")).unwrap();
    std::fs::write(d.path().join("output-base/keep"), "x").unwrap();
    let fake = Arc::new(Fake::default());
    let b = DebootstrapBuilder::with_driver(config(d.path()), fake.clone());
    let (_out, ctx) = ctx(&work);
    let err = b.run(&ctx, &NoHook).await.err().expect("fails");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(d.path().join("output-base/keep").exists(), "left alone");
    assert!(fake.calls().is_empty());

    let mut c = config(d.path());
    c.force = true;
    let b = DebootstrapBuilder::with_driver(c, fake.clone());
    b.run(&ctx, &NoHook).await.unwrap();
    assert!(
        !d.path().join("output-base/keep").exists(),
        "replaced with -force"
    );
}
