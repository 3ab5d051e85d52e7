//! The seed's Vagrant example up to where this machine lets it go: the
//! Debian 12 installer ISO from `examples/seed/make-installer-iso.sh`
//! booted under TCG, `examples/seed/vagrant.json`'s boot command (read
//! from the template, validated, rendered with `{{ .HTTPIP }}`,
//! `{{ .HTTPPort }}` and `{{ .Name }}`) typed by kiln through QMP into the
//! installer's own boot menu (Escape, then `auto preseed/url=...` at the
//! `boot:` prompt), and the installer then fetching `/preseed.cfg` from
//! the test's HTTP server: the address, the port and the label all typed
//! right.
//!
//! What follows was checked by hand, not here (it takes another 4 to 5
//! minutes under TCG): the installer applies the preseed (it checks the
//! mirror the preseed names, asking nothing), then stops, because the
//! package mirror this machine reaches serves `.deb` files but answers 404
//! for every `.udeb`, the installer components a netboot installer
//! downloads next. See examples/seed/README-vagrant.md.
//!
//! Slow (about 4 minutes under TCG): ignored by default; scripts/test.sh
//! runs it (`--include-ignored`).
use kiln_bootcommand::template::{decode, decode_boot_wait, Values};
use kiln_bootcommand::{QmpKeySink, Typist};
use kiln_template::{Context, Decoder, Diagnostics, Source};
use kiln_testkit::ProcessGuard;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed")
}

fn installer_iso() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-bootcommand");
    std::fs::create_dir_all(&dir).unwrap();
    let iso = dir.join("debian-12-installer.iso");
    let script = seed_dir().join("make-installer-iso.sh");
    let out = Command::new("sh").arg(&script).arg(&iso).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}

/// A static file server for `dir` on 127.0.0.1, recording the paths asked
/// for and when.
async fn serve(dir: PathBuf) -> (u16, Arc<Mutex<Vec<(Instant, String)>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            let (dir, seen) = (dir.clone(), s2.clone());
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                let Ok(Some(req)) = lines.next_line().await else {
                    return;
                };
                while let Ok(Some(l)) = lines.next_line().await {
                    if l.is_empty() {
                        break;
                    }
                }
                let path = req.split(' ').nth(1).unwrap_or("/").to_string();
                seen.lock().unwrap().push((Instant::now(), path.clone()));
                let file = dir.join(path.trim_start_matches('/'));
                let resp = match std::fs::read(&file) {
                    Ok(body) if !path.contains("..") => {
                        let mut r = format!(
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    }
                    _ => b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                };
                let _ = w.write_all(&resp).await;
            });
        }
    });
    (port, seen)
}

fn serial_text(path: &Path) -> String {
    let raw = std::fs::read(path).unwrap_or_default();
    // The installer draws dialogs with escape sequences: keep the words.
    let mut out = String::new();
    let mut esc = false;
    for c in String::from_utf8_lossy(&raw).chars() {
        if esc {
            esc = !c.is_ascii_alphabetic();
            continue;
        }
        if c == '\u{1b}' {
            esc = true;
            continue;
        }
        out.push(c);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots the Debian 12 installer under TCG (a few minutes)"]
async fn the_seed_boot_command_starts_the_installer_with_the_preseed() {
    // vagrant.json's builder, decoded as the qemu builder will.
    let path = seed_dir().join("vagrant.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let root = kiln_template::json::parse(Arc::new(Source {
        path: path.clone(),
        text,
    }))
    .unwrap();
    let b = &root.get("builders").unwrap().as_array().unwrap()[0];
    let ctx = Context::default();
    let mut diags = Diagnostics::default();
    let mut d = Decoder::new(b, &ctx, &mut diags);
    let bc = decode(&mut d, "boot_command").unwrap();
    let boot_wait = decode_boot_wait(&mut d, "boot_wait").unwrap();
    let vm_name = d.string("vm_name").unwrap();
    drop(d);
    assert!(diags.0.is_empty(), "{diags}");
    assert!(!bc.is_empty());

    let iso = installer_iso();
    let (port, seen) = serve(seed_dir().join("http")).await;
    let dir = tempfile::tempdir().unwrap();
    let serial = dir.path().join("serial.log");
    let qmp = dir.path().join("keys.sock");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "1024",
    ])
    .args(["-display", "none", "-no-reboot", "-boot", "d", "-cdrom"])
    .arg(&iso)
    .args(["-netdev", "user,id=n0", "-device", "virtio-net,netdev=n0"])
    .arg("-serial")
    .arg(format!("file:{}", serial.display()))
    .arg("-qmp")
    .arg(format!("unix:{},server=on,wait=off", qmp.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    let mut qemu = ProcessGuard::spawn(&mut cmd).expect("starting qemu-system-x86_64");
    let t0 = Instant::now();

    // boot_wait, as the builder does (Packer's way: nothing on the serial
    // console announces the installer's graphical menu).
    tokio::time::sleep(boot_wait).await;
    let steps = bc
        .render(
            &ctx,
            &Values {
                http_ip: "10.0.2.2".into(),
                http_port: port,
                name: vm_name.clone(),
            },
        )
        .unwrap();
    let mut keys = QmpKeySink::connect(&qmp, Duration::from_secs(10))
        .await
        .unwrap();
    Typist::default()
        .type_steps(&steps, &mut keys, &CancellationToken::new())
        .await
        .unwrap();
    let typed = t0.elapsed();

    // The installer boots, configures the network, fetches the preseed.
    let deadline = Duration::from_secs(600);
    let fetched = loop {
        if let Some((t, _)) = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(_, p)| p == "/preseed.cfg")
        {
            break *t - t0;
        }
        assert!(qemu.try_wait().is_none(), "QEMU exited");
        assert!(
            t0.elapsed() < deadline,
            "the installer did not fetch /preseed.cfg in {deadline:?}; requests: {:?}\nserial:\n{}",
            seen.lock().unwrap(),
            serial_text(&serial)
                .chars()
                .rev()
                .take(2000)
                .collect::<String>()
                .chars()
                .rev()
                .collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    qemu.kill();
    eprintln!(
        "installer: boot command typed {:.1} s after QEMU started, preseed fetched at {:.1} s",
        typed.as_secs_f64(),
        fetched.as_secs_f64(),
    );
}
