//! `compress`: archive and/or compress the artifact's files into one file
//! (Packer 1.6.6 behaviour).
//!
//! - `output`: a template rendered at run time with `.BuildName`,
//!   `.BuilderType` and the builder's generated data (default
//!   `packer_{{.BuildName}}_{{.BuilderType}}`).
//! - `format`: extensions appended to `output` for choosing the format;
//!   otherwise the format comes from `output`'s extensions, as Packer reads
//!   them from the uninterpolated template: `.tar`, `.zip`, `.gz`, `.lz4`,
//!   `.bgzf`, `.xz`, and `.tar.<compression>`; without a known extension,
//!   tar + gzip.
//! - `compression_level`: -1..9 for gzip/bgzf (above 9 is 9; 0 and -1 mean
//!   the default, 6; -2, Go's Huffman-only, is level 1 here).
//!
//! Without tar/zip exactly one input file is compressed. Tar entries are
//! named by the files' base names (GNU format, owner and mode kept,
//! time zeroed); zip entries by the paths as given. Everything is streamed;
//! gzip and BGZF use every core. The input artifact is not kept unless the
//! user sets `keep_input_artifact`.
use kiln_core::communicator::TransferProgress;
use kiln_core::{
    async_trait, Artifact, BuildError, FileArtifact, PostProcessCtx, PostProcessed, PostProcessor,
    PrepareOpts,
};
use kiln_pgz::{Backend, Options, ParallelGz};
use kiln_template::interp::render_option;
use kiln_template::Decoder;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const BUILDER_ID: &str = "packer.post-processor.compress";
const DEFAULT_OUTPUT: &str = "packer_{{.BuildName}}_{{.BuilderType}}";
const DEFAULT_LEVEL: u32 = 6;
/// gzip input per block (BGZF's is its format's).
const GZIP_BLOCK: usize = 512 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    None,
    Tar,
    Zip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    None,
    /// gzip (Packer's parallel gzip, "pgzip").
    Gzip,
    Lz4,
    Bgzf,
    Xz,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::None => "no compression",
            Algorithm::Gzip => "pgzip",
            Algorithm::Lz4 => "lz4",
            Algorithm::Bgzf => "bgzf",
            Algorithm::Xz => "xz",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Uninterpolated; rendered at run time.
    pub output: String,
    pub archive: Archive,
    pub algorithm: Algorithm,
    /// 0..=9.
    pub level: u32,
}

