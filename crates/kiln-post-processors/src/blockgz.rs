//! gzip and BGZF compression on every core, streamed.
//!
//! The input is cut into blocks that worker threads compress while the
//! next blocks are read; a writer thread puts them out in order. Memory is
//! bounded: at most a few blocks per worker are in flight.
//!
//! - gzip: one gzip member, like pigz and Go's pgzip: each block is raw
//!   deflate primed with the previous 32 KiB and ended by a sync flush; an
//!   empty final block, the CRC-32 and the size close the stream. Any gzip
//!   reader reads it.
//! - BGZF (blocked gzip, as samtools and biogo's bgzf write it): each block
//!   of at most 65280 bytes is a complete gzip member with a `BC` extra
//!   field giving its size; the standard 28-byte empty block ends the file.
use flate2::{Compress, Compression, FlushCompress};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFormat {
    Gzip,
    Bgzf,
}

const GZIP_BLOCK: usize = 512 << 10;
const BGZF_BLOCK: usize = 0xff00;
const WINDOW: usize = 32 << 10;
const BGZF_EOF: [u8; 28] = [
    0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 0x06, 0, b'B', b'C', 0x02, 0, 0x1b, 0, 0x03, 0, 0,
    0, 0, 0, 0, 0, 0, 0,
];

struct Job {
    index: u64,
    data: Vec<u8>,
    dict: Option<Vec<u8>>,
}

type Done = (u64, io::Result<Vec<u8>>);

pub struct ParallelGzWriter<W: Write + Send + 'static> {
    format: BlockFormat,
    block_size: usize,
    buf: Vec<u8>,
    tail: Vec<u8>,
    next_index: u64,
    crc: crc32fast::Hasher,
    total: u64,
    jobs: Option<SyncSender<Job>>,
    acks: Receiver<()>,
    in_flight: usize,
    max_in_flight: usize,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<W>>>,
}

fn broken() -> io::Error {
    io::Error::other("compression pipeline stopped")
}

impl<W: Write + Send + 'static> ParallelGzWriter<W> {
    /// `level` 0..=9; `threads` workers (at least one).
    pub fn new(mut out: W, format: BlockFormat, level: u32, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        if format == BlockFormat::Gzip {
            // No name, no time, OS unknown (as Go writes it).
            out.write_all(&[0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff])?;
        }
        let (job_tx, job_rx) = sync_channel::<Job>(threads);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = channel::<Done>();
        let (ack_tx, ack_rx) = channel::<()>();
        let workers = (0..threads)
            .map(|_| {
                let rx = job_rx.clone();
                let tx = done_tx.clone();
                std::thread::spawn(move || worker(rx, tx, format, level))
            })
            .collect();
        drop(done_tx);
        let writer = std::thread::spawn(move || writer(out, done_rx, ack_tx));
        Ok(ParallelGzWriter {
            format,
            block_size: match format {
                BlockFormat::Gzip => GZIP_BLOCK,
                BlockFormat::Bgzf => BGZF_BLOCK,
            },
            buf: Vec::new(),
            tail: Vec::new(),
            next_index: 0,
            crc: crc32fast::Hasher::new(),
            total: 0,
            jobs: Some(job_tx),
            acks: ack_rx,
            in_flight: 0,
            max_in_flight: threads * 2 + 2,
            workers,
            writer: Some(writer),
        })
    }

    /// The writer thread's error, once the pipeline broke.
    fn failure(&mut self) -> io::Error {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("compression thread panicked"),
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
            BlockFormat::Gzip => {
                let d = (!self.tail.is_empty()).then(|| self.tail.clone());
                let start = data.len().saturating_sub(WINDOW);
                if data.len() >= WINDOW {
                    self.tail.clear();
                } else {
                    let keep = WINDOW - data.len();
                    let drop = self.tail.len().saturating_sub(keep);
                    self.tail.drain(..drop);
                }
                self.tail.extend_from_slice(&data[start..]);
                d
            }
            BlockFormat::Bgzf => None,
        };
        self.crc.update(&data);
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

    /// Compress what is left, write the trailer, return the output.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.send_block()?;
        }
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let mut out = match self.writer.take().map(|w| w.join()) {
            Some(Ok(r)) => r?,
            Some(Err(_)) => return Err(io::Error::other("compression thread panicked")),
            None => return Err(broken()),
        };
        match self.format {
            BlockFormat::Gzip => {
                // An empty final fixed-Huffman block, then CRC-32 and size.
                out.write_all(&[0x03, 0x00])?;
                out.write_all(&self.crc.clone().finalize().to_le_bytes())?;
                out.write_all(&(self.total as u32).to_le_bytes())?;
            }
            BlockFormat::Bgzf => out.write_all(&BGZF_EOF)?,
        }
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write + Send + 'static> Write for ParallelGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.block_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.block_size {
            self.send_block()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ParallelGzWriter<W> {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn worker(jobs: Arc<Mutex<Receiver<Job>>>, done: Sender<Done>, format: BlockFormat, level: u32) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(job) = job else { return };
        let r = match format {
            BlockFormat::Gzip => {
                deflate(&job.data, job.dict.as_deref(), level, FlushCompress::Sync)
            }
            BlockFormat::Bgzf => bgzf_block(&job.data, level),
        };
        if done.send((job.index, r)).is_err() {
            return;
        }
    }
}

