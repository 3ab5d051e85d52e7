//! QEMU's command line, built as Packer 1.6.6 builds it (pure functions).
//!
//! Packer builds a map of default arguments (`-machine`, `-netdev`,
//! `-drive`, ...); each `qemuargs` row replaces the defaults of its key
//! (`["-m", "2048M"]` replaces `-m`), rows of a key not in the defaults
//! are added, and the network device is re-added if an overriding
//! `-device` list lacks it. kiln does the same, in a fixed order (Packer's
//! is a Go map's, i.e. random), and adds its own defaults: the serial
//! console to a log file and a QMP socket it uses to power the machine
//! down and watch its state.
use crate::config::Config;
use kiln_template::{Node, Value};
use std::path::PathBuf;

/// How the machine is accelerated, as decided at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccelChoice {
    /// `-machine type=T,accel=NAME` (Packer's form, for an explicit
    /// `accelerator` or a working KVM).
    Machine(String),
    /// `accelerator: none`: `-machine type=T` only.
    NoAccel,
    /// KVM cannot run guests here: `-accel tcg,thread=multi -cpu qemu64`
    /// ([`TCG_DEFAULT_CPU`]; a `-cpu` row in `qemuargs` replaces it).
    TcgFallback,
}

/// The CPU model of the TCG fallback when `qemuargs` names none: the plain
/// x86-64 baseline, Packer's own default. Under TCG it is the fastest model
/// measured here (glibc then picks SSE2 routines, which TCG translates
/// well, instead of AVX2/SSE4.2 string routines, which it emulates
/// slowly); a guest built for x86-64-v2 or later needs `qemuargs:
/// [["-cpu", "max"]]` (or a named model).
pub const TCG_DEFAULT_CPU: &str = "qemu64";

/// The CPU model a command line passes (`-cpu MODEL[,features]`), if any.
pub fn cpu_model(args: &[String]) -> Option<&str> {
    args.windows(2)
        .rev()
        .find(|w| w[0] == "-cpu")
        .map(|w| w[1].as_str())
}

/// What is known only at run time.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub accel: AccelChoice,
    /// Disks to attach (the main disk first).
    pub disks: Vec<PathBuf>,
    /// CD-ROMs to attach (the ISO unless `disk_image`, then `cd_files`'s
    /// or the cloud-init seed's ISO).
    pub cds: Vec<PathBuf>,
    /// Host port forwarded to the guest's SSH port (`None`: no forwarding).
    pub ssh_host_port: Option<u16>,
    /// The VNC display number (`-vnc addr:N`), if VNC is on.
    pub vnc_display: Option<u16>,
    /// Use `-display none` (headless, or no display to open a window on).
    pub no_display: bool,
    /// Where the guest's first serial port is written.
    pub serial_log: Option<PathBuf>,
    /// kiln's QMP socket.
    pub qmp_socket: PathBuf,
    /// A second QMP socket of kiln's, on which it only listens to events
    /// (QEMU's QMP serves one client at a time per socket).
    pub qmp_events: Option<PathBuf>,
    /// A QMP socket for typing the boot command (when there is one).
    pub qmp_keys: Option<PathBuf>,
    pub http_ip: String,
    pub http_port: u16,
    /// The `floppy_files`/`floppy_dirs` image, attached as `-fda`.
    pub floppy: Option<PathBuf>,
}

/// An ordered multimap of arguments: key -> values (no value: a flag).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArgMap(Vec<(String, Vec<String>)>);

impl ArgMap {
    fn set(&mut self, key: &str, values: Vec<String>) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = values,
            None => self.0.push((key.to_string(), values)),
        }
    }
    fn one(&mut self, key: &str, value: impl Into<String>) {
        self.set(key, vec![value.into()]);
    }
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
    /// The command line: `key value` for each value, `key` alone for flags.
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (k, vs) in &self.0 {
            if vs.is_empty() {
                out.push(k.clone());
            }
            for v in vs {
                out.push(k.clone());
                out.push(v.clone());
            }
        }
        out
    }
}

