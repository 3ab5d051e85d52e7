//! `boot_command` through the qemu builder: an ISO whose ISOLINUX prompt
//! takes a typed kernel command line and whose initramfs prints it on the
//! serial console and powers off (`communicator: none`: the builder waits
//! for that). The template is decoded as `kiln build` does.
use kiln_builder_qemu::QemuBuilder;
use kiln_core::component::NoHook;
use kiln_core::ui::{Mode, OutputConfig};
use kiln_core::{BuildCtx, Builder, Output};
use kiln_template::{Context, Decoder, Diagnostics, Source};
use std::path::Path;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots a QEMU guest under TCG"]
async fn the_builder_types_the_boot_command() {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("cmdline.iso");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-bootcommand/tests/assets/make-cmdline-iso.sh");
    assert!(std::process::Command::new("sh")
        .arg(&script)
        .arg(&iso)
        .status()
        .unwrap()
        .success());
    let http = dir.path().join("http");
    std::fs::create_dir(&http).unwrap();
    let serial = dir.path().join("console.log");
    let port = 18431u16;
    let template = serde_json::json!({
        "type": "qemu",
        "iso_url": iso.display().to_string(),
        "iso_checksum": "none",
        "accelerator": "tcg",
        "communicator": "none",
        "headless": true,
        "disk_size": "16M",
        "memory": 256,
        "output_directory": dir.path().join("out").display().to_string(),
        "vm_name": "kiln-bc",
        "http_directory": http.display().to_string(),
        "http_port_min": port,
        "http_port_max": port,
        "boot_wait": "3s",
        "boot_key_interval": "20ms",
        "boot_command": ["k x<bs>", "url=http://{{ .HTTPIP }}:{{ .HTTPPort }}/ name={{ .Name }} ", "<leftShiftOn>a<leftShiftOff><wait1s><enter>"],
        "qemuargs": [["-serial", format!("file:{}", serial.display())]],
        "shutdown_timeout": "3m"
    });
    let n = kiln_template::json::parse(Arc::new(Source {
        path: "t.json".into(),
        text: serde_json::to_string_pretty(&template).unwrap(),
    }))
    .unwrap();
    let ctx = Context::default();
    let mut diags = Diagnostics::default();
    let mut d = Decoder::new(&n, &ctx, &mut diags);
    d.ignore(&["type"]);
    let c = kiln_builder_qemu::config::decode(&mut d, false);
    d.finish();
    assert!(diags.0.is_empty(), "{diags}");
    let out = Output::capturing(OutputConfig {
        mode: Mode::Human,
        color: false,
        timestamp: false,
    });
    let work = tempfile::tempdir().unwrap();
    let bctx = BuildCtx::for_test(out.build_ui("bc"), work.path().to_path_buf());
    let r = QemuBuilder::new(c.unwrap()).run(&bctx, &NoHook).await;
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(r.is_ok(), "{:?}\n{}\n{log}", r.err(), out.captured());
    let line = log
        .lines()
        .find(|l| l.contains("KILN-CMDLINE["))
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(
        line.trim_end(),
        format!("KILN-CMDLINE[BOOT_IMAGE=/k/linux initrd=/k/initrd.gz url=http://10.0.2.2:{port}/ name=kiln-bc A]")
    );
    eprintln!("{}", out.captured());
}
