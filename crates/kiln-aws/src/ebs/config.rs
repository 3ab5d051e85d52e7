//! The `amazon-ebs` builder's configuration: Packer 1.6.6's keys, checked
//! as its `Prepare` checks them. A Packer key kiln does not implement is
//! refused by name ([`REFUSED`]), never ignored.
use crate::config::AccessConfig;
use crate::ec2::{BlockDeviceMapping, Filter};
use kiln_ssh::SshConfig;
use kiln_template::Decoder;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `source_ami_filter` / `subnet_filter`: EC2 filters (name -> value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AmiFilter {
    pub filters: BTreeMap<String, String>,
    pub owners: Vec<String>,
    pub most_recent: bool,
}

impl AmiFilter {
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty() && self.owners.is_empty()
    }
    /// As EC2 filters (one value each, as Packer sends them).
    pub fn ec2_filters(&self) -> Vec<Filter> {
        filters(&self.filters)
    }
}

/// EC2 filters from a template map.
pub fn filters(m: &BTreeMap<String, String>) -> Vec<Filter> {
    m.iter().map(|(k, v)| Filter::new(k, &[v])).collect()
}

/// `subnet_filter`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetFilter {
    pub filters: BTreeMap<String, String>,
    pub most_free: bool,
    pub random: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub access: AccessConfig,
    pub skip_region_validation: bool,
    pub ami_name: String,
    pub ami_description: Option<String>,
    pub ami_users: Vec<String>,
    pub ami_groups: Vec<String>,
    pub ami_product_codes: Vec<String>,
    pub ami_regions: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub snapshot_tags: BTreeMap<String, String>,
    pub snapshot_users: Vec<String>,
    pub snapshot_groups: Vec<String>,
    pub ena_support: Option<bool>,
    pub force_deregister: bool,
    pub force_delete_snapshot: bool,
    pub encrypt_boot: Option<bool>,
    pub kms_key_id: Option<String>,
    pub ami_mappings: Vec<BlockDeviceMapping>,
    pub launch_mappings: Vec<BlockDeviceMapping>,
    pub source_ami: Option<String>,
    pub source_ami_filter: AmiFilter,
    pub instance_type: String,
    pub availability_zone: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub subnet_filter: SubnetFilter,
    pub security_group_ids: Vec<String>,
    pub temporary_sg_cidrs: Vec<String>,
    pub associate_public_ip: Option<bool>,
    pub ssh_interface: Option<String>,
    pub user_data: Option<String>,
    pub user_data_file: Option<PathBuf>,
    pub iam_instance_profile: Option<String>,
    pub ebs_optimized: bool,
    pub shutdown_behavior: String,
    pub disable_stop_instance: bool,
    pub run_tags: BTreeMap<String, String>,
    pub run_volume_tags: BTreeMap<String, String>,
    /// The communicator's keys, as kiln's SSH communicator decodes them.
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
    /// CreateImage makes an intermediary image (copied encrypted, then
    /// deregistered) when `encrypt_boot` is set.
    pub fn encrypts(&self) -> bool {
        self.encrypt_boot == Some(true)
    }
}

/// Packer 1.6.6 amazon-ebs keys kiln does not implement: refused by name.
pub const REFUSED: &[&str] = &[
    "spot_price",
    "spot_price_auto_product",
    "spot_instance_types",
    "spot_tags",
    "spot_tag",
    "block_duration_minutes",
    "enable_t2_unlimited",
    "tenancy",
    "no_ephemeral",
    "security_group_filter",
    "vpc_filter",
    "region_kms_key_ids",
    "skip_save_build_region",
    "sriov_support",
    "ami_virtualization_type",
    "temporary_iam_instance_profile_policy_document",
    "skip_profile_validation",
    "session_manager_port",
    "pause_before_ssm",
    "windows_password_timeout",
    "run_tag",
    "run_volume_tag",
    "tag",
    "snapshot_tag",
    "source_ami_filter_owner",
];

const INTERFACES: &[&str] = &["public_ip", "private_ip", "public_dns", "private_dns"];

/// Packer's `clean_ami_name` alphabet.
pub fn valid_ami_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c)
}

