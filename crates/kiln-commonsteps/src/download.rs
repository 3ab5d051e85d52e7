//! `iso_url`/`iso_urls`, `iso_checksum`, `iso_target_path` (Packer
//! 1.6.6's `ISOConfig` and `StepDownload`): the first URL that works, a
//! local file used in place, a remote one downloaded into the cache and
//! verified. Checksums in Packer's forms: `type:hash`, a bare hash (its
//! type told by its length), `file:URL-or-path` of a checksum file
//! (`SHA256SUMS` style or BSD style), `none`.
use crate::media::HasMedia;
use futures_util::StreamExt;
use kiln_core::hash::{hash_file, HashError};
use kiln_core::{async_trait, BuildCtx, BuildError, Step};
use kiln_template::Decoder;
use sha1::Digest;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Packer's `ISOConfig`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoConfig {
    /// `iso_url`, or `iso_urls` (tried in order).
    pub urls: Vec<String>,
    /// `iso_checksum` as written (`none` with `iso_skip_cache`).
    pub checksum: String,
    /// `iso_target_path`: the download's path; without an extension, a
    /// directory to download into (Packer's rule).
    pub target_path: Option<PathBuf>,
    /// `iso_target_extension` (lower case; default `iso`).
    pub target_extension: String,
    pub skip_cache: bool,
}

impl Default for IsoConfig {
    fn default() -> Self {
        IsoConfig {
            urls: vec![],
            checksum: "none".into(),
            target_path: None,
            target_extension: "iso".into(),
            skip_cache: false,
        }
    }
}

impl IsoConfig {
    /// Decode the `iso_*` keys; `None` when a problem was recorded.
    pub fn decode(d: &mut Decoder<'_>) -> Option<IsoConfig> {
        let mut ok = true;
        let mut c = IsoConfig::default();
        let iso_url = d.string("iso_url").filter(|s| !s.is_empty());
        let iso_urls = d.string_list("iso_urls").unwrap_or_default();
        match (iso_url, iso_urls.is_empty()) {
            (Some(_), false) => {
                d.error_here("Only one of iso_url or iso_urls must be specified");
                ok = false;
            }
            (Some(u), true) => c.urls = vec![u],
            (None, false) => c.urls = iso_urls,
            (None, true) => {
                d.error_here("One of iso_url or iso_urls must be specified");
                ok = false;
            }
        }
        for u in &c.urls {
            if let Err(e) = Source::parse(u) {
                d.error(
                    if c.urls.len() > 1 {
                        "iso_urls"
                    } else {
                        "iso_url"
                    },
                    e.to_string(),
                );
                ok = false;
            }
        }
        c.skip_cache = d.bool("iso_skip_cache").unwrap_or(false);
        c.checksum = d.string("iso_checksum").unwrap_or_default();
        if c.skip_cache {
            c.checksum = "none".into();
        }
        if c.checksum.is_empty() {
            d.error("iso_checksum", "A checksum must be specified");
            ok = false;
        } else {
            match Checksum::parse(&c.checksum) {
                Err(e) => {
                    d.error("iso_checksum", e);
                    ok = false;
                }
                Ok(Checksum::None) if !c.skip_cache => d.warn(
                    "A checksum of 'none' was specified. Since ISO files are so big, a checksum is highly recommended.",
                ),
                Ok(_) => {}
            }
        }
        c.target_path = d
            .string("iso_target_path")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        c.target_extension = d
            .string("iso_target_extension")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "iso".into())
            .to_ascii_lowercase();
        ok.then_some(c)
    }
}

/// Where a source URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `http://`, `https://`: downloaded into the cache.
    Remote(String),
    /// A path, or a `file://` URL: used in place.
    Local(PathBuf),
}

/// A URL kiln cannot fetch (Packer's go-getter also knows `s3::`, `git::`,
/// `ftp://`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{url}`: kiln fetches http://, https:// and file:// URLs and local paths only")]
pub struct UnsupportedUrl {
    pub url: String,
}

impl Source {
    pub fn parse(u: &str) -> Result<Source, UnsupportedUrl> {
        let lower = u.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return Ok(Source::Remote(u.to_string()));
        }
        if let Some(p) = u.strip_prefix("file://") {
            return Ok(Source::Local(PathBuf::from(p)));
        }
        let scheme = u.split_once("://").map(|(s, _)| s);
        if u.contains("::")
            || scheme.is_some_and(|s| {
                s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            })
        {
            return Err(UnsupportedUrl { url: u.to_string() });
        }
        Ok(Source::Local(PathBuf::from(u)))
    }
}

