//! gzip and BGZF compressed on every core, streamed: kiln's one parallel
//! gzip writer.
//!
//! Two post-processors compress large files with gzip: `vagrant` (the box,
//! a tar.gz) and `compress` (gzip and BGZF). They had a writer each, the
//! same pipeline written twice; this crate is that pipeline once, with
//! what differed between them as [`Options`]: the format, the deflate
//! [`Backend`] and the block size. Each caller's output is byte for byte
//! what its own writer wrote (tests/golden.rs holds the digests; the box's
//! zlib-rs output was fixed only with one thread, see [`Backend::ZlibRs`]).
//!
//! The input is cut into blocks of [`Options`]' block size. The calling
//! thread fills them; `threads` workers compress them (and take their
//! CRC-32); a writer thread puts them out in input order. At most
//! `2 * threads + 2` blocks are in flight, so memory stays bounded
//! however large the input.
//!
//! - [`Format::Gzip`]: one gzip member, the stream pigz and Go's pgzip
//!   write: each block is raw deflate primed with the 32 KiB of input
//!   before it and ended by a sync flush (so the pieces join at byte
//!   boundaries); an empty final block, the CRC-32 of the whole input
//!   (the blocks' CRCs combined) and its size close it. Any gzip reader
//!   reads it.
//! - [`Format::Bgzf`] (blocked gzip, as samtools and biogo's bgzf write
//!   it): each block of at most [`BGZF_BLOCK`] bytes is a complete gzip
//!   member with a `BC` extra field giving its size; the standard 28-byte
//!   empty block ([`BGZF_EOF`]) ends the file. Any gzip reader reads it
//!   as concatenated members; BGZF readers can seek by block.
//!
//! Errors: a failed write of the output stops the pipeline and is
//! returned, as it was, by the next [`Write::write`] that has to wait for
//! room, or by [`ParallelGz::finish`]. A worker that panics becomes the
//! error "compression thread panicked"; the output is never finished
//! without one of its blocks.
//!
//! ```text
//! let opts = Options::gzip(Backend::ZlibRs, 4, 1 << 20).threads(8);
//! let mut gz = ParallelGz::new(file, opts)?;
//! io::copy(&mut image, &mut gz)?;
//! let file = gz.finish()?;
//! ```
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One gzip member.
    Gzip,
    /// BGZF: one gzip member per block, then [`BGZF_EOF`].
    Bgzf,
}

/// Which deflate compresses the blocks. The two compress differently
/// (both correctly), so each caller keeps the one its output was made
/// with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The C zlib, through `flate2` (the workspace asks flate2 for it).
    /// A new deflate state for every block.
    Zlib,
    /// zlib-rs, called directly: flate2 uses a C backend whenever any
    /// crate asks for one, so it cannot give zlib-rs here. zlib-rs
    /// compresses a disk image about twice as fast as C zlib 1.2.13 at
    /// the box's levels (kiln-vagrant's benches/box.rs).
    ///
    /// Each worker keeps one state and resets it for every block (its
    /// window and hash tables are allocated once). A reset zlib-rs state
    /// does not always compress a block as a new one does, so with more
    /// than one thread the bytes (never the content) can depend on which
    /// worker took which block; with one thread they are fixed.
    ZlibRs,
}

/// Largest BGZF block input: a block, compressed, must fit in 64 KiB.
pub const BGZF_BLOCK: usize = 0xff00;

/// The empty BGZF block that ends a BGZF file.
pub const BGZF_EOF: [u8; 28] = [
    0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 0x06, 0, b'B', b'C', 0x02, 0, 0x1b, 0, 0x03, 0, 0,
    0, 0, 0, 0, 0, 0, 0,
];

/// How much input before a gzip block primes its deflate.
const WINDOW: usize = 32 << 10;

/// The gzip header: no name, no time, OS unknown (as Go writes it).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];

/// A BGZF member's header up to its block size: gzip with FEXTRA, the
/// 6-byte extra field `BC`, length 2.
const BGZF_HEADER: [u8; 16] = [
    0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 6, 0, b'B', b'C', 2, 0,
];

