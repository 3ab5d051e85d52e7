//! Benchmark on the OpenStack lab (not a test): in one run,
//! 1. the seed's template (examples/seed/openstack.json, verbatim, with the
//!    lab's stand-in scripts from testlab/openstack/seed) with `kiln build` (the
//!    release binary, built first) and with Packer 1.6.6 (`packer build`),
//!    alternating, median wall time of each;
//! 2. the create_box step on a 2 GiB raw image holding 400 MiB of data:
//!    kiln's post-processor versus the seed's script (python-glanceclient
//!    and qemu-img), wall time and peak local disk of each.
//!
//!     KILN_OPENSTACK_LAB=/tmp/lab cargo bench -p kiln-openstack --bench lab
//!
//! Prints ratios; targets: builder <= 0.6x Packer, create_box <= 0.7x the
//! script with peak disk <= the qcow2's size. `KILN_BENCH_ROUNDS` (default
//! 3) sets the number of seed builds of each.
#[path = "../tests/support/mod.rs"]
mod support;

use kiln_core::{Artifact, PostProcessCtx, PostProcessor};
use kiln_openstack::create_box::{self, CreateBox};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// A directory like the seed's: its template (examples/seed/openstack.json,
/// verbatim) with the lab's harmless stand-ins for its scripts and data
/// (the lab's "instance" is this machine).
fn seed_dir() -> tempfile::TempDir {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let d = tempfile::tempdir().unwrap();
    let src = ws.join("testlab/openstack/seed");
    let st = Command::new("cp")
        .arg("-r")
        .arg(src.join("scripts"))
        .arg(src.join("data"))
        .arg(d.path())
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::copy(
        ws.join("examples/seed/openstack.json"),
        d.path().join("template.json"),
    )
    .unwrap();
    d
}

/// The release `kiln` binary (built here if missing).
fn kiln_binary() -> PathBuf {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let st = Command::new("cargo")
        .args(["build", "--release", "-q", "-p", "kiln-cli"])
        .current_dir(&ws)
        .status()
        .expect("cargo");
    assert!(st.success(), "building kiln failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"));
    target.join("release/kiln")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Peak disk use (allocated blocks) of the files under `dir`, sampled
/// every 10 ms until stopped.
struct DiskWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    t: Option<std::thread::JoinHandle<()>>,
}

fn usage(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                total += if m.is_dir() {
                    usage(&e.path())
                } else {
                    m.blocks() * 512
                };
            }
        }
    }
    total
}

