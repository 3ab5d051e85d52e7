//! The `openstack` builder's configuration (Packer 1.6.6's keys).
use crate::client::AccessKeys;
use kiln_ssh::SshConfig;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the source image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceImage {
    Id(String),
    Name(String),
    Filter(ImageFilter),
}

/// `source_image_filter`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFilter {
    pub name: Option<String>,
    pub owner: Option<String>,
    pub tags: Vec<String>,
    pub visibility: Option<String>,
    pub properties: BTreeMap<String, String>,
    pub most_recent: bool,
}

impl ImageFilter {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.owner.is_none()
            && self.tags.is_empty()
            && self.visibility.is_none()
            && self.properties.is_empty()
    }
    /// Glance's query for this filter (properties are matched by Glance
    /// too: it accepts any property as a filter).
    pub fn query(&self) -> Vec<(String, String)> {
        let mut q = Vec::new();
        if let Some(n) = &self.name {
            q.push(("name".into(), n.clone()));
        }
        if let Some(o) = &self.owner {
            q.push(("owner".into(), o.clone()));
        }
        for t in &self.tags {
            q.push(("tag".into(), t.clone()));
        }
        if let Some(v) = &self.visibility {
            q.push(("visibility".into(), v.clone()));
        }
        for (k, v) in &self.properties {
            q.push((k.clone(), v.clone()));
        }
        q.push(("status".into(), "active".into()));
        if self.most_recent {
            q.push(("sort".into(), "created_at:desc".into()));
        }
        q
    }
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub access: AccessKeys,
    pub flavor: String,
    pub source: Option<SourceImage>,
    pub image_name: String,
    pub instance_name: String,
    pub networks: Vec<String>,
    pub ports: Vec<String>,
    pub network_discovery_cidrs: Vec<String>,
    pub security_groups: Vec<String>,
    pub availability_zone: Option<String>,
    pub user_data: Option<String>,
    pub user_data_file: Option<PathBuf>,
    pub config_drive: bool,
    pub instance_metadata: BTreeMap<String, String>,
    pub floating_ip: Option<String>,
    pub floating_ip_network: Option<String>,
    pub instance_floating_ip_net: Option<String>,
    pub reuse_ips: bool,
    pub ssh_interface: Option<String>,
    pub ssh_ip_version: Option<String>,
    pub use_blockstorage_volume: bool,
    pub volume_name: Option<String>,
    pub volume_type: Option<String>,
    pub volume_size: Option<u64>,
    pub volume_availability_zone: Option<String>,
    pub image_visibility: Option<String>,
    pub image_members: Vec<String>,
    pub image_auto_accept_members: bool,
    pub image_tags: Vec<String>,
    pub image_metadata: BTreeMap<String, String>,
    pub image_min_disk: Option<u64>,
    pub image_disk_format: Option<String>,
    pub force_delete: bool,
    /// The communicator's keys (`communicator`, `ssh_*`,
    /// `temporary_key_pair_*`), as kiln's SSH communicator decodes them.
    pub comm: SshConfig,
}

impl Config {
    /// Packer's rule: a temporary key pair unless a key pair, a private
    /// key file or a password is given (or there is no communicator).
    pub fn wants_temporary_keypair(&self) -> bool {
        let c = &self.comm;
        !c.is_none()
            && c.keypair_name.is_none()
            && c.private_key_file.is_none()
            && c.password.is_none()
    }
}

pub const VISIBILITIES: &[&str] = &["public", "private", "shared", "community"];

