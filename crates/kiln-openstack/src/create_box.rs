//! The `create_box` post-processor (kiln's own; the seed's `create_box`
//! script made built-in): a raw Glance image (the `openstack` builder's
//! artifact) or a local disk image (e.g. the `qemu` builder's) becomes a
//! qcow2 Glance image.
//!
//! The raw image is streamed from Glance straight into the qcow2 writer
//! (zero clusters skipped, optionally compressed), so the only local file is
//! the qcow2 output: local disk needed is at most the qcow2's size, never
//! raw plus qcow2 as the script needed. The qcow2 is uploaded with the
//! configured name, formats, visibility and properties; the size and the
//! checksums Glance reports are compared with what was sent; then the
//! original is deleted (by kiln's core, unless `keep_input_artifact`).
//! On any failure (or Ctrl-C) the half-uploaded image and the local file
//! are removed.
use crate::builder::ImageArtifact;
use crate::client::api::Image;
use crate::client::{auth, resolve_from_env, AccessKeys, Cloud, OsError, Session};
use crate::qcow2;
use bytes::Bytes;
use futures_util::StreamExt;
use kiln_core::communicator::TransferProgress;
use kiln_core::{async_trait, Artifact, BuildError, PostProcessCtx, PostProcessed, PostProcessor};
use md5::Md5;
use serde_json::{json, Value};
use sha2::{Digest, Sha512};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The builder id of create_box's artifacts.
pub const BUILDER_ID: &str = "kiln.create_box";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub access: AccessKeys,
    /// The new image's name (default: the input image's name, or the
    /// local file's name).
    pub name: Option<String>,
    pub disk_format: String,
    pub container_format: String,
    pub visibility: Option<String>,
    pub properties: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub min_disk: Option<u64>,
    pub min_ram: Option<u64>,
    pub protected: Option<bool>,
    /// qcow2 compressed clusters (deflate, as `qemu-img convert -c`).
    pub compress: bool,
    pub compression_level: u32,
    /// Convert this Glance image instead of the input artifact.
    pub image_id: Option<String>,
    /// Where the qcow2 is written while it is made (default: the build's
    /// working directory).
    pub temp_dir: Option<PathBuf>,
}

pub fn decode(d: &mut kiln_template::Decoder<'_>) -> Config {
    let access = AccessKeys::decode(d);
    let disk_format = d.string("disk_format").unwrap_or_else(|| "qcow2".into());
    if disk_format != "qcow2" {
        d.error(
            "disk_format",
            format!("create_box makes qcow2 images; disk_format {disk_format:?} is not supported"),
        );
    }
    let visibility = d.string("visibility");
    if let Some(v) = &visibility {
        if !crate::builder::config::VISIBILITIES.contains(&v.as_str()) {
            d.error("visibility", format!("Unknown visibility value {v}"));
        }
    }
    let level = d.uint("compression_level");
    if level.is_some_and(|l| !(1..=9).contains(&l)) {
        d.error("compression_level", "compression_level must be 1 to 9");
    }
    Config {
        access,
        name: d.string("name"),
        disk_format,
        container_format: d
            .string("container_format")
            .unwrap_or_else(|| "bare".into()),
        visibility,
        properties: d.string_map("properties").unwrap_or_default(),
        tags: d.string_list("tags").unwrap_or_default(),
        min_disk: d.uint("min_disk"),
        min_ram: d.uint("min_ram"),
        protected: d.bool("protected"),
        compress: d.bool("compress").unwrap_or(false),
        compression_level: level.unwrap_or(6) as u32,
        image_id: d.string("image_id"),
        temp_dir: d.string("temp_dir").map(PathBuf::from),
    }
}

pub struct CreateBox {
    pub config: Config,
}

/// Where the image comes from.
enum Input {
    Glance(String),
    Local(PathBuf),
}

fn input_of(c: &Config, a: &dyn Artifact) -> Result<Input, BuildError> {
    if let Some(id) = &c.image_id {
        return Ok(Input::Glance(id.clone()));
    }
    if let Some(id) = a.state("image_id") {
        if a.files().is_empty() {
            return Ok(Input::Glance(id));
        }
    }
    if a.builder_id() == crate::builder::BUILDER_ID {
        return Ok(Input::Glance(a.id()));
    }
    let files: Vec<PathBuf> = a.files().into_iter().filter(|f| f.is_file()).collect();
    let pick = files
        .iter()
        .find(|f| {
            matches!(
                f.extension().and_then(|e| e.to_str()),
                Some("qcow2" | "raw" | "img")
            )
        })
        .or_else(|| (files.len() == 1).then(|| &files[0]));
    match pick {
        Some(f) => Ok(Input::Local(f.clone())),
        None => Err(BuildError::msg(format!(
            "create_box: the input artifact ({}) is neither a Glance image nor a local disk image",
            a.builder_id()
        ))),
    }
}

