//! Post-processor chains, with Packer's rules for kept artifacts.

use super::{component_decoder, runtime_context, Kind, PlannedBuild};
use crate::artifact::Artifact;
use crate::component::PostProcessCtx;
use crate::context::BuildCtx;
use crate::error::BuildError;
use kiln_template::Diagnostics;
use std::sync::Arc;

/// Packer's post-processor rules (core/build.go in 1.6.6): each chain
/// starts from the builder's artifact; a post-processor's `keep` decides
/// whether its input survives (the user's `keep_input_artifact` overrides
/// unless the post-processor forces keeping); the builder's artifact is
/// kept if any chain's first post-processor keeps it, or if there are no
/// post-processors at all; an error ends that chain only.
pub(super) async fn run_post_processors(
    b: &PlannedBuild,
    ctx: &BuildCtx,
    artifact: Option<Arc<dyn Artifact>>,
) -> Result<Vec<Arc<dyn Artifact>>, BuildError> {
    let Some(builder_artifact) = artifact else {
        if !b.post_processors.is_empty() {
            ctx.ui
                .say("The builder produced no artifact: skipping post-processors.");
        }
        return Ok(vec![]);
    };
    let mut artifacts: Vec<Arc<dyn Artifact>> = Vec::new();
    let mut keep_original = b.post_processors.is_empty();
    let mut errors = Vec::new();
    'chains: for chain in &b.post_processors {
        let mut prior = builder_artifact.clone();
        for (i, pp) in chain.iter().enumerate() {
            if ctx.cancel.is_cancelled() {
                return Err(BuildError::Cancelled);
            }
            let interp = runtime_context(&b.interp, ctx);
            let mut diags = Diagnostics::default();
            let proc_ = {
                let mut d = component_decoder(
                    &pp.def.config,
                    &interp,
                    &mut diags,
                    Kind::PostProcessor,
                    &pp.def.type_name.value,
                    None,
                );
                let p = (pp.factory)(&mut d, &b.opts);
                d.finish();
                p
            };
            let proc_ = match (proc_, diags.is_empty()) {
                (Some(p), true) => p,
                _ => {
                    errors.push(diags.to_string());
                    continue 'chains;
                }
            };
            let label = pp
                .def
                .name
                .as_ref()
                .map(|n| format!("{} ({})", pp.def.type_name.value, n.value))
                .unwrap_or_else(|| pp.def.type_name.value.clone());
            ctx.ui.say(&format!("Running post-processor: {label}"));
            let pctx = PostProcessCtx { build: ctx, interp };
            let span = ctx
                .timeline
                .start(crate::timeline::Kind::PostProcessor, label.clone());
            let r = proc_.post_process(&pctx, prior.clone()).await;
            span.finish(crate::timeline::Status::of(&r));
            let out = match r {
                Ok(o) => o,
                Err(BuildError::Cancelled) => return Err(BuildError::Cancelled),
                Err(e) => {
                    errors.push(format!("Post-processor failed: {e}"));
                    continue 'chains;
                }
            };
            let mut keep = out.keep;
            if let Some(user) = pp.def.keep_input_artifact {
                if out.keep && !user && out.force_keep {
                    ctx.ui.say(&format!(
                        "The {} post-processor keeps its input artifact to preserve the chain; keep_input_artifact=false is ignored.",
                        pp.def.type_name.value
                    ));
                } else {
                    keep = user;
                }
            }
            if i == 0 {
                keep_original |= keep;
            } else if keep {
                artifacts.push(prior.clone());
            } else if let Err(e) = prior.destroy().await {
                errors.push(format!("Failed cleaning up prior artifact: {e}"));
            }
            match out.artifact {
                Some(a) => prior = a,
                None => continue 'chains,
            }
        }
        artifacts.push(prior);
    }
    if keep_original {
        artifacts.insert(0, builder_artifact);
    } else if let Err(e) = builder_artifact.destroy().await {
        errors.push(format!("Failed cleaning up the builder's artifact: {e}"));
    }
    if errors.is_empty() {
        Ok(artifacts)
    } else {
        Err(BuildError::msg(errors.join("\n")))
    }
}
