//! The communicator seam: which keys of a builder's configuration belong to
//! the SSH communicator, and how the builder gets a [`Connector`].
//!
//! By default the builder uses kiln's SSH communicator (`kiln-ssh`), which
//! decodes every communicator key; tests may install another connector
//! with [`set_connector_factory`].
use crate::builder::{CommSettings, Connector, TempKey};
use kiln_core::communicator::Communicator;
use kiln_core::{async_trait, BuildCtx, BuildError};
use kiln_ssh::{SshConfig, TempKeyPair};
use kiln_template::Decoder;
use std::sync::{Arc, OnceLock};

/// Decodes the communicator's keys; returns what the builder needs to know
/// and the connector to use.
pub type ConnectorFactory = fn(&mut Decoder<'_>) -> (CommSettings, Arc<dyn Connector>);

static FACTORY: OnceLock<ConnectorFactory> = OnceLock::new();

/// Install the SSH communicator (once, at start-up).
pub fn set_connector_factory(f: ConnectorFactory) {
    let _ = FACTORY.set(f);
}

pub(crate) fn decode(d: &mut Decoder<'_>) -> (CommSettings, Arc<dyn Connector>) {
    if let Some(f) = FACTORY.get() {
        return f(d);
    }
    let ssh = SshConfig::decode(d);
    let settings = CommSettings {
        none: ssh.is_none(),
        host: ssh.host.clone(),
        port: ssh.port,
        username: ssh.username.clone(),
        keypair_name: ssh.keypair_name.clone(),
        has_private_key_file: ssh.private_key_file.is_some(),
        has_password: ssh.password.is_some(),
        agent_auth: ssh.agent_auth,
        temporary_key_pair_name: ssh.temporary_key_pair_name.clone(),
    };
    (settings, Arc::new(SshConnector { ssh }))
}

/// kiln's SSH communicator (`kiln-ssh`): the default connector.
struct SshConnector {
    ssh: SshConfig,
}

#[async_trait]
impl Connector for SshConnector {
    fn generate_key(&self) -> Result<TempKey, BuildError> {
        // `temporary_key_pair_type`/`_bits` when the template sets them
        // (Packer's builder lets Nova make an RSA key and ignores them);
        // else ed25519, quick to make and accepted by every current sshd.
        let k = TempKeyPair::for_config(&self.ssh, kiln_ssh::TempKeyType::Ed25519)
            .map_err(BuildError::msg)?;
        Ok(TempKey {
            private_openssh: k.private_openssh,
            public_authorized: k.public_authorized,
        })
    }
    async fn connect(
        &self,
        ctx: &BuildCtx,
        host: &str,
        key: Option<&TempKey>,
    ) -> Result<Arc<dyn Communicator>, BuildError> {
        let pair = key.map(|k| TempKeyPair {
            // The comment of the public key is the pair's name.
            name: k
                .public_authorized
                .split_whitespace()
                .nth(2)
                .unwrap_or("kiln")
                .to_string(),
            private_openssh: k.private_openssh.clone(),
            public_authorized: k.public_authorized.clone(),
        });
        let c = kiln_ssh::connect(&self.ssh, host, self.ssh.port, pair.as_ref(), ctx).await?;
        Ok(c)
    }
}
