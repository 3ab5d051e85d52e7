//! Real guests under TCG: an ISO whose ISOLINUX `boot:` prompt takes a
//! typed kernel command line, and whose initramfs prints the command line
//! the kernel received on the serial console, then powers off
//! (`tests/assets/make-cmdline-iso.sh`, from Debian packages only).
//!
//! kiln types a boot command with special keys, editing keys, shifted
//! characters, modifiers held and released, waits, and the run-time values
//! `{{ .HTTPIP }}`, `{{ .HTTPPort }}`, `{{ .Name }}` through QMP; the test
//! asserts the exact command line the kernel got. Then Packer 1.6.6's qemu
//! builder types the same boot command into the same ISO (over VNC), and
//! the two command lines are compared.
//!
//! Slow (a guest boot each): ignored by default; scripts/test.sh runs them
//! (`--include-ignored`), where they never skip.
use kiln_bootcommand::template::{BootCommand, Values};
use kiln_bootcommand::{QmpKeySink, Typist};
use kiln_testkit::ProcessGuard;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One guest at a time: the machine has two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The boot command both tools type, as a template would hold it. At the
/// `boot:` prompt it types the label `k` and kernel arguments, and edits
/// them on the way:
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

/// `vm_name` in both runs (`{{ .Name }}`).
const VM_NAME: &str = "kiln-bc";

/// What the kernel must receive when the keys are typed as a keyboard
/// would type them (ISOLINUX puts `BOOT_IMAGE=` and the label's `APPEND`
/// first). `port` is `{{ .HTTPPort }}`.
fn expected_cmdline(port: u16) -> String {
    format!(
        "BOOT_IMAGE=/k/linux initrd=/k/initrd.gz home=1 foo=bar url=http://10.0.2.2:{port}/preseed.cfg \
         name={VM_NAME} Shift=ABC!@#$%^&*()_+{{}}|:\"<>?~ abc HELD R zlast"
    )
}

/// The pause after each key event, in both runs: Packer's default. Much
/// shorter intervals lose keys on a loaded machine, with either tool: QEMU
/// queues at most 16 bytes of scan codes for the guest's PS/2 keyboard and
/// drops the rest while the emulated CPU is held up (seen with 20 ms at a
/// load average of 17 on two cores: Packer's last two keys never arrived).
const KEY_INTERVAL: Duration = Duration::from_millis(100);

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists() || kiln_testkit::which(path).is_some(),
        "{path} is missing: install {package} (scripts/setup.sh)"
    );
}

