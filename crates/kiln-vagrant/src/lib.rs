//! The `vagrant` post-processor, Packer 1.6.6's behaviour for the boxes
//! kiln can make, and a VirtualBox box that Packer cannot make from a qemu
//! build.
//!
//! - **libvirt** (from the `qemu` builder's artifact, or any artifact with
//!   `provider_override: "libvirt"`): `box.img` (the disk image as it is),
//!   `metadata.json` (`{"format":..,"provider":"libvirt","virtual_size":GB}`)
//!   and a Vagrantfile setting `libvirt.driver` to the accelerator the
//!   build really used (the artifact's `domainType`: `kvm` gives `kvm`,
//!   `tcg`/`none`/`hvf` give `qemu`). `virtual_size` is the image's real
//!   guest size, rounded up to GiB (Packer reads the `disk_size` setting,
//!   which differs from the image when it was not resized).
//! - **virtualbox** (`provider_override: "virtualbox"`): from a qcow2 or raw
//!   image, `box.ovf` (see [`ovf`]), `box-disk001.vmdk` (stream-optimized,
//!   made from the image while the box is written), `metadata.json`
//!   (`{"provider":"virtualbox"}`) and a Vagrantfile whose
//!   `config.vm.base_mac` is the OVF's first adapter's MAC. From an
//!   artifact holding an `.ovf` and its disks (a VirtualBox build), Packer's
//!   way: the files as they are, the OVF renamed `box.ovf`.
//!
//! Keys: `output` (default `packer_{{ .BuildName }}_{{.Provider}}.box`,
//! rendered at run time with `.BuildName`, `.Provider`, `.ArtifactId` and
//! the builder's generated data), `compression_level` (gzip 1-9, -1 = 6,
//! 0 = a plain tar; default 6; Go's levels, mapped to zlib-rs's by
//! [`zlib_level`]), `include` (files added at the box's root),
//! `vagrantfile_template` (a file rendered with the same values and added
//! after the provider's lines), `vagrantfile_template_generated`,
//! `provider_override`, `override` (per-provider values of these keys).
//! kiln's own, for the VirtualBox machine: `virtualbox_memory` (MB, 1024),
//! `virtualbox_cpus` (1), `virtualbox_os_type` (`Debian_64`).
//! `keep_input_artifact` is the engine's: the input is removed unless it is
//! true.
//!
//! Unlike Packer, nothing is copied into a box directory first: the box is
//! one tar stream written while it is compressed (gzip on every core, one
//! gzip member as Packer's pgzip writes), reading the disk image where the
//! build left it. The only extra disk used is the box itself.
use kiln_core::communicator::TransferProgress;
use kiln_core::{
    async_trait, Artifact, BuildError, FileArtifact, PostProcessCtx, PostProcessed, PostProcessor,
    PrepareOpts, Registry,
};
use kiln_template::interp::render;
use kiln_template::Decoder;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod boxfile;
pub mod gz;
pub mod ovf;

use boxfile::{BoxJob, Disk, Entry, Source};

pub const BUILDER_ID: &str = "mitchellh.post-processor.vagrant";
const DEFAULT_OUTPUT: &str = "packer_{{ .BuildName }}_{{.Provider}}.box";
const DEFAULT_LEVEL: i64 = 6;
const ARTIFICE_ID: &str = "packer.post-processor.artifice";

/// Every provider Packer 1.6.6 knows (for `provider_override`).
pub const PACKER_PROVIDERS: &[&str] = &[
    "aws",
    "azure",
    "digitalocean",
    "docker",
    "google",
    "hyperv",
    "libvirt",
    "lxc",
    "parallels",
    "scaleway",
    "virtualbox",
    "vmware",
];

/// Register the `vagrant` post-processor.
pub fn register(reg: &mut Registry) {
    reg.post_processor("vagrant", factory);
}

#[derive(Debug, thiserror::Error)]
pub enum VagrantError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Qcow2(#[from] kiln_diskimage::qcow2::Qcow2Error),
    #[error("{0} changed while the box was written")]
    Changed(PathBuf),
    #[error("cancelled")]
    Cancelled,
}

