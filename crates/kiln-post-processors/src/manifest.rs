//! `manifest`: record each build's artifact in a JSON file, in Packer
//! 1.6.6's format:
//!
//! ```json
//! {
//!   "builds": [
//!     {
//!       "name": "...", "builder_type": "...", "build_time": 1600000000,
//!       "files": [{"name": "...", "size": 123}],
//!       "artifact_id": "...", "packer_run_uuid": "...", "custom_data": null
//!     }
//!   ],
//!   "last_run_uuid": "..."
//! }
//! ```
//!
//! Options: `output` (default `packer-manifest.json`), `strip_path` (file
//! names without directories), `strip_time` (omit `build_time`),
//! `custom_data` (an object of strings).
//!
//! Builds are appended to an existing manifest; with `-force`, a manifest
//! written by another run (a different `last_run_uuid`) is started afresh.
//! The run's UUID comes from [`crate::run_uuid`]. Writes are serialised
//! within this process (parallel builds) and, like Packer, with an
//! `<output>.lock` file between processes. The output is formatted as Go's
//! `json.MarshalIndent` formats it, so manifests are byte-identical to
//! Packer's for the same data.
use kiln_core::{
    async_trait, Artifact, BuildError, PostProcessCtx, PostProcessed, PostProcessor, PrepareOpts,
};
use kiln_template::Decoder;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const BUILDER_ID: &str = "packer.post-processor.manifest";

#[derive(Debug, Clone)]
pub struct Config {
    pub output: PathBuf,
    pub strip_path: bool,
    pub strip_time: bool,
    pub custom_data: Option<BTreeMap<String, String>>,
    /// `-force`: start afresh a manifest written by another run.
    pub force: bool,
}

pub fn decode(d: &mut Decoder<'_>, opts: &PrepareOpts) -> Config {
    let output = d
        .string("output")
        .filter(|o| !o.is_empty())
        .unwrap_or_else(|| "packer-manifest.json".to_string());
    Config {
        output: PathBuf::from(output),
        strip_path: d.bool("strip_path").unwrap_or(false),
        strip_time: d.bool("strip_time").unwrap_or(false),
        custom_data: d.string_map("custom_data"),
        force: opts.force,
    }
}

pub(crate) fn factory(d: &mut Decoder<'_>, opts: &PrepareOpts) -> Option<Box<dyn PostProcessor>> {
    Some(Box::new(Manifest {
        config: decode(d, opts),
    }))
}

pub struct Manifest {
    pub config: Config,
}

/// One build in a manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct BuildEntry {
    pub name: String,
    pub builder_type: String,
    /// 0 is left out of the JSON (Go's `omitempty`).
    pub build_time: i64,
    pub files: Option<Vec<FileEntry>>,
    pub artifact_id: String,
    pub packer_run_uuid: String,
    pub custom_data: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct FileEntry {
    pub name: String,
    pub size: i64,
}

/// A whole manifest file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ManifestFile {
    pub builds: Option<Vec<BuildEntry>>,
    pub last_run_uuid: String,
}

/// Serialises manifest writes of parallel builds in this process.
static WRITE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[async_trait]
impl PostProcessor for Manifest {
    async fn post_process(
        &self,
        ctx: &PostProcessCtx<'_>,
        input: Arc<dyn Artifact>,
    ) -> Result<PostProcessed, BuildError> {
        let c = &self.config;
        let mut files = Vec::new();
        for f in input.files() {
            let size = tokio::fs::metadata(&f)
                .await
                .map(|m| m.len() as i64)
                .unwrap_or(0);
            let name = if c.strip_path {
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                f.display().to_string()
            };
            files.push(FileEntry { name, size });
        }
        let run_uuid = crate::run_uuid(&ctx.interp);
        let entry = BuildEntry {
            name: ctx.build.build_name.clone(),
            builder_type: ctx.build.build_type.clone(),
            build_time: if c.strip_time {
                0
            } else {
                time::OffsetDateTime::now_utc().unix_timestamp()
            },
            files: if files.is_empty() { None } else { Some(files) },
            artifact_id: input.id(),
            packer_run_uuid: run_uuid.clone(),
            custom_data: c.custom_data.clone(),
        };

        {
            let _in_process = WRITE_LOCK.lock().await;
            let lock = LockFile::acquire(&c.output).await;
            append_build(&c.output, entry, &run_uuid, c.force).await?;
            drop(lock);
        }
        // The manifest records the artifact; it never replaces or deletes it.
        Ok(PostProcessed {
            artifact: Some(input),
            keep: true,
            force_keep: true,
        })
    }
}

