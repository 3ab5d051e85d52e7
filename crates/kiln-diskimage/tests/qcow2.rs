//! The streaming qcow2 reader against real qemu-img: plain, compressed,
//! with a backing file (qcow2 and raw), small and odd sizes; the stream
//! must equal `qemu-img convert -O raw` byte for byte.
use kiln_diskimage::qcow2::Reader;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;

fn qemu_img(args: &[&str]) {
    let o = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img");
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A raw disk with data, zeros and holes.
fn make_raw(p: &Path, size: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(p).unwrap();
    f.set_len(size).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for (at, len) in [
        (0u64, 70_000usize),
        (300_000, 5_000),
        (1 << 20, 200_000),
        (size - 4096, 4096),
    ] {
        if at + len as u64 > size {
            continue;
        }
        let mut buf = vec![0u8; len];
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x % 7) as u8; // compressible but not zero
        }
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&buf).unwrap();
    }
}

fn sha_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

fn sha_stream(p: &Path) -> (String, u64) {
    let mut r = Reader::open(p).unwrap();
    let mut h = Sha256::new();
    let mut n = 0u64;
    r.stream(1 << 20, |b| {
        n += b.len() as u64;
        h.update(&b);
        true
    })
    .unwrap();
    (hex::encode(h.finalize()), n)
}

#[test]
fn stream_equals_qemu_img_convert() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    let size = 3 * (1 << 20) + 12_288; // not a multiple of the cluster size
    make_raw(&p("disk.raw"), size);
    let want = sha_file(&p("disk.raw"));
    let s = |n: &str| p(n).to_string_lossy().into_owned();
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &s("disk.raw"),
        &s("plain.qcow2"),
    ]);
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &s("disk.raw"),
        &s("comp.qcow2"),
    ]);
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4096,compat=0.10",
        &s("disk.raw"),
        &s("v2small.qcow2"),
    ]);
    for name in ["plain.qcow2", "comp.qcow2", "v2small.qcow2"] {
        assert_eq!(sha_stream(&p(name)), (want.clone(), size), "{name}");
    }
    // An overlay on a qcow2 backing file, with writes of its own.
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        "plain.qcow2",
        &s("overlay.qcow2"),
    ]);
    let o = Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -P 0x5a 65536 131072",
            "-c",
            "write -z 1048576 65536",
            &s("overlay.qcow2"),
        ])
        .output()
        .expect("qemu-io");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        &s("overlay.qcow2"),
        &s("overlay.raw"),
    ]);
    assert_eq!(
        sha_stream(&p("overlay.qcow2")).0,
        sha_file(&p("overlay.raw"))
    );
    assert_ne!(
        sha_file(&p("overlay.raw")),
        want,
        "the overlay's writes show"
    );
    // An overlay on a raw backing file.
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        "disk.raw",
        &s("onraw.qcow2"),
    ]);
    assert_eq!(sha_stream(&p("onraw.qcow2")).0, want);
}

#[test]
fn refuses_what_it_cannot_read() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("x.raw");
    std::fs::write(&raw, b"not a qcow2").unwrap();
    let e = Reader::open(&raw).err().unwrap().to_string();
    assert!(e.contains("not a qcow2"), "{e}");
    let q = d.path().join("z.qcow2");
    let o = Command::new("qemu-img")
        .args(["create", "-f", "qcow2", "-o", "compression_type=zstd"])
        .arg(&q)
        .arg("1M")
        .output()
        .unwrap();
    if o.status.success() {
        let e = Reader::open(&q).err().unwrap().to_string();
        assert!(e.contains("zstd"), "{e}");
    }
}
