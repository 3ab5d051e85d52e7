//! A stream-optimized VMDK writer (VMware's "streamOptimized" sparse
//! extent: deflate-compressed grains with markers, grain tables after
//! their grains, the grain directory and a footer at the end), the VMDK
//! flavour AWS VM Import takes. It is written front to back, so it can be
//! streamed into an upload: all-zero grains are left out, so only the
//! disk's data travels, compressed.
//!
//! Checked by `tests/vmdk.rs` with qemu-img (`compare` against the raw
//! disk, `check`, `info`).

/// Sectors of 512 bytes.
const SECTOR: u64 = 512;
/// 64 KiB grains (128 sectors), as VMware and qemu-img write them.
pub const GRAIN: usize = 64 << 10;
const GRAIN_SECTORS: u64 = (GRAIN as u64) / SECTOR;
/// Grain table entries per table.
const GT_ENTRIES: u64 = 512;
const GD_AT_END: u64 = u64::MAX;
/// Where the first grain may start (sectors): header, descriptor, padding.
const OVERHEAD: u64 = 128;
const DESCRIPTOR_OFFSET: u64 = 1;
const DESCRIPTOR_SECTORS: u64 = 20;

const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// Writes a stream-optimized VMDK of a disk of `capacity` bytes, handing
/// the bytes to `out` in order. Feed the disk in order with
/// [`Writer::write`].
pub struct Writer<F: FnMut(Vec<u8>) -> bool> {
    capacity_sectors: u64,
    out: F,
    buf: Vec<u8>,
    /// Bytes handed out so far plus `buf`.
    offset: u64,
    /// Guest bytes seen so far.
    pos: u64,
    /// A partial grain.
    pending: Vec<u8>,
    /// The current grain table: its index and the grains' sectors.
    gt_index: u64,
    gt: Vec<u32>,
    gt_used: bool,
    /// Sector of each grain table written (0: none).
    gd: Vec<u32>,
    level: flate2::Compression,
    /// The consumer went away.
    stopped: bool,
    pub data_grains: u64,
}

fn header(capacity_sectors: u64, gd_offset: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(512);
    h.extend_from_slice(b"KDMV");
    h.extend_from_slice(&3u32.to_le_bytes()); // version 3: stream-optimized
                                              // newline detection, compressed grains, markers
    h.extend_from_slice(&(1u32 | (1 << 16) | (1 << 17)).to_le_bytes());
    h.extend_from_slice(&capacity_sectors.to_le_bytes());
    h.extend_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h.extend_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes());
    h.extend_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
    h.extend_from_slice(&(GT_ENTRIES as u32).to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes()); // no redundant grain directory
    h.extend_from_slice(&gd_offset.to_le_bytes());
    h.extend_from_slice(&OVERHEAD.to_le_bytes());
    h.push(0); // clean
    h.extend_from_slice(b"\n \r\n");
    h.extend_from_slice(&1u16.to_le_bytes()); // deflate
    h.resize(512, 0);
    h
}

fn descriptor(capacity_sectors: u64, cid: u32) -> Vec<u8> {
    let cylinders = (capacity_sectors / (16 * 63)).clamp(1, 16383);
    let d = format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\n\
         # Extent description\nRW {capacity_sectors} SPARSE \"disk.vmdk\"\n\n\
         # The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\nddb.adapterType = \"ide\"\n"
    );
    let mut b = d.into_bytes();
    b.resize((DESCRIPTOR_SECTORS * SECTOR) as usize, 0);
    b
}

