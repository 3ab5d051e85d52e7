//! Waiters: poll until a resource reaches a state, cancellable.
//!
//! kiln polls after 200 ms and backs off (x1.5) to the AWS SDK waiter's
//! usual delay, so a change is seen about as soon as AWS makes it; the
//! total wait is Packer's (its delay x its attempts, `aws_polling` and
//! `AWS_POLL_DELAY_SECONDS`/`AWS_MAX_ATTEMPTS`/`AWS_TIMEOUT_SECONDS`
//! honoured). A few errors in a row are tolerated (as the SDK waiters
//! retry throttling and server errors); "not found" right after a create
//! counts as not there yet (EC2 is eventually consistent).
use crate::client::Aws;
use crate::config::WaitTiming;
use crate::ec2::{Image, ImportTask, Instance, Snapshot};
use crate::error::AwsError;
use std::future::Future;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// One look at what is waited for.
pub enum Poll<T> {
    Ready(T),
    Pending(Option<String>),
    Failed(String),
}

/// Poll `probe` until it is ready, fails, the time is up or `cancel`
/// fires.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timing: WaitTiming,
    cancel: &CancellationToken,
    mut probe: F,
) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>, AwsError>>,
{
    let start = Instant::now();
    let mut delay = timing.first_delay;
    let mut errors = 0;
    let mut last_state: Option<String> = None;
    loop {
        let r = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(AwsError::Cancelled),
            r = probe() => r,
        };
        match r {
            Ok(Poll::Ready(t)) => return Ok(t),
            Ok(Poll::Failed(m)) => return Err(AwsError::Wait(format!("{what}: {m}"))),
            Ok(Poll::Pending(s)) => {
                errors = 0;
                if s.is_some() {
                    last_state = s;
                }
            }
            Err(AwsError::Cancelled) => return Err(AwsError::Cancelled),
            Err(e) => {
                errors += 1;
                if errors > 5 || !(e.is_retryable() || e.is_not_found()) {
                    return Err(AwsError::Wait(format!("{what}: {e}")));
                }
            }
        }
        if start.elapsed() >= timing.timeout {
            return Err(AwsError::Wait(format!(
                "{what}: still not done after {}s{}",
                timing.timeout.as_secs(),
                last_state
                    .map(|s| format!(" (last state: {s})"))
                    .unwrap_or_default()
            )));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(AwsError::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 3 / 2).min(timing.max_delay.max(timing.first_delay));
    }
}

impl Aws {
    /// Wait until the instance is in `target` (`running`, `stopped`,
    /// `terminated`); a terminal state on the way (`terminated` while
    /// waiting for `running`) fails the wait with the state reason.
    pub async fn wait_instance(
        &self,
        id: &str,
        target: &str,
        cancel: &CancellationToken,
    ) -> Result<Instance, AwsError> {
        // Packer's waiters: 15 s x 40.
        let timing = self.timing(15, 40);
        let since = Instant::now();
        wait_until(
            &format!("waiting for instance {id} to be {target}"),
            timing,
            cancel,
            || async move {
                match self.ec2().instance(id).await? {
                    None if target == "terminated" && since.elapsed().as_secs() > 30 => {
                        // Gone from the listing altogether.
                        Ok(Poll::Ready(Instance {
                            id: id.to_string(),
                            state: "terminated".into(),
                            ..Default::default()
                        }))
                    }
                    None => Ok(Poll::Pending(None)),
                    Some(i) if i.state == target => Ok(Poll::Ready(i)),
                    Some(i)
                        if target != "terminated"
                            && matches!(i.state.as_str(), "terminated" | "shutting-down")
                            || (target == "running" && i.state == "stopped") =>
                    {
                        Ok(Poll::Failed(format!(
                            "instance is {}{}",
                            i.state,
                            i.state_reason.map(|r| format!(": {r}")).unwrap_or_default()
                        )))
                    }
                    Some(i) => Ok(Poll::Pending(Some(i.state))),
                }
            },
        )
        .await
    }

    /// Wait until the image is `available` (`failed` ends the wait).
    pub async fn wait_image_available(
        &self,
        id: &str,
        cancel: &CancellationToken,
    ) -> Result<Image, AwsError> {
        // The SDK's ImageAvailable: 15 s x 40; Packer raises it to 120.
        let timing = self.timing(15, 120);
        wait_until(
            &format!("waiting for AMI {id} to be available"),
            timing,
            cancel,
            || async move {
                match self.ec2().image(id).await? {
                    None => Ok(Poll::Pending(None)),
                    Some(i) if i.state == "available" => Ok(Poll::Ready(i)),
                    Some(i) if i.state == "failed" || i.state == "error" => {
                        Ok(Poll::Failed(format!(
                            "AMI is {}{}",
                            i.state,
                            i.state_reason.map(|r| format!(": {r}")).unwrap_or_default()
                        )))
                    }
                    Some(i) => Ok(Poll::Pending(Some(i.state))),
                }
            },
        )
        .await
    }

    /// Wait until the snapshot is `completed` (`error` ends the wait).
    pub async fn wait_snapshot_completed(
        &self,
        id: &str,
        cancel: &CancellationToken,
    ) -> Result<Snapshot, AwsError> {
        let timing = self.timing(15, 40);
        wait_until(
            &format!("waiting for snapshot {id} to complete"),
            timing,
            cancel,
            || async move {
                match self.ec2().snapshot(id).await? {
                    None => Ok(Poll::Pending(None)),
                    Some(s) if s.state == "completed" => Ok(Poll::Ready(s)),
                    Some(s) if s.state == "error" => Ok(Poll::Failed(format!(
                        "snapshot is in error{}",
                        s.state_message
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ))),
                    Some(s) => Ok(Poll::Pending(Some(s.state))),
                }
            },
        )
        .await
    }

    /// Wait until the import task is `completed`; `deleted`/`deleting`
    /// ends the wait with the task's message. `progress` is told each
    /// status seen.
    pub async fn wait_import_task(
        &self,
        id: &str,
        cancel: &CancellationToken,
        progress: &(dyn Fn(&ImportTask) + Send + Sync),
    ) -> Result<ImportTask, AwsError> {
        // Packer's WaitForImageToBeImported: 5 s x 720.
        let timing = self.timing(5, 720);
        wait_until(
            &format!("waiting for import task {id}"),
            timing,
            cancel,
            || async move {
                let t = self
                    .ec2()
                    .describe_import_image_tasks(&[id.to_string()], &[])
                    .await?
                    .into_iter()
                    .find(|t| t.id == id);
                let Some(t) = t else {
                    return Ok(Poll::Pending(None));
                };
                progress(&t);
                Ok(match t.status.as_str() {
                    "completed" => Poll::Ready(t),
                    "deleted" | "deleting" => Poll::Failed(format!(
                        "it ended {}{}",
                        t.status,
                        t.status_message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    )),
                    s => Poll::Pending(Some(format!(
                        "{s}{}",
                        t.status_message
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    ))),
                })
            },
        )
        .await
    }
}
