//! Running the template's provisioners over the connected communicator.
use crate::machine::{while_alive, HasMachine};
use kiln_core::{async_trait, BuildCtx, BuildError, Hook, Outcome, Step};

/// Runs the template's provisioners (through the build's [`Hook`]),
/// failing at once if the machine stops meanwhile. Its cleanup runs the
/// template's `error-cleanup-provisioner` when the build failed, while the
/// machine is still reachable (the later steps' cleanups have run, the
/// earlier ones' not yet).
pub struct StepProvision<'a> {
    pub hook: &'a dyn Hook,
}

#[async_trait]
impl<S: HasMachine> Step<S> for StepProvision<'_> {
    fn name(&self) -> &'static str {
        "provision"
    }
    async fn run(&mut self, state: &mut S, ctx: &BuildCtx) -> Result<(), BuildError> {
        let resume = state.resume();
        let m = state.machine();
        let comm = m.comm.clone();
        let live = m.liveness.clone();
        match resume {
            Some((skip, done)) => {
                let run = self.hook.provision_steps(ctx, comm, skip, done.as_ref());
                while_alive(live, "provisioning", run).await
            }
            None => while_alive(live, "provisioning", self.hook.provision(ctx, comm)).await,
        }
    }
    async fn cleanup(
        &mut self,
        state: &mut S,
        ctx: &BuildCtx,
        outcome: Outcome,
    ) -> Result<(), BuildError> {
        // If the machine died, its connection is gone and the
        // error-cleanup-provisioner fails at once.
        let comm = state.machine().comm.clone();
        self.hook.cleanup(ctx, comm, outcome).await
    }
}
