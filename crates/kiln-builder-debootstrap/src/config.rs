//! The builder's configuration: keys, defaults, validation.
use kiln_template::Decoder;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Packages every image gets. Together they make a cloud image: a kernel
/// for virtual machines, systemd (init, networkd, resolved), dbus, sshd,
/// sudo, cloud-init with what its modules call (growpart, resize2fs,
/// sfdisk, a DHCP client for the EC2/OpenStack local datasources).
pub const BASE_PACKAGES: &[&str] = &[
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "systemd",
    "systemd-sysv",
    "systemd-resolved",
    "udev",
    "dbus",
    "openssh-server",
    "sudo",
    "cloud-init",
    "cloud-guest-utils",
    "isc-dhcp-client",
    "e2fsprogs",
    "fdisk",
    "iproute2",
    "netbase",
    "ca-certificates",
];

pub const DEFAULT_SUITE: &str = "bookworm";
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
pub const DEFAULT_DISK_SIZE: u64 = 2 << 30;
/// The partition starts at 1 MiB, as partitioning tools do.
pub const PARTITION_OFFSET: u64 = 1 << 20;
/// ext4 without the 64bit feature (extlinux's ext4 support is safest
/// without it) addresses at most 16 TiB with 4 KiB blocks.
pub const MAX_DISK_SIZE: u64 = 16 << 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Qcow2,
    Raw,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Debian suite (`bookworm`).
    pub suite: String,
    /// Package mirror (`http://deb.debian.org/debian`).
    pub mirror: String,
    /// Archive components (`main`).
    pub components: Vec<String>,
    /// Packages installed on top of [`BASE_PACKAGES`].
    pub extra_packages: Vec<String>,
    /// Virtual size of the disk in bytes.
    pub disk_size: u64,
    pub format: Format,
    /// qcow2 compression (`qemu-img convert -c`).
    pub disk_compression: bool,
    /// Where the image goes; must not exist unless `-force`.
    pub output_directory: PathBuf,
    /// File name of the image in `output_directory`.
    pub vm_name: String,
    pub hostname: String,
    pub fs_label: String,
    /// ext4 UUID (also the root= of the kernel command line). Derived from
    /// the inputs when not given, so two builds of the same inputs agree.
    pub fs_uuid: String,
    /// Timestamp for reproducibility (`SOURCE_DATE_EPOCH`); when `None`,
    /// the `Date:` of the suite's InRelease file on the mirror.
    pub source_date_epoch: Option<i64>,
    /// Extra kernel command-line arguments.
    pub kernel_args: Vec<String>,
    pub force: bool,
}

impl Config {
    /// A configuration with every default (for tests and tools).
    pub fn with_defaults(build_name: &str) -> Self {
        let mut c = Config {
            suite: DEFAULT_SUITE.into(),
            mirror: DEFAULT_MIRROR.into(),
            components: vec!["main".into()],
            extra_packages: vec![],
            disk_size: DEFAULT_DISK_SIZE,
            format: Format::Qcow2,
            disk_compression: false,
            output_directory: PathBuf::from(format!("output-{build_name}")),
            vm_name: format!("{build_name}.qcow2"),
            hostname: "debian".into(),
            fs_label: "root".into(),
            fs_uuid: String::new(),
            source_date_epoch: None,
            kernel_args: vec![],
            force: false,
        };
        c.fs_uuid = derived_uuid(&c);
        c
    }

    /// Every package to install: the base set, then the extra ones.
    pub fn packages(&self) -> Vec<String> {
        let mut v: Vec<String> = BASE_PACKAGES.iter().map(|s| s.to_string()).collect();
        for p in &self.extra_packages {
            if !v.contains(p) {
                v.push(p.clone());
            }
        }
        v
    }

    pub fn image_path(&self) -> PathBuf {
        self.output_directory.join(&self.vm_name)
    }
}

