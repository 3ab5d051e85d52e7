//! Waiting for the cloud: a probe polled until what kiln waits for is
//! there, failed, or too late.
use crate::client::OsError;
use kiln_core::BuildError;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long kiln waits for a server, a volume or an image to change state
/// (as Packer, effectively no limit of its own: an hour).
pub const LONG: Duration = Duration::from_secs(3600);

/// The outcome of one look at something kiln waits for.
pub enum Poll<T> {
    Ready(T),
    Pending,
    /// It will not get there (a server in ERROR): why, in kiln's words.
    Failed(String),
}

/// Poll `probe` until ready, starting at 100 ms and backing off to 2 s, so
/// kiln notices a state change about as soon as the cloud makes it. Up to
/// three API errors in a row are tolerated (a flaky API); the fourth ends
/// the wait, kept whole under `what` (the [`OsError`] is found by type).
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<T, BuildError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>, OsError>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut errors = 0;
    loop {
        match probe().await {
            Ok(Poll::Ready(t)) => return Ok(t),
            Ok(Poll::Failed(m)) => return Err(BuildError::msg(format!("{what}: {m}"))),
            Ok(Poll::Pending) => errors = 0,
            Err(OsError::Cancelled) => return Err(BuildError::Cancelled),
            Err(e) => {
                errors += 1;
                if errors > 3 {
                    return Err(BuildError::from(e).context(what));
                }
            }
        }
        if start.elapsed() > timeout {
            return Err(BuildError::msg(format!(
                "{what}: still not done after {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tolerates_three_errors_then_gives_up_keeping_the_error() {
        let mut n = 0;
        let r: Result<(), _> = wait_for("w", Duration::from_secs(30), || {
            n += 1;
            let k = n;
            async move {
                if k <= 3 {
                    Err(OsError::Protocol("flaky".into()))
                } else {
                    Ok(Poll::Ready(()))
                }
            }
        })
        .await;
        assert!(r.is_ok());
        let e = wait_for("w", Duration::from_secs(30), || async {
            Err::<Poll<()>, _>(OsError::Protocol("down".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "w: down");
        assert!(matches!(e.find::<OsError>(), Some(OsError::Protocol(_))));
    }

    #[tokio::test]
    async fn a_failure_ends_the_wait_at_once() {
        let e = wait_for("Error waiting", Duration::from_secs(30), || async {
            Ok::<Poll<()>, OsError>(Poll::Failed("server is in ERROR".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "Error waiting: server is in ERROR");
    }
}