/// The ISO, built once per test run into the target directory.
fn iso() -> PathBuf {
    static ISO: OnceLock<PathBuf> = OnceLock::new();
    ISO.get_or_init(|| {
        require("qemu-system-x86_64", "qemu-system-x86");
        require("xorriso", "xorriso");
        require("/usr/lib/ISOLINUX/isolinux.bin", "isolinux");
        require("/bin/busybox", "busybox-static");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-bootcommand");
        std::fs::create_dir_all(&dir).unwrap();
        let iso = dir.join("cmdline.iso");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/assets/make-cmdline-iso.sh");
        let out = Command::new("sh").arg(&script).arg(&iso).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        iso
    })
    .clone()
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

/// QEMU under TCG booting the ISO, killed on drop.
struct Guest {
    qemu: ProcessGuard,
    serial: PathBuf,
}

impl Guest {
    fn start(iso: &Path, dir: &Path, extra: &[&str]) -> Guest {
        let serial = dir.join("serial.log");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-accel",
            "tcg",
            "-m",
            "256",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-cdrom")
        .arg(iso)
        .args(["-boot", "d", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        let qemu = ProcessGuard::spawn(&mut cmd).expect("starting qemu-system-x86_64");
        Guest { qemu, serial }
    }

    async fn wait_for_serial(&mut self, needle: &str, timeout: Duration) {
        let t = Instant::now();
        loop {
            let log = std::fs::read(&self.serial).unwrap_or_default();
            if String::from_utf8_lossy(&log).contains(needle) {
                return;
            }
            assert!(
                self.qemu.try_wait().is_none(),
                "QEMU exited early:\n{}",
                serial_tail(&self.serial)
            );
            assert!(
                t.elapsed() < timeout,
                "no {needle:?} on the serial console in {timeout:?}:\n{}",
                serial_tail(&self.serial)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait for the guest to power itself off.
    async fn wait_exit(&mut self, timeout: Duration) {
        let t = Instant::now();
        while self.qemu.try_wait().is_none() {
            assert!(
                t.elapsed() < timeout,
                "the guest did not power off in {timeout:?}:\n{}",
                serial_tail(&self.serial)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Type [`BOOT_COMMAND`] with kiln into a fresh guest; the command line the
/// kernel received.
async fn kiln_types(port: u16) -> String {
    let iso = iso();
    let dir = tempfile::tempdir().unwrap();
    let qmp = dir.path().join("keys.sock");
    let vnc_port = kiln_testkit::free_port();
    assert!(vnc_port > 5900, "free port {vnc_port} below VNC's base");
    let t0 = Instant::now();
    let mut g = Guest::start(
        &iso,
        dir.path(),
        &[
            "-qmp",
            &format!("unix:{},server=on,wait=off", qmp.display()),
            // A VNC display for a user to watch, as the qemu builder
            // starts one: typing does not go through it.
            "-vnc",
            &format!("127.0.0.1:{}", vnc_port - 5900),
        ],
    );
    g.wait_for_serial("boot: ", Duration::from_secs(90)).await;
    let prompt = t0.elapsed();

    let bc = BootCommand::new(BOOT_COMMAND.iter().map(|s| s.to_string()).collect());
    assert_eq!(bc.check(), vec![], "the boot command must validate");
    let steps = bc
        .render(
            &kiln_template::Context::default(),
            &Values {
                http_ip: "10.0.2.2".into(),
                http_port: port,
                name: VM_NAME.into(),
            },
        )
        .unwrap();
    let mut sink = QmpKeySink::connect(&qmp, Duration::from_secs(10))
        .await
        .unwrap();
    // The VNC display answers while kiln types through QMP.
    let mut rfb = [0u8; 12];
    {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", vnc_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.read_exact(&mut rfb).unwrap();
    }
    assert_eq!(&rfb[..4], b"RFB ", "VNC greeting");
    let t1 = Instant::now();
    Typist {
        key_interval: KEY_INTERVAL,
    }
    .type_steps(&steps, &mut sink, &CancellationToken::new())
    .await
    .unwrap();
    let typing = t1.elapsed();
    g.wait_exit(Duration::from_secs(120)).await;
    eprintln!(
        "kiln: prompt after {:.1} s, typing {:.1} s, power-off {:.1} s after start",
        prompt.as_secs_f64(),
        typing.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    printed_cmdline(&g.serial)
        .unwrap_or_else(|| panic!("no command line printed:\n{}", serial_tail(&g.serial)))
}

/// The same ISO and boot command through Packer 1.6.6's qemu builder
/// (VNC typing, `communicator: none`, the guest powers itself off).
fn packer_types(port: u16) -> String {
    let iso = iso();
    assert!(
        kiln_testkit::which("packer").is_some(),
        "packer is missing: apt-get install packer (scripts/setup.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    let http = dir.path().join("http");
    std::fs::create_dir(&http).unwrap();
    std::fs::write(http.join("preseed.cfg"), "# empty\n").unwrap();
    let serial = dir.path().join("serial.log");
    let template = serde_json::json!({
        "builders": [{
            "type": "qemu",
            "iso_url": iso.display().to_string(),
            "iso_checksum": "none",
            "accelerator": "tcg",
            "communicator": "none",
            "headless": true,
            "disk_size": "16M",
            "memory": 256,
            "output_directory": dir.path().join("out").display().to_string(),
            "vm_name": VM_NAME,
            "http_directory": http.display().to_string(),
            "http_port_min": port,
            "http_port_max": port,
            "boot_wait": "5s",
            "boot_key_interval": format!("{}ms", KEY_INTERVAL.as_millis()),
            "boot_command": BOOT_COMMAND,
            "qemuargs": [["-serial", format!("file:{}", serial.display())]],
            "shutdown_timeout": "3m"
        }]
    });
    let t = dir.path().join("t.json");
    std::fs::write(&t, serde_json::to_string_pretty(&template).unwrap()).unwrap();
    let log = dir.path().join("packer.log");
    let t0 = Instant::now();
    let mut cmd = Command::new("packer");
    cmd.arg("build")
        .arg("-color=false")
        .arg(&t)
        .current_dir(dir.path())
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CONFIG_DIR", dir.path().join(".packer.d"))
        .env("PACKER_CACHE_DIR", dir.path().join("packer_cache"))
        .env("PACKER_LOG", "1")
        .env("PACKER_LOG_PATH", &log)
        .env("HOME", dir.path())
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

/// What Packer's guest gets: the same, but for the letters typed while a
/// Shift key is held (`<leftShiftOn>held<leftShiftOff>`), which come out in
/// lower case. Packer sends them as lower-case keysyms over VNC, and
/// QEMU's VNC server (its default `lock-key-sync=on`) then presses Caps
/// Lock before each one so that the guest produces the keysym's case:
/// Shift + Caps Lock + `h` is `h`. (A VNC client of the test's own, typing
/// the same keysyms into the same ISO, gets `held` too, and `HELD` with
/// `-vnc ...,lock-key-sync=off`.) kiln sends key codes, as a keyboard does.
fn expected_packer_cmdline(port: u16) -> String {
    expected_cmdline(port).replace(" HELD R ", " held r ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots a QEMU guest under TCG, twice (kiln, then Packer 1.6.6)"]
async fn kiln_types_the_kernel_command_line_and_packer_agrees() {
    let _one = SERIAL.lock().await;
    let port = kiln_testkit::free_port();
    let kiln = kiln_types(port).await;
    assert_eq!(kiln, expected_cmdline(port), "what kiln typed");
    let packer = tokio::task::spawn_blocking(move || packer_types(port))
        .await
        .unwrap();
    eprintln!("kiln:   {kiln}\nPacker: {packer}");
    assert_eq!(packer, expected_packer_cmdline(port), "what Packer typed");
    assert_ne!(expected_cmdline(port), expected_packer_cmdline(port));
}