/// A BGZF member's bytes besides its deflate data: header, BSIZE, CRC-32
/// and ISIZE.
const BGZF_OVERHEAD: usize = BGZF_HEADER.len() + 2 + 8;

/// What to write and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    format: Format,
    backend: Backend,
    level: u32,
    block_size: usize,
    threads: usize,
    /// Tests: the worker given this block panics.
    #[cfg(test)]
    panic_at: Option<u64>,
}

impl Options {
    /// One gzip member at `level` (0..=9, above is 9), `block_size`
    /// input bytes per block (at least 1), one thread.
    pub fn gzip(backend: Backend, level: u32, block_size: usize) -> Self {
        Options {
            format: Format::Gzip,
            backend,
            level: level.min(9),
            block_size: block_size.max(1),
            threads: 1,
            #[cfg(test)]
            panic_at: None,
        }
    }

    /// BGZF at `level` (0..=9, above is 9), [`BGZF_BLOCK`] input bytes per
    /// block, one thread.
    pub fn bgzf(backend: Backend, level: u32) -> Self {
        Options {
            format: Format::Bgzf,
            ..Options::gzip(backend, level, BGZF_BLOCK)
        }
    }

    /// `threads` workers (at least one).
    pub fn threads(self, threads: usize) -> Self {
        Options {
            threads: threads.max(1),
            ..self
        }
    }
}

struct Job {
    index: u64,
    data: Vec<u8>,
    /// gzip: the input just before this block (up to 32 KiB).
    dict: Option<Vec<u8>>,
}

/// A compressed block and the CRC-32 of its input.
struct Block {
    bytes: Vec<u8>,
    crc: crc32fast::Hasher,
}

type Done = (u64, io::Result<Block>);

/// What the writer thread hands back with the output.
struct Tail<W> {
    out: W,
    crc: crc32fast::Hasher,
    blocks: u64,
}

/// A [`Write`] that compresses on `threads` threads into `W`; call
/// [`ParallelGz::finish`] to end the stream (dropped unfinished, the
/// output is left incomplete).
pub struct ParallelGz<W: Write + Send + 'static> {
    format: Format,
    block_size: usize,
    buf: Vec<u8>,
    /// gzip: the last 32 KiB of input sent, the next block's dictionary.
    tail: Vec<u8>,
    next_index: u64,
    total: u64,
    jobs: Option<SyncSender<Job>>,
    acks: Receiver<()>,
    in_flight: usize,
    max_in_flight: usize,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<Tail<W>>>>,
}

fn broken() -> io::Error {
    io::Error::other("compression pipeline stopped")
}

fn panicked() -> io::Error {
    io::Error::other("compression thread panicked")
}

