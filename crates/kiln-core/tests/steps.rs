//! The step runner's guarantees: every started step is cleaned up, in
//! reverse order, on success, failure and cancellation; `-on-error=abort`
//! skips cleanup; a second interrupt abandons cleanup and reports what is
//! left.
use kiln_core::context::{AskAnswer, Asker};
use kiln_core::{run_steps, BuildCtx, BuildError, OnError, Outcome, Step};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Log = Arc<Mutex<Vec<String>>>;

#[derive(Default)]
struct State {
    log: Vec<String>,
    /// What each cleanup was told of how the steps ended.
    outcomes: Vec<Outcome>,
}

enum Behaviour {
    Ok,
    Fail,
    Hang,
    SlowCleanup,
}

struct Recorder {
    name: &'static str,
    behaviour: Behaviour,
    log: Log,
    ledger_id: Option<kiln_core::context::LedgerId>,
}

#[kiln_core::async_trait]
impl Step<State> for Recorder {
    fn name(&self) -> &'static str {
        self.name
    }
    async fn run(&mut self, state: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        self.log.lock().unwrap().push(format!("run {}", self.name));
        state.log.push(self.name.to_string());
        self.ledger_id = Some(ctx.ledger.track(format!("resource of {}", self.name)));
        match self.behaviour {
            Behaviour::Ok | Behaviour::SlowCleanup => Ok(()),
            Behaviour::Fail => Err(BuildError::msg(format!("{} failed", self.name))),
            Behaviour::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        }
    }
    async fn cleanup(
        &mut self,
        state: &mut State,
        ctx: &BuildCtx,
        outcome: Outcome,
    ) -> Result<(), BuildError> {
        state.outcomes.push(outcome);
        if let Behaviour::SlowCleanup = self.behaviour {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        self.log
            .lock()
            .unwrap()
            .push(format!("cleanup {}", self.name));
        if let Some(id) = self.ledger_id.take() {
            ctx.ledger.release(id);
        }
        Ok(())
    }
}

fn steps(log: &Log, spec: &[(&'static str, Behaviour)]) -> Vec<Box<dyn Step<State>>> {
    spec.iter()
        .map(|(n, b)| {
            Box::new(Recorder {
                name: n,
                behaviour: match b {
                    Behaviour::Ok => Behaviour::Ok,
                    Behaviour::Fail => Behaviour::Fail,
                    Behaviour::Hang => Behaviour::Hang,
                    Behaviour::SlowCleanup => Behaviour::SlowCleanup,
                },
                log: log.clone(),
                ledger_id: None,
            }) as Box<dyn Step<State>>
        })
        .collect()
}

fn ctx() -> (kiln_core::Output, BuildCtx) {
    kiln_testkit::test_ctx("t", &std::env::temp_dir())
}

fn log_of(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn success_cleans_up_in_reverse() {
    let log = Log::default();
    let (_, ctx) = ctx();
    let mut s = steps(
        &log,
        &[
            ("a", Behaviour::Ok),
            ("b", Behaviour::Ok),
            ("c", Behaviour::Ok),
        ],
    );
    let mut st = State::default();
    run_steps(&mut s, &mut st, &ctx).await.unwrap();
    assert_eq!(
        log_of(&log),
        [
            "run a",
            "run b",
            "run c",
            "cleanup c",
            "cleanup b",
            "cleanup a"
        ]
    );
    assert_eq!(st.outcomes, [Outcome::Succeeded; 3]);
    assert!(ctx.ledger.live().is_empty());
}

#[tokio::test]
async fn a_step_passed_over_is_neither_run_timed_nor_cleaned_up() {
    let log = Log::default();
    let (_, ctx) = ctx();
    let mut s = steps(
        &log,
        &[
            ("a", Behaviour::Ok),
            ("b", Behaviour::Ok),
            ("c", Behaviour::Fail),
        ],
    );
    // "b" is passed over once "a" ran: the decision is taken on the state
    // as it is when b's turn comes.
    let b = s.remove(1);
    s.insert(
        1,
        Box::new(kiln_core::SkipWhen {
            step: b,
            when: |st: &State| st.log.iter().any(|n| n == "a"),
        }),
    );
    let mut st = State::default();
    run_steps(&mut s, &mut st, &ctx).await.unwrap_err();
    assert_eq!(log_of(&log), ["run a", "run c", "cleanup c", "cleanup a"]);
    assert_eq!(st.outcomes, [Outcome::Failed; 2]);
    let names: Vec<String> = ctx.timeline.entries().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["a", "c"]);
}

#[tokio::test]
async fn failure_cleans_up_started_steps_only() {
    let log = Log::default();
    let (out, ctx) = ctx();
    let mut s = steps(
        &log,
        &[
            ("a", Behaviour::Ok),
            ("b", Behaviour::Fail),
            ("c", Behaviour::Ok),
        ],
    );
    let mut st = State::default();
    let err = run_steps(&mut s, &mut st, &ctx).await.unwrap_err();
    assert_eq!(err.to_string(), "b failed");
    assert_eq!(log_of(&log), ["run a", "run b", "cleanup b", "cleanup a"]);
    assert_eq!(st.outcomes, [Outcome::Failed; 2]);
    assert!(out
        .captured()
        .contains("Cleaned up: resource of b, resource of a"));
}

#[tokio::test]
async fn cancel_mid_step_cleans_up_the_interrupted_step_too() {
    let log = Log::default();
    let (_, ctx) = ctx();
    let mut s = steps(
        &log,
        &[
            ("a", Behaviour::Ok),
            ("b", Behaviour::Hang),
            ("c", Behaviour::Ok),
        ],
    );
    let mut st = State::default();
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
    });
    let err = run_steps(&mut s, &mut st, &ctx).await.unwrap_err();
    assert!(err.is_cancelled());
    assert_eq!(log_of(&log), ["run a", "run b", "cleanup b", "cleanup a"]);
    assert_eq!(st.outcomes, [Outcome::Cancelled; 2]);
}