/// Packer's `StepDownload` for the `iso_*` keys: puts the file's path in
/// [`crate::Media::source`].
pub struct StepDownload<'a> {
    pub config: &'a IsoConfig,
}

#[async_trait]
impl<S: HasMedia> Step<S> for StepDownload<'_> {
    fn name(&self) -> &'static str {
        "download"
    }
    async fn run(&mut self, state: &mut S, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.config;
        let p = fetch(
            ctx,
            &c.urls,
            &c.checksum,
            c.target_path.as_deref(),
            &c.target_extension,
        )
        .await?;
        state.media().source = Some(p);
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    None,
    Hash {
        algo: Algo,
        hex: String,
    },
    /// A checksum file (`SHA256SUMS` style) to find the file's line in.
    File(String),
}

/// A checksum's algorithm: kiln's one list ([`kiln_core::hash::Algo`]),
/// of which `iso_checksum` takes go-getter's four (md5, sha1, sha256,
/// sha512).
pub use kiln_core::hash::Algo;

/// go-getter's checksum type of that name (any case).
fn algo_named(n: &str) -> Option<Algo> {
    match Algo::parse(&n.to_ascii_lowercase()) {
        Some(a @ (Algo::Md5 | Algo::Sha1 | Algo::Sha256 | Algo::Sha512)) => Some(a),
        _ => None,
    }
}

/// go-getter's checksum type of a hex digest of `n` characters.
fn algo_of_len(n: usize) -> Option<Algo> {
    match n {
        32 => Some(Algo::Md5),
        40 => Some(Algo::Sha1),
        64 => Some(Algo::Sha256),
        128 => Some(Algo::Sha512),
        _ => None,
    }
}

impl Checksum {
    pub fn parse(s: &str) -> Result<Checksum, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") {
            return Ok(Checksum::None);
        }
        if let Some(f) = s.strip_prefix("file:") {
            if f.is_empty() {
                return Err("iso_checksum file: needs a URL or path".into());
            }
            return Ok(Checksum::File(f.to_string()));
        }
        let (algo, hex) = match s.split_once(':') {
            Some((a, h)) => (
                algo_named(a).ok_or_else(|| {
                    format!("unsupported checksum type `{a}` (md5, sha1, sha256, sha512)")
                })?,
                h,
            ),
            None => (
                algo_of_len(s.len()).ok_or_else(|| {
                    format!("cannot tell the checksum type of `{s}`: write it as type:hash")
                })?,
                s,
            ),
        };
        if s.to_ascii_lowercase().ends_with(".iso") {
            return Err("Error parsing checksum: .iso is not a valid checksum ending".into());
        }
        if algo_of_len(hex.len()) != Some(algo) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("`{hex}` is not a {algo:?} checksum"));
        }
        Ok(Checksum::Hash {
            algo,
            hex: hex.to_ascii_lowercase(),
        })
    }
}

/// The hash for the file at `path` (a URL's path or a local path) in a
/// checksum file, as Packer's go-getter finds it: GNU style
/// (`HASH  name`, `HASH *name`, `HASH ?name`), BSD style
/// (`SHA256 (name) = HASH`), a line with a hash alone (for any file);
/// the name as the base name, relative (`./dir/name`) or absolute, or a
/// name with a directory that `path` contains (`./netboot/mini.iso`).
pub fn find_in_checksum_file(text: &str, path: &str) -> Option<(Algo, String)> {
    let file_name = path.rsplit('/').next().unwrap_or(path);
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (algo, hash, name) = match parts.as_slice() {
            [] => continue,
            [algo, paren, "=", hash]
                if paren.len() > 2 && paren.starts_with('(') && paren.ends_with(')') =>
            {
                match algo_named(algo) {
                    Some(a) => (a, *hash, Some(&paren[1..paren.len() - 1])),
                    None => continue,
                }
            }
            [hash, name] => match algo_of_len(hash.len()) {
                Some(a) => (a, *hash, Some(*name)),
                None => continue,
            },
            [hash, ..] => match algo_of_len(hash.len()) {
                Some(a) => (a, *hash, None),
                None => continue,
            },
        };
        if !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let hit = match name {
            None => true,
            Some(n) => {
                let bare = n.trim_start_matches(['*', '?']);
                bare == file_name
                    || bare == path
                    || bare.trim_start_matches("./") == file_name
                    || path.contains(n.trim_start_matches(['.', '/']))
            }
        };
        if hit {
            return Some((algo, hash.to_ascii_lowercase()));
        }
    }
    None
}