/// Every `.ext` (lower-case letters and digits) in `s`, left to right, as
/// Go's `(?:\.([a-z0-9]+))` finds them.
fn extensions(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'.' {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && (b[j].is_ascii_lowercase() || b[j].is_ascii_digit()) {
                j += 1;
            }
            if j > start {
                out.push(&s[start..j]);
                i = j;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Packer's choice of archive and compression from the output name (and
/// `format`).
pub fn detect(output: &str, format: &str) -> (Archive, Algorithm) {
    let name = if format.is_empty() {
        output.to_string()
    } else {
        format!("{output}.{format}")
    };
    let exts = extensions(&name);
    let Some(&last) = exts.last() else {
        return (Archive::Tar, Algorithm::Gzip);
    };
    let mut archive = Archive::None;
    if exts.len() > 1 && exts[exts.len() - 2] == "tar" {
        archive = Archive::Tar;
    }
    match last {
        "zip" => return (Archive::Zip, Algorithm::None),
        "tar" => return (Archive::Tar, Algorithm::None),
        _ => {}
    }
    let algorithm = match last {
        "gz" => Algorithm::Gzip,
        "lz4" => Algorithm::Lz4,
        "bgzf" => Algorithm::Bgzf,
        "xz" => Algorithm::Xz,
        _ => return (Archive::Tar, Algorithm::Gzip),
    };
    (archive, algorithm)
}

pub fn decode(d: &mut Decoder<'_>) -> Config {
    let output = d
        .raw_string("output")
        .filter(|o| !o.is_empty())
        .unwrap_or_else(|| DEFAULT_OUTPUT.to_string());
    let format = d.string("format").unwrap_or_default();
    let level = d.int("compression_level").unwrap_or(0);
    let (archive, algorithm) = detect(&output, &format);
    let level = match level {
        l if l > 9 => 9,
        -1 | 0 => DEFAULT_LEVEL,
        -2 => 1,
        l if l < -2 => {
            if matches!(algorithm, Algorithm::Gzip | Algorithm::Bgzf) {
                d.error(
                    "compression_level",
                    "Invalid compression level. Expected an integer from -1 to 9.",
                );
            }
            DEFAULT_LEVEL
        }
        l => l as u32,
    };
    Config {
        output,
        archive,
        algorithm,
        level,
    }
}

pub(crate) fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn PostProcessor>> {
    Some(Box::new(Compress { config: decode(d) }))
}

pub struct Compress {
    pub config: Config,
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// gzip and BGZF: the C zlib (flate2's), on every core.
fn pgz_options(bgzf: bool, level: u32) -> Options {
    if bgzf {
        Options::bgzf(Backend::Zlib, level)
    } else {
        Options::gzip(Backend::Zlib, level, GZIP_BLOCK)
    }
    .threads(threads())
}

#[async_trait]
impl PostProcessor for Compress {
    async fn post_process(
        &self,
        ctx: &PostProcessCtx<'_>,
        input: Arc<dyn Artifact>,
    ) -> Result<PostProcessed, BuildError> {
        let build = ctx.build;
        let ui = &build.ui;
        let c = &self.config;
        let interp = build.runtime_interp(
            &ctx.interp,
            &[
                ("BuildName", &build.build_name),
                ("BuilderType", &build.build_type),
            ],
        );
        let target =
            PathBuf::from(render_option("output", &c.output, &interp).map_err(BuildError::new)?);
        let files = input.files();
        if c.archive == Archive::None && files.len() != 1 {
            let list: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            return Err(BuildError::msg(format!(
                "Can only have 1 input file when not using tar/zip. Found {} files: [{}]",
                files.len(),
                list.join(" ")
            )));
        }
        match c.algorithm {
            Algorithm::Gzip | Algorithm::Bgzf | Algorithm::Lz4 => ui.say(&format!(
                "Using {} compression with {} cores for {}",
                c.algorithm.name(),
                if c.algorithm == Algorithm::Lz4 {
                    1
                } else {
                    threads()
                },
                target.display()
            )),
            Algorithm::Xz => ui.say(&format!(
                "Using xz compression with 1 core for {}",
                target.display()
            )),
            Algorithm::None => {}
        }
        match c.archive {
            Archive::Tar => ui.say(&format!(
                "Tarring {} with {}",
                target.display(),
                c.algorithm.name()
            )),
            Archive::Zip => ui.say(&format!("Zipping {}", target.display())),
            Archive::None => ui.say(&format!(
                "Archiving {} with {}",
                files[0].display(),
                c.algorithm.name()
            )),
        }

        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(|e| {
                BuildError::msg(format!(
                    "Unable to create dir for archive {}: {e}",
                    target.display()
                ))
            })?;
        }
        if let Ok(t) = target.canonicalize() {
            if files.iter().any(|f| f.canonicalize().is_ok_and(|f| f == t)) {
                return Err(BuildError::msg(format!(
                    "the archive {} would overwrite one of the files it archives",
                    target.display()
                )));
            }
        }
        let out = File::create(&target).map_err(|e| {
            BuildError::msg(format!(
                "Unable to create archive {}: {e}",
                target.display()
            ))
        })?;
        let total: u64 = files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        let progress: Arc<dyn TransferProgress> =
            Arc::from(ui.progress(&format!("Compressing into {}", file_name(&target))));
        progress.start(Some(total));
        let job = Job {
            files,
            archive: c.archive,
            algorithm: c.algorithm,
            level: c.level,
            cancel: build.cancel.clone(),
            progress: progress.clone(),
        };
        let r = tokio::task::spawn_blocking(move || job.run(out)).await;
        progress.finish();
        let r = match r {
            Ok(r) => r,
            Err(e) => Err(BuildError::msg(format!("compression task failed: {e}"))),
        };
        if let Err(e) = r {
            // No half-written archive is left behind.
            let _ = std::fs::remove_file(&target);
            return Err(if build.cancel.is_cancelled() {
                BuildError::Cancelled
            } else {
                e.context(format!("compressing into {}", target.display()))
            });
        }
        ui.say(&format!("Archive {} completed", target.display()));
        let mut a = FileArtifact::new(BUILDER_ID, vec![target.clone()]);
        a.description = Some(format!("compressed artifacts in: {}", target.display()));
        Ok(PostProcessed {
            artifact: Some(Arc::new(a)),
            keep: false,
            force_keep: false,
        })
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// The work done on a blocking thread.
struct Job {
    files: Vec<PathBuf>,
    archive: Archive,
    algorithm: Algorithm,
    level: u32,
    cancel: CancellationToken,
    progress: Arc<dyn TransferProgress>,
}

/// A compressed stream that must be finished to be complete.
trait Sink: Write + Send {
    fn finish(self: Box<Self>) -> io::Result<()>;
}

struct Plain(BufWriter<File>);
impl Write for Plain {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
impl Sink for Plain {
    fn finish(self: Box<Self>) -> io::Result<()> {
        finish_file(self.0)
    }
}

impl Sink for ParallelGz<BufWriter<File>> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        finish_file((*self).finish()?)
    }
}

impl Sink for lz4_flex::frame::FrameEncoder<BufWriter<File>> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        finish_file((*self).finish().map_err(io::Error::other)?)
    }
}

impl Sink for lzma_rust2::XzWriter<BufWriter<File>> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        finish_file((*self).finish()?)
    }
}

