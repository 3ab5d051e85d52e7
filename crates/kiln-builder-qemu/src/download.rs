//! `iso_url`/`iso_urls` and `iso_checksum` (Packer 1.6.6's forms:
//! `type:hash`, a bare hash, `file:URL-or-path` of a checksum file, `none`).
use futures_util::StreamExt;
use kiln_core::{BuildCtx, BuildError};
use sha2::Digest;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algo {
    fn from_name(n: &str) -> Option<Algo> {
        match n.to_ascii_lowercase().as_str() {
            "md5" => Some(Algo::Md5),
            "sha1" => Some(Algo::Sha1),
            "sha256" => Some(Algo::Sha256),
            "sha512" => Some(Algo::Sha512),
            _ => None,
        }
    }
    fn from_len(n: usize) -> Option<Algo> {
        match n {
            32 => Some(Algo::Md5),
            40 => Some(Algo::Sha1),
            64 => Some(Algo::Sha256),
            128 => Some(Algo::Sha512),
            _ => None,
        }
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
                Algo::from_name(a).ok_or_else(|| {
                    format!("unsupported checksum type `{a}` (md5, sha1, sha256, sha512)")
                })?,
                h,
            ),
            None => (
                Algo::from_len(s.len()).ok_or_else(|| {
                    format!("cannot tell the checksum type of `{s}`: write it as type:hash")
                })?,
                s,
            ),
        };
        if s.to_ascii_lowercase().ends_with(".iso") {
            return Err("Error parsing checksum: .iso is not a valid checksum ending".into());
        }
        if Algo::from_len(hex.len()) != Some(algo) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("`{hex}` is not a {algo:?} checksum"));
        }
        Ok(Checksum::Hash {
            algo,
            hex: hex.to_ascii_lowercase(),
        })
    }
}

/// Hash a file.
pub fn hash_file(path: &Path, algo: Algo) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    macro_rules! run {
        ($h:expr) => {{
            let mut h = $h;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            hex::encode(h.finalize())
        }};
    }
    Ok(match algo {
        Algo::Md5 => run!(md5::Md5::new()),
        Algo::Sha1 => run!(sha1::Sha1::new()),
        Algo::Sha256 => run!(sha2::Sha256::new()),
        Algo::Sha512 => run!(sha2::Sha512::new()),
    })
}

/// The hash for `file_name` in a checksum file (`HASH  name` or BSD style
/// `SHA256 (name) = HASH`).
pub fn find_in_checksum_file(text: &str, file_name: &str) -> Option<(Algo, String)> {
    for line in text.lines() {
        let line = line.trim();
        if let Some((lhs, hash)) = line.split_once(") = ") {
            if let Some((algo, name)) = lhs.split_once(" (") {
                if name == file_name {
                    return Some((Algo::from_name(algo)?, hash.trim().to_ascii_lowercase()));
                }
            }
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(hash), Some(name)) = (parts.next(), parts.next()) else {
            continue;
        };
        let name = name.trim_start_matches('*').trim_start_matches("./");
        if name == file_name || Path::new(name).file_name().is_some_and(|n| n == file_name) {
            return Some((Algo::from_len(hash.len())?, hash.to_ascii_lowercase()));
        }
    }
    None
}

fn is_remote(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://")
}

fn local_path(u: &str) -> PathBuf {
    PathBuf::from(u.strip_prefix("file://").unwrap_or(u))
}

async fn fetch_text(ctx: &BuildCtx, u: &str) -> Result<String, BuildError> {
    if is_remote(u) {
        let r = ctx
            .cancellable(async {
                reqwest::get(u)
                    .await
                    .map_err(|e| BuildError::msg(format!("GET {u}: {e}")))
            })
            .await?;
        if !r.status().is_success() {
            kiln_core::bail!("GET {u}: {}", r.status());
        }
        r.text()
            .await
            .map_err(|e| BuildError::msg(format!("GET {u}: {e}")))
    } else {
        let p = local_path(u);
        tokio::fs::read_to_string(&p)
            .await
            .map_err(|e| BuildError::msg(format!("reading {}: {e}", p.display())))
    }
}

/// Check `path` against `sum` (`url` names the file for `file:` sums).
pub async fn verify(
    ctx: &BuildCtx,
    sum: &Checksum,
    url: &str,
    path: &Path,
) -> Result<(), BuildError> {
    let (algo, want) = match sum {
        Checksum::None => return Ok(()),
        Checksum::Hash { algo, hex } => (*algo, hex.clone()),
        Checksum::File(f) => {
            let text = fetch_text(ctx, f).await?;
            let name = url.rsplit('/').next().unwrap_or(url);
            find_in_checksum_file(&text, name)
                .ok_or_else(|| BuildError::msg(format!("no checksum for {name} in {f}")))?
        }
    };
    ctx.ui
        .say(&format!("Verifying checksum of {}...", path.display()));
    let p = path.to_path_buf();
    let got = tokio::task::spawn_blocking(move || hash_file(&p, algo))
        .await
        .map_err(|e| BuildError::msg(e.to_string()))?
        .map_err(|e| BuildError::msg(format!("reading {}: {e}", path.display())))?;
    if got != want {
        kiln_core::bail!(
            "Checksums did not match for {}.\nExpected: {want}\nGot: {got}",
            path.display()
        );
    }
    Ok(())
}

