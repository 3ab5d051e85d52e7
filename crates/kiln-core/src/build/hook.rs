//! The provisioner hook: `pause_before`, `max_retries`, `timeout`, and the
//! error-cleanup provisioner.

use super::{component_decoder, runtime_context, Kind, PlannedProvisioner};
use crate::build::go_duration;
use crate::communicator::Communicator;
use crate::component::{Hook, PrepareOpts, ProvisionCtx, ProvisionStep, StepDone};
use crate::context::BuildCtx;
use crate::error::BuildError;
use crate::step::Outcome;
use crate::timeline::{Kind as TlKind, Status};
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
            let span = ctx.timeline.start(TlKind::Provisioner, label(p));
            let r = self.run_provisioner(p, ctx, comm.as_ref()).await;
            span.finish(Status::of(&r));
            r?;
        }
        Ok(())
    }

    fn steps(&self, _ctx: &BuildCtx) -> Vec<ProvisionStep> {
        self.units().into_iter().map(|u| u.step).collect()
    }

    async fn provision_steps(
        &self,
        ctx: &BuildCtx,
        comm: Option<Arc<dyn Communicator>>,
        skip: usize,
        done: &dyn StepDone,
    ) -> Result<(), BuildError> {
        for u in self.units() {
            if u.step.index <= skip {
                ctx.timeline.record(
                    TlKind::Provisioner,
                    &u.step.label,
                    Duration::ZERO,
                    Status::Cached,
                );
                continue;
            }
            let one;
            let p = match u.script {
                Some(j) => {
                    one = with_one_script(&self.provisioners[u.provisioner], j);
                    &one
                }
                None => &self.provisioners[u.provisioner],
            };
            let span = ctx.timeline.start(TlKind::Provisioner, &u.step.label);
            let r = self.run_provisioner(p, ctx, comm.as_ref()).await;
            span.finish(Status::of(&r));
            r?;
            done.done(ctx, &u.step).await?;
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
        let span = ctx
            .timeline
            .start(TlKind::Provisioner, format!("error-cleanup {}", label(p)));
        let r = self.run_provisioner(p, &cleanup_ctx, comm.as_ref()).await;
        span.finish(Status::of(&r));
        r.map_err(|e| e.context("error-cleanup-provisioner failed"))
    }
}

/// One provisioning step of the hook: which planned provisioner, which of
/// its `scripts` when it is split, and the step as a cache sees it.
struct Unit {
    provisioner: usize,
    script: Option<usize>,
    step: ProvisionStep,
}

/// A `shell` provisioner reduced to its `j`th script (no `pause_before`
/// after the first: Packer pauses once per provisioner).
fn with_one_script(p: &PlannedProvisioner, j: usize) -> PlannedProvisioner {
    use kiln_template::Value;
    let mut config = p.config.clone();
    if let Value::Object(entries) = &mut config.value {
        for (k, n) in entries.iter_mut() {
            if k.name == "scripts" {
                if let Value::Array(a) = &n.value {
                    if let Some(one) = a.get(j).cloned() {
                        n.value = Value::Array(vec![one]);
                    }
                }
            }
        }
    }
    let mut def = p.def.clone();
    if j > 0 {
        def.pause_before = None;
    }
    PlannedProvisioner {
        def,
        config,
        factory: p.factory,
        max_retries: p.max_retries,
    }
}

impl ProvisionHook<'_> {
    /// The provisioning steps: each provisioner, a `shell` one with several
    /// `scripts` as one step per script. Local files are resolved as the
    /// provisioners resolve them (from the working directory, as Packer).
    fn units(&self) -> Vec<Unit> {
        let base_dir = std::env::current_dir().unwrap_or_default();
        let mut out = Vec::new();
        for (i, p) in self.provisioners.iter().enumerate() {
            let type_name = p.def.type_name.value.as_str();
            let mut interp = self.interp.clone();
            interp.lenient_fields = true;
            let mut config = kiln_template::interp::render_json(&p.config.to_json(), &interp);
            if let serde_json::Value::Object(m) = &mut config {
                // Keys of the engine's that do not change what it does.
                m.remove("type");
                m.remove("pause_before");
            }
            let parts = kiln_cache::key::split_steps(type_name, &config);
            let split = parts.len() > 1;
            for (j, c) in parts.into_iter().enumerate() {
                let files = kiln_cache::key::local_files(type_name, &c, &base_dir);
                out.push(Unit {
                    provisioner: i,
                    script: split.then_some(j),
                    step: ProvisionStep {
                        index: out.len() + 1,
                        label: kiln_cache::key::step_label(type_name, &c),
                        input: kiln_cache::StepInput {
                            type_name: type_name.to_string(),
                            config: c,
                            files,
                        },
                    },
                });
            }
        }
        out
    }
}

/// A provisioner as the timeline names it (`shell: scripts/update.sh`).
fn label(p: &PlannedProvisioner) -> String {
    kiln_cache::key::step_label(&p.def.type_name.value, &p.config.to_json())
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
