//! The KVM probe guest itself is correct: under TCG (which always works)
//! it prints its message and exits QEMU with status 33, so when it fails
//! under KVM, KVM is at fault. Needs qemu-system-x86_64 (fast).
use std::process::Command;

#[test]
fn the_probe_guest_passes_under_tcg() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("probe.img");
    std::fs::write(&img, kiln_builder_qemu::driver::KVM_PROBE).unwrap();
    let mut args = kiln_builder_qemu::driver::probe_args(&img);
    // The same guest, with TCG instead of KVM.
    let i = args.iter().position(|a| a == "kvm").unwrap();
    args[i] = "tcg".into();
    args.extend(["-cpu".into(), "max".into()]);
    let out = Command::new("qemu-system-x86_64")
        .args(&args)
        .output()
        .expect("qemu-system-x86_64 (scripts/setup.sh installs it)");
    assert_eq!(out.status.code(), Some(33), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("kiln-kvm-ok"));
}
