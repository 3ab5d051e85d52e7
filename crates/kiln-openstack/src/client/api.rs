//! The Nova, Neutron, Glance and Cinder calls kiln needs, on a [`Session`].
use super::error::OsError;
use super::session::{Body, Service, Session};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

fn s(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(|x| x.as_str())
        .unwrap_or_default()
        .to_string()
}
fn opt_s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(|x| x.as_str()).map(String::from)
}
fn enc(x: &str) -> String {
    let mut out = String::new();
    for b in x.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(|m| m.as_object())
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect()
}
fn field<'a>(v: &'a Value, k: &str, what: &str) -> Result<&'a Value, OsError> {
    v.get(k)
        .ok_or_else(|| OsError::Protocol(format!("{what}: answer without `{k}`")))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flavor {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub id: String,
    pub status: String,
    pub task_state: Option<String>,
    pub fault: Option<String>,
    pub access_ipv4: Option<String>,
    pub name: String,
    pub key_name: Option<String>,
    /// The server's metadata (`instance_metadata`, and kiln's marker).
    pub metadata: BTreeMap<String, String>,
    /// network name -> addresses
    pub addresses: BTreeMap<String, Vec<Address>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub addr: String,
    pub version: u8,
    pub floating: bool,
}

impl Server {
    fn from(v: &Value) -> Server {
        let mut addresses = BTreeMap::new();
        if let Some(m) = v.get("addresses").and_then(|a| a.as_object()) {
            for (net, list) in m {
                let l = list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| Address {
                        addr: s(a, "addr"),
                        version: a.get("version").and_then(|v| v.as_u64()).unwrap_or(4) as u8,
                        floating: a.get("OS-EXT-IPS:type").and_then(|t| t.as_str())
                            == Some("floating"),
                    })
                    .collect();
                addresses.insert(net.clone(), l);
            }
        }
        Server {
            id: s(v, "id"),
            status: s(v, "status"),
            task_state: opt_s(v, "OS-EXT-STS:task_state"),
            fault: v
                .pointer("/fault/message")
                .and_then(|m| m.as_str())
                .map(String::from),
            access_ipv4: opt_s(v, "accessIPv4").filter(|a| !a.is_empty()),
            name: s(v, "name"),
            key_name: opt_s(v, "key_name"),
            metadata: string_map(v.get("metadata")),
            addresses,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIp {
    pub id: String,
    pub address: String,
    pub port_id: Option<String>,
    pub network_id: String,
}

impl FloatingIp {
    fn from(v: &Value) -> FloatingIp {
        FloatingIp {
            id: s(v, "id"),
            address: s(v, "floating_ip_address"),
            port_id: opt_s(v, "port_id"),
            network_id: s(v, "floating_network_id"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub status: String,
    pub size: Option<u64>,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub visibility: Option<String>,
    pub owner: Option<String>,
    pub created_at: Option<String>,
    pub min_disk: Option<u64>,
    pub tags: Vec<String>,
    pub raw: Value,
}

impl Image {
    pub fn from(v: &Value) -> Image {
        Image {
            id: s(v, "id"),
            name: s(v, "name"),
            status: s(v, "status"),
            size: v.get("size").and_then(|x| x.as_u64()),
            checksum: opt_s(v, "checksum"),
            os_hash_algo: opt_s(v, "os_hash_algo"),
            os_hash_value: opt_s(v, "os_hash_value"),
            disk_format: opt_s(v, "disk_format"),
            container_format: opt_s(v, "container_format"),
            visibility: opt_s(v, "visibility"),
            owner: opt_s(v, "owner"),
            created_at: opt_s(v, "created_at"),
            min_disk: v.get("min_disk").and_then(|x| x.as_u64()),
            tags: v
                .get("tags")
                .and_then(|t| t.as_array())
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(String::from))
                .collect(),
            raw: v.clone(),
        }
    }
}

/// Options of `POST /servers`.
#[derive(Debug, Clone, Default)]
pub struct ServerCreate {
    pub name: String,
    pub image_ref: Option<String>,
    pub flavor_ref: String,
    pub networks: Vec<String>,
    pub ports: Vec<String>,
    pub security_groups: Vec<String>,
    pub availability_zone: Option<String>,
    pub user_data: Option<Vec<u8>>,
    pub config_drive: bool,
    pub metadata: BTreeMap<String, String>,
    pub key_name: Option<String>,
    pub boot_volume: Option<String>,
}

impl ServerCreate {
    pub fn body(&self) -> Value {
        use base64::Engine;
        let mut m = serde_json::Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("flavorRef".into(), json!(self.flavor_ref));
        match (&self.boot_volume, &self.image_ref) {
            (Some(vol), _) => {
                m.insert("imageRef".into(), json!(""));
                m.insert(
                    "block_device_mapping_v2".into(),
                    json!([{"boot_index": 0, "uuid": vol, "source_type": "volume",
                            "destination_type": "volume", "delete_on_termination": false}]),
                );
            }
            (None, Some(img)) => {
                m.insert("imageRef".into(), json!(img));
            }
            (None, None) => {}
        }
        let mut nets: Vec<Value> = self.networks.iter().map(|n| json!({"uuid": n})).collect();
        nets.extend(self.ports.iter().map(|p| json!({"port": p})));
        if !nets.is_empty() {
            m.insert("networks".into(), Value::Array(nets));
        }
        if !self.security_groups.is_empty() {
            m.insert(
                "security_groups".into(),
                Value::Array(
                    self.security_groups
                        .iter()
                        .map(|g| json!({"name": g}))
                        .collect(),
                ),
            );
        }
        if let Some(az) = &self.availability_zone {
            m.insert("availability_zone".into(), json!(az));
        }
        if let Some(ud) = &self.user_data {
            m.insert(
                "user_data".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(ud)),
            );
        }
        if self.config_drive {
            m.insert("config_drive".into(), json!(true));
        }
        if !self.metadata.is_empty() {
            m.insert("metadata".into(), json!(self.metadata));
        }
        if let Some(k) = &self.key_name {
            m.insert("key_name".into(), json!(k));
        }
        json!({ "server": m })
    }
}

/// The OpenStack APIs of one session.
#[derive(Clone)]
pub struct Cloud {
    pub session: Arc<Session>,
}

impl Cloud {
    pub fn new(session: Arc<Session>) -> Cloud {
        Cloud { session }
    }

    async fn get(&self, svc: Service, path: &str) -> Result<Value, OsError> {
        self.session.json(svc, Method::GET, path, None).await
    }
    async fn delete(&self, svc: Service, path: &str) -> Result<(), OsError> {
        self.session
            .request(svc, Method::DELETE, path, Body::None)
            .await
            .map(|_| ())
    }

    // ---- Nova

    /// A flavor by id, else by name (Packer's order).
    pub async fn find_flavor(&self, name_or_id: &str) -> Result<Flavor, OsError> {
        match self
            .get(Service::Compute, &format!("/flavors/{}", enc(name_or_id)))
            .await
        {
            Ok(v) => {
                let f = field(&v, "flavor", "flavor")?;
                return Ok(Flavor {
                    id: s(f, "id"),
                    name: s(f, "name"),
                });
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let v = self
            .get(Service::Compute, "/flavors?is_public=None")
            .await?;
        let matches: Vec<Flavor> = v
            .get("flavors")
            .and_then(|f| f.as_array())
            .into_iter()
            .flatten()
            .filter(|f| s(f, "name") == name_or_id)
            .map(|f| Flavor {
                id: s(f, "id"),
                name: s(f, "name"),
            })
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().unwrap_or_else(|| unreachable!())),
            0 => Err(OsError::Config(format!(
                "no flavor with id or name {name_or_id:?}"
            ))),
            n => Err(OsError::Config(format!(
                "{n} flavors are named {name_or_id:?}: give its id"
            ))),
        }
    }

    pub async fn create_keypair(&self, name: &str, public_key: &str) -> Result<(), OsError> {
        self.session
            .json(
                Service::Compute,
                Method::POST,
                "/os-keypairs",
                Some(json!({"keypair": {"name": name, "public_key": public_key}})),
            )
            .await
            .map(|_| ())
    }

    pub async fn delete_keypair(&self, name: &str) -> Result<(), OsError> {
        self.delete(Service::Compute, &format!("/os-keypairs/{}", enc(name)))
            .await
    }

    pub async fn keypair_names(&self) -> Result<Vec<String>, OsError> {
        let v = self.get(Service::Compute, "/os-keypairs").await?;
        Ok(v.get("keypairs")
            .and_then(|k| k.as_array())
            .into_iter()
            .flatten()
            .filter_map(|k| k.pointer("/keypair/name").and_then(|n| n.as_str()))
            .map(String::from)
            .collect())
    }

    pub async fn create_server(&self, opts: &ServerCreate) -> Result<String, OsError> {
        let v = self
            .session
            .json(
                Service::Compute,
                Method::POST,
                "/servers",
                Some(opts.body()),
            )
            .await?;
        let id = v
            .pointer("/server/id")
            .and_then(|x| x.as_str())
            .ok_or_else(|| OsError::Protocol("server create: answer without server.id".into()))?;
        Ok(id.to_string())
    }

    pub async fn get_server(&self, id: &str) -> Result<Server, OsError> {
        let v = self
            .get(Service::Compute, &format!("/servers/{id}"))
            .await?;
        Ok(Server::from(field(&v, "server", "server")?))
    }

    pub async fn list_servers(&self) -> Result<Vec<Server>, OsError> {
        let v = self.get(Service::Compute, "/servers/detail").await?;
        Ok(v.get("servers")
            .and_then(|x| x.as_array())
            .into_iter()
            .flatten()
            .map(Server::from)
            .collect())
    }

    pub async fn server_action(
        &self,
        id: &str,
        action: Value,
    ) -> Result<reqwest::Response, OsError> {
        self.session
            .request(
                Service::Compute,
                Method::POST,
                &format!("/servers/{id}/action"),
                Body::Json(action),
            )
            .await
    }

    pub async fn delete_server(&self, id: &str, force: bool) -> Result<(), OsError> {
        if force {
            self.server_action(id, json!({"forceDelete": null}))
                .await
                .map(|_| ())
        } else {
            self.delete(Service::Compute, &format!("/servers/{id}"))
                .await
        }
    }

    /// `createImage`: the new image's id (from the body with microversion
    /// 2.45+, from the `Location` header before).
    pub async fn create_server_image(
        &self,
        id: &str,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String, OsError> {
        let mut body = json!({"createImage": {"name": name}});
        if !metadata.is_empty() {
            body["createImage"]["metadata"] = json!(metadata);
        }
        let resp = self.server_action(id, body).await?;
        let loc = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(String::from);
        let bytes = resp.bytes().await.unwrap_or_default();
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            if let Some(i) = v.get("image_id").and_then(|x| x.as_str()) {
                return Ok(i.to_string());
            }
        }
        loc.and_then(|l| l.trim_end_matches('/').rsplit('/').next().map(String::from))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| OsError::Protocol("createImage: no image id in the answer".into()))
    }

    pub async fn detach_volume(&self, server: &str, volume: &str) -> Result<(), OsError> {
        self.delete(
            Service::Compute,
            &format!("/servers/{server}/os-volume_attachments/{volume}"),
        )
        .await
    }

    // ---- Neutron

    /// A network id from a name or an id.
    pub async fn network_id(&self, name_or_id: &str) -> Result<String, OsError> {
        let v = self
            .get(
                Service::Network,
                &format!("/networks?name={}&fields=id", enc(name_or_id)),
            )
            .await?;
        let ids: Vec<String> = v
            .get("networks")
            .and_then(|n| n.as_array())
            .into_iter()
            .flatten()
            .map(|n| s(n, "id"))
            .collect();
        match ids.len() {
            1 => return Ok(ids[0].clone()),
            0 => {}
            n => {
                return Err(OsError::Config(format!(
                    "{n} networks are named {name_or_id:?}: give its id"
                )))
            }
        }
        match self
            .get(Service::Network, &format!("/networks/{}", enc(name_or_id)))
            .await
        {
            Ok(v) => Ok(s(field(&v, "network", "network")?, "id")),
            Err(e) if e.is_not_found() => Err(OsError::Config(format!(
                "no network with name or id {name_or_id:?}"
            ))),
            Err(e) => Err(e),
        }
    }

    pub async fn create_floating_ip(
        &self,
        network_id: &str,
        port_id: Option<&str>,
    ) -> Result<FloatingIp, OsError> {
        let mut fip = json!({"floating_network_id": network_id});
        if let Some(p) = port_id {
            fip["port_id"] = json!(p);
        }
        let v = self
            .session
            .json(
                Service::Network,
                Method::POST,
                "/floatingips",
                Some(json!({ "floatingip": fip })),
            )
            .await?;
        Ok(FloatingIp::from(field(&v, "floatingip", "floating IP")?))
    }

    pub async fn get_floating_ip(&self, id: &str) -> Result<FloatingIp, OsError> {
        let v = self
            .get(Service::Network, &format!("/floatingips/{id}"))
            .await?;
        Ok(FloatingIp::from(field(&v, "floatingip", "floating IP")?))
    }

    pub async fn list_floating_ips(&self) -> Result<Vec<FloatingIp>, OsError> {
        let v = self.get(Service::Network, "/floatingips").await?;
        Ok(v.get("floatingips")
            .and_then(|x| x.as_array())
            .into_iter()
            .flatten()
            .map(FloatingIp::from)
            .collect())
    }

    pub async fn update_floating_ip_port(
        &self,
        id: &str,
        port_id: Option<&str>,
    ) -> Result<FloatingIp, OsError> {
        let v = self
            .session
            .json(
                Service::Network,
                Method::PUT,
                &format!("/floatingips/{id}"),
                Some(json!({"floatingip": {"port_id": port_id}})),
            )
            .await?;
        Ok(FloatingIp::from(field(&v, "floatingip", "floating IP")?))
    }

    pub async fn delete_floating_ip(&self, id: &str) -> Result<(), OsError> {
        self.delete(Service::Network, &format!("/floatingips/{id}"))
            .await
    }

    /// The server's ports (optionally only those on `network_id`).
    pub async fn server_ports(
        &self,
        server: &str,
        network_id: Option<&str>,
    ) -> Result<Vec<String>, OsError> {
        let mut q = format!("/ports?device_id={}&fields=id", enc(server));
        if let Some(n) = network_id {
            q.push_str(&format!("&network_id={}", enc(n)));
        }
        let v = self.get(Service::Network, &q).await?;
        Ok(v.get("ports")
            .and_then(|x| x.as_array())
            .into_iter()
            .flatten()
            .map(|p| s(p, "id"))
            .collect())
    }

    // ---- Glance

    pub async fn get_image(&self, id: &str) -> Result<Image, OsError> {
        let v = self
            .get(Service::Image, &format!("/images/{}", enc(id)))
            .await?;
        Ok(Image::from(&v))
    }

    /// `GET /images` with filters (`name`, `owner`, `visibility`, `tag`,
    /// properties, `sort`, `limit`); follows `next` links.
    pub async fn list_images(&self, query: &[(String, String)]) -> Result<Vec<Image>, OsError> {
        let qs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        let mut path = format!("/images?{}", qs.join("&"));
        let mut out = Vec::new();
        for _ in 0..100 {
            let v = self.get(Service::Image, &path).await?;
            out.extend(
                v.get("images")
                    .and_then(|x| x.as_array())
                    .into_iter()
                    .flatten()
                    .map(Image::from),
            );
            match v.get("next").and_then(|n| n.as_str()) {
                Some(n) => path = n.strip_prefix("/v2").unwrap_or(n).to_string(),
                None => break,
            }
        }
        Ok(out)
    }

    pub async fn create_image(&self, body: Value) -> Result<Image, OsError> {
        let v = self
            .session
            .json(Service::Image, Method::POST, "/images", Some(body))
            .await?;
        Ok(Image::from(&v))
    }

    pub async fn patch_image(&self, id: &str, ops: Value) -> Result<Image, OsError> {
        let resp = self
            .session
            .request(
                Service::Image,
                Method::PATCH,
                &format!("/images/{id}"),
                Body::JsonPatch(ops),
            )
            .await?;
        let v: Value = resp
            .json()
            .await
            .map_err(|e| OsError::Protocol(format!("image update: {e}")))?;
        Ok(Image::from(&v))
    }

    pub async fn add_image_member(&self, id: &str, member: &str) -> Result<(), OsError> {
        self.session
            .json(
                Service::Image,
                Method::POST,
                &format!("/images/{id}/members"),
                Some(json!({ "member": member })),
            )
            .await
            .map(|_| ())
    }

    pub async fn accept_image_member(&self, id: &str, member: &str) -> Result<(), OsError> {
        self.session
            .json(
                Service::Image,
                Method::PUT,
                &format!("/images/{id}/members/{member}"),
                Some(json!({"status": "accepted"})),
            )
            .await
            .map(|_| ())
    }

    pub async fn delete_image(&self, id: &str) -> Result<(), OsError> {
        self.delete(Service::Image, &format!("/images/{id}")).await
    }

    /// Start downloading an image's data.
    pub async fn download_image(&self, id: &str) -> Result<reqwest::Response, OsError> {
        self.session
            .request(
                Service::Image,
                Method::GET,
                &format!("/images/{id}/file"),
                Body::None,
            )
            .await
    }

    /// Upload an image's data from a stream.
    pub async fn upload_image(
        &self,
        id: &str,
        body: reqwest::Body,
        len: Option<u64>,
    ) -> Result<(), OsError> {
        // A fresh token for a long upload: it cannot be replayed on a 401.
        let _ = self.session.token().await?;
        self.session
            .request(
                Service::Image,
                Method::PUT,
                &format!("/images/{id}/file"),
                Body::Stream(body, len),
            )
            .await
            .map(|_| ())
    }

    // ---- Cinder

    pub async fn create_volume(
        &self,
        name: &str,
        size_gb: u64,
        image_ref: &str,
        volume_type: Option<&str>,
        az: Option<&str>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String, OsError> {
        let mut v = json!({"name": name, "size": size_gb, "imageRef": image_ref});
        if !metadata.is_empty() {
            v["metadata"] = json!(metadata);
        }
        if let Some(t) = volume_type {
            v["volume_type"] = json!(t);
        }
        if let Some(a) = az {
            v["availability_zone"] = json!(a);
        }
        let r = self
            .session
            .json(
                Service::Volume,
                Method::POST,
                "/volumes",
                Some(json!({ "volume": v })),
            )
            .await?;
        r.pointer("/volume/id")
            .and_then(|x| x.as_str())
            .map(String::from)
            .ok_or_else(|| OsError::Protocol("volume create: answer without volume.id".into()))
    }

    /// The ids and metadata of the project's volumes named `name`.
    pub async fn volumes_named(
        &self,
        name: &str,
    ) -> Result<Vec<(String, BTreeMap<String, String>)>, OsError> {
        let v = self
            .get(
                Service::Volume,
                &format!("/volumes/detail?name={}", enc(name)),
            )
            .await?;
        Ok(v.get("volumes")
            .and_then(|x| x.as_array())
            .into_iter()
            .flatten()
            .filter(|x| s(x, "name") == name)
            .map(|x| (s(x, "id"), string_map(x.get("metadata"))))
            .collect())
    }

    pub async fn volume_status(&self, id: &str) -> Result<String, OsError> {
        let v = self.get(Service::Volume, &format!("/volumes/{id}")).await?;
        Ok(s(field(&v, "volume", "volume")?, "status"))
    }

    pub async fn delete_volume(&self, id: &str) -> Result<(), OsError> {
        self.delete(Service::Volume, &format!("/volumes/{id}"))
            .await
    }

    /// `os-volume_upload_image`: the new image's id.
    pub async fn volume_to_image(
        &self,
        id: &str,
        image_name: &str,
        disk_format: Option<&str>,
    ) -> Result<String, OsError> {
        let mut a = json!({"image_name": image_name, "force": true});
        if let Some(f) = disk_format {
            a["disk_format"] = json!(f);
        }
        let v = self
            .session
            .json(
                Service::Volume,
                Method::POST,
                &format!("/volumes/{id}/action"),
                Some(json!({ "os-volume_upload_image": a })),
            )
            .await?;
        v.pointer("/os-volume_upload_image/image_id")
            .and_then(|x| x.as_str())
            .map(String::from)
            .ok_or_else(|| OsError::Protocol("volume upload: answer without image_id".into()))
    }

    pub async fn set_volume_image_metadata(
        &self,
        id: &str,
        md: &BTreeMap<String, String>,
    ) -> Result<(), OsError> {
        self.session
            .json(
                Service::Volume,
                Method::POST,
                &format!("/volumes/{id}/action"),
                Some(json!({"os-set_image_metadata": {"metadata": md}})),
            )
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_create_body() {
        let o = ServerCreate {
            name: "ubuntu precise".into(),
            image_ref: Some("img".into()),
            flavor_ref: "2".into(),
            security_groups: vec!["ssh".into()],
            key_name: Some("packer_x".into()),
            user_data: Some(b"#!/bin/sh\n".to_vec()),
            ..Default::default()
        };
        let b = o.body();
        assert_eq!(b["server"]["imageRef"], "img");
        assert_eq!(b["server"]["security_groups"][0]["name"], "ssh");
        assert_eq!(b["server"]["user_data"], "IyEvYmluL3NoCg==");
        assert!(b["server"].get("networks").is_none());
        assert!(b["server"].get("config_drive").is_none());
        let o = ServerCreate {
            boot_volume: Some("vol".into()),
            image_ref: Some("img".into()),
            networks: vec!["n1".into()],
            ports: vec!["p1".into()],
            config_drive: true,
            ..Default::default()
        };
        let b = o.body();
        assert_eq!(b["server"]["imageRef"], "");
        assert_eq!(b["server"]["block_device_mapping_v2"][0]["uuid"], "vol");
        assert_eq!(
            b["server"]["networks"],
            json!([{"uuid": "n1"}, {"port": "p1"}])
        );
        assert_eq!(b["server"]["config_drive"], true);
    }

    #[test]
    fn server_addresses() {
        let v = json!({"id": "s", "status": "ACTIVE", "addresses": {"private": [
            {"addr": "10.0.0.5", "version": 4, "OS-EXT-IPS:type": "fixed"},
            {"addr": "127.0.0.12", "version": 4, "OS-EXT-IPS:type": "floating"}]}});
        let s = Server::from(&v);
        assert_eq!(s.addresses["private"].len(), 2);
        assert!(s.addresses["private"][1].floating);
    }

    #[test]
    fn url_encoding() {
        assert_eq!(enc("ubuntu precise/x"), "ubuntu%20precise%2Fx");
    }
}
