//! `artifice`: replace the artifact by files named in the template.
//!
//! `files` is a list of paths or Go-style glob patterns (interpolated). As in
//! Packer 1.6.6, a pattern that matches nothing contributes nothing (kiln
//! says so in the output), a malformed pattern or a matched path that
//! cannot be stat'ed (a dangling symlink) is an error. The input artifact is
//! kept unless the user sets `keep_input_artifact: false`.
use crate::join_paths;
use kiln_core::glob::glob;
use kiln_core::{
    async_trait, Artifact, BuildError, FileArtifact, PostProcessCtx, PostProcessed, PostProcessor,
    PrepareOpts,
};
use kiln_template::Decoder;
use std::path::PathBuf;
use std::sync::Arc;

pub const BUILDER_ID: &str = "packer.post-processor.artifice";

#[derive(Debug, Clone)]
pub struct Config {
    pub files: Vec<String>,
}

pub fn decode(d: &mut Decoder<'_>) -> Config {
    let files = d.string_list("files").unwrap_or_default();
    if files.is_empty() {
        d.error("files", "No files specified in artifice configuration");
    }
    Config { files }
}

pub(crate) fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn PostProcessor>> {
    Some(Box::new(Artifice { config: decode(d) }))
}

pub struct Artifice {
    pub config: Config,
}

/// The files the patterns name, in order.
pub fn expand(patterns: &[String]) -> Result<(Vec<PathBuf>, Vec<String>), BuildError> {
    let mut files = Vec::new();
    let mut unmatched = Vec::new();
    for p in patterns {
        let matches =
            glob(p).map_err(|e| BuildError::msg(format!("artifice: file pattern {p:?}: {e}")))?;
        if matches.is_empty() {
            unmatched.push(p.clone());
        }
        for m in matches {
            std::fs::metadata(&m)
                .map_err(|e| BuildError::msg(format!("artifice: {}: {e}", m.display())))?;
            files.push(m);
        }
    }
    Ok((files, unmatched))
}

#[async_trait]
impl PostProcessor for Artifice {
    async fn post_process(
        &self,
        ctx: &PostProcessCtx<'_>,
        input: Arc<dyn Artifact>,
    ) -> Result<PostProcessed, BuildError> {
        let ui = &ctx.build.ui;
        let discarded = input.files();
        if !discarded.is_empty() {
            ui.say(&format!(
                "Discarding files from artifact: {}",
                join_paths(&discarded)
            ));
        }
        let (files, unmatched) = expand(&self.config.files)?;
        for p in unmatched {
            ui.message(&format!("No file matches {p}"));
        }
        ui.say(&format!(
            "Using these artifact files: {}",
            join_paths(&files)
        ));
        let mut a = FileArtifact::new(BUILDER_ID, files.clone());
        a.description = Some(format!(
            "Created artifact from files: {}",
            join_paths(&files)
        ));
        Ok(PostProcessed {
            artifact: Some(Arc::new(a)),
            keep: true,
            force_keep: false,
        })
    }
}
