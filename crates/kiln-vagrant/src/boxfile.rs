//! Writing a box: a tar archive (GNU headers, as Packer writes them),
//! gzip-compressed on every core unless the level is 0, streamed straight
//! into the output file. Every entry is read from where it already is (the
//! build's disk image, the files to include) or made on the way (the
//! VirtualBox VMDK, from the qcow2): no box directory, no copy of the disk.
use crate::gz::{self, ParallelGz};
use crate::VagrantError;
use kiln_core::communicator::TransferProgress;
use kiln_diskimage::{qcow2, vmdk};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A disk image to read the guest-visible disk from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disk {
    Qcow2(PathBuf),
    Raw(PathBuf),
}

impl Disk {
    /// The image at `path`, by its first bytes.
    pub fn open(path: &Path) -> Result<Disk, VagrantError> {
        let f = qcow2::sniff_file(path).map_err(VagrantError::io(path))?;
        Ok(match f {
            qcow2::Format::Qcow2 => Disk::Qcow2(path.to_path_buf()),
            qcow2::Format::Other => Disk::Raw(path.to_path_buf()),
        })
    }
    pub fn path(&self) -> &Path {
        match self {
            Disk::Qcow2(p) | Disk::Raw(p) => p,
        }
    }
    pub fn format(&self) -> &'static str {
        match self {
            Disk::Qcow2(_) => "qcow2",
            Disk::Raw(_) => "raw",
        }
    }
    /// The guest-visible size in bytes.
    pub fn virtual_size(&self) -> Result<u64, VagrantError> {
        match self {
            Disk::Qcow2(p) => Ok(qcow2::Reader::open(p)?.virtual_size()),
            Disk::Raw(p) => Ok(std::fs::metadata(p).map_err(VagrantError::io(p))?.len()),
        }
    }
    /// Hand the guest-visible disk to `sink` in order, 1 MiB or so at a
    /// time; stops when `sink` returns false.
    fn stream(&self, mut sink: impl FnMut(&[u8]) -> bool) -> Result<(), VagrantError> {
        match self {
            Disk::Qcow2(p) => {
                let mut r = qcow2::Reader::open(p)?;
                r.stream(1 << 20, |b| sink(&b))?;
            }
            Disk::Raw(p) => {
                let mut f = File::open(p).map_err(VagrantError::io(p))?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = read_full(&mut f, &mut buf).map_err(VagrantError::io(p))?;
                    if n == 0 || !sink(&buf[..n]) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

fn read_full(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// What an entry of the box holds.
#[derive(Debug, Clone)]
pub enum Source {
    /// Made in memory (metadata.json, Vagrantfile, box.ovf).
    Bytes(Vec<u8>),
    /// A file, stored as it is (the libvirt box's box.img, includes).
    File(PathBuf),
    /// A stream-optimized VMDK of the disk, made while it is written.
    Vmdk { disk: Disk, cid: u32, level: u32 },
}

/// One file of the box.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub source: Source,
}

/// Where bytes go: the file, or gzip into the file.
enum Sink {
    Plain(BufWriter<File>),
    Gzip(ParallelGz<BufWriter<File>>),
}

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(b),
            Sink::Gzip(w) => w.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
        }
    }
}

impl Sink {
    fn finish(self) -> io::Result<()> {
        let mut w = match self {
            Sink::Plain(w) => w,
            Sink::Gzip(g) => g.finish()?,
        };
        w.flush()?;
        w.get_mut().sync_all()
    }
}

/// Counts the bytes written through it.
struct Counting<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// How a box is written.
pub struct BoxJob {
    pub entries: Vec<Entry>,
    /// gzip level 1-9, or 0 for a plain tar.
    pub level: u32,
    pub threads: usize,
    pub cancel: CancellationToken,
    pub progress: Arc<dyn TransferProgress>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn cancelled() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "cancelled")
}

