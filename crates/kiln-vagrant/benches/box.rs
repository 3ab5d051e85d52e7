//! Box creation, kiln vs Packer 1.6.6, on the same qcow2: wall time (as a
//! ratio) and peak extra disk.
//!
//! ```text
//! cargo bench -p kiln-vagrant --bench box            # 3 rounds
//! KILN_BENCH_QCOW2=/path/disk.qcow2 KILN_BENCH_ROUNDS=5 cargo bench -p kiln-vagrant --bench box
//! KILN_BENCH_LEVEL=9 cargo bench -p kiln-vagrant --bench box   # another compression_level
//! ```
//!
//! The image: `KILN_BENCH_QCOW2`, else the seed's image
//! (examples/seed/output-seed/seed.qcow2, scripts/example.sh makes it),
//! else testlab/vagrant's base image (/var/tmp/kiln-vagrant-lab/).
//!
//! Packer needs a qemu builder's artifact: its qemu builder takes the image
//! (`disk_image`), boots under TCG a 512-byte disk of ours instead (given
//! with `qemuargs`, so the image is never booted) that triple-faults after
//! 8 s, and its vagrant post-processor boxes the image. Packer's time
//! is from the line "Running post-processor: vagrant" to its exit, read as
//! Packer prints it; kiln's is its post-processor boxing Packer's output
//! qcow2 (the same file), in process. Peak extra disk: the largest total
//! size, sampled every 20 ms, of what each writes (Packer: its temporary
//! box directory under TMPDIR and the box; kiln: the box). Both write a
//! libvirt box at `compression_level` 6 (the default; zlib-rs's 4 for
//! kiln, see `kiln_vagrant::zlib_level`), or `KILN_BENCH_LEVEL`, on every
//! core; box sizes are printed in bytes too, to check the level mapping.
use kiln_core::ui::{Mode, OutputConfig};
use kiln_core::{Artifact, BuildCtx, FileArtifact, Output, PostProcessCtx, PostProcessor};
use kiln_vagrant::{Config, Settings, Vagrant};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn image() -> PathBuf {
    if let Ok(p) = std::env::var("KILN_BENCH_QCOW2") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for p in [
        root.join("examples/seed/output-seed/seed.qcow2"),
        PathBuf::from("/var/tmp/kiln-vagrant-lab/debian-12.qcow2"),
    ] {
        if p.is_file() {
            return p;
        }
    }
    panic!("no image: set KILN_BENCH_QCOW2, or run scripts/example.sh (the seed's image) or testlab/vagrant/run.sh (its base image)");
}

fn du(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => {
            use std::os::unix::fs::MetadataExt;
            m.blocks() * 512
        }
        Err(_) => 0,
    }
}

/// Samples the disk used under `paths` until dropped; the peak.
struct Peak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    h: Option<std::thread::JoinHandle<()>>,
}

