use super::testdata::{noise, sample};
use super::*;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const MIB: usize = 1 << 20;

fn compress(data: &[u8], opts: Options) -> Vec<u8> {
    let mut w = ParallelGz::new(Vec::new(), opts).unwrap();
    for chunk in data.chunks(70_000) {
        w.write_all(chunk).unwrap();
    }
    w.finish().unwrap()
}

/// One gzip member, nothing after it.
fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut back = Vec::new();
    let mut r = flate2::read::GzDecoder::new(gz);
    r.read_to_end(&mut back).unwrap();
    let mut rest = Vec::new();
    r.into_inner().read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "bytes after the gzip member");
    back
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap())
}

#[test]
fn gzip_round_trips_as_one_member() {
    for backend in [Backend::ZlibRs, Backend::Zlib] {
        for n in [0, 1, WINDOW, MIB - 1, MIB, MIB + 1, 3 * MIB + 17] {
            let data = sample(n);
            for level in [1, 4, 9] {
                for threads in [1, 3] {
                    let opts = Options::gzip(backend, level, MIB).threads(threads);
                    let gz = compress(&data, opts);
                    let what = format!("{backend:?} size {n} level {level} threads {threads}");
                    assert_eq!(gunzip(&gz), data, "{what}");
                    // Header as Go writes it; trailer: CRC-32, ISIZE.
                    assert_eq!(gz[..10], GZIP_HEADER, "{what}");
                    let t = gz.len() - 8;
                    assert_eq!(le32(&gz[t..t + 4]), crc32fast::hash(&data), "{what}");
                    assert_eq!(le32(&gz[t + 4..]), n as u32, "{what}");
                }
            }
        }
    }
}

#[test]
fn gzip_blocks_smaller_than_the_window_round_trip() {
    // The dictionary then spans several blocks before.
    let data = sample(200_000);
    for block in [1, 1000, WINDOW - 1, WINDOW, WINDOW + 1] {
        let gz = compress(&data, Options::gzip(Backend::Zlib, 6, block).threads(2));
        assert_eq!(gunzip(&gz), data, "block {block}");
    }
}

#[test]
fn blocks_use_the_window_before_them() {
    // The same random 16 KiB twice across a block boundary: primed with
    // the input before, the second copy costs next to nothing.
    let noise = noise(16 << 10);
    let mut data = vec![0u8; MIB - (16 << 10)];
    data.extend_from_slice(&noise);
    data.extend_from_slice(&noise);
    for backend in [Backend::ZlibRs, Backend::Zlib] {
        let gz = compress(&data, Options::gzip(backend, 4, MIB).threads(2));
        assert_eq!(gunzip(&gz), data);
        assert!(
            gz.len() < (16 << 10) + 4096,
            "{backend:?}: {} bytes",
            gz.len()
        );
    }
}

#[test]
fn zlib_output_does_not_depend_on_threads() {
    let data = sample(2 * MIB + 5);
    for opts in [
        Options::gzip(Backend::Zlib, 6, 512 << 10),
        Options::bgzf(Backend::Zlib, 6),
    ] {
        let one = compress(&data, opts);
        for threads in [2, 5] {
            assert!(compress(&data, opts.threads(threads)) == one, "{opts:?}");
        }
    }
}

