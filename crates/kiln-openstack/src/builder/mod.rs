//! The `openstack` builder (Packer 1.6.6 compatible): launch a server from
//! a source image, reach it over SSH, provision it, stop it, snapshot it
//! into a Glance image. Every step cleans up after itself; unlike Packer,
//! a half-made image is deleted too when the build fails after requesting
//! it.
pub mod artifact;
pub mod config;
pub mod steps;

pub use artifact::ImageArtifact;
pub use config::{CommSettings, Config, ImageFilter, SourceImage};
pub use steps::MARKER_KEY;

use crate::client::{resolve_from_env, Cloud, Session};
use kiln_core::communicator::Communicator;
use kiln_core::{async_trait, Artifact, BuildCtx, BuildError, Builder, Hook};
use std::sync::Arc;

/// The id Packer's OpenStack artifacts carry.
pub const BUILDER_ID: &str = "mitchellh.openstack";

/// A temporary SSH key pair.
#[derive(Clone)]
pub struct TempKey {
    /// OpenSSH private key (PEM text).
    pub private_openssh: String,
    /// `ssh-ed25519 AAAA... comment`.
    pub public_authorized: String,
}

/// How the builder reaches the server: the SSH communicator in kiln, a
/// stand-in in tests.
#[async_trait]
pub trait Connector: Send + Sync {
    /// A new key pair for a temporary Nova key pair.
    fn generate_key(&self) -> Result<TempKey, BuildError>;
    /// Connect to `host` (retrying until the communicator's timeout);
    /// authenticate with `key` when the key pair is temporary.
    async fn connect(
        &self,
        ctx: &BuildCtx,
        host: &str,
        key: Option<&TempKey>,
    ) -> Result<Arc<dyn Communicator>, BuildError>;
}

pub struct OpenStackBuilder {
    pub config: Config,
    pub connector: Arc<dyn Connector>,
}

#[async_trait]
impl Builder for OpenStackBuilder {
    async fn run(
        &self,
        ctx: &BuildCtx,
        hook: &dyn Hook,
    ) -> Result<Option<Arc<dyn Artifact>>, BuildError> {
        let opts = resolve_from_env(&self.config.access)?;
        for s in opts.secrets() {
            ctx.ui.add_secret(&s);
        }
        let session = ctx
            .cancellable(async { Ok(Session::connect(opts).await?) })
            .await?;
        let cloud = Cloud::new(session);
        let mut state = steps::State::new(cloud.clone(), self.connector.clone());
        let mut list = steps::steps(&self.config, hook);
        kiln_core::run_steps(&mut list, &mut state, ctx).await?;
        // Every step succeeded: the image is the build's artifact.
        match state.image_id.take() {
            Some(id) => {
                ctx.set_generated("ImageID", id.clone());
                Ok(Some(Arc::new(ImageArtifact::new(cloud, id))))
            }
            None => Ok(None),
        }
    }
}
