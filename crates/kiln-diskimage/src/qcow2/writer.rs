//! A streaming raw -> qcow2 (version 3) writer.
//!
//! Raw bytes go in once, in order (e.g. straight from a Glance download);
//! clusters that are all zero are left unallocated, the others are appended
//! to the output (optionally deflate-compressed, as `qemu-img convert -c`).
//! L2 tables, the L1 table and the refcount structures are written after
//! the data, and the header last. So converting needs no copy of the raw
//! image on disk: the only file is the qcow2 output.
//!
//! Format: QEMU's docs/interop/qcow2.txt. 64 KiB clusters, 16-bit
//! refcounts, no backing file, no snapshots, no extensions.
use std::collections::BTreeMap;
use std::io::{self, Seek, SeekFrom, Write};

const MAGIC: u32 = 0x5146_49fb;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
const HEADER_LEN: u32 = 104;

/// What a conversion produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Bytes of raw input (the virtual size before rounding).
    pub input_bytes: u64,
    /// The image's virtual size (input rounded up to 512 bytes).
    pub virtual_size: u64,
    /// Data clusters written (not all-zero).
    pub data_clusters: u64,
    /// Of which compressed.
    pub compressed_clusters: u64,
    /// Size of the qcow2 file.
    pub file_size: u64,
}

/// Writes a qcow2 image from raw bytes given in order.
pub struct Writer<W: Write + Seek> {
    out: W,
    cluster_bits: u32,
    cluster: usize,
    buf: Vec<u8>,
    /// Virtual offset of `buf`'s first byte.
    vpos: u64,
    /// Next free byte in the file.
    host: u64,
    /// The L2 table being filled (input is sequential: earlier tables are
    /// final and already written), and its L1 index.
    l2: Option<(u64, Vec<u64>)>,
    /// L1 index -> L2 table entry (offset | COPIED).
    l1: BTreeMap<u64, u64>,
    /// host cluster -> refcount.
    refs: Vec<u16>,
    compress: Option<flate2::Compression>,
    scratch: Vec<u8>,
    stats: Stats,
}

impl<W: Write + Seek> Writer<W> {
    /// `out` must be empty and positioned at 0. `compress`: deflate level
    /// (qcow2's zlib compression type), or `None` for plain clusters.
    pub fn new(out: W, compress: Option<u32>) -> io::Result<Self> {
        let cluster_bits = 16;
        let cluster = 1usize << cluster_bits;
        let mut w = Writer {
            out,
            cluster_bits,
            cluster,
            buf: Vec::with_capacity(cluster),
            vpos: 0,
            host: cluster as u64, // cluster 0: the header, written last
            l2: None,
            l1: BTreeMap::new(),
            refs: Vec::new(),
            compress: compress.map(flate2::Compression::new),
            scratch: Vec::with_capacity(cluster + 1024),
            stats: Stats::default(),
        };
        w.set_ref(0, 1);
        // Reserve the header cluster so a crash never leaves a plausible file.
        w.out.write_all(&vec![0u8; cluster])?;
        Ok(w)
    }

    pub fn cluster_size(&self) -> usize {
        self.cluster
    }

    /// Feed raw bytes.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.stats.input_bytes += data.len() as u64;
        while !data.is_empty() {
            if self.buf.is_empty() && data.len() >= self.cluster {
                let (c, rest) = data.split_at(self.cluster);
                self.put_cluster(c)?;
                data = rest;
                continue;
            }
            let n = (self.cluster - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == self.cluster {
                let c = std::mem::take(&mut self.buf);
                self.put_cluster(&c)?;
                self.buf = c;
                self.buf.clear();
            }
        }
        Ok(())
    }

    fn put_cluster(&mut self, c: &[u8]) -> io::Result<()> {
        let vcluster = self.vpos >> self.cluster_bits;
        self.vpos += self.cluster as u64;
        if is_zero(c) {
            return Ok(());
        }
        let entry = match self.try_compress(c)? {
            Some(e) => e,
            None => {
                let before = self.host;
                self.align_host();
                if self.host != before {
                    self.out.seek(SeekFrom::Start(self.host))?;
                }
                let off = self.host;
                self.out.write_all(c)?;
                self.host += self.cluster as u64;
                self.set_ref(off >> self.cluster_bits, 1);
                off | COPIED
            }
        };
        self.stats.data_clusters += 1;
        let per_l2 = (self.cluster / 8) as u64;
        let idx = vcluster / per_l2;
        if self.l2.as_ref().is_some_and(|(i, _)| *i != idx) {
            self.flush_l2()?;
        }
        let (_, table) = self
            .l2
            .get_or_insert_with(|| (idx, vec![0; per_l2 as usize]));
        table[(vcluster % per_l2) as usize] = entry;
        Ok(())
    }