/// Decode the builder's own keys (`comm`: the communicator's, decoded
/// already) and check them as Packer's Prepare does. Problems go to the
/// decoder.
pub fn decode(d: &mut kiln_template::Decoder<'_>, comm: SshConfig) -> Config {
    let access = AccessKeys::decode(d);
    let flavor = d.string("flavor");
    let source_image = d.string("source_image");
    let source_image_name = d.string("source_image_name");
    let ext_url = d.string("external_source_image_url");
    let _ext_fmt = d.string("external_source_image_format");
    let filter = d
        .nested("source_image_filter", |d| {
            let f = d
                .nested("filters", |d| ImageFilter {
                    name: d.string("name"),
                    owner: d.string("owner"),
                    tags: d.string_list("tags").unwrap_or_default(),
                    visibility: d.string("visibility"),
                    properties: d.string_map("properties").unwrap_or_default(),
                    most_recent: false,
                })
                .unwrap_or_default();
            let most_recent = d.bool("most_recent").unwrap_or(false);
            ImageFilter { most_recent, ..f }
        })
        .unwrap_or_default();
    let image_name = d.string("image_name");
    let instance_name = d.string("instance_name");
    let floating_ip_pool = d.string("floating_ip_pool");
    let floating_ip_network = d.string("floating_ip_network").or(floating_ip_pool);
    let ssh_ip_version = d.string("ssh_ip_version");
    let instance_metadata = d.string_map("instance_metadata").unwrap_or_default();
    let image_visibility = d.string("image_visibility");
    let image_min_disk = d.int("image_min_disk");
    let image_disk_format = d.string("image_disk_format");
    let use_blockstorage_volume = d.bool("use_blockstorage_volume").unwrap_or(false);
    // Accepted for compatibility, without effect (as in Packer 1.6.6).
    for k in ["use_floating_ip", "rackconnect_wait", "openstack_provider"] {
        let _ = d.string(k);
    }

    match &flavor {
        None => d.error_here("A flavor must be specified"),
        Some(f) if f.is_empty() => d.error("flavor", "A flavor must be specified"),
        _ => {}
    }
    if image_name.as_deref().unwrap_or("").is_empty() {
        d.error_here("An image_name must be specified");
    }
    if ext_url.is_some() {
        d.error(
            "external_source_image_url",
            "external_source_image_url is not supported by kiln: upload the image to Glance and use source_image",
        );
    }
    let set = [
        source_image.is_some(),
        source_image_name.is_some(),
        ext_url.is_some(),
        !filter.is_empty(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if set == 0 {
        d.error_here("Either a source_image, a source_image_name, an external_source_image_url or source_image_filter must be specified");
    } else if set > 1 {
        d.error_here("Only one of the options source_image, source_image_name, external_source_image_url, or source_image_filter can be specified, not multiple.");
    }
    let source = match (source_image, source_image_name) {
        (Some(i), _) => Some(SourceImage::Id(i)),
        (None, Some(n)) => Some(SourceImage::Name(n)),
        _ if !filter.is_empty() => Some(SourceImage::Filter(filter)),
        _ => None,
    };
    if let Some(v) = &ssh_ip_version {
        if v != "4" && v != "6" {
            d.error("ssh_ip_version", "SSH IP version must be either 4 or 6");
        }
    }
    for (k, v) in &instance_metadata {
        if k.len() > 255 {
            d.error(
                "instance_metadata",
                format!("Instance metadata key too long (max 255 bytes): {k}"),
            );
        }
        if v.len() > 255 {
            d.error(
                "instance_metadata",
                format!("Instance metadata value too long (max 255 bytes): {v}"),
            );
        }
    }
    if let Some(v) = &image_visibility {
        if !VISIBILITIES.contains(&v.as_str()) {
            d.error("image_visibility", format!("Unknown visibility value {v}"));
        }
    }
    if image_min_disk.is_some_and(|m| m < 0) {
        d.error(
            "image_min_disk",
            "An image min disk size must be greater than or equal to 0",
        );
    }
    if image_disk_format.is_some() && !use_blockstorage_volume {
        d.error(
            "image_disk_format",
            "use_blockstorage_volume must be true if image_disk_format is specified.",
        );
    }
    if comm.keypair_name.is_some() && comm.private_key_file.is_none() && !comm.agent_auth {
        d.error(
            "ssh_keypair_name",
            "A ssh_private_key_file must be provided or ssh_agent_auth enabled when ssh_keypair_name is specified.",
        );
    }
    let user_data = d.string("user_data");
    let user_data_file = d.string("user_data_file").map(PathBuf::from);
    if let Some(f) = &user_data_file {
        if !f.is_file() {
            d.error(
                "user_data_file",
                format!("user_data_file {} does not exist", f.display()),
            );
        }
    }
    let image_name = image_name.unwrap_or_default();
    Config {
        access,
        flavor: flavor.unwrap_or_default(),
        source,
        instance_name: instance_name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| image_name.clone()),
        image_name,
        networks: d.string_list("networks").unwrap_or_default(),
        ports: d.string_list("ports").unwrap_or_default(),
        network_discovery_cidrs: d.string_list("network_discovery_cidrs").unwrap_or_default(),
        security_groups: d.string_list("security_groups").unwrap_or_default(),
        availability_zone: d.string("availability_zone"),
        user_data,
        user_data_file,
        config_drive: d.bool("config_drive").unwrap_or(false),
        instance_metadata,
        floating_ip: d.string("floating_ip"),
        floating_ip_network,
        instance_floating_ip_net: d.string("instance_floating_ip_net"),
        reuse_ips: d.bool("reuse_ips").unwrap_or(false),
        ssh_interface: d.string("ssh_interface"),
        ssh_ip_version,
        use_blockstorage_volume,
        volume_name: d.string("volume_name"),
        volume_type: d.string("volume_type"),
        volume_size: d.uint("volume_size"),
        volume_availability_zone: d.string("volume_availability_zone"),
        image_visibility,
        image_members: d.string_list("image_members").unwrap_or_default(),
        image_auto_accept_members: d.bool("image_auto_accept_members").unwrap_or(false),
        image_tags: d.string_list("image_tags").unwrap_or_default(),
        image_metadata: d.string_map("metadata").unwrap_or_default(),
        image_min_disk: image_min_disk.map(|m| m.max(0) as u64),
        image_disk_format,
        force_delete: d.bool("force_delete").unwrap_or(false),
        comm,
    }
}
