//! amazon-import's upload of a qcow2 to the lab's S3: kiln (the qcow2 read
//! and streamed into a multipart upload from memory, as raw and as a
//! stream-optimized VMDK) against `qemu-img convert` to raw followed by
//! `aws s3 cp` (the AWS CLI from PyPI, in the lab's venv). Wall time and
//! peak extra disk, printed with ratios; the tools alternate order over
//! KILN_BENCH_ROUNDS rounds (default 2), medians compared.
//!
//!     bash testlab/aws/with-lab.sh /tmp/kiln-awslab cargo bench -p kiln-aws --bench import
//!
//! The image: examples/seed/output-seed/seed.qcow2 when it exists (run
//! ./scripts/example.sh), else a 1 GiB disk (KILN_BENCH_DISK_MIB) with an
//! ext4 file system holding ~300 MB of this machine's files
//! (KILN_BENCH_DATA_MIB), made once under target/bench-data.
use kiln_aws::import::{upload_image, Source};
use kiln_aws::s3::Sse;
use kiln_aws::{AccessConfig, Aws, Env};
use kiln_core::communicator::NoProgress;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Hard-link files of this machine into `dir` until `mib` MiB.
fn stage_files(dir: &Path, mib: u64) {
    let mut total = 0u64;
    let limit = mib << 20;
    let mut stack: Vec<PathBuf> = [
        "/usr/bin",
        "/usr/share/doc",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/share/locale",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    let mut n = 0u64;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if total >= limit {
                return;
            }
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                n += 1;
                let to = dir.join(format!("f{n:06}"));
                if std::fs::hard_link(&p, &to).is_err() && std::fs::copy(&p, &to).is_err() {
                    continue;
                }
                total += m.len();
            }
        }
    }
}

fn bench_image(root: &Path) -> PathBuf {
    let seed = root.join("examples/seed/output-seed/seed.qcow2");
    if seed.is_file() {
        return seed;
    }
    let disk: u64 = std::env::var("KILN_BENCH_DISK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let data: u64 = std::env::var("KILN_BENCH_DATA_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = root.join(format!("target/bench-data/import-{disk}-{data}"));
    let q = dir.join("disk.qcow2");
    if q.is_file() {
        return q;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let stage = dir.join("stage");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage).unwrap();
    stage_files(&stage, data);
    let raw = dir.join("disk.raw");
    run(Command::new("truncate")
        .arg("-s")
        .arg(format!("{disk}M"))
        .arg(&raw));
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&stage)
        .arg(&raw));
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q));
    std::fs::remove_file(&raw).unwrap();
    let _ = std::fs::remove_dir_all(&stage);
    q
}

fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

struct Lab {
    endpoint: String,
    venv: PathBuf,
}

