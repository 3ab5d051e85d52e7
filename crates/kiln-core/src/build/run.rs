//! Running prepared builds, in parallel up to a limit.

use super::hook::ProvisionHook;
use super::post_process::run_post_processors;
use super::{human_duration, PlannedBuild};
use crate::artifact::Artifact;
use crate::context::{Asker, BuildCtx, Ledger, OnError};
use crate::error::BuildError;
use crate::ui::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
/// Command-line choices that shape a run.
#[derive(Clone)]
pub struct RunOptions {
    pub output: Output,
    /// `-parallel-builds`: at most this many at once (0 = no limit).
    pub parallel: usize,
    pub on_error: OnError,
    pub asker: Option<Arc<dyn Asker>>,
    /// First Ctrl-C / SIGTERM.
    pub cancel: CancellationToken,
    /// Second Ctrl-C: abandon cleanup.
    pub abandon: CancellationToken,
}

/// The outcome of one build.
pub struct BuildOutcome {
    pub name: String,
    pub result: Result<Vec<Arc<dyn Artifact>>, BuildError>,
    pub duration: Duration,
    /// Resources kiln created and could not (or was told not to) remove.
    pub leftovers: Vec<String>,
}

/// Run every build; never panics on a build's failure.
pub async fn run_builds(builds: Vec<PlannedBuild>, opts: &RunOptions) -> Vec<BuildOutcome> {
    let limit = if opts.parallel == 0 {
        builds.len().max(1)
    } else {
        opts.parallel
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut handles = Vec::new();
    for b in builds {
        // Take the slot before starting the task, as Packer does, so builds
        // start in template order when they have to wait for one.
        let permit = sem.clone().acquire_owned().await;
        let opts = opts.clone();
        handles.push(tokio::spawn(async move {
            let _permit = permit;
            run_one(b, &opts).await
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        match h.await {
            Ok(o) => out.push(o),
            Err(e) => out.push(BuildOutcome {
                name: "?".into(),
                result: Err(BuildError::msg(format!("build task panicked: {e}"))),
                duration: Duration::ZERO,
                leftovers: vec![],
            }),
        }
    }
    out
}

async fn run_one(b: PlannedBuild, opts: &RunOptions) -> BuildOutcome {
    let started = Instant::now();
    let ui = opts.output.build_ui(&b.name);
    let work_dir = match tempfile::Builder::new()
        .prefix(&format!("kiln-{}-", sanitize(&b.name)))
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            return BuildOutcome {
                name: b.name.clone(),
                result: Err(BuildError::msg(format!(
                    "creating a working directory in {}: {e}",
                    std::env::temp_dir().display()
                ))),
                duration: started.elapsed(),
                leftovers: vec![],
            }
        }
    };
    let work_dir_entry = format!("working directory {}", work_dir.path().display());
    let ctx = BuildCtx {
        ui: ui.clone(),
        cancel: opts.cancel.child_token(),
        abandon: opts.abandon.clone(),
        on_error: opts.on_error,
        asker: opts.asker.clone(),
        build_name: b.name.clone(),
        build_type: b.type_name.clone(),
        ledger: Ledger::default(),
        generated: Default::default(),
        work_dir: work_dir.path().to_path_buf(),
        timeline: Default::default(),
    };
    super::seed_generated(&ctx);
    let work_dir_id = ctx.ledger.track(work_dir_entry);
    ui.machine(
        "ui",
        &["say", &format!("{} output will be in this color.", b.name)],
    );
    let hook = ProvisionHook {
        provisioners: &b.provisioners,
        error_cleanup: b.error_cleanup.as_ref(),
        interp: &b.interp,
        opts: &b.opts,
    };
    let result = match b.builder.run(&ctx, &hook).await {
        Ok(artifact) => run_post_processors(&b, &ctx, artifact).await,
        Err(e) => Err(e),
    };
    let duration = started.elapsed();
    ctx.timeline.report(ui.as_ref());
    match &result {
        Ok(_) => ui.say(&format!(
            "Build '{}' finished after {}.",
            b.name,
            human_duration(duration)
        )),
        Err(BuildError::Cancelled) => ui.error(&format!(
            "Build '{}' cancelled after {}.",
            b.name,
            human_duration(duration)
        )),
        Err(e) => ui.error(&format!(
            "Build '{}' errored after {}: {e}",
            b.name,
            human_duration(duration)
        )),
    }
    if ctx.ledger.keeping() || (result.is_err() && opts.on_error == OnError::Abort) {
        // Keep the working directory for debugging, as asked.
        let kept = work_dir.keep();
        ui.error(&format!("Working directory kept: {}", kept.display()));
    } else if opts.abandon.is_cancelled() {
        // Cleanup was abandoned: the directory stays, listed with the rest.
        let _ = work_dir.keep();
    } else {
        match work_dir.close() {
            Ok(()) => ctx.ledger.release(work_dir_id),
            Err(e) => ui.error(&format!("Removing the working directory: {e}")),
        }
    }
    let leftovers = ctx.ledger.live();
    BuildOutcome {
        name: b.name,
        result,
        duration,
        leftovers,
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