fn marker(val: u64, kind: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(512);
    m.extend_from_slice(&val.to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.extend_from_slice(&kind.to_le_bytes());
    m.resize(512, 0);
    m
}

impl<F: FnMut(Vec<u8>) -> bool> Writer<F> {
    /// A writer of a disk of `capacity` bytes (rounded up to sectors);
    /// deflate `level` 0-9.
    pub fn new(capacity: u64, level: u32, out: F) -> Self {
        Self::with_cid(capacity, level, rand::random::<u32>() | 1, out)
    }

    /// [`Writer::new`] with a chosen content ID (the descriptor's `CID`):
    /// the same disk, level and CID give the same bytes, so a first pass
    /// can measure the VMDK's size before a second writes it (into a tar
    /// entry, whose header comes first).
    pub fn with_cid(capacity: u64, level: u32, cid: u32, out: F) -> Self {
        let capacity_sectors = capacity.div_ceil(SECTOR);
        let mut w = Writer {
            capacity_sectors,
            out,
            buf: Vec::with_capacity(4 << 20),
            offset: 0,
            pos: 0,
            pending: Vec::with_capacity(GRAIN),
            gt_index: 0,
            gt: vec![0; GT_ENTRIES as usize],
            gt_used: false,
            gd: vec![0; capacity_sectors.div_ceil(GRAIN_SECTORS * GT_ENTRIES) as usize],
            level: flate2::Compression::new(level.min(9)),
            stopped: false,
            data_grains: 0,
        };
        w.emit(&header(capacity_sectors, GD_AT_END));
        w.emit(&descriptor(capacity_sectors, cid));
        let pad = (OVERHEAD * SECTOR - w.offset) as usize;
        w.emit(&vec![0; pad]);
        w
    }

    fn emit(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        self.offset += b.len() as u64;
        if self.buf.len() >= 4 << 20 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() && !self.stopped {
            let b = std::mem::replace(&mut self.buf, Vec::with_capacity(4 << 20));
            if !(self.out)(b) {
                self.stopped = true;
            }
        }
        self.buf.clear();
    }

    /// Has the consumer stopped taking bytes?
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The next bytes of the disk, in order.
    pub fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.pending.is_empty() && data.len() >= GRAIN {
                let (g, rest) = data.split_at(GRAIN);
                self.grain(g);
                data = rest;
                continue;
            }
            let n = (GRAIN - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.pending.len() == GRAIN {
                let g = std::mem::take(&mut self.pending);
                self.grain(&g);
                self.pending = g;
                self.pending.clear();
            }
        }
    }

    fn grain(&mut self, g: &[u8]) {
        let lba = self.pos / SECTOR;
        self.pos += g.len() as u64;
        let gt_index = lba / (GRAIN_SECTORS * GT_ENTRIES);
        if gt_index != self.gt_index {
            self.close_gt();
            self.gt_index = gt_index;
        }
        if g.iter().all(|&b| b == 0) {
            return;
        }
        let mut full;
        let data = if g.len() < GRAIN {
            full = g.to_vec();
            full.resize(GRAIN, 0);
            &full[..]
        } else {
            g
        };
        let mut z = flate2::write::ZlibEncoder::new(Vec::with_capacity(GRAIN / 2), self.level);
        std::io::Write::write_all(&mut z, data).expect("writing to memory");
        let comp = z.finish().expect("writing to memory");
        let sector = self.offset / SECTOR;
        let mut m = Vec::with_capacity(12 + comp.len() + 512);
        m.extend_from_slice(&lba.to_le_bytes());
        m.extend_from_slice(&(comp.len() as u32).to_le_bytes());
        m.extend_from_slice(&comp);
        let padded = (m.len() as u64).div_ceil(SECTOR) * SECTOR;
        m.resize(padded as usize, 0);
        self.emit(&m);
        let entry = (lba / GRAIN_SECTORS) % GT_ENTRIES;
        self.gt[entry as usize] = sector as u32;
        self.gt_used = true;
        self.data_grains += 1;
    }

    fn close_gt(&mut self) {
        if !self.gt_used {
            return;
        }
        let gt_bytes = GT_ENTRIES * 4;
        self.emit(&marker(gt_bytes / SECTOR, MARKER_GT));
        let sector = self.offset / SECTOR;
        let mut t = Vec::with_capacity(gt_bytes as usize);
        for e in &self.gt {
            t.extend_from_slice(&e.to_le_bytes());
        }
        self.emit(&t);
        self.gd[self.gt_index as usize] = sector as u32;
        self.gt.iter_mut().for_each(|e| *e = 0);
        self.gt_used = false;
    }

    /// Write the last grain, the tables, the footer; hand out the rest.
    /// The total size of the VMDK.
    pub fn finish(mut self) -> u64 {
        if !self.pending.is_empty() {
            let g = std::mem::take(&mut self.pending);
            self.grain(&g);
        }
        self.close_gt();
        let gd_bytes = (self.gd.len() as u64 * 4).div_ceil(SECTOR) * SECTOR;
        self.emit(&marker(gd_bytes / SECTOR, MARKER_GD));
        let gd_sector = self.offset / SECTOR;
        let mut t = Vec::with_capacity(gd_bytes as usize);
        for e in &self.gd {
            t.extend_from_slice(&e.to_le_bytes());
        }
        t.resize(gd_bytes as usize, 0);
        self.emit(&t);
        self.emit(&marker(1, MARKER_FOOTER));
        let footer = header(self.capacity_sectors, gd_sector);
        self.emit(&footer);
        self.emit(&marker(0, MARKER_EOS));
        self.flush();
        self.offset
    }
}
