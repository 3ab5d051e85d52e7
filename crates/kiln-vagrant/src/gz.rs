//! The box's gzip: one gzip member compressed on every core, with zlib-rs.
//!
//! Why not the workspace's `flate2`: every other crate asks flate2 for the
//! C zlib, and flate2 uses a C backend whenever one is asked for, so this
//! crate cannot get flate2's zlib-rs backend alone. zlib-rs compresses this
//! kind of data (a disk image) about twice as fast as C zlib 1.2.13 at the
//! levels the box uses (benches/box.rs, docs/vagrant.md), so the box's
//! deflate is zlib-rs, called directly.
//!
//! The stream is the one pigz and Go's pgzip write: the input is cut into
//! blocks; each is raw deflate primed with the 32 KiB before it and ended
//! by a sync flush (so the pieces join at byte boundaries); an empty final
//! block, the CRC-32 and the size close it. Any gzip reader reads it.
//!
//! The main thread fills blocks; `threads` workers compress them (and take
//! their CRC-32); a writer thread puts them out in order and joins the
//! CRCs. At most `2 * threads + 2` blocks are in flight.
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use zlib_rs::{Deflate, DeflateFlush, Status};

/// Input per block. Larger blocks lose less to the sync flushes and to
/// restarting the match search; 1 MiB keeps 2 cores busy to the end of a
/// small image too.
pub const BLOCK: usize = 1 << 20;
const WINDOW: usize = 32 << 10;

struct Job {
    index: u64,
    data: Arc<Vec<u8>>,
    /// The block before, whose last 32 KiB prime the deflate.
    prev: Option<Arc<Vec<u8>>>,
}

struct Block {
    deflated: Vec<u8>,
    crc: crc32fast::Hasher,
}

type Done = (u64, io::Result<Block>);

/// Totals the writer thread hands back with the output.
struct Tail<W> {
    out: W,
    crc: crc32fast::Hasher,
}

pub struct ParallelGz<W: Write + Send + 'static> {
    buf: Vec<u8>,
    prev: Option<Arc<Vec<u8>>>,
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