impl VagrantError {
    pub fn io(path: &Path) -> impl Fn(std::io::Error) -> VagrantError + '_ {
        move |source| VagrantError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The keys that `override` may set per provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Uninterpolated; rendered at run time.
    pub output: String,
    /// deflate level (zlib-rs's), 0 (plain tar) to 9 (see [`zlib_level`]).
    pub level: u32,
    pub include: Vec<PathBuf>,
    pub vagrantfile_template: Option<PathBuf>,
    pub virtualbox_memory: u64,
    pub virtualbox_cpus: u32,
    pub virtualbox_os_type: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub settings: Settings,
    pub provider_override: Option<String>,
    /// provider -> its settings.
    pub overrides: BTreeMap<String, Settings>,
}

/// The deflate level (zlib-rs's, see [`gz`]) for Packer's
/// `compression_level` (Go's levels, as Packer's pgzip/klauspost deflate
/// reads them; 0 is no compression).
///
/// The same number is not the same work: klauspost's level 6 (Packer's
/// default) compresses like zlib's 3 or 4. So each Go level maps to the
/// fastest zlib-rs level whose box is no bigger than Packer's, measured on
/// testlab/vagrant's base image (benches/box.rs, `KILN_BENCH_LEVEL`;
/// bytes, of a 494,010,368-byte qcow2):
///
/// ```text
/// Go level  Packer 1.6.6   zlib-rs level (box)
///    1      193,579,612    2 (182,874,614)   zlib-rs 1 is 217,247,714
///    2      189,488,419    2
///    3      185,534,797    2
///    4      180,115,106    3 (177,115,237)
///    5      178,324,662    3
///    6      176,080,936    4 (175,077,400)   zlib-rs 3 is 177,115,237
///    7      173,287,696    5 (172,752,336)
///    8      172,232,437    7 (171,132,786)   zlib-rs 6 is 172,458,031
///    9      171,850,570    7
/// ```
pub fn zlib_level(go_level: u32) -> u32 {
    match go_level {
        0 => 0,
        1..=3 => 2,
        4 | 5 => 3,
        6 => 4,
        7 => 5,
        _ => 7,
    }
}

/// gzip level from Packer's `compression_level` (Go's flate levels).
fn level(d: &mut Decoder<'_>, v: i64) -> u32 {
    match v {
        -1 => zlib_level(6),
        -2 => 1, // Go's Huffman-only: the fastest level here
        0..=9 => zlib_level(v as u32),
        _ => {
            d.error(
                "compression_level",
                "Invalid compression level. Expected an integer from -1 to 9.",
            );
            6
        }
    }
}

fn decode_settings(d: &mut Decoder<'_>, base: Option<&Settings>, check_files: bool) -> Settings {
    d.raw_keys(&["output"]);
    let output = d
        .raw_string("output")
        .filter(|o| !o.is_empty())
        .or_else(|| base.map(|b| b.output.clone()))
        .unwrap_or_else(|| DEFAULT_OUTPUT.to_string());
    let lv = match d.int("compression_level") {
        Some(v) => level(d, v),
        None => base.map_or(zlib_level(DEFAULT_LEVEL as u32), |b| b.level),
    };
    let include = d
        .string_list("include")
        .map(|v| v.into_iter().map(PathBuf::from).collect())
        .or_else(|| base.map(|b| b.include.clone()))
        .unwrap_or_default();
    let generated = d.bool("vagrantfile_template_generated").unwrap_or(false);
    let vagrantfile_template = d
        .string("vagrantfile_template")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    if let Some(t) = &vagrantfile_template {
        if check_files && !generated && std::fs::metadata(t).is_err() {
            d.error(
                "vagrantfile_template",
                format!("vagrantfile_template '{}' does not exist", t.display()),
            );
        }
    }
    let vagrantfile_template =
        vagrantfile_template.or_else(|| base.and_then(|b| b.vagrantfile_template.clone()));
    let virtualbox_memory = d
        .uint("virtualbox_memory")
        .or(base.map(|b| b.virtualbox_memory))
        .unwrap_or(1024);
    let virtualbox_cpus = d
        .uint("virtualbox_cpus")
        .map(|c| c.clamp(1, 64) as u32)
        .or(base.map(|b| b.virtualbox_cpus))
        .unwrap_or(1);
    let virtualbox_os_type = d
        .string("virtualbox_os_type")
        .filter(|s| !s.is_empty())
        .or_else(|| base.map(|b| b.virtualbox_os_type.clone()))
        .unwrap_or_else(|| "Debian_64".into());
    Settings {
        output,
        level: lv,
        include,
        vagrantfile_template,
        virtualbox_memory,
        virtualbox_cpus,
        virtualbox_os_type,
    }
}

