//! Decoding: the example templates prepare cleanly, every Packer 1.6.6
//! qemu key is known, and mistakes are reported (fast; no QEMU).
use kiln_core::build::{self, PrepareOptions};
use kiln_core::Registry;
use std::path::{Path, PathBuf};

fn registry() -> Registry {
    let mut r = Registry::default();
    kiln_builder_qemu::register(&mut r);
    kiln_builder_debootstrap::register(&mut r);
    kiln_provisioners::register(&mut r);
    r
}

fn prepare(path: &Path) -> Result<usize, String> {
    let t = kiln_template::template::parse_file(path).map_err(|d| format!("{d:?}"))?;
    let vars = kiln_template::vars::resolve(&t, &[]).map_err(|d| format!("{d:?}"))?;
    build::prepare(&t, &vars, &registry(), &PrepareOptions::default())
        .map(|b| b.len())
        .map_err(|d| {
            d.0.iter()
                .map(|x| {
                    format!(
                        "{}{}",
                        x.message,
                        x.help
                            .as_ref()
                            .map(|h| format!(" ({h})"))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
}

fn write(dir: &Path, json: &str) -> PathBuf {
    let p = dir.join("t.json");
    std::fs::write(&p, json).unwrap();
    p
}

#[test]
fn the_example_templates_prepare() {
    let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed");
    std::env::set_current_dir(&seed).unwrap();
    for t in ["base.json", "local.json", "verify.json"] {
        // output directories must not exist; the example's may.
        let r = prepare(&seed.join(t));
        match r {
            Ok(n) => assert_eq!(n, 1, "{t}"),
            Err(e) => assert!(e.contains("already exists"), "{t}: {e}"),
        }
    }
}

#[test]
fn every_packer_qemu_key_is_known() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("base.qcow2");
    std::fs::write(&img, "x").unwrap();
    let json = format!(
        r#"{{"builders": [{{"type": "qemu", "iso_url": "{img}", "iso_checksum": "none",
        "iso_target_path": "", "iso_target_extension": "iso", "iso_skip_cache": false,
        "http_directory": "", "http_port_min": 8000, "http_port_max": 9000, "http_bind_address": "127.0.0.1",
        "boot_wait": "10s", "boot_keygroup_interval": "100ms", "boot_key_interval": "10ms", "disable_vnc": false,
        "shutdown_command": "sudo poweroff", "shutdown_timeout": "5m",
        "host_port_min": 2222, "host_port_max": 4444, "skip_nat_mapping": false,
        "cd_files": [], "cd_label": "", "floppy_files": [], "floppy_dirs": [], "floppy_label": "",
        "accelerator": "tcg", "disk_additional_size": ["1G"], "cpus": 2, "disk_interface": "virtio-scsi",
        "disk_size": "5G", "skip_resize_disk": false, "disk_cache": "unsafe", "disk_discard": "unmap",
        "disk_detect_zeroes": "unmap", "skip_compaction": true, "disk_compression": false, "format": "qcow2",
        "headless": true, "disk_image": true, "use_backing_file": false, "machine_type": "q35",
        "memory": 1024, "net_device": "e1000", "output_directory": "{out}",
        "qemuargs": [["-m", "2048M"], ["-smbios", "type=1,serial={{{{ .HTTPIP }}}}"]],
        "qemu_img_args": {{"convert": ["-o", "preallocation=off"], "create": [], "resize": []}},
        "qemu_binary": "qemu-system-x86_64", "qmp_enable": false, "qmp_socket_path": "",
        "use_default_display": false, "display": "none", "vnc_bind_address": "127.0.0.1",
        "vnc_use_password": false, "vnc_port_min": 5900, "vnc_port_max": 6000, "vm_name": "x",
        "cdrom_interface": "ide", "run_once": false,
        "communicator": "ssh", "ssh_username": "debian", "ssh_timeout": "20m", "ssh_port": 22
        }}]}}"#,
        img = img.display(),
        out = d.path().join("out").display()
    );
    assert_eq!(prepare(&write(d.path(), &json)), Ok(1));
}

