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
use crate::error::FileError;
use bytes::Bytes;
use futures_util::StreamExt;
use kiln_commonsteps::create::{Create, Resource};
use kiln_core::communicator::TransferProgress;
use kiln_core::{
    async_trait, Artifact, BuildCtx, BuildError, PostProcessCtx, PostProcessed, PostProcessor,
};
use kiln_diskimage::qcow2;
use md5::Md5;
use serde_json::{json, Value};
use sha2::{Digest, Sha512};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// The new image, for [`Create::undo`]: kiln chooses its id (Glance
/// accepts one), so even a create request cut off by a Ctrl-C or a timeout
/// leaves nothing unknown: it is looked for by that id.
struct NewImages<'a> {
    cloud: &'a Cloud,
    id: &'a str,
}

#[async_trait]
impl Resource for NewImages<'_> {
    type Item = String;
    type Error = OsError;
    fn request_timeout(&self) -> Duration {
        self.cloud.session.request_timeout
    }
    async fn find(&self) -> Result<Vec<String>, OsError> {
        match self.cloud.get_image(self.id).await {
            Ok(img) => Ok(vec![img.id]),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
    async fn delete(&self, id: &String) -> Result<(), OsError> {
        self.cloud.delete_image(id).await
    }
    fn find_failed(&self) -> String {
        format!(
            "Could not look for image {}, which may have been created: please check Glance",
            self.id
        )
    }
    fn delete_failed(&self, id: &String) -> String {
        format!("Could not delete image {id}, please delete it by hand")
    }
    async fn deleting(&self, ctx: &BuildCtx, id: &String) {
        ctx.ui.say(&format!("Deleting the unfinished image {id}"));
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
        // The create routine speaks through create_box's own UI.
        let mut cctx = b.clone();
        cctx.ui = ui.clone();
        let mut create: Create<String, OsError> = Create::new("image");
        // kiln chooses the new image's id: the record knows it before the
        // image is asked for.
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self
            .config
            .temp_dir
            .clone()
            .unwrap_or_else(|| b.work_dir.clone());
        let work = run(
            &self.config,
            &cloud,
            &source,
            &dir,
            &cctx,
            NewImage {
                id: &id,
                create: &mut create,
            },
        );
        let r = b.cancellable(work).await;
        match r {
            Ok(Some(new_id)) => {
                create.keep(&cctx);
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
                // The create request runs on when `work` is dropped: the
                // routine awaits its answer, then deletes what it made.
                let images = NewImages {
                    cloud: &cloud,
                    id: &id,
                };
                if let Err(e2) = create.undo(&cctx, &images).await {
                    ui.error(&e2.to_string());
                }
                Err(e)
            }
        }
    }
}

/// The new image: the id kiln chose for it, and its create request.
struct NewImage<'a> {
    id: &'a str,
    create: &'a mut Create<String, OsError>,
}