/// What can go wrong getting a source. Each error names its file or URL.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{}: no such file", .path.display())]
    NoSuchFile { path: PathBuf },
    #[error("reading {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("GET {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("GET {url}: {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("no checksum for {name} in {file}")]
    NotInChecksumFile { name: String, file: String },
    #[error("Checksums did not match for {}.\nExpected: {expected}\nGot: {got}", .path.display())]
    Mismatch {
        path: PathBuf,
        expected: String,
        got: String,
    },
    #[error(transparent)]
    Unsupported(#[from] UnsupportedUrl),
    #[error("invalid iso_checksum: {0}")]
    BadChecksum(String),
    #[error("could not get the source from any URL: {}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    AllFailed { errors: Vec<BuildError> },
}

fn err(e: DownloadError) -> BuildError {
    BuildError::new(e)
}

async fn fetch_text(ctx: &BuildCtx, u: &str) -> Result<String, BuildError> {
    match Source::parse(u).map_err(|e| err(e.into()))? {
        Source::Remote(u) => {
            let http = |source| {
                err(DownloadError::Http {
                    url: u.clone(),
                    source,
                })
            };
            let r = ctx
                .cancellable(async { reqwest::get(&u).await.map_err(http) })
                .await?;
            if !r.status().is_success() {
                return Err(err(DownloadError::Status {
                    url: u.clone(),
                    status: r.status(),
                }));
            }
            r.text().await.map_err(http)
        }
        Source::Local(p) => tokio::fs::read_to_string(&p)
            .await
            .map_err(|source| err(DownloadError::Read { path: p, source })),
    }
}

/// The hash `sum` expects for the file of `url` (a checksum file is read),
/// or `None` for `none`.
pub async fn expected(
    ctx: &BuildCtx,
    sum: &Checksum,
    url: &str,
) -> Result<Option<(Algo, String)>, BuildError> {
    match sum {
        Checksum::None => Ok(None),
        Checksum::Hash { algo, hex } => Ok(Some((*algo, hex.clone()))),
        Checksum::File(f) => {
            let text = fetch_text(ctx, f).await?;
            let path = url.split(['?', '#']).next().unwrap_or(url);
            let path = path.strip_prefix("file://").unwrap_or(path);
            match find_in_checksum_file(&text, path) {
                Some(h) => Ok(Some(h)),
                None => Err(err(DownloadError::NotInChecksumFile {
                    name: path.rsplit('/').next().unwrap_or(path).to_string(),
                    file: f.clone(),
                })),
            }
        }
    }
}

/// Check the file at `path` against an expected hash.
pub async fn verify(
    ctx: &BuildCtx,
    want: Option<&(Algo, String)>,
    path: &Path,
) -> Result<(), BuildError> {
    let Some((algo, want)) = want else {
        return Ok(());
    };
    ctx.ui
        .say(&format!("Verifying checksum of {}...", path.display()));
    let (p, algo) = (path.to_path_buf(), *algo);
    let got =
        tokio::task::spawn_blocking(move || hash_file(&p, &[algo], |_| ControlFlow::Continue(())))
            .await
            .map_err(BuildError::new)?
            .map_err(|e| match e {
                HashError::Open { source, .. } | HashError::Read { source, .. } => {
                    err(DownloadError::Read {
                        path: path.to_path_buf(),
                        source,
                    })
                }
                e @ HashError::Stopped { .. } => BuildError::new(e),
            })?
            .remove(0);
    if &got != want {
        return Err(err(DownloadError::Mismatch {
            path: path.to_path_buf(),
            expected: want.clone(),
            got,
        }));
    }
    Ok(())
}

