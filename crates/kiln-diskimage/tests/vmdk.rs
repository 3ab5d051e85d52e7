//! The stream-optimized VMDK writer against qemu-img: the VMDK made from
//! a qcow2 (through the streaming qcow2 reader) reads back as the raw disk,
//! passes `qemu-img check`, and is a streamOptimized VMDK.
use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> String {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect(args[0]);
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn make_raw(p: &Path, size: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(p).unwrap();
    f.set_len(size).unwrap();
    let mut x: u64 = 88172645463325252;
    // data spread over several grain tables (32 MiB each), partial grains
    for at in [0u64, 65_000, 5 << 20, 33 << 20, 34 << 20, size - 1000] {
        let mut buf = vec![0u8; 100_000.min((size - at) as usize)];
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 32) as u8 & 0x3f;
        }
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&buf).unwrap();
    }
}

#[test]
fn qcow2_to_stream_optimized_vmdk_reads_back_as_the_disk() {
    let d = tempfile::tempdir().unwrap();
    let s = |n: &str| d.path().join(n).to_string_lossy().into_owned();
    let size = 70 * (1 << 20) + 4096;
    make_raw(&d.path().join("disk.raw"), size);
    run(&[
        "qemu-img",
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &s("disk.raw"),
        &s("disk.qcow2"),
    ]);
    let mut r = kiln_diskimage::qcow2::Reader::open(&d.path().join("disk.qcow2")).unwrap();
    let mut out = std::fs::File::create(d.path().join("out.vmdk")).unwrap();
    let mut w = kiln_diskimage::vmdk::Writer::new(r.virtual_size(), 1, |b| {
        std::io::Write::write_all(&mut out, &b).unwrap();
        true
    });
    r.stream(1 << 20, |b| {
        w.write(&b);
        true
    })
    .unwrap();
    let data = w.data_grains;
    let total = w.finish();
    drop(out);
    assert_eq!(
        std::fs::metadata(d.path().join("out.vmdk")).unwrap().len(),
        total
    );
    assert!(
        total < size / 10,
        "only the data travels: {total} bytes for a {size}-byte disk"
    );
    assert!(data >= 8, "{data}");
    let info = run(&["qemu-img", "info", &s("out.vmdk")]);
    assert!(info.contains("streamOptimized"), "{info}");
    assert!(info.contains(&format!("({size} bytes)")), "{info}");
    run(&["qemu-img", "check", &s("out.vmdk")]);
    let cmp = run(&[
        "qemu-img",
        "compare",
        "-f",
        "raw",
        "-F",
        "vmdk",
        &s("disk.raw"),
        &s("out.vmdk"),
    ]);
    assert!(cmp.contains("Images are identical"), "{cmp}");
}
