//! One way to connect a communicator: a [`Connector`] (kiln's SSH in
//! production, a stand-in in tests) and the step that uses it.
use crate::machine::{while_alive, HasMachine};
use kiln_core::{async_trait, BuildCtx, BuildError, Communicator, Outcome, Step};
use kiln_ssh::{SshCommunicator, SshConfig, TempKeyPair};
use std::sync::{Arc, Mutex};

/// Connects to the machine.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Connect to `host:port`, retrying until the communicator's timeout;
    /// authenticate with `key` when kiln made the machine's key pair.
    async fn connect(
        &self,
        ctx: &BuildCtx,
        host: &str,
        port: u16,
        key: Option<&TempKeyPair>,
    ) -> Result<Arc<dyn Communicator>, BuildError>;

    /// The machine reset itself (a reboot the builder saw): drop the
    /// connection made last, now, so that a command running over it ends as
    /// disconnected at once instead of when keep-alives give up. Returns
    /// whether there was a connection to drop.
    fn machine_reset(&self) -> bool {
        false
    }
}

/// kiln's SSH communicator (`kiln-ssh`), configured by the template's
/// communicator keys.
pub struct SshConnector {
    pub ssh: SshConfig,
    last: Mutex<Option<Arc<SshCommunicator>>>,
}

impl SshConnector {
    pub fn new(ssh: SshConfig) -> Self {
        SshConnector {
            ssh,
            last: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Connector for SshConnector {
    async fn connect(
        &self,
        ctx: &BuildCtx,
        host: &str,
        port: u16,
        key: Option<&TempKeyPair>,
    ) -> Result<Arc<dyn Communicator>, BuildError> {
        let comm = kiln_ssh::connect(&self.ssh, host, port, key, ctx).await?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(comm.clone());
        Ok(comm)
    }

    fn machine_reset(&self) -> bool {
        match &*self.last.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(c) => {
                c.drop_connection_now();
                true
            }
            None => false,
        }
    }
}

/// Connects the communicator to the machine's [`Machine::host`] and
/// [`Machine::port`](crate::Machine::port), failing at once if the machine
/// stops meanwhile, and records the generated values provisioners see
/// (`Host`, `Port`, `User`). Nothing to do with `communicator: none`.
pub struct StepConnect {
    pub connector: Arc<dyn Connector>,
    /// `communicator: none`.
    pub none: bool,
    /// The user the communicator logs in as (for `{{ build `User` }}`).
    pub user: String,
}

#[async_trait]
impl<S: HasMachine> Step<S> for StepConnect {
    fn name(&self) -> &'static str {
        "connect"
    }
    async fn run(&mut self, state: &mut S, ctx: &BuildCtx) -> Result<(), BuildError> {
        if self.none {
            return Ok(());
        }
        let m = state.machine();
        let host = m
            .host
            .clone()
            .ok_or_else(|| BuildError::msg("no address to connect to"))?;
        let port = m
            .port
            .ok_or_else(|| BuildError::msg("no port to connect to"))?;
        ctx.set_generated("Host", host.clone());
        ctx.set_generated("Port", port.to_string());
        ctx.set_generated("User", self.user.clone());
        let key = m.key.clone();
        let comm = while_alive(
            m.liveness.clone(),
            "waiting for SSH",
            self.connector.connect(ctx, &host, port, key.as_ref()),
        )
        .await?;
        if let Some(t) = m.started {
            let d = t.elapsed();
            m.time_to_connect = Some(d);
            ctx.ui.message(&format!(
                "SSH answered {:.1} s after the machine started",
                d.as_secs_f64()
            ));
            ctx.set_generated("TimeToSSH", format!("{:.3}", d.as_secs_f64()));
        }
        m.comm = Some(comm);
        Ok(())
    }
    async fn cleanup(&mut self, state: &mut S, _: &BuildCtx, _: Outcome) -> Result<(), BuildError> {
        // Dropping the communicator closes the connection.
        state.machine().comm = None;
        Ok(())
    }
}
