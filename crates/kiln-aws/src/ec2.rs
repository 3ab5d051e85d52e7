//! EC2 calls (Query API, version 2016-11-15) with typed inputs and results:
//! what the `amazon-ebs` builder and `amazon-import` need.
//!
//! Reads, deletes and calls made idempotent by a client token are retried
//! on throttling, 5xx and dropped connections ([`Retry::Idempotent`]);
//! creates without a client token (`CreateSecurityGroup`, `CreateKeyPair`,
//! `ImportKeyPair`, `CreateImage`) only on answers that prove nothing was
//! done ([`Retry::SafeOnly`]): on any other failure the caller looks for
//! what may have been made (by name, tag or client token).
use crate::client::{Aws, Retry};
use crate::error::AwsError;
use crate::xml::{self, bool_of, child, items, tags, text, text_or, u64_of, N};
use std::collections::BTreeMap;

/// A `Filter.N` of a Describe call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

impl Filter {
    pub fn new(name: &str, values: &[&str]) -> Self {
        Filter {
            name: name.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }
    /// `tag:KEY = value`.
    pub fn tag(key: &str, value: &str) -> Self {
        Filter::new(&format!("tag:{key}"), &[value])
    }
}

/// Query parameters being built.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn new() -> Self {
        Params(Vec::new())
    }
    pub fn set(&mut self, k: impl Into<String>, v: impl Into<String>) -> &mut Self {
        self.0.push((k.into(), v.into()));
        self
    }
    pub fn opt(&mut self, k: &str, v: Option<impl ToString>) -> &mut Self {
        if let Some(v) = v {
            self.0.push((k.into(), v.to_string()));
        }
        self
    }
    /// `prefix.1`, `prefix.2`, ...
    pub fn list(&mut self, prefix: &str, values: &[String]) -> &mut Self {
        for (i, v) in values.iter().enumerate() {
            self.0.push((format!("{prefix}.{}", i + 1), v.clone()));
        }
        self
    }
    /// `prefix.N.Name`, `prefix.N.Value.M`.
    pub fn filters(&mut self, prefix: &str, filters: &[Filter]) -> &mut Self {
        for (i, f) in filters.iter().enumerate() {
            self.0
                .push((format!("{prefix}.{}.Name", i + 1), f.name.clone()));
            for (j, v) in f.values.iter().enumerate() {
                self.0
                    .push((format!("{prefix}.{}.Value.{}", i + 1, j + 1), v.clone()));
            }
        }
        self
    }
    /// `TagSpecification.N.ResourceType` / `.Tag.M.Key` / `.Value`.
    pub fn tag_specs(&mut self, specs: &[TagSpec]) -> &mut Self {
        let mut n = 0;
        for s in specs.iter().filter(|s| !s.tags.is_empty()) {
            n += 1;
            self.0.push((
                format!("TagSpecification.{n}.ResourceType"),
                s.resource_type.clone(),
            ));
            for (j, (k, v)) in s.tags.iter().enumerate() {
                self.0
                    .push((format!("TagSpecification.{n}.Tag.{}.Key", j + 1), k.clone()));
                self.0.push((
                    format!("TagSpecification.{n}.Tag.{}.Value", j + 1),
                    v.clone(),
                ));
            }
        }
        self
    }
}

/// Tags for a resource type created by a call (`instance`, `volume`,
/// `security-group`, `key-pair`, `image`, `snapshot`,
/// `import-image-task`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagSpec {
    pub resource_type: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    pub endpoint: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDevice {
    pub device_name: String,
    pub snapshot_id: Option<String>,
    pub volume_id: Option<String>,
    pub volume_size: Option<u64>,
    pub volume_type: Option<String>,
    pub delete_on_termination: Option<bool>,
    pub encrypted: Option<bool>,
    pub virtual_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub state: String,
    pub state_reason: Option<String>,
    pub owner_id: Option<String>,
    pub creation_date: Option<String>,
    pub architecture: Option<String>,
    pub virtualization_type: Option<String>,
    pub root_device_type: Option<String>,
    pub root_device_name: Option<String>,
    pub ena_support: Option<bool>,
    pub public: bool,
    pub block_devices: Vec<BlockDevice>,
    pub tags: BTreeMap<String, String>,
}