impl<W: Write + Send + 'static> ParallelGz<W> {
    /// Start the threads; a gzip stream's header is written at once.
    pub fn new(mut out: W, opts: Options) -> io::Result<Self> {
        let threads = opts.threads.max(1);
        let block_size = match opts.format {
            Format::Gzip => opts.block_size.max(1),
            Format::Bgzf => opts.block_size.clamp(1, BGZF_BLOCK),
        };
        if opts.format == Format::Gzip {
            out.write_all(&GZIP_HEADER)?;
        }
        let (job_tx, job_rx) = sync_channel::<Job>(threads);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = channel::<Done>();
        let (ack_tx, ack_rx) = channel::<()>();
        let workers = (0..threads)
            .map(|_| {
                let rx = job_rx.clone();
                let tx = done_tx.clone();
                std::thread::spawn(move || worker(rx, tx, opts))
            })
            .collect();
        drop(done_tx);
        let writer = std::thread::spawn(move || writer(out, done_rx, ack_tx));
        Ok(ParallelGz {
            format: opts.format,
            block_size,
            buf: Vec::with_capacity(block_size),
            tail: Vec::new(),
            next_index: 0,
            total: 0,
            jobs: Some(job_tx),
            acks: ack_rx,
            in_flight: 0,
            max_in_flight: threads * 2 + 2,
            workers,
            writer: Some(writer),
        })
    }

    /// Stop the workers, wait for the writer thread.
    fn join(&mut self) -> Option<std::thread::Result<io::Result<Tail<W>>>> {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.writer.take().map(|w| w.join())
    }

    /// The writer thread's error, once the pipeline broke.
    fn failure(&mut self) -> io::Error {
        match self.join() {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => panicked(),
            _ => broken(),
        }
    }

    fn send_block(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.block_size));
        while let Ok(()) = self.acks.try_recv() {
            self.in_flight -= 1;
        }
        while self.in_flight >= self.max_in_flight {
            match self.acks.recv() {
                Ok(()) => self.in_flight -= 1,
                Err(_) => return Err(self.failure()),
            }
        }
        let dict = match self.format {
            Format::Gzip => {
                let dict = (!self.tail.is_empty()).then(|| self.tail.clone());
                let keep = WINDOW.saturating_sub(data.len());
                self.tail.drain(..self.tail.len().saturating_sub(keep));
                self.tail
                    .extend_from_slice(&data[data.len().saturating_sub(WINDOW)..]);
                dict
            }
            Format::Bgzf => None,
        };
        self.total += data.len() as u64;
        let job = Job {
            index: self.next_index,
            data,
            dict,
        };
        self.next_index += 1;
        self.in_flight += 1;
        let sent = self.jobs.as_ref().map(|j| j.send(job).is_ok());
        if sent != Some(true) {
            return Err(self.failure());
        }
        Ok(())
    }

    /// Compress what is left, end the stream, return the output.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.send_block()?;
        }
        let Tail {
            mut out,
            crc,
            blocks,
        } = match self.join() {
            Some(Ok(r)) => r?,
            Some(Err(_)) => return Err(panicked()),
            None => return Err(broken()),
        };
        if blocks != self.next_index {
            return Err(broken());
        }
        match self.format {
            Format::Gzip => {
                // An empty final fixed-Huffman block, then CRC-32 and size.
                out.write_all(&[0x03, 0x00])?;
                out.write_all(&crc.finalize().to_le_bytes())?;
                out.write_all(&(self.total as u32).to_le_bytes())?;
            }
            Format::Bgzf => out.write_all(&BGZF_EOF)?,
        }
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write + Send + 'static> Write for ParallelGz<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (self.block_size - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.block_size {
            self.send_block()?;
        }
        Ok(n)
    }
    /// Blocks are compressed when full; the stream is complete only
    /// after [`ParallelGz::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ParallelGz<W> {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// A worker's deflate.
enum Deflater {
    Zlib(u32),
    ZlibRs(zlib_rs::Deflate),
}

impl Deflater {
    fn new(backend: Backend, level: u32) -> Self {
        match backend {
            Backend::Zlib => Deflater::Zlib(level),
            Backend::ZlibRs => Deflater::ZlibRs(zlib_rs::Deflate::new(level as i32, false, 15)),
        }
    }

    /// Raw deflate of `data`, primed with `dict`: sync-flushed (a piece
    /// of a longer stream) or, with `finish`, a complete stream.
    fn deflate(&mut self, data: &[u8], dict: Option<&[u8]>, finish: bool) -> io::Result<Vec<u8>> {
        match self {
            Deflater::Zlib(level) => zlib(data, dict, *level, finish),
            Deflater::ZlibRs(d) => zlib_rs_deflate(d, data, dict, finish),
        }
    }
}

fn zlib(data: &[u8], dict: Option<&[u8]>, level: u32, finish: bool) -> io::Result<Vec<u8>> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::new(level), false);
    if let Some(d) = dict {
        c.set_dictionary(d).map_err(io::Error::other)?;
    }
    let flush = if finish {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done = if finish {
            status == flate2::Status::StreamEnd
        } else {
            c.total_in() as usize == data.len() && out.len() < out.capacity()
        };
        if done {
            return Ok(out);
        }
        out.reserve(out.capacity().max(64 << 10));
    }
}

