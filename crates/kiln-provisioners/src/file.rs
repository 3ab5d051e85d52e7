//! Packer 1.6.6's `file` provisioner: upload files and directories to the
//! machine, or download them from it, with Packer's path semantics:
//!
//! - upload, source is a directory: `src/` puts its contents into
//!   `destination`; `src` (no slash) creates `destination/src` (or
//!   `destination` itself when it does not exist yet);
//! - upload, source is a file: `destination/` (trailing slash) receives it
//!   under its own name, otherwise it becomes `destination`;
//! - download: a source ending in `/` or containing a glob is a directory
//!   download; a destination ending in `/` receives a file under its own
//!   name. Local parent directories are created.
use kiln_core::communicator::FileMeta;
use kiln_core::{async_trait, BuildError, Communicator, PrepareOpts, ProvisionCtx, Provisioner};
use kiln_template::Decoder;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direction {
    Upload,
    Download,
}

#[derive(Debug, Clone)]
pub struct FileConfig {
    pub sources: Vec<String>,
    pub destination: String,
    pub direction: Direction,
    pub generated: bool,
}

impl FileConfig {
    pub fn decode(d: &mut Decoder<'_>) -> Option<FileConfig> {
        let source = d.string("source").filter(|s| !s.is_empty());
        let mut sources = d.string_list("sources").unwrap_or_default();
        let destination = d.string("destination").unwrap_or_default();
        let direction = d.string("direction").unwrap_or_default();
        let generated = d.bool("generated").unwrap_or(false);
        let mut ok = true;
        let direction = match direction.as_str() {
            "" | "upload" => Direction::Upload,
            "download" => Direction::Download,
            _ => {
                d.error("direction", "Direction must be one of: download, upload.");
                ok = false;
                Direction::Upload
            }
        };
        if let Some(s) = source {
            sources.push(s);
        }
        if direction == Direction::Upload && !generated {
            for s in &sources {
                if let Err(e) = std::fs::metadata(s) {
                    let key = if d.node("source").is_some() {
                        "source"
                    } else {
                        "sources"
                    };
                    d.error(key, format!("Bad source '{s}': {e}"));
                    ok = false;
                }
            }
        }
        if sources.is_empty() {
            d.error_here("Source must be specified.");
            ok = false;
        }
        if destination.is_empty() {
            d.error_here("Destination must be specified.");
            ok = false;
        }
        ok.then_some(FileConfig {
            sources,
            destination,
            direction,
            generated,
        })
    }
}

pub struct File {
    pub config: FileConfig,
}

pub fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn Provisioner>> {
    FileConfig::decode(d).map(|config| Box::new(File { config }) as Box<dyn Provisioner>)
}

fn base_name(p: &str) -> String {
    Path::new(p.trim_end_matches('/'))
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.to_string())
}

#[async_trait]
impl Provisioner for File {
    async fn provision(
        &self,
        pctx: &ProvisionCtx<'_>,
        comm: Option<&Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        let ctx = pctx.build;
        let Some(comm) = comm else {
            return Err(BuildError::msg(
                "the file provisioner needs a communicator, but this build has `communicator: none`",
            ));
        };
        let comm: &dyn Communicator = &**comm;
        match self.config.direction {
            Direction::Upload => self.upload(ctx, comm).await,
            Direction::Download => self.download(ctx, comm).await,
        }
    }
}

impl File {
    async fn upload(
        &self,
        ctx: &kiln_core::BuildCtx,
        comm: &dyn Communicator,
    ) -> Result<(), BuildError> {
        let ui = &*ctx.ui;
        let dst = &self.config.destination;
        for src in &self.config.sources {
            ui.say(&format!("Uploading {src} => {dst}"));
            let meta =
                std::fs::metadata(src).map_err(|e| BuildError::msg(format!("{src}: {e}")))?;
            let progress = ui.progress(&base_name(src));
            if meta.is_dir() {
                let r = ctx
                    .cancellable(async {
                        Ok(comm.upload_dir(dst, Path::new(src), &[], &*progress).await)
                    })
                    .await?;
                if let Err(e) = r {
                    ui.error(&format!("Upload failed: {e}"));
                    return Err(e.into());
                }
                continue;
            }
            let filedst = if dst.ends_with('/') {
                format!("{dst}{}", base_name(src))
            } else {
                dst.clone()
            };
            let mut f = tokio::fs::File::open(src)
                .await
                .map_err(|e| BuildError::msg(format!("{src}: {e}")))?;
            let fm = FileMeta {
                mode: meta.permissions().mode() & 0o7777,
                size: Some(meta.len()),
            };
            let r = ctx
                .cancellable(async { Ok(comm.upload(&filedst, &mut f, fm, &*progress).await) })
                .await?;
            if let Err(e) = r {
                ui.error(&format!("Upload failed: {e}"));
                return Err(e.into());
            }
        }
        Ok(())
    }

    async fn download(
        &self,
        ctx: &kiln_core::BuildCtx,
        comm: &dyn Communicator,
    ) -> Result<(), BuildError> {
        let ui = &*ctx.ui;
        for src in &self.config.sources {
            // Per source (Packer 1.6.6 carries the joined name over to the
            // next source, overwriting the first file: not reproduced).
            let mut dst = self.config.destination.clone();
            ui.say(&format!("Downloading {src} => {dst}"));
            // Packer: the directory to create, and the file name.
            let dir: PathBuf = if !dst.ends_with('/') {
                Path::new(&dst)
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
            } else {
                let d = PathBuf::from(&dst);
                if !src.ends_with('/') && !src.ends_with('*') {
                    dst = Path::new(&dst)
                        .join(base_name(src))
                        .to_string_lossy()
                        .into_owned();
                }
                d
            };
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| BuildError::msg(format!("creating {}: {e}", dir.display())))?;
            }
            let progress = ui.progress(&base_name(src));
            if src.ends_with('/') || src.contains(['*', '?', '[']) {
                let r = ctx
                    .cancellable(async {
                        Ok(comm.download_dir(src, Path::new(&dst), &*progress).await)
                    })
                    .await?;
                if let Err(e) = r {
                    ui.error(&format!("Download failed: {e}"));
                    return Err(e.into());
                }
                continue;
            }
            let mut f = {
                use std::os::unix::fs::OpenOptionsExt;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o644)
                    .open(&dst)
                    .map_err(|e| BuildError::msg(format!("{dst}: {e}")))?;
                tokio::fs::File::from_std(f)
            };
            let r = ctx
                .cancellable(async { Ok(comm.download(src, &mut f, &*progress).await) })
                .await?;
            if let Err(e) = r {
                ui.error(&format!("Download failed: {e}"));
                return Err(e.into());
            }
        }
        Ok(())
    }
}
