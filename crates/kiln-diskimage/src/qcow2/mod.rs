//! A qcow2 reader that streams the guest-visible (raw) disk in order,
//! without a raw copy on disk: data clusters are read from the file,
//! zero and unallocated clusters become zeros (or the backing file's
//! data), compressed clusters (deflate) are inflated.
//!
//! Supported: qcow2 versions 2 and 3, any cluster size, compressed
//! clusters (deflate), zero clusters, backing files (qcow2 or raw,
//! relative to the image's directory). Refused with a message: encryption,
//! external data files, extended L2 entries, zstd compression, images
//! marked corrupt.
//!
//! [`writer`]: the other way, a streaming raw -> qcow2 writer.
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub mod writer;

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Qcow2,
    /// Anything else (raw, or a format read as bytes: vmdk, vhd, ova).
    Other,
}

pub fn sniff(head: &[u8]) -> Format {
    if head.len() >= 4 && &head[..4] == b"QFI\xfb" {
        Format::Qcow2
    } else {
        Format::Other
    }
}

/// The format of the file at `path`.
pub fn sniff_file(path: &Path) -> std::io::Result<Format> {
    let f = File::open(path)?;
    let mut head = [0u8; 4];
    let n = f.read_at(&mut head, 0)?;
    Ok(sniff(&head[..n]))
}

#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

enum Backing {
    None,
    Raw(File, u64),
    Qcow2(Box<Reader>),
}

/// An open qcow2 image.
pub struct Reader {
    path: PathBuf,
    file: File,
    cluster_bits: u32,
    size: u64,
    l1: Vec<u64>,
    backing: Backing,
    /// The L2 table last read (its host offset and entries).
    l2_cache: Option<(u64, Vec<u64>)>,
}

