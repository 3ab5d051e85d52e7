//! The communicator seam: which keys of a builder's configuration belong to
//! the SSH communicator, and how the builder gets a [`Connector`].
//!
//! kiln's SSH communicator (`kiln-ssh`) plugs in with
//! [`set_connector_factory`]; until it has, the builder decodes the
//! communicator keys it needs itself and fails at the SSH step with a
//! clear message (`communicator: none` builds work).
use crate::builder::{CommSettings, Connector, TempKey};
use kiln_core::communicator::Communicator;
use kiln_core::{async_trait, BuildCtx, BuildError};
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
    let kind = d.string("communicator").unwrap_or_else(|| "ssh".into());
    let settings = CommSettings {
        none: kind == "none",
        host: d.string("ssh_host"),
        port: d.uint("ssh_port").unwrap_or(22) as u16,
        username: d.string("ssh_username").unwrap_or_default(),
        keypair_name: d.string("ssh_keypair_name"),
        has_private_key_file: d.string("ssh_private_key_file").is_some(),
        has_password: d.string("ssh_password").is_some(),
        agent_auth: d.bool("ssh_agent_auth").unwrap_or(false),
        temporary_key_pair_name: d.string("temporary_key_pair_name"),
    };
    (settings, Arc::new(NoSsh))
}

struct NoSsh;

#[async_trait]
impl Connector for NoSsh {
    fn generate_key(&self) -> Result<TempKey, BuildError> {
        Err(BuildError::msg(
            "kiln was built without its SSH communicator: use `communicator: none`",
        ))
    }
    async fn connect(
        &self,
        _: &BuildCtx,
        _: &str,
        _: Option<&TempKey>,
    ) -> Result<Arc<dyn Communicator>, BuildError> {
        Err(BuildError::msg(
            "kiln was built without its SSH communicator: use `communicator: none`",
        ))
    }
}