/// Where a remote `iso_url` is cached.
pub fn cache_path(url: &str, target_path: Option<&Path>, ext: &str) -> PathBuf {
    if let Some(p) = target_path {
        return p.to_path_buf();
    }
    let dir = std::env::var_os("PACKER_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("packer_cache"));
    let mut h = sha1::Sha1::new();
    h.update(url.as_bytes());
    dir.join(format!("{}.{ext}", hex::encode(h.finalize())))
}

/// Get the source (ISO or disk image): the first of `urls` that works.
/// Local files are used in place; remote ones are downloaded to the cache.
pub async fn fetch(
    ctx: &BuildCtx,
    urls: &[String],
    checksum: &str,
    target_path: Option<&Path>,
    ext: &str,
) -> Result<PathBuf, BuildError> {
    let sum = Checksum::parse(checksum).map_err(BuildError::msg)?;
    let mut errors = Vec::new();
    for u in urls {
        let r = if is_remote(u) {
            download(ctx, u, &sum, target_path, ext).await
        } else {
            let p = local_path(u);
            if !p.is_file() {
                Err(BuildError::msg(format!("{}: no such file", p.display())))
            } else {
                ctx.ui.say(&format!("Using local file {}", p.display()));
                verify(ctx, &sum, u, &p).await.map(|_| p)
            }
        };
        match r {
            Ok(p) => return Ok(p),
            Err(BuildError::Cancelled) => return Err(BuildError::Cancelled),
            Err(e) => {
                ctx.ui.error(&format!("{u}: {e}"));
                errors.push(e.to_string());
            }
        }
    }
    Err(BuildError::msg(format!(
        "could not get the source from any URL: {}",
        errors.join("; ")
    )))
}

async fn download(
    ctx: &BuildCtx,
    url: &str,
    sum: &Checksum,
    target: Option<&Path>,
    ext: &str,
) -> Result<PathBuf, BuildError> {
    let dest = cache_path(url, target, ext);
    if dest.is_file()
        && !matches!(sum, Checksum::None)
        && verify(ctx, sum, url, &dest).await.is_ok()
    {
        ctx.ui.say(&format!("Using cached {}", dest.display()));
        return Ok(dest);
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| BuildError::msg(format!("creating {}: {e}", dir.display())))?;
    }
    ctx.ui.say(&format!("Downloading {url}"));
    let part = dest.with_extension(format!("{ext}.part"));
    let res = async {
        let r = reqwest::get(url)
            .await
            .map_err(|e| BuildError::msg(format!("GET {url}: {e}")))?;
        if !r.status().is_success() {
            kiln_core::bail!("GET {url}: {}", r.status());
        }
        let progress = ctx.ui.progress(url);
        progress.start(r.content_length());
        let mut f = tokio::fs::File::create(&part)
            .await
            .map_err(|e| BuildError::msg(format!("creating {}: {e}", part.display())))?;
        let mut body = r.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BuildError::msg(format!("GET {url}: {e}")))?;
            f.write_all(&chunk)
                .await
                .map_err(|e| BuildError::msg(format!("writing {}: {e}", part.display())))?;
            progress.advance(chunk.len() as u64);
        }
        f.flush()
            .await
            .map_err(|e| BuildError::msg(e.to_string()))?;
        progress.finish();
        verify(ctx, sum, url, &part).await?;
        tokio::fs::rename(&part, &dest)
            .await
            .map_err(|e| BuildError::msg(format!("renaming to {}: {e}", dest.display())))
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
            "{}  debian-12.qcow2\n{} *other.iso\n",
            "1".repeat(64),
            "2".repeat(64)
        );
        assert_eq!(
            find_in_checksum_file(&gnu, "debian-12.qcow2"),
            Some((Algo::Sha256, "1".repeat(64)))
        );
        assert_eq!(
            find_in_checksum_file(&gnu, "other.iso"),
            Some((Algo::Sha256, "2".repeat(64)))
        );
        let bsd = format!("SHA512 (a.img) = {}\n", "F".repeat(128));
        assert_eq!(
            find_in_checksum_file(&bsd, "a.img"),
            Some((Algo::Sha512, "f".repeat(128)))
        );
        assert_eq!(find_in_checksum_file(&gnu, "nope"), None);
    }

    #[tokio::test]
    async fn local_files_are_verified_in_place() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("disk.qcow2");
        std::fs::write(&f, b"hello").unwrap();
        let out = kiln_core::Output::capturing(kiln_core::ui::OutputConfig {
            mode: kiln_core::ui::Mode::Human,
            color: false,
            timestamp: false,
        });
        let ctx = BuildCtx::for_test(out.build_ui("t"), d.path().to_path_buf());
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let url = f.display().to_string();
        let p = fetch(
            &ctx,
            std::slice::from_ref(&url),
            &format!("sha256:{sha}"),
            None,
            "iso",
        )
        .await
        .unwrap();
        assert_eq!(p, f);
        let sums = d.path().join("SHA256SUMS");
        std::fs::write(&sums, format!("{sha}  disk.qcow2\n")).unwrap();
        fetch(
            &ctx,
            std::slice::from_ref(&url),
            &format!("file:{}", sums.display()),
            None,
            "iso",
        )
        .await
        .unwrap();
        let e = fetch(
            &ctx,
            &[url],
            &format!("sha256:{}", "0".repeat(64)),
            None,
            "iso",
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("Checksums did not match"), "{e}");
        let e = fetch(&ctx, &["/nonexistent".into()], "none", None, "iso")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
    }
}
