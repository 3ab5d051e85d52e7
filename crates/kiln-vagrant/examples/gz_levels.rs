//! The box's gzip (`kiln_vagrant::gz`) of an image at each level: its size
//! and time, to choose the level mapping (`kiln_vagrant::zlib_level`)
//! against Packer's boxes (benches/box.rs with `KILN_BENCH_LEVEL`).
//!
//! ```text
//! cargo run --release -p kiln-vagrant --example gz_levels -- IMAGE [LEVELS] [THREADS]
//! cargo run --release -p kiln-vagrant --example gz_levels -- disk.qcow2 1,2,3,4,5,6,7,8,9 2
//! ```
use std::io::{self, Read, Write};

/// Counts what is written, keeps nothing.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(image) = args.get(1) else {
        eprintln!("usage: gz_levels IMAGE [LEVELS, e.g. 1,4,9] [THREADS]");
        std::process::exit(2);
    };
    let levels = args.get(2).map_or("1,2,3,4,5,6,7,8,9", |s| s.as_str());
    let threads = args
        .get(3)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let size = std::fs::metadata(image)?.len();
    println!("{image}: {size} bytes, {threads} threads");
    let mut buf = vec![0u8; 1 << 20];
    for level in levels.split(',') {
        let level: u32 = level.trim().parse().expect("a level 1-9");
        let mut f = std::fs::File::open(image)?;
        let start = std::time::Instant::now();
        let mut gz = kiln_vagrant::gz::writer(Count(0), level, threads)?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            gz.write_all(&buf[..n])?;
        }
        let out = gz.finish()?;
        println!(
            "level {level}: {} bytes ({:.2}%), {:.2} s",
            out.0,
            100.0 * out.0 as f64 / size as f64,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