fn finish_file(w: BufWriter<File>) -> io::Result<()> {
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()
}

/// Reads a file, reporting progress and stopping when the build is
/// cancelled.
struct Tracked<'a> {
    inner: File,
    job: &'a Job,
    read: u64,
}

impl Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.job.cancel.is_cancelled() {
            return Err(io::Error::other("cancelled"));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        self.job.progress.advance(n as u64);
        Ok(n)
    }
}

fn fail(what: String) -> impl FnOnce(io::Error) -> BuildError {
    move |e| BuildError::msg(format!("{what}: {e}"))
}

impl Job {
    fn open(&self, path: &Path) -> Result<(Tracked<'_>, std::fs::Metadata), BuildError> {
        let f =
            File::open(path).map_err(fail(format!("Unable to read file {}", path.display())))?;
        let meta = f.metadata().map_err(fail(format!(
            "Unable to get file info for {}",
            path.display()
        )))?;
        if meta.is_dir() {
            return Err(BuildError::msg(format!(
                "{} is a directory: compress archives files only",
                path.display()
            )));
        }
        Ok((
            Tracked {
                inner: f,
                job: self,
                read: 0,
            },
            meta,
        ))
    }

    fn sink(&self, out: File) -> Result<Box<dyn Sink>, BuildError> {
        let out = BufWriter::with_capacity(1 << 20, out);
        let err = |e: io::Error| {
            BuildError::msg(format!(
                "error creating {} writer: {e}",
                self.algorithm.name()
            ))
        };
        Ok(match self.algorithm {
            Algorithm::None => Box::new(Plain(out)),
            Algorithm::Gzip | Algorithm::Bgzf => {
                let opts = pgz_options(self.algorithm == Algorithm::Bgzf, self.level);
                Box::new(ParallelGz::new(out, opts).map_err(err)?)
            }
            Algorithm::Lz4 => {
                // Packer's lz4 writer: 4 MiB blocks, content checksum.
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max4MB)
                    .content_checksum(true);
                Box::new(lz4_flex::frame::FrameEncoder::with_frame_info(info, out))
            }
            Algorithm::Xz => Box::new(
                lzma_rust2::XzWriter::new(out, lzma_rust2::XzOptions::with_preset(6))
                    .map_err(err)?,
            ),
        })
    }

    fn run(self, out: File) -> Result<(), BuildError> {
        match self.archive {
            Archive::Zip => self.zip(out),
            Archive::Tar => {
                let sink = self.sink(out)?;
                let sink = self.tar(sink)?;
                sink.finish()
                    .map_err(fail(format!("Error finishing {}", self.algorithm.name())))
            }
            Archive::None => {
                let mut sink = self.sink(out)?;
                let path = &self.files[0];
                let (mut src, _) = self.open(path)?;
                io::copy(&mut src, &mut sink)
                    .map_err(fail(format!("Failed to compress {}", path.display())))?;
                sink.finish()
                    .map_err(fail(format!("Failed to compress {}", path.display())))
            }
        }
    }

    fn tar(&self, sink: Box<dyn Sink>) -> Result<Box<dyn Sink>, BuildError> {
        let mut b = tar::Builder::new(sink);
        for path in &self.files {
            let (src, meta) = self.open(path)?;
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            h.set_mode(meta.mode() & 0o7777);
            h.set_uid(u64::from(meta.uid()));
            h.set_gid(u64::from(meta.gid()));
            h.set_mtime(0);
            if let Ok(Some(u)) = nix::unistd::User::from_uid(meta.uid().into()) {
                let _ = h.set_username(&u.name);
            }
            if let Ok(Some(g)) = nix::unistd::Group::from_gid(meta.gid().into()) {
                let _ = h.set_groupname(&g.name);
            }
            let name = path
                .file_name()
                .ok_or_else(|| BuildError::msg(format!("{} has no file name", path.display())))?;
            // Exactly the size in the header, whatever happens to the file.
            let mut limited = src.take(meta.len());
            b.append_data(&mut h, name, &mut limited)
                .map_err(fail(format!(
                    "Failed to copy {} data to archive",
                    path.display()
                )))?;
            if limited.get_ref().read != meta.len() {
                return Err(BuildError::msg(format!(
                    "{} shrank while it was being archived",
                    path.display()
                )));
            }
        }
        b.into_inner()
            .map_err(fail("Error finishing tar archive".to_string()))
    }

    fn zip(&self, out: File) -> Result<(), BuildError> {
        use zip::write::SimpleFileOptions;
        let mut z = zip::ZipWriter::new(BufWriter::with_capacity(1 << 20, out));
        for path in &self.files {
            let (mut src, meta) = self.open(path)?;
            let name = path.to_string_lossy().replace('\\', "/");
            let opts = SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .large_file(meta.len() >= u64::from(u32::MAX))
                .last_modified_time(zip::DateTime::default());
            z.start_file(name.as_str(), opts).map_err(|e| {
                BuildError::msg(format!("Failed to add zip header for {name}: {e}"))
            })?;
            io::copy(&mut src, &mut z).map_err(fail(format!(
                "Failed to copy {} data to archive",
                path.display()
            )))?;
        }
        let w = z
            .finish()
            .map_err(|e| BuildError::msg(format!("Error finishing zip archive: {e}")))?;
        finish_file(w).map_err(fail("Error finishing zip archive".to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_and_bgzf_write_what_they_wrote_before() {
        // kiln-pgz's tests/golden.txt: the old writer's output for this
        // input, with any number of threads.
        use sha2::Digest;
        let data = kiln_pgz::testdata::sample(GZIP_BLOCK + 1);
        for (bgzf, name) in [(false, "pp-gzip"), (true, "pp-bgzf")] {
            let mut w = ParallelGz::new(Vec::new(), pgz_options(bgzf, 6)).unwrap();
            for c in data.chunks(70_000) {
                w.write_all(c).unwrap();
            }
            let gz = w.finish().unwrap();
            let key = format!("{name} sample {} 6 ", data.len());
            assert_eq!(
                hex::encode(sha2::Sha256::digest(&gz)),
                include_str!("../../kiln-pgz/tests/golden.txt")
                    .lines()
                    .find_map(|l| l.strip_prefix(&key))
                    .unwrap(),
                "{name}"
            );
        }
    }

    #[test]
    fn formats_from_names_as_packer_detects_them() {
        use Algorithm as C;
        use Archive as A;
        let cases = [
            (
                "packer_{{.BuildName}}_{{.BuilderType}}",
                "",
                A::Tar,
                C::Gzip,
            ),
            ("out.tar.gz", "", A::Tar, C::Gzip),
            ("out.tgz", "", A::Tar, C::Gzip),
            ("out.gz", "", A::None, C::Gzip),
            ("out.img.gz", "", A::None, C::Gzip),
            ("out.tar", "", A::Tar, C::None),
            ("out.zip", "", A::Zip, C::None),
            ("out.tar.lz4", "", A::Tar, C::Lz4),
            ("out.lz4", "", A::None, C::Lz4),
            ("out.bgzf", "", A::None, C::Bgzf),
            ("out.tar.xz", "", A::Tar, C::Xz),
            ("out.img", "", A::Tar, C::Gzip),
            ("out", "tar.gz", A::Tar, C::Gzip),
            ("out.tar", "gz", A::Tar, C::Gzip),
            ("out", "zip", A::Zip, C::None),
            ("{{.BuildName}}.Tar", "", A::Tar, C::Gzip),
        ];
        for (out, fmt, a, c) in cases {
            assert_eq!(detect(out, fmt), (a, c), "{out} / {fmt}");
        }
    }
}
