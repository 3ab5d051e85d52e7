//! The `null` builder (Packer 1.6.6 compatible): no machine is created. With
//! `communicator: none` it only runs provisioners that need no machine
//! (`shell-local`); with SSH it connects to `ssh_host` and provisions that
//! existing machine. Its artifact is empty, with Packer's id `Null`.
use kiln_core::{async_trait, Artifact, BuildCtx, BuildError, Builder, Communicator, Step};
use kiln_core::{run_steps, FileArtifact, Hook, Outcome, PrepareOpts, Registry};
use kiln_ssh::SshConfig;
use kiln_template::Decoder;
use std::sync::Arc;

/// Packer's id for the null builder's artifact.
pub const BUILDER_ID: &str = "fnoeding.null";

pub fn register(reg: &mut Registry) {
    reg.builder("null", factory);
}

pub struct NullBuilder {
    ssh: SshConfig,
}

fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn Builder>> {
    let ssh = SshConfig::decode(d);
    if !ssh.is_none() && ssh.host.as_deref().unwrap_or("").is_empty() {
        d.error_here("`ssh_host` must be specified (or set `communicator` to \"none\")");
    }
    // The null builder makes no machine, so there is no temporary key to
    // fall back on: as Packer, one way to authenticate must be given.
    if !ssh.is_none()
        && ssh.password.as_deref().unwrap_or("").is_empty()
        && ssh.private_key_file.is_none()
        && !ssh.agent_auth
    {
        d.error_here(
            "one authentication method must be specified: `ssh_password`, \
             `ssh_private_key_file` or `ssh_agent_auth`",
        );
    }
    Some(Box::new(NullBuilder { ssh }))
}

#[derive(Default)]
struct State {
    comm: Option<Arc<dyn Communicator>>,
}

struct Connect<'a>(&'a SshConfig);

#[async_trait]
impl Step<State> for Connect<'_> {
    fn name(&self) -> &'static str {
        "connect"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        if self.0.is_none() {
            return Ok(());
        }
        let host = self.0.host.clone().unwrap_or_default();
        let port = self.0.port;
        ctx.set_generated("Host", &host);
        ctx.set_generated("Port", port.to_string());
        ctx.set_generated("User", self.0.username.clone());
        let c = kiln_ssh::connect(self.0, &host, port, None, ctx).await?;
        state.comm = Some(c);
        Ok(())
    }
    async fn cleanup(
        &mut self,
        state: &mut State,
        _ctx: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        // Dropping the communicator closes the connection.
        state.comm = None;
        Ok(())
    }
}

struct Provision<'a>(&'a dyn Hook);

#[async_trait]
impl Step<State> for Provision<'_> {
    fn name(&self) -> &'static str {
        "provision"
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        self.0.provision(ctx, state.comm.clone()).await
    }
    async fn cleanup(
        &mut self,
        state: &mut State,
        ctx: &BuildCtx,
        outcome: Outcome,
    ) -> Result<(), BuildError> {
        self.0.cleanup(ctx, state.comm.clone(), outcome).await
    }
}

#[async_trait]
impl Builder for NullBuilder {
    async fn run(
        &self,
        ctx: &BuildCtx,
        hook: &dyn Hook,
    ) -> Result<Option<Arc<dyn Artifact>>, BuildError> {
        let mut steps: Vec<Box<dyn Step<State> + '_>> =
            vec![Box::new(Connect(&self.ssh)), Box::new(Provision(hook))];
        let mut state = State::default();
        run_steps(&mut steps, &mut state, ctx).await?;
        let mut a = FileArtifact::new(BUILDER_ID, vec![]);
        a.id = ARTIFACT_ID.to_string();
        Ok(Some(Arc::new(a)))
    }
}

/// Packer's null artifact's `Id()` (the manifest's `artifact_id`, the
/// machine-readable `artifact,0,id` record).
pub const ARTIFACT_ID: &str = "Null";
