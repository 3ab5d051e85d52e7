use crate::client::Cloud;
use kiln_core::{async_trait, Artifact};
use std::path::PathBuf;

/// A Glance image made by the builder (or by `create_box`).
pub struct ImageArtifact {
    pub cloud: Cloud,
    pub image_id: String,
    pub builder_id: String,
}

impl ImageArtifact {
    pub fn new(cloud: Cloud, image_id: String) -> Self {
        ImageArtifact {
            cloud,
            image_id,
            builder_id: super::BUILDER_ID.to_string(),
        }
    }
}

#[async_trait]
impl Artifact for ImageArtifact {
    fn builder_id(&self) -> &str {
        &self.builder_id
    }
    fn files(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    fn id(&self) -> String {
        self.image_id.clone()
    }
    fn description(&self) -> String {
        format!("An image was created: {}", self.image_id)
    }
    fn state(&self, key: &str) -> Option<String> {
        match key {
            "image_id" | "ImageID" => Some(self.image_id.clone()),
            "auth_url" => Some(self.cloud.session.options().auth_url.clone()),
            _ => None,
        }
    }
    async fn destroy(&self) -> Result<(), String> {
        match self.cloud.delete_image(&self.image_id).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(format!("deleting image {}: {e}", self.image_id)),
        }
    }
}