pub fn decode(d: &mut Decoder<'_>) -> Config {
    let settings = decode_settings(d, None, true);
    let provider_override = d.string("provider_override").filter(|s| !s.is_empty());
    if let Some(p) = &provider_override {
        if !PACKER_PROVIDERS.contains(&p.as_str()) {
            d.error(
                "provider_override",
                format!(
                    "The given provider_override {p} is not valid. Please choose from one of {}",
                    PACKER_PROVIDERS.join(", ")
                ),
            );
        }
    }
    let mut overrides = BTreeMap::new();
    let names: Vec<String> = d
        .node("override")
        .and_then(|n| n.as_object())
        .map(|o| o.iter().map(|(k, _)| k.name.clone()).collect())
        .unwrap_or_default();
    d.nested("override", |o| {
        for name in &names {
            if let Some(s) = o.nested(name, |p| decode_settings(p, Some(&settings), true)) {
                overrides.insert(name.clone(), s);
            }
        }
    });
    d.bool("vagrantfile_template_generated");
    Config {
        settings,
        provider_override,
        overrides,
    }
}

pub fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn PostProcessor>> {
    Some(Box::new(Vagrant { config: decode(d) }))
}

pub struct Vagrant {
    pub config: Config,
}

/// The provider Packer 1.6.6 picks for an artifact's builder id (plus
/// kiln's debootstrap images, which are libvirt disks too).
pub fn provider_for(builder_id: &str) -> Option<&'static str> {
    Some(match builder_id {
        "mitchellh.amazonebs" | "mitchellh.amazon.instance" => "aws",
        "mitchellh.virtualbox" => "virtualbox",
        "mitchellh.vmware" | "mitchellh.vmware-esx" => "vmware",
        "pearkes.digitalocean" => "digitalocean",
        "packer.googlecompute" => "google",
        "hashicorp.scaleway" => "scaleway",
        "packer.parallels" => "parallels",
        "MSOpenTech.hyperv" => "hyperv",
        "transcend.qemu" | "kiln.debootstrap" => "libvirt",
        "ustream.lxc" => "lxc",
        "Azure.ResourceManagement.VMImage" => "azure",
        "packer.post-processor.docker-import"
        | "packer.post-processor.docker-tag"
        | "packer.post-processor.docker-push" => "docker",
        _ => return None,
    })
}

/// libvirt's driver for the accelerator a qemu build used.
pub fn libvirt_driver(domain_type: &str) -> Option<&'static str> {
    match domain_type {
        "none" | "tcg" | "hvf" => Some("qemu"),
        "kvm" => Some("kvm"),
        _ => None,
    }
}

/// Whole GiB, rounded up (metadata.json's `virtual_size`).
pub fn size_in_gb(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 30)
}

/// The box's Vagrantfile: the provider's lines, then the user's.
pub fn vagrantfile(provider: &str, custom: &str) -> String {
    format!(
        "\n# The contents below were provided by the Packer Vagrant post-processor\n{provider}\n\n# The contents below (if any) are custom contents provided by the\n# Packer template during image build.\n{custom}\n"
    )
}

pub fn libvirt_vagrantfile(driver: &str) -> String {
    format!(
        "\nVagrant.configure(\"2\") do |config|\n  config.vm.provider :libvirt do |libvirt|\n    libvirt.driver = \"{driver}\"\n  end\nend\n"
    )
}

pub fn virtualbox_vagrantfile(mac: &str) -> String {
    format!("\nVagrant.configure(\"2\") do |config|\n  config.vm.base_mac = \"{mac}\"\nend\n")
}

/// metadata.json as Go's encoder writes a map: keys sorted, one line.
fn metadata(m: &BTreeMap<&str, serde_json::Value>) -> Vec<u8> {
    let mut v = serde_json::to_vec(m).expect("a map of strings and numbers");
    v.push(b'\n');
    v
}

fn err(m: impl Into<String>) -> BuildError {
    BuildError::msg(m.into())
}