fn mappings(d: &mut Decoder<'_>, key: &str) -> Vec<BlockDeviceMapping> {
    let list = d
        .nested_list(key, |m| {
            let b = BlockDeviceMapping {
                device_name: m.string("device_name").unwrap_or_default(),
                virtual_name: m.string("virtual_name").filter(|s| !s.is_empty()),
                no_device: m.bool("no_device").unwrap_or(false),
                snapshot_id: m.string("snapshot_id").filter(|s| !s.is_empty()),
                volume_size: m.uint("volume_size").filter(|n| *n > 0),
                volume_type: m.string("volume_type").filter(|s| !s.is_empty()),
                iops: m.uint("iops").filter(|n| *n > 0),
                throughput: None,
                delete_on_termination: Some(m.bool("delete_on_termination").unwrap_or(false)),
                encrypted: m.bool("encrypted"),
                kms_key_id: m.string("kms_key_id").filter(|s| !s.is_empty()),
            };
            if b.device_name.is_empty() {
                m.error_here("The `device_name` must be specified for every device in the block device mapping.");
            }
            if b.kms_key_id.is_some() && b.encrypted != Some(true) {
                m.error(
                    "kms_key_id",
                    format!(
                        "The device {}, must also have `encrypted: true` when setting a kms_key_id.",
                        b.device_name
                    ),
                );
            }
            b
        })
        .unwrap_or_default();
    list
}

