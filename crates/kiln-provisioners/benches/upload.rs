//! Upload benchmark: kiln's file provisioner against `tar | ssh`, `scp -r`
//! and Packer 1.6.6's file provisioner (null builder), to the same real
//! sshd on loopback, with the same data directory of about 1 GiB (one
//! 512 MiB file, 100 files of 4 MiB, 10,000 files of 4 KiB).
//!
//! Run (as root, like the tests): `cargo bench -p kiln-provisioners --bench upload`
//! Options (environment): `KILN_BENCH_RUNS` (default 2; the best run
//! counts), `KILN_BENCH_DATA` (where the data tree is generated and kept,
//! default `$TMPDIR/kiln-bench-data`).
//!
//! Prints each time and kiln's ratio to each peer. The target is kiln within
//! 1.15x of `tar | ssh` (about the limit of one SSH stream).
use kiln_core::{PrepareOpts, ProvisionCtx};
use kiln_template::{Context, Decoder, Diagnostics, Source};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// Fill with xorshift bytes (incompressible, fast to make).
fn fill(buf: &mut [u8], seed: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let b = seed.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn make_data(root: &Path) -> PathBuf {
    let data = root.join("data");
    let done = root.join(".complete");
    if done.exists() {
        return data;
    }
    let _ = std::fs::remove_dir_all(&data);
    eprintln!("generating the data tree in {} ...", data.display());
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    std::fs::create_dir_all(data.join("mid")).unwrap();
    let mut buf = vec![0u8; 4 * MIB];
    {
        let mut f = std::fs::File::create(data.join("big.bin")).unwrap();
        for _ in 0..128 {
            fill(&mut buf, &mut seed);
            f.write_all(&buf).unwrap();
        }
    }
    for i in 0..100 {
        fill(&mut buf, &mut seed);
        std::fs::write(data.join(format!("mid/m{i:03}.bin")), &buf).unwrap();
    }
    for d in 0..100 {
        let dir = data.join(format!("small/d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..100 {
            fill(&mut buf[..4096], &mut seed);
            std::fs::write(dir.join(format!("f{i:02}")), &buf[..4096]).unwrap();
        }
    }
    std::fs::write(&done, "").unwrap();
    data
}

fn tree_stats(root: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                bytes += m.len();
                files += 1;
            }
        }
    }
    (bytes, files)
}

fn fresh_remote(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    // Owned by the SSH user, as a real destination would be (tar sets the
    // mode of `.`).
    sh(Command::new("chown").arg(kiln_testkit::TEST_USER).arg(&d));
    d
}

