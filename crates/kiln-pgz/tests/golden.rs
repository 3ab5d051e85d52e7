//! The outputs of the two writers kiln-pgz replaced (kiln-vagrant's `gz`
//! and kiln-post-processors' `blockgz`), as SHA-256 digests in
//! golden.txt, generated with that code: kiln-pgz must write the same
//! bytes for the same input and level, with one thread and with three.
//!
//! Lines: `caller input-kind size level sha256`. The box's writer
//! (zlib-rs) is checked with one thread only: the old one reused each
//! worker's deflate state, so with more threads its output depended on
//! which worker got which block (see the crate docs).
//!
//! The digests hold for the stored Cargo.lock's zlib-rs and for the system
//! zlib they were made with (Debian's 1.2.13): another zlib may compress
//! differently, still correctly.
use sha2::{Digest, Sha256};
use std::io::Write;

/// Text-like pseudo-random bytes with runs of zeros, as a disk has.
fn sample(n: usize) -> Vec<u8> {
    let mut x: u32 = 12345;
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            if (i / 70_000) % 5 == 3 {
                0
            } else {
                b"abcdefgh ij\n"[(x >> 16) as usize % 12]
            }
        })
        .collect()
}

/// Incompressible bytes.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u32 = 7;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect()
}

fn input(kind: &str, n: usize) -> Vec<u8> {
    match kind {
        "noise" => noise(n),
        _ => sample(n),
    }
}

/// What `caller` wrote for `data`, fed in 70,000-byte writes.
fn run(caller: &str, data: &[u8], level: u32, threads: usize) -> Vec<u8> {
    fn feed<W: Write>(mut w: W, data: &[u8]) -> W {
        for c in data.chunks(70_000) {
            w.write_all(c).unwrap();
        }
        w
    }
    use kiln_post_processors::blockgz::{BlockFormat, ParallelGzWriter};
    match caller {
        "vagrant" => {
            let w = kiln_vagrant::gz::ParallelGz::new(Vec::new(), level, threads).unwrap();
            feed(w, data).finish().unwrap()
        }
        "pp-gzip" | "pp-bgzf" => {
            let f = if caller == "pp-gzip" {
                BlockFormat::Gzip
            } else {
                BlockFormat::Bgzf
            };
            let w = ParallelGzWriter::new(Vec::new(), f, level, threads).unwrap();
            feed(w, data).finish().unwrap()
        }
        _ => panic!("unknown caller {caller}"),
    }
}

#[test]
fn outputs_match_the_old_writers() {
    let mut checked = 0;
    for line in include_str!("golden.txt").lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [caller, kind, size, level, want] = f[..] else {
            panic!("bad line {line}")
        };
        let data = input(kind, size.parse().unwrap());
        let level: u32 = level.parse().unwrap();
        let threads: &[usize] = if caller == "vagrant" { &[1] } else { &[1, 3] };
        for &t in threads {
            let got = hex::encode(Sha256::digest(run(caller, &data, level, t)));
            assert_eq!(
                got, want,
                "{caller} {kind} {size} level {level} threads {t}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 48 * 5);
}