impl<W: Write + Send + 'static> ParallelGz<W> {
    /// gzip `level` 1..=9 (zlib-rs's levels); `threads` workers (at least
    /// one).
    pub fn new(mut out: W, level: u32, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        let level = level.clamp(1, 9) as i32;
        // No name, no time, OS unknown (as Go writes it).
        out.write_all(&[0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff])?;
        let (job_tx, job_rx) = sync_channel::<Job>(threads);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = channel::<Done>();
        let (ack_tx, ack_rx) = channel::<()>();
        let workers = (0..threads)
            .map(|_| {
                let rx = job_rx.clone();
                let tx = done_tx.clone();
                std::thread::spawn(move || worker(rx, tx, level))
            })
            .collect();
        drop(done_tx);
        let writer = std::thread::spawn(move || writer(out, done_rx, ack_tx));
        Ok(ParallelGz {
            buf: Vec::with_capacity(BLOCK),
            prev: None,
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
        let data = Arc::new(std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK)));
        while let Ok(()) = self.acks.try_recv() {
            self.in_flight -= 1;
        }
        while self.in_flight >= self.max_in_flight {
            match self.acks.recv() {
                Ok(()) => self.in_flight -= 1,
                Err(_) => return Err(self.failure()),
            }
        }
        self.total += data.len() as u64;
        let job = Job {
            index: self.next_index,
            data: data.clone(),
            prev: self.prev.replace(data),
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
        self.prev = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let Tail { mut out, crc } = match self.writer.take().map(|w| w.join()) {
            Some(Ok(r)) => r?,
            Some(Err(_)) => return Err(io::Error::other("compression thread panicked")),
            None => return Err(broken()),
        };
        // An empty final fixed-Huffman block, then CRC-32 and size.
        out.write_all(&[0x03, 0x00])?;
        out.write_all(&crc.finalize().to_le_bytes())?;
        out.write_all(&(self.total as u32).to_le_bytes())?;
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write + Send + 'static> Write for ParallelGz<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (BLOCK - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK {
            self.send_block()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ParallelGz<W> {
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

fn worker(jobs: Arc<Mutex<Receiver<Job>>>, done: Sender<Done>, level: i32) {
    // One deflate state per worker, reset for each block: its window and
    // hash tables are allocated once.
    let mut d = Deflate::new(level, false, 15);
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(job) = job else { return };
        let r = block(&mut d, &job.data, job.prev.as_deref().map(|p| &p[..]));
        if done.send((job.index, r)).is_err() {
            return;
        }
    }
}

/// One block: raw deflate primed with the end of `prev`, sync-flushed.
fn block(d: &mut Deflate, data: &[u8], prev: Option<&[u8]>) -> io::Result<Block> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    d.reset();
    if let Some(p) = prev {
        d.set_dictionary(&p[p.len().saturating_sub(WINDOW)..])
            .map_err(|e| io::Error::other(e.as_str()))?;
    }
    // Room for all of it in one call: the worst case plus the flush marker.
    let mut out = vec![0u8; zlib_rs::compress_bound(data.len()) + 64];
    let mut used = 0;
    loop {
        let in_before = d.total_in() as usize;
        let out_before = d.total_out() as usize;
        let status = d
            .compress(
                &data[in_before..],
                &mut out[used..],
                DeflateFlush::SyncFlush,
            )
            .map_err(|e| io::Error::other(e.as_str()))?;
        used += d.total_out() as usize - out_before;
        // Done once all input is in and the flush did not run out of room.
        if d.total_in() as usize == data.len() && used < out.len() && status != Status::BufError {
            break;
        }
        out.resize(out.len() + (64 << 10), 0);
    }
    out.truncate(used);
    Ok(Block { deflated: out, crc })
}

fn writer<W: Write>(mut out: W, done: Receiver<Done>, acks: Sender<()>) -> io::Result<Tail<W>> {
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    let mut crc = crc32fast::Hasher::new();
    for (index, r) in done {
        pending.insert(index, r?);
        while let Some(b) = pending.remove(&next) {
            out.write_all(&b.deflated)?;
            crc.combine(&b.crc);
            next += 1;
            let _ = acks.send(());
        }
    }
    Ok(Tail { out, crc })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        // Compressible but not trivially: a text-like pseudo-random stream,
        // with runs of zeros as a disk has.
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

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        let mut r = flate2::read::GzDecoder::new(gz);
        r.read_to_end(&mut back).unwrap();
        // One member, nothing after it.
        let mut rest = Vec::new();
        r.into_inner().read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "bytes after the gzip member");
        back
    }

    #[test]
    fn round_trips_as_one_gzip_member() {
        for n in [0, 1, WINDOW, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17] {
            let data = sample(n);
            for level in [1, 4, 9] {
                for threads in [1, 3] {
                    let mut w = ParallelGz::new(Vec::new(), level, threads).unwrap();
                    for chunk in data.chunks(70_000) {
                        w.write_all(chunk).unwrap();
                    }
                    let gz = w.finish().unwrap();
                    assert_eq!(
                        gunzip(&gz),
                        data,
                        "size {n} level {level} threads {threads}"
                    );
                }
            }
        }
    }

    #[test]
    fn blocks_use_the_window_before_them() {
        // The same random 64 KiB twice across a block boundary: primed
        // with the block before, the second copy costs next to nothing.
        let mut x: u32 = 7;
        let noise: Vec<u8> = (0..64 << 10)
            .map(|_| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        let mut data = vec![0u8; BLOCK - (16 << 10)];
        data.extend_from_slice(&noise[..16 << 10]);
        data.extend_from_slice(&noise[..16 << 10]);
        let mut w = ParallelGz::new(Vec::new(), 4, 2).unwrap();
        w.write_all(&data).unwrap();
        let gz = w.finish().unwrap();
        assert_eq!(gunzip(&gz), data);
        assert!(gz.len() < (16 << 10) + 4096, "{} bytes", gz.len());
    }
}