#[test]
fn mistakes_are_reported_all_at_once() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("exists");
    std::fs::create_dir(&out).unwrap();
    let json = format!(
        r#"{{"builders": [{{"type": "qemu", "iso_checksum": "sha256:abc", "format": "vmdk",
        "accelerator": "kvmm", "disk_size": "10GB", "disk_cache": "fast", "ssh_username": "u",
        "output_directory": "{}", "use_backing_file": true, "boot_command": ["<entr>"],
        "disk_imagee": true}},
        {{"type": "debootstrap", "name": "b", "disk_size": "1Q", "extra_packages": ["Bad,Name"],
        "format": "vmdk", "hostname": "-x-"}}]}}"#,
        out.display()
    );
    let e = prepare(&write(d.path(), &json)).unwrap_err();
    for want in [
        "One of iso_url or iso_urls must be specified",
        "is not a Sha256 checksum",
        "only 'qcow2' or 'raw'",
        "invalid accelerator `kvmm`",
        "Invalid disk size `10GB`",
        "unrecognized disk cache type `fast`",
        "already exists",
        "use_backing_file can only be enabled",
        "`boot_command`: unknown key `<entr>`",
        "unknown key `disk_imagee`",
        "did you mean `disk_image`?",
        "invalid disk size `1Q`",
        "`Bad,Name` is not a package name",
        "invalid format `vmdk`: only qcow2 or raw",
        "`-x-` is not a valid host name",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn install_media_mistakes_are_named() {
    let d = tempfile::tempdir().unwrap();
    let json = format!(
        r#"{{"builders": [{{"type": "qemu", "iso_urls": ["ftp://m/d.iso", "d.iso"],
        "iso_checksum": "file:", "ssh_username": "u", "output_directory": "{out}",
        "floppy_files": ["{dir}/nope/ks.cfg"], "floppy_dirs": ["{dir}/nodir"],
        "cd_files": ["{dir}/missing.txt"], "http_directory": "{dir}/nohttp",
        "http_port_min": 9000, "http_port_max": 8000,
        "net_bridge": "br0", "http_interface": "eth0"}}]}}"#,
        dir = d.path().display(),
        out = d.path().join("out").display()
    );
    let e = prepare(&write(d.path(), &json)).unwrap_err();
    for want in [
        "`ftp://m/d.iso`: kiln fetches http://, https:// and file:// URLs and local paths only",
        "iso_checksum file: needs a URL or path",
        "Bad Floppy disk file",
        "nope/ks.cfg': no such file or directory",
        "Bad Floppy disk directory",
        "Bad CD disk file",
        "nohttp is not a directory",
        "http_port_min must be less than http_port_max",
        "net_bridge is not supported by kiln yet",
        "http_interface is not supported by kiln yet",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn disk_images_without_credentials_get_a_cloud_init_seed() {
    use kiln_builder_qemu::config::decode;
    use kiln_template::{Context, Diagnostics};
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("base.qcow2");
    std::fs::write(&img, "x").unwrap();
    let table = [
        (r#""disk_image": true"#, true),
        (r#""disk_image": false"#, false),
        (r#""disk_image": true, "ssh_password": "p""#, false),
        (
            r#""disk_image": true, "cd_files": ["CD"], "cd_label": "cidata""#,
            false,
        ),
        (
            r#""disk_image": true, "ssh_password": "p", "cloud_init_seed": true"#,
            true,
        ),
    ];
    for (extra, want) in table {
        let cd = d.path().join("CD");
        std::fs::write(&cd, "x").unwrap();
        let json = format!(
            r#"{{"type": "qemu", "iso_url": "{}", "iso_checksum": "none", "ssh_username": "u", "output_directory": "{}", {}}}"#,
            img.display(),
            d.path().join("o").display(),
            extra.replace("\"CD\"", &format!("\"{}\"", cd.display()))
        );
        let src = std::sync::Arc::new(kiln_template::Source {
            path: "t.json".into(),
            text: json,
        });
        let node = kiln_template::json::parse(src).unwrap();
        let ctx = Context::new(d.path().to_path_buf());
        let mut diags = Diagnostics::default();
        let mut dec = kiln_template::Decoder::new(&node, &ctx, &mut diags);
        dec.ignore(&["type"]);
        let c = decode(&mut dec, false).expect("decodes");
        dec.finish();
        assert!(diags.is_empty(), "{extra}: {diags:?}");
        assert_eq!(c.cloud_init_seed, want, "{extra}");
    }
}