fn writer<W: Write>(mut out: W, done: Receiver<Done>, acks: Sender<()>) -> io::Result<W> {
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    for (index, r) in done {
        pending.insert(index, r?);
        while let Some(block) = pending.remove(&next) {
            out.write_all(&block)?;
            next += 1;
            let _ = acks.send(());
        }
    }
    Ok(out)
}

fn deflate(
    data: &[u8],
    dict: Option<&[u8]>,
    level: u32,
    flush: FlushCompress,
) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if let Some(d) = dict {
        c.set_dictionary(d).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        let done = match flush {
            FlushCompress::Finish => status == flate2::Status::StreamEnd,
            _ => all_in && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
        out.reserve(out.capacity().max(64 << 10));
    }
}

fn bgzf_block(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut body = deflate(data, None, level, FlushCompress::Finish)?;
    if body.len() + 26 > 1 << 16 {
        body = deflate(data, None, 0, FlushCompress::Finish)?;
    }
    let total = body.len() + 26;
    let bsize = u16::try_from(total - 1).map_err(|_| io::Error::other("BGZF block too large"))?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&[
        0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 6, 0, b'B', b'C', 2, 0,
    ]);
    out.extend_from_slice(&bsize.to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        // Compressible but not trivially: a text-like pseudo-random stream.
        let mut x: u32 = 12345;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                b"abcdefgh ij\n"[(x >> 16) as usize % 12]
            })
            .collect()
    }

    #[test]
    fn gzip_round_trips_through_flate2() {
        for n in [0, 1, GZIP_BLOCK - 1, GZIP_BLOCK, 3 * GZIP_BLOCK + 17] {
            let data = sample(n);
            let mut w = ParallelGzWriter::new(Vec::new(), BlockFormat::Gzip, 6, 3).unwrap();
            for chunk in data.chunks(70_000) {
                w.write_all(chunk).unwrap();
            }
            let gz = w.finish().unwrap();
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "size {n}");
        }
    }

    #[test]
    fn bgzf_blocks_are_gzip_members() {
        let data = sample(3 * BGZF_BLOCK + 5);
        let mut w = ParallelGzWriter::new(Vec::new(), BlockFormat::Bgzf, 6, 2).unwrap();
        w.write_all(&data).unwrap();
        let gz = w.finish().unwrap();
        assert!(gz.ends_with(&BGZF_EOF));
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Walk the blocks by their BSIZE fields.
        let mut off = 0;
        let mut blocks = 0;
        while off < gz.len() {
            assert_eq!(&gz[off + 12..off + 14], b"BC");
            let bsize = u16::from_le_bytes([gz[off + 16], gz[off + 17]]) as usize;
            off += bsize + 1;
            blocks += 1;
        }
        assert_eq!(off, gz.len());
        assert_eq!(blocks, 5);
    }
}
