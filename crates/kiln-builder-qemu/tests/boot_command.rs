//! `boot_command` through the qemu builder, with Packer 1.6.6 as the
//! oracle. An ISO whose ISOLINUX `boot:` prompt takes a typed kernel
//! command line and whose initramfs prints the command line the kernel
//! received on the serial console, then powers off
//! (`kiln-bootcommand/tests/assets/make-cmdline-iso.sh`, from Debian
//! packages only; `communicator: none`: the builder waits for the
//! power-off).
//!
//! One template, decoded as `kiln build` decodes it and run by the
//! builder (QMP typing), then built by `packer build` (VNC typing); the
//! test asserts the exact command line each kernel received. The template
//! also has an `http_directory` and `floppy_files` (the floppy is attached
//! as `-fda`; QEMU refuses to start on a bad one), and a fixed VNC port
//! that the test connects to while kiln types.
//!
//! Slow (two guest boots under TCG): ignored by default; scripts/test.sh
//! runs it (`--include-ignored`), where it never skips.
use kiln_builder_qemu::QemuBuilder;
use kiln_core::component::NoHook;
use kiln_core::Builder;
use kiln_template::{Context, Decoder, Diagnostics, Source};
use kiln_testkit::ProcessGuard;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The boot command both tools type. At the `boot:` prompt it types the
/// label `k` and kernel arguments, and edits them on the way:
/// - `x<bs>`: a typo erased;
/// - `<wait1s>`: a pause;
/// - the HTTP server's address and the machine's name from the template
///   context;
/// - every shifted character of a US keyboard, `<` and `>` included;
/// - `abXc<left><left><del><end>`: the cursor moved back, `X` deleted,
///   back to the end;
/// - `<leftShiftOn>held<leftShiftOff>` and `<rightShiftOn>r<rightShiftOff>`:
///   letters typed while a Shift key is held;
/// - `<leftCtrlOn>a<leftCtrlOff>` (Ctrl+A, ISOLINUX's Home), `<right>`,
///   an insertion, `<leftCtrlOn>e<leftCtrlOff>` (Ctrl+E, End);
/// - `<zOn><zOff>`: a character key held and released;
/// - `<return>`.
const BOOT_COMMAND: &[&str] = &[
    "k x<bs>",
    "foo=bar <wait1s>",
    "url=http://{{ .HTTPIP }}:{{ .HTTPPort }}/preseed.cfg name={{ .Name }} ",
    "Shift=ABC!@#$%^&*()_+{}|:\"<>?~ ",
    "abXc<left><left><del><end> ",
    "<leftShiftOn>held<leftShiftOff> <rightShiftOn>r<rightShiftOff> ",
    "<leftCtrlOn>a<leftCtrlOff><right> home=1<leftCtrlOn>e<leftCtrlOff>",
    "<zOn><zOff>last<return>",
];

/// `vm_name` (`{{ .Name }}`).
const VM_NAME: &str = "kiln-bc";

/// The pause after each key event: Packer's default. Much shorter
/// intervals lose keys on a loaded machine, with either tool: QEMU queues
/// at most 16 bytes of scan codes for the guest's PS/2 keyboard and drops
/// the rest while the emulated CPU is held up (seen with 20 ms at a load
/// average of 17 on two cores: Packer's last two keys never arrived).
const KEY_INTERVAL: &str = "100ms";

/// What the kernel must receive when the keys are typed as a keyboard
/// would type them (ISOLINUX puts `BOOT_IMAGE=` and the label's `APPEND`
/// first). `port` is `{{ .HTTPPort }}`.
fn expected_cmdline(port: u16) -> String {
    format!(
        "BOOT_IMAGE=/k/linux initrd=/k/initrd.gz home=1 foo=bar url=http://10.0.2.2:{port}/preseed.cfg \
         name={VM_NAME} Shift=ABC!@#$%^&*()_+{{}}|:\"<>?~ abc HELD R zlast"
    )
}