    fn set_ref(&mut self, cluster: u64, r: u16) {
        let i = cluster as usize;
        if self.refs.len() <= i {
            self.refs.resize(i + 1, 0);
        }
        self.refs[i] = r;
    }

    /// Write the current L2 table (it is complete).
    fn flush_l2(&mut self) -> io::Result<()> {
        let Some((idx, table)) = self.l2.take() else {
            return Ok(());
        };
        let off = self.alloc_clusters(1)?;
        let mut bytes = Vec::with_capacity(self.cluster);
        for e in &table {
            bytes.extend_from_slice(&e.to_be_bytes());
        }
        self.out.write_all(&bytes)?;
        self.l1.insert(idx, off | COPIED);
        Ok(())
    }

    /// Compress `c` into the file if that saves space; the L2 entry.
    fn try_compress(&mut self, c: &[u8]) -> io::Result<Option<u64>> {
        let Some(level) = self.compress else {
            return Ok(None);
        };
        // QEMU inflates with a 4 KiB window (windowBits -12): compress the same way.
        let mut z = flate2::Compress::new_with_window_bits(level, false, 12);
        self.scratch.clear();
        let status = z
            .compress_vec(c, &mut self.scratch, flate2::FlushCompress::Finish)
            .map_err(io::Error::other)?;
        if status != flate2::Status::StreamEnd || self.scratch.len() >= self.cluster - 512 {
            return Ok(None);
        }
        // Start each compressed cluster on a 512-byte boundary, so the
        // sectors it is counted in (qcow2's descriptor) are its own.
        let pad = (512 - (self.host % 512)) % 512;
        if pad > 0 {
            self.out.write_all(&[0u8; 512][..pad as usize])?;
            self.host += pad;
        }
        let off = self.host;
        let len = self.scratch.len() as u64;
        self.out.write_all(&self.scratch)?;
        self.host += len;
        let sectors = len.div_ceil(512);
        let end = off + sectors * 512; // what the descriptor covers
        for hc in (off >> self.cluster_bits)..=((end - 1) >> self.cluster_bits) {
            let i = hc as usize;
            if self.refs.len() <= i {
                self.refs.resize(i + 1, 0);
            }
            self.refs[i] += 1;
        }
        let csize_shift = 62 - (self.cluster_bits - 8);
        self.stats.compressed_clusters += 1;
        Ok(Some(COMPRESSED | ((sectors - 1) << csize_shift) | off))
    }

    fn align_host(&mut self) {
        let c = self.cluster as u64;
        let aligned = self.host.div_ceil(c) * c;
        if aligned != self.host {
            // The gap is left as a hole; later writes land after it.
            self.host = aligned;
        }
    }

    fn alloc_clusters(&mut self, n: u64) -> io::Result<u64> {
        self.align_host();
        let off = self.host;
        self.out.seek(SeekFrom::Start(off))?;
        for i in 0..n {
            self.set_ref((off >> self.cluster_bits) + i, 1);
        }
        self.host += n * self.cluster as u64;
        Ok(off)
    }

