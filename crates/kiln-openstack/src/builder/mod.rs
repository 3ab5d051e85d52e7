//! The `openstack` builder (Packer 1.6.6 compatible): launch a server from
//! a source image, reach it over SSH, provision it, stop it, snapshot it
//! into a Glance image.
//!
//! The steps, in Packer's order, one module each (with its cleanup):
//! [`flavor`], [`keypair`], [`source_image`], [`network`], [`volume`]
//! (`use_blockstorage_volume`), [`server`], [`floating_ip`], [`address`],
//! then kiln's common connect and provision steps
//! ([`kiln_commonsteps::StepConnect`], [`kiln_commonsteps::StepProvision`]),
//! then the server's stop, the volume's detach and the [`image`]. The
//! waits are in [`wait`].
//!
//! Every create request (key pair, volume, server, floating IP, image)
//! goes through [`kiln_commonsteps::create::Create`]: recorded in the
//! build's ledger before it is sent, run to its answer even when the step
//! is dropped (Ctrl-C), settled and, when its outcome is unknown, looked
//! for (servers and volumes carry [`MARKER_KEY`] in their metadata) by the
//! step's cleanup, so that a failure, a timeout or a Ctrl-C at any point
//! leaves nothing. Unlike Packer, a half-made image is deleted too when the
//! build fails after requesting it.
pub mod address;
pub mod artifact;
pub mod config;
pub mod flavor;
pub mod floating_ip;
pub mod image;
pub mod keypair;
pub mod network;
pub mod server;
pub mod source_image;
pub mod state;
pub mod volume;
pub mod wait;

pub use address::comm_host;
pub use artifact::ImageArtifact;
pub use config::{Config, ImageFilter, SourceImage};
/// What [`OpenStackBuilder::with_connector`] takes (re-exported for
/// callers that depend on kiln-openstack alone).
pub use kiln_commonsteps::Connector;
pub use kiln_ssh::TempKeyPair;
pub use server::MARKER_KEY;
pub use state::State;

use crate::client::{resolve_from_env, Cloud, Session};
use kiln_commonsteps::{SshConnector, StepConnect, StepProvision};
use kiln_core::{async_trait, Artifact, BuildCtx, BuildError, Builder, Hook, Step};
use std::sync::Arc;

/// The id Packer's OpenStack artifacts carry.
pub const BUILDER_ID: &str = "mitchellh.openstack";

pub struct OpenStackBuilder {
    pub config: Config,
    /// How the communicator connects (kiln's SSH; a stand-in in tests).
    pub connector: Arc<dyn Connector>,
}

impl OpenStackBuilder {
    /// With kiln's SSH communicator, configured by the template's keys.
    pub fn new(config: Config) -> Self {
        OpenStackBuilder {
            connector: Arc::new(SshConnector::new(config.comm.clone())),
            config,
        }
    }
    /// With another way to connect (tests).
    pub fn with_connector(config: Config, connector: Arc<dyn Connector>) -> Self {
        OpenStackBuilder { config, connector }
    }
}

/// The steps for `config`.
pub fn steps<'a>(
    config: &'a Config,
    connector: Arc<dyn Connector>,
    hook: &'a dyn Hook,
) -> Vec<Box<dyn Step<State> + 'a>> {
    let mut v: Vec<Box<dyn Step<State> + 'a>> = vec![
        Box::new(flavor::LoadFlavor { c: config }),
        Box::new(keypair::KeyPair::new(config)),
        Box::new(source_image::SourceImageInfo { c: config }),
        Box::new(network::DiscoverNetwork { c: config }),
    ];
    if config.use_blockstorage_volume {
        v.push(Box::new(volume::CreateVolume::new(config)));
    }
    v.push(Box::new(server::RunServer::new(config)));
    v.push(Box::new(floating_ip::AllocateIp::new(config)));
    v.push(Box::new(address::CommHost { c: config }));
    v.push(Box::new(StepConnect {
        connector,
        none: config.comm.is_none(),
        user: config.comm.username.clone(),
    }));
    v.push(Box::new(StepProvision { hook }));
    v.push(Box::new(server::StopServer));
    if config.use_blockstorage_volume {
        v.push(Box::new(volume::DetachVolume));
    }
    v.push(Box::new(image::CreateImage::new(config)));
    v.push(Box::new(image::ImageProperties { c: config }));
    v
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
        let mut state = State::new(cloud.clone());
        let mut list = steps(&self.config, self.connector.clone(), hook);
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