/// What Packer's guest gets: the same, but for the letters typed while a
/// Shift key is held, which come out in lower case. Packer sends them as
/// lower-case keysyms over VNC, and QEMU's VNC server (its default
/// `lock-key-sync=on`) then presses Caps Lock before each one so that the
/// guest produces the keysym's case: Shift + Caps Lock + `h` is `h`. kiln
/// sends key codes, as a keyboard does.
fn expected_packer_cmdline(port: u16) -> String {
    expected_cmdline(port).replace(" HELD R ", " held r ")
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists() || kiln_testkit::which(path).is_some(),
        "{path} is missing: install {package} (scripts/setup.sh)"
    );
}

fn make_iso(iso: &Path) {
    require("qemu-system-x86_64", "qemu-system-x86");
    require("xorriso", "xorriso");
    require("/usr/lib/ISOLINUX/isolinux.bin", "isolinux");
    require("/bin/busybox", "busybox-static");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-bootcommand/tests/assets/make-cmdline-iso.sh");
    let out = Command::new("sh").arg(&script).arg(iso).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The command line the guest printed (`KILN-CMDLINE[...]`), if it did.
fn printed_cmdline(serial_log: &Path) -> Option<String> {
    let log = String::from_utf8_lossy(&std::fs::read(serial_log).ok()?).to_string();
    let start = log.rfind("KILN-CMDLINE[")? + "KILN-CMDLINE[".len();
    let line = log[start..].lines().next()?;
    Some(line.trim_end().strip_suffix(']')?.to_string())
}

fn serial_tail(serial_log: &Path) -> String {
    let log = String::from_utf8_lossy(&std::fs::read(serial_log).unwrap_or_default()).to_string();
    let tail: Vec<&str> = log.lines().rev().take(15).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// The builder's template (the same for both tools but for `out`, the
/// serial log and the VNC port).
fn builder(
    iso: &Path,
    dir: &Path,
    out: &str,
    serial: &Path,
    http_port: u16,
    vnc_port: Option<u16>,
) -> serde_json::Value {
    let mut b = serde_json::json!({
        "type": "qemu",
        "iso_url": iso.display().to_string(),
        "iso_checksum": "none",
        "accelerator": "tcg",
        "communicator": "none",
        "headless": true,
        "disk_size": "16M",
        "memory": 256,
        "output_directory": dir.join(out).display().to_string(),
        "vm_name": VM_NAME,
        "http_directory": dir.join("http").display().to_string(),
        "http_port_min": http_port,
        "http_port_max": http_port,
        "floppy_files": [dir.join("http/preseed.cfg").display().to_string()],
        "boot_wait": "3s",
        "boot_key_interval": KEY_INTERVAL,
        "boot_command": BOOT_COMMAND,
        "qemuargs": [["-serial", format!("file:{}", serial.display())]],
        "shutdown_timeout": "3m"
    });
    if let Some(p) = vnc_port {
        b["vnc_port_min"] = p.into();
        b["vnc_port_max"] = p.into();
    }
    b
}

/// The template decoded as `kiln build` decodes it, run by the builder.
async fn kiln_types(iso: &Path, dir: &Path, http_port: u16) -> String {
    let serial = dir.join("kiln-console.log");
    let vnc_port = kiln_testkit::free_port();
    assert!(vnc_port > 5900, "free port {vnc_port} below VNC's base");
    let template = builder(iso, dir, "out-kiln", &serial, http_port, Some(vnc_port));
    let n = kiln_template::json::parse(Arc::new(Source {
        path: "t.json".into(),
        text: serde_json::to_string_pretty(&template).unwrap(),
    }))
    .unwrap();
    let ctx = Context {
        build_name: Some("qemu".into()),
        ..Context::default()
    };
    let mut diags = Diagnostics::default();
    let mut d = Decoder::new(&n, &ctx, &mut diags);
    d.ignore(&["type"]);
    let c = kiln_builder_qemu::config::decode(&mut d, false);
    d.finish();
    assert!(diags.0.is_empty(), "the template must validate: {diags}");
    let work = tempfile::tempdir().unwrap();
    let (out, bctx) = kiln_testkit::test_ctx("bc", work.path());
    // The VNC display answers while kiln types through QMP.
    let vnc = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let t = Instant::now();
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", vnc_port)).await {
                let mut rfb = [0u8; 12];
                if s.read_exact(&mut rfb).await.is_ok() {
                    return rfb;
                }
            }
            assert!(t.elapsed() < Duration::from_secs(120), "no VNC display");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let t0 = Instant::now();
    let r = QemuBuilder::new(c.unwrap()).run(&bctx, &NoHook).await;
    let took = t0.elapsed();
    let said = out.captured();
    assert!(
        r.is_ok(),
        "{:?}\n{said}\nserial:\n{}",
        r.err(),
        serial_tail(&serial)
    );
    assert_eq!(&vnc.await.unwrap()[..4], b"RFB ", "VNC greeting");
    for what in [
        "Creating floppy disk...",
        "preseed.cfg to the floppy as /preseed.cfg",
        &format!("Starting HTTP server on port {http_port}"),
        "Typing the boot command (QMP)...",
    ] {
        assert!(said.contains(what), "{what:?} not said:\n{said}");
    }
    eprintln!("kiln: {:.1} s", took.as_secs_f64());
    printed_cmdline(&serial)
        .unwrap_or_else(|| panic!("no command line printed:\n{said}\n{}", serial_tail(&serial)))
}

/// The same template through Packer 1.6.6's qemu builder.
fn packer_types(iso: &Path, dir: &Path, http_port: u16) -> String {
    assert!(
        kiln_testkit::which("packer").is_some(),
        "packer is missing: apt-get install packer (scripts/setup.sh)"
    );
    let serial = dir.join("packer-console.log");
    let template = serde_json::json!({
        "builders": [builder(iso, dir, "out-packer", &serial, http_port, None)]
    });
    let t = dir.join("t.json");
    std::fs::write(&t, serde_json::to_string_pretty(&template).unwrap()).unwrap();
    let t0 = Instant::now();
    let mut cmd = Command::new("packer");
    cmd.arg("build")
        .arg("-color=false")
        .arg(&t)
        .current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CONFIG_DIR", dir.join(".packer.d"))
        .env("PACKER_CACHE_DIR", dir.join("packer_cache"))
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut p = ProcessGuard::spawn(&mut cmd).expect("running packer");
    let mut out = String::new();
    let mut err = String::new();
    {
        use std::io::Read;
        let c = p.child();
        c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    }
    let status = p.child().wait().unwrap();
    eprintln!("Packer: {:.1} s", t0.elapsed().as_secs_f64());
    assert!(
        status.success(),
        "packer build failed:\n{out}\n{err}\nserial:\n{}",
        serial_tail(&serial)
    );
    printed_cmdline(&serial).unwrap_or_else(|| {
        panic!(
            "no command line printed by Packer's guest:\n{out}\nserial:\n{}",
            serial_tail(&serial)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots a QEMU guest under TCG twice (kiln, then Packer 1.6.6)"]
async fn the_builder_types_the_boot_command_and_packer_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let iso: PathBuf = dir.path().join("cmdline.iso");
    make_iso(&iso);
    std::fs::create_dir(dir.path().join("http")).unwrap();
    std::fs::write(dir.path().join("http/preseed.cfg"), "# empty\n").unwrap();
    let port = kiln_testkit::free_port();

    let kiln = kiln_types(&iso, dir.path(), port).await;
    assert_eq!(kiln, expected_cmdline(port), "what kiln typed");
    let d = dir.path().to_path_buf();
    let packer = tokio::task::spawn_blocking(move || packer_types(&iso, &d, port))
        .await
        .unwrap();
    eprintln!("kiln:   {kiln}\nPacker: {packer}");
    assert_eq!(packer, expected_packer_cmdline(port), "what Packer typed");
    assert_ne!(expected_cmdline(port), expected_packer_cmdline(port));
}
