//! The `amazon-ebs` builder (Packer 1.6.6 compatible): launch an instance
//! from a source AMI, reach it over SSH, provision it, stop it, image it
//! into an EBS-backed AMI, copy that to `ami_regions`.
//!
//! The steps, in Packer's order: [`source::PreValidate`] (the AMI name is
//! free), [`source::SourceAmiInfo`], [`source::NetworkInfo`],
//! [`keypair`], [`security_group`], [`instance`] (launch, address), kiln's
//! common connect and provision steps ([`kiln_commonsteps::StepConnect`],
//! [`kiln_commonsteps::StepProvision`]), the stop (and `ena_support`), then
//! [`ami`]: deregister (`force_deregister`), create, copy, attributes,
//! tags.
//!
//! Every create (key pair, security group, instance, AMI, each copy) goes
//! through [`kiln_commonsteps::create::Create`]: recorded in the build's
//! ledger before it is sent, run to its answer even when the step is
//! dropped (Ctrl-C), settled and, when its outcome is unknown, looked for
//! (the instance by its `ClientToken`, the rest by their unique names) by
//! the step's cleanup. The cleanup terminates the instance and waits for
//! it, then deletes the temporary security group and key pair; a build
//! that fails after an AMI was asked for deregisters it and deletes its
//! snapshots, in every region.
pub mod ami;
pub mod config;
pub mod instance;
pub mod keypair;
pub mod security_group;
pub mod source;
pub mod state;

pub use config::Config;
pub use state::State;

use crate::artifact::AmiArtifact;
use crate::client::Aws;
use kiln_commonsteps::{Connector, SshConnector, StepConnect, StepProvision};
use kiln_core::{async_trait, Artifact, BuildCtx, BuildError, Builder, Hook, Step};
use std::sync::Arc;

/// The id Packer's amazon-ebs artifacts carry (kept: tools match it).
pub const BUILDER_ID: &str = "mitchellh.amazonebs";

/// What `{{ build `...` }}` may name beyond the common keys (Packer's
/// `GetGeneratedDataList`).
pub const GENERATED: &[&str] = &[
    "SourceAMIName",
    "BuildRegion",
    "SourceAMI",
    "SourceAMICreationDate",
    "SourceAMIOwner",
    "SourceAMIOwnerName",
];

pub struct EbsBuilder {
    pub config: Config,
    pub connector: Arc<dyn Connector>,
}

impl EbsBuilder {
    pub fn new(config: Config) -> Self {
        EbsBuilder {
            connector: Arc::new(SshConnector::new(config.comm.clone())),
            config,
        }
    }
}

/// The steps for `config`.
pub fn steps<'a>(
    config: &'a Config,
    connector: Arc<dyn Connector>,
    hook: &'a dyn Hook,
) -> Vec<Box<dyn Step<State> + 'a>> {
    vec![
        Box::new(source::PreValidate { c: config }),
        Box::new(source::SourceAmiInfo { c: config }),
        Box::new(source::NetworkInfo { c: config }),
        Box::new(keypair::KeyPair::new(config)),
        Box::new(security_group::SecurityGroup::new(config)),
        Box::new(instance::RunInstance::new(config)),
        Box::new(instance::CommHost { c: config }),
        Box::new(StepConnect {
            connector,
            none: config.comm.is_none(),
            user: config.comm.username.clone(),
        }),
        Box::new(StepProvision { hook }),
        Box::new(instance::StopInstance { c: config }),
        Box::new(ami::Deregister { c: config }),
        Box::new(ami::CreateAmi::new(config)),
        Box::new(ami::RegionCopy::new(config)),
        Box::new(ami::ModifyAttributes { c: config }),
        Box::new(ami::CreateTags { c: config }),
    ]
}

#[async_trait]
impl Builder for EbsBuilder {
    async fn run(
        &self,
        ctx: &BuildCtx,
        hook: &dyn Hook,
    ) -> Result<Option<Arc<dyn Artifact>>, BuildError> {
        for s in self.config.access.secrets() {
            ctx.ui.add_secret(&s);
        }
        let access = self.config.access.clone();
        let aws = ctx
            .cancellable(async move { Ok(Aws::connect(&access).await?) })
            .await?;
        for s in aws.secrets().await {
            ctx.ui.add_secret(&s);
        }
        ctx.set_generated("BuildRegion", aws.region.clone());
        let mut state = State::new(aws.clone());
        let mut list = steps(&self.config, self.connector.clone(), hook);
        kiln_core::run_steps(&mut list, &mut state, ctx).await?;
        drop(list);
        if state.amis.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(AmiArtifact {
            builder_id: BUILDER_ID.into(),
            amis: std::mem::take(&mut state.amis),
            aws: Some(aws),
        })))
    }

    fn generated_keys(&self) -> Vec<String> {
        GENERATED.iter().map(|s| s.to_string()).collect()
    }
}

pub(crate) fn factory(
    d: &mut kiln_template::Decoder<'_>,
    opts: &kiln_core::PrepareOpts,
) -> Option<Box<dyn Builder>> {
    Some(Box::new(EbsBuilder::new(decode(d, opts.force))))
}

/// The builder's configuration from a template object: the communicator's
/// keys and the builder's own (`finish()` is the caller's).
pub fn decode(d: &mut kiln_template::Decoder<'_>, force: bool) -> Config {
    let comm = kiln_ssh::SshConfig::decode(d);
    config::decode(d, comm, force)
}
