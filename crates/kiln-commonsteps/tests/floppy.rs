//! The floppy image read back by mtools (Debian package `mtools`), an
//! implementation of FAT independent of the one that wrote it: the volume
//! label, the long file names, Packer's layout and the contents.
use kiln_commonsteps::floppy::{write_floppy, FloppyConfig};
use std::path::Path;
use std::process::Command;

fn mtools(args: &[&str], img: &Path) -> String {
    let mut cmd = Command::new(args[0]);
    cmd.arg("-i").arg(img).args(&args[1..]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn mtools_reads_the_floppy_back() {
    if kiln_testkit::require_tool("mdir", "apt-get install mtools").is_none() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    for (p, body) in [
        ("ks.cfg", "install\ntext\n"),
        ("win/Autounattend.xml", "<unattend/>"),
        ("win/scripts/enable-winrm.ps1", "Enable-PSRemoting -Force"),
        ("flat/a.txt", "a"),
        ("flat/deep/b.txt", "b"),
    ] {
        let p = src.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let s = |p: &str| src.join(p).display().to_string();
    let c = FloppyConfig {
        files: vec![s("ks.cfg"), s("flat")],
        dirs: vec![s("win")],
        label: "KILNTEST".into(),
    };
    let img = d.path().join("floppy.img");
    write_floppy(&c, &img).unwrap();

    let info = mtools(&["minfo"], &img);
    assert!(info.contains("sectors per track: 18"), "{info}");
    assert!(info.contains("heads: 2"), "{info}");
    assert!(info.contains("FAT12"), "{info}");
    let dir = mtools(&["mdir", "-/", "-b", "::"], &img);
    let mut listed: Vec<&str> = dir.lines().map(|l| l.trim_end_matches('/')).collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "::/a.txt",
            "::/b.txt",
            "::/ks.cfg",
            "::/win",
            "::/win/Autounattend.xml",
            "::/win/scripts",
            "::/win/scripts/enable-winrm.ps1",
        ],
        "{dir}"
    );
    let label = mtools(&["mlabel", "-s", "::"], &img);
    assert!(label.contains("KILNTEST"), "{label}");
    for (path, body) in [
        ("::/ks.cfg", "install\ntext\n"),
        (
            "::/win/scripts/enable-winrm.ps1",
            "Enable-PSRemoting -Force",
        ),
        ("::/b.txt", "b"),
    ] {
        assert_eq!(mtools(&["mtype", path], &img), body, "{path}");
    }
    let check = mtools(&["mdir", "::"], &img);
    assert!(check.contains("free"), "{check}");
}