/// A UUID derived from everything that determines the image's content, so
/// identical inputs give identical images. (Formatted as an RFC 4122
/// variant, version 8: "custom".)
pub fn derived_uuid(c: &Config) -> String {
    let mut h = Sha256::new();
    for part in [
        c.suite.as_str(),
        c.mirror.as_str(),
        &c.components.join(","),
        &c.packages().join(","),
        &c.hostname,
        &c.fs_label,
        &c.disk_size.to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let mut b: [u8; 16] = h.finalize()[..16].try_into().expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

pub fn format_uuid(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parse a UUID in its canonical 8-4-4-4-12 form.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.iter().map(|p| p.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
        return None;
    }
    let bytes = hex::decode(parts.concat()).ok()?;
    bytes.try_into().ok()
}

/// A disk size as Packer writes it: a number of MiB, or a number with a
/// `b`, `k`, `m`, `g` or `t` suffix (any case, binary units).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last()? {
        'b' => (&s[..s.len() - 1], 1u64),
        'k' => (&s[..s.len() - 1], 1 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        't' => (&s[..s.len() - 1], 1 << 40),
        c if c.is_ascii_digit() => (s.as_str(), 1 << 20),
        _ => return None,
    };
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// A plausible Debian package name (policy: lower case letters, digits,
/// `+`, `-`, `.`; at least two characters, starting alphanumeric), with
/// an optional `:arch`, `=version` or `/release` as apt accepts.
pub fn valid_package(p: &str) -> bool {
    let name = p.split(['=', '/', ':']).next().unwrap_or("");
    name.len() >= 2
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
        && !p.contains([',', ' '])
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !h.starts_with('-')
        && !h.ends_with('-')
}

/// Decode the builder's keys. Problems are recorded in the decoder; `None`
/// when the configuration cannot be used.
pub fn decode(d: &mut Decoder<'_>, force: bool) -> Option<Config> {
    let build_name = d
        .ctx()
        .build_name
        .clone()
        .unwrap_or_else(|| "debootstrap".into());
    let mut c = Config::with_defaults(&build_name);
    let mut ok = true;
    c.force = force;

    if let Some(s) = d.string("suite") {
        if s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            d.error("suite", format!("`{s}` is not a Debian suite name"));
            ok = false;
        }
        c.suite = s;
    }
    if let Some(m) = d.string("mirror") {
        if !(m.starts_with("http://") || m.starts_with("https://") || m.starts_with("file:/")) {
            d.error(
                "mirror",
                "mirror must be an http://, https:// or file:/ URL",
            );
            ok = false;
        }
        c.mirror = m.trim_end_matches('/').to_string();
    }
    if let Some(v) = d.string_list("components") {
        if v.is_empty() {
            d.error("components", "at least one component is needed (e.g. main)");
            ok = false;
        }
        c.components = v;
    }
    if let Some(v) = d.string_list("extra_packages") {
        for p in &v {
            if !valid_package(p) {
                d.error("extra_packages", format!("`{p}` is not a package name"));
                ok = false;
            }
        }
        c.extra_packages = v;
    }
    if let Some(s) = d.string("disk_size") {
        match parse_size(&s) {
            Some(n) if ((512 << 20)..=MAX_DISK_SIZE).contains(&n) => c.disk_size = n,
            Some(_) => {
                d.error("disk_size", "disk_size must be between 512M and 16T");
                ok = false;
            }
            None => {
                d.error(
                    "disk_size",
                    format!(
                        "invalid disk size `{s}` (a number of MiB, or with a K, M, G or T suffix)"
                    ),
                );
                ok = false;
            }
        }
    }
    let format = d.string("format");
    match format.as_deref() {
        None | Some("qcow2") => c.format = Format::Qcow2,
        Some("raw") => c.format = Format::Raw,
        Some(f) => {
            d.error("format", format!("invalid format `{f}`: only qcow2 or raw"));
            ok = false;
        }
    }
    c.disk_compression = d.bool("disk_compression").unwrap_or(false);
    if c.disk_compression && c.format != Format::Qcow2 {
        d.error("disk_compression", "disk_compression needs format qcow2");
        ok = false;
    }
    if let Some(o) = d.string("output_directory") {
        c.output_directory = PathBuf::from(o);
    }
    c.vm_name = match d.string("vm_name") {
        Some(n) if n.is_empty() || n.contains('/') => {
            d.error("vm_name", "vm_name must be a file name (no `/`)");
            ok = false;
            n
        }
        Some(n) => n,
        None => format!("{build_name}.{}", c.format.as_str()),
    };
    if let Some(h) = d.string("hostname") {
        if !valid_hostname(&h) {
            d.error("hostname", format!("`{h}` is not a valid host name"));
            ok = false;
        }
        c.hostname = h;
    }
    if let Some(l) = d.string("fs_label") {
        if l.is_empty() || l.len() > 16 {
            d.error("fs_label", "an ext4 label has 1 to 16 characters");
            ok = false;
        }
        c.fs_label = l;
    }
    let uuid = d.string("fs_uuid");
    if let Some(e) = d.int("source_date_epoch") {
        if e < 0 {
            d.error("source_date_epoch", "must be a UNIX time (seconds)");
            ok = false;
        }
        c.source_date_epoch = Some(e);
    }
    if let Some(v) = d.string_list("kernel_args") {
        c.kernel_args = v;
    }
    c.fs_uuid = match uuid {
        Some(u) => {
            if parse_uuid(&u).is_none() {
                d.error("fs_uuid", format!("`{u}` is not a UUID"));
                ok = false;
            }
            u.to_ascii_lowercase()
        }
        None => derived_uuid(&c),
    };
    if let Some(p) = kiln_commonsteps::output_dir_problem(&c.output_directory, c.force) {
        d.error("output_directory", p);
        ok = false;
    }
    ok.then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_packer_writes_them() {
        let table: &[(&str, Option<u64>)] = &[
            ("2048", Some(2048 << 20)),
            ("2G", Some(2 << 30)),
            ("2g", Some(2 << 30)),
            ("512M", Some(512 << 20)),
            ("1T", Some(1 << 40)),
            ("4096K", Some(4 << 20)),
            ("1048576b", Some(1 << 20)),
            ("", None),
            ("G", None),
            ("2GB", None),
            ("-1G", None),
            ("1.5G", None),
            ("99999999999999999999T", None),
        ];
        for (s, want) in table {
            assert_eq!(parse_size(s), *want, "{s}");
        }
    }

    #[test]
    fn package_names() {
        for ok in [
            "gcc",
            "libc6-dev",
            "g++",
            "linux-image-cloud-amd64",
            "vim=2:9.0",
            "gcc/bookworm-backports",
            "libc6:amd64",
        ] {
            assert!(valid_package(ok), "{ok}");
        }
        for bad in ["", "a", "Gcc", "-gcc", "gcc,make", "gcc make", "gcc;rm"] {
            assert!(!valid_package(bad), "{bad}");
        }
    }

    #[test]
    fn uuid_is_derived_from_inputs_and_well_formed() {
        let a = Config::with_defaults("x");
        let b = Config::with_defaults("y");
        // The build name is not an input of the content.
        assert_eq!(a.fs_uuid, b.fs_uuid);
        let mut c = Config::with_defaults("x");
        c.extra_packages = vec!["gcc".into()];
        assert_ne!(derived_uuid(&c), a.fs_uuid);
        let bytes = parse_uuid(&a.fs_uuid).expect("parses");
        assert_eq!(bytes[6] >> 4, 8, "version 8");
        assert_eq!(bytes[8] >> 6, 0b10, "RFC 4122 variant");
        assert_eq!(format_uuid(&bytes), a.fs_uuid);
        assert_eq!(parse_uuid("not-a-uuid"), None);
    }

    #[test]
    fn packages_are_base_then_extra_without_duplicates() {
        let mut c = Config::with_defaults("x");
        c.extra_packages = vec!["gcc".into(), "sudo".into()];
        let p = c.packages();
        assert_eq!(p.len(), BASE_PACKAGES.len() + 1);
        assert_eq!(p.last().map(String::as_str), Some("gcc"));
    }
}
