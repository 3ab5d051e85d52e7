use crate::client::{Cloud, Session};
use kiln_core::{async_trait, Artifact};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

/// The artifact state key naming the OpenStack session an artifact was
/// made with (an opaque handle, not a credential): a later post-processor
/// (`create_box`) reuses that session instead of needing credentials of
/// its own.
pub const SESSION_STATE_KEY: &str = "kiln_openstack_session";

/// Live sessions by handle; an entry dies with the last artifact holding
/// its session.
static SESSIONS: Mutex<BTreeMap<String, Weak<Session>>> = Mutex::new(BTreeMap::new());

fn register(session: &Arc<Session>) -> String {
    let key = uuid::Uuid::new_v4().to_string();
    let mut m = SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    m.retain(|_, w| w.strong_count() > 0);
    m.insert(key.clone(), Arc::downgrade(session));
    key
}

/// The session of an OpenStack artifact (`None` for anything else, or once
/// the artifact is gone).
pub fn session_of(a: &dyn Artifact) -> Option<Arc<Session>> {
    let key = a.state(SESSION_STATE_KEY)?;
    let m = SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    m.get(&key)?.upgrade()
}

/// A Glance image made by the builder (or by `create_box`).
pub struct ImageArtifact {
    pub cloud: Cloud,
    pub image_id: String,
    pub builder_id: String,
    session_key: String,
}

impl ImageArtifact {
    pub fn new(cloud: Cloud, image_id: String) -> Self {
        ImageArtifact {
            session_key: register(&cloud.session),
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
            SESSION_STATE_KEY => Some(self.session_key.clone()),
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
