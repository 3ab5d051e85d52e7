//! The `null` builder (Packer 1.6.6 compatible): no machine is created. With
//! `communicator: none` it only runs provisioners that need no machine
//! (`shell-local`); with SSH it connects to `ssh_host` and provisions that
//! existing machine. Its artifact is empty, with Packer's id `Null`.
use kiln_commonsteps::{HasMachine, Machine, SshConnector, StepConnect, StepProvision};
use kiln_core::{async_trait, Artifact, BuildCtx, BuildError, Builder, Step};
use kiln_core::{run_steps, FileArtifact, Hook, PrepareOpts, Registry};
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
    machine: Machine,
}

impl HasMachine for State {
    fn machine(&mut self) -> &mut Machine {
        &mut self.machine
    }
}

#[async_trait]
impl Builder for NullBuilder {
    async fn run(
        &self,
        ctx: &BuildCtx,
        hook: &dyn Hook,
    ) -> Result<Option<Arc<dyn Artifact>>, BuildError> {
        let mut steps: Vec<Box<dyn Step<State> + '_>> = vec![
            Box::new(StepConnect {
                connector: Arc::new(SshConnector::new(self.ssh.clone())),
                none: self.ssh.is_none(),
                user: self.ssh.username.clone(),
            }),
            Box::new(StepProvision { hook }),
        ];
        // Packer's null builder puts `instance_id` "Null" in its state.
        ctx.set_generated("ID", ARTIFACT_ID);
        let mut state = State::default();
        state.machine.host = self.ssh.host.clone();
        state.machine.port = Some(self.ssh.port);
        run_steps(&mut steps, &mut state, ctx).await?;
        let mut a = FileArtifact::new(BUILDER_ID, vec![]);
        a.id = ARTIFACT_ID.to_string();
        Ok(Some(Arc::new(a)))
    }
}

/// Packer's null artifact's `Id()` (the manifest's `artifact_id`, the
/// machine-readable `artifact,0,id` record).
pub const ARTIFACT_ID: &str = "Null";