#[tokio::test]
async fn on_error_abort_skips_cleanup_and_lists_what_is_left() {
    let log = Log::default();
    let (out, mut ctx) = ctx();
    ctx.on_error = OnError::Abort;
    let mut s = steps(&log, &[("a", Behaviour::Ok), ("b", Behaviour::Fail)]);
    let mut st = State::default();
    run_steps(&mut s, &mut st, &ctx).await.unwrap_err();
    assert_eq!(log_of(&log), ["run a", "run b"]);
    assert_eq!(ctx.ledger.live(), ["resource of a", "resource of b"]);
    assert!(out
        .captured()
        .contains("Left in place: resource of a, resource of b"));
}

struct Answers(Mutex<Vec<AskAnswer>>);
impl Asker for Answers {
    fn ask(&self, _: &str, _: &str, _: &str) -> AskAnswer {
        self.0.lock().unwrap().remove(0)
    }
}

#[tokio::test]
async fn on_error_ask_retry_then_cleanup() {
    let log = Log::default();
    let (_, mut ctx) = ctx();
    ctx.on_error = OnError::Ask;
    ctx.asker = Some(Arc::new(Answers(Mutex::new(vec![
        AskAnswer::Retry,
        AskAnswer::Cleanup,
    ]))));
    let mut s = steps(&log, &[("a", Behaviour::Fail)]);
    let mut st = State::default();
    run_steps(&mut s, &mut st, &ctx).await.unwrap_err();
    assert_eq!(log_of(&log), ["run a", "run a", "cleanup a"]);
}

#[tokio::test]
async fn second_interrupt_abandons_cleanup_and_reports_leftovers() {
    let log = Log::default();
    let (out, ctx) = ctx();
    let mut s = steps(
        &log,
        &[
            ("a", Behaviour::Ok),
            ("b", Behaviour::SlowCleanup),
            ("c", Behaviour::Hang),
        ],
    );
    let mut st = State::default();
    let (cancel, abandon) = (ctx.cancel.clone(), ctx.abandon.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        abandon.cancel();
    });
    let err = run_steps(&mut s, &mut st, &ctx).await.unwrap_err();
    assert!(err.is_cancelled());
    // c was cleaned, b's cleanup hung and was abandoned, a never cleaned.
    assert_eq!(log_of(&log), ["run a", "run b", "run c", "cleanup c"]);
    let text = out.captured();
    assert!(text.contains("Cleanup abandoned"), "{text}");
    assert!(
        text.contains("resource of a") && text.contains("resource of b"),
        "{text}"
    );
}