/// Read `path` (if present), append `entry`, set `last_run_uuid`, write.
pub async fn append_build(
    path: &Path,
    entry: BuildEntry,
    run_uuid: &str,
    force: bool,
) -> Result<(), BuildError> {
    let mut manifest = match tokio::fs::read(path).await {
        Ok(bytes) if bytes.is_empty() => ManifestFile::default(),
        Ok(bytes) => serde_json::from_slice::<ManifestFile>(&bytes).map_err(|e| {
            BuildError::msg(format!("unable to parse manifest {}: {e}", path.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ManifestFile::default(),
        Err(e) => {
            return Err(BuildError::msg(format!(
                "unable to open manifest {} for reading: {e}",
                path.display()
            )))
        }
    };
    if force && manifest.last_run_uuid != run_uuid {
        manifest = ManifestFile::default();
    }
    manifest.builds.get_or_insert_with(Vec::new).push(entry);
    manifest.last_run_uuid = run_uuid.to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            return Err(BuildError::msg(format!(
                "unable to write manifest {}: directory {} does not exist",
                path.display(),
                dir.display()
            )));
        }
    }
    tokio::fs::write(path, to_go_json(&manifest))
        .await
        .map_err(|e| BuildError::msg(format!("unable to write manifest {}: {e}", path.display())))
}

/// `<output>.lock`, created exclusively (three tries, 200 ms apart, as
/// Packer does; then the manifest is written anyway) and removed on drop if
/// this process created it.
struct LockFile(Option<PathBuf>);

impl LockFile {
    async fn acquire(output: &Path) -> LockFile {
        let mut name = output.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        for i in 0..3u32 {
            tokio::time::sleep(Duration::from_millis(200) * i).await;
            let r = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await;
            if r.is_ok() {
                return LockFile(Some(path));
            }
        }
        LockFile(None)
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The manifest as Go's `json.MarshalIndent(m, "", "  ")` writes it.
pub fn to_go_json(m: &ManifestFile) -> String {
    let mut o = String::from("{\n  \"builds\": ");
    match &m.builds {
        None => o.push_str("null"),
        Some(b) if b.is_empty() => o.push_str("[]"),
        Some(builds) => {
            o.push_str("[\n");
            for (i, b) in builds.iter().enumerate() {
                write_build(&mut o, b);
                o.push_str(if i + 1 < builds.len() { ",\n" } else { "\n" });
            }
            o.push_str("  ]");
        }
    }
    o.push_str(",\n  \"last_run_uuid\": ");
    go_string(&mut o, &m.last_run_uuid);
    o.push_str("\n}");
    o
}

fn write_build(o: &mut String, b: &BuildEntry) {
    const I: &str = "      ";
    o.push_str("    {\n");
    o.push_str(I);
    o.push_str("\"name\": ");
    go_string(o, &b.name);
    o.push_str(",\n");
    o.push_str(I);
    o.push_str("\"builder_type\": ");
    go_string(o, &b.builder_type);
    o.push_str(",\n");
    if b.build_time != 0 {
        o.push_str(&format!("{I}\"build_time\": {},\n", b.build_time));
    }
    o.push_str(I);
    o.push_str("\"files\": ");
    match &b.files {
        None => o.push_str("null"),
        Some(f) if f.is_empty() => o.push_str("[]"),
        Some(files) => {
            o.push_str("[\n");
            for (i, f) in files.iter().enumerate() {
                o.push_str("        {\n          \"name\": ");
                go_string(o, &f.name);
                o.push_str(&format!(",\n          \"size\": {}\n        }}", f.size));
                o.push_str(if i + 1 < files.len() { ",\n" } else { "\n" });
            }
            o.push_str(I);
            o.push(']');
        }
    }
    o.push_str(",\n");
    o.push_str(I);
    o.push_str("\"artifact_id\": ");
    go_string(o, &b.artifact_id);
    o.push_str(",\n");
    o.push_str(I);
    o.push_str("\"packer_run_uuid\": ");
    go_string(o, &b.packer_run_uuid);
    o.push_str(",\n");
    o.push_str(I);
    o.push_str("\"custom_data\": ");
    match &b.custom_data {
        None => o.push_str("null"),
        Some(m) if m.is_empty() => o.push_str("{}"),
        Some(m) => {
            o.push_str("{\n");
            for (i, (k, v)) in m.iter().enumerate() {
                o.push_str("        ");
                go_string(o, k);
                o.push_str(": ");
                go_string(o, v);
                o.push_str(if i + 1 < m.len() { ",\n" } else { "\n" });
            }
            o.push_str(I);
            o.push('}');
        }
    }
    o.push_str("\n    }");
}

/// A JSON string with Go's escaping: `<`, `>`, `&`, U+2028 and U+2029 as
/// `\u` escapes, control characters other than `\n`, `\r`, `\t` as `\u00XX`.
pub fn go_string(o: &mut String, s: &str) {
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                o.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
}