/// Where a remote URL is downloaded, as Packer 1.6.6 names it: in
/// `PACKER_CACHE_DIR` (default `packer_cache`), the SHA-1 of the checksum
/// (`sha256:HEX`) or, with none, of the URL, with the extension `ext`.
/// `iso_target_path` replaces that, unless it has no extension: then it
/// is the directory for that name.
pub fn cache_path(
    url: &str,
    want: Option<&(Algo, String)>,
    target_path: Option<&Path>,
    ext: &str,
) -> PathBuf {
    let key = match want {
        Some((algo, hex)) => format!("{}:{hex}", algo.name()),
        None => url.to_string(),
    };
    let mut h = sha1::Sha1::new();
    h.update(key.as_bytes());
    let sha = hex::encode(h.finalize());
    match target_path {
        Some(p) if p.extension().is_some() => p.to_path_buf(),
        Some(dir) => dir.join(format!(
            "{sha}.{}",
            if ext.is_empty() { "iso" } else { ext }
        )),
        None => {
            let dir = std::env::var_os("PACKER_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("packer_cache"));
            if ext.is_empty() {
                dir.join(sha)
            } else {
                dir.join(format!("{sha}.{ext}"))
            }
        }
    }
}

/// Get the source (ISO or disk image): the first of `urls` that works, as
/// Packer's `StepDownload` (a URL that fails is reported and the next one
/// tried). Local files are used in place; remote ones are downloaded.
pub async fn fetch(
    ctx: &BuildCtx,
    urls: &[String],
    checksum: &str,
    target_path: Option<&Path>,
    ext: &str,
) -> Result<PathBuf, BuildError> {
    let sum = Checksum::parse(checksum).map_err(|e| err(DownloadError::BadChecksum(e)))?;
    let mut errors = Vec::new();
    for u in urls {
        ctx.ui.say(&format!("Trying {u}"));
        let r = async {
            let want = expected(ctx, &sum, u).await?;
            match Source::parse(u).map_err(|e| err(e.into()))? {
                Source::Remote(u) => download(ctx, &u, want.as_ref(), target_path, ext).await,
                Source::Local(p) if !p.is_file() => Err(err(DownloadError::NoSuchFile { path: p })),
                Source::Local(p) => {
                    ctx.ui.say(&format!("Using local file {}", p.display()));
                    verify(ctx, want.as_ref(), &p).await.map(|_| p)
                }
            }
        }
        .await;
        match r {
            Ok(p) => return Ok(p),
            Err(BuildError::Cancelled) => return Err(BuildError::Cancelled),
            Err(e) => {
                ctx.ui.error(&format!("{u}: {e}"));
                errors.push(e);
            }
        }
    }
    Err(err(DownloadError::AllFailed { errors }))
}

async fn download(
    ctx: &BuildCtx,
    url: &str,
    want: Option<&(Algo, String)>,
    target: Option<&Path>,
    ext: &str,
) -> Result<PathBuf, BuildError> {
    let dest = cache_path(url, want, target, ext);
    if dest.is_file() && want.is_some() && verify(ctx, want, &dest).await.is_ok() {
        ctx.ui.say(&format!("Using cached {}", dest.display()));
        return Ok(dest);
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await.map_err(|source| {
            err(DownloadError::Write {
                path: dir.to_path_buf(),
                source,
            })
        })?;
    }
    ctx.ui.say(&format!("Downloading {url}"));
    let mut part = dest.clone().into_os_string();
    part.push(".part");
    let part = PathBuf::from(part);
    let http = |source| {
        err(DownloadError::Http {
            url: url.to_string(),
            source,
        })
    };
    let write = |source| {
        err(DownloadError::Write {
            path: part.clone(),
            source,
        })
    };
    let res = async {
        let r = reqwest::get(url).await.map_err(http)?;
        if !r.status().is_success() {
            return Err(err(DownloadError::Status {
                url: url.to_string(),
                status: r.status(),
            }));
        }
        let progress = ctx.ui.progress(url);
        progress.start(r.content_length());
        let mut f = tokio::fs::File::create(&part).await.map_err(write)?;
        let mut body = r.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(http)?;
            f.write_all(&chunk).await.map_err(write)?;
            progress.advance(chunk.len() as u64);
        }
        f.flush().await.map_err(write)?;
        progress.finish();
        verify(ctx, want, &part).await?;
        tokio::fs::rename(&part, &dest).await.map_err(write)
    };
    let r = ctx.cancellable(res).await;
    if r.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    r.map(|_| dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_forms() {
        let sha = "a".repeat(64);
        assert_eq!(Checksum::parse("none"), Ok(Checksum::None));
        assert_eq!(
            Checksum::parse(&format!("sha256:{sha}")),
            Ok(Checksum::Hash {
                algo: Algo::Sha256,
                hex: sha.clone()
            })
        );
        assert_eq!(
            Checksum::parse(&sha),
            Ok(Checksum::Hash {
                algo: Algo::Sha256,
                hex: sha.clone()
            })
        );
        assert_eq!(
            Checksum::parse(&format!("MD5:{}", "B".repeat(32))),
            Ok(Checksum::Hash {
                algo: Algo::Md5,
                hex: "b".repeat(32)
            })
        );
        assert_eq!(
            Checksum::parse("file:http://x/SHA256SUMS"),
            Ok(Checksum::File("http://x/SHA256SUMS".into()))
        );
        for bad in [
            "sha256:abc",
            "crc32:1234",
            "xyz",
            "file:",
            &format!("sha1:{sha}"),
        ] {
            assert!(Checksum::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checksum_files() {
        let gnu = format!(
            "{}  debian-12.qcow2\n{} *other.iso\n{} ?shasum-p.iso\n{}  ./netboot/mini.iso\n",
            "1".repeat(64),
            "2".repeat(64),
            "3".repeat(64),
            "4".repeat(64)
        );
        let h = |c: &str, n| Some((Algo::Sha256, c.repeat(n)));
        assert_eq!(find_in_checksum_file(&gnu, "debian-12.qcow2"), h("1", 64));
        assert_eq!(
            find_in_checksum_file(&gnu, "https://x/12/debian-12.qcow2"),
            h("1", 64)
        );
        assert_eq!(find_in_checksum_file(&gnu, "other.iso"), h("2", 64));
        assert_eq!(find_in_checksum_file(&gnu, "/srv/shasum-p.iso"), h("3", 64));
        assert_eq!(
            find_in_checksum_file(&gnu, "http://m/ubuntu/netboot/mini.iso"),
            h("4", 64)
        );
        assert_eq!(find_in_checksum_file(&gnu, "nope"), None);
        let bsd = format!("SHA512 (a.img) = {}\n", "F".repeat(128));
        assert_eq!(
            find_in_checksum_file(&bsd, "a.img"),
            Some((Algo::Sha512, "f".repeat(128)))
        );
        // A hash alone on its line is taken for any file (go-getter).
        let alone = format!("{}\n", "c".repeat(40));
        assert_eq!(
            find_in_checksum_file(&alone, "x.iso"),
            Some((Algo::Sha1, "c".repeat(40)))
        );
    }

    #[test]
    fn cache_paths_as_packer() {
        let want = (Algo::Sha256, "ab".repeat(32));
        let sha = |s: &str| {
            let mut h = sha1::Sha1::new();
            h.update(s.as_bytes());
            hex::encode(h.finalize())
        };
        let p = cache_path("http://x/a.iso", Some(&want), None, "iso");
        assert_eq!(
            p.file_name().unwrap().to_str().unwrap(),
            format!("{}.iso", sha(&format!("sha256:{}", want.1)))
        );
        let p = cache_path("http://x/a.iso", None, None, "iso");
        assert_eq!(
            p.file_name().unwrap().to_str().unwrap(),
            format!("{}.iso", sha("http://x/a.iso"))
        );
        // iso_target_path: a file name, or (no extension) a directory.
        assert_eq!(
            cache_path("http://x/a.iso", None, Some(Path::new("/t/d.iso")), "iso"),
            PathBuf::from("/t/d.iso")
        );
        assert_eq!(
            cache_path("http://x/a.iso", None, Some(Path::new("/t/dir")), "img"),
            PathBuf::from(format!("/t/dir/{}.img", sha("http://x/a.iso")))
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            Source::parse("HTTPS://x/a.iso"),
            Ok(Source::Remote("HTTPS://x/a.iso".into()))
        );
        assert_eq!(
            Source::parse("file:///srv/a.iso"),
            Ok(Source::Local("/srv/a.iso".into()))
        );
        assert_eq!(Source::parse("a.iso"), Ok(Source::Local("a.iso".into())));
        assert_eq!(
            Source::parse("C:a.iso"),
            Ok(Source::Local("C:a.iso".into()))
        );
        for bad in ["ftp://x/a.iso", "s3::https://b/a.iso", "git::ssh://x"] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
    }

    fn ctx(dir: &Path) -> (kiln_core::Output, BuildCtx) {
        let out = kiln_core::Output::capturing(kiln_core::ui::OutputConfig {
            mode: kiln_core::ui::Mode::Human,
            color: false,
            timestamp: false,
        });
        let ctx = BuildCtx::for_test(out.build_ui("t"), dir.to_path_buf());
        (out, ctx)
    }

    const HELLO_SHA256: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn inner(e: &BuildError) -> Vec<&DownloadError> {
        match e.find::<DownloadError>() {
            Some(DownloadError::AllFailed { errors }) => errors
                .iter()
                .map(|e| e.find::<DownloadError>().expect("a download error"))
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn local_files_are_verified_in_place() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("disk.qcow2");
        std::fs::write(&f, b"hello").unwrap();
        let (_out, ctx) = ctx(d.path());
        let url = f.display().to_string();
        let p = fetch(
            &ctx,
            std::slice::from_ref(&url),
            &format!("sha256:{HELLO_SHA256}"),
            None,
            "iso",
        )
        .await
        .unwrap();
        assert_eq!(p, f);
        let sums = d.path().join("SHA256SUMS");
        std::fs::write(&sums, format!("{HELLO_SHA256}  disk.qcow2\n")).unwrap();
        fetch(
            &ctx,
            &[format!("file://{url}")],
            &format!("file:{}", sums.display()),
            None,
            "iso",
        )
        .await
        .unwrap();
        let e = fetch(
            &ctx,
            std::slice::from_ref(&url),
            &format!("sha256:{}", "0".repeat(64)),
            None,
            "iso",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(inner(&e)[..], [DownloadError::Mismatch { .. }]),
            "{e}"
        );
        let e = fetch(&ctx, &["/nonexistent".into()], "none", None, "iso")
            .await
            .unwrap_err();
        assert!(
            matches!(inner(&e)[..], [DownloadError::NoSuchFile { .. }]),
            "{e}"
        );
    }

    /// `iso_urls` over real HTTP (this crate's server): a 404 first, then
    /// the file, verified against a checksum file that is itself fetched
    /// over HTTP; downloaded into `iso_target_path`, and found there (not
    /// downloaded again) by a second build.
    #[tokio::test]
    async fn remote_urls_fall_back_and_are_cached() {
        let d = tempfile::tempdir().unwrap();
        let www = d.path().join("www");
        std::fs::create_dir_all(www.join("12")).unwrap();
        std::fs::write(www.join("12/disk.img"), b"hello").unwrap();
        std::fs::write(
            www.join("12/SHA256SUMS"),
            format!("{}  other.img\n{HELLO_SHA256}  disk.img\n", "1".repeat(64)),
        )
        .unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let srv = crate::http::serve(www.clone(), l);
        let base = format!("http://127.0.0.1:{}", srv.port);
        let (out, ctx) = ctx(d.path());
        let urls = vec![format!("{base}/11/disk.img"), format!("{base}/12/disk.img")];
        let sum = format!("file:{base}/12/SHA256SUMS");
        let target = d.path().join("cache");
        let p = fetch(&ctx, &urls, &sum, Some(&target), "img")
            .await
            .unwrap();
        assert_eq!(p.parent(), Some(target.as_path()));
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        let said = out.captured();
        assert!(said.contains("404"), "{said}");
        // The second time: from the cache, even with the server gone.
        drop(srv);
        let p2 = fetch(
            &ctx,
            &urls[1..],
            &format!("sha256:{HELLO_SHA256}"),
            Some(&target),
            "img",
        )
        .await
        .unwrap();
        assert_eq!(p2, p);
        assert!(out.captured().contains("Using cached"));
        // A wrong checksum: the download is removed, nothing is left.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let srv = crate::http::serve(www, l);
        let url = format!("http://127.0.0.1:{}/12/disk.img", srv.port);
        let t2 = d.path().join("t2");
        let e = fetch(
            &ctx,
            &[url],
            &format!("md5:{}", "0".repeat(32)),
            Some(&t2),
            "img",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(inner(&e)[..], [DownloadError::Mismatch { .. }]),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&t2).unwrap().count(), 0);
    }
}
