//! Where the communicator connects: Packer's `CommHost` rules, and the
//! step that hands the address, the port and the temporary key to the
//! common connect step ([`kiln_commonsteps::StepConnect`]).
use super::wait::{wait_for, Poll};
use super::{Config, State};
use kiln_core::{async_trait, BuildCtx, BuildError, Step};
use std::time::Duration;

/// The address to connect to (Packer's CommHost): `ssh_host`; else an
/// address on `ssh_interface`; else the floating IP; else accessIPv4; else
/// any address of the server (of `ssh_ip_version`).
pub fn comm_host(c: &Config, s: &State) -> Option<String> {
    if let Some(h) = &c.comm.host {
        return Some(h.clone());
    }
    let server = s.server.as_ref()?;
    let from_pool = |desired: Option<&str>| -> Option<String> {
        for (pool, addrs) in &server.addresses {
            if desired.is_some_and(|d| d != pool) {
                continue;
            }
            for a in addrs {
                let v = c.ssh_ip_version.as_deref();
                if a.floating
                    || v.is_none()
                    || (v == Some("4") && a.version == 4)
                    || (v == Some("6") && a.version == 6)
                {
                    return Some(if a.version == 6 && !a.floating {
                        format!("[{}]", a.addr)
                    } else {
                        a.addr.clone()
                    });
                }
            }
        }
        None
    };
    if let Some(i) = &c.ssh_interface {
        if let Some(a) = from_pool(Some(i)) {
            return Some(a);
        }
    }
    if let Some(f) = &s.floating_ip {
        return Some(f.address.clone());
    }
    if let Some(a) = &server.access_ipv4 {
        return Some(a.clone());
    }
    from_pool(c.ssh_interface.as_deref())
}

/// Finds the server's address (waiting a little for Nova to report one),
/// and sets what [`kiln_commonsteps::StepConnect`] connects with. Nothing
/// to do with `communicator: none`.
pub(super) struct CommHost<'a> {
    pub c: &'a Config,
}

#[async_trait]
impl Step<State> for CommHost<'_> {
    fn name(&self) -> &'static str {
        "server address"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        if self.c.comm.is_none() {
            return Ok(());
        }
        let mut host = comm_host(self.c, s);
        if host.is_none() {
            // Addresses appear a moment after ACTIVE on some clouds.
            let (cloud, id) = (&s.cloud, s.server_id());
            let sv = wait_for(
                "couldn't determine IP address for server",
                Duration::from_secs(120),
                || async {
                    let sv = cloud.get_server(&id).await?;
                    Ok(if sv.addresses.values().any(|a| !a.is_empty()) {
                        Poll::Ready(sv)
                    } else {
                        Poll::Pending
                    })
                },
            )
            .await?;
            s.server = Some(sv);
            host = comm_host(self.c, s);
        }
        let host =
            host.ok_or_else(|| BuildError::msg("couldn't determine IP address for server"))?;
        ctx.ui
            .say(&format!("Using ssh communicator to connect: {host}"));
        if let Some(k) = &s.machine.key {
            ctx.set_generated("SSHPublicKey", k.public_authorized.trim().to_string());
            ctx.set_generated("SSHPrivateKey", k.private_openssh.clone());
        }
        s.machine.host = Some(host);
        s.machine.port = Some(self.c.comm.port);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::api::{Address, FloatingIp, Server};
    use crate::client::{AuthOptions, Cloud, Session};
    use std::sync::Arc;

    #[test]
    fn comm_host_follows_packer() {
        let session = Session::new(AuthOptions {
            auth_url: "http://127.0.0.1:1/v3".into(),
            ..Default::default()
        })
        .unwrap();
        let mut s = State::new(Cloud::new(Arc::new(session)));
        let mut c = Config::default();
        let a = |addr: &str, version: u8, floating: bool| Address {
            addr: addr.into(),
            version,
            floating,
        };
        s.server = Some(Server {
            id: "s".into(),
            status: "ACTIVE".into(),
            task_state: None,
            fault: None,
            access_ipv4: None,
            name: "n".into(),
            key_name: None,
            metadata: Default::default(),
            addresses: [
                ("net6".to_string(), vec![a("fd00::5", 6, false)]),
                ("private".to_string(), vec![a("10.0.0.5", 4, false)]),
            ]
            .into(),
        });
        // Any address: the first network's.
        assert_eq!(comm_host(&c, &s).as_deref(), Some("[fd00::5]"));
        c.ssh_ip_version = Some("4".into());
        assert_eq!(comm_host(&c, &s).as_deref(), Some("10.0.0.5"));
        c.ssh_ip_version = None;
        // A floating IP wins over fixed addresses...
        s.floating_ip = Some(FloatingIp {
            id: "f".into(),
            address: "127.0.0.12".into(),
            port_id: None,
            network_id: "n".into(),
        });
        assert_eq!(comm_host(&c, &s).as_deref(), Some("127.0.0.12"));
        // ...but not over ssh_interface...
        c.ssh_interface = Some("private".into());
        assert_eq!(comm_host(&c, &s).as_deref(), Some("10.0.0.5"));
        // ...and ssh_host wins over everything.
        c.comm.host = Some("bastion.example".into());
        assert_eq!(comm_host(&c, &s).as_deref(), Some("bastion.example"));
    }
}
