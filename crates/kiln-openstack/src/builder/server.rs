//! The source server: launched (carrying kiln's marker in its metadata),
//! waited for, stopped before it is imaged, terminated by the cleanup.
use super::wait::{wait_for, Poll, LONG};
use super::{Config, State};
use crate::client::api::{Server, ServerCreate};
use crate::client::{Cloud, OsError};
use kiln_commonsteps::create::{Create, Resource};
use kiln_commonsteps::{Liveness, MachineStopped};
use kiln_core::{async_trait, BuildCtx, BuildError, Outcome, Step};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The metadata key kiln puts on the servers and volumes it creates, with a
/// value unique to the request: a create that got no answer can be found
/// by it (names need not be unique).
pub const MARKER_KEY: &str = "kiln_marker";

pub(super) struct RunServer<'a> {
    c: &'a Config,
    /// The marker the server carries (cleanup looks for it by it).
    marker: String,
    create: Create<String, OsError>,
}

impl<'a> RunServer<'a> {
    pub fn new(c: &'a Config) -> Self {
        RunServer {
            c,
            marker: String::new(),
            create: Create::new("server")
                .labelled(|id: &String| format!("server {id} (openstack)")),
        }
    }
}

#[async_trait]
impl Step<State> for RunServer<'_> {
    fn name(&self) -> &'static str {
        "run source server"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let user_data = match (&self.c.user_data, &self.c.user_data_file) {
            (Some(u), _) => Some(u.clone().into_bytes()),
            (None, Some(f)) => Some(tokio::fs::read(f).await.map_err(|e| {
                BuildError::from(e).context(format!("Error reading user data file {}", f.display()))
            })?),
            (None, None) => None,
        };
        self.marker = uuid::Uuid::new_v4().to_string();
        let mut metadata = self.c.instance_metadata.clone();
        metadata.insert(MARKER_KEY.to_string(), self.marker.clone());
        let opts = ServerCreate {
            name: self.c.instance_name.clone(),
            image_ref: Some(s.source_image.clone()),
            flavor_ref: s.flavor_id.clone(),
            networks: s.networks.clone(),
            ports: self.c.ports.clone(),
            security_groups: self.c.security_groups.clone(),
            availability_zone: self.c.availability_zone.clone(),
            user_data,
            config_drive: self.c.config_drive,
            metadata,
            key_name: s.key_name.clone(),
            boot_volume: s.volume_id.clone(),
        };
        ctx.ui.say("Launching server...");
        let cloud = s.cloud.clone();
        let id = self
            .create
            .send(
                ctx,
                format!(
                    "server {:?} being created, metadata {MARKER_KEY}={} (openstack)",
                    self.c.instance_name, self.marker
                ),
                async move { cloud.create_server(&opts).await },
            )
            .await
            .map_err(|e| BuildError::from(e).context("Error launching source server"))?;
        s.server = Some(Server {
            id: id.clone(),
            status: "BUILD".into(),
            task_state: None,
            fault: None,
            access_ipv4: None,
            name: self.c.instance_name.clone(),
            key_name: s.key_name.clone(),
            metadata: Default::default(),
            addresses: Default::default(),
        });
        ctx.ui.message(&format!("Server ID: {id}"));
        ctx.set_generated("ID", id.clone());
        ctx.ui.say("Waiting for server to become ready...");
        let server = wait_status(
            &s.cloud,
            &id,
            &format!("Error waiting for server ({id}) to become ready"),
            &["ACTIVE"],
        )
        .await?;
        s.server = Some(server);
        // While kiln waits for SSH and provisions, a server Nova puts in
        // ERROR (or deletes) ends the build at once.
        s.machine.liveness = Some(Arc::new(ServerLiveness {
            cloud: s.cloud.clone(),
            id,
            every: Duration::from_secs(2),
        }));
        Ok(())
    }
    async fn cleanup(
        &mut self,
        s: &mut State,
        ctx: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        let servers = Servers {
            cloud: &s.cloud,
            marker: &self.marker,
            force: self.c.force_delete,
        };
        self.create.undo(ctx, &servers).await?;
        s.server = None;
        s.machine.liveness = None;
        Ok(())
    }
}

/// Tells the common steps when the server can no longer run: Nova reports
/// it in ERROR, or it is gone. (A server that stops is not dead: a
/// provisioner may shut it down on purpose.) API errors are not a verdict.
pub struct ServerLiveness {
    pub cloud: Cloud,
    pub id: String,
    /// How often Nova is asked.
    pub every: Duration,
}

