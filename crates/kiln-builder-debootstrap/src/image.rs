//! Pure pieces of the image: argument lists for the programs the builder
//! runs, the files it writes into the root file system, and the MBR.
//!
//! How the disk is made without partition devices (there is no udev here,
//! so `losetup -P` gives no `/dev/loopNp1`):
//!
//! 1. `mmdebstrap` installs the packages into a directory.
//! 2. kiln writes the configuration files into that directory.
//! 3. `mkfs.ext4 -d DIR -E offset=1MiB` creates the root file system inside
//!    a sparse raw disk file, already populated, at the partition's offset:
//!    no mount needed.
//! 4. The file system is loop-mounted at that offset (`mount -o
//!    loop,offset=...`, a plain loop device, no partition devices) only for
//!    `extlinux --install`, which needs a mounted file system to place
//!    `ldlinux.sys`; it records the offset (2048 sectors) as the
//!    partition's start in its boot sector.
//! 5. kiln writes the MBR itself: SYSLINUX's `mbr.bin` boot code and one
//!    bootable Linux partition from 1 MiB to the end of the disk.
//! 6. `qemu-img convert` writes the qcow2 (or raw) image.
use crate::config::{Config, PARTITION_OFFSET};
use std::path::Path;

/// `mmdebstrap` arguments (the target directory must be empty or absent).
pub fn mmdebstrap_args(c: &Config, target: &Path) -> Vec<String> {
    vec![
        "--mode=root".into(),
        "--variant=apt".into(),
        "--format=directory".into(),
        "--architectures=amd64".into(),
        format!("--components={}", c.components.join(",")),
        format!("--include={}", c.packages().join(",")),
        "--aptopt=Acquire::Retries \"3\"".into(),
        c.suite.clone(),
        target.display().to_string(),
        c.mirror.clone(),
    ]
}

/// `mkfs.ext4` arguments: a populated ext4 file system written at the
/// partition's offset inside the disk file. `-O ^64bit` for extlinux;
/// the hash seed is the UUID so directory hashes are reproducible.
pub fn mkfs_args(c: &Config, root: &Path, disk: &Path) -> Vec<String> {
    let fs_kib = (c.disk_size - PARTITION_OFFSET) / 1024;
    vec![
        "-q".into(),
        "-F".into(),
        "-t".into(),
        "ext4".into(),
        "-L".into(),
        c.fs_label.clone(),
        "-U".into(),
        c.fs_uuid.clone(),
        "-O".into(),
        "^64bit".into(),
        "-E".into(),
        format!("offset={PARTITION_OFFSET},hash_seed={}", c.fs_uuid),
        "-d".into(),
        root.display().to_string(),
        disk.display().to_string(),
        format!("{fs_kib}k"),
    ]
}

/// `qemu-img convert` arguments from the raw disk to the output image.
pub fn convert_args(c: &Config, raw: &Path, out: &Path) -> Vec<String> {
    let mut a = vec!["convert".to_string()];
    if c.disk_compression {
        a.push("-c".into());
    }
    a.extend([
        "-f".into(),
        "raw".into(),
        "-O".into(),
        c.format.as_str().into(),
        raw.display().to_string(),
        out.display().to_string(),
    ]);
    a
}