/// The whole conversion; `Ok(None)` when there is nothing to do.
async fn run(
    c: &Config,
    cloud: &Cloud,
    source: &Input,
    dir: &Path,
    ctx: &BuildCtx,
    new: NewImage<'_>,
) -> Result<Option<String>, BuildError> {
    let ui = ctx.ui.as_ref();
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(FileError::at("creating", dir))?;
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
            let tmp = temp_qcow2(dir)?;
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
                let mut f = std::fs::File::open(path).map_err(FileError::at("opening", path))?;
                let n = f.read(&mut head).unwrap_or(0);
                qcow2::sniff(&head[..n])
            };
            match (fmt, c.compress) {
                (qcow2::Format::Qcow2, false) => (name, path.clone(), None),
                (fmt, compress) => {
                    let tmp = temp_qcow2(dir)?;
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
    let id = upload(c, cloud, &name, &file, ctx, new).await?;
    Ok(Some(id))
}

/// The local qcow2, in `dir`, removed when dropped.
fn temp_qcow2(dir: &Path) -> Result<tempfile::TempPath, FileError> {
    Ok(tempfile::Builder::new()
        .prefix("create_box-")
        .suffix(".qcow2")
        .tempfile_in(dir)
        .map_err(FileError::at("creating a file in", dir))?
        .into_temp_path())
}

/// Stream a raw Glance image into the qcow2 writer; check its length and
/// checksum against what Glance says.
async fn download_convert(
    cloud: &Cloud,
    src: &Image,
    out: &Path,
    c: &Config,
    ui: &dyn kiln_core::Ui,
) -> Result<qcow2::writer::Stats, BuildError> {
    let resp = cloud
        .download_image(&src.id)
        .await
        .map_err(|e| BuildError::from(e).context("create_box: downloading"))?;
    let total = src.size.or(resp.content_length());
    let progress = ui.progress("Downloading and converting");
    progress.start(total);
    let f = std::fs::File::create(out).map_err(FileError::at("creating", out))?;
    let level = c.compress.then_some(c.compression_level);
    // Writer and checksum run on two threads, fed the same 1 MiB batches.
    let (wtx, mut wrx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let (htx, mut hrx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let out_p = out.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || -> Result<qcow2::writer::Stats, FileError> {
        let writing = || FileError::at("writing", &out_p);
        let mut w =
            qcow2::writer::Writer::new(std::io::BufWriter::with_capacity(1 << 20, f), level)
                .map_err(writing())?;
        while let Some(chunk) = wrx.blocking_recv() {
            w.write(&chunk).map_err(writing())?;
        }
        let (bw, st) = w.finish().map_err(writing())?;
        let f = bw.into_inner().map_err(|e| writing()(e.into_error()))?;
        f.sync_data().map_err(writing())?;
        Ok(st)
    });
    let hasher = tokio::task::spawn_blocking(move || {
        let mut h = Md5::new();
        while let Some(chunk) = hrx.blocking_recv() {
            h.update(&chunk);
        }
        hex::encode(h.finalize())
    });
    let url = resp.url().to_string();
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
                failed = Some(OsError::Transport {
                    method: "reading".into(),
                    url: url.clone(),
                    message: crate::client::session::describe(&e),
                });
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
        .map_err(|e| BuildError::new(e).context("create_box: writer"))??;
    let md5 = hasher.await.unwrap_or_default();
    if let Some(e) = failed {
        return Err(
            BuildError::from(e).context(format!("create_box: downloading image {}", src.id))
        );
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
) -> Result<qcow2::writer::Stats, BuildError> {
    let progress: Arc<dyn TransferProgress> = Arc::from(ui.progress("Converting"));
    let (p, o) = (path.to_path_buf(), out.to_path_buf());
    let pr = progress.clone();
    let r = tokio::task::spawn_blocking(move || -> Result<qcow2::writer::Stats, FileError> {
        let writing = || FileError::at("writing", &o);
        let mut inp = std::fs::File::open(&p).map_err(FileError::at("opening", &p))?;
        let len = inp.metadata().map(|m| m.len()).ok();
        pr.start(len);
        let f = std::fs::File::create(&o).map_err(FileError::at("creating", &o))?;
        let mut w =
            qcow2::writer::Writer::new(std::io::BufWriter::with_capacity(1 << 20, f), level)
                .map_err(writing())?;
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = inp.read(&mut buf).map_err(FileError::at("reading", &p))?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n]).map_err(writing())?;
            pr.advance(n as u64);
        }
        let (bw, st) = w.finish().map_err(writing())?;
        bw.into_inner()
            .map_err(|e| writing()(e.into_error()))?
            .sync_data()
            .map_err(writing())?;
        Ok(st)
    })
    .await
    .map_err(|e| BuildError::new(e).context("converting"))
    .and_then(|r| r.map_err(BuildError::from));
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
        .map_err(|e| BuildError::new(e).context("running qemu-img"))?;
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
    ctx: &BuildCtx,
    new: NewImage<'_>,
) -> Result<String, BuildError> {
    let ui = ctx.ui.as_ref();
    let id = new.id.to_string();
    let mut body = create_body(c, name);
    body["id"] = json!(id);
    let cloud2 = cloud.clone();
    let made = new
        .create
        .send(
            ctx,
            format!("image {id} being created (openstack)"),
            async move { cloud2.create_image(body).await.map(|img| img.id) },
        )
        .await
        .map_err(|e| BuildError::from(e).context("create_box: creating the image"))?;
    if made != id {
        return Err(BuildError::msg(format!(
            "create_box: Glance made image {made} instead of {id}"
        )));
    }
    ui.say(&format!("Uploading qcow2 image {name:?} as {id}"));
    let f = tokio::fs::File::open(file)
        .await
        .map_err(FileError::at("opening", file))?;
    let len = f
        .metadata()
        .await
        .map_err(FileError::at("reading", file))?
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