/// The disk image of an artifact: the file named by its `diskName`, else
/// its only file (or its only qcow2 file).
fn find_disk(input: &dyn Artifact) -> Result<PathBuf, BuildError> {
    let files = input.files();
    if let Some(name) = input.state("diskName").filter(|n| !n.is_empty()) {
        return files
            .iter()
            .find(|f| f.file_name().is_some_and(|n| n.to_string_lossy() == name))
            .cloned()
            .ok_or_else(|| err(format!("the artifact has no disk image named {name}")));
    }
    if files.len() == 1 {
        return Ok(files[0].clone());
    }
    let qcow2: Vec<&PathBuf> = files
        .iter()
        .filter(|f| {
            kiln_diskimage::qcow2::sniff_file(f).ok() == Some(kiln_diskimage::qcow2::Format::Qcow2)
        })
        .collect();
    match qcow2.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(err(format!(
            "cannot tell which of the artifact's {} files is its disk image (it records no diskName)",
            files.len()
        ))),
    }
}

fn base_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// What a provider puts in the box (besides includes and the Vagrantfile).
struct Made {
    entries: Vec<Entry>,
    metadata: Vec<u8>,
    vagrantfile: String,
}

fn libvirt(ui: &dyn kiln_core::Ui, input: &dyn Artifact) -> Result<Made, BuildError> {
    let path = find_disk(input)?;
    let disk =
        Disk::open(&path).map_err(|e| BuildError::new(e).context("reading the disk image"))?;
    let format = input
        .state("diskType")
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| disk.format().to_string());
    let size = disk
        .virtual_size()
        .map_err(|e| BuildError::new(e).context("reading the disk image"))?;
    let driver = match input.state("domainType").filter(|t| !t.is_empty()) {
        Some(t) => {
            libvirt_driver(&t).ok_or_else(|| err(format!("Unknown libvirt domain type: {t}")))?
        }
        None => {
            ui.message("The artifact does not say which accelerator ran it: libvirt.driver = \"qemu\" (works everywhere; set \"kvm\" in your Vagrantfile for speed)");
            "qemu"
        }
    };
    ui.message(&format!("Copying from artifact: {}", path.display()));
    let mut m = BTreeMap::new();
    m.insert("provider", serde_json::json!("libvirt"));
    m.insert("format", serde_json::json!(format));
    m.insert("virtual_size", serde_json::json!(size_in_gb(size)));
    Ok(Made {
        entries: vec![Entry {
            name: "box.img".into(),
            source: Source::File(path),
        }],
        metadata: metadata(&m),
        vagrantfile: libvirt_vagrantfile(driver),
    })
}