#[async_trait]
impl Liveness for ServerLiveness {
    async fn stopped(&self, what: &str) -> MachineStopped {
        loop {
            tokio::time::sleep(self.every).await;
            let why = match self.cloud.get_server(&self.id).await {
                Ok(sv) if sv.status == "ERROR" => in_error(&sv),
                Err(e) if e.is_not_found() => "server is gone".into(),
                _ => continue,
            };
            return MachineStopped {
                report: format!("server {} stopped while {what}: {why}", self.id),
            };
        }
    }
}

/// "server is in ERROR: <Nova's fault>".
pub(super) fn in_error(sv: &Server) -> String {
    format!(
        "server is in ERROR{}",
        sv.fault
            .as_ref()
            .map(|f| format!(": {f}"))
            .unwrap_or_default()
    )
}

/// Servers, found by kiln's marker (the name need not be unique, and there
/// may be no temporary key pair); deleted with `force_delete` as asked,
/// and waited for until gone.
struct Servers<'a> {
    cloud: &'a Cloud,
    marker: &'a str,
    force: bool,
}

#[async_trait]
impl Resource for Servers<'_> {
    type Item = String;
    type Error = OsError;
    fn request_timeout(&self) -> Duration {
        self.cloud.session.request_timeout
    }
    async fn find(&self) -> Result<Vec<String>, OsError> {
        Ok(self
            .cloud
            .list_servers()
            .await?
            .into_iter()
            .filter(|sv| sv.metadata.get(MARKER_KEY).map(String::as_str) == Some(self.marker))
            .map(|sv| sv.id)
            .collect())
    }
    async fn delete(&self, id: &String) -> Result<(), OsError> {
        self.cloud.delete_server(id, self.force).await
    }
    fn find_failed(&self) -> String {
        format!(
            "Error looking for the server that may have been created ({MARKER_KEY}={})",
            self.marker
        )
    }
    fn delete_failed(&self, _: &String) -> String {
        "Error terminating server, may still be around".into()
    }
    async fn deleting(&self, ctx: &BuildCtx, id: &String) {
        ctx.ui
            .say(&format!("Terminating the source server: {id} ..."));
    }
    async fn deleted(&self, _: &BuildCtx, id: &String) -> Result<(), BuildError> {
        wait_gone(self.cloud, id).await
    }
}

/// Wait until the server is gone (its key pair and volume may go then).
async fn wait_gone(cloud: &Cloud, id: &str) -> Result<(), BuildError> {
    let since = Instant::now();
    wait_for(
        "Error waiting for the server to terminate",
        Duration::from_secs(600),
        || async move {
            match cloud.get_server(id).await {
                Err(e) if e.is_not_found() => Ok(Poll::Ready(())),
                Err(e) => Err(e),
                // DELETED: on its way out; wait (briefly) until it is gone.
                Ok(sv) if sv.status == "DELETED" || sv.status == "SOFT_DELETED" => {
                    Ok(if since.elapsed() > Duration::from_secs(15) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    })
                }
                Ok(sv) if sv.status == "ERROR" && sv.task_state.is_none() => {
                    // A failed delete: ask again.
                    let _ = cloud.delete_server(id, true).await;
                    Ok(Poll::Pending)
                }
                Ok(_) => Ok(Poll::Pending),
            }
        },
    )
    .await
}

pub(super) struct StopServer;

#[async_trait]
impl Step<State> for StopServer {
    fn name(&self) -> &'static str {
        "stop server"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        // The SSH session is not needed any more.
        s.machine.comm = None;
        let id = s.server_id();
        ctx.ui.say(&format!("Stopping server: {id} ..."));
        match s.cloud.server_action(&id, json!({"os-stop": null})).await {
            Ok(_) => {}
            // 409: already stopped.
            Err(e) if e.status() == Some(409) => {}
            Err(e) => return Err(BuildError::from(e).context("Error stopping server")),
        }
        ctx.ui
            .message(&format!("Waiting for server to stop: {id} ..."));
        let what = format!("Error waiting for server ({id}) to stop");
        wait_status(&s.cloud, &id, &what, &["SHUTOFF", "STOPPED"]).await?;
        Ok(())
    }
}

/// Wait until Nova reports the server in one of the `ready` states;
/// ERROR ends the wait at once.
async fn wait_status(
    cloud: &Cloud,
    id: &str,
    what: &str,
    ready: &[&str],
) -> Result<Server, BuildError> {
    wait_for(what, LONG, || async move {
        let sv = cloud.get_server(id).await?;
        Ok(if ready.contains(&sv.status.as_str()) {
            Poll::Ready(sv)
        } else if sv.status == "ERROR" {
            Poll::Failed(in_error(&sv))
        } else {
            Poll::Pending
        })
    })
    .await
}