    /// Write the metadata and the header. The virtual size is the input
    /// length rounded up to 512 bytes.
    pub fn finish(mut self) -> io::Result<(W, Stats)> {
        let virtual_size = self.stats.input_bytes.div_ceil(512) * 512;
        if !self.buf.is_empty() {
            let mut c = std::mem::take(&mut self.buf);
            c.resize(self.cluster, 0);
            self.put_cluster(&c)?;
        }
        let cs = self.cluster as u64;
        let per_l2 = cs / 8;
        // The last L2 table
        self.flush_l2()?;
        let l1_entries = std::mem::take(&mut self.l1);
        // L1 table
        let vclusters = virtual_size.div_ceil(cs);
        let l1_size = vclusters.div_ceil(per_l2).max(1);
        let l1_clusters = (l1_size * 8).div_ceil(cs);
        let l1_off = self.alloc_clusters(l1_clusters)?;
        let mut l1 = vec![0u8; (l1_clusters * cs) as usize];
        for (idx, e) in &l1_entries {
            let i = (*idx * 8) as usize;
            l1[i..i + 8].copy_from_slice(&e.to_be_bytes());
        }
        self.out.write_all(&l1)?;
        // Refcount blocks and table, counting themselves.
        let per_block = cs / 2; // 16-bit refcounts
        let base = self.host.div_ceil(cs);
        let (mut blocks, mut table) = (0u64, 0u64);
        loop {
            let total = base + blocks + table;
            let nb = total.div_ceil(per_block);
            let nt = (nb * 8).div_ceil(cs);
            if nb == blocks && nt == table {
                break;
            }
            blocks = nb;
            table = nt;
        }
        let blocks_off = self.alloc_clusters(blocks)?;
        let table_off = self.alloc_clusters(table)?;
        let mut rb = vec![0u8; (blocks * cs) as usize];
        for (hc, r) in self.refs.iter().enumerate() {
            if *r != 0 {
                rb[hc * 2..hc * 2 + 2].copy_from_slice(&r.to_be_bytes());
            }
        }
        self.out.seek(SeekFrom::Start(blocks_off))?;
        self.out.write_all(&rb)?;
        let mut rt = vec![0u8; (table * cs) as usize];
        for b in 0..blocks {
            let i = (b * 8) as usize;
            rt[i..i + 8].copy_from_slice(&(blocks_off + b * cs).to_be_bytes());
        }
        self.out.write_all(&rt)?;
        let file_size = self.host;
        // The header.
        let mut h = Vec::with_capacity(112);
        h.extend_from_slice(&MAGIC.to_be_bytes());
        h.extend_from_slice(&3u32.to_be_bytes());
        h.extend_from_slice(&0u64.to_be_bytes()); // backing file offset
        h.extend_from_slice(&0u32.to_be_bytes()); // backing file size
        h.extend_from_slice(&self.cluster_bits.to_be_bytes());
        h.extend_from_slice(&virtual_size.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes()); // no encryption
        h.extend_from_slice(&(l1_size as u32).to_be_bytes());
        h.extend_from_slice(&l1_off.to_be_bytes());
        h.extend_from_slice(&table_off.to_be_bytes());
        h.extend_from_slice(&(table as u32).to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes()); // snapshots
        h.extend_from_slice(&0u64.to_be_bytes());
        h.extend_from_slice(&0u64.to_be_bytes()); // incompatible features
        h.extend_from_slice(&0u64.to_be_bytes()); // compatible features
        h.extend_from_slice(&0u64.to_be_bytes()); // autoclear features
        h.extend_from_slice(&4u32.to_be_bytes()); // refcount order: 16 bits
        h.extend_from_slice(&HEADER_LEN.to_be_bytes());
        h.extend_from_slice(&[0u8; 8]); // end of header extensions
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&h)?;
        self.out.flush()?;
        self.stats.virtual_size = virtual_size;
        self.stats.file_size = file_size;
        Ok((self.out, self.stats))
    }
}

fn is_zero(c: &[u8]) -> bool {
    let (chunks, rest) = (c.chunks_exact(16), c.len() % 16);
    let tail_zero = c[c.len() - rest..].iter().all(|b| *b == 0);
    tail_zero
        && chunks
            .into_iter()
            .all(|x| u128::from_ne_bytes(x.try_into().unwrap_or([1; 16])) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qcow2::{sniff, Format};
    use std::io::Cursor;

    fn header_u64(b: &[u8], at: usize) -> u64 {
        u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn empty_and_sparse_layouts() {
        let mut w = Writer::new(Cursor::new(Vec::new()), None).unwrap();
        w.write(&vec![0u8; 3 << 20]).unwrap();
        let (out, st) = w.finish().unwrap();
        let b = out.into_inner();
        assert_eq!(sniff(&b), Format::Qcow2);
        assert_eq!(st.data_clusters, 0);
        assert_eq!(header_u64(&b, 24), 3 << 20);
        // header + L1 + refcount block + refcount table
        assert_eq!(b.len(), 4 << 16);

        let mut w = Writer::new(Cursor::new(Vec::new()), None).unwrap();
        let mut data = vec![0u8; 1000];
        data[0] = 1;
        w.write(&data).unwrap();
        let (out, st) = w.finish().unwrap();
        assert_eq!(st.virtual_size, 1024);
        assert_eq!(st.data_clusters, 1);
        assert_eq!(out.into_inner().len() as u64, st.file_size);
    }

    #[test]
    fn is_zero_checks_every_byte() {
        let mut c = vec![0u8; 65536];
        assert!(is_zero(&c));
        c[65535] = 1;
        assert!(!is_zero(&c));
        c[65535] = 0;
        c[7] = 1;
        assert!(!is_zero(&c));
        assert!(is_zero(&[0u8; 5]));
    }
}
