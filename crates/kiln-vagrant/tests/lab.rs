//! testlab/vagrant end to end: a box made by kiln (the qemu builder under
//! TCG, then this post-processor) goes through `vagrant box add`,
//! `vagrant up --provider=libvirt`, `vagrant ssh -c`, `vagrant destroy`,
//! and nothing is left (domain, volume, box, network). See
//! testlab/vagrant/run.sh.
use std::path::PathBuf;
use std::process::Command;

/// kiln's binary: `KILN_BIN`, else the one cargo built next to this test
/// (`cargo test --workspace` builds it).
fn kiln() -> PathBuf {
    if let Ok(p) = std::env::var("KILN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("kiln");
    assert!(
        bin.is_file(),
        "{} missing: `cargo build -p kiln-cli` (or set KILN_BIN)",
        bin.display()
    );
    bin
}

#[test]
#[ignore = "testlab/vagrant: two QEMU guests under TCG (kiln's build, then vagrant up), about 4 min; needs root, vagrant and vagrant-libvirt (scripts/setup.sh)"]
fn vagrant_up_a_box_made_by_kiln() {
    for t in ["vagrant", "virsh", "libvirtd", "qemu-system-x86_64"] {
        if kiln_testkit::require_tool(t, "scripts/setup.sh installs it").is_none() {
            return;
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let work = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let o = Command::new("bash")
        .arg(root.join("testlab/vagrant/run.sh"))
        .arg(kiln())
        .arg(work.path())
        .output()
        .unwrap();
    let out = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{out}\nvagrant lab: {:.0} s", start.elapsed().as_secs_f64());
    assert!(o.status.success(), "run.sh failed:\n{out}");
    assert!(out.contains("VAGRANT LAB OK"), "{out}");
}