impl Image {
    /// The snapshots behind the image.
    pub fn snapshot_ids(&self) -> Vec<String> {
        self.block_devices
            .iter()
            .filter_map(|b| b.snapshot_id.clone())
            .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vpc {
    pub id: String,
    pub cidr: String,
    pub is_default: bool,
    pub state: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub vpc_id: String,
    pub cidr: String,
    pub availability_zone: String,
    pub available_ips: u64,
    pub default_for_az: bool,
    pub map_public_ip_on_launch: bool,
    pub state: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub description: String,
    pub vpc_id: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyPair {
    pub name: String,
    pub id: Option<String>,
    pub fingerprint: Option<String>,
    /// The private key (CreateKeyPair only). Register it as a secret.
    pub material: Option<String>,
    pub public_key: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("fingerprint", &self.fingerprint)
            .field("material", &self.material.as_ref().map(|_| "<sensitive>"))
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub state: String,
    pub state_reason: Option<String>,
    pub instance_type: Option<String>,
    pub image_id: Option<String>,
    pub key_name: Option<String>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub private_dns: Option<String>,
    pub public_dns: Option<String>,
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    pub availability_zone: Option<String>,
    pub client_token: Option<String>,
    pub launch_time: Option<String>,
    pub root_device_name: Option<String>,
    pub platform: Option<String>,
    pub security_group_ids: Vec<String>,
    pub block_devices: Vec<BlockDevice>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub state: String,
    pub state_message: Option<String>,
    pub progress: Option<String>,
    pub volume_id: Option<String>,
    pub volume_size: Option<u64>,
    pub description: Option<String>,
    pub owner_id: Option<String>,
    pub encrypted: Option<bool>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotDetail {
    pub snapshot_id: Option<String>,
    pub status: Option<String>,
    pub format: Option<String>,
    pub disk_image_size: Option<f64>,
    pub device_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportTask {
    pub id: String,
    /// `active`, `completed`, `deleting`, `deleted`.
    pub status: String,
    pub status_message: Option<String>,
    pub progress: Option<String>,
    pub image_id: Option<String>,
    pub description: Option<String>,
    pub license_type: Option<String>,
    pub snapshot_details: Vec<SnapshotDetail>,
    pub tags: BTreeMap<String, String>,
}

/// A block device mapping for RunInstances (launch) or CopyImage-free
/// calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDeviceMapping {
    pub device_name: String,
    pub virtual_name: Option<String>,
    pub no_device: bool,
    pub snapshot_id: Option<String>,
    pub volume_size: Option<u64>,
    pub volume_type: Option<String>,
    pub iops: Option<u64>,
    pub throughput: Option<u64>,
    pub delete_on_termination: Option<bool>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
}

impl BlockDeviceMapping {
    fn params(&self, p: &mut Params, prefix: &str) {
        p.set(format!("{prefix}.DeviceName"), &self.device_name);
        if let Some(v) = &self.virtual_name {
            p.set(format!("{prefix}.VirtualName"), v);
            return;
        }
        if self.no_device {
            p.set(format!("{prefix}.NoDevice"), "");
            return;
        }
        let e = format!("{prefix}.Ebs");
        p.opt(&format!("{e}.SnapshotId"), self.snapshot_id.as_ref())
            .opt(&format!("{e}.VolumeSize"), self.volume_size)
            .opt(&format!("{e}.VolumeType"), self.volume_type.as_ref())
            .opt(&format!("{e}.Iops"), self.iops)
            .opt(&format!("{e}.Throughput"), self.throughput)
            .opt(
                &format!("{e}.DeleteOnTermination"),
                self.delete_on_termination,
            )
            .opt(&format!("{e}.Encrypted"), self.encrypted)
            .opt(&format!("{e}.KmsKeyId"), self.kms_key_id.as_ref());
    }
}

/// RunInstances' input (one instance).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunInstances {
    pub image_id: String,
    pub instance_type: String,
    /// Makes the call idempotent and the instance findable when the answer
    /// never came ([`Ec2::find_instances_by_client_token`]).
    pub client_token: String,
    pub key_name: Option<String>,
    pub security_group_ids: Vec<String>,
    pub subnet_id: Option<String>,
    pub private_ip: Option<String>,
    /// Sent as a network interface (device 0) with the subnet and groups.
    pub associate_public_ip: Option<bool>,
    pub availability_zone: Option<String>,
    /// Raw bytes; base64-encoded on the way.
    pub user_data: Option<Vec<u8>>,
    pub iam_instance_profile: Option<String>,
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    pub ebs_optimized: Option<bool>,
    pub shutdown_behavior: Option<String>,
    pub tag_specs: Vec<TagSpec>,
    /// Further parameters, as the Query API names them.
    pub extra: Vec<(String, String)>,
}

/// CopyImage's input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyImage {
    pub source_image_id: String,
    pub source_region: String,
    pub name: String,
    pub description: Option<String>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
    /// Idempotency (and findability): a copy asked twice is made once.
    pub client_token: String,
}

/// ImportImage's input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportImage {
    pub format: String,
    pub s3_bucket: String,
    pub s3_key: String,
    pub description: Option<String>,
    pub license_type: Option<String>,
    pub role_name: Option<String>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
    pub architecture: Option<String>,
    pub platform: Option<String>,
    pub boot_mode: Option<String>,
    pub client_token: String,
    /// Tags of the import task (`import-image-task`).
    pub tags: BTreeMap<String, String>,
}

/// ModifyImageAttribute's changes (Packer sends one call per kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageAttribute {
    Description(String),
    AddUsers(Vec<String>),
    AddGroups(Vec<String>),
    AddProductCodes(Vec<String>),
}

/// The EC2 calls.
#[derive(Clone, Copy)]
pub struct Ec2<'a> {
    pub aws: &'a Aws,
}

fn parse<'b>(action: &str, body: &'b str) -> Result<roxmltree::Document<'b>, AwsError> {
    roxmltree::Document::parse(body).map_err(|e| AwsError::Protocol {
        service: "ec2",
        action: action.into(),
        message: e.to_string(),
    })
}

