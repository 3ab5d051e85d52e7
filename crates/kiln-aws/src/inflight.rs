//! The "record before send, settle, find, release" rule, for AWS creates
//! (as kiln-openstack's builder steps do it):
//!
//! 1. record what is about to be made (the step's state and `ctx.ledger`)
//!    before the request is sent;
//! 2. send it with [`InFlight::run`]: it runs on its own task, so when a
//!    Ctrl-C drops the step its answer still comes, and the cleanup
//!    [`InFlight::settle`]s it;
//! 3. on [`AwsError::outcome_unknown`] (5xx, no answer), [`find_created`]
//!    looks for what may have been made (by client token, name or tag):
//!    once after an error answer, again and again for as long as a request
//!    may take after no answer at all;
//! 4. delete what was found, release the ledger entry.
use crate::error::AwsError;
use std::future::Future;
use std::time::{Duration, Instant};

/// A create request that runs to its end even when the step that sent it
/// is dropped.
pub struct InFlight<T>(Option<tokio::task::JoinHandle<Result<T, AwsError>>>);

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        InFlight(None)
    }
}

impl<T: Send + 'static> InFlight<T> {
    /// Send the request and wait for its answer.
    pub async fn run<F>(&mut self, request: F) -> Result<T, AwsError>
    where
        F: Future<Output = Result<T, AwsError>> + Send + 'static,
    {
        let handle = self.0.insert(tokio::spawn(request));
        let r = handle.await;
        self.0 = None;
        joined(r)
    }

    /// In a cleanup: the answer to a request whose step was dropped before
    /// it came (`None`: no request was left waiting).
    pub async fn settle(&mut self) -> Option<Result<T, AwsError>> {
        let handle = self.0.take()?;
        Some(joined(handle.await))
    }

    /// Is a request waiting for its answer?
    pub fn pending(&self) -> bool {
        self.0.is_some()
    }
}

fn joined<T>(r: Result<Result<T, AwsError>, tokio::task::JoinError>) -> Result<T, AwsError> {
    r.unwrap_or_else(|e| {
        Err(AwsError::Transport {
            service: "ec2",
            action: "request".into(),
            message: format!("the request's task ended: {e}"),
            sent: true,
        })
    })
}

/// Look for what a create without a clear answer made: `find` once after
/// an error answer; after no answer (`unanswered`), until something is
/// found or `request_timeout` has passed (AWS may still be carrying the
/// request out). Listing errors are retried a few times.
pub async fn find_created<T, F, Fut>(
    request_timeout: Duration,
    unanswered: bool,
    mut find: F,
) -> Result<Vec<T>, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<T>, AwsError>>,
{
    let until = Instant::now()
        + if unanswered {
            request_timeout
        } else {
            Duration::ZERO
        };
    let mut delay = Duration::from_millis(250);
    let mut errors = 0;
    loop {
        match find().await {
            Ok(found) => {
                let now = Instant::now();
                if !found.is_empty() || now >= until {
                    return Ok(found);
                }
                tokio::time::sleep(delay.min(until - now)).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) if errors < 4 && e.is_retryable() => {
                errors += 1;
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_step_still_gets_its_answer() {
        let mut f: InFlight<u32> = InFlight::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // The step is dropped (timeout) while the request waits.
        let r = tokio::time::timeout(
            Duration::from_millis(50),
            f.run(async move {
                let _ = rx.await;
                Ok(7)
            }),
        )
        .await;
        assert!(r.is_err());
        assert!(f.pending());
        tx.send(()).unwrap();
        assert_eq!(f.settle().await.unwrap().unwrap(), 7);
        assert!(f.settle().await.is_none());
    }

    #[tokio::test]
    async fn finds_late_creations_only_after_no_answer() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let find = || async {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, AwsError>(if n >= 2 { vec!["i-1"] } else { vec![] })
        };
        // After an error answer: one look.
        assert!(find_created(Duration::from_secs(5), false, find)
            .await
            .unwrap()
            .is_empty());
        // After no answer: looks again until it appears.
        assert_eq!(
            find_created(Duration::from_secs(5), true, find)
                .await
                .unwrap(),
            ["i-1"]
        );
        // ... but not forever.
        let t0 = Instant::now();
        let none = find_created(Duration::from_millis(300), true, || async {
            Ok::<Vec<u8>, AwsError>(vec![])
        })
        .await
        .unwrap();
        assert!(none.is_empty() && t0.elapsed() >= Duration::from_millis(300));
    }
}
