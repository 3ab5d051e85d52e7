//! `use_blockstorage_volume`: a Cinder volume made from the source image
//! for the server to boot from (carrying kiln's marker), detached before
//! it is imaged, deleted by the cleanup.
use super::server::MARKER_KEY;
use super::wait::{wait_for, Poll, LONG};
use super::{Config, State};
use crate::client::{Cloud, OsError};
use kiln_commonsteps::create::{Create, Resource};
use kiln_core::{async_trait, BuildCtx, BuildError, Outcome, Step};
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) struct CreateVolume<'a> {
    c: &'a Config,
    /// The volume's name and marker (cleanup looks for it by them).
    name: String,
    marker: String,
    create: Create<String, OsError>,
}

impl<'a> CreateVolume<'a> {
    pub fn new(c: &'a Config) -> Self {
        CreateVolume {
            c,
            name: String::new(),
            marker: String::new(),
            create: Create::new("volume")
                .labelled(|id: &String| format!("volume {id} (openstack)")),
        }
    }
}

#[async_trait]
impl Step<State> for CreateVolume<'_> {
    fn name(&self) -> &'static str {
        "create volume"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let size = match self.c.volume_size {
            Some(sz) => sz,
            None => {
                let img = s.cloud.get_image(&s.source_image).await?;
                let from_image = img
                    .min_disk
                    .filter(|m| *m > 0)
                    .or_else(|| img.size.map(|b| b.div_ceil(1 << 30)));
                from_image.or(s.flavor_disk).unwrap_or(1).max(1)
            }
        };
        self.name = self
            .c
            .volume_name
            .clone()
            .unwrap_or_else(|| format!("packer_{}", uuid::Uuid::new_v4()));
        self.marker = uuid::Uuid::new_v4().to_string();
        let name = self.name.clone();
        ctx.ui.say("Creating volume...");
        let az = self
            .c
            .volume_availability_zone
            .clone()
            .or(self.c.availability_zone.clone());
        let (cloud, n, img, vt) = (
            s.cloud.clone(),
            name.clone(),
            s.source_image.clone(),
            self.c.volume_type.clone(),
        );
        let md: BTreeMap<String, String> = [(MARKER_KEY.to_string(), self.marker.clone())].into();
        let id = self
            .create
            .send(
                ctx,
                format!("volume {name} being created (openstack)"),
                async move {
                    cloud
                        .create_volume(&n, size, &img, vt.as_deref(), az.as_deref(), &md)
                        .await
                },
            )
            .await
            .map_err(|e| BuildError::from(e).context("Error creating volume"))?;
        s.volume_id = Some(id.clone());
        ctx.ui.message(&format!(
            "Waiting for volume {name} (volume id: {id}) to become available..."
        ));
        wait_available(&s.cloud, &id, "Error waiting for volume").await?;
        ctx.ui.message(&format!("Volume ID: {id}"));
        Ok(())
    }
    async fn cleanup(
        &mut self,
        s: &mut State,
        ctx: &BuildCtx,
        _: Outcome,
    ) -> Result<(), BuildError> {
        let volumes = Volumes {
            cloud: &s.cloud,
            name: &self.name,
            marker: &self.marker,
        };
        self.create.undo(ctx, &volumes).await?;
        s.volume_id = None;
        Ok(())
    }
}

/// Volumes, found by name and kiln's marker; deleted once detached.
struct Volumes<'a> {
    cloud: &'a Cloud,
    name: &'a str,
    marker: &'a str,
}

#[async_trait]
impl Resource for Volumes<'_> {
    type Item = String;
    type Error = OsError;
    fn request_timeout(&self) -> Duration {
        self.cloud.session.request_timeout
    }
    async fn find(&self) -> Result<Vec<String>, OsError> {
        Ok(self
            .cloud
            .volumes_named(self.name)
            .await?
            .into_iter()
            .filter(|(_, md)| md.get(MARKER_KEY).map(String::as_str) == Some(self.marker))
            .map(|(id, _)| id)
            .collect())
    }
    async fn delete(&self, id: &String) -> Result<(), OsError> {
        self.cloud.delete_volume(id).await
    }
    fn find_failed(&self) -> String {
        format!(
            "Error looking for volume {}, which may have been created",
            self.name
        )
    }
    fn delete_failed(&self, id: &String) -> String {
        format!("Error deleting volume {id}, please delete it manually")
    }
    async fn deleting(&self, ctx: &BuildCtx, id: &String) {
        ctx.ui.say(&format!("Deleting volume: {id} ..."));
        // Deleting needs it detached: wait until it is not in use (if it
        // does not get there, the delete says why).
        let cloud = self.cloud;
        let _ = wait_for("volume", Duration::from_secs(300), || async move {
            Ok(match cloud.volume_status(id).await {
                Ok(st) if st == "in-use" || st.ends_with("ing") => Poll::Pending,
                _ => Poll::Ready(()),
            })
        })
        .await;
    }
}

pub(super) struct DetachVolume;

#[async_trait]
impl Step<State> for DetachVolume {
    fn name(&self) -> &'static str {
        "detach volume"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let (Some(server), Some(vol)) = (s.server.as_ref(), s.volume_id.clone()) else {
            return Ok(());
        };
        ctx.ui
            .say(&format!("Detaching volume {vol} (server {})", server.id));
        match s.cloud.detach_volume(&server.id, &vol).await {
            Ok(()) => {}
            // A boot volume cannot be detached from a stopped server on
            // some clouds; Cinder uploads it attached (force).
            Err(e) if e.status() == Some(400) || e.status() == Some(403) => return Ok(()),
            Err(e) => return Err(BuildError::from(e).context("Error detaching volume")),
        }
        wait_available(&s.cloud, &vol, "Error waiting for volume to detach").await
    }
}

/// Wait until Cinder reports the volume available; "error" ends the wait
/// at once.
async fn wait_available(cloud: &Cloud, id: &str, what: &str) -> Result<(), BuildError> {
    wait_for(what, LONG, || async move {
        Ok(match cloud.volume_status(id).await?.as_str() {
            "available" => Poll::Ready(()),
            "error" => Poll::Failed("volume is in error".into()),
            _ => Poll::Pending,
        })
    })
    .await
}