fn missing(action: &str, what: &str) -> AwsError {
    AwsError::Protocol {
        service: "ec2",
        action: action.into(),
        message: format!("no {what} in the answer"),
    }
}

fn block_devices(n: N<'_, '_>) -> Vec<BlockDevice> {
    items(n, "blockDeviceMapping")
        .into_iter()
        .map(|b| {
            let ebs = child(b, "ebs");
            BlockDevice {
                device_name: text_or(b, "deviceName"),
                virtual_name: text(b, "virtualName"),
                snapshot_id: ebs.and_then(|e| text(e, "snapshotId")),
                volume_id: ebs.and_then(|e| text(e, "volumeId")),
                volume_size: ebs.and_then(|e| u64_of(e, "volumeSize")),
                volume_type: ebs.and_then(|e| text(e, "volumeType")),
                delete_on_termination: ebs.and_then(|e| bool_of(e, "deleteOnTermination")),
                encrypted: ebs.and_then(|e| bool_of(e, "encrypted")),
            }
        })
        .collect()
}

pub fn parse_image(i: N<'_, '_>) -> Image {
    Image {
        id: text_or(i, "imageId"),
        name: text_or(i, "name"),
        description: text(i, "description"),
        state: text_or(i, "imageState"),
        state_reason: child(i, "stateReason").and_then(|r| text(r, "message")),
        owner_id: text(i, "imageOwnerId"),
        creation_date: text(i, "creationDate"),
        architecture: text(i, "architecture"),
        virtualization_type: text(i, "virtualizationType"),
        root_device_type: text(i, "rootDeviceType"),
        root_device_name: text(i, "rootDeviceName"),
        ena_support: bool_of(i, "enaSupport"),
        public: bool_of(i, "isPublic").unwrap_or(false),
        block_devices: block_devices(i),
        tags: tags(i),
    }
}

pub fn parse_instance(i: N<'_, '_>) -> Instance {
    Instance {
        id: text_or(i, "instanceId"),
        state: child(i, "instanceState")
            .map(|s| text_or(s, "name"))
            .unwrap_or_default(),
        state_reason: child(i, "stateReason").and_then(|r| text(r, "message")),
        instance_type: text(i, "instanceType"),
        image_id: text(i, "imageId"),
        key_name: text(i, "keyName"),
        private_ip: text(i, "privateIpAddress"),
        public_ip: text(i, "ipAddress"),
        private_dns: text(i, "privateDnsName"),
        public_dns: text(i, "dnsName"),
        subnet_id: text(i, "subnetId"),
        vpc_id: text(i, "vpcId"),
        availability_zone: child(i, "placement").and_then(|p| text(p, "availabilityZone")),
        client_token: text(i, "clientToken"),
        launch_time: text(i, "launchTime"),
        root_device_name: text(i, "rootDeviceName"),
        platform: text(i, "platform"),
        security_group_ids: items(i, "groupSet")
            .into_iter()
            .filter_map(|g| text(g, "groupId"))
            .collect(),
        block_devices: block_devices(i),
        tags: tags(i),
    }
}

fn parse_snapshot(s: N<'_, '_>) -> Snapshot {
    Snapshot {
        id: text_or(s, "snapshotId"),
        state: text_or(s, "status"),
        state_message: text(s, "statusMessage"),
        progress: text(s, "progress"),
        volume_id: text(s, "volumeId"),
        volume_size: u64_of(s, "volumeSize"),
        description: text(s, "description"),
        owner_id: text(s, "ownerId"),
        encrypted: bool_of(s, "encrypted"),
        tags: tags(s),
    }
}

pub fn parse_import_task(t: N<'_, '_>) -> ImportTask {
    ImportTask {
        id: text_or(t, "importTaskId"),
        status: text_or(t, "status"),
        status_message: text(t, "statusMessage"),
        progress: text(t, "progress"),
        image_id: text(t, "imageId"),
        description: text(t, "description"),
        license_type: text(t, "licenseType"),
        snapshot_details: items(t, "snapshotDetailSet")
            .into_iter()
            .map(|d| SnapshotDetail {
                snapshot_id: text(d, "snapshotId"),
                status: text(d, "status"),
                format: text(d, "format"),
                disk_image_size: text(d, "diskImageSize").and_then(|s| s.parse().ok()),
                device_name: text(d, "deviceName"),
            })
            .collect(),
        tags: tags(t),
    }
}

fn first_set<'a, 'i>(doc: &'a roxmltree::Document<'i>, set: &str) -> Vec<N<'a, 'i>> {
    items(xml::root(doc), set)
}

impl<'a> Ec2<'a> {
    async fn call(&self, action: &str, p: Params, retry: Retry) -> Result<String, AwsError> {
        self.aws.ec2_call(action, p.0, retry).await
    }

    /// DescribeRegions (all regions, enabled or not).
    pub async fn describe_regions(&self) -> Result<Vec<Region>, AwsError> {
        let mut p = Params::new();
        p.set("AllRegions", "true");
        let b = self.call("DescribeRegions", p, Retry::Idempotent).await?;
        let doc = parse("DescribeRegions", &b)?;
        Ok(first_set(&doc, "regionInfo")
            .into_iter()
            .map(|r| Region {
                name: text_or(r, "regionName"),
                endpoint: text_or(r, "regionEndpoint"),
            })
            .collect())
    }