impl Peak {
    fn watch(paths: Vec<PathBuf>) -> Peak {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let h = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let n: u64 = paths.iter().map(|x| du(x)).sum();
                p.fetch_max(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Peak {
            stop,
            peak,
            h: Some(h),
        }
    }
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.h.take().unwrap().join().unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}

/// A raw disk whose boot sector waits 8 s (Packer connects to its VNC
/// first), then triple-faults.
fn boot_disk(p: &Path) {
    let code = [
        0xFB, 0x31, 0xC0, 0x8E, 0xD8, 0x8B, 0x1E, 0x6C, 0x04, 0xA1, 0x6C, 0x04, 0x29, 0xD8, 0x3D,
        0x92, 0x00, 0x72, 0xF6, 0xFA, 0x0F, 0x01, 0x1E, 0x20, 0x7C, 0xCC, 0xF4,
    ];
    let mut s = vec![0u8; 1 << 20];
    s[..code.len()].copy_from_slice(&code);
    s[510] = 0x55;
    s[511] = 0xAA;
    std::fs::write(p, s).unwrap();
}

/// Packer's qemu build and vagrant post-processor: (post-processor time,
/// peak extra disk, its box, its output qcow2).
fn packer(img: &Path, dir: &Path, level: u32) -> (Duration, u64, PathBuf, PathBuf) {
    let boot = dir.join("boot.raw");
    boot_disk(&boot);
    let out = dir.join("out");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let boxp = dir.join("packer.box");
    let t = serde_json::json!({
        "builders": [{
            "type": "qemu", "iso_url": img, "iso_checksum": "none",
            "disk_image": true, "format": "qcow2", "skip_resize_disk": true,
            "accelerator": "tcg", "communicator": "none", "headless": true,
            "output_directory": out, "vm_name": "disk.qcow2", "boot_wait": "1s",
            "qemuargs": [["-no-reboot"], ["-drive", format!("file={},format=raw,if=ide", boot.display())]]
        }],
        "post-processors": [{"type": "vagrant", "keep_input_artifact": true, "output": boxp,
                             "compression_level": level}]
    });
    std::fs::write(dir.join("t.json"), t.to_string()).unwrap();
    let mut child = Command::new(std::env::var("KILN_PACKER").unwrap_or_else(|_| "packer".into()))
        .current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CONFIG_DIR", dir.join(".packer.d"))
        .env("TMPDIR", &tmp)
        .args(["build", "-color=false", "t.json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("packer 1.6.6 (apt-get install packer)");
    let mut start = None;
    let mut peak = None;
    let mut log = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if start.is_none() && line.contains("Running post-processor: vagrant") {
            start = Some(Instant::now());
            peak = Some(Peak::watch(vec![tmp.clone(), boxp.clone()]));
        }
        log.push_str(&line);
        log.push('\n');
    }
    let ok = child.wait().unwrap().success();
    let took = start.map(|s| s.elapsed());
    let peak = peak.map(Peak::finish);
    assert!(ok && took.is_some(), "packer failed:\n{log}");
    (took.unwrap(), peak.unwrap(), boxp, out.join("disk.qcow2"))
}

fn kiln(disk: &Path, dir: &Path, level: u32) -> (Duration, u64, PathBuf) {
    let boxp = dir.join("kiln.box");
    let out = Output::capturing(OutputConfig {
        mode: Mode::Human,
        color: false,
        timestamp: false,
    });
    let mut build = BuildCtx::for_test(out.build_ui("bench"), dir.to_path_buf());
    build.build_name = "bench".into();
    let mut a = FileArtifact::new("transcend.qemu", vec![disk.to_path_buf()]);
    a.state.insert("diskName".into(), "disk.qcow2".into());
    a.state.insert("diskType".into(), "qcow2".into());
    a.state.insert("domainType".into(), "tcg".into());
    let a: Arc<dyn Artifact> = Arc::new(a);
    let pp = Vagrant {
        config: Config {
            settings: Settings {
                output: boxp.display().to_string(),
                level: kiln_vagrant::zlib_level(level),
                include: vec![],
                vagrantfile_template: None,
                virtualbox_memory: 1024,
                virtualbox_cpus: 1,
                virtualbox_os_type: "Debian_64".into(),
            },
            provider_override: None,
            overrides: Default::default(),
        },
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let peak = Peak::watch(vec![boxp.clone()]);
    let start = Instant::now();
    rt.block_on(pp.post_process(
        &PostProcessCtx {
            build: &build,
            interp: Default::default(),
        },
        a,
    ))
    .unwrap();
    let took = start.elapsed();
    (took, peak.finish(), boxp)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let img = image();
    let rounds: usize = std::env::var("KILN_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let level: u32 = std::env::var("KILN_BENCH_LEVEL")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6);
    let base = std::env::var("KILN_BENCH_DIR").map_or(std::env::temp_dir(), PathBuf::from);
    let size = std::fs::metadata(&img).unwrap().len();
    println!(
        "image {} ({:.0} MiB, {size} bytes), {} cores, {rounds} rounds, compression_level {level} (kiln: zlib-rs {})",
        img.display(),
        mib(size),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        kiln_vagrant::zlib_level(level)
    );
    let (mut kt, mut pt, mut ratios) = (vec![], vec![], vec![]);
    for r in 0..rounds {
        let d = tempfile::tempdir_in(&base).unwrap();
        let (p, p_peak, p_box, disk) = packer(&img, d.path(), level);
        let (k, k_peak, k_box) = kiln(&disk, d.path(), level);
        let (ps, ks) = (
            std::fs::metadata(&p_box).unwrap().len(),
            std::fs::metadata(&k_box).unwrap().len(),
        );
        println!(
            "round {}: packer {:.2} s (peak extra disk {:.0} MiB, box {:.0} MiB) | kiln {:.2} s (peak extra disk {:.0} MiB, box {:.0} MiB) | ratio {:.2}x | boxes {ps} / {ks} bytes",
            r + 1,
            p.as_secs_f64(),
            mib(p_peak),
            mib(ps),
            k.as_secs_f64(),
            mib(k_peak),
            mib(ks),
            k.as_secs_f64() / p.as_secs_f64()
        );
        pt.push(p.as_secs_f64());
        kt.push(k.as_secs_f64());
        ratios.push(k.as_secs_f64() / p.as_secs_f64());
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (p, k) = (med(&mut pt), med(&mut kt));
    // Each round's ratio pairs two runs a few seconds apart; on a shared
    // machine its median is steadier than the ratio of median times.
    let r = med(&mut ratios);
    println!(
        "median: packer {p:.2} s, kiln {k:.2} s: kiln/packer = {:.2}x; median of the rounds' ratios {r:.2}x (target <= 0.5x)",
        k / p
    );
}
