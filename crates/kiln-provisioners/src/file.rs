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
//!
//! Modes, owners and existing files are as with Packer's scp transfers
//! (see `kiln_ssh::transfer`): what is created gets the source's permission
//! bits (never setuid, setgid or sticky) masked by the umask of the side
//! that writes; an existing file is written into and keeps its inode, mode,
//! owner and group; an existing directory is left as it is. The test suite
//! runs every case through kiln and Packer 1.6.6 and compares the trees
//! (`tests/file.rs`).
//!
//! # Where kiln differs from Packer 1.6.6 (deliberately)
//!
//! - **Download destination, per source.** Packer joins the first source's
//!   file name onto a `destination/` and keeps the joined path for the next
//!   sources (`["a.txt", "logs/"]` into `out/` puts `logs` under the file
//!   `out/a.txt`, and fails); kiln works the destination out afresh for
//!   each source.
//! - **Downloads go on after a directory.** Packer returns after the first
//!   directory (or glob) source and silently skips the sources after it;
//!   kiln downloads them all.
//! - **A glob to a missing destination** (`logs/*` to `out`, no trailing
//!   slash): Packer fails when the first match is a file (it opens
//!   `out/<file>` in a directory it has not made); kiln creates `out`.
//! - **Mixed contents into a missing destination** (upload of `dir/` whose
//!   top level holds files and directories, to a path that does not
//!   exist): Packer writes each top-level file onto the destination path
//!   itself, one after the other, and then fails or not depending on the
//!   order the directory lists its entries in; kiln refuses before
//!   copying anything and says to create the destination first.
//! - **Upload order.** Packer sends a directory's entries in the order the
//!   file system lists them, kiln in name order. It shows only when two
//!   top-level directories of a `dir/` source merge into a new destination
//!   (which one gives it its mode) and, if the destination is setgid, in
//!   which files inherit its group (Packer clears the bit when the first
//!   directory is done).
//! - **A failed upload** stops Packer at the first file it cannot write;
//!   kiln's archive goes on with the other files before reporting the
//!   error (both fail the build; what could not be written is untouched in
//!   both).
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
            // Packer sends `FileMode.Perm()`: no setuid, setgid or sticky
            // bit reaches the machine.
            let fm = FileMeta {
                mode: meta.permissions().mode() & 0o777,
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
