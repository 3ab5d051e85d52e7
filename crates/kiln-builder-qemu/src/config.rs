//! Packer 1.6.6's qemu builder configuration: every key it accepts is
//! asked for (so a Packer template never has "unknown" keys here); the
//! ones kiln cannot honour yet are reported as such when set.
use kiln_commonsteps::cd::CdConfig;
use kiln_commonsteps::download::IsoConfig;
use kiln_commonsteps::floppy::FloppyConfig;
use kiln_commonsteps::http::{decode_port as port, HttpConfig};
use kiln_ssh::SshConfig;
use kiln_template::Decoder;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct QemuImgArgs {
    pub convert: Vec<String>,
    pub create: Vec<String>,
    pub resize: Vec<String>,
}

/// `accelerator`: chosen by the user, or probed at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accel {
    /// Not set: probe whether KVM can really run a guest, else TCG.
    Auto,
    /// As given (`kvm`, `tcg`, `xen`, `hax`, `hvf`, `whpx`, `none`).
    Named(String),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub build_name: String,
    pub force: bool,
    /// `iso_*`: the ISO or source disk (shared: `kiln_commonsteps`).
    pub iso: IsoConfig,
    /// `http_*`: the HTTP server.
    pub http: HttpConfig,
    /// `floppy_files`, `floppy_dirs`, `floppy_label`.
    pub floppy: FloppyConfig,
    // boot
    /// Typed through QMP after `boot_wait` (crate `kiln-bootcommand`).
    pub boot_command: kiln_bootcommand::BootCommand,
    /// Packer's rule: unset or 0 is 10 s, negative is none.
    pub boot_wait: Duration,
    /// The pause after each key event (`boot_key_interval`, else
    /// `PACKER_KEY_INTERVAL`, else 100 ms).
    pub boot_key_interval: Duration,
    pub disable_vnc: bool,
    // shutdown
    pub shutdown_command: Option<String>,
    pub shutdown_timeout: Duration,
    // communicator
    pub comm: SshConfig,
    pub host_port_min: u16,
    pub host_port_max: u16,
    pub skip_nat_mapping: bool,
    /// `cd_files`, `cd_label`.
    pub cd: CdConfig,
    // machine
    pub accelerator: Accel,
    pub disk_additional_size: Vec<String>,
    pub cpus: u32,
    pub disk_interface: String,
    pub disk_size: String,
    pub skip_resize_disk: bool,
    pub disk_cache: String,
    pub disk_discard: String,
    pub disk_detect_zeroes: String,
    pub skip_compaction: bool,
    pub disk_compression: bool,
    pub format: String,
    pub headless: bool,
    pub disk_image: bool,
    pub use_backing_file: bool,
    pub machine_type: String,
    pub memory: u32,
    pub net_device: String,
    pub output_directory: PathBuf,
    /// Rendered at run time (`{{ .SSHHostPort }}`, `{{ .HTTPIP }}`, ...).
    pub qemuargs: Vec<Vec<String>>,
    pub qemu_img_args: QemuImgArgs,
    pub qemu_binary: String,
    pub qmp_enable: bool,
    pub qmp_socket_path: Option<PathBuf>,
    pub use_default_display: bool,
    pub display: Option<String>,
    pub vnc_bind_address: String,
    pub vnc_use_password: bool,
    pub vnc_port_min: u16,
    pub vnc_port_max: u16,
    pub vm_name: String,
    pub cdrom_interface: Option<String>,
    /// kiln: hand the machine a cloud-init NoCloud seed with a per-build
    /// key and the user (default: for disk images when no credentials are
    /// configured).
    pub cloud_init_seed: bool,
    /// The template's interpolation context, for rendering `qemuargs`.
    pub interp: kiln_template::Context,
}