/// The boot sector of the disk: `boot_code` (SYSLINUX's `mbr.bin`, at most
/// 440 bytes), a disk signature, and one active Linux partition from 1 MiB
/// to the end of the disk (capped at what MBR can address).
pub fn mbr(boot_code: &[u8], disk_size: u64, signature: u32) -> Result<[u8; 512], String> {
    if boot_code.len() > 440 {
        return Err(format!(
            "MBR boot code is {} bytes, more than 440",
            boot_code.len()
        ));
    }
    let mut m = [0u8; 512];
    m[..boot_code.len()].copy_from_slice(boot_code);
    m[440..444].copy_from_slice(&signature.to_le_bytes());
    let start = PARTITION_OFFSET / 512;
    let sectors = (disk_size / 512).saturating_sub(start).min(u32::MAX as u64);
    if sectors == 0 {
        return Err("the disk is too small for a partition".into());
    }
    let e = &mut m[446..462];
    e[0] = 0x80; // active
    e[1..4].copy_from_slice(&chs(start));
    e[4] = 0x83; // Linux
    e[5..8].copy_from_slice(&chs(start + sectors - 1));
    e[8..12].copy_from_slice(&(start as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(sectors as u32).to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xaa;
    Ok(m)
}

/// CHS address of an LBA with the usual 255 heads, 63 sectors geometry;
/// beyond what CHS can express, the conventional 1023/254/63 marker.
fn chs(lba: u64) -> [u8; 3] {
    let (heads, spt) = (255u64, 63u64);
    let c = lba / (heads * spt);
    if c > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let h = (lba / spt) % heads;
    let s = lba % spt + 1;
    [h as u8, (s as u8) | (((c >> 8) as u8) << 6), c as u8]
}

/// The disk signature, from the file system UUID (reproducible).
pub fn disk_signature(uuid: &[u8; 16]) -> u32 {
    u32::from_le_bytes([uuid[12], uuid[13], uuid[14], uuid[15]])
}

/// Files kiln writes into the root file system, as (path relative to the
/// root, mode, content).
pub fn config_files(c: &Config) -> Vec<(&'static str, u32, String)> {
    let h = &c.hostname;
    vec![
        ("etc/hostname", 0o644, format!("{h}\n")),
        (
            "etc/hosts",
            0o644,
            format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{h}\n\n\
                 ::1\t\tlocalhost ip6-localhost ip6-loopback\n\
                 ff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n"
            ),
        ),
        (
            "etc/fstab",
            0o644,
            format!(
                "# <file system> <mount point> <type> <options> <dump> <pass>\n\
                 UUID={}\t/\text4\terrors=remount-ro\t0\t1\n",
                c.fs_uuid
            ),
        ),
        // Empty: systemd makes a new machine id on first boot.
        ("etc/machine-id", 0o444, String::new()),
        (
            "etc/systemd/network/99-kiln-dhcp.network",
            0o644,
            "# DHCP on every Ethernet interface (cloud-init may add more specific\n\
             # configuration in 10-cloud-init-*.network).\n\
             [Match]\nType=ether\nName=en* eth*\n\n[Network]\nDHCP=yes\n"
                .into(),
        ),
        (
            "etc/systemd/resolved.conf.d/kiln.conf",
            0o644,
            "# Nothing listens but sshd: no stub resolver on 127.0.0.53, no LLMNR,\n\
             # no mDNS. /etc/resolv.conf lists the DHCP name servers directly.\n\
             [Resolve]\nDNSStubListener=no\nLLMNR=no\nMulticastDNS=no\n"
                .into(),
        ),
        (
            "etc/cloud/cloud.cfg.d/90-kiln.cfg",
            0o644,
            format!(
                "# Written by kiln's debootstrap builder.\n\
                 datasource_list: [ NoCloud, ConfigDrive, OpenStack, Ec2, None ]\n\
                 # /etc/hosts gets the instance's host name (sudo resolves it).\n\
                 manage_etc_hosts: true\n\
                 # No locales package: leave the locale alone.\n\
                 locale: false\n\
                 # Until a datasource names the instance, the host is {h}.\n"
            ),
        ),
        (
            "etc/systemd/system/kiln-ssh-hostkeys.service",
            0o644,
            "[Unit]\n\
             Description=Generate SSH host keys if none exist (without cloud-init data)\n\
             After=cloud-init.service\nBefore=ssh.service\n\
             ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key\n\n\
             [Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n\
             [Install]\nWantedBy=multi-user.target\n"
                .into(),
        ),
        ("boot/extlinux/extlinux.conf", 0o644, extlinux_conf(c)),
    ]
}

/// extlinux's configuration: the kernel and initrd through Debian's
/// `/vmlinuz` and `/initrd.img` links (kernel upgrades keep booting),
/// console on the first serial port and the screen.
pub fn extlinux_conf(c: &Config) -> String {
    let mut args = format!(
        "root=UUID={} ro console=tty0 console=ttyS0,115200n8",
        c.fs_uuid
    );
    for a in &c.kernel_args {
        args.push(' ');
        args.push_str(a);
    }
    format!(
        "# Written by kiln's debootstrap builder.\n\
         SERIAL 0 115200\nDEFAULT debian\nPROMPT 0\nTIMEOUT 0\n\n\
         LABEL debian\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND {args}\n"
    )
}

/// Symbolic links kiln makes (link path relative to the root, target).
pub fn config_links() -> Vec<(&'static str, &'static str)> {
    vec![("etc/resolv.conf", "../run/systemd/resolve/resolv.conf")]
}

/// Files removed from the root file system: per-machine secrets and state
/// that must be made on each instance, not baked into the image.
pub fn removed_globs() -> Vec<&'static str> {
    vec![
        "etc/ssh/ssh_host_*",
        "var/lib/dbus/machine-id",
        "var/cache/ldconfig/aux-cache",
        "var/lib/systemd/random-seed",
    ]
}