fn peer(
    lab: &Lab,
    image: &Path,
    work: &Path,
    bucket: &str,
    key: &str,
    format: &str,
) -> (Duration, Duration, u64) {
    let out = work.join(format!("peer.{format}"));
    let t0 = Instant::now();
    let mut c = Command::new("qemu-img");
    c.args(["convert", "-f", "qcow2", "-O", format]);
    if format == "vmdk" {
        c.args(["-o", "subformat=streamOptimized"]);
    }
    run(c.arg(image).arg(&out));
    let convert = t0.elapsed();
    let disk = allocated(&out);
    run(Command::new(lab.venv.join("bin/aws"))
        .args(["s3", "cp", "--quiet", "--endpoint-url", &lab.endpoint])
        .arg(&out)
        .arg(format!("s3://{bucket}/{key}"))
        .env("AWS_ACCESS_KEY_ID", "kiln-lab")
        .env("AWS_SECRET_ACCESS_KEY", "kiln-lab-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1"));
    let total = t0.elapsed();
    std::fs::remove_file(&out).unwrap();
    (total, convert, disk)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|k| k / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let Ok(root) = std::env::var("KILN_AWS_LAB") else {
        eprintln!("KILN_AWS_LAB is not set: bash testlab/aws/with-lab.sh /tmp/kiln-awslab cargo bench -p kiln-aws --bench import");
        std::process::exit(2);
    };
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(&root).join("lab.json")).unwrap())
            .unwrap();
    let lab = Lab {
        endpoint: v["endpoint"].as_str().unwrap().to_string(),
        venv: PathBuf::from(v["venv"].as_str().unwrap()),
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let image = bench_image(&repo);
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&image));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let vsize = info["virtual-size"].as_u64().unwrap();
    println!(
        "image {}: virtual {:.0} MiB, qcow2 {:.0} MiB",
        image.display(),
        mib(vsize),
        mib(allocated(&image))
    );
    let access = AccessConfig {
        access_key: Some("kiln-lab".into()),
        secret_key: Some("kiln-lab-secret".into()),
        region: Some("us-east-1".into()),
        custom_endpoint_ec2: Some(lab.endpoint.clone()),
        skip_metadata_api_check: true,
        ..Default::default()
    };
    let aws = Aws::connect_with(&access, Env::default()).await.unwrap();
    let bucket = format!(
        "kiln-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    aws.s3().create_bucket(&bucket).await.unwrap();
    let work = tempfile::tempdir_in(repo.join("target")).unwrap();
    let rounds: usize = std::env::var("KILN_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let (mut k_raw, mut k_vmdk, mut p_raw, mut p_vmdk) = (vec![], vec![], vec![], vec![]);
    let (mut p_disk, mut p_conv, mut vmdk_size) = (0u64, vec![], 0u64);
    for round in 0..rounds {
        let mut order = vec!["kiln-raw", "peer-raw", "kiln-vmdk", "peer-vmdk"];
        if round % 2 == 1 {
            order.reverse();
        }
        for who in order {
            let key = format!("{who}-{round}");
            let t0 = Instant::now();
            match who {
                "kiln-raw" | "kiln-vmdk" => {
                    let src = if who == "kiln-raw" {
                        Source::Qcow2AsRaw(image.clone())
                    } else {
                        Source::Qcow2AsVmdk(image.clone())
                    };
                    let sent = upload_image(
                        &aws,
                        &src,
                        &bucket,
                        &key,
                        16 << 20,
                        &Sse::default(),
                        Arc::new(NoProgress),
                    )
                    .await
                    .unwrap();
                    let t = t0.elapsed().as_secs_f64();
                    if who == "kiln-raw" {
                        assert_eq!(sent, vsize);
                        k_raw.push(t);
                    } else {
                        vmdk_size = sent;
                        k_vmdk.push(t);
                    }
                }
                "peer-raw" | "peer-vmdk" => {
                    let fmt = if who == "peer-raw" { "raw" } else { "vmdk" };
                    let (total, conv, disk) = peer(&lab, &image, work.path(), &bucket, &key, fmt);
                    if fmt == "raw" {
                        p_raw.push(total.as_secs_f64());
                        p_conv.push(conv.as_secs_f64());
                        p_disk = p_disk.max(disk);
                    } else {
                        p_vmdk.push(total.as_secs_f64());
                    }
                }
                _ => unreachable!(),
            }
            println!(
                "round {} {who}: {:.1} s",
                round + 1,
                t0.elapsed().as_secs_f64()
            );
            aws.s3().delete_object(&bucket, &key).await.unwrap();
        }
    }
    let (kr, kv, pr, pv) = (median(k_raw), median(k_vmdk), median(p_raw), median(p_vmdk));
    println!();
    println!("medians of {rounds} round(s), alternating order:");
    println!(
        "  qemu-img convert -O raw + aws s3 cp:    {pr:7.1} s (convert {:.1} s), peak extra disk {:.0} MiB (the raw file, allocated; {:.0} MiB apparent)",
        median(p_conv),
        mib(p_disk),
        mib(vsize)
    );
    println!("  kiln, qcow2 streamed as raw:            {kr:7.1} s  = {:.2}x, peak extra disk 0 MiB (parts in memory)", kr / pr);
    println!(
        "  kiln, qcow2 streamed as VMDK:           {kv:7.1} s  = {:.2}x, peak extra disk 0 MiB, {:.0} MiB sent",
        kv / pr,
        mib(vmdk_size)
    );
    println!(
        "  qemu-img convert streamOptimized + aws: {pv:7.1} s  (kiln VMDK vs it: {:.2}x)",
        kv / pv
    );
    println!(
        "  kiln's peak memory (whole bench process): {:.0} MiB",
        peak_rss_mib()
    );
    println!(
        "  target: kiln at most 0.7x the peer, peak extra disk at most one upload part (16 MiB)"
    );
}
