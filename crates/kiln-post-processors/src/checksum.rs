//! `checksum`: hash every file of the artifact and append `<hex>\t<basename>`
//! lines to one checksum file per algorithm (Packer 1.6.6 behaviour).
//!
//! - `checksum_types`: any of md5, sha1, sha224, sha256, sha384, sha512
//!   (default `["md5"]`).
//! - `output`: a template rendered per checksum type with `.BuildName`,
//!   `.BuilderType`, `.ChecksumType` and the builder's generated data
//!   (default `packer_{{.BuildName}}_{{.BuilderType}}_{{.ChecksumType}}.checksum`).
//!
//! Checksum files are opened for appending, as in Packer, so running twice
//! adds lines. The result lists the input files plus the checksum files this
//! run created; the input artifact is always kept.
use crate::join_paths;
use kiln_core::hash::{hash_file, HashError};
use kiln_core::{
    async_trait, Artifact, BuildError, FileArtifact, PostProcessCtx, PostProcessed, PostProcessor,
    PrepareOpts,
};
use kiln_template::interp::render_option;
use kiln_template::Decoder;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const BUILDER_ID: &str = "packer.post-processor.checksum";
const DEFAULT_OUTPUT: &str = "packer_{{.BuildName}}_{{.BuilderType}}_{{.ChecksumType}}.checksum";

/// The hash algorithms Packer 1.6.6 knows, by their template names: kiln's
/// one list of them, shared with `iso_checksum`.
pub use kiln_core::hash::Algo as ChecksumType;

#[derive(Debug, Clone)]
pub struct Config {
    pub types: Vec<ChecksumType>,
    /// Uninterpolated; rendered per checksum type at run time.
    pub output: String,
}

/// Decode a `checksum` configuration (the caller calls `finish()`).
pub fn decode(d: &mut Decoder<'_>) -> Config {
    let mut types = Vec::new();
    let names = d
        .string_list("checksum_types")
        .unwrap_or_else(|| vec!["md5".to_string()]);
    for name in &names {
        match ChecksumType::parse(name) {
            Some(t) => types.push(t),
            None => {
                let known: Vec<&str> = ChecksumType::ALL.iter().map(|t| t.name()).collect();
                d.error(
                    "checksum_types",
                    format!(
                        "Unrecognized checksum type: {name} (known types: {})",
                        known.join(", ")
                    ),
                );
            }
        }
    }
    let output = d
        .raw_string("output")
        .filter(|o| !o.is_empty())
        .unwrap_or_else(|| DEFAULT_OUTPUT.to_string());
    Config { types, output }
}

pub(crate) fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn PostProcessor>> {
    Some(Box::new(Checksum { config: decode(d) }))
}

pub struct Checksum {
    pub config: Config,
}

#[async_trait]
impl PostProcessor for Checksum {
    async fn post_process(
        &self,
        ctx: &PostProcessCtx<'_>,
        input: Arc<dyn Artifact>,
    ) -> Result<PostProcessed, BuildError> {
        let build = ctx.build;
        let files = input.files();
        let mut artifact_files = files.clone();

        // Every file is read once, whatever the number of algorithms.
        let mut digests: Vec<Vec<String>> = Vec::with_capacity(files.len());
        for file in &files {
            let types = self.config.types.clone();
            let path = file.clone();
            let cancel = build.cancel.clone();
            let total = std::fs::metadata(file).map(|m| m.len()).ok();
            let progress: Arc<dyn kiln_core::communicator::TransferProgress> =
                Arc::from(build.ui.progress(&format!("Hashing {}", file_name(file))));
            progress.start(total);
            let p = progress.clone();
            let hex = tokio::task::spawn_blocking(move || {
                hash_file(&path, &types, |n| {
                    p.advance(n as u64);
                    if cancel.is_cancelled() {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
            })
            .await
            .map_err(|e| BuildError::msg(format!("hashing {}: {e}", file.display())))?
            .map_err(|e| match e {
                HashError::Stopped { .. } => BuildError::Cancelled,
                e => BuildError::new(e),
            })?;
            progress.finish();
            digests.push(hex);
        }

        for (ti, ty) in self.config.types.iter().enumerate() {
            let interp = build.runtime_interp(
                &ctx.interp,
                &[
                    ("BuildName", &build.build_name),
                    ("BuilderType", &build.build_type),
                    ("ChecksumType", ty.name()),
                ],
            );
            for (fi, file) in files.iter().enumerate() {
                let target = PathBuf::from(
                    render_option("output", &self.config.output, &interp)
                        .map_err(BuildError::new)?,
                );
                if !target.exists() && !artifact_files.contains(&target) {
                    artifact_files.push(target.clone());
                }
                let line = format!("{}\t{}\n", digests[fi][ti], file_name(file));
                append_line(&target, &line)?;
            }
        }
        let mut out = FileArtifact::new(BUILDER_ID, artifact_files.clone());
        out.description = Some(format!(
            "Created artifact from files: {}",
            join_paths(&artifact_files)
        ));
        // The checksummed files must survive: keep the input, whatever the
        // user says.
        Ok(PostProcessed {
            artifact: Some(Arc::new(out)),
            keep: true,
            force_keep: true,
        })
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn append_line(target: &Path, line: &str) -> Result<(), BuildError> {
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            BuildError::msg(format!("unable to create directory {}: {e}", dir.display()))
        })?;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(target)
        .map_err(|e| BuildError::msg(format!("unable to create file {}: {e}", target.display())))?;
    f.write_all(line.as_bytes())
        .map_err(|e| BuildError::msg(format!("writing {}: {e}", target.display())))
}
