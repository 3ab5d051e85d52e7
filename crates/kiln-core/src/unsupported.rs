//! Templates kiln cannot build say so once.
//!
//! - A Windows guest (a builder with `communicator: winrm`, or the
//!   `powershell`, `windows-shell`, `windows-restart` provisioners) gets
//!   one message for the whole template, naming every place that makes it
//!   one, instead of an error per WinRM key and per provisioner: kiln
//!   reaches machines over SSH and runs POSIX shells, and does not support
//!   Windows guests yet. Such a builder is not decoded further.
//! - A builder type kiln does not have gets one message per type, naming
//!   the builders kiln has; one that Packer 1.6.6 has is said to be one
//!   kiln does not implement yet, anything else is an unknown type with the
//!   nearest name suggested, and the other places that use it are listed in
//!   the same message. Provisioner and post-processor types likewise.
//!
//! As in Packer, builds left out with `-only`/`-except` are not prepared
//! at all, so what they use is never looked at: a template with Windows
//! and Linux builds validates and builds its Linux builds when only those
//! are selected (provisioners limited to the Windows builds with
//! `only`/`except` are skipped with them).
use kiln_template::diag::suggest;
use kiln_template::{Diagnostic, Pos, Source};
use std::sync::Arc;

/// Packer 1.6.6's builders (`command/plugin.go`).
pub const PACKER_BUILDERS: &[&str] = &[
    "alicloud-ecs",
    "amazon-chroot",
    "amazon-ebs",
    "amazon-ebssurrogate",
    "amazon-ebsvolume",
    "amazon-instance",
    "azure-arm",
    "azure-chroot",
    "azure-dtl",
    "cloudstack",
    "digitalocean",
    "docker",
    "file",
    "googlecompute",
    "hcloud",
    "hyperone",
    "hyperv-iso",
    "hyperv-vmcx",
    "jdcloud",
    "linode",
    "lxc",
    "lxd",
    "ncloud",
    "null",
    "oneandone",
    "openstack",
    "oracle-classic",
    "oracle-oci",
    "osc-bsu",
    "osc-bsusurrogate",
    "osc-bsuvolume",
    "osc-chroot",
    "parallels-iso",
    "parallels-pvm",
    "profitbricks",
    "proxmox",
    "proxmox-clone",
    "proxmox-iso",
    "qemu",
    "scaleway",
    "tencentcloud-cvm",
    "triton",
    "ucloud-uhost",
    "vagrant",
    "virtualbox-iso",
    "virtualbox-ovf",
    "virtualbox-vm",
    "vmware-iso",
    "vmware-vmx",
    "vsphere-clone",
    "vsphere-iso",
    "yandex",
];

/// Packer 1.6.6's provisioners.
pub const PACKER_PROVISIONERS: &[&str] = &[
    "ansible",
    "ansible-local",
    "azure-dtlartifact",
    "breakpoint",
    "chef-client",
    "chef-solo",
    "converge",
    "file",
    "inspec",
    "powershell",
    "puppet-masterless",
    "puppet-server",
    "salt-masterless",
    "shell",
    "shell-local",
    "sleep",
    "windows-restart",
    "windows-shell",
];

/// Packer 1.6.6's post-processors.
pub const PACKER_POST_PROCESSORS: &[&str] = &[
    "alicloud-import",
    "amazon-import",
    "artifice",
    "checksum",
    "compress",
    "digitalocean-import",
    "docker-import",
    "docker-push",
    "docker-save",
    "docker-tag",
    "exoscale-import",
    "googlecompute-export",
    "googlecompute-import",
    "manifest",
    "shell-local",
    "ucloud-import",
    "vagrant",
    "vagrant-cloud",
    "vsphere",
    "vsphere-template",
    "yandex-export",
    "yandex-import",
];

/// Provisioners that only make sense on a Windows guest.
pub const WINDOWS_PROVISIONERS: &[&str] = &["powershell", "windows-shell", "windows-restart"];

/// What makes a template one for a Windows guest, and where.
#[derive(Debug, Clone)]
pub struct WindowsMark {
    pub source: Arc<Source>,
    pub pos: Pos,
    pub what: String,
}

/// The one message for a template with Windows guests.
pub fn windows_message(marks: &[WindowsMark]) -> Option<Diagnostic> {
    let first = marks.first()?;
    let mut msg = format!(
        "kiln does not support Windows guests yet: {} makes this a template for one",
        first.what
    );
    let rest: Vec<String> = marks[1..]
        .iter()
        .map(|m| format!("{} at {}:{}", m.what, m.pos.line, m.pos.col))
        .collect();
    if !rest.is_empty() {
        msg.push_str(&format!(" (so do {})", rest.join(", ")));
    }
    Some(Diagnostic::at(&first.source, first.pos, msg).with_help(
        "kiln reaches machines over SSH and runs POSIX shells; WinRM, PowerShell and the \
             Windows provisioners are not implemented. A template's other builds can be \
             built on their own: select them with -only or -except",
    ))
}

/// The message for a component type kiln does not have: `places` are
/// where it is used (the first gets the message, the others are named).
pub fn missing_type(
    kind: &str,
    type_name: &str,
    places: &[(Arc<Source>, Pos)],
    packer_has: &[&str],
    kiln_has: &[&str],
) -> Option<Diagnostic> {
    let (source, pos) = places.first()?;
    let also: Vec<String> = places[1..]
        .iter()
        .map(|(_, p)| format!("{}:{}", p.line, p.col))
        .collect();
    let also = if also.is_empty() {
        String::new()
    } else {
        format!(" (also used at {})", also.join(", "))
    };
    let d = if packer_has.contains(&type_name) {
        Diagnostic::at(
            source,
            *pos,
            format!("kiln has no `{type_name}` {kind}: it is one of Packer's that kiln does not implement yet{also}"),
        )
        .with_help(format!("kiln's {kind}s are: {}", kiln_has.join(", ")))
    } else {
        let d = Diagnostic::at(
            source,
            *pos,
            format!("unknown {kind} type `{type_name}`{also}"),
        );
        match suggest(type_name, kiln_has.iter().copied()) {
            Some(s) => d.with_help(format!("did you mean `{s}`?")),
            None => d.with_help(format!("kiln's {kind}s are: {}", kiln_has.join(", "))),
        }
    };
    Some(d)
}