fn virtualbox(
    ui: &dyn kiln_core::Ui,
    input: &dyn Artifact,
    s: &Settings,
    build_name: &str,
) -> Result<Made, BuildError> {
    let mut m = BTreeMap::new();
    m.insert("provider", serde_json::json!("virtualbox"));
    let files = input.files();
    let ovfs: Vec<&PathBuf> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "ovf"))
        .collect();
    if files
        .iter()
        .any(|f| f.extension().is_some_and(|e| e == "ova"))
    {
        return Err(err(
            "kiln's vagrant post-processor does not unpack OVA files: give it the OVF and its disks",
        ));
    }
    if ovfs.len() > 1 {
        return Err(err("More than one OVF file in VirtualBox artifact."));
    }
    if let [ovf_path] = ovfs.as_slice() {
        // Packer's way: the build's OVF and disks as they are.
        let text = std::fs::read_to_string(ovf_path)
            .map_err(|e| BuildError::new(e).context(format!("reading {}", ovf_path.display())))?;
        let mac = ovf::first_adapter_mac(&text)
            .ok_or_else(|| err("can't find base mac address in OVF"))?;
        let mut entries = Vec::new();
        for f in &files {
            ui.message(&format!("Copying from artifact: {}", f.display()));
            let name = if f == *ovf_path {
                "box.ovf".to_string()
            } else {
                base_name(f)
            };
            entries.push(Entry {
                name,
                source: Source::File(f.clone()),
            });
        }
        return Ok(Made {
            entries,
            metadata: metadata(&m),
            vagrantfile: virtualbox_vagrantfile(&mac),
        });
    }
    // kiln's way: OVF + stream-optimized VMDK from the disk image.
    let path = find_disk(input)?;
    let disk =
        Disk::open(&path).map_err(|e| BuildError::new(e).context("reading the disk image"))?;
    let capacity = disk
        .virtual_size()
        .map_err(|e| BuildError::new(e).context("reading the disk image"))?;
    ui.message(&format!(
        "Converting {} ({}) to a stream-optimized VMDK and an OVF for VirtualBox",
        path.display(),
        disk.format()
    ));
    let mac = ovf::random_mac();
    let machine = ovf::Machine {
        name: if build_name.is_empty() {
            "kiln".into()
        } else {
            build_name.to_string()
        },
        disk_file: "box-disk001.vmdk".into(),
        capacity,
        mac: mac.clone(),
        memory_mb: s.virtualbox_memory,
        cpus: s.virtualbox_cpus,
        os_type: s.virtualbox_os_type.clone(),
        disk_uuid: uuid::Uuid::new_v4().to_string(),
        machine_uuid: uuid::Uuid::new_v4().to_string(),
    };
    Ok(Made {
        entries: vec![
            Entry {
                name: "box.ovf".into(),
                source: Source::Bytes(ovf::render(&machine).into_bytes()),
            },
            Entry {
                name: "box-disk001.vmdk".into(),
                source: Source::Vmdk {
                    disk,
                    cid: rand::random::<u32>() | 1,
                    // The box is gzipped as a whole: the grains only need
                    // the fastest deflate.
                    level: 1,
                },
            },
        ],
        metadata: metadata(&m),
        vagrantfile: virtualbox_vagrantfile(&mac),
    })
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[async_trait]
impl PostProcessor for Vagrant {
    async fn post_process(
        &self,
        ctx: &PostProcessCtx<'_>,
        input: Arc<dyn Artifact>,
    ) -> Result<PostProcessed, BuildError> {
        let build = ctx.build;
        let ui = &build.ui;
        let c = &self.config;
        let name = match &c.provider_override {
            Some(p) => p.clone(),
            None => match provider_for(input.builder_id()) {
                Some(p) => p.to_string(),
                None if input.builder_id() == ARTIFICE_ID => {
                    return Err(err("Unknown provider type: When using an artifact created by the artifice post-processor, you need to set the provider_override option."));
                }
                None => {
                    return Err(err(format!(
                        "Unknown artifact type, can't build box: {}",
                        input.builder_id()
                    )))
                }
            },
        };
        if name != "libvirt" && name != "virtualbox" {
            return Err(err(format!(
                "kiln's vagrant post-processor makes libvirt and virtualbox boxes; the {name} provider is not supported"
            )));
        }
        let s = c.overrides.get(&name).unwrap_or(&c.settings);
        ui.say(&format!("Creating Vagrant box for '{name}' provider"));

        let mut interp = ctx.interp.clone();
        for (k, v) in build.generated() {
            interp.data.entry(k).or_insert(v);
        }
        for (k, v) in [
            ("ArtifactId", input.id()),
            ("BuildName", build.build_name.clone()),
            ("Provider", name.clone()),
        ] {
            interp.data.insert(k.to_string(), v);
        }
        let target = PathBuf::from(
            render(&s.output, &interp).map_err(|e| err(format!("`output`: {}", e.message)))?,
        );

        // Entries by name, in the order Packer's directory walk gives them.
        let mut entries: BTreeMap<String, Source> = BTreeMap::new();
        for src in &s.include {
            ui.message(&format!("Copying from include: {}", src.display()));
            let meta = std::fs::metadata(src).map_err(|e| {
                BuildError::new(e).context(format!("Error copying include file: {}", src.display()))
            })?;
            if !meta.is_file() {
                return Err(err(format!(
                    "Error copying include file: {}: not a regular file",
                    src.display()
                )));
            }
            entries.insert(base_name(src), Source::File(src.clone()));
        }
        let made = match name.as_str() {
            "libvirt" => libvirt(ui.as_ref(), input.as_ref())?,
            _ => virtualbox(ui.as_ref(), input.as_ref(), s, &build.build_name)?,
        };
        for e in made.entries {
            entries.insert(e.name, e.source);
        }
        // An included metadata.json wins, as in Packer.
        entries
            .entry("metadata.json".into())
            .or_insert(Source::Bytes(made.metadata));
        let custom = match &s.vagrantfile_template {
            Some(t) => {
                ui.message(&format!("Using custom Vagrantfile: {}", t.display()));
                let text = std::fs::read_to_string(t)
                    .map_err(|e| BuildError::new(e).context(format!("reading {}", t.display())))?;
                render(&text, &interp).map_err(|e| {
                    err(format!(
                        "vagrantfile_template {}: {}",
                        t.display(),
                        e.message
                    ))
                })?
            }
            None => String::new(),
        };
        entries.insert(
            "Vagrantfile".into(),
            Source::Bytes(vagrantfile(&made.vagrantfile, &custom).into_bytes()),
        );

        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| BuildError::new(e).context(format!("creating {}", dir.display())))?;
        }
        let job = BoxJob {
            entries: entries
                .into_iter()
                .map(|(name, source)| Entry { name, source })
                .collect(),
            level: s.level,
            threads: threads(),
            cancel: build.cancel.clone(),
            progress: Arc::from(ui.progress(&format!("Compressing into {}", base_name(&target)))),
        };
        for e in &job.entries {
            ui.message(&format!("Compressing: {}", e.name));
        }
        let progress: Arc<dyn TransferProgress> = job.progress.clone();
        progress.start(Some(job.total()));
        let t = target.clone();
        let r = tokio::task::spawn_blocking(move || job.write(&t)).await;
        progress.finish();
        let r = r.map_err(|e| err(format!("box task failed: {e}")))?;
        if let Err(e) = r {
            // No half-written box is left behind.
            let _ = std::fs::remove_file(&target);
            return Err(match e {
                VagrantError::Cancelled => BuildError::Cancelled,
                e => BuildError::new(e).context(format!("writing {}", target.display())),
            });
        }
        let mut a = FileArtifact::new(BUILDER_ID, vec![target.clone()]);
        a.id = name.clone();
        a.description = Some(format!("'{name}' provider box: {}", target.display()));
        Ok(PostProcessed {
            artifact: Some(Arc::new(a)),
            // Packer: the provider does not keep its input, and that
            // default wins over nothing but the user's keep_input_artifact.
            keep: false,
            force_keep: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_is_the_accelerator_used() {
        assert_eq!(libvirt_driver("kvm"), Some("kvm"));
        for t in ["tcg", "none", "hvf"] {
            assert_eq!(libvirt_driver(t), Some("qemu"), "{t}");
        }
        assert_eq!(libvirt_driver("xen"), None);
    }

    #[test]
    fn sizes_round_up_to_gib() {
        assert_eq!(size_in_gb(0), 0);
        assert_eq!(size_in_gb(1), 1);
        assert_eq!(size_in_gb(2 << 30), 2);
        assert_eq!(size_in_gb((2 << 30) + 512), 3);
    }

    #[test]
    fn providers_by_builder() {
        assert_eq!(provider_for("transcend.qemu"), Some("libvirt"));
        assert_eq!(provider_for("kiln.debootstrap"), Some("libvirt"));
        assert_eq!(provider_for("mitchellh.virtualbox"), Some("virtualbox"));
        assert_eq!(provider_for("packer.post-processor.artifice"), None);
    }

    #[test]
    fn vagrantfile_layout() {
        let v = vagrantfile(&libvirt_vagrantfile("qemu"), "");
        assert!(v.starts_with("\n# The contents below were provided by the Packer Vagrant post-processor\n\nVagrant.configure(\"2\") do |config|\n"));
        assert!(v.contains("    libvirt.driver = \"qemu\"\n  end\nend\n"));
        assert!(v.ends_with("during image build.\n\n"));
        assert!(virtualbox_vagrantfile("080027000001")
            .contains("  config.vm.base_mac = \"080027000001\"\n"));
    }

    #[test]
    fn metadata_is_go_json() {
        let mut m = BTreeMap::new();
        m.insert("virtual_size", serde_json::json!(2));
        m.insert("provider", serde_json::json!("libvirt"));
        assert_eq!(
            metadata(&m),
            b"{\"provider\":\"libvirt\",\"virtual_size\":2}\n"
        );
    }
}
