//! `floppy_files`, `floppy_dirs`, `floppy_label`: a 1.44 MB FAT12 floppy
//! image, as Packer 1.6.6's `StepCreateFloppy` makes it (some kickstart
//! and Windows unattended setups read their answer file from a floppy).
//!
//! Written in-process with the `fatfs` crate (long file names, no
//! external program). Packer's layout:
//!
//! - `floppy_files`: each file at the root of the floppy by its name; a
//!   directory given there has all its files, at any depth, put at the
//!   root too (flattened);
//! - `floppy_dirs`: each directory copied with its tree, under its own
//!   name (`floppy_dirs: ["a/b"]` gives `/b/...`); a file given there goes
//!   to the root;
//! - patterns (`*`, `?`, `[...]`) are expanded as Go's `filepath.Glob`
//!   does ([`kiln_core::glob`]); a pattern matching nothing adds nothing;
//! - `floppy_label` is the volume label (default `packer`).
use crate::cd::{expand, glob};
use crate::media::HasMedia;
use kiln_core::{async_trait, BuildCtx, BuildError, Outcome, Step};
use kiln_template::Decoder;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Packer's `FloppyConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FloppyConfig {
    pub files: Vec<String>,
    pub dirs: Vec<String>,
    pub label: String,
}

impl FloppyConfig {
    /// `None` when a problem was recorded (a path that does not exist).
    pub fn decode(d: &mut Decoder<'_>) -> Option<FloppyConfig> {
        let mut ok = true;
        let c = FloppyConfig {
            files: d.string_list("floppy_files").unwrap_or_default(),
            dirs: d.string_list("floppy_dirs").unwrap_or_default(),
            label: d.string("floppy_label").unwrap_or_default(),
        };
        for (key, list, what) in [
            ("floppy_files", &c.files, "file"),
            ("floppy_dirs", &c.dirs, "directory"),
        ] {
            for f in list {
                if let Err(e) = expand(f) {
                    d.error(key, format!("Bad Floppy disk {what} '{f}': {e}"));
                    ok = false;
                }
            }
        }
        ok.then_some(c)
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dirs.is_empty()
    }
}

