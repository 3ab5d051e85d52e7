//! The box's gzip: [`kiln_pgz`] with zlib-rs, 1 MiB blocks, one gzip
//! member (as Packer's pgzip writes it).
//!
//! zlib-rs, not the workspace's C zlib: it compresses a disk image about
//! twice as fast at the levels the box uses (benches/box.rs,
//! docs/vagrant.md); see [`kiln_pgz::Backend::ZlibRs`].
use kiln_pgz::{Backend, Options};
use std::io::{self, Write};

pub use kiln_pgz::ParallelGz;

/// Input per block. Larger blocks lose less to the sync flushes and to
/// restarting the match search; 1 MiB keeps 2 cores busy to the end of a
/// small image too.
pub const BLOCK: usize = 1 << 20;

/// The box's options: gzip `level` 1..=9 (zlib-rs's levels, see
/// [`crate::zlib_level`]) on `threads` workers (at least one).
pub fn options(level: u32, threads: usize) -> Options {
    Options::gzip(Backend::ZlibRs, level.clamp(1, 9), BLOCK).threads(threads)
}

/// A gzip writer into `out` with the box's [`options`].
pub fn writer<W: Write + Send + 'static>(
    out: W,
    level: u32,
    threads: usize,
) -> io::Result<ParallelGz<W>> {
    ParallelGz::new(out, options(level, threads))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_pgz::testdata::sample;
    use sha2::Digest;

    #[test]
    fn the_box_writes_what_it_wrote_before() {
        // kiln-pgz's tests/golden.txt, `vagrant sample 1048577 4`: the old
        // writer's output for this input.
        let data = sample(BLOCK + 1);
        let mut w = writer(Vec::new(), 4, 1).unwrap();
        for c in data.chunks(70_000) {
            w.write_all(c).unwrap();
        }
        let gz = w.finish().unwrap();
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&gz)),
            include_str!("../../kiln-pgz/tests/golden.txt")
                .lines()
                .find_map(|l| l.strip_prefix("vagrant sample 1048577 4 "))
                .unwrap()
        );
    }
}
