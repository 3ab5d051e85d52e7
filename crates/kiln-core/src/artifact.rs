//! What a build produces, and what post-processors turn into something else.
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[async_trait]
pub trait Artifact: Send + Sync {
    /// Who made it (e.g. `kiln.qemu`; Packer ids like `transcend.qemu` are
    /// accepted by `artifice`-style consumers).
    fn builder_id(&self) -> &str;
    /// Local files that make up the artifact (may be empty).
    fn files(&self) -> Vec<PathBuf>;
    /// An identifier (a cloud image id, or "" for file artifacts).
    fn id(&self) -> String;
    /// The line in the final summary: `--> name: <this>`.
    fn description(&self) -> String;
    /// Extra named values (e.g. "image_id", "region") for post-processors.
    fn state(&self, _key: &str) -> Option<String> {
        None
    }
    /// Delete what the artifact is (files, cloud image).
    async fn destroy(&self) -> Result<(), String>;
}

/// An artifact made of local files.
#[derive(Debug, Clone)]
pub struct FileArtifact {
    pub builder_id: String,
    pub files: Vec<PathBuf>,
    pub id: String,
    pub description: Option<String>,
    pub state: BTreeMap<String, String>,
}

impl FileArtifact {
    pub fn new(builder_id: impl Into<String>, files: Vec<PathBuf>) -> Self {
        FileArtifact {
            builder_id: builder_id.into(),
            files,
            id: String::new(),
            description: None,
            state: BTreeMap::new(),
        }
    }
}

#[async_trait]
impl Artifact for FileArtifact {
    fn builder_id(&self) -> &str {
        &self.builder_id
    }
    fn files(&self) -> Vec<PathBuf> {
        self.files.clone()
    }
    fn id(&self) -> String {
        self.id.clone()
    }
    fn description(&self) -> String {
        if let Some(d) = &self.description {
            return d.clone();
        }
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        if files.is_empty() {
            "Did not export anything. This is the null builder".into()
        } else {
            format!("Stored file(s): {}", files.join(", "))
        }
    }
    fn state(&self, key: &str) -> Option<String> {
        self.state.get(key).cloned()
    }
    async fn destroy(&self) -> Result<(), String> {
        for f in &self.files {
            let r = if f.is_dir() {
                tokio::fs::remove_dir_all(f).await
            } else {
                tokio::fs::remove_file(f).await
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("removing {}: {e}", f.display())),
            }
        }
        Ok(())
    }
}