impl DiskWatch {
    fn start(dir: &Path) -> DiskWatch {
        let (stop, peak) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s2, p2, d) = (stop.clone(), peak.clone(), dir.to_path_buf());
        let t = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                p2.fetch_max(usage(&d), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        DiskWatch {
            stop,
            peak,
            t: Some(t),
        }
    }
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // built by `cargo test --all-targets`: nothing to do
    }
    let Some(root) = lab() else { return };
    export_seedrc(&root);
    let cloud = seed_cloud(&root).await;
    sweep(&cloud).await;
    let rounds: usize = std::env::var("KILN_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);

    // ---- 1. the seed's template
    let seed_tmp = seed_dir();
    let seed = seed_tmp.path().to_path_buf();
    let kiln = kiln_binary();
    let (mut kt, mut pt) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // kiln: the real binary, the same template, the same directory
        let t = Instant::now();
        let o = Command::new(&kiln)
            .args(["build", "-color=false", "template.json"])
            .current_dir(&seed)
            .output()
            .expect("kiln");
        kt.push(t.elapsed().as_secs_f64());
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "kiln failed:\n{text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let id = text
            .split("An image was created: ")
            .nth(1)
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .to_string();
        cloud.delete_image(&id).await.unwrap();
        if round == 0 {
            for l in text.lines().filter(|l| l.starts_with("==> ")) {
                println!("  kiln  {l}");
            }
        }
        // Packer
        let t = Instant::now();
        let o = Command::new("packer")
            .args(["build", "-color=false", "template.json"])
            .current_dir(&seed)
            .output()
            .expect("packer (apt-get install packer)");
        pt.push(t.elapsed().as_secs_f64());
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "packer failed:\n{text}");
        let id = text
            .lines()
            .last()
            .and_then(|l| l.split("An image was created: ").nth(1))
            .unwrap()
            .trim()
            .to_string();
        cloud.delete_image(&id).await.unwrap();
        println!(
            "seed template round {}: kiln {:.2} s, packer {:.2} s",
            round + 1,
            kt[round],
            pt[round]
        );
    }
    let (k, p) = (median(kt), median(pt));
    println!(
        "seed template: kiln {k:.2} s, packer 1.6.6 {p:.2} s (medians of {rounds}): ratio {:.2} (target <= 0.60)",
        k / p
    );

    // ---- 2. create_box on a 2 GiB raw image with 400 MiB of data
    let work = tempfile::tempdir().unwrap();
    let raw_p = work.path().join("src.raw");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&raw_p).unwrap();
        f.set_len(2 << 30).unwrap();
        // 400 MiB of data: 100 runs of 4 MiB spread over the disk
        // (pseudo-random bytes, so compression does not make it trivial).
        let mut x: u64 = 0x2545F4914F6CDD1D;
        let mut buf = vec![0u8; 4 << 20];
        for i in 0..100u64 {
            for c in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
            }
            f.seek(SeekFrom::Start(i * (20 << 20))).unwrap();
            f.write_all(&buf).unwrap();
        }
    }
    let src = cloud
        .create_image(serde_json::json!({"name": "bench raw", "disk_format": "raw", "container_format": "bare"}))
        .await
        .unwrap();
    let f = tokio::fs::File::open(&raw_p).await.unwrap();
    cloud
        .upload_image(
            &src.id,
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20)),
            Some(2 << 30),
        )
        .await
        .unwrap();
    std::fs::remove_file(&raw_p).unwrap();
    let art: Arc<dyn Artifact> = Arc::new(kiln_openstack::builder::ImageArtifact::new(
        cloud.clone(),
        src.id.clone(),
    ));

    // kiln
    let kdir = work.path().join("kiln");
    std::fs::create_dir_all(&kdir).unwrap();
    let (out, ctx) = support::ctx(&kdir);
    let pp = CreateBox {
        config: create_box::Config {
            name: Some("Packer example".into()),
            disk_format: "qcow2".into(),
            container_format: "bare".into(),
            compression_level: 6,
            ..Default::default()
        },
    };
    let watch = DiskWatch::start(&kdir);
    let t = Instant::now();
    let res = pp
        .post_process(
            &PostProcessCtx {
                build: &ctx,
                interp: Default::default(),
            },
            art.clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("create_box failed: {e}\n{}", out.captured()));
    let kiln_s = t.elapsed().as_secs_f64();
    let kiln_peak = watch.finish();
    let q = res.artifact.unwrap();
    let kiln_qcow2 = cloud.get_image(&q.id()).await.unwrap().size.unwrap();
    q.destroy().await.unwrap();

    // the seed's script (without its packer build), with python-glanceclient
    let sdir = work.path().join("script");
    std::fs::create_dir_all(&sdir).unwrap();
    let glance = root.join("venv/bin/glance");
    let watch = DiskWatch::start(&sdir);
    let t = Instant::now();
    let sh = format!(
        "set -e; PACKER_RAW=./packer$$.raw; PACKER_QCOW=./packer$$.qcow2
         echo Downloading raw image; {g} image-download --progress --file $PACKER_RAW {id}
         echo Converting to QCOW2; qemu-img convert -f raw -O qcow2 $PACKER_RAW $PACKER_QCOW
         {g} image-create --file $PACKER_QCOW --disk-format qcow2 --container-format bare --progress --name 'Packer example' > create.out
         sed -n 's/^| id  *| \\([0-9a-f-]*\\) *|$/\\1/p' create.out > new-id
         echo cleaning local file system; rm $PACKER_RAW $PACKER_QCOW",
        g = glance.display(),
        id = src.id
    );
    let o = Command::new("bash")
        .args(["-c", &sh])
        .current_dir(&sdir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                root.join("venv/bin").display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .output()
        .unwrap();
    let script_s = t.elapsed().as_secs_f64();
    let script_peak = watch.finish();
    assert!(
        o.status.success(),
        "script failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let new_id = std::fs::read_to_string(sdir.join("new-id"))
        .unwrap()
        .trim()
        .to_string();
    let script_qcow2 = cloud.get_image(&new_id).await.unwrap().size.unwrap();
    cloud.delete_image(&new_id).await.unwrap();
    cloud.delete_image(&src.id).await.unwrap();

    println!(
        "create_box 2 GiB raw / 400 MiB data: kiln {kiln_s:.2} s, peak disk {:.0} MiB (qcow2 {:.0} MiB); \
         seed script {script_s:.2} s, peak disk {:.0} MiB (qcow2 {:.0} MiB)",
        mib(kiln_peak),
        mib(kiln_qcow2),
        mib(script_peak),
        mib(script_qcow2)
    );
    println!(
        "create_box: time ratio {:.2} (target <= 0.70); kiln peak disk {kiln_peak} B / its qcow2 {kiln_qcow2} B = {:.4} \
         (target <= 1, up to the file system's allocation granularity)",
        kiln_s / script_s,
        kiln_peak as f64 / kiln_qcow2 as f64
    );
    sweep(&cloud).await;
}