impl Config {
    /// Packer's defaults (for tests and tools); `comm` logs in as `user`.
    pub fn with_defaults(build_name: &str, user: &str) -> Self {
        let comm = SshConfig {
            username: user.to_string(),
            ..SshConfig::default()
        };
        Config {
            build_name: build_name.into(),
            force: false,
            iso: IsoConfig::default(),
            http: HttpConfig::default(),
            floppy: FloppyConfig::default(),
            boot_command: kiln_bootcommand::BootCommand::default(),
            boot_wait: Duration::from_secs(10),
            boot_key_interval: kiln_bootcommand::typist::DEFAULT_KEY_INTERVAL,
            disable_vnc: false,
            shutdown_command: None,
            shutdown_timeout: Duration::from_secs(300),
            comm,
            host_port_min: 2222,
            host_port_max: 4444,
            skip_nat_mapping: false,
            cd: CdConfig::default(),
            accelerator: Accel::Auto,
            disk_additional_size: vec![],
            cpus: 1,
            disk_interface: "virtio".into(),
            disk_size: "40960M".into(),
            skip_resize_disk: false,
            disk_cache: "writeback".into(),
            disk_discard: "ignore".into(),
            disk_detect_zeroes: "off".into(),
            skip_compaction: false,
            disk_compression: false,
            format: "qcow2".into(),
            headless: false,
            disk_image: false,
            use_backing_file: false,
            machine_type: "pc".into(),
            memory: 512,
            net_device: "virtio-net".into(),
            output_directory: PathBuf::from(format!("output-{build_name}")),
            qemuargs: vec![],
            qemu_img_args: QemuImgArgs::default(),
            qemu_binary: "qemu-system-x86_64".into(),
            qmp_enable: false,
            qmp_socket_path: None,
            use_default_display: false,
            display: None,
            vnc_bind_address: "127.0.0.1".into(),
            vnc_use_password: false,
            vnc_port_min: 5900,
            vnc_port_max: 6000,
            vm_name: format!("packer-{build_name}"),
            cdrom_interface: None,
            cloud_init_seed: false,
            interp: kiln_template::Context::default(),
        }
    }

    /// Whether the build logs in with a credential the template gave.
    pub fn has_credentials(&self) -> bool {
        self.comm.password.is_some() || self.comm.private_key_file.is_some() || self.comm.agent_auth
    }

    pub fn disk_path(&self) -> PathBuf {
        self.output_directory.join(&self.vm_name)
    }
}

const ACCELS: &[&str] = &["none", "kvm", "tcg", "xen", "hax", "hvf", "whpx"];
const DISK_INTERFACES: &[&str] = &["ide", "scsi", "virtio", "virtio-scsi"];
const DISK_CACHES: &[&str] = &["writethrough", "writeback", "none", "unsafe", "directsync"];
const DISK_DISCARDS: &[&str] = &["unmap", "ignore"];
const DETECT_ZEROES: &[&str] = &["unmap", "on", "off"];

