//! What the common steps know of a builder's machine, and how a builder
//! tells them that the machine died.
use kiln_core::{async_trait, BuildError, Communicator};
use kiln_ssh::TempKeyPair;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The part of a builder's state that the common steps read and write.
/// A builder's state embeds one and implements [`HasMachine`].
#[derive(Default)]
pub struct Machine {
    /// Where the communicator connects (set by the builder's own steps:
    /// a forwarded port, a server's address).
    pub host: Option<String>,
    pub port: Option<u16>,
    /// The key pair kiln made for this build and gave the machine
    /// (cloud-init seed, a cloud's temporary key pair).
    pub key: Option<TempKeyPair>,
    /// The connected communicator, once [`crate::StepConnect`] ran.
    pub comm: Option<Arc<dyn Communicator>>,
    /// Tells when the machine can no longer run (a builder that can see
    /// its machine die sets it; waits then fail at once instead of timing
    /// out).
    pub liveness: Option<Arc<dyn Liveness>>,
    /// When the machine was started, and how long until the communicator
    /// answered.
    pub started: Option<Instant>,
    pub time_to_connect: Option<Duration>,
}

/// A builder's state that has a [`Machine`].
pub trait HasMachine: Send {
    fn machine(&mut self) -> &mut Machine;

    /// Where [`crate::StepProvision`] resumes a build from a provisioning
    /// cache: the number of steps to skip and who is told after each step
    /// that runs (it saves the machine's state). `None`, the default: run
    /// every provisioner.
    fn resume(&mut self) -> Option<(usize, Arc<dyn kiln_core::StepDone>)> {
        None
    }
}

/// Watches a machine: [`Liveness::stopped`] resolves, with why, when the
/// machine can no longer run (QEMU exited, a cloud server went to ERROR).
#[async_trait]
pub trait Liveness: Send + Sync {
    /// `what` is what kiln was doing ("waiting for SSH"), for the report.
    async fn stopped(&self, what: &str) -> MachineStopped;
}

/// The machine stopped while kiln was waiting for it or working on it.
/// `report` says why and shows what the machine said last (its console);
/// builders find this error by type to know the console was shown.
#[derive(Debug, thiserror::Error)]
#[error("{report}")]
pub struct MachineStopped {
    pub report: String,
}

/// Run `fut` unless the machine stops first; then fail at once with why,
/// saying what kiln was doing (`what`: "waiting for SSH").
pub async fn while_alive<T>(
    liveness: Option<Arc<dyn Liveness>>,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, BuildError>>,
) -> Result<T, BuildError> {
    let Some(l) = liveness else { return fut.await };
    tokio::select! {
        r = fut => r,
        stopped = l.stopped(what) => Err(BuildError::new(stopped)),
    }
}