fn zlib_rs_deflate(
    d: &mut zlib_rs::Deflate,
    data: &[u8],
    dict: Option<&[u8]>,
    finish: bool,
) -> io::Result<Vec<u8>> {
    use zlib_rs::{DeflateFlush, Status};
    let err = |e: zlib_rs::DeflateError| io::Error::other(e.as_str());
    d.reset();
    if let Some(p) = dict {
        d.set_dictionary(p).map_err(err)?;
    }
    let flush = if finish {
        DeflateFlush::Finish
    } else {
        DeflateFlush::SyncFlush
    };
    // Room for all of it in one call: the worst case plus the flush marker.
    let mut out = vec![0u8; zlib_rs::compress_bound(data.len()) + 64];
    let mut used = 0;
    loop {
        let in_before = d.total_in() as usize;
        let out_before = d.total_out() as usize;
        let status = d
            .compress(&data[in_before..], &mut out[used..], flush)
            .map_err(err)?;
        used += d.total_out() as usize - out_before;
        let done = if finish {
            status == Status::StreamEnd
        } else {
            // All input in, and the flush did not run out of room.
            d.total_in() as usize == data.len() && used < out.len() && status != Status::BufError
        };
        if done {
            break;
        }
        out.resize(out.len() + (64 << 10), 0);
    }
    out.truncate(used);
    Ok(out)
}

/// One block as its format wants it.
fn block(d: &mut Deflater, opts: &Options, job: &Job) -> io::Result<Block> {
    #[cfg(test)]
    if opts.panic_at == Some(job.index) {
        panic!("test: worker panics at block {}", job.index);
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&job.data);
    let bytes = match opts.format {
        Format::Gzip => d.deflate(&job.data, job.dict.as_deref(), false)?,
        Format::Bgzf => bgzf_member(d, opts, &job.data, crc.clone().finalize())?,
    };
    Ok(Block { bytes, crc })
}

/// A BGZF block: one gzip member whose extra field gives its size.
fn bgzf_member(d: &mut Deflater, opts: &Options, data: &[u8], crc: u32) -> io::Result<Vec<u8>> {
    let mut body = d.deflate(data, None, true)?;
    if body.len() + BGZF_OVERHEAD > 1 << 16 {
        // Did not fit: stored (level 0) always does.
        body = Deflater::new(opts.backend, 0).deflate(data, None, true)?;
    }
    let total = body.len() + BGZF_OVERHEAD;
    let bsize = u16::try_from(total - 1).map_err(|_| io::Error::other("BGZF block too large"))?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&BGZF_HEADER);
    out.extend_from_slice(&bsize.to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(out)
}

fn worker(jobs: Arc<Mutex<Receiver<Job>>>, done: Sender<Done>, opts: Options) {
    let mut d = Deflater::new(opts.backend, opts.level);
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(job) = job else { return };
        // A panic is this block's error: the writer stops on it, rather
        // than waiting for the block or finishing without it.
        let r = catch_unwind(AssertUnwindSafe(|| block(&mut d, &opts, &job)));
        let stop = r.is_err();
        let r = r.unwrap_or_else(|_| Err(panicked()));
        if done.send((job.index, r)).is_err() || stop {
            return;
        }
    }
}

fn writer<W: Write>(mut out: W, done: Receiver<Done>, acks: Sender<()>) -> io::Result<Tail<W>> {
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    let mut crc = crc32fast::Hasher::new();
    for (index, r) in done {
        pending.insert(index, r?);
        while let Some(b) = pending.remove(&next) {
            out.write_all(&b.bytes)?;
            crc.combine(&b.crc);
            next += 1;
            let _ = acks.send(());
        }
    }
    Ok(Tail {
        out,
        crc,
        blocks: next,
    })
}

/// Test inputs, for this crate's tests and its callers'.
#[doc(hidden)]
pub mod testdata {
    /// Text-like pseudo-random bytes with runs of zeros, as a disk has:
    /// compressible, but not trivially.
    pub fn sample(n: usize) -> Vec<u8> {
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
    pub fn noise(n: usize) -> Vec<u8> {
        let mut x: u32 = 7;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