/// Why a floppy could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FloppyError {
    #[error("adding {} to the floppy: {source}", .path.display())]
    Add {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("two files named `{name}` at the same place on the floppy ({} and {})", .first.display(), .second.display())]
    Duplicate {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("the floppy image {}: {source}", .path.display())]
    Image {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{0}`: {1}")]
    Pattern(String, kiln_core::glob::BadPattern),
}

/// One file to write: its place on the floppy (`/`-separated, no leading
/// `/`) and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub dest: String,
    pub src: PathBuf,
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            out.push(p.clone());
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn patterns(list: &[String]) -> Result<Vec<PathBuf>, FloppyError> {
    let mut out = vec![];
    for f in list {
        if f.contains(['*', '?', '[']) {
            out.extend(glob(f).map_err(|e| FloppyError::Pattern(f.clone(), e))?);
        } else {
            out.push(PathBuf::from(f));
        }
    }
    Ok(out)
}

/// What goes where, in Packer's layout; directories to create are entries
/// whose `dest` ends with `/`.
pub fn layout(c: &FloppyConfig) -> Result<Vec<Entry>, FloppyError> {
    let add_err = |path: &Path, source| FloppyError::Add {
        path: path.to_path_buf(),
        source,
    };
    let mut out: Vec<Entry> = vec![];
    let mut push = |dest: String, src: PathBuf| -> Result<(), FloppyError> {
        if let Some(prev) = out
            .iter()
            .find(|e| e.dest.eq_ignore_ascii_case(&dest) && !dest.ends_with('/'))
        {
            return Err(FloppyError::Duplicate {
                name: dest,
                first: prev.src.clone(),
                second: src,
            });
        }
        if !out.iter().any(|e| e.dest == dest) {
            out.push(Entry { dest, src });
        }
        Ok(())
    };
    for f in patterns(&c.files)? {
        if f.is_dir() {
            let mut all = vec![];
            walk(&f, &mut all).map_err(|e| add_err(&f, e))?;
            for p in all.into_iter().filter(|p| !p.is_dir()) {
                push(name_of(&p), p)?;
            }
        } else {
            push(name_of(&f), f)?;
        }
    }
    for d in patterns(&c.dirs)? {
        if !d.is_dir() {
            push(name_of(&d), d)?;
            continue;
        }
        let top = name_of(&d);
        push(format!("{top}/"), d.clone())?;
        let mut all = vec![];
        walk(&d, &mut all).map_err(|e| add_err(&d, e))?;
        for p in all {
            let rel = p.strip_prefix(&d).unwrap_or(&p);
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let slash = if p.is_dir() { "/" } else { "" };
            push(format!("{top}/{rel}{slash}"), p)?;
        }
    }
    Ok(out)
}

/// 1.44 MB: 80 tracks, 2 heads, 18 sectors of 512 bytes.
pub const FLOPPY_SIZE: u64 = 1440 * 1024;

/// Write the floppy image `out` for `c` (blocking).
pub fn write_floppy(c: &FloppyConfig, out: &Path) -> Result<Vec<Entry>, FloppyError> {
    let entries = layout(c)?;
    let img = |source| FloppyError::Image {
        path: out.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(img)?;
    file.set_len(FLOPPY_SIZE).map_err(img)?;
    let label = if c.label.is_empty() {
        "packer"
    } else {
        c.label.as_str()
    };
    let mut vol = [b' '; 11];
    for (v, b) in vol.iter_mut().zip(label.bytes()) {
        *v = b;
    }
    let opts = fatfs::FormatVolumeOptions::new()
        .fat_type(fatfs::FatType::Fat12)
        .total_sectors((FLOPPY_SIZE / 512) as u32)
        .bytes_per_sector(512)
        .bytes_per_cluster(512)
        .max_root_dir_entries(224)
        .fats(2)
        .media(0xF0)
        .sectors_per_track(18)
        .heads(2)
        .drive_num(0)
        .volume_label(vol);
    fatfs::format_volume(&mut file, opts).map_err(img)?;
    let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new()).map_err(img)?;
    {
        let root = fs.root_dir();
        for e in &entries {
            let add = |source| FloppyError::Add {
                path: e.src.clone(),
                source,
            };
            if let Some(dir) = e.dest.strip_suffix('/') {
                root.create_dir(dir).map_err(add)?;
                continue;
            }
            let mut src = std::fs::File::open(&e.src).map_err(add)?;
            let mut dst = root.create_file(&e.dest).map_err(add)?;
            dst.truncate().map_err(add)?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = src.read(&mut buf).map_err(add)?;
                if n == 0 {
                    break;
                }
                dst.write_all(&buf[..n]).map_err(add)?;
            }
            dst.flush().map_err(add)?;
        }
    }
    fs.unmount().map_err(img)?;
    Ok(entries)
}

/// Packer's `StepCreateFloppy`: the image in the build's working
/// directory, in [`crate::Media::floppy`]; removed in the cleanup.
pub struct StepCreateFloppy<'a> {
    pub config: &'a FloppyConfig,
}

#[async_trait]
impl<S: HasMedia> Step<S> for StepCreateFloppy<'_> {
    fn name(&self) -> &'static str {
        "create floppy"
    }
    async fn run(&mut self, state: &mut S, ctx: &BuildCtx) -> Result<(), BuildError> {
        if self.config.is_empty() {
            return Ok(());
        }
        ctx.ui.say("Creating floppy disk...");
        let out = ctx.work_dir.join("floppy.img");
        state.media().floppy = Some(out.clone());
        let c = self.config.clone();
        let entries = tokio::task::spawn_blocking(move || write_floppy(&c, &out))
            .await
            .map_err(BuildError::new)?
            .map_err(|e| BuildError::new(e).context("Error creating floppy"))?;
        for e in entries.iter().filter(|e| !e.dest.ends_with('/')) {
            ctx.ui.message(&format!(
                "Copied {} to the floppy as /{}",
                e.src.display(),
                e.dest
            ));
        }
        Ok(())
    }
    async fn cleanup(&mut self, state: &mut S, _: &BuildCtx, _: Outcome) -> Result<(), BuildError> {
        if let Some(p) = state.media().floppy.take() {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) {
        for (p, body) in [
            ("ks.cfg", "kickstart"),
            ("answers/Autounattend.xml", "<unattend/>"),
            ("answers/scripts/a-long-file-name.ps1", "Write-Host hi"),
            ("answers/scripts/deeper/x.txt", "x"),
            ("more/one.txt", "1"),
            ("more/two.txt", "2"),
        ] {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
    }

    #[test]
    fn packers_layout() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        let s = |p: &str| d.path().join(p).display().to_string();
        let c = FloppyConfig {
            files: vec![s("ks.cfg"), s("more")],
            dirs: vec![s("answers")],
            label: String::new(),
        };
        let got: Vec<String> = layout(&c).unwrap().into_iter().map(|e| e.dest).collect();
        assert_eq!(
            got,
            [
                "ks.cfg",
                "one.txt",
                "two.txt",
                "answers/",
                "answers/Autounattend.xml",
                "answers/scripts/",
                "answers/scripts/a-long-file-name.ps1",
                "answers/scripts/deeper/",
                "answers/scripts/deeper/x.txt",
            ]
        );
        let dup = FloppyConfig {
            files: vec![s("more/one.txt"), s("more/one.txt")],
            ..FloppyConfig::default()
        };
        assert!(matches!(layout(&dup), Err(FloppyError::Duplicate { .. })));
        let glob = FloppyConfig {
            files: vec![s("more/*.txt"), s("nothing/*.x").replace("nothing/", "")],
            ..FloppyConfig::default()
        };
        assert_eq!(layout(&glob).unwrap().len(), 2);
    }

    /// The image read back with this crate's FAT reader; `tests/floppy.rs`
    /// reads it with mtools, an independent implementation.
    #[test]
    fn writes_a_fat12_floppy() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        let s = |p: &str| d.path().join(p).display().to_string();
        let c = FloppyConfig {
            files: vec![s("ks.cfg")],
            dirs: vec![s("answers")],
            label: "KILN".into(),
        };
        let img = d.path().join("f.img");
        write_floppy(&c, &img).unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().len(), FLOPPY_SIZE);
        let mut f = std::fs::File::open(&img).unwrap();
        let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat12);
        assert_eq!(fs.volume_label().trim_end(), "KILN");
        let mut text = String::new();
        fs.root_dir()
            .open_file("answers/scripts/a-long-file-name.ps1")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "Write-Host hi");
    }

    #[test]
    fn too_much_for_a_floppy() {
        let d = tempfile::tempdir().unwrap();
        let big = d.path().join("big.bin");
        std::fs::write(&big, vec![7u8; 2 << 20]).unwrap();
        let c = FloppyConfig {
            files: vec![big.display().to_string()],
            ..FloppyConfig::default()
        };
        let e = write_floppy(&c, &d.path().join("f.img")).unwrap_err();
        assert!(matches!(e, FloppyError::Add { .. }), "{e}");
    }
}
