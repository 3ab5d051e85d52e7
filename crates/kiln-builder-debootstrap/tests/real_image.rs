//! Builds a real image with mmdebstrap (about a minute; needs root and the
//! Debian mirror). Ignored by default; scripts/test.sh runs it (--include-ignored), and then
//! never skips. Booting the image is tested by kiln-builder-qemu.
use kiln_builder_debootstrap::config::Config;
use kiln_builder_debootstrap::DebootstrapBuilder;
use kiln_core::component::NoHook;
use kiln_core::ui::{Mode, OutputConfig};
use kiln_core::{BuildCtx, Builder, Output};
use std::path::Path;
use std::process::Command;

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Unmounts on drop (also when an assertion fails).
struct Mounted<'a>(&'a Path);
impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[tokio::test]
#[ignore = "boots or builds a real image (slow): scripts/test.sh runs it with --include-ignored"]
async fn builds_a_bootable_looking_debian_image() {
    let d = tempfile::tempdir().unwrap();
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut c = Config::with_defaults("base");
    c.output_directory = d.path().join("out");
    c.vm_name = "base.raw".into();
    c.format = kiln_builder_debootstrap::config::Format::Raw;
    c.extra_packages = vec!["less".into()];
    c.fs_uuid = kiln_builder_debootstrap::config::derived_uuid(&c);
    let uuid = c.fs_uuid.clone();
    let out = Output::capturing(OutputConfig {
        mode: Mode::Human,
        color: false,
        timestamp: false,
    });
    let ctx = BuildCtx::for_test(out.build_ui("base"), work.clone());
    let a = DebootstrapBuilder::new(c)
        .run(&ctx, &NoHook)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", out.captured()))
        .unwrap();
    let img = d.path().join("out/base.raw");
    assert_eq!(a.files(), vec![img.clone()]);
    assert!(ctx.ledger.live().is_empty());
    assert!(!work.join("rootfs").exists(), "root directory removed");

    // One bootable Linux partition at 1 MiB.
    let table = sh(&format!("sfdisk -d {}", img.display()));
    assert!(
        table.contains("start=        2048") && table.contains("type=83, bootable"),
        "{table}"
    );
    // The file system: label and UUID, and what is inside.
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(&format!(
        "mount -o ro,loop,offset=1048576 {} {}",
        img.display(),
        mnt.display()
    ));
    let _m = Mounted(&mnt);
    let blk = sh(&format!("findmnt -n -o LABEL,UUID {}", mnt.display()));
    assert_eq!(
        blk.split_whitespace().collect::<Vec<_>>(),
        ["root", uuid.as_str()]
    );
    let read = |p: &str| std::fs::read_to_string(mnt.join(p)).unwrap_or_default();
    assert_eq!(read("etc/hostname"), "debian\n");
    assert!(read("etc/hosts").contains("127.0.1.1\tdebian"));
    assert!(read("etc/fstab").contains(&format!("UUID={uuid}")));
    assert!(read("boot/extlinux/extlinux.conf").contains(&format!("root=UUID={uuid}")));
    assert!(mnt.join("boot/extlinux/ldlinux.sys").exists());
    assert!(mnt.join("vmlinuz").exists() && mnt.join("initrd.img").exists());
    assert_eq!(read("etc/machine-id"), "");
    let keys: Vec<_> = std::fs::read_dir(mnt.join("etc/ssh"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ssh_host_"))
        .collect();
    assert!(keys.is_empty(), "no host keys baked in: {keys:?}");
    let status = read("var/lib/dpkg/status");
    for p in [
        "linux-image-cloud-amd64",
        "systemd",
        "dbus",
        "openssh-server",
        "sudo",
        "cloud-init",
        "less",
    ] {
        assert!(status.contains(&format!("Package: {p}\n")), "{p} installed");
    }
    assert!(mnt
        .join("etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
        .exists());
}
