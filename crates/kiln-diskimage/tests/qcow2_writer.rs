//! The qcow2 writer against the real qemu-img: `check` finds no error and
//! no leak, `compare` finds the same content as the raw input.
use kiln_diskimage::qcow2::writer::{Stats, Writer};
use std::io::Write;
use std::path::Path;
use std::process::Command;

fn qemu_img(args: &[&str]) -> (bool, String) {
    let o = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img must be installed (apt-get install qemu-utils)");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// A raw image with data here and there, zeros elsewhere, an odd tail.
fn make_raw(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut data = vec![0u8; len];
    let mut off = 0;
    while off < len {
        let r = next();
        let run = (r % 300_000) as usize + 1;
        let end = (off + run).min(len);
        match r % 4 {
            0 => {
                for b in &mut data[off..end] {
                    *b = next() as u8;
                }
            }
            1 => data[off..end].fill(b'k'), // compressible
            _ => {}                         // zeros
        }
        off = end;
    }
    let last = len - 1;
    data[last] = 7;
    std::fs::write(path, &data).unwrap();
    data
}

fn convert(raw: &[u8], out: &Path, compress: Option<u32>, chunk: usize) -> Stats {
    let f = std::fs::File::create(out).unwrap();
    let mut w = Writer::new(std::io::BufWriter::new(f), compress).unwrap();
    for c in raw.chunks(chunk) {
        w.write(c).unwrap();
    }
    let (mut bw, st) = w.finish().unwrap();
    bw.flush().unwrap();
    st
}

#[test]
fn qemu_img_accepts_plain_and_compressed_output() {
    let dir = tempfile::tempdir().unwrap();
    let raw_p = dir.path().join("in.raw");
    // Not a multiple of the cluster size; ends in data.
    let raw = make_raw(&raw_p, (21 << 20) + 4096 + 512, 0x9e3779b97f4a7c15);
    for (name, compress, chunk) in [("plain", None, 100_003), ("z", Some(6), 65536)] {
        let q = dir.path().join(format!("{name}.qcow2"));
        let st = convert(&raw, &q, compress, chunk);
        let qs = q.to_str().unwrap();
        let (ok, out) = qemu_img(&["check", "-f", "qcow2", qs]);
        assert!(ok, "qemu-img check {name}: {out}");
        assert!(out.contains("No errors were found"), "{out}");
        let (ok, out) = qemu_img(&[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            raw_p.to_str().unwrap(),
            qs,
        ]);
        assert!(ok, "qemu-img compare {name}: {out}");
        let (_, info) = qemu_img(&["info", "--output=json", qs]);
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(v["virtual-size"].as_u64(), Some(st.virtual_size));
        assert_eq!(v["format"], "qcow2");
        assert_eq!(std::fs::metadata(&q).unwrap().len(), st.file_size);
        assert!(st.file_size < raw.len() as u64, "{name}: {st:?}");
        if compress.is_some() {
            assert!(st.compressed_clusters > 0, "{st:?}");
        }
    }
}

#[test]
fn all_zero_input_makes_an_empty_image() {
    let dir = tempfile::tempdir().unwrap();
    let raw_p = dir.path().join("z.raw");
    let raw = vec![0u8; 5 << 20];
    std::fs::write(&raw_p, &raw).unwrap();
    let q = dir.path().join("z.qcow2");
    let st = convert(&raw, &q, None, 1 << 20);
    assert_eq!(st.data_clusters, 0);
    let (ok, out) = qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "qcow2",
        raw_p.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = qemu_img(&["check", q.to_str().unwrap()]);
    assert!(ok, "{out}");
}

#[test]
fn spans_several_l2_tables() {
    // 1.2 GiB virtual: three L2 tables (512 MiB each), data in each, and a
    // whole table's range left empty in between.
    use std::io::{Seek, SeekFrom};
    let dir = tempfile::tempdir().unwrap();
    let raw_p = dir.path().join("big.raw");
    let len: u64 = (1 << 30) + (200 << 20);
    let marks: [(u64, u8); 4] = [
        (0, 1),
        (300 << 20, 2),
        ((1 << 30) + (5 << 20), 3),
        (len - 4096, 4),
    ];
    {
        let mut f = std::fs::File::create(&raw_p).unwrap();
        f.set_len(len).unwrap();
        for (off, v) in marks {
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&[v; 4096]).unwrap();
        }
    }
    let q = dir.path().join("big.qcow2");
    let f = std::fs::File::create(&q).unwrap();
    let mut w = Writer::new(std::io::BufWriter::new(f), None).unwrap();
    let mut inp = std::fs::File::open(&raw_p).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        use std::io::Read;
        let n = inp.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        w.write(&buf[..n]).unwrap();
    }
    let (mut bw, st) = w.finish().unwrap();
    bw.flush().unwrap();
    assert_eq!(st.data_clusters, 4);
    let (ok, out) = qemu_img(&["check", q.to_str().unwrap()]);
    assert!(ok && out.contains("No errors were found"), "{out}");
    let (ok, out) = qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "qcow2",
        raw_p.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
}
