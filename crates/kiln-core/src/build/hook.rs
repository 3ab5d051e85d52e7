//! The provisioner hook: `pause_before`, `max_retries`, `timeout`, and the
//! error-cleanup provisioner.

use super::{component_decoder, runtime_context, Kind, PlannedProvisioner};
use crate::build::go_duration;
use crate::communicator::Communicator;
use crate::component::{Hook, PrepareOpts, ProvisionCtx};
use crate::context::BuildCtx;
use crate::error::BuildError;
use crate::step::Outcome;
use async_trait::async_trait;
use kiln_template::{Context, Diagnostics};
use std::sync::Arc;
use std::time::Duration;
/// Runs the provisioners of a build when its builder calls the hook.
pub(super) struct ProvisionHook<'a> {
    pub(super) provisioners: &'a [PlannedProvisioner],
    pub(super) error_cleanup: Option<&'a PlannedProvisioner>,
    pub(super) interp: &'a Context,
    pub(super) opts: &'a PrepareOpts,
}

#[async_trait]
impl Hook for ProvisionHook<'_> {
    async fn provision(
        &self,
        ctx: &BuildCtx,
        comm: Option<Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        for p in self.provisioners {
            self.run_provisioner(p, ctx, comm.as_ref()).await?;
        }
        Ok(())
    }

    async fn cleanup(
        &self,
        ctx: &BuildCtx,
        comm: Option<Arc<dyn Communicator>>,
        outcome: Outcome,
    ) -> Result<(), BuildError> {
        let Some(p) = self.error_cleanup else {
            return Ok(());
        };
        if outcome != Outcome::Failed || ctx.cancel.is_cancelled() {
            return Ok(());
        }
        ctx.ui.say(&format!(
            "Running the error-cleanup-provisioner ({})...",
            p.def.type_name.value
        ));
        // It is part of the cleanup: a first Ctrl-C does not stop it, only
        // the second one (which abandons cleanup) does.
        let cleanup_ctx = BuildCtx {
            cancel: ctx.abandon.child_token(),
            ..ctx.clone()
        };
        self.run_provisioner(p, &cleanup_ctx, comm.as_ref())
            .await
            .map_err(|e| e.context("error-cleanup-provisioner failed"))
    }
}

impl ProvisionHook<'_> {
    /// One provisioner, with its `pause_before`, `max_retries` and
    /// `timeout`.
    async fn run_provisioner(
        &self,
        p: &PlannedProvisioner,
        ctx: &BuildCtx,
        comm: Option<&Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        if ctx.cancel.is_cancelled() {
            return Err(BuildError::Cancelled);
        }
        let interp = runtime_context(self.interp, ctx);
        let mut diags = Diagnostics::default();
        let prov = {
            let mut d = component_decoder(
                &p.config,
                &interp,
                &mut diags,
                Kind::Provisioner,
                &p.def.type_name.value,
                None,
            );
            let prov = (p.factory)(&mut d, self.opts);
            d.finish();
            prov
        };
        let prov = match (prov, diags.is_empty()) {
            (Some(p), true) => p,
            _ => return Err(BuildError::msg(diags.to_string())),
        };
        let retries = p.max_retries;
        let mut left = retries;
        let mut last_err;
        loop {
            if ctx.cancel.is_cancelled() {
                return Err(BuildError::Cancelled);
            }
            match self.attempt(p, prov.as_ref(), &interp, ctx, comm).await {
                Ok(()) => return Ok(()),
                Err(BuildError::Cancelled) => return Err(BuildError::Cancelled),
                Err(e) => last_err = e,
            }
            if ctx.cancel.is_cancelled() {
                return Err(BuildError::Cancelled);
            }
            if left == 0 {
                break;
            }
            ctx.ui.say(&format!(
                "Provisioner failed with {:?}, retrying with {left} trie(s) left",
                last_err.to_string()
            ));
            left -= 1;
        }
        if retries > 0 {
            ctx.ui.say("retry limit reached.");
        }
        Err(last_err.context(format!(
            "Error running {} provisioner",
            p.def.type_name.value
        )))
    }

    /// One attempt: `pause_before`, then the provisioner, within `timeout`.
    async fn attempt(
        &self,
        p: &PlannedProvisioner,
        prov: &dyn crate::component::Provisioner,
        interp: &Context,
        ctx: &BuildCtx,
        comm: Option<&Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        if let Some(pause) = p.def.pause_before.filter(|d| !d.is_zero()) {
            ctx.ui.say(&format!(
                "Pausing {} before the next provisioner...",
                go_duration(pause)
            ));
            ctx.sleep(pause).await?;
        }
        let attempt_ctx = BuildCtx {
            cancel: ctx.cancel.child_token(),
            ..ctx.clone()
        };
        let pctx = ProvisionCtx {
            build: &attempt_ctx,
            interp: interp.clone(),
        };
        let fut = prov.provision(&pctx, comm);
        let Some(t) = p.def.timeout.filter(|d| !d.is_zero()) else {
            return fut.await;
        };
        ctx.ui.say(&format!(
            "Setting a {} timeout for the next provisioner...",
            go_duration(t)
        ));
        tokio::pin!(fut);
        tokio::select! {
            r = &mut fut => r,
            _ = tokio::time::sleep(t) => {
                ctx.ui.error("Cancelling provisioner after a timeout...");
                attempt_ctx.cancel.cancel();
                // Let it stop what it started (SIGTERM, then SIGKILL after
                // a grace period), but not forever.
                let grace = crate::local::TERMINATE_GRACE + Duration::from_secs(2);
                let _ = tokio::time::timeout(grace, &mut fut).await;
                Err(BuildError::msg(format!(
                    "{} provisioner timed out after {}",
                    p.def.type_name.value,
                    go_duration(t)
                )))
            }
        }
    }
}
