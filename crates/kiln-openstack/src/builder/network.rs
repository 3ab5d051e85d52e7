//! The networks the server is attached to: as given, or the first network
//! with a subnet within `network_discovery_cidrs`.
use super::{Config, State};
use kiln_core::{async_trait, BuildCtx, BuildError, Step};

pub(super) struct DiscoverNetwork<'a> {
    pub c: &'a Config,
}

#[async_trait]
impl Step<State> for DiscoverNetwork<'_> {
    fn name(&self) -> &'static str {
        "discover network"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        s.networks = self.c.networks.clone();
        if !s.networks.is_empty() || !self.c.ports.is_empty() {
            return Ok(());
        }
        if self.c.network_discovery_cidrs.is_empty() {
            return Ok(());
        }
        ctx.ui.say("Discovering provisioning network...");
        let v = s
            .cloud
            .session
            .json(
                crate::client::Service::Network,
                reqwest::Method::GET,
                "/subnets?fields=network_id&fields=cidr",
                None,
            )
            .await?;
        for sub in v
            .get("subnets")
            .and_then(|x| x.as_array())
            .into_iter()
            .flatten()
        {
            let cidr = sub.get("cidr").and_then(|c| c.as_str()).unwrap_or("");
            if self
                .c
                .network_discovery_cidrs
                .iter()
                .any(|want| cidr_within(cidr, want))
            {
                let n = sub
                    .get("network_id")
                    .and_then(|c| c.as_str())
                    .unwrap_or("")
                    .to_string();
                ctx.ui.message(&format!("Found network ID: {n}"));
                s.networks.push(n);
                return Ok(());
            }
        }
        Err(BuildError::msg(format!(
            "failed to find any network in {:?}",
            self.c.network_discovery_cidrs
        )))
    }
}

/// Is IPv4 subnet `inner` within `outer` (both `a.b.c.d/n`)?
pub fn cidr_within(inner: &str, outer: &str) -> bool {
    fn parse(c: &str) -> Option<(u32, u32)> {
        let (a, n) = c.split_once('/')?;
        let ip: std::net::Ipv4Addr = a.parse().ok()?;
        let n: u32 = n.parse().ok()?;
        (n <= 32).then_some((u32::from(ip), n))
    }
    match (parse(inner), parse(outer)) {
        (Some((i, ni)), Some((o, no))) => {
            let mask = if no == 0 { 0 } else { u32::MAX << (32 - no) };
            ni >= no && (i & mask) == (o & mask)
        }
        _ => inner == outer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert!(cidr_within("10.0.0.0/24", "10.0.0.0/16"));
        assert!(cidr_within("10.0.0.0/24", "10.0.0.0/24"));
        assert!(!cidr_within("10.0.0.0/16", "10.0.0.0/24"));
        assert!(!cidr_within("10.1.0.0/24", "10.0.0.0/16"));
        assert!(cidr_within("192.168.1.0/24", "0.0.0.0/0"));
    }
}
