//! The image: made from the stopped server (Nova's createImage) or from
//! its volume (Cinder's upload-to-image), waited for until active, given
//! its properties. Unlike Packer, a half-made image (the build failed after
//! asking for it) is deleted.
use super::wait::{wait_for, Poll, LONG};
use super::{Config, State};
use crate::client::{Cloud, OsError};
use kiln_commonsteps::create::{Create, Resource};
use kiln_core::{async_trait, BuildCtx, BuildError, Outcome, Step};
use serde_json::json;
use std::time::Duration;

pub(super) struct CreateImage<'a> {
    c: &'a Config,
    /// What the image is made from (cleanup looks for it by that).
    from: Origin,
    create: Create<String, OsError>,
}

#[derive(Clone)]
enum Origin {
    Nothing,
    /// Nova's snapshots carry the server's id as `instance_uuid`.
    Server(String),
    /// Cinder's images carry nothing kiln can find them by.
    Volume,
}

impl<'a> CreateImage<'a> {
    pub fn new(c: &'a Config) -> Self {
        CreateImage {
            c,
            from: Origin::Nothing,
            create: Create::new("image")
                .labelled(|id: &String| format!("image {id} (openstack, not finished)")),
        }
    }
}

#[async_trait]
impl Step<State> for CreateImage<'_> {
    fn name(&self) -> &'static str {
        "create image"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        ctx.ui.say(&format!("Creating the image: {}", c.image_name));
        let cloud = s.cloud.clone();
        let name = c.image_name.clone();
        let id = if let Some(vol) = s.volume_id.clone() {
            if !c.image_metadata.is_empty() {
                if let Err(e) = s
                    .cloud
                    .set_volume_image_metadata(&vol, &c.image_metadata)
                    .await
                {
                    ctx.ui.error(&format!("Error setting image metadata: {e}"));
                }
            }
            self.from = Origin::Volume;
            let fmt = c.image_disk_format.clone();
            let label = format!("image {name:?} of volume {vol} being created (openstack)");
            self.create
                .send(ctx, label, async move {
                    cloud.volume_to_image(&vol, &name, fmt.as_deref()).await
                })
                .await
        } else {
            let server = s.server_id();
            self.from = Origin::Server(server.clone());
            let md = c.image_metadata.clone();
            let label = format!("image {name:?} of server {server} being created (openstack)");
            self.create
                .send(ctx, label, async move {
                    cloud.create_server_image(&server, &name, &md).await
                })
                .await
        }
        .map_err(|e| BuildError::from(e).context("Error creating image"))?;
        s.image_id = Some(id.clone());
        ctx.ui.message(&format!("Image: {id}"));
        ctx.ui.say(&format!(
            "Waiting for image {} (image id: {id}) to become ready...",
            c.image_name
        ));
        let (cloud, id) = (&s.cloud, id.as_str());
        wait_for("Error waiting for image", LONG, || async move {
            let img = match cloud.get_image(id).await {
                // Glance may not know it for a moment.
                Err(e) if e.is_not_found() => return Ok(Poll::Pending),
                r => r?,
            };
            Ok(match img.status.as_str() {
                "active" => Poll::Ready(()),
                "killed" | "deleted" | "pending_delete" => {
                    Poll::Failed(format!("image {id} is {}", img.status))
                }
                _ => Poll::Pending,
            })
        })
        .await
    }
    async fn cleanup(
        &mut self,
        s: &mut State,
        ctx: &BuildCtx,
        outcome: Outcome,
    ) -> Result<(), BuildError> {
        if outcome.succeeded() {
            // It is the artifact now: the artifact owns it.
            self.create.keep(ctx);
            return Ok(());
        }
        let images = Images {
            cloud: &s.cloud,
            name: &self.c.image_name,
            from: self.from.clone(),
        };
        self.create.undo(ctx, &images).await?;
        s.image_id = None;
        Ok(())
    }
}

/// Images being made from a server (found by its id and the image's
/// name) or from a volume (not findable).
struct Images<'a> {
    cloud: &'a Cloud,
    name: &'a str,
    from: Origin,
}

#[async_trait]
impl Resource for Images<'_> {
    type Item = String;
    type Error = OsError;
    fn request_timeout(&self) -> Duration {
        self.cloud.session.request_timeout
    }
    fn cannot_find(&self) -> Option<String> {
        matches!(self.from, Origin::Volume).then(|| {
            format!(
                "The upload of the volume to Glance got no clear answer: an image named {:?} may have been created; check Glance",
                self.name
            )
        })
    }
    async fn find(&self) -> Result<Vec<String>, OsError> {
        let Origin::Server(server) = &self.from else {
            return Ok(Vec::new());
        };
        let q = [("instance_uuid".to_string(), server.clone())];
        Ok(self
            .cloud
            .list_images(&q)
            .await?
            .into_iter()
            .filter(|i| i.name == self.name)
            .map(|i| i.id)
            .collect())
    }
    async fn delete(&self, id: &String) -> Result<(), OsError> {
        self.cloud.delete_image(id).await
    }
    fn find_failed(&self) -> String {
        match &self.from {
            Origin::Server(server) => {
                format!("Error looking for the image of server {server} that may have been created")
            }
            _ => format!("Error looking for the image {:?}", self.name),
        }
    }
    fn delete_failed(&self, id: &String) -> String {
        format!("Error deleting image {id}, please delete it manually")
    }
    async fn deleting(&self, ctx: &BuildCtx, id: &String) {
        ctx.ui
            .say(&format!("Deleting the unfinished image: {id} ..."));
    }
}

/// Packer's four steps after the image is active (tags, visibility,
/// members, min disk), in one PATCH plus the member calls.
pub(super) struct ImageProperties<'a> {
    pub c: &'a Config,
}

#[async_trait]
impl Step<State> for ImageProperties<'_> {
    fn name(&self) -> &'static str {
        "image properties"
    }
    async fn run(&mut self, s: &mut State, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.c;
        let id = s.image_id.clone().unwrap_or_default();
        let mut ops = Vec::new();
        if !c.image_tags.is_empty() {
            ctx.ui.say(&format!(
                "Updating image tags to {}",
                c.image_tags.join(", ")
            ));
            ops.push(json!({"op": "replace", "path": "/tags", "value": c.image_tags}));
        }
        if let Some(v) = &c.image_visibility {
            ctx.ui.say(&format!("Updating image visibility to {v}"));
            ops.push(json!({"op": "replace", "path": "/visibility", "value": v}));
        }
        if let Some(m) = c.image_min_disk {
            ctx.ui.say(&format!("Updating image min disk to {m}"));
            ops.push(json!({"op": "replace", "path": "/min_disk", "value": m}));
        }
        if !ops.is_empty() {
            s.cloud
                .patch_image(&id, serde_json::Value::Array(ops))
                .await
                .map_err(|e| BuildError::from(e).context("Error updating image"))?;
        }
        for m in &c.image_members {
            ctx.ui.say(&format!("Adding member '{m}' to image {id}"));
            s.cloud.add_image_member(&id, m).await.map_err(|e| {
                BuildError::from(e).context(format!("Error adding member '{m}' to image"))
            })?;
            if c.image_auto_accept_members {
                ctx.ui
                    .say(&format!("Accepting image {id} for member '{m}'"));
                s.cloud.accept_image_member(&id, m).await.map_err(|e| {
                    BuildError::from(e).context(format!("Error accepting image for member '{m}'"))
                })?;
            }
        }
        Ok(())
    }
}