    /// DescribeImages by ids, owners, executable users and filters.
    pub async fn describe_images(
        &self,
        ids: &[String],
        owners: &[String],
        filters: &[Filter],
    ) -> Result<Vec<Image>, AwsError> {
        let mut p = Params::new();
        p.list("ImageId", ids)
            .list("Owner", owners)
            .filters("Filter", filters);
        let b = self.call("DescribeImages", p, Retry::Idempotent).await?;
        let doc = parse("DescribeImages", &b)?;
        Ok(first_set(&doc, "imagesSet")
            .into_iter()
            .map(parse_image)
            .collect())
    }

    /// One image, `None` when it does not exist.
    pub async fn image(&self, id: &str) -> Result<Option<Image>, AwsError> {
        match self.describe_images(&[id.to_string()], &[], &[]).await {
            Ok(v) => Ok(v.into_iter().find(|i| i.id == id)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn describe_vpcs(
        &self,
        ids: &[String],
        filters: &[Filter],
    ) -> Result<Vec<Vpc>, AwsError> {
        let mut p = Params::new();
        p.list("VpcId", ids).filters("Filter", filters);
        let b = self.call("DescribeVpcs", p, Retry::Idempotent).await?;
        let doc = parse("DescribeVpcs", &b)?;
        Ok(first_set(&doc, "vpcSet")
            .into_iter()
            .map(|v| Vpc {
                id: text_or(v, "vpcId"),
                cidr: text_or(v, "cidrBlock"),
                is_default: bool_of(v, "isDefault").unwrap_or(false),
                state: text_or(v, "state"),
                tags: tags(v),
            })
            .collect())
    }

    pub async fn describe_subnets(
        &self,
        ids: &[String],
        filters: &[Filter],
    ) -> Result<Vec<Subnet>, AwsError> {
        let mut p = Params::new();
        p.list("SubnetId", ids).filters("Filter", filters);
        let b = self.call("DescribeSubnets", p, Retry::Idempotent).await?;
        let doc = parse("DescribeSubnets", &b)?;
        Ok(first_set(&doc, "subnetSet")
            .into_iter()
            .map(|s| Subnet {
                id: text_or(s, "subnetId"),
                vpc_id: text_or(s, "vpcId"),
                cidr: text_or(s, "cidrBlock"),
                availability_zone: text_or(s, "availabilityZone"),
                available_ips: u64_of(s, "availableIpAddressCount").unwrap_or(0),
                default_for_az: bool_of(s, "defaultForAz").unwrap_or(false),
                map_public_ip_on_launch: bool_of(s, "mapPublicIpOnLaunch").unwrap_or(false),
                state: text_or(s, "state"),
                tags: tags(s),
            })
            .collect())
    }

    /// CreateSecurityGroup (not idempotent: a failed call may have made
    /// it; look for it by name).
    pub async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc_id: Option<&str>,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, AwsError> {
        let mut p = Params::new();
        p.set("GroupName", name)
            .set("GroupDescription", description)
            .opt("VpcId", vpc_id)
            .tag_specs(&[TagSpec {
                resource_type: "security-group".into(),
                tags: tags.clone(),
            }]);
        let b = self.call("CreateSecurityGroup", p, Retry::SafeOnly).await?;
        let doc = parse("CreateSecurityGroup", &b)?;
        text(xml::root(&doc), "groupId").ok_or_else(|| missing("CreateSecurityGroup", "groupId"))
    }

    /// Allow TCP `port` from each CIDR.
    pub async fn authorize_ingress_tcp(
        &self,
        group_id: &str,
        port: u16,
        cidrs: &[String],
    ) -> Result<(), AwsError> {
        let mut p = Params::new();
        p.set("GroupId", group_id)
            .set("IpPermissions.1.IpProtocol", "tcp")
            .set("IpPermissions.1.FromPort", port.to_string())
            .set("IpPermissions.1.ToPort", port.to_string());
        for (i, c) in cidrs.iter().enumerate() {
            p.set(format!("IpPermissions.1.IpRanges.{}.CidrIp", i + 1), c);
        }
        match self
            .call("AuthorizeSecurityGroupIngress", p, Retry::Idempotent)
            .await
        {
            // A retried call whose first attempt was carried out.
            Err(e) if e.code() == Some("InvalidPermission.Duplicate") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    pub async fn describe_security_groups(
        &self,
        ids: &[String],
        filters: &[Filter],
    ) -> Result<Vec<SecurityGroup>, AwsError> {
        let mut p = Params::new();
        p.list("GroupId", ids).filters("Filter", filters);
        let b = self
            .call("DescribeSecurityGroups", p, Retry::Idempotent)
            .await?;
        let doc = parse("DescribeSecurityGroups", &b)?;
        Ok(first_set(&doc, "securityGroupInfo")
            .into_iter()
            .map(|g| SecurityGroup {
                id: text_or(g, "groupId"),
                name: text_or(g, "groupName"),
                description: text_or(g, "groupDescription"),
                vpc_id: text(g, "vpcId"),
                tags: tags(g),
            })
            .collect())
    }

    /// DeleteSecurityGroup; "not found" counts as done.
    pub async fn delete_security_group(&self, id: &str) -> Result<(), AwsError> {
        let mut p = Params::new();
        p.set("GroupId", id);
        not_found_ok(self.call("DeleteSecurityGroup", p, Retry::Idempotent).await)
    }

    /// CreateKeyPair (`key_type`: `rsa` or `ed25519`); the answer carries
    /// the private key.
    pub async fn create_key_pair(
        &self,
        name: &str,
        key_type: Option<&str>,
        tags: &BTreeMap<String, String>,
    ) -> Result<KeyPair, AwsError> {
        let mut p = Params::new();
        p.set("KeyName", name)
            .opt("KeyType", key_type)
            .tag_specs(&[TagSpec {
                resource_type: "key-pair".into(),
                tags: tags.clone(),
            }]);
        let b = self.call("CreateKeyPair", p, Retry::SafeOnly).await?;
        let doc = parse("CreateKeyPair", &b)?;
        let r = xml::root(&doc);
        Ok(KeyPair {
            name: text_or(r, "keyName"),
            id: text(r, "keyPairId"),
            fingerprint: text(r, "keyFingerprint"),
            material: child(r, "keyMaterial")
                .and_then(|m| m.text())
                .map(str::to_string),
            public_key: None,
            tags: tags.clone(),
        })
    }

    /// ImportKeyPair of an OpenSSH public key.
    pub async fn import_key_pair(
        &self,
        name: &str,
        public_key: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<KeyPair, AwsError> {
        use base64::Engine;
        let mut p = Params::new();
        p.set("KeyName", name)
            .set(
                "PublicKeyMaterial",
                base64::engine::general_purpose::STANDARD.encode(public_key.trim()),
            )
            .tag_specs(&[TagSpec {
                resource_type: "key-pair".into(),
                tags: tags.clone(),
            }]);
        let b = self.call("ImportKeyPair", p, Retry::SafeOnly).await?;
        let doc = parse("ImportKeyPair", &b)?;
        let r = xml::root(&doc);
        Ok(KeyPair {
            name: text_or(r, "keyName"),
            id: text(r, "keyPairId"),
            fingerprint: text(r, "keyFingerprint"),
            material: None,
            public_key: Some(public_key.to_string()),
            tags: tags.clone(),
        })
    }

    pub async fn describe_key_pairs(
        &self,
        names: &[String],
        filters: &[Filter],
    ) -> Result<Vec<KeyPair>, AwsError> {
        let mut p = Params::new();
        p.list("KeyName", names)
            .filters("Filter", filters)
            .set("IncludePublicKey", "true");
        let b = match self.call("DescribeKeyPairs", p, Retry::Idempotent).await {
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            r => r?,
        };
        let doc = parse("DescribeKeyPairs", &b)?;
        Ok(first_set(&doc, "keySet")
            .into_iter()
            .map(|k| KeyPair {
                name: text_or(k, "keyName"),
                id: text(k, "keyPairId"),
                fingerprint: text(k, "keyFingerprint"),
                material: None,
                public_key: text(k, "publicKey"),
                tags: tags(k),
            })
            .collect())
    }

    /// DeleteKeyPair (EC2 answers success for a missing name).
    pub async fn delete_key_pair(&self, name: &str) -> Result<(), AwsError> {
        let mut p = Params::new();
        p.set("KeyName", name);
        not_found_ok(self.call("DeleteKeyPair", p, Retry::Idempotent).await)
    }

    /// RunInstances of one instance, idempotent through its client token.
    pub async fn run_instance(&self, r: &RunInstances) -> Result<Instance, AwsError> {
        use base64::Engine;
        let mut p = Params::new();
        p.set("ImageId", &r.image_id)
            .set("InstanceType", &r.instance_type)
            .set("MinCount", "1")
            .set("MaxCount", "1")
            .set("ClientToken", &r.client_token)
            .opt("KeyName", r.key_name.as_ref())
            .opt("Placement.AvailabilityZone", r.availability_zone.as_ref())
            .opt("IamInstanceProfile.Name", r.iam_instance_profile.as_ref())
            .opt("EbsOptimized", r.ebs_optimized)
            .opt(
                "InstanceInitiatedShutdownBehavior",
                r.shutdown_behavior.as_ref(),
            );
        if let Some(u) = &r.user_data {
            p.set(
                "UserData",
                base64::engine::general_purpose::STANDARD.encode(u),
            );
        }
        if let Some(public) = r.associate_public_ip {
            let n = "NetworkInterface.1";
            p.set(format!("{n}.DeviceIndex"), "0")
                .set(format!("{n}.AssociatePublicIpAddress"), public.to_string())
                .set(format!("{n}.DeleteOnTermination"), "true")
                .opt(&format!("{n}.SubnetId"), r.subnet_id.as_ref())
                .opt(&format!("{n}.PrivateIpAddress"), r.private_ip.as_ref())
                .list(&format!("{n}.SecurityGroupId"), &r.security_group_ids);
        } else {
            p.opt("SubnetId", r.subnet_id.as_ref())
                .opt("PrivateIpAddress", r.private_ip.as_ref())
                .list("SecurityGroupId", &r.security_group_ids);
        }
        for (i, m) in r.block_device_mappings.iter().enumerate() {
            m.params(&mut p, &format!("BlockDeviceMapping.{}", i + 1));
        }
        p.tag_specs(&r.tag_specs);
        p.0.extend(r.extra.iter().cloned());
        let b = self.call("RunInstances", p, Retry::Idempotent).await?;
        let doc = parse("RunInstances", &b)?;
        first_set(&doc, "instancesSet")
            .into_iter()
            .next()
            .map(parse_instance)
            .ok_or_else(|| missing("RunInstances", "instance"))
    }

    pub async fn describe_instances(
        &self,
        ids: &[String],
        filters: &[Filter],
    ) -> Result<Vec<Instance>, AwsError> {
        let mut p = Params::new();
        p.list("InstanceId", ids).filters("Filter", filters);
        let b = self.call("DescribeInstances", p, Retry::Idempotent).await?;
        let doc = parse("DescribeInstances", &b)?;
        let mut out = Vec::new();
        for r in first_set(&doc, "reservationSet") {
            out.extend(items(r, "instancesSet").into_iter().map(parse_instance));
        }
        Ok(out)
    }

    /// One instance, `None` when it does not exist (yet).
    pub async fn instance(&self, id: &str) -> Result<Option<Instance>, AwsError> {
        match self.describe_instances(&[id.to_string()], &[]).await {
            Ok(v) => Ok(v.into_iter().find(|i| i.id == id)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The instances a RunInstances with `token` made (for a call whose
    /// answer never came), terminated ones excluded.
    pub async fn find_instances_by_client_token(
        &self,
        token: &str,
    ) -> Result<Vec<Instance>, AwsError> {
        Ok(self
            .describe_instances(&[], &[Filter::new("client-token", &[token])])
            .await?
            .into_iter()
            .filter(|i| i.client_token.as_deref() == Some(token) && i.state != "terminated")
            .collect())
    }

    pub async fn stop_instances(&self, ids: &[String], force: bool) -> Result<(), AwsError> {
        let mut p = Params::new();
        p.list("InstanceId", ids);
        if force {
            p.set("Force", "true");
        }
        self.call("StopInstances", p, Retry::Idempotent)
            .await
            .map(|_| ())
    }

    /// TerminateInstances; "not found" counts as done.
    pub async fn terminate_instances(&self, ids: &[String]) -> Result<(), AwsError> {
        let mut p = Params::new();
        p.list("InstanceId", ids);
        not_found_ok(self.call("TerminateInstances", p, Retry::Idempotent).await)
    }

    /// ModifyInstanceAttribute `EnaSupport` (Packer's `ena_support`).
    pub async fn set_ena_support(&self, id: &str, on: bool) -> Result<(), AwsError> {
        let mut p = Params::new();
        p.set("InstanceId", id)
            .set("EnaSupport.Value", on.to_string());
        self.call("ModifyInstanceAttribute", p, Retry::Idempotent)
            .await
            .map(|_| ())
    }

    /// CreateImage of a (stopped) instance. Not idempotent: on a failure
    /// with [`AwsError::outcome_unknown`], look for the image by name.
    pub async fn create_image(
        &self,
        instance_id: &str,
        name: &str,
        description: Option<&str>,
        mappings: &[BlockDeviceMapping],
        tag_specs: &[TagSpec],
    ) -> Result<String, AwsError> {
        let mut p = Params::new();
        p.set("InstanceId", instance_id)
            .set("Name", name)
            .opt("Description", description);
        for (i, m) in mappings.iter().enumerate() {
            m.params(&mut p, &format!("BlockDeviceMapping.{}", i + 1));
        }
        p.tag_specs(tag_specs);
        let b = self.call("CreateImage", p, Retry::SafeOnly).await?;
        let doc = parse("CreateImage", &b)?;
        text(xml::root(&doc), "imageId").ok_or_else(|| missing("CreateImage", "imageId"))
    }

    /// Images of this account with `name` (to find a CreateImage or
    /// CopyImage whose answer never came).
    pub async fn find_own_images_by_name(&self, name: &str) -> Result<Vec<Image>, AwsError> {
        self.describe_images(&[], &["self".into()], &[Filter::new("name", &[name])])
            .await
    }

    /// DeregisterImage; "not found" counts as done.
    pub async fn deregister_image(&self, id: &str) -> Result<(), AwsError> {
        let mut p = Params::new();
        p.set("ImageId", id);
        not_found_ok(self.call("DeregisterImage", p, Retry::Idempotent).await)
    }

    /// CopyImage into this client's region (idempotent by its client
    /// token).
    pub async fn copy_image(&self, c: &CopyImage) -> Result<String, AwsError> {
        let mut p = Params::new();
        p.set("SourceImageId", &c.source_image_id)
            .set("SourceRegion", &c.source_region)
            .set("Name", &c.name)
            .set("ClientToken", &c.client_token)
            .opt("Description", c.description.as_ref())
            .opt("Encrypted", c.encrypted)
            .opt("KmsKeyId", c.kms_key_id.as_ref());
        let b = self.call("CopyImage", p, Retry::Idempotent).await?;
        let doc = parse("CopyImage", &b)?;
        text(xml::root(&doc), "imageId").ok_or_else(|| missing("CopyImage", "imageId"))
    }

    /// ModifyImageAttribute (one kind of change per call, as Packer).
    pub async fn modify_image_attribute(
        &self,
        image_id: &str,
        a: &ImageAttribute,
    ) -> Result<(), AwsError> {
        let mut p = Params::new();
        p.set("ImageId", image_id);
        match a {
            ImageAttribute::Description(d) => {
                p.set("Description.Value", d);
            }
            // Both forms, as Packer (the Go SDK) sends them.
            ImageAttribute::AddUsers(u) => {
                for (i, x) in u.iter().enumerate() {
                    p.set(format!("LaunchPermission.Add.{}.UserId", i + 1), x);
                }
                p.list("UserId", u);
            }
            ImageAttribute::AddGroups(g) => {
                for (i, x) in g.iter().enumerate() {
                    p.set(format!("LaunchPermission.Add.{}.Group", i + 1), x);
                }
                p.list("UserGroup", g);
            }
            ImageAttribute::AddProductCodes(c) => {
                p.list("ProductCode", c);
            }
        }
        self.call("ModifyImageAttribute", p, Retry::Idempotent)
            .await
            .map(|_| ())
    }

    /// ModifySnapshotAttribute: add create-volume permission for users
    /// and groups.
    pub async fn share_snapshot(
        &self,
        snapshot_id: &str,
        users: &[String],
        groups: &[String],
    ) -> Result<(), AwsError> {
        let mut p = Params::new();
        p.set("SnapshotId", snapshot_id)
            .set("Attribute", "createVolumePermission")
            .set("OperationType", "add");
        let mut n = 0;
        for u in users {
            n += 1;
            p.set(format!("CreateVolumePermission.Add.{n}.UserId"), u);
        }
        for g in groups {
            n += 1;
            p.set(format!("CreateVolumePermission.Add.{n}.Group"), g);
        }
        self.call("ModifySnapshotAttribute", p, Retry::Idempotent)
            .await
            .map(|_| ())
    }

    /// ModifySnapshotAttribute as Packer's amazon-ebs sends it: create
    /// volume permission for users (`UserId`) or groups (`Group`), one
    /// kind per call.
    pub async fn add_create_volume_permission(
        &self,
        snapshot_id: &str,
        users: &[String],
        groups: &[String],
    ) -> Result<(), AwsError> {
        let mut p = Params::new();
        p.set("SnapshotId", snapshot_id);
        for (i, u) in users.iter().enumerate() {
            p.set(format!("CreateVolumePermission.Add.{}.UserId", i + 1), u);
        }
        for (i, g) in groups.iter().enumerate() {
            p.set(format!("CreateVolumePermission.Add.{}.Group", i + 1), g);
        }
        p.list("UserId", users).list("UserGroup", groups);
        self.call("ModifySnapshotAttribute", p, Retry::Idempotent)
            .await
            .map(|_| ())
    }

    pub async fn describe_snapshots(
        &self,
        ids: &[String],
        owners: &[String],
        filters: &[Filter],
    ) -> Result<Vec<Snapshot>, AwsError> {
        let mut p = Params::new();
        p.list("SnapshotId", ids)
            .list("Owner", owners)
            .filters("Filter", filters);
        let b = self.call("DescribeSnapshots", p, Retry::Idempotent).await?;
        let doc = parse("DescribeSnapshots", &b)?;
        Ok(first_set(&doc, "snapshotSet")
            .into_iter()
            .map(parse_snapshot)
            .collect())
    }

    /// One snapshot, `None` when it does not exist.
    pub async fn snapshot(&self, id: &str) -> Result<Option<Snapshot>, AwsError> {
        match self.describe_snapshots(&[id.to_string()], &[], &[]).await {
            Ok(v) => Ok(v.into_iter().find(|s| s.id == id)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// DeleteSnapshot; "not found" counts as done.
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), AwsError> {
        let mut p = Params::new();
        p.set("SnapshotId", id);
        not_found_ok(self.call("DeleteSnapshot", p, Retry::Idempotent).await)
    }

    /// Deregister an image and delete its snapshots (Packer's
    /// `DestroyAMIs`).
    pub async fn destroy_image(&self, id: &str) -> Result<(), AwsError> {
        let snaps = match self.image(id).await? {
            Some(i) => i.snapshot_ids(),
            None => Vec::new(),
        };
        self.deregister_image(id).await?;
        for s in snaps {
            self.delete_snapshot(&s).await?;
        }
        Ok(())
    }

    /// CreateTags on several resources.
    pub async fn create_tags(
        &self,
        resources: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<(), AwsError> {
        if tags.is_empty() || resources.is_empty() {
            return Ok(());
        }
        let mut p = Params::new();
        p.list("ResourceId", resources);
        for (i, (k, v)) in tags.iter().enumerate() {
            p.set(format!("Tag.{}.Key", i + 1), k)
                .set(format!("Tag.{}.Value", i + 1), v);
        }
        self.call("CreateTags", p, Retry::Idempotent)
            .await
            .map(|_| ())
    }

    /// ImportImage from S3 (idempotent by its client token).
    pub async fn import_image(&self, i: &ImportImage) -> Result<ImportTask, AwsError> {
        let mut p = Params::new();
        p.set("DiskContainer.1.Format", &i.format)
            .set("DiskContainer.1.UserBucket.S3Bucket", &i.s3_bucket)
            .set("DiskContainer.1.UserBucket.S3Key", &i.s3_key)
            .set("ClientToken", &i.client_token)
            .opt("Description", i.description.as_ref())
            .opt("LicenseType", i.license_type.as_ref())
            .opt("RoleName", i.role_name.as_ref())
            .opt("Encrypted", i.encrypted)
            .opt("KmsKeyId", i.kms_key_id.as_ref())
            .opt("Architecture", i.architecture.as_ref())
            .opt("Platform", i.platform.as_ref())
            .opt("BootMode", i.boot_mode.as_ref())
            .tag_specs(&[TagSpec {
                resource_type: "import-image-task".into(),
                tags: i.tags.clone(),
            }]);
        let b = self.call("ImportImage", p, Retry::Idempotent).await?;
        let doc = parse("ImportImage", &b)?;
        let t = parse_import_task(xml::root(&doc));
        if t.id.is_empty() {
            return Err(missing("ImportImage", "importTaskId"));
        }
        Ok(t)
    }

    /// DescribeImportImageTasks by ids and filters (`tag:KEY`,
    /// `task-state`).
    pub async fn describe_import_image_tasks(
        &self,
        ids: &[String],
        filters: &[Filter],
    ) -> Result<Vec<ImportTask>, AwsError> {
        let mut p = Params::new();
        p.list("ImportTaskId", ids).filters("Filters", filters);
        let b = self
            .call("DescribeImportImageTasks", p, Retry::Idempotent)
            .await?;
        let doc = parse("DescribeImportImageTasks", &b)?;
        Ok(first_set(&doc, "importImageTaskSet")
            .into_iter()
            .map(parse_import_task)
            .collect())
    }

    /// CancelImportTask; a task already finished or gone counts as done.
    pub async fn cancel_import_task(&self, id: &str) -> Result<(), AwsError> {
        let mut p = Params::new();
        p.set("ImportTaskId", id);
        match self.call("CancelImportTask", p, Retry::Idempotent).await {
            Err(e) if e.is_not_found() || e.code() == Some("IncorrectState") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// GetConsoleOutput, decoded (empty when there is none yet).
    pub async fn console_output(&self, instance_id: &str) -> Result<String, AwsError> {
        use base64::Engine;
        let mut p = Params::new();
        p.set("InstanceId", instance_id).set("Latest", "true");
        let b = self.call("GetConsoleOutput", p, Retry::Idempotent).await?;
        let doc = parse("GetConsoleOutput", &b)?;
        let out = text(xml::root(&doc), "output").unwrap_or_default();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(out.replace(['\n', '\r'], ""))
            .unwrap_or_default();
        Ok(String::from_utf8_lossy(&raw).into_owned())
    }
}

fn not_found_ok(r: Result<String, AwsError>) -> Result<(), AwsError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

impl Aws {
    /// The EC2 calls.
    pub fn ec2(&self) -> Ec2<'_> {
        Ec2 { aws: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_layout() {
        let mut p = Params::new();
        p.filters(
            "Filter",
            &[Filter::new("name", &["a*", "b"]), Filter::tag("k", "v")],
        )
        .tag_specs(&[
            TagSpec {
                resource_type: "instance".into(),
                tags: [("A".to_string(), "1".to_string())].into(),
            },
            TagSpec {
                resource_type: "volume".into(),
                tags: BTreeMap::new(),
            },
        ]);
        let got: Vec<String> = p.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            got,
            [
                "Filter.1.Name=name",
                "Filter.1.Value.1=a*",
                "Filter.1.Value.2=b",
                "Filter.2.Name=tag:k",
                "Filter.2.Value.1=v",
                "TagSpecification.1.ResourceType=instance",
                "TagSpecification.1.Tag.1.Key=A",
                "TagSpecification.1.Tag.1.Value=1",
            ]
        );
    }

    #[test]
    fn parses_an_instance() {
        let x = r#"<RunInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId>
<instancesSet><item><instanceId>i-1</instanceId><imageId>ami-1</imageId><instanceState><code>0</code><name>pending</name></instanceState>
<privateIpAddress>10.0.0.5</privateIpAddress><keyName>k</keyName><clientToken>tok</clientToken><placement><availabilityZone>us-east-1a</availabilityZone></placement>
<groupSet><item><groupId>sg-1</groupId></item></groupSet><tagSet><item><key>Name</key><value>x</value></item></tagSet></item></instancesSet></RunInstancesResponse>"#;
        let doc = roxmltree::Document::parse(x).unwrap();
        let i = parse_instance(first_set(&doc, "instancesSet")[0]);
        assert_eq!(i.id, "i-1");
        assert_eq!(i.state, "pending");
        assert_eq!(i.private_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(i.client_token.as_deref(), Some("tok"));
        assert_eq!(i.availability_zone.as_deref(), Some("us-east-1a"));
        assert_eq!(i.security_group_ids, ["sg-1"]);
        assert_eq!(i.tags["Name"], "x");
    }
}
