//! The floating IP the communicator reaches the server by: a given one
//! (`floating_ip`), a free one of the project's (`reuse_ips`), or a
//! temporary one from `floating_ip_network` made on the server's port and
//! deleted by the cleanup. Given and reused ones are not kiln's: deleting
//! the server gives them back.
use super::{Config, State};
use crate::client::api::FloatingIp;
use crate::client::{Cloud, OsError};
use kiln_commonsteps::create::{Create, Resource};
use kiln_core::{async_trait, BuildCtx, BuildError, Outcome, Step};
use std::time::Duration;

pub(super) struct AllocateIp<'a> {
    c: &'a Config,
    /// The port a temporary floating IP is made on (cleanup looks for it
    /// there).
    port: String,
    create: Create<FloatingIp, OsError>,
}

impl<'a> AllocateIp<'a> {
    pub fn new(c: &'a Config) -> Self {
        AllocateIp {
            c,
            port: String::new(),
            create: Create::new("floating IP").labelled(|f: &FloatingIp| {
                format!("floating IP {} {} (openstack)", f.id, f.address)
            }),
        }
    }
}

#[async_trait]
impl Step<State> for AllocateIp<'_> {
    fn name(&self) -> &'static str {
        "allocate floating IP"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        if c.floating_ip.is_none() && !c.reuse_ips && c.floating_ip_network.is_none() {
            ctx.ui.message("Floating IP not required");
            return Ok(());
        }
        let server_id = s.server_id();
        let fip_net = match &c.instance_floating_ip_net {
            Some(n) => Some(s.cloud.network_id(n).await?),
            None => None,
        };
        let fip = if let Some(want) = &c.floating_ip {
            let f = s.cloud.get_floating_ip(want).await.map_err(|e| {
                BuildError::from(e).context(format!("Error using provided floating IP '{want}'"))
            })?;
            if f.port_id.is_some() {
                return Err(BuildError::msg(format!(
                    "Error using provided floating IP '{want}': it is already associated"
                )));
            }
            ctx.ui
                .message(&format!("Selected floating IP: '{}' ({})", f.id, f.address));
            f
        } else if c.reuse_ips {
            ctx.ui.say("Searching for unassociated floating IP");
            let all = s.cloud.list_floating_ips().await?;
            let f = all
                .into_iter()
                .find(|f| f.port_id.is_none())
                .ok_or_else(|| {
                    BuildError::msg("Error searching for floating IP: no free floating IP found")
                })?;
            ctx.ui
                .message(&format!("Selected floating IP: '{}' ({})", f.id, f.address));
            f
        } else {
            let net_ref = c.floating_ip_network.as_deref().unwrap_or_default();
            let net = s.cloud.network_id(net_ref).await.map_err(|e| {
                BuildError::from(e).context("Error using the provided floating_ip_network")
            })?;
            self.port = instance_port(&s.cloud, &server_id, fip_net.as_deref()).await?;
            let port = self.port.clone();
            ctx.ui
                .say(&format!("Creating floating IP using network {net} ..."));
            // Created already bound to the server's port: one call instead
            // of Packer's create + associate.
            let (cloud, n, p) = (s.cloud.clone(), net.clone(), port.clone());
            let f = self
                .create
                .send(
                    ctx,
                    format!("floating IP on port {port} being created (openstack)"),
                    async move { cloud.create_floating_ip(&n, Some(&p)).await },
                )
                .await
                .map_err(|e| {
                    BuildError::from(e).context(format!(
                        "Error creating floating IP from floating network '{net}'"
                    ))
                })?;
            ctx.ui
                .message(&format!("Created floating IP: '{}' ({})", f.id, f.address));
            ctx.ui.say(&format!(
                "Associating floating IP '{}' ({}) with instance port...",
                f.id, f.address
            ));
            ctx.ui.message(&format!(
                "Added floating IP '{}' ({}) to instance!",
                f.id, f.address
            ));
            s.floating_ip = Some(f);
            return Ok(());
        };
        let port = instance_port(&s.cloud, &server_id, fip_net.as_deref()).await?;
        ctx.ui.say(&format!(
            "Associating floating IP '{}' ({}) with instance port...",
            fip.id, fip.address
        ));
        let f = s
            .cloud
            .update_floating_ip_port(&fip.id, Some(&port))
            .await
            .map_err(|e| {
                BuildError::from(e).context(format!(
                    "Error associating floating IP '{}' ({}) with instance port '{port}'",
                    fip.id, fip.address
                ))
            })?;
        ctx.ui.message(&format!(
            "Added floating IP '{}' ({}) to instance!",
            f.id, f.address
        ));
        s.floating_ip = Some(f);
        Ok(())
    }
    async fn cleanup(
        &mut self,
        s: &mut State,
        ctx: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        // Only a temporary floating IP went through `create`; a given or
        // reused one is left to the server's deletion, as in Packer.
        let fips = FloatingIps {
            cloud: &s.cloud,
            port: &self.port,
        };
        self.create.undo(ctx, &fips).await
    }
}

/// Floating IPs, found by the port they were made on.
struct FloatingIps<'a> {
    cloud: &'a Cloud,
    port: &'a str,
}

#[async_trait]
impl Resource for FloatingIps<'_> {
    type Item = FloatingIp;
    type Error = OsError;
    fn request_timeout(&self) -> Duration {
        self.cloud.session.request_timeout
    }
    async fn find(&self) -> Result<Vec<FloatingIp>, OsError> {
        let mut all = self.cloud.list_floating_ips().await?;
        all.retain(|f| f.port_id.as_deref() == Some(self.port));
        Ok(all)
    }
    async fn delete(&self, f: &FloatingIp) -> Result<(), OsError> {
        self.cloud.delete_floating_ip(&f.id).await
    }
    fn find_failed(&self) -> String {
        format!(
            "Error looking for the floating IP that may have been created on port {}",
            self.port
        )
    }
    fn delete_failed(&self, f: &FloatingIp) -> String {
        format!(
            "Error deleting temporary floating IP '{}' ({})",
            f.id, f.address
        )
    }
    async fn deleted(&self, ctx: &BuildCtx, f: &FloatingIp) -> Result<(), BuildError> {
        ctx.ui.say(&format!(
            "Deleted temporary floating IP '{}' ({})",
            f.id, f.address
        ));
        Ok(())
    }
}

/// The server's port to put a floating IP on (on `net` if given).
async fn instance_port(
    cloud: &Cloud,
    server_id: &str,
    net: Option<&str>,
) -> Result<String, BuildError> {
    let ports = cloud.server_ports(server_id, net).await.map_err(|e| {
        BuildError::from(e).context(format!(
            "Error getting interfaces of the instance '{server_id}'"
        ))
    })?;
    ports.into_iter().next().ok_or_else(|| {
        BuildError::msg(format!(
            "The instance '{server_id}' has no port to attach a floating IP to"
        ))
    })
}