fn ssh_opts(s: &kiln_testkit::Sshd) -> Vec<String> {
    vec![
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-i".into(),
        s.key_path.display().to_string(),
    ]
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("spawning");
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

async fn kiln_upload(s: &kiln_testkit::Sshd, data: &Path, dst: &Path, work: &Path) {
    let (_out, ctx) = kiln_testkit::test_ctx("bench", work);
    let cfg = kiln_ssh::SshConfig {
        username: s.user.clone(),
        private_key_file: Some(s.key_path.clone()),
        timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let comm: Arc<dyn kiln_core::Communicator> =
        kiln_ssh::connect(&cfg, &s.host, s.port, None, &ctx)
            .await
            .unwrap();
    let json = format!(
        r#"{{"source": "{}/", "destination": "{}"}}"#,
        data.display(),
        dst.display()
    );
    let src = Arc::new(Source {
        path: "bench.json".into(),
        text: json,
    });
    let node = kiln_template::json::parse(src).unwrap();
    let ictx = Context::new(work.to_path_buf());
    let mut diags = Diagnostics::default();
    let prov = {
        let mut d = Decoder::new(&node, &ictx, &mut diags);
        let p = kiln_provisioners::file::factory(&mut d, &PrepareOpts::default());
        d.finish();
        p
    }
    .expect("file provisioner");
    assert!(diags.is_empty(), "{diags}");
    let pctx = ProvisionCtx {
        build: &ctx,
        interp: ictx.clone(),
    };
    prov.provision(&pctx, Some(&comm)).await.unwrap();
}

fn main() {
    let runs: usize = std::env::var("KILN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let data_root = std::env::var_os("KILN_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("kiln-bench-data"));
    std::fs::create_dir_all(&data_root).unwrap();
    let data = make_data(&data_root);
    let (bytes, files) = tree_stats(&data);
    println!(
        "data: {} in {files} files ({})",
        kiln_core::ui::human_bytes(bytes),
        data.display()
    );
    // Warm the page cache so every method reads from memory.
    sh(Command::new("sh").arg("-c").arg(format!(
        "find {} -type f -print0 | xargs -0 cat > /dev/null",
        data.display()
    )));

    let sshd = kiln_testkit::Sshd::start();
    let remote = tempfile::Builder::new()
        .prefix("kiln-bench-remote-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(remote.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let packer = kiln_testkit::which("packer");

    let mut results: Vec<(&str, Vec<Duration>)> = Vec::new();
    let check = |dst: &Path, label: &str| {
        let (b, f) = tree_stats(dst);
        assert_eq!(
            (b, f),
            (bytes, files),
            "{label}: incomplete upload in {}",
            dst.display()
        );
    };
    for run in 0..runs {
        // kiln
        let dst = fresh_remote(remote.path(), "kiln");
        let t = Instant::now();
        rt.block_on(kiln_upload(&sshd, &data, &dst, work.path()));
        let d = t.elapsed();
        check(&dst, "kiln");
        push(&mut results, "kiln file provisioner", d);

        // tar | ssh
        let dst = fresh_remote(remote.path(), "tar");
        let t = Instant::now();
        sh(Command::new("sh").arg("-c").arg(format!(
            "tar -C {} -cf - . | ssh {} -p {} {}@{} 'tar -xf - -C {}'",
            data.display(),
            ssh_opts(&sshd).join(" "),
            sshd.port,
            sshd.user,
            sshd.host,
            dst.display()
        )));
        let d = t.elapsed();
        check(&dst, "tar | ssh");
        push(&mut results, "tar | ssh", d);
        let _ = std::fs::remove_dir_all(&dst);

        // tar | ssh with the cipher kiln prefers (OpenSSH's default is
        // chacha20-poly1305), for a like-for-like comparison.
        let dst = fresh_remote(remote.path(), "tar-gcm");
        let t = Instant::now();
        sh(Command::new("sh").arg("-c").arg(format!(
            "tar -C {} -cf - . | ssh -c aes128-gcm@openssh.com {} -p {} {}@{} 'tar -xf - -C {}'",
            data.display(),
            ssh_opts(&sshd).join(" "),
            sshd.port,
            sshd.user,
            sshd.host,
            dst.display()
        )));
        let d = t.elapsed();
        check(&dst, "tar | ssh -c aes128-gcm");
        push(&mut results, "tar | ssh -c aes128-gcm", d);
        let _ = std::fs::remove_dir_all(&dst);

        // scp -r
        let dst = fresh_remote(remote.path(), "scp");
        let t = Instant::now();
        sh(Command::new("scp")
            .args(ssh_opts(&sshd))
            .arg("-q")
            .arg("-r")
            .arg("-P")
            .arg(sshd.port.to_string())
            .arg(&data)
            .arg(format!("{}@{}:{}/", sshd.user, sshd.host, dst.display())));
        let d = t.elapsed();
        check(&dst.join("data"), "scp -r");
        push(&mut results, "scp -r", d);
        let _ = std::fs::remove_dir_all(&dst);

        // Packer 1.6.6
        if let Some(packer) = &packer {
            let dst = fresh_remote(remote.path(), "packer");
            let tdir = work.path().join("packer");
            std::fs::create_dir_all(&tdir).unwrap();
            let template = format!(
                r#"{{"builders": [{{"type": "null", "ssh_host": "{}", "ssh_port": {}, "ssh_username": "{}", "ssh_private_key_file": "{}"}}],
                    "provisioners": [{{"type": "file", "source": "{}/", "destination": "{}"}}]}}"#,
                sshd.host,
                sshd.port,
                sshd.user,
                sshd.key_path.display(),
                data.display(),
                dst.display()
            );
            std::fs::write(tdir.join("t.json"), template).unwrap();
            let t = Instant::now();
            sh(Command::new(packer)
                .args(["build", "-color=false", "t.json"])
                .current_dir(&tdir)
                .env("CHECKPOINT_DISABLE", "1")
                .env("HOME", &tdir));
            let d = t.elapsed();
            check(&dst, "packer");
            push(&mut results, "Packer 1.6.6 file provisioner", d);
            let _ = std::fs::remove_dir_all(&dst);
        } else if run == 0 {
            println!("packer not found: install Debian's Packer 1.6.6 (apt-get install -y packer) to compare");
        }
        let _ = std::fs::remove_dir_all(remote.path().join("kiln"));
    }

    println!();
    println!("(the machine is shared: compare the best runs; KILN_BENCH_RUNS=5 for more)");
    println!("{:<32} {:>10}   runs", "method", "best");
    for (name, ts) in &results {
        let best = ts.iter().min().unwrap();
        println!(
            "{name:<32} {:>9.2}s   {}",
            best.as_secs_f64(),
            ts.iter()
                .map(|t| format!("{:.2}s", t.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let best = |n: &str| {
        results
            .iter()
            .find(|(k, _)| *k == n)
            .and_then(|(_, ts)| ts.iter().min().copied())
    };
    let kiln = best("kiln file provisioner").unwrap();
    println!();
    for peer in [
        "tar | ssh",
        "tar | ssh -c aes128-gcm",
        "scp -r",
        "Packer 1.6.6 file provisioner",
    ] {
        if let Some(p) = best(peer) {
            println!(
                "kiln / {peer:<30} = {:.2}x{}",
                kiln.as_secs_f64() / p.as_secs_f64(),
                if peer == "tar | ssh" {
                    "   (target: <= 1.15x)"
                } else {
                    ""
                }
            );
        }
    }
    println!(
        "kiln throughput: {:.0} MiB/s",
        bytes as f64 / MIB as f64 / kiln.as_secs_f64()
    );
}

fn push(results: &mut Vec<(&'static str, Vec<Duration>)>, name: &'static str, d: Duration) {
    println!("{name}: {:.2}s", d.as_secs_f64());
    match results.iter_mut().find(|(k, _)| *k == name) {
        Some((_, v)) => v.push(d),
        None => results.push((name, vec![d])),
    }
}
