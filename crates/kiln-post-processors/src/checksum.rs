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
use kiln_core::{
    async_trait, Artifact, BuildError, FileArtifact, PostProcessCtx, PostProcessed, PostProcessor,
    PrepareOpts,
};
use kiln_template::interp::render_option;
use kiln_template::Decoder;
use sha2::digest::DynDigest;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const BUILDER_ID: &str = "packer.post-processor.checksum";
const DEFAULT_OUTPUT: &str = "packer_{{.BuildName}}_{{.BuilderType}}_{{.ChecksumType}}.checksum";

/// The hash algorithms Packer 1.6.6 knows, by their template names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumType {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl ChecksumType {
    pub const ALL: [ChecksumType; 6] = [
        ChecksumType::Md5,
        ChecksumType::Sha1,
        ChecksumType::Sha224,
        ChecksumType::Sha256,
        ChecksumType::Sha384,
        ChecksumType::Sha512,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ChecksumType::Md5 => "md5",
            ChecksumType::Sha1 => "sha1",
            ChecksumType::Sha224 => "sha224",
            ChecksumType::Sha256 => "sha256",
            ChecksumType::Sha384 => "sha384",
            ChecksumType::Sha512 => "sha512",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }
    fn hasher(self) -> Box<dyn DynDigest + Send> {
        match self {
            ChecksumType::Md5 => Box::new(md5::Md5::default()),
            ChecksumType::Sha1 => Box::new(sha1::Sha1::default()),
            ChecksumType::Sha224 => Box::new(sha2::Sha224::default()),
            ChecksumType::Sha256 => Box::new(sha2::Sha256::default()),
            ChecksumType::Sha384 => Box::new(sha2::Sha384::default()),
            ChecksumType::Sha512 => Box::new(sha2::Sha512::default()),
        }
    }
}

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
            let hex = tokio::task::spawn_blocking(move || hash_file(&path, &types, &cancel, &*p))
                .await
                .map_err(|e| BuildError::msg(format!("hashing {}: {e}", file.display())))??;
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

/// Hex digests of `path` for each type, in one pass.
fn hash_file(
    path: &Path,
    types: &[ChecksumType],
    cancel: &tokio_util::sync::CancellationToken,
    progress: &dyn kiln_core::communicator::TransferProgress,
) -> Result<Vec<String>, BuildError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| BuildError::msg(format!("unable to open file {}: {e}", path.display())))?;
    let mut hashers: Vec<_> = types.iter().map(|t| t.hasher()).collect();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if cancel.is_cancelled() {
            return Err(BuildError::Cancelled);
        }
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(BuildError::msg(format!(
                    "unable to compute checksums of {}: {e}",
                    path.display()
                )))
            }
        };
        for h in &mut hashers {
            h.update(&buf[..n]);
        }
        progress.advance(n as u64);
    }
    Ok(hashers
        .into_iter()
        .map(|h| hex::encode(h.finalize()))
        .collect())
}
