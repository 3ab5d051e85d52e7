//! The component traits (builder, provisioner, post-processor) and the
//! registry that maps a template's `type` to a factory.
use crate::artifact::Artifact;
use crate::communicator::Communicator;
use crate::context::BuildCtx;
use crate::error::BuildError;
use crate::step::Outcome;
use async_trait::async_trait;
use kiln_template::Decoder;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Flags that affect preparation.
#[derive(Debug, Clone, Default)]
pub struct PrepareOpts {
    /// `-force`: builders may overwrite existing output.
    pub force: bool,
    /// `-no-cache`: builders with a provisioning cache neither reuse nor
    /// save states.
    pub no_cache: bool,
    /// `-cache-max-age`: states older than this are not reused (else
    /// `KILN_CACHE_MAX_AGE`, else 24 hours).
    pub cache_max_age: Option<std::time::Duration>,
}

/// One provisioning step, as a provisioning cache keys and resumes it: a
/// provisioner, or one script of a `shell` provisioner with several
/// `scripts` (see `kiln_cache::key::split_steps`).
#[derive(Debug, Clone)]
pub struct ProvisionStep {
    /// 1-based, in run order.
    pub index: usize,
    /// As said to the user (`shell: scripts/update.sh`).
    pub label: String,
    /// What its cache key covers: type, rendered configuration, the local
    /// files it reads.
    pub input: kiln_cache::StepInput,
}

/// Told after each provisioning step that succeeded (a builder saves the
/// machine's state there). An error fails the build; a cache that cannot
/// save should say so and return `Ok`.
#[async_trait]
pub trait StepDone: Send + Sync {
    async fn done(&self, ctx: &BuildCtx, step: &ProvisionStep) -> Result<(), BuildError>;
}

/// Called by a builder when the machine is ready: runs the provisioners.
#[async_trait]
pub trait Hook: Send + Sync {
    async fn provision(
        &self,
        ctx: &BuildCtx,
        comm: Option<Arc<dyn Communicator>>,
    ) -> Result<(), BuildError>;

    /// The build's provisioning steps, in order, for a provisioning cache
    /// (before the machine exists: `{{build ...}}` stays unrendered in
    /// their configurations). Empty for a hook that cannot resume.
    fn steps(&self, _ctx: &BuildCtx) -> Vec<ProvisionStep> {
        Vec::new()
    }

    /// Run the provisioning steps after the first `skip` (whose effects
    /// the machine already has, restored from a cache: they are shown in
    /// the timeline as cached), telling `done` after each one that
    /// succeeds.
    async fn provision_steps(
        &self,
        ctx: &BuildCtx,
        comm: Option<Arc<dyn Communicator>>,
        skip: usize,
        _done: &dyn StepDone,
    ) -> Result<(), BuildError> {
        if skip == 0 {
            self.provision(ctx, comm).await
        } else {
            Err(BuildError::msg(
                "this build's provisioning cannot resume from a cached state",
            ))
        }
    }

    /// Called by a builder from the cleanup of its provisioning step, while
    /// the machine is still reachable, with how the build ended: if it
    /// failed (not when it was cancelled), runs the template's
    /// `error-cleanup-provisioner`, as Packer does.
    async fn cleanup(
        &self,
        _ctx: &BuildCtx,
        _comm: Option<Arc<dyn Communicator>>,
        _outcome: Outcome,
    ) -> Result<(), BuildError> {
        Ok(())
    }
}

/// A hook that runs nothing (for tests of builders).
pub struct NoHook;
#[async_trait]
impl Hook for NoHook {
    async fn provision(
        &self,
        _: &BuildCtx,
        _: Option<Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        Ok(())
    }
}

#[async_trait]
pub trait Builder: Send + Sync {
    /// Build; call `hook.provision` once the machine can be provisioned.
    /// `Ok(None)` means the build produced nothing (like Packer's nil
    /// artifact).
    async fn run(
        &self,
        ctx: &BuildCtx,
        hook: &dyn Hook,
    ) -> Result<Option<Arc<dyn Artifact>>, BuildError>;

    /// Names this builder provides to `{{build `Name`}}` beyond Packer's
    /// common ones (`kiln_template::interp::COMMON_BUILD_KEYS`), as Packer
    /// 1.6.6's builders return them from `Prepare`: provisioners and
    /// post-processors may use them and are checked against them at
    /// validate time. Packer's null, file, qemu and openstack builders
    /// declare none.
    fn generated_keys(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Context of a provisioner run: the build plus the interpolation context
/// for run-time templates (`execute_command` with `.Path`, ...).
pub struct ProvisionCtx<'a> {
    pub build: &'a BuildCtx,
    pub interp: kiln_template::Context,
}

#[async_trait]
pub trait Provisioner: Send + Sync {
    async fn provision(
        &self,
        ctx: &ProvisionCtx<'_>,
        comm: Option<&Arc<dyn Communicator>>,
    ) -> Result<(), BuildError>;
}

/// What a post-processor returns.
pub struct PostProcessed {
    pub artifact: Option<Arc<dyn Artifact>>,
    /// Keep the input artifact by default (Packer's `keep`).
    pub keep: bool,
    /// Keep it even if the user says `keep_input_artifact: false`.
    pub force_keep: bool,
}

pub struct PostProcessCtx<'a> {
    pub build: &'a BuildCtx,
    pub interp: kiln_template::Context,
}

#[async_trait]
pub trait PostProcessor: Send + Sync {
    async fn post_process(
        &self,
        ctx: &PostProcessCtx<'_>,
        input: Arc<dyn Artifact>,
    ) -> Result<PostProcessed, BuildError>;
}

/// Builds a component from its configuration. Problems go into the
/// decoder's diagnostics (all of them, not just the first); `None` when the
/// component cannot be made.
pub type BuilderFactory = fn(&mut Decoder<'_>, &PrepareOpts) -> Option<Box<dyn Builder>>;
pub type ProvisionerFactory = fn(&mut Decoder<'_>, &PrepareOpts) -> Option<Box<dyn Provisioner>>;
pub type PostProcessorFactory =
    fn(&mut Decoder<'_>, &PrepareOpts) -> Option<Box<dyn PostProcessor>>;

/// `type` -> factory, for each kind of component.
#[derive(Default, Clone)]
pub struct Registry {
    pub builders: BTreeMap<&'static str, BuilderFactory>,
    pub provisioners: BTreeMap<&'static str, ProvisionerFactory>,
    pub post_processors: BTreeMap<&'static str, PostProcessorFactory>,
}

impl Registry {
    pub fn builder(&mut self, name: &'static str, f: BuilderFactory) -> &mut Self {
        self.builders.insert(name, f);
        self
    }
    pub fn provisioner(&mut self, name: &'static str, f: ProvisionerFactory) -> &mut Self {
        self.provisioners.insert(name, f);
        self
    }
    pub fn post_processor(&mut self, name: &'static str, f: PostProcessorFactory) -> &mut Self {
        self.post_processors.insert(name, f);
        self
    }
}