const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, Qcow2Error> {
        Self::open_depth(path, 0)
    }

    fn open_depth(path: &Path, depth: usize) -> Result<Reader, Qcow2Error> {
        let io = |source| Qcow2Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let bad = |m: String| Qcow2Error::Format {
            path: path.to_path_buf(),
            message: m,
        };
        let file = File::open(path).map_err(io)?;
        let mut h = vec![0u8; 4096];
        let n = file.read_at(&mut h, 0).map_err(io)?;
        if n < 72 || sniff(&h) != Format::Qcow2 {
            return Err(bad("not a qcow2 image".into()));
        }
        let version = be32(&h, 4);
        if !(2..=3).contains(&version) {
            return Err(bad(format!("qcow2 version {version} is not supported")));
        }
        let backing_offset = be64(&h, 8);
        let backing_len = be32(&h, 16) as usize;
        let cluster_bits = be32(&h, 20);
        let size = be64(&h, 24);
        let crypt = be32(&h, 32);
        let l1_size = be32(&h, 36) as usize;
        let l1_offset = be64(&h, 40);
        if !(9..=21).contains(&cluster_bits) {
            return Err(bad(format!("cluster_bits {cluster_bits} is out of range")));
        }
        if crypt != 0 {
            return Err(bad("encrypted qcow2 images are not supported".into()));
        }
        let mut header_len = 72usize;
        if version >= 3 {
            let incompatible = be64(&h, 72);
            header_len = be32(&h, 100) as usize;
            if incompatible & 2 != 0 {
                return Err(bad("the image is marked corrupt".into()));
            }
            if incompatible & 4 != 0 {
                return Err(bad(
                    "qcow2 images with an external data file are not supported".into(),
                ));
            }
            if incompatible & 8 != 0 && header_len > 104 && h[104] != 0 {
                return Err(bad(
                    "zstd-compressed qcow2 images are not supported (convert with qemu-img convert -O qcow2)".into(),
                ));
            }
            if incompatible & 16 != 0 {
                return Err(bad(
                    "qcow2 images with extended L2 entries are not supported".into(),
                ));
            }
            if incompatible & !0x1f != 0 {
                return Err(bad(format!(
                    "unknown incompatible features {incompatible:#x}"
                )));
            }
        }
        // Header extensions: the backing file's format.
        let mut backing_format: Option<String> = None;
        let mut off = header_len.max(72);
        while off + 8 <= n {
            let kind = be32(&h, off);
            let len = be32(&h, off + 4) as usize;
            if kind == 0 {
                break;
            }
            if kind == 0xE279_2ACA && off + 8 + len <= n {
                backing_format =
                    Some(String::from_utf8_lossy(&h[off + 8..off + 8 + len]).into_owned());
            }
            off += 8 + len.div_ceil(8) * 8;
        }
        let mut l1raw = vec![0u8; l1_size * 8];
        file.read_exact_at(&mut l1raw, l1_offset).map_err(io)?;
        let l1 = (0..l1_size).map(|i| be64(&l1raw, i * 8)).collect();
        let backing = if backing_offset != 0 && backing_len > 0 {
            if depth > 8 {
                return Err(bad("backing chain too long".into()));
            }
            let mut name = vec![0u8; backing_len];
            file.read_exact_at(&mut name, backing_offset).map_err(io)?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let bpath = if Path::new(&name).is_absolute() {
                PathBuf::from(&name)
            } else {
                path.parent().unwrap_or(Path::new(".")).join(&name)
            };
            let is_qcow2 = match backing_format.as_deref() {
                Some("qcow2") => true,
                Some("raw") => false,
                Some(f) => return Err(bad(format!("backing file format {f} is not supported"))),
                None => {
                    sniff_file(&bpath).map_err(|source| Qcow2Error::Io {
                        path: bpath.clone(),
                        source,
                    })? == Format::Qcow2
                }
            };
            if is_qcow2 {
                Backing::Qcow2(Box::new(Reader::open_depth(&bpath, depth + 1)?))
            } else {
                let f = File::open(&bpath).map_err(|source| Qcow2Error::Io {
                    path: bpath.clone(),
                    source,
                })?;
                let len = f
                    .metadata()
                    .map_err(|source| Qcow2Error::Io {
                        path: bpath.clone(),
                        source,
                    })?
                    .len();
                Backing::Raw(f, len)
            }
        } else {
            Backing::None
        };
        Ok(Reader {
            path: path.to_path_buf(),
            file,
            cluster_bits,
            size,
            l1,
            backing,
            l2_cache: None,
        })
    }

    /// The guest-visible size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.size
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn io(&self, source: std::io::Error) -> Qcow2Error {
        Qcow2Error::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn l2_entry(&mut self, guest: u64) -> Result<u64, Qcow2Error> {
        let l2_entries = 1u64 << (self.cluster_bits - 3);
        let cluster = guest >> self.cluster_bits;
        let l1_index = (cluster / l2_entries) as usize;
        let l2_index = (cluster % l2_entries) as usize;
        let Some(&l1e) = self.l1.get(l1_index) else {
            return Ok(0);
        };
        let l2_off = l1e & L1_OFFSET_MASK;
        if l2_off == 0 {
            return Ok(0);
        }
        if self.l2_cache.as_ref().map(|c| c.0) != Some(l2_off) {
            let mut raw = vec![0u8; 1 << self.cluster_bits];
            self.file
                .read_exact_at(&mut raw, l2_off)
                .map_err(|e| self.io(e))?;
            let entries = (0..l2_entries as usize)
                .map(|i| be64(&raw, i * 8))
                .collect();
            self.l2_cache = Some((l2_off, entries));
        }
        Ok(self.l2_cache.as_ref().expect("just set").1[l2_index])
    }

    /// Fill `buf` with the guest cluster starting at `guest` (cluster
    /// aligned; `buf` is at most one cluster and does not pass the end).
    pub fn read_cluster(&mut self, guest: u64, buf: &mut [u8]) -> Result<(), Qcow2Error> {
        let e = self.l2_entry(guest)?;
        if e & COMPRESSED != 0 {
            let x = 62 - (self.cluster_bits - 8);
            let host = e & ((1u64 << x) - 1);
            let sectors = ((e >> x) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
            let len = (sectors * 512 - (host & 511)) as usize;
            let mut comp = vec![0u8; len];
            // The last compressed cluster may end before `len` at EOF.
            let mut got = 0;
            while got < len {
                let n = self
                    .file
                    .read_at(&mut comp[got..], host + got as u64)
                    .map_err(|e| self.io(e))?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            let mut full = vec![0u8; 1 << self.cluster_bits];
            let mut d = flate2::Decompress::new(false);
            d.decompress(&comp[..got], &mut full, flate2::FlushDecompress::Finish)
                .map_err(|err| Qcow2Error::Format {
                    path: self.path.clone(),
                    message: format!("compressed cluster at {guest}: {err}"),
                })?;
            buf.copy_from_slice(&full[..buf.len()]);
            return Ok(());
        }
        let host = e & L2_OFFSET_MASK;
        if e & 1 != 0 {
            buf.fill(0); // zero cluster (v3)
            return Ok(());
        }
        if host != 0 {
            return self.file.read_exact_at(buf, host).map_err(|e| self.io(e));
        }
        // Unallocated: the backing file, or zeros.
        match &mut self.backing {
            Backing::None => buf.fill(0),
            Backing::Raw(f, len) => {
                buf.fill(0);
                if guest < *len {
                    let n = ((*len - guest) as usize).min(buf.len());
                    f.read_exact_at(&mut buf[..n], guest)
                        .map_err(|source| Qcow2Error::Io {
                            path: self.path.clone(),
                            source,
                        })?;
                }
            }
            Backing::Qcow2(b) => {
                buf.fill(0);
                if guest < b.size {
                    let n = ((b.size - guest) as usize).min(buf.len());
                    if b.cluster_bits == self.cluster_bits {
                        b.read_cluster(guest, &mut buf[..n])?;
                    } else {
                        b.read_at(guest, &mut buf[..n])?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Fill `buf` with guest bytes from `offset` (any alignment).
    pub fn read_at(&mut self, mut offset: u64, buf: &mut [u8]) -> Result<(), Qcow2Error> {
        let cs = self.cluster_size();
        let mut done = 0;
        let mut tmp = vec![0u8; cs as usize];
        while done < buf.len() {
            let start = offset & !(cs - 1);
            let within = (offset - start) as usize;
            let avail = ((self.size - start).min(cs)) as usize;
            self.read_cluster(start, &mut tmp[..avail])?;
            let n = (avail - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&tmp[within..within + n]);
            done += n;
            offset += n as u64;
        }
        Ok(())
    }

    /// Read the whole guest disk in order, `chunk` bytes at a time (a
    /// multiple of the cluster size), handing each to `sink`; stops early
    /// when `sink` returns false.
    pub fn stream(
        &mut self,
        chunk: usize,
        mut sink: impl FnMut(Vec<u8>) -> bool,
    ) -> Result<(), Qcow2Error> {
        let cs = self.cluster_size() as usize;
        let chunk = chunk.max(cs) / cs * cs;
        let mut pos = 0u64;
        while pos < self.size {
            let n = ((self.size - pos) as usize).min(chunk);
            let mut buf = vec![0u8; n];
            let mut o = 0;
            while o < n {
                let m = cs.min(n - o);
                self.read_cluster(pos + o as u64, &mut buf[o..o + m])?;
                o += m;
            }
            pos += n as u64;
            if !sink(buf) {
                break;
            }
        }
        Ok(())
    }
}