/// Decode the builder's own keys (`comm`: the communicator's, decoded
/// already) and check them as Packer's Prepare does.
pub fn decode(d: &mut Decoder<'_>, comm: SshConfig, force: bool) -> Config {
    let access = AccessConfig::decode(d);
    for k in REFUSED {
        if d.node(k).is_some_and(|n| n.kind() != "null") {
            d.error(
                k,
                format!("`{k}` is not supported by kiln's amazon-ebs builder (see docs/aws.md)"),
            );
        }
    }
    let ami_name = d.string("ami_name").unwrap_or_default();
    if ami_name.is_empty() {
        d.error_here("ami_name must be specified");
    } else {
        if ami_name.len() < 3 || ami_name.len() > 128 {
            d.error(
                "ami_name",
                "ami_name must be between 3 and 128 characters long",
            );
        }
        if !ami_name.chars().all(valid_ami_name_char) {
            d.error("ami_name", "AMIName should only contain alphanumeric characters, parentheses (()), square brackets ([]), spaces ( ), periods (.), slashes (/), dashes (-), single quotes ('), at-signs (@), or underscores(_). You can use the `clean_resource_name` template filter to automatically clean your ami name.");
        }
    }
    let source_ami = d.string("source_ami").filter(|s| !s.is_empty());
    let source_ami_filter = d
        .nested("source_ami_filter", |f| AmiFilter {
            filters: f.string_map("filters").unwrap_or_default(),
            owners: f.string_list("owners").unwrap_or_default(),
            most_recent: f.bool("most_recent").unwrap_or(false),
        })
        .unwrap_or_default();
    if source_ami.is_none() && source_ami_filter.is_empty() {
        d.error_here("A source_ami or source_ami_filter must be specified");
    } else if source_ami.is_none() && source_ami_filter.owners.is_empty() {
        d.error(
            "source_ami_filter",
            "For security reasons, your source AMI filter must declare an owner.",
        );
    }
    let instance_type = d.string("instance_type").unwrap_or_default();
    if instance_type.is_empty() {
        d.error_here("either instance_type or spot_instance_types must be specified");
    }
    let user_data = d.string("user_data").filter(|s| !s.is_empty());
    let user_data_file = d
        .string("user_data_file")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    if user_data.is_some() && user_data_file.is_some() {
        d.error_here("Only one of user_data or user_data_file can be specified.");
    } else if let Some(f) = &user_data_file {
        if !f.exists() {
            d.error(
                "user_data_file",
                format!("user_data_file not found: {}", f.display()),
            );
        }
    }
    let sg_id = d.string("security_group_id").filter(|s| !s.is_empty());
    let mut security_group_ids = d.string_list("security_group_ids").unwrap_or_default();
    if let Some(id) = sg_id {
        if security_group_ids.is_empty() {
            security_group_ids = vec![id];
        } else {
            d.error_here("Only one of security_group_id or security_group_ids can be specified.");
        }
    }
    let mut temporary_sg_cidrs = d
        .string_list("temporary_security_group_source_cidrs")
        .unwrap_or_default();
    if temporary_sg_cidrs.is_empty() {
        temporary_sg_cidrs = vec!["0.0.0.0/0".into()];
    }
    for c in &temporary_sg_cidrs {
        if !valid_cidr(c) {
            d.error(
                "temporary_security_group_source_cidrs",
                format!("Error parsing CIDR in temporary_security_group_source_cidrs: invalid CIDR address: {c}"),
            );
        }
    }
    let shutdown_behavior = d
        .string("shutdown_behavior")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "stop".into());
    if shutdown_behavior != "stop" && shutdown_behavior != "terminate" {
        d.error(
            "shutdown_behavior",
            "shutdown_behavior only accepts 'stop' or 'terminate' values.",
        );
    }
    let ssh_interface = d.string("ssh_interface").filter(|s| !s.is_empty());
    if let Some(i) = &ssh_interface {
        if i == "session_manager" {
            d.error(
                "ssh_interface",
                "ssh_interface `session_manager` is not supported by kiln's amazon-ebs builder",
            );
        } else if !INTERFACES.contains(&i.as_str()) {
            d.error("ssh_interface", format!("Unknown interface type: {i}"));
        }
    }
    if comm.keypair_name.is_some() && comm.private_key_file.is_none() && !comm.agent_auth {
        d.error(
            "ssh_keypair_name",
            "ssh_private_key_file must be provided or ssh_agent_auth enabled when ssh_keypair_name is specified.",
        );
    }
    let encrypt_boot = d.bool("encrypt_boot");
    let kms_key_id = d.string("kms_key_id").filter(|s| !s.is_empty());
    if kms_key_id.is_some() && encrypt_boot != Some(true) {
        d.error("kms_key_id", "If you have set either kms_key_id or region_kms_key_ids, encrypt_boot must also be true.");
    }
    let ami_users = d.string_list("ami_users").unwrap_or_default();
    if encrypt_boot == Some(true) && kms_key_id.is_none() && !ami_users.is_empty() {
        d.error(
            "ami_users",
            "Cannot share AMI encrypted with default KMS key",
        );
    }
    let subnet_filter = d
        .nested("subnet_filter", |f| SubnetFilter {
            filters: f.string_map("filters").unwrap_or_default(),
            most_free: f.bool("most_free").unwrap_or(false),
            random: f.bool("random").unwrap_or(false),
        })
        .unwrap_or_default();
    let mut ami_regions = d.string_list("ami_regions").unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    ami_regions.retain(|r| seen.insert(r.clone()));
    let ami_mappings = mappings(d, "ami_block_device_mappings");
    let launch_mappings = mappings(d, "launch_block_device_mappings");
    Config {
        access,
        skip_region_validation: d.bool("skip_region_validation").unwrap_or(false),
        ami_name,
        ami_description: d.string("ami_description").filter(|s| !s.is_empty()),
        ami_users,
        ami_groups: d.string_list("ami_groups").unwrap_or_default(),
        ami_product_codes: d.string_list("ami_product_codes").unwrap_or_default(),
        ami_regions,
        tags: d.string_map("tags").unwrap_or_default(),
        snapshot_tags: d.string_map("snapshot_tags").unwrap_or_default(),
        snapshot_users: d.string_list("snapshot_users").unwrap_or_default(),
        snapshot_groups: d.string_list("snapshot_groups").unwrap_or_default(),
        ena_support: d.bool("ena_support"),
        force_deregister: d.bool("force_deregister").unwrap_or(false) || force,
        force_delete_snapshot: d.bool("force_delete_snapshot").unwrap_or(false),
        encrypt_boot,
        kms_key_id,
        ami_mappings,
        launch_mappings,
        source_ami,
        source_ami_filter,
        instance_type,
        availability_zone: d.string("availability_zone").filter(|s| !s.is_empty()),
        vpc_id: d.string("vpc_id").filter(|s| !s.is_empty()),
        subnet_id: d.string("subnet_id").filter(|s| !s.is_empty()),
        subnet_filter,
        security_group_ids,
        temporary_sg_cidrs,
        associate_public_ip: d.bool("associate_public_ip_address"),
        ssh_interface,
        user_data,
        user_data_file,
        iam_instance_profile: d.string("iam_instance_profile").filter(|s| !s.is_empty()),
        ebs_optimized: d.bool("ebs_optimized").unwrap_or(false),
        shutdown_behavior,
        disable_stop_instance: d.bool("disable_stop_instance").unwrap_or(false),
        run_tags: d.string_map("run_tags").unwrap_or_default(),
        run_volume_tags: d.string_map("run_volume_tags").unwrap_or_default(),
        comm,
    }
}

/// An IPv4 or IPv6 CIDR (`a.b.c.d/n`).
fn valid_cidr(c: &str) -> bool {
    let Some((ip, n)) = c.split_once('/') else {
        return false;
    };
    match (ip.parse::<std::net::IpAddr>(), n.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(n)) => n <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(n)) => n <= 128,
        _ => false,
    }
}