/// Units enabled with `systemctl --root`.
pub const ENABLED_UNITS: &[&str] = &[
    "systemd-networkd.service",
    "systemd-resolved.service",
    "kiln-ssh-hostkeys.service",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_uuid, Format};

    fn cfg() -> Config {
        Config::with_defaults("base")
    }

    #[test]
    fn mbr_layout() {
        let code = vec![0xfa; 440];
        let m = mbr(&code, 2 << 30, 0x6b696c6e).unwrap();
        assert_eq!(&m[..440], &code[..]);
        assert_eq!(&m[440..444], &[0x6e, 0x6c, 0x69, 0x6b]);
        assert_eq!(&m[444..446], &[0, 0]);
        assert_eq!(m[446], 0x80, "active");
        assert_eq!(m[450], 0x83, "Linux");
        assert_eq!(u32::from_le_bytes(m[454..458].try_into().unwrap()), 2048);
        assert_eq!(
            u32::from_le_bytes(m[458..462].try_into().unwrap()),
            (2u32 << 30) / 512 - 2048
        );
        // CHS of LBA 2048: cylinder 0, head 32, sector 33.
        assert_eq!(&m[447..450], &[32, 33, 0]);
        // Last sector 4194303: cylinder 261, head 21, sector 16.
        assert_eq!(&m[451..454], &[21, 16 | (1 << 6), 5]);
        assert!(m[462..510].iter().all(|&b| b == 0), "one partition only");
        assert_eq!(&m[510..], &[0x55, 0xaa]);
    }

    #[test]
    fn mbr_rejects_bad_input() {
        assert!(mbr(&[0; 441], 2 << 30, 1).is_err());
        assert!(mbr(&[0; 440], 1 << 20, 1).is_err());
        // Huge disks are capped at what 32-bit LBAs address.
        let m = mbr(&[], 4 << 40, 1).unwrap();
        assert_eq!(
            u32::from_le_bytes(m[458..462].try_into().unwrap()),
            u32::MAX
        );
        // The end is beyond CHS: the 1023/254/63 marker.
        assert_eq!(&m[451..454], &[0xfe, 0xff, 0xff]);
    }

    #[test]
    fn chs_table() {
        for (lba, want) in [
            (0u64, [0u8, 1, 0]),
            (62, [0, 63, 0]),
            (63, [1, 1, 0]),
            (2048, [32, 33, 0]),
            (255 * 63, [0, 1, 1]),
            (255 * 63 * 256, [0, 0b0100_0001, 0]),
            (255 * 63 * 1024, [0xfe, 0xff, 0xff]),
        ] {
            assert_eq!(chs(lba), want, "lba {lba}");
        }
    }

    #[test]
    fn mkfs_places_the_fs_at_the_partition() {
        let c = cfg();
        let a = mkfs_args(&c, Path::new("/w/root"), Path::new("/w/disk.raw"));
        let s = a.join(" ");
        assert!(s.contains(&format!("-U {}", c.fs_uuid)), "{s}");
        assert!(s.contains("-L root"), "{s}");
        assert!(s.contains("-E offset=1048576,hash_seed="), "{s}");
        assert!(s.ends_with("-d /w/root /w/disk.raw 2096128k"), "{s}");
    }

    #[test]
    fn mmdebstrap_and_convert_args() {
        let mut c = cfg();
        c.extra_packages = vec!["gcc".into()];
        let a = mmdebstrap_args(&c, Path::new("/w/root"));
        assert_eq!(
            &a[a.len() - 3..],
            &["bookworm", "/w/root", "http://deb.debian.org/debian"]
        );
        let inc = a.iter().find(|x| x.starts_with("--include=")).unwrap();
        assert!(inc.contains("cloud-init") && inc.ends_with(",gcc"), "{inc}");
        assert!(a.contains(&"--mode=root".to_string()));

        let table = [
            (Format::Qcow2, false, "convert -f raw -O qcow2 r o"),
            (Format::Qcow2, true, "convert -c -f raw -O qcow2 r o"),
            (Format::Raw, false, "convert -f raw -O raw r o"),
        ];
        for (f, comp, want) in table {
            c.format = f;
            c.disk_compression = comp;
            assert_eq!(
                convert_args(&c, Path::new("r"), Path::new("o")).join(" "),
                want
            );
        }
    }

    #[test]
    fn config_files_name_the_host_and_the_root() {
        let mut c = cfg();
        c.hostname = "seed".into();
        c.kernel_args = vec!["quiet".into()];
        let files = config_files(&c);
        let get = |p: &str| files.iter().find(|f| f.0 == p).unwrap().2.clone();
        assert_eq!(get("etc/hostname"), "seed\n");
        assert!(get("etc/hosts").contains("127.0.1.1\tseed\n"));
        assert!(get("etc/fstab").contains(&format!("UUID={}\t/\text4", c.fs_uuid)));
        assert_eq!(get("etc/machine-id"), "");
        let ext = get("boot/extlinux/extlinux.conf");
        assert!(
            ext.contains(&format!(
                "APPEND root=UUID={} ro console=tty0 console=ttyS0,115200n8 quiet",
                c.fs_uuid
            )),
            "{ext}"
        );
        assert!(ext.contains("SERIAL 0 115200"));
        let ci = get("etc/cloud/cloud.cfg.d/90-kiln.cfg");
        for ds in ["NoCloud", "ConfigDrive", "OpenStack", "Ec2"] {
            assert!(ci.contains(ds), "{ds}");
        }
        assert!(get("etc/systemd/resolved.conf.d/kiln.conf").contains("DNSStubListener=no"));
        assert!(parse_uuid(&c.fs_uuid).is_some());
    }
}