/// A path as a value inside a QEMU option list (`file=PATH,if=...`):
/// QEMU splits such lists at commas and reads `,,` as one literal comma.
/// Packer passes paths as they are, so an output directory with a comma
/// in its name makes QEMU fail to open the disk; kiln escapes them.
pub fn opt_path(p: &std::path::Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// Packer's default arguments, plus kiln's (serial log, QMP).
pub fn default_args(c: &Config, rt: &Runtime) -> ArgMap {
    let mut a = ArgMap::default();
    a.one("-name", &c.vm_name);
    match &rt.accel {
        AccelChoice::Machine(accel) => {
            a.one("-machine", format!("type={},accel={accel}", c.machine_type))
        }
        AccelChoice::NoAccel => a.one("-machine", format!("type={}", c.machine_type)),
        AccelChoice::TcgFallback => {
            a.one("-machine", format!("type={}", c.machine_type));
            a.one("-accel", "tcg,thread=multi");
            a.one("-cpu", TCG_DEFAULT_CPU);
        }
    }
    a.one("-m", format!("{}M", c.memory));
    if c.cpus > 1 {
        a.one("-smp", format!("cpus={0},sockets={0}", c.cpus));
    }
    a.one("-boot", if c.disk_image { "c" } else { "once=d" });
    a.one(
        "-netdev",
        match rt.ssh_host_port {
            Some(p) => format!("user,id=user.0,hostfwd=tcp:127.0.0.1:{p}-:{}", c.comm.port),
            None => "user,id=user.0".into(),
        },
    );
    if let Some(f) = &rt.floppy {
        a.one("-fda", f.display().to_string());
    }
    let (devices, drives) = device_and_drive_args(c, rt);
    a.set("-device", devices);
    a.set("-drive", drives);
    if let Some(n) = rt.vnc_display {
        a.one(
            "-vnc",
            format!(
                "{}:{n}{}",
                c.vnc_bind_address,
                if c.vnc_use_password { ",password" } else { "" }
            ),
        );
    }
    if rt.no_display {
        a.one("-display", "none");
    } else if let Some(d) = c.display.as_deref().filter(|d| *d != "none") {
        a.one("-display", d);
    } else if !c.use_default_display {
        a.one("-display", "gtk");
    }
    let mut qmp = vec![format!(
        "unix:{},server=on,wait=off",
        opt_path(&rt.qmp_socket)
    )];
    if let Some(e) = &rt.qmp_events {
        qmp.push(format!("unix:{},server=on,wait=off", opt_path(e)));
    }
    if let Some(k) = &rt.qmp_keys {
        qmp.push(format!("unix:{},server=on,wait=off", opt_path(k)));
    }
    if c.qmp_enable {
        if let Some(p) = &c.qmp_socket_path {
            qmp.push(format!("unix:{},server=on,wait=off", opt_path(p)));
        }
    }
    a.set("-qmp", qmp);
    if let Some(s) = &rt.serial_log {
        a.one("-serial", format!("file:{}", opt_path(s)));
    }
    a
}

/// `-device` and `-drive` values, as Packer's `getDeviceAndDriveArgs`.
pub fn device_and_drive_args(c: &Config, rt: &Runtime) -> (Vec<String>, Vec<String>) {
    let mut devices = Vec::new();
    let mut drives = Vec::new();
    for (i, path) in rt.disks.iter().enumerate() {
        let p = opt_path(path);
        let mut drive = if c.disk_interface == "virtio-scsi" {
            if i == 0 {
                devices.push(format!("virtio-scsi-pci,id=scsi{i}"));
            }
            devices.push(format!("scsi-hd,bus=scsi0.0,drive=drive{i}"));
            format!(
                "if=none,file={p},id=drive{i},cache={},discard={},format={}",
                c.disk_cache, c.disk_discard, c.format
            )
        } else {
            format!(
                "file={p},if={},cache={},discard={},format={}",
                c.disk_interface, c.disk_cache, c.disk_discard, c.format
            )
        };
        if c.disk_detect_zeroes != "off" {
            drive.push_str(&format!(",detect-zeroes={}", c.disk_detect_zeroes));
        }
        drives.push(drive);
    }
    devices.push(format!("{},netdev=user.0", c.net_device));
    for (i, cd) in rt.cds.iter().enumerate() {
        let p = opt_path(cd);
        match c.cdrom_interface.as_deref() {
            None => drives.push(format!("file={p},index={i},media=cdrom")),
            Some("virtio-scsi") => {
                drives.push(format!(
                    "file={p},if=none,index={i},id=cdrom{i},media=cdrom"
                ));
                devices.push("virtio-scsi-device".into());
                devices.push(format!("scsi-cd,drive=cdrom{i}"));
            }
            Some(iface) => drives.push(format!(
                "file={p},if={iface},index={i},id=cdrom{i},media=cdrom"
            )),
        }
    }
    (devices, drives)
}

/// Apply `qemuargs` (already rendered) over the defaults, as Packer does.
pub fn apply_overrides(defaults: ArgMap, user: &[Vec<String>], net_device: &str) -> ArgMap {
    let mut out = ArgMap::default();
    let mut user_map = ArgMap::default();
    for row in user {
        let Some(key) = row.first() else { continue };
        let val = row[1..].concat();
        match user_map.0.iter_mut().find(|(k, _)| k == key) {
            Some(e) => {
                if !val.is_empty() {
                    e.1.push(val)
                }
            }
            None => user_map
                .0
                .push((key.clone(), if val.is_empty() { vec![] } else { vec![val] })),
        }
    }
    for (k, v) in defaults.0 {
        match user_map.get(&k) {
            Some(u) => out.set(&k, u.to_vec()),
            None => out.set(&k, v),
        }
    }
    for (k, v) in &user_map.0 {
        if out.get(k).is_none() {
            out.set(k, v.clone());
        }
    }
    if let Some(devs) = out.get("-device") {
        if !devs.concat().contains(net_device) {
            let mut d = devs.to_vec();
            d.push(format!("{net_device},netdev=user.0"));
            out.set("-device", d);
        }
    }
    out
}

/// `qemuargs` as written (rows of strings), for rendering at run time.
pub fn raw_qemuargs(node: &Node) -> Result<Vec<Vec<String>>, String> {
    let rows = match &node.value {
        Value::Array(rows) => rows,
        Value::Null => return Ok(vec![]),
        _ => return Err("qemuargs must be a list of lists of strings".into()),
    };
    let mut out = Vec::new();
    for r in rows {
        let Value::Array(items) = &r.value else {
            return Err("qemuargs must be a list of lists of strings".into());
        };
        let mut row = Vec::new();
        for i in items {
            match &i.value {
                Value::String(s) => {
                    kiln_template::interp::check_syntax(s)
                        .map_err(|e| format!("qemuargs: {e} in `{s}`"))?;
                    row.push(s.clone())
                }
                Value::Number(n) => row.push(n.clone()),
                Value::Bool(b) => row.push(b.to_string()),
                _ => return Err("qemuargs must be a list of lists of strings".into()),
            }
        }
        out.push(row);
    }
    Ok(out)
}

/// Render `qemuargs` with Packer's context values.
pub fn render_qemuargs(c: &Config, rt: &Runtime) -> Result<Vec<Vec<String>>, String> {
    let ctx = c
        .interp
        .with("HTTPIP", rt.http_ip.clone())
        .with("HTTPPort", rt.http_port.to_string())
        .with(
            "HTTPDir",
            c.http
                .directory
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        )
        .with("OutputDir", c.output_directory.display().to_string())
        .with("Name", c.vm_name.clone())
        .with("SSHHostPort", rt.ssh_host_port.unwrap_or(0).to_string());
    c.qemuargs
        .iter()
        .map(|row| {
            row.iter()
                .map(|s| {
                    kiln_template::interp::render(s, &ctx)
                        .map_err(|e| format!("qemuargs: {e} in `{s}`"))
                })
                .collect()
        })
        .collect()
}

/// The whole command line (without the binary).
pub fn command_line(c: &Config, rt: &Runtime) -> Result<Vec<String>, String> {
    let user = render_qemuargs(c, rt)?;
    Ok(apply_overrides(default_args(c, rt), &user, &c.net_device).to_args())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> Runtime {
        Runtime {
            accel: AccelChoice::TcgFallback,
            disks: vec![PathBuf::from("out/packer-x")],
            cds: vec![],
            ssh_host_port: Some(3333),
            vnc_display: None,
            no_display: true,
            serial_log: Some(PathBuf::from("/w/serial.log")),
            qmp_socket: PathBuf::from("/w/qmp.sock"),
            qmp_events: None,
            qmp_keys: None,
            http_ip: "10.0.2.2".into(),
            http_port: 8123,
            floppy: None,
        }
    }

    fn cfg() -> Config {
        let mut c = Config::with_defaults("x", "debian");
        c.disk_image = true;
        c.headless = true;
        c
    }

    #[test]
    fn the_default_command_line() {
        let args = command_line(&cfg(), &rt()).unwrap().join(" ");
        assert_eq!(
            args,
            "-name packer-x -machine type=pc -accel tcg,thread=multi -cpu qemu64 -m 512M -boot c \
             -netdev user,id=user.0,hostfwd=tcp:127.0.0.1:3333-:22 \
             -device virtio-net,netdev=user.0 \
             -drive file=out/packer-x,if=virtio,cache=writeback,discard=ignore,format=qcow2 \
             -display none -qmp unix:/w/qmp.sock,server=on,wait=off -serial file:/w/serial.log"
        );
    }

    #[test]
    fn a_floppy_is_fda_and_a_qemuargs_row_replaces_it() {
        let mut r = rt();
        r.floppy = Some(PathBuf::from("/w/floppy.img"));
        let args = command_line(&cfg(), &r).unwrap().join(" ");
        assert!(args.contains(" -fda /w/floppy.img -device "), "{args}");
        let mut c = cfg();
        c.qemuargs = vec![vec!["-fda".into(), "/x.img".into()]];
        let args = command_line(&c, &r).unwrap().join(" ");
        assert!(
            args.contains(" -fda /x.img ") && !args.contains("floppy.img"),
            "{args}"
        );
    }

    #[test]
    fn an_events_socket_is_a_second_qmp_monitor() {
        let mut r = rt();
        r.qmp_events = Some(PathBuf::from("/w/events.sock"));
        let args = command_line(&cfg(), &r).unwrap().join(" ");
        assert!(
            args.contains(
                "-qmp unix:/w/qmp.sock,server=on,wait=off -qmp unix:/w/events.sock,server=on,wait=off"
            ),
            "{args}"
        );
    }

    #[test]
    fn commas_in_paths_are_doubled() {
        let mut r = rt();
        r.disks = vec![PathBuf::from("out,a/disk")];
        r.cds = vec![PathBuf::from("/w/c,d.iso")];
        r.serial_log = Some(PathBuf::from("/w,x/serial.log"));
        r.qmp_socket = PathBuf::from("/w,x/qmp.sock");
        let args = command_line(&cfg(), &r).unwrap().join(" ");
        assert!(
            args.contains("-drive file=out,,a/disk,if=virtio,"),
            "{args}"
        );
        assert!(
            args.contains("-drive file=/w/c,,d.iso,index=0,media=cdrom"),
            "{args}"
        );
        assert!(args.contains("-serial file:/w,,x/serial.log"), "{args}");
        assert!(
            args.contains("-qmp unix:/w,,x/qmp.sock,server=on"),
            "{args}"
        );
    }

    #[test]
    fn accelerators_machines_and_cpus() {
        let table: &[(AccelChoice, u32, &[&str], &[&str])] = &[
            (
                AccelChoice::Machine("kvm".into()),
                1,
                &["-machine type=pc,accel=kvm"],
                &["-cpu", "-accel", "-smp"],
            ),
            (
                AccelChoice::Machine("tcg".into()),
                2,
                &["-machine type=pc,accel=tcg", "-smp cpus=2,sockets=2"],
                &["-cpu", "-accel"],
            ),
            (AccelChoice::NoAccel, 1, &["-machine type=pc "], &["accel"]),
            (
                AccelChoice::TcgFallback,
                4,
                &[
                    "-accel tcg,thread=multi",
                    "-cpu qemu64",
                    "-smp cpus=4,sockets=4",
                ],
                &["accel=tcg"],
            ),
        ];
        for (accel, cpus, has, hasnt) in table {
            let mut c = cfg();
            c.cpus = *cpus;
            let mut r = rt();
            r.accel = accel.clone();
            let line = command_line(&c, &r).unwrap().join(" ");
            for h in *has {
                assert!(line.contains(h), "{accel:?}: {h} in {line}");
            }
            for h in *hasnt {
                assert!(!line.contains(h), "{accel:?}: no {h} in {line}");
            }
        }
    }

    #[test]
    fn the_tcg_cpu_is_qemu64_unless_qemuargs_name_one() {
        let line = command_line(&cfg(), &rt()).unwrap();
        assert_eq!(cpu_model(&line), Some("qemu64"));
        assert_eq!(line.iter().filter(|a| *a == "-cpu").count(), 1);
        let mut c = cfg();
        c.qemuargs = vec![vec!["-cpu".into(), "Nehalem,".into(), "+avx".into()]];
        let line = command_line(&c, &rt()).unwrap();
        assert_eq!(cpu_model(&line), Some("Nehalem,+avx"));
        assert_eq!(line.iter().filter(|a| *a == "-cpu").count(), 1, "{line:?}");
        // With KVM (or an explicit accelerator) kiln passes no -cpu: QEMU's
        // own default, as Packer.
        let mut r = rt();
        r.accel = AccelChoice::Machine("kvm".into());
        assert_eq!(cpu_model(&command_line(&cfg(), &r).unwrap()), None);
        assert_eq!(
            cpu_model(&command_line(&c, &r).unwrap()),
            Some("Nehalem,+avx")
        );
    }

    #[test]
    fn drives_and_cdroms_by_interface() {
        let mut c = cfg();
        let mut r = rt();
        r.disks.push(PathBuf::from("out/packer-x-1"));
        r.cds = vec![PathBuf::from("/w/seed.iso")];
        let (dev, drv) = device_and_drive_args(&c, &r);
        assert_eq!(dev, ["virtio-net,netdev=user.0"]);
        assert_eq!(drv.len(), 3);
        assert_eq!(drv[2], "file=/w/seed.iso,index=0,media=cdrom");

        c.disk_interface = "virtio-scsi".into();
        c.disk_detect_zeroes = "unmap".into();
        c.cdrom_interface = Some("virtio-scsi".into());
        let (dev, drv) = device_and_drive_args(&c, &r);
        assert_eq!(
            dev,
            [
                "virtio-scsi-pci,id=scsi0",
                "scsi-hd,bus=scsi0.0,drive=drive0",
                "scsi-hd,bus=scsi0.0,drive=drive1",
                "virtio-net,netdev=user.0",
                "virtio-scsi-device",
                "scsi-cd,drive=cdrom0"
            ]
        );
        assert_eq!(
            drv[0],
            "if=none,file=out/packer-x,id=drive0,cache=writeback,discard=ignore,format=qcow2,detect-zeroes=unmap"
        );
        assert_eq!(
            drv[2],
            "file=/w/seed.iso,if=none,index=0,id=cdrom0,media=cdrom"
        );

        c.cdrom_interface = Some("ide".into());
        let (_, drv) = device_and_drive_args(&c, &r);
        assert_eq!(
            drv[2],
            "file=/w/seed.iso,if=ide,index=0,id=cdrom0,media=cdrom"
        );
    }

    #[test]
    fn qemuargs_replace_defaults_by_key_and_keep_the_network_device() {
        let mut c = cfg();
        c.qemuargs = vec![
            vec!["-m".into(), "2048M".into()],
            vec!["-device".into(), "virtio-rng-pci".into()],
            vec![
                "-device".into(),
                "e1000,".into(),
                "mac=52:54:00:12:34:56".into(),
            ],
            vec!["-nographic".into()],
            vec![
                "-smbios".into(),
                "type=1,serial=ds=nocloud-net;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/".into(),
            ],
            vec![
                "-fwcfg".into(),
                "name=opt/port,string={{ .SSHHostPort }}".into(),
            ],
        ];
        let a = command_line(&c, &rt()).unwrap();
        let line = a.join(" ");
        assert!(
            line.contains("-m 2048M") && !line.contains("512M"),
            "{line}"
        );
        assert!(line.contains("-device virtio-rng-pci -device e1000,mac=52:54:00:12:34:56 -device virtio-net,netdev=user.0"), "{line}");
        assert!(line.ends_with("-nographic -smbios type=1,serial=ds=nocloud-net;s=http://10.0.2.2:8123/ -fwcfg name=opt/port,string=3333"), "{line}");
        assert_eq!(a.iter().filter(|x| *x == "-m").count(), 1);

        // A -device list that already has the network device is kept as is.
        c.qemuargs = vec![vec![
            "-device".into(),
            "virtio-net,netdev=user.0,mac=52:54:00:00:00:01".into(),
        ]];
        let line = command_line(&c, &rt()).unwrap().join(" ");
        assert_eq!(line.matches("virtio-net").count(), 1, "{line}");
    }

    #[test]
    fn displays_vnc_netdev_and_qmp() {
        let mut c = cfg();
        let mut r = rt();
        r.no_display = false;
        c.headless = false;
        assert!(command_line(&c, &r)
            .unwrap()
            .join(" ")
            .contains("-display gtk"));
        c.use_default_display = true;
        assert!(!command_line(&c, &r).unwrap().join(" ").contains("-display"));
        c.display = Some("sdl".into());
        assert!(command_line(&c, &r)
            .unwrap()
            .join(" ")
            .contains("-display sdl"));
        r.vnc_display = Some(7);
        c.vnc_use_password = true;
        assert!(command_line(&c, &r)
            .unwrap()
            .join(" ")
            .contains("-vnc 127.0.0.1:7,password"));
        r.ssh_host_port = None;
        assert!(command_line(&c, &r)
            .unwrap()
            .join(" ")
            .contains("-netdev user,id=user.0 "));
        c.qmp_enable = true;
        c.qmp_socket_path = Some(PathBuf::from("out/x.monitor"));
        let a = command_line(&c, &r).unwrap();
        assert_eq!(a.iter().filter(|x| *x == "-qmp").count(), 2);
        c.disk_image = false;
        assert!(command_line(&c, &r)
            .unwrap()
            .join(" ")
            .contains("-boot once=d"));
    }

    #[test]
    fn bad_qemuargs_templates_are_errors() {
        let mut c = cfg();
        c.qemuargs = vec![vec!["-m".into(), "{{ .Nope".into()]];
        assert!(command_line(&c, &rt()).is_err());
    }
}