impl BoxJob {
    /// Bytes read from the sources (for progress).
    pub fn total(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match &e.source {
                Source::Bytes(b) => b.len() as u64,
                Source::File(p) => std::fs::metadata(p).map_or(0, |m| m.len()),
                Source::Vmdk { disk, .. } => disk.virtual_size().unwrap_or(0),
            })
            .sum()
    }

    /// Write the box at `target`.
    pub fn write(&self, target: &Path) -> Result<(), VagrantError> {
        let f = File::create(target).map_err(VagrantError::io(target))?;
        let out = BufWriter::with_capacity(1 << 20, f);
        let mut sink = if self.level == 0 {
            Sink::Plain(out)
        } else {
            Sink::Gzip(gz::writer(out, self.level, self.threads).map_err(VagrantError::io(target))?)
        };
        for e in &self.entries {
            self.entry(&mut sink, e)?;
        }
        // The end of a tar: two zero blocks.
        sink.write_all(&[0u8; 1024])
            .map_err(VagrantError::io(target))?;
        sink.finish().map_err(VagrantError::io(target))
    }

    fn header(&self, name: &str, size: u64, mode: u32, mtime: u64, ids: (u64, u64)) -> Vec<u8> {
        let mut out = Vec::with_capacity(1536);
        let mut h = tar::Header::new_gnu();
        if name.len() > 100 {
            // GNU long name: a `././@LongLink` entry holding the name.
            let mut l = tar::Header::new_gnu();
            let bytes = name.as_bytes();
            l.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"././@LongLink");
            l.set_entry_type(tar::EntryType::GNULongName);
            l.set_mode(0o644);
            l.set_size(bytes.len() as u64 + 1);
            l.set_cksum();
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(bytes);
            out.push(0);
            out.resize(out.len().div_ceil(512) * 512, 0);
            h.as_gnu_mut().expect("gnu").name[..100].copy_from_slice(&bytes[..100]);
        } else {
            h.as_gnu_mut().expect("gnu").name[..name.len()].copy_from_slice(name.as_bytes());
        }
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(size);
        h.set_mode(mode & 0o7777);
        h.set_mtime(mtime);
        h.set_uid(ids.0);
        h.set_gid(ids.1);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out
    }

    fn entry(&self, sink: &mut Sink, e: &Entry) -> Result<(), VagrantError> {
        let size = match &e.source {
            Source::Bytes(b) => {
                let h = self.header(&e.name, b.len() as u64, 0o644, now(), (0, 0));
                sink.write_all(&h)
                    .and_then(|_| sink.write_all(b))
                    .map_err(VagrantError::io(Path::new(&e.name)))?;
                self.progress.advance(b.len() as u64);
                b.len() as u64
            }
            Source::File(p) => {
                let mut f = File::open(p).map_err(VagrantError::io(p))?;
                let m = f.metadata().map_err(VagrantError::io(p))?;
                let mtime = m.mtime().max(0) as u64;
                let h = self.header(&e.name, m.len(), m.mode(), mtime, (0, 0));
                sink.write_all(&h).map_err(VagrantError::io(p))?;
                let mut buf = vec![0u8; 1 << 20];
                let mut left = m.len();
                while left > 0 {
                    if self.cancel.is_cancelled() {
                        return Err(VagrantError::Cancelled);
                    }
                    let want = left.min(buf.len() as u64) as usize;
                    let n = read_full(&mut f, &mut buf[..want]).map_err(VagrantError::io(p))?;
                    if n == 0 {
                        return Err(VagrantError::Changed(p.clone()));
                    }
                    sink.write_all(&buf[..n]).map_err(VagrantError::io(p))?;
                    self.progress.advance(n as u64);
                    left -= n as u64;
                }
                m.len()
            }
            Source::Vmdk { disk, cid, level } => {
                // A tar header carries the size first: a first pass
                // measures the VMDK (nothing kept), the second writes the
                // same bytes (same disk, level and CID).
                let capacity = disk.virtual_size()?;
                let mut size = 0u64;
                {
                    let mut w = vmdk::Writer::with_cid(capacity, *level, *cid, |b| {
                        size += b.len() as u64;
                        !self.cancel.is_cancelled()
                    });
                    disk.stream(|b| {
                        w.write(b);
                        !w.stopped()
                    })?;
                    if w.stopped() {
                        return Err(VagrantError::Cancelled);
                    }
                    w.finish();
                }
                let h = self.header(&e.name, size, 0o644, now(), (0, 0));
                sink.write_all(&h)
                    .map_err(VagrantError::io(Path::new(&e.name)))?;
                let mut failed: Option<io::Error> = None;
                let mut counting = Counting {
                    inner: &mut *sink,
                    written: 0,
                };
                {
                    let mut w = vmdk::Writer::with_cid(capacity, *level, *cid, |b| {
                        if self.cancel.is_cancelled() {
                            failed = Some(cancelled());
                            return false;
                        }
                        match counting.write_all(&b) {
                            Ok(()) => true,
                            Err(e) => {
                                failed = Some(e);
                                false
                            }
                        }
                    });
                    disk.stream(|b| {
                        w.write(b);
                        self.progress.advance(b.len() as u64);
                        !w.stopped()
                    })?;
                    w.finish();
                }
                if let Some(err) = failed {
                    if err.kind() == io::ErrorKind::Interrupted {
                        return Err(VagrantError::Cancelled);
                    }
                    return Err(VagrantError::io(disk.path())(err));
                }
                if counting.written != size {
                    return Err(VagrantError::Changed(disk.path().to_path_buf()));
                }
                size
            }
        };
        let pad = (512 - size % 512) % 512;
        sink.write_all(&vec![0u8; pad as usize])
            .map_err(VagrantError::io(Path::new(&e.name)))
    }
}
