//! Steps and the step runner: every step that started gets its cleanup, in
//! reverse order, whether the build succeeds, fails or is cancelled.
use crate::context::{AskAnswer, BuildCtx, OnError};
use crate::error::BuildError;
use async_trait::async_trait;

/// How a list of steps ended, as each step's cleanup sees it (Packer's
/// `StateCancelled`/`StateHalted` flags, typed): a cleanup keeps what the
/// build made only when every step succeeded, and knows whether the
/// failure was the build's or the user's interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every step ran to its end: keep what the build made (its output).
    Succeeded,
    /// A step failed: remove what the build made.
    Failed,
    /// The user interrupted the build (Ctrl-C, SIGTERM) or a timeout hit.
    Cancelled,
}

impl Outcome {
    pub fn succeeded(self) -> bool {
        self == Outcome::Succeeded
    }
    fn of(r: &Result<(), BuildError>) -> Outcome {
        match r {
            Ok(()) => Outcome::Succeeded,
            Err(e) if e.is_cancelled() => Outcome::Cancelled,
            Err(_) => Outcome::Failed,
        }
    }
}

/// One unit of a builder's work. `S` is the builder's own typed state,
/// where steps leave what later steps (and cleanups) need.
#[async_trait]
pub trait Step<S: Send>: Send {
    /// A short name for messages ("create server").
    fn name(&self) -> &'static str;
    /// Do the work. Record anything that needs undoing in `state` (and the
    /// ledger) as soon as it exists, so a cancel mid-way can still clean it.
    async fn run(&mut self, state: &mut S, ctx: &BuildCtx) -> Result<(), BuildError>;
    /// Whether to pass over this step, asked when its turn comes: a step
    /// passed over is neither run, timed nor cleaned up (a builder resuming
    /// from a cache passes over the steps whose work is already done).
    fn skip(&self, _state: &S) -> bool {
        false
    }
    /// Undo what `run` did, as far as it got. Called for every step whose
    /// `run` started, including the one that failed or was interrupted,
    /// with how the whole list ended.
    async fn cleanup(
        &mut self,
        _state: &mut S,
        _ctx: &BuildCtx,
        _outcome: Outcome,
    ) -> Result<(), BuildError> {
        Ok(())
    }
}

/// Run `steps` in order, then clean up in reverse (always, unless
/// `-on-error=abort` after a failure, or abandoned by a second Ctrl-C).
/// Returns the first error (or `Cancelled`).
pub async fn run_steps<S: Send>(
    steps: &mut [Box<dyn Step<S> + '_>],
    state: &mut S,
    ctx: &BuildCtx,
) -> Result<(), BuildError> {
    let mut started = 0;
    let mut passed_over = vec![false; steps.len()];
    let mut result = Ok(());
    // What these steps create: "could not clean up" is about those only
    // (the build's working directory, say, is the caller's).
    let checkpoint = ctx.ledger.checkpoint();
    let mut i = 0;
    while i < steps.len() {
        if ctx.cancel.is_cancelled() {
            result = Err(BuildError::Cancelled);
            break;
        }
        let step = &mut steps[i];
        started = started.max(i + 1);
        if step.skip(state) {
            passed_over[i] = true;
            i += 1;
            continue;
        }
        passed_over[i] = false;
        ctx.ui.machine("step-start", &[step.name()]);
        let span = ctx.timeline.start(crate::timeline::Kind::Step, step.name());
        let r = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => Err(BuildError::Cancelled),
            r = step.run(state, ctx) => r,
        };
        span.finish(crate::timeline::Status::of(&r));
        match r {
            Ok(()) => i += 1,
            Err(e) => {
                if !e.is_cancelled() && ctx.on_error != OnError::Cleanup {
                    let answer = match (ctx.on_error, &ctx.asker) {
                        (OnError::Ask, Some(a)) => {
                            a.ask(&ctx.build_name, step.name(), &e.to_string())
                        }
                        (OnError::Ask, None) => AskAnswer::Cleanup,
                        _ => AskAnswer::Abort,
                    };
                    match answer {
                        AskAnswer::Retry => {
                            ctx.ui.say(&format!("Retrying step \"{}\"...", step.name()));
                            continue;
                        }
                        AskAnswer::Abort => {
                            ctx.ui.error(&format!(
                                "Step \"{}\" failed: aborting without cleanup (-on-error=abort)",
                                step.name()
                            ));
                            ctx.ledger.keep_all();
                            let left = ctx.ledger.live();
                            if !left.is_empty() {
                                ctx.ui.error(&format!("Left in place: {}", left.join(", ")));
                            }
                            return Err(e);
                        }
                        AskAnswer::Cleanup => {}
                    }
                }
                result = Err(e);
                break;
            }
        }
    }
    cleanup(
        &mut steps[..started],
        &passed_over[..started],
        state,
        ctx,
        Outcome::of(&result),
        checkpoint,
    )
    .await;
    result
}

async fn cleanup<S: Send>(
    steps: &mut [Box<dyn Step<S> + '_>],
    passed_over: &[bool],
    state: &mut S,
    ctx: &BuildCtx,
    outcome: Outcome,
    checkpoint: u64,
) {
    let before = ctx.ledger.released().len();
    for (step, _) in steps
        .iter_mut()
        .zip(passed_over)
        .rev()
        .filter(|(_, passed)| !**passed)
    {
        if ctx.abandon.is_cancelled() {
            break;
        }
        ctx.ui.machine("step-cleanup", &[step.name()]);
        let r = tokio::select! {
            biased;
            _ = ctx.abandon.cancelled() => Err(BuildError::Cancelled),
            r = step.cleanup(state, ctx, outcome) => r,
        };
        match r {
            Ok(()) => {}
            Err(BuildError::Cancelled) => break,
            Err(e) => ctx
                .ui
                .error(&format!("Cleanup of step \"{}\" failed: {e}", step.name())),
        }
    }
    if ctx.abandon.is_cancelled() {
        let left = ctx.ledger.live();
        if left.is_empty() {
            ctx.ui
                .error("Cleanup abandoned. Nothing kiln created is known to be left.");
        } else {
            ctx.ui.error(&format!(
                "Cleanup abandoned. These may be left behind and need removing by hand:\n  - {}",
                left.join("\n  - ")
            ));
        }
        return;
    }
    if !outcome.succeeded() {
        let released = ctx.ledger.released();
        if released.len() > before {
            ctx.ui
                .say(&format!("Cleaned up: {}", released[before..].join(", ")));
        }
        let left = ctx.ledger.live_since(checkpoint);
        if !left.is_empty() {
            ctx.ui
                .error(&format!("Could not clean up: {}", left.join(", ")));
        }
    }
}

/// A step passed over when `when` says so (see [`Step::skip`]): for
/// steps written without knowing why a builder may not need them.
pub struct SkipWhen<'a, S> {
    pub step: Box<dyn Step<S> + 'a>,
    pub when: fn(&S) -> bool,
}

#[async_trait]
impl<S: Send> Step<S> for SkipWhen<'_, S> {
    fn name(&self) -> &'static str {
        self.step.name()
    }
    async fn run(&mut self, state: &mut S, ctx: &BuildCtx) -> Result<(), BuildError> {
        self.step.run(state, ctx).await
    }
    fn skip(&self, state: &S) -> bool {
        (self.when)(state) || self.step.skip(state)
    }
    async fn cleanup(
        &mut self,
        state: &mut S,
        ctx: &BuildCtx,
        outcome: Outcome,
    ) -> Result<(), BuildError> {
        self.step.cleanup(state, ctx, outcome).await
    }
}