/// Removes the image it holds unless disarmed (a failure at any point,
/// cancellation included, leaves nothing in Glance). Armed before the
/// image is asked for: the image's id is chosen by kiln, so even a create
/// request cut off by a Ctrl-C or a timeout leaves nothing unknown.
struct ImageGuard {
    cloud: Cloud,
    id: Arc<Mutex<Option<String>>>,
    /// The create request, when it has not been answered yet (it runs on
    /// to its end: the image is deleted after it has answered, never
    /// before it exists).
    create: Mutex<Option<tokio::task::JoinHandle<Result<Image, OsError>>>>,
    /// The create request got no answer at all: Glance may still be
    /// making the image.
    unanswered: std::sync::atomic::AtomicBool,
}

impl ImageGuard {
    fn take(&self) -> Option<String> {
        self.id.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
    fn arm(&self, id: &str) {
        *self.id.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.to_string());
    }
    fn note(&self, e: &OsError) {
        if e.unanswered() {
            self.unanswered
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn pending(&self) -> Option<tokio::task::JoinHandle<Result<Image, OsError>>> {
        self.create.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The session create_box works with: the input artifact's (the builder's)
/// when create_box has no access keys of its own; the builder's
/// credentials with create_box's own keys over them when it has some; its
/// own keys with `OS_*` and clouds.yaml when the input is not an OpenStack
/// artifact or create_box names a `cloud`.
pub async fn session_for(
    own: &AccessKeys,
    input: &dyn Artifact,
) -> Result<(Arc<Session>, Vec<String>), OsError> {
    let base = crate::builder::artifact::session_of(input);
    let opts = match base {
        Some(s) if *own == AccessKeys::default() => {
            let secrets = s.options().secrets();
            return Ok((s, secrets));
        }
        Some(s) if own.cloud.is_none() => auth::overlay(s.options(), own)?,
        _ => resolve_from_env(own)?,
    };
    let secrets = opts.secrets();
    Ok((Session::connect(opts).await?, secrets))
}

#[async_trait]
impl PostProcessor for CreateBox {
    async fn post_process(
        &self,
        ctx: &PostProcessCtx<'_>,
        input: Arc<dyn Artifact>,
    ) -> Result<PostProcessed, BuildError> {
        let b = ctx.build;
        let ui = b.ui.child("create_box");
        let source = input_of(&self.config, input.as_ref())?;
        let session = b
            .cancellable(async {
                let (s, secrets) = session_for(&self.config.access, input.as_ref()).await?;
                for x in secrets {
                    ui.add_secret(&x);
                }
                Ok(s)
            })
            .await?;
        let cloud = Cloud::new(session);
        let guard = ImageGuard {
            cloud: cloud.clone(),
            id: Arc::new(Mutex::new(None)),
            create: Mutex::new(None),
            unanswered: Default::default(),
        };
        let dir = self
            .config
            .temp_dir
            .clone()
            .unwrap_or_else(|| b.work_dir.clone());
        let work = run(&self.config, &cloud, &source, &dir, ui.as_ref(), &guard);
        let r = b.cancellable(work).await;
        match r {
            Ok(Some(new_id)) => {
                let ledger = guard.take();
                debug_assert!(ledger.is_some());
                let mut a = ImageArtifact::new(cloud, new_id);
                a.builder_id = BUILDER_ID.to_string();
                Ok(PostProcessed {
                    artifact: Some(Arc::new(a)),
                    // The raw original goes, as in the seed's script; a
                    // local file stays unless asked otherwise.
                    keep: matches!(source, Input::Local(_)),
                    force_keep: false,
                })
            }
            Ok(None) => Ok(PostProcessed {
                artifact: Some(input),
                keep: true,
                force_keep: true,
            }),
            Err(e) => {
                if let Some(h) = guard.pending() {
                    ui.message(
                        "Waiting for the answer to the image create request before cleaning up...",
                    );
                    if let Ok(Err(e)) = h.await {
                        guard.note(&e);
                    }
                }
                if let Some(id) = guard.take() {
                    if guard.unanswered.load(std::sync::atomic::Ordering::SeqCst) {
                        // Glance may still be making it: let it appear
                        // before deleting it (for as long as one request
                        // may take).
                        let until = std::time::Instant::now() + cloud.session.request_timeout;
                        while std::time::Instant::now() < until {
                            match guard.cloud.get_image(&id).await {
                                Err(e) if e.is_not_found() => {
                                    tokio::time::sleep(std::time::Duration::from_millis(250)).await
                                }
                                _ => break,
                            }
                        }
                    }
                    ui.say(&format!("Deleting the unfinished image {id}"));
                    let mut last = None;
                    for _ in 0..5 {
                        match guard.cloud.delete_image(&id).await {
                            Ok(()) => {
                                last = None;
                                break;
                            }
                            Err(e) if e.is_not_found() => {
                                last = None;
                                break;
                            }
                            Err(e) => last = Some(e),
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                    if let Some(e2) = last {
                        ui.error(&format!(
                            "Could not delete image {id}, please delete it by hand: {e2}"
                        ));
                    }
                }
                Err(e)
            }
        }
    }
}

/// The whole conversion; `Ok(None)` when there is nothing to do.
async fn run(
    c: &Config,
    cloud: &Cloud,
    source: &Input,
    dir: &Path,
    ui: &dyn kiln_core::Ui,
    guard: &ImageGuard,
) -> Result<Option<String>, BuildError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| BuildError::msg(format!("creating {}: {e}", dir.display())))?;
    // The local qcow2 (removed when dropped, whatever happens).
    let (name, file, _tmp): (String, PathBuf, Option<tempfile::TempPath>) = match source {
        Input::Glance(id) => {
            let src = cloud
                .get_image(id)
                .await
                .map_err(|e| BuildError::from(e).context("create_box: reading the source image"))?;
            if src.status != "active" {
                return Err(BuildError::msg(format!(
                    "create_box: image {id} is {}, not active",
                    src.status
                )));
            }
            if src.disk_format.as_deref() == Some("qcow2") && !c.compress {
                ui.say(&format!("Image {id} is already qcow2: nothing to do"));
                return Ok(None);
            }
            if src.disk_format.as_deref().is_some_and(|f| f != "raw") {
                return Err(BuildError::msg(format!(
                    "create_box converts raw images; image {id} is {}",
                    src.disk_format.as_deref().unwrap_or("?")
                )));
            }
            let tmp = tempfile::Builder::new()
                .prefix("create_box-")
                .suffix(".qcow2")
                .tempfile_in(dir)
                .map_err(|e| BuildError::msg(format!("creating a file in {}: {e}", dir.display())))?
                .into_temp_path();
            ui.say(&format!(
                "Downloading raw image {id} and converting it to qcow2{}",
                if c.compress { " (compressed)" } else { "" }
            ));
            download_convert(cloud, &src, &tmp, c, ui).await?;
            let name = c.name.clone().unwrap_or_else(|| src.name.clone());
            (name, tmp.to_path_buf(), Some(tmp))
        }
        Input::Local(path) => {
            let name = c.name.clone().unwrap_or_else(|| {
                path.file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("image")
                    .to_string()
            });
            let mut head = [0u8; 4];
            let fmt = {
                let mut f = std::fs::File::open(path)
                    .map_err(|e| BuildError::msg(format!("opening {}: {e}", path.display())))?;
                let n = f.read(&mut head).unwrap_or(0);
                qcow2::sniff(&head[..n])
            };
            match (fmt, c.compress) {
                (qcow2::Format::Qcow2, false) => (name, path.clone(), None),
                (fmt, compress) => {
                    let tmp = tempfile::Builder::new()
                        .prefix("create_box-")
                        .suffix(".qcow2")
                        .tempfile_in(dir)
                        .map_err(|e| {
                            BuildError::msg(format!("creating a file in {}: {e}", dir.display()))
                        })?
                        .into_temp_path();
                    ui.say(&format!("Converting {} to qcow2", path.display()));
                    if fmt == qcow2::Format::Qcow2 {
                        qemu_img_compress(path, &tmp).await?;
                    } else {
                        convert_local(path, &tmp, compress.then_some(c.compression_level), ui)
                            .await?;
                    }
                    (name, tmp.to_path_buf(), Some(tmp))
                }
            }
        }
    };
    let id = upload(c, cloud, &name, &file, ui, guard).await?;
    Ok(Some(id))
}

/// Stream a raw Glance image into the qcow2 writer; check its length and
/// checksum against what Glance says.
async fn download_convert(
    cloud: &Cloud,
    src: &Image,
    out: &Path,
    c: &Config,
    ui: &dyn kiln_core::Ui,
) -> Result<qcow2::Stats, BuildError> {
    let resp = cloud
        .download_image(&src.id)
        .await
        .map_err(|e| BuildError::from(e).context("create_box: downloading"))?;
    let total = src.size.or(resp.content_length());
    let progress = ui.progress("Downloading and converting");
    progress.start(total);
    let f = std::fs::File::create(out)
        .map_err(|e| BuildError::msg(format!("creating {}: {e}", out.display())))?;
    let level = c.compress.then_some(c.compression_level);
    // Writer and checksum run on two threads, fed the same 1 MiB batches.
    let (wtx, mut wrx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let (htx, mut hrx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let out_s = out.display().to_string();
    let writer = tokio::task::spawn_blocking(move || -> Result<qcow2::Stats, String> {
        let mut w = qcow2::Writer::new(std::io::BufWriter::with_capacity(1 << 20, f), level)
            .map_err(|e| format!("writing {out_s}: {e}"))?;
        while let Some(chunk) = wrx.blocking_recv() {
            w.write(&chunk)
                .map_err(|e| format!("writing {out_s}: {e}"))?;
        }
        let (bw, st) = w.finish().map_err(|e| format!("writing {out_s}: {e}"))?;
        let f = bw
            .into_inner()
            .map_err(|e| format!("writing {out_s}: {e}"))?;
        f.sync_data().map_err(|e| format!("writing {out_s}: {e}"))?;
        Ok(st)
    });
    let hasher = tokio::task::spawn_blocking(move || {
        let mut h = Md5::new();
        while let Some(chunk) = hrx.blocking_recv() {
            h.update(&chunk);
        }
        hex::encode(h.finalize())
    });
    let mut stream = resp.bytes_stream();
    let mut got: u64 = 0;
    let mut failed = None;
    let mut batch = bytes::BytesMut::with_capacity(1 << 20);
    loop {
        let next = stream.next().await;
        let last = next.is_none();
        match next {
            Some(Ok(c)) => {
                got += c.len() as u64;
                progress.advance(c.len() as u64);
                batch.extend_from_slice(&c);
            }
            Some(Err(e)) => {
                failed = Some(format!(
                    "create_box: downloading image {}: {}",
                    src.id,
                    crate::client::session::describe(&e)
                ));
                break;
            }
            None => {}
        }
        if batch.len() >= (1 << 20) || (last && !batch.is_empty()) {
            let chunk =
                std::mem::replace(&mut batch, bytes::BytesMut::with_capacity(1 << 20)).freeze();
            if wtx.send(chunk.clone()).await.is_err() || htx.send(chunk).await.is_err() {
                break; // the writer failed: its error is reported below
            }
        }
        if last {
            break;
        }
    }
    drop(wtx);
    drop(htx);
    progress.finish();
    let st = writer
        .await
        .map_err(|e| BuildError::msg(format!("create_box: writer: {e}")))?
        .map_err(BuildError::msg)?;
    let md5 = hasher.await.unwrap_or_default();
    if let Some(f) = failed {
        return Err(BuildError::msg(f));
    }
    if let Some(size) = src.size {
        if got != size {
            return Err(BuildError::msg(format!(
                "create_box: image {} is {size} bytes in Glance, the download gave {got}",
                src.id
            )));
        }
    }
    if let Some(sum) = &src.checksum {
        if !sum.eq_ignore_ascii_case(&md5) {
            return Err(BuildError::msg(format!(
                "create_box: image {} has checksum {sum} in Glance, the download {md5}",
                src.id
            )));
        }
    }
    ui.message(&format!(
        "Converted {} MiB of raw image into {} MiB of qcow2 ({} data clusters{})",
        got >> 20,
        st.file_size >> 20,
        st.data_clusters,
        if st.compressed_clusters > 0 {
            format!(", {} compressed", st.compressed_clusters)
        } else {
            String::new()
        }
    ));
    Ok(st)
}

async fn convert_local(
    path: &Path,
    out: &Path,
    level: Option<u32>,
    ui: &dyn kiln_core::Ui,
) -> Result<qcow2::Stats, BuildError> {
    let progress: Arc<dyn TransferProgress> = Arc::from(ui.progress("Converting"));
    let (p, o) = (path.to_path_buf(), out.to_path_buf());
    let pr = progress.clone();
    let r = tokio::task::spawn_blocking(move || -> Result<qcow2::Stats, String> {
        let mut inp =
            std::fs::File::open(&p).map_err(|e| format!("opening {}: {e}", p.display()))?;
        let len = inp.metadata().map(|m| m.len()).ok();
        pr.start(len);
        let f = std::fs::File::create(&o).map_err(|e| format!("creating {}: {e}", o.display()))?;
        let mut w = qcow2::Writer::new(std::io::BufWriter::with_capacity(1 << 20, f), level)
            .map_err(|e| format!("writing {}: {e}", o.display()))?;
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = inp
                .read(&mut buf)
                .map_err(|e| format!("reading {}: {e}", p.display()))?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n])
                .map_err(|e| format!("writing {}: {e}", o.display()))?;
            pr.advance(n as u64);
        }
        let (bw, st) = w
            .finish()
            .map_err(|e| format!("writing {}: {e}", o.display()))?;
        bw.into_inner()
            .map_err(|e| format!("writing {}: {e}", o.display()))?
            .sync_data()
            .map_err(|e| format!("writing {}: {e}", o.display()))?;
        Ok(st)
    })
    .await
    .map_err(|e| BuildError::msg(format!("converting: {e}")))?
    .map_err(BuildError::msg);
    progress.finish();
    r
}

async fn qemu_img_compress(path: &Path, out: &Path) -> Result<(), BuildError> {
    let o = tokio::process::Command::new("qemu-img")
        .args(["convert", "-c", "-f", "qcow2", "-O", "qcow2"])
        .arg(path)
        .arg(out)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| BuildError::msg(format!("running qemu-img: {e}")))?;
    if !o.status.success() {
        return Err(BuildError::msg(format!(
            "qemu-img convert -c failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(())
}

/// The body of `POST /v2/images` for the new image.
pub fn create_body(c: &Config, name: &str) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in &c.properties {
        m.insert(k.clone(), json!(v));
    }
    m.insert("name".into(), json!(name));
    m.insert("disk_format".into(), json!(c.disk_format));
    m.insert("container_format".into(), json!(c.container_format));
    if let Some(v) = &c.visibility {
        m.insert("visibility".into(), json!(v));
    }
    if !c.tags.is_empty() {
        m.insert("tags".into(), json!(c.tags));
    }
    if let Some(d) = c.min_disk {
        m.insert("min_disk".into(), json!(d));
    }
    if let Some(r) = c.min_ram {
        m.insert("min_ram".into(), json!(r));
    }
    if let Some(p) = c.protected {
        m.insert("protected".into(), json!(p));
    }
    Value::Object(m)
}

/// Create the image, stream the file into it, compare what Glance
/// reports with what was sent.
async fn upload(
    c: &Config,
    cloud: &Cloud,
    name: &str,
    file: &Path,
    ui: &dyn kiln_core::Ui,
    guard: &ImageGuard,
) -> Result<String, BuildError> {
    // kiln chooses the id (Glance accepts one): the guard knows the image
    // before it is asked for.
    let id = uuid::Uuid::new_v4().to_string();
    let mut body = create_body(c, name);
    body["id"] = json!(id);
    guard.arm(&id);
    let handle = {
        let cloud = cloud.clone();
        tokio::spawn(async move { cloud.create_image(body).await })
    };
    *guard.create.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    let answer = poll_create(guard).await;
    if let Err(e) = &answer {
        guard.note(e);
    }
    let img = answer.map_err(|e| BuildError::from(e).context("create_box: creating the image"))?;
    if img.id != id {
        return Err(BuildError::msg(format!(
            "create_box: Glance made image {} instead of {id}",
            img.id
        )));
    }
    ui.say(&format!("Uploading qcow2 image {name:?} as {id}"));
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| BuildError::msg(format!("opening {}: {e}", file.display())))?;
    let len = f
        .metadata()
        .await
        .map_err(|e| BuildError::msg(format!("reading {}: {e}", file.display())))?
        .len();
    let progress: Arc<dyn TransferProgress> = Arc::from(ui.progress("Uploading"));
    progress.start(Some(len));
    let sums = Arc::new(Mutex::new((Md5::new(), Sha512::new(), 0u64)));
    let (s2, p2) = (sums.clone(), progress.clone());
    let stream = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20).map(move |r| {
        if let Ok(b) = &r {
            let mut g = s2.lock().unwrap_or_else(|e| e.into_inner());
            g.0.update(b);
            g.1.update(b);
            g.2 += b.len() as u64;
            p2.advance(b.len() as u64);
        }
        r
    });
    let r = cloud
        .upload_image(&id, reqwest::Body::wrap_stream(stream), Some(len))
        .await;
    progress.finish();
    r.map_err(|e| BuildError::from(e).context("create_box: uploading"))?;
    let (md5, sha512, sent) = {
        let g = sums.lock().unwrap_or_else(|e| e.into_inner());
        (
            hex::encode(g.0.clone().finalize()),
            hex::encode(g.1.clone().finalize()),
            g.2,
        )
    };
    let got = cloud
        .get_image(&id)
        .await
        .map_err(|e| BuildError::from(e).context("create_box: checking the upload"))?;
    verify(&got, len, sent, &md5, &sha512)?;
    ui.message(&format!(
        "Image {id} is active: {} bytes, md5 {md5} (as Glance reports)",
        got.size.unwrap_or(0)
    ));
    Ok(id)
}

/// Wait for the guard's create request; if this future is dropped (Ctrl-C)
/// the request stays with the guard, whose owner awaits it.
async fn poll_create(guard: &ImageGuard) -> Result<Image, OsError> {
    std::future::poll_fn(|cx| {
        let mut g = guard.create.lock().unwrap_or_else(|e| e.into_inner());
        let Some(h) = g.as_mut() else {
            return std::task::Poll::Ready(Err(OsError::Cancelled));
        };
        match std::pin::Pin::new(h).poll(cx) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(r) => {
                *g = None;
                std::task::Poll::Ready(r.unwrap_or_else(|e| {
                    Err(OsError::Protocol(format!("image create request: {e}")))
                }))
            }
        }
    })
    .await
}

/// Glance's account of the upload must match what was sent.
pub fn verify(img: &Image, len: u64, sent: u64, md5: &str, sha512: &str) -> Result<(), BuildError> {
    let fail = |m: String| {
        Err(BuildError::msg(format!(
            "create_box: image {}: {m}",
            img.id
        )))
    };
    if sent != len {
        return fail(format!("sent {sent} bytes of {len}"));
    }
    if img.status != "active" {
        return fail(format!("is {} after the upload, not active", img.status));
    }
    if img.size != Some(len) {
        return fail(format!(
            "Glance reports {:?} bytes, {len} were sent",
            img.size
        ));
    }
    match &img.checksum {
        Some(s) if s.eq_ignore_ascii_case(md5) => {}
        other => {
            return fail(format!(
                "Glance reports checksum {other:?}, kiln sent {md5}"
            ))
        }
    }
    if img.os_hash_algo.as_deref() == Some("sha512") {
        match &img.os_hash_value {
            Some(s) if s.eq_ignore_ascii_case(sha512) => {}
            other => {
                return fail(format!(
                    "Glance reports sha512 {other:?}, kiln sent {sha512}"
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_properties_and_formats() {
        let mut c = Config {
            disk_format: "qcow2".into(),
            container_format: "bare".into(),
            visibility: Some("private".into()),
            tags: vec!["seed".into()],
            min_disk: Some(20),
            ..Default::default()
        };
        c.properties.insert("os_distro".into(), "ubuntu".into());
        c.properties.insert("name".into(), "overridden".into());
        let b = create_body(&c, "Packer example");
        assert_eq!(b["name"], "Packer example");
        assert_eq!(b["disk_format"], "qcow2");
        assert_eq!(b["container_format"], "bare");
        assert_eq!(b["os_distro"], "ubuntu");
        assert_eq!(b["visibility"], "private");
        assert_eq!(b["min_disk"], 20);
        assert_eq!(b["tags"][0], "seed");
    }

    #[test]
    fn verify_compares_size_and_sums() {
        let img = Image {
            id: "i".into(),
            status: "active".into(),
            size: Some(10),
            checksum: Some("ABC".into()),
            os_hash_algo: Some("sha512".into()),
            os_hash_value: Some("def".into()),
            ..Default::default()
        };
        assert!(verify(&img, 10, 10, "abc", "DEF").is_ok());
        assert!(verify(&img, 11, 11, "abc", "def").is_err());
        assert!(verify(&img, 10, 10, "abd", "def").is_err());
        assert!(verify(&img, 10, 10, "abc", "dee").is_err());
        assert!(verify(&img, 10, 9, "abc", "def").is_err());
        let queued = Image {
            status: "queued".into(),
            ..img
        };
        assert!(verify(&queued, 10, 10, "abc", "def").is_err());
    }
}