/// Packer's disk size rule: digits with an optional b/k/m/g/t suffix (any
/// case); bare digits are MiB ("M" is appended). `None` if invalid.
pub fn normalize_disk_size(s: &str) -> Option<String> {
    let l = s.to_ascii_lowercase();
    let (digits, suffix) = match l.char_indices().last()? {
        (i, c) if "bkmgt".contains(c) => (&s[..i], Some(c)),
        _ => (s, None),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(match suffix {
        None => format!("{s}M"),
        Some(_) => s.to_string(),
    })
}

fn one_of(d: &mut Decoder<'_>, key: &str, default: &str, allowed: &[&str], what: &str) -> String {
    match d.string(key).filter(|s| !s.is_empty()) {
        None => default.to_string(),
        Some(v) if allowed.contains(&v.as_str()) => v,
        Some(v) => {
            d.error(
                key,
                format!("unrecognized {what} `{v}` (one of: {})", allowed.join(", ")),
            );
            default.to_string()
        }
    }
}

/// Decode every key of Packer 1.6.6's qemu builder. Problems are recorded
/// in the decoder (all of them); `None` if the configuration is unusable.
pub fn decode(d: &mut Decoder<'_>, force: bool) -> Option<Config> {
    let build_name = d.ctx().build_name.clone().unwrap_or_else(|| "qemu".into());
    let mut c = Config::with_defaults(&build_name, "");
    c.force = force;
    c.interp = d.ctx().clone();
    let mut ok = true;

    // Communicator keys (ssh_*, communicator, ...).
    c.comm = SshConfig::decode(d);

    // ISO, HTTP server, floppy, CD: Packer's common configurations.
    match IsoConfig::decode(d) {
        Some(i) => c.iso = i,
        None => ok = false,
    }
    match HttpConfig::decode(d) {
        Some(h) => c.http = h,
        None => ok = false,
    }
    match FloppyConfig::decode(d) {
        Some(f) => c.floppy = f,
        None => ok = false,
    }
    match CdConfig::decode(d) {
        Some(cd) => c.cd = cd,
        None => ok = false,
    }

    // Boot command: typed through QMP (kiln-bootcommand), so it needs no
    // VNC (Packer refuses it with disable_vnc).
    use kiln_bootcommand::template as bootcmd;
    match bootcmd::decode(d, "boot_command") {
        Ok(bc) => c.boot_command = bc,
        Err(_) => ok = false,
    }
    match bootcmd::decode_boot_wait(d, "boot_wait") {
        Ok(w) => c.boot_wait = w,
        Err(_) => ok = false,
    }
    match bootcmd::decode_key_interval(d, "boot_key_interval") {
        Ok(i) => c.boot_key_interval = i,
        Err(_) => ok = false,
    }
    // Packer's qemu builder accepts it and does nothing with it (only its
    // scancode drivers, not VNC, group keys).
    let _ = d.duration("boot_keygroup_interval");
    c.disable_vnc = d.bool("disable_vnc").unwrap_or(false);

    // Shutdown.
    c.shutdown_command = d.string("shutdown_command").filter(|s| !s.is_empty());
    if let Some(t) = d.duration("shutdown_timeout").filter(|t| !t.is_zero()) {
        c.shutdown_timeout = t;
    }

    // Port forwarding.
    c.host_port_min = port(d, "host_port_min", 2222);
    c.host_port_max = port(d, "host_port_max", 4444);
    let old_min = port(d, "ssh_host_port_min", 0);
    let old_max = port(d, "ssh_host_port_max", 0);
    if old_min != 0 {
        c.host_port_min = old_min;
    }
    if old_max != 0 {
        c.host_port_max = old_max;
    }
    if c.host_port_min > c.host_port_max {
        d.error(
            "host_port_min",
            "host_port_min must be less than host_port_max",
        );
        ok = false;
    }
    c.skip_nat_mapping = d.bool("skip_nat_mapping").unwrap_or(false);

    // Machine.
    c.accelerator = match d.string("accelerator").filter(|s| !s.is_empty()) {
        None => Accel::Auto,
        Some(a) if ACCELS.contains(&a.as_str()) => Accel::Named(a),
        Some(a) => {
            d.error(
                "accelerator",
                format!("invalid accelerator `{a}`, only 'kvm', 'tcg', 'xen', 'hax', 'hvf', 'whpx', or 'none' are allowed"),
            );
            ok = false;
            Accel::Auto
        }
    };
    c.disk_additional_size = d.string_list("disk_additional_size").unwrap_or_default();
    for s in &c.disk_additional_size {
        if normalize_disk_size(s).is_none() {
            d.error("disk_additional_size", format!("Invalid disk size `{s}`"));
            ok = false;
        }
    }
    c.cpus = match d.int("cpus") {
        Some(n) if n >= 1 => n.min(1024) as u32,
        _ => 1,
    };
    c.disk_interface = one_of(
        d,
        "disk_interface",
        "virtio",
        DISK_INTERFACES,
        "disk interface type",
    );
    match d.string("disk_size").filter(|s| !s.is_empty() && s != "0") {
        None => {}
        Some(s) => match normalize_disk_size(&s) {
            Some(n) => c.disk_size = n,
            None => {
                d.error("disk_size", format!("Invalid disk size `{s}`"));
                ok = false;
            }
        },
    }
    c.skip_resize_disk = d.bool("skip_resize_disk").unwrap_or(false);
    c.disk_cache = one_of(d, "disk_cache", "writeback", DISK_CACHES, "disk cache type");
    c.disk_discard = one_of(
        d,
        "disk_discard",
        "ignore",
        DISK_DISCARDS,
        "disk discard type",
    );
    c.disk_detect_zeroes = one_of(
        d,
        "disk_detect_zeroes",
        "off",
        DETECT_ZEROES,
        "disk detect zeroes setting",
    );
    c.skip_compaction = d.bool("skip_compaction").unwrap_or(false);
    c.disk_compression = d.bool("disk_compression").unwrap_or(false);
    c.format = d
        .string("format")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "qcow2".into());
    if c.format != "qcow2" && c.format != "raw" {
        d.error(
            "format",
            "invalid format, only 'qcow2' or 'raw' are allowed",
        );
        ok = false;
    }
    c.headless = d.bool("headless").unwrap_or(false);
    c.disk_image = d.bool("disk_image").unwrap_or(false);
    c.use_backing_file = d.bool("use_backing_file").unwrap_or(false);
    if c.format != "qcow2" {
        c.skip_compaction = true;
        c.disk_compression = false;
    }
    if c.use_backing_file {
        c.skip_compaction = true;
        if !(c.disk_image && c.format == "qcow2") {
            d.error(
                "use_backing_file",
                "use_backing_file can only be enabled for QCOW2 images and when disk_image is true",
            );
            ok = false;
        }
    }
    if c.skip_resize_disk && !c.disk_image {
        d.error(
            "skip_resize_disk",
            "skip_resize_disk can only be used when disk_image is true",
        );
        ok = false;
    }
    if let Some(m) = d.string("machine_type").filter(|s| !s.is_empty()) {
        c.machine_type = m;
    }
    c.memory = match d.int("memory") {
        Some(n) if n >= 10 => n.min(1 << 24) as u32,
        _ => 512,
    };
    if let Some(n) = d.string("net_device").filter(|s| !s.is_empty()) {
        c.net_device = n;
    }
    if d.string("net_bridge").is_some_and(|s| !s.is_empty()) {
        d.error(
            "net_bridge",
            "net_bridge is not supported by kiln yet (user-mode networking only)",
        );
        ok = false;
    }
    if let Some(o) = d.string("output_directory").filter(|s| !s.is_empty()) {
        c.output_directory = PathBuf::from(o);
    }
    // qemuargs are rendered at run time with .HTTPIP, .SSHHostPort, ...
    if let Some(q) = d.node("qemuargs") {
        match crate::args::raw_qemuargs(q) {
            Ok(v) => c.qemuargs = v,
            Err(e) => {
                d.error("qemuargs", e);
                ok = false;
            }
        }
    }
    if let Some(q) = d.nested("qemu_img_args", |n| QemuImgArgs {
        convert: n.string_list("convert").unwrap_or_default(),
        create: n.string_list("create").unwrap_or_default(),
        resize: n.string_list("resize").unwrap_or_default(),
    }) {
        c.qemu_img_args = q;
    }
    if let Some(b) = d.string("qemu_binary").filter(|s| !s.is_empty()) {
        c.qemu_binary = b;
    }
    c.qmp_enable = d.bool("qmp_enable").unwrap_or(false);
    c.qmp_socket_path = d
        .string("qmp_socket_path")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    c.use_default_display = d.bool("use_default_display").unwrap_or(false);
    c.display = d.string("display").filter(|s| !s.is_empty());
    if let Some(a) = d.string("vnc_bind_address").filter(|s| !s.is_empty()) {
        c.vnc_bind_address = a;
    }
    c.vnc_use_password = d.bool("vnc_use_password").unwrap_or(false);
    c.vnc_port_min = port(d, "vnc_port_min", 5900);
    c.vnc_port_max = port(d, "vnc_port_max", 6000);
    if c.vnc_port_min > c.vnc_port_max {
        d.error(
            "vnc_port_min",
            "vnc_port_min must be less than vnc_port_max",
        );
        ok = false;
    }
    if c.vnc_use_password {
        c.qmp_enable = true;
    }
    if let Some(n) = d.string("vm_name").filter(|s| !s.is_empty()) {
        c.vm_name = n;
    }
    if c.qmp_enable && c.qmp_socket_path.is_none() {
        c.qmp_socket_path = Some(c.output_directory.join(format!("{}.monitor", c.vm_name)));
    }
    c.cdrom_interface = d.string("cdrom_interface").filter(|s| !s.is_empty());
    let _ = d.bool("run_once");

    // kiln: the cloud-init seed with a per-build key.
    let seed = d.bool("cloud_init_seed");
    let label_is_cidata = c.cd.label.eq_ignore_ascii_case("cidata");
    c.cloud_init_seed = seed
        .unwrap_or(c.disk_image && !c.comm.is_none() && !c.has_credentials() && !label_is_cidata);
    if c.cloud_init_seed && c.comm.is_none() {
        d.error(
            "cloud_init_seed",
            "cloud_init_seed needs the ssh communicator",
        );
        ok = false;
    }

    if let Some(p) = kiln_commonsteps::output_dir_problem(&c.output_directory, c.force) {
        d.error_here(p);
        ok = false;
    }
    ok.then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_sizes_as_packer() {
        for (s, want) in [
            ("40960", Some("40960M")),
            ("10G", Some("10G")),
            ("10g", Some("10g")),
            ("512M", Some("512M")),
            ("1b", Some("1b")),
            ("G", None),
            ("10GB", None),
            ("1.5G", None),
            ("", None),
        ] {
            assert_eq!(normalize_disk_size(s).as_deref(), want, "{s}");
        }
    }

    #[test]
    fn defaults_are_packers() {
        let c = Config::with_defaults("qemu", "debian");
        assert_eq!(c.vm_name, "packer-qemu");
        assert_eq!(c.output_directory, PathBuf::from("output-qemu"));
        assert_eq!(c.disk_size, "40960M");
        assert_eq!((c.host_port_min, c.host_port_max), (2222, 4444));
        assert_eq!(c.memory, 512);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(300));
        assert!(!c.has_credentials());
    }
}
