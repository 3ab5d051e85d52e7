//! CD images from files: `cd_files` and `cd_label` (Packer's `CDConfig`
//! and `StepCreateCD`'s pieces), and the file patterns `floppy_files`
//! shares.
use kiln_core::{BuildCtx, BuildError};
use kiln_template::Decoder;
use std::path::{Path, PathBuf};

// Patterns are Go's `filepath.Glob`, as Packer expands `cd_files` and
// `floppy_files` ([`kiln_core::glob`], kiln's one implementation of that
// meaning); `which` is kiln's one program lookup.
pub(crate) use kiln_core::glob::glob;
use kiln_core::local::which;

/// `mkisofs`-style arguments: Joliet and Rock Ridge, volume id `label`.
pub fn mkisofs_args(dir: &Path, label: &str, out: &Path) -> Vec<String> {
    let mut a = vec!["-quiet".to_string(), "-o".into(), out.display().to_string()];
    if !label.is_empty() {
        a.push("-V".into());
        a.push(label.into());
    }
    a.extend(["-J".into(), "-r".into(), dir.display().to_string()]);
    a
}

/// Copy `cd_files` into `dir` (files by name, directories with their
/// contents, as Packer lays them out on the CD).
pub fn stage_files(files: &[PathBuf], dir: &Path) -> std::io::Result<()> {
    for f in files {
        let name = f.file_name().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: no file name", f.display()),
            )
        })?;
        if f.is_dir() {
            copy_dir(f, &dir.join(name))?;
        } else {
            std::fs::copy(f, dir.join(name))?;
        }
    }
    Ok(())
}

fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dst.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), dst.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Packer's `CDConfig`: `cd_files` (globs expanded at validate time, as
/// Packer checks them) and `cd_label`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CdConfig {
    pub files: Vec<PathBuf>,
    pub label: String,
}

impl CdConfig {
    /// `None` when a problem was recorded.
    pub fn decode(d: &mut Decoder<'_>) -> Option<CdConfig> {
        let mut ok = true;
        let mut c = CdConfig::default();
        for f in d.string_list("cd_files").unwrap_or_default() {
            match expand(&f) {
                Ok(v) => c.files.extend(v),
                Err(e) => {
                    d.error("cd_files", format!("Bad CD disk file '{f}': {e}"));
                    ok = false;
                }
            }
        }
        c.label = d.string("cd_label").unwrap_or_default();
        ok.then_some(c)
    }
}

/// A `cd_files`/`floppy_files` entry: a pattern's matches (none is fine,
/// as in Packer), or the path, which must exist.
pub fn expand(f: &str) -> Result<Vec<PathBuf>, String> {
    if f.contains(['*', '?', '[']) {
        glob(f).map_err(|e| e.to_string())
    } else if Path::new(f).exists() {
        Ok(vec![PathBuf::from(f)])
    } else {
        Err("no such file or directory".into())
    }
}

/// No program to make an ISO with.
#[derive(Debug, thiserror::Error)]
#[error("making a CD needs xorriso, genisoimage or mkisofs (Debian package xorriso)")]
pub struct NoIsoTool;

/// The ISO program failed.
#[derive(Debug, thiserror::Error)]
#[error("{program}: {message}")]
pub struct IsoToolFailed {
    pub program: String,
    pub message: String,
}

/// Make an ISO 9660 image (Joliet, Rock Ridge) of `dir`, volume id
/// `label`, with xorriso, genisoimage or mkisofs (Packer's order of
/// preference is the same set).
pub async fn make_iso(
    ctx: &BuildCtx,
    dir: &Path,
    label: &str,
    out: &Path,
) -> Result<(), BuildError> {
    let (prog, mut args): (&str, Vec<String>) = if which("xorriso").is_some() {
        ("xorriso", vec!["-as".into(), "mkisofs".into()])
    } else if which("genisoimage").is_some() {
        ("genisoimage", vec![])
    } else if which("mkisofs").is_some() {
        ("mkisofs", vec![])
    } else {
        return Err(BuildError::new(NoIsoTool));
    };
    args.extend(mkisofs_args(dir, label, out));
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(&args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let o = ctx
        .cancellable(async { cmd.output().await.map_err(BuildError::new) })
        .await
        .map_err(|e| e.context(format!("running {prog}")))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(BuildError::new(IsoToolFailed {
            program: prog.into(),
            message: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::glob::go_match as wildmatch;

    #[test]
    fn wildcards() {
        for (p, n, want) in [
            ("*.iso", "a.iso", true),
            ("*.iso", "a.img", false),
            ("?.txt", "a.txt", true),
            ("?.txt", "ab.txt", false),
            ("[ab]*", "b1", true),
            ("[a-c]x", "cx", true),
            ("[a-c]x", "dx", false),
            ("user-data", "user-data", true),
        ] {
            assert_eq!(wildmatch(p, n), Ok(want), "{p} {n}");
        }
    }

    #[test]
    fn globs_and_staging() {
        let d = tempfile::tempdir().unwrap();
        for f in ["a.yml", "b.yml", "c.txt"] {
            std::fs::write(d.path().join(f), f).unwrap();
        }
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/x"), "x").unwrap();
        let g = glob(&format!("{}/*.yml", d.path().display())).unwrap();
        assert_eq!(g, vec![d.path().join("a.yml"), d.path().join("b.yml")]);
        let out = d.path().join("stage");
        std::fs::create_dir(&out).unwrap();
        stage_files(&[d.path().join("c.txt"), d.path().join("sub")], &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("c.txt")).unwrap(), "c.txt");
        assert_eq!(std::fs::read_to_string(out.join("sub/x")).unwrap(), "x");
    }

    #[test]
    fn iso_arguments() {
        assert_eq!(
            mkisofs_args(Path::new("/s"), "cidata", Path::new("/o.iso")).join(" "),
            "-quiet -o /o.iso -V cidata -J -r /s"
        );
    }
}
