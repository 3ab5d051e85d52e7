//! The outputs of the two writers kiln-pgz replaced (kiln-vagrant's `gz`
//! and kiln-post-processors' `blockgz`), as SHA-256 digests in
//! golden.txt, generated with that code (commit 1d06968): kiln-pgz, with
//! each caller's options, must write the same bytes for the same input
//! and level, with one thread and with three.
//!
//! Lines: `caller input-kind size level sha256`. The box's writer
//! (zlib-rs) is checked with one thread only: the old one reused each
//! worker's deflate state, so with more threads its output depended on
//! which worker got which block (see the crate docs).
//!
//! The digests hold for the stored Cargo.lock's zlib-rs and for the system
//! zlib they were made with (Debian's 1.2.13): another zlib may compress
//! differently, still correctly.
use kiln_pgz::testdata::{noise, sample};
use kiln_pgz::{Backend, Options, ParallelGz};
use sha2::{Digest, Sha256};
use std::io::Write;

fn input(kind: &str, n: usize) -> Vec<u8> {
    match kind {
        "noise" => noise(n),
        _ => sample(n),
    }
}

/// The options each caller uses: kiln-vagrant's box (`gz::options`) and
/// kiln-post-processors' compress (gzip and bgzf).
fn options(caller: &str, level: u32) -> Options {
    match caller {
        "vagrant" => Options::gzip(Backend::ZlibRs, level, 1 << 20),
        "pp-gzip" => Options::gzip(Backend::Zlib, level, 512 << 10),
        "pp-bgzf" => Options::bgzf(Backend::Zlib, level),
        _ => panic!("unknown caller {caller}"),
    }
}

/// What `caller` writes for `data`, fed in 70,000-byte writes.
fn run(caller: &str, data: &[u8], level: u32, threads: usize) -> Vec<u8> {
    let mut w = ParallelGz::new(Vec::new(), options(caller, level).threads(threads)).unwrap();
    for c in data.chunks(70_000) {
        w.write_all(c).unwrap();
    }
    w.finish().unwrap()
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