#[test]
fn bgzf_blocks_are_gzip_members() {
    for backend in [Backend::Zlib, Backend::ZlibRs] {
        for (data, blocks) in [
            (sample(3 * BGZF_BLOCK + 5), 5),
            (noise(2 * BGZF_BLOCK), 3),
            (Vec::new(), 1),
        ] {
            let gz = compress(&data, Options::bgzf(backend, 6).threads(2));
            assert!(gz.ends_with(&BGZF_EOF));
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
            // Walk the members by their BSIZE fields: each has FEXTRA with
            // the one subfield BC, and its own CRC-32 and ISIZE.
            let mut off = 0;
            let mut n = 0;
            let mut input = 0;
            while off < gz.len() {
                let m = &gz[off..];
                assert_eq!(m[..4], [0x1f, 0x8b, 8, 4]);
                assert_eq!(m[10..16], [6, 0, b'B', b'C', 2, 0]);
                let bsize = u16::from_le_bytes([m[16], m[17]]) as usize;
                let member = &m[..bsize + 1];
                let isize = le32(&member[bsize - 3..]) as usize;
                let crc = le32(&member[bsize - 7..bsize - 3]);
                assert!(isize <= BGZF_BLOCK);
                assert_eq!(crc, crc32fast::hash(&data[input..input + isize]));
                input += isize;
                off += bsize + 1;
                n += 1;
            }
            assert_eq!(off, gz.len());
            assert_eq!(input, data.len());
            assert_eq!(n, blocks, "{backend:?}");
        }
    }
}

#[test]
fn bgzf_block_size_is_at_most_its_limit() {
    let opts = Options {
        block_size: 1 << 20,
        ..Options::bgzf(Backend::Zlib, 6)
    };
    let data = sample(BGZF_BLOCK + 1);
    assert_eq!(
        compress(&data, opts),
        compress(&data, Options::bgzf(Backend::Zlib, 6))
    );
}

/// Fails every write once `limit` bytes are written.
struct Full {
    written: usize,
    limit: usize,
}

impl Write for Full {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.written + b.len() > self.limit {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        self.written += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_write_error_is_returned_as_it_was() {
    let data = noise(4 * MIB);
    for limit in [5, 100_000, 3 * MIB] {
        let opts = Options::gzip(Backend::Zlib, 1, 64 << 10).threads(2);
        let r = ParallelGz::new(Full { written: 0, limit }, opts)
            .and_then(|mut w| w.write_all(&data).and_then(|()| w.finish()));
        let e = r.err().expect("an error");
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "limit {limit}: {e}");
        assert_eq!(e.to_string(), "disk full");
    }
}

#[test]
fn a_worker_panic_is_an_error() {
    for (at, size) in [(0, 1000), (3, 100 << 10), (3, 4 * MIB)] {
        let opts = Options {
            panic_at: Some(at),
            ..Options::gzip(Backend::ZlibRs, 1, 16 << 10).threads(2)
        };
        let mut w = ParallelGz::new(Vec::new(), opts).unwrap();
        let r = w.write_all(&sample(size)).and_then(|()| w.finish());
        let e = r.expect_err("an error");
        assert_eq!(e.to_string(), "compression thread panicked", "{at} {size}");
    }
}

/// Holds every write until `open`.
struct Gate {
    open: Arc<Mutex<bool>>,
}

impl Write for Gate {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        while !*self.open.lock().unwrap() {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts what the writer accepts.
struct Accepted<W: Write>(W, Arc<AtomicUsize>);

impl<W: Write> Write for Accepted<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.0.write(b)?;
        self.1.fetch_add(n, Ordering::SeqCst);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[test]
fn blocks_in_flight_are_bounded() {
    // The output is stuck: the writer takes at most 2 * threads + 2
    // blocks, plus the one being filled.
    let open = Arc::new(Mutex::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let block = 4096;
    let threads = 2;
    let gate = Gate { open: open.clone() };
    // BGZF: no header written before the threads start.
    let opts = Options::bgzf(Backend::Zlib, 1).threads(threads);
    let opts = Options {
        block_size: block,
        ..opts
    };
    let w = ParallelGz::new(gate, opts).unwrap();
    let count = accepted.clone();
    let producer = std::thread::spawn(move || {
        let mut w = Accepted(w, count);
        w.write_all(&sample(100 * block)).unwrap();
        w.0.finish().unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    let most = (2 * threads + 2 + 1) * block;
    let got = accepted.load(Ordering::SeqCst);
    assert!(got <= most, "{got} bytes taken, at most {most}");
    assert!(!producer.is_finished());
    *open.lock().unwrap() = true;
    producer.join().unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 100 * block);
}
