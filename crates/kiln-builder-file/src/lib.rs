//! The `file` builder (Packer 1.6.6 compatible): produces an artifact that
//! is a single local file, either copied from `source` or written from
//! `content`. Useful to test post-processors without any machine.
//!
//! As Packer's: the target's missing parent directories are created
//! (mode 0755); with neither `source` nor `content` (an empty string counts
//! as not set) a warning is given and the target is an empty file; a
//! written `content` file is created with mode 0600; the artifact's id is
//! `File` (the manifest's `artifact_id`, the machine-readable
//! `artifact,0,id` record). Unlike Packer, a `source` that does not exist is
//! reported when the template is validated, not when the build runs.
use kiln_core::{async_trait, Artifact, BuildCtx, BuildError, Builder, FileArtifact, Hook};
use kiln_core::{Outcome, PrepareOpts, Registry};
use kiln_template::Decoder;
use std::path::PathBuf;
use std::sync::Arc;

/// The builder id Packer uses, so artifact consumers recognise it.
pub const BUILDER_ID: &str = "packer.file";

pub fn register(reg: &mut Registry) {
    reg.builder("file", factory);
}

#[derive(Debug)]
enum Input {
    Source(PathBuf),
    Content(String),
}

#[derive(Debug)]
pub struct FileBuilder {
    input: Input,
    target: PathBuf,
}

fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn Builder>> {
    let source = d.string("source");
    let content = d.string("content");
    let target = d.string("target");
    d.require("target", &target);
    let source = source.filter(|s| !s.is_empty());
    let content = content.filter(|c| !c.is_empty());
    let input = match (source, content) {
        (Some(_), Some(_)) => {
            d.error_here("source and content cannot both be specified");
            None
        }
        (Some(s), None) => {
            let p = PathBuf::from(&s);
            if !p.is_file() {
                d.error(
                    "source",
                    format!("source file `{s}` does not exist or is not a file"),
                );
            }
            Some(Input::Source(p))
        }
        (None, Some(c)) => Some(Input::Content(c)),
        (None, None) => {
            d.warn("Both source file and contents are blank; target will have no content");
            Some(Input::Content(String::new()))
        }
    };
    Some(Box::new(FileBuilder {
        input: input?,
        target: PathBuf::from(target?),
    }))
}

#[async_trait]
impl Builder for FileBuilder {
    async fn run(
        &self,
        ctx: &BuildCtx,
        hook: &dyn Hook,
    ) -> Result<Option<Arc<dyn Artifact>>, BuildError> {
        let t = self.target.display();
        // Create the directories leading to the target (Packer's MkdirAll).
        if let Some(dir) = self
            .target
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && *d != std::path::Path::new("."))
        {
            tokio::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .await
                .map_err(|e| BuildError::msg(format!("creating {}: {e}", dir.display())))?;
        }
        match &self.input {
            Input::Source(s) => {
                ctx.ui.say(&format!("Copying {} to {t}", s.display()));
                let n = tokio::fs::copy(s, &self.target)
                    .await
                    .map_err(|e| BuildError::msg(format!("copying {} to {t}: {e}", s.display())))?;
                ctx.ui.say(&format!("Copied {n} bytes"));
            }
            Input::Content(c) => {
                ctx.ui.say(&format!("Writing content to {t}"));
                write_new(&self.target, c.as_bytes())
                    .await
                    .map_err(|e| BuildError::msg(format!("writing {t}: {e}")))?;
            }
        }
        if let Err(e) = hook.provision(ctx, None).await {
            if !e.is_cancelled() {
                if let Err(c) = hook.cleanup(ctx, None, Outcome::Failed).await {
                    ctx.ui.error(&c.to_string());
                }
            }
            return Err(e);
        }
        let mut a = FileArtifact::new(BUILDER_ID, vec![self.target.clone()]);
        a.id = ARTIFACT_ID.to_string();
        a.description = Some(format!("Stored file: {t}"));
        Ok(Some(Arc::new(a)))
    }
}

/// Packer's file artifact's `Id()`.
pub const ARTIFACT_ID: &str = "File";

/// Write `data` to `path` as Go's `ioutil.WriteFile(path, data, 0600)`:
/// created with mode 0600 (before the umask), truncated if it exists (its
/// mode then kept).
async fn write_new(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await?;
    f.write_all(data).await?;
    f.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::component::NoHook;
    use kiln_testkit::test_ui;
    use std::os::unix::fs::PermissionsExt;

    fn prepare(json: &str) -> (Option<Box<dyn Builder>>, String, String) {
        let src = Arc::new(kiln_template::Source {
            path: "t.json".into(),
            text: json.to_string(),
        });
        let node = kiln_template::json::parse(src).unwrap();
        let ctx = kiln_template::Context::new(std::env::temp_dir());
        let mut diags = kiln_template::Diagnostics::default();
        let mut d = Decoder::new(&node, &ctx, &mut diags);
        d.ignore(&["type"]);
        let b = factory(&mut d, &PrepareOpts::default());
        let w = kiln_template::Diagnostics(d.finish_with_warnings());
        (b, diags.to_string(), w.to_string())
    }

    async fn run(b: &dyn Builder, dir: &std::path::Path) -> Arc<dyn Artifact> {
        let (_, ui) = test_ui("file");
        let ctx = BuildCtx::for_test(ui, dir.to_path_buf());
        b.run(&ctx, &NoHook).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn creates_parent_directories_and_names_the_artifact_file() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("a/b/c/out.txt");
        let (b, errs, warns) = prepare(&format!(
            r#"{{"type": "file", "target": "{}", "content": "hi"}}"#,
            target.display()
        ));
        assert_eq!((errs.as_str(), warns.as_str()), ("", ""));
        let a = run(b.unwrap().as_ref(), d.path()).await;
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "hi");
        assert_eq!(a.id(), "File");
        assert_eq!(a.builder_id(), "packer.file");
        assert_eq!(a.files(), vec![target.clone()]);
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(d.path().join("a/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode & !0o022, 0o755 & !0o022);
    }

    #[tokio::test]
    async fn neither_source_nor_content_warns_and_writes_an_empty_file() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("empty.txt");
        for extra in ["", r#", "content": """#, r#", "source": "", "content": """#] {
            let (b, errs, warns) = prepare(&format!(
                r#"{{"type": "file", "target": "{}"{extra}}}"#,
                target.display()
            ));
            assert_eq!(errs, "", "{extra}");
            assert!(
                warns.contains(
                    "Both source file and contents are blank; target will have no content"
                ),
                "{extra}: {warns}"
            );
            std::fs::write(&target, "old").unwrap();
            run(b.unwrap().as_ref(), d.path()).await;
            assert_eq!(std::fs::read_to_string(&target).unwrap(), "", "{extra}");
        }
    }

    #[tokio::test]
    async fn source_is_copied_and_conflicts_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("in.bin");
        std::fs::write(&src, b"12345").unwrap();
        let target = d.path().join("sub/out.bin");
        let (b, errs, _) = prepare(&format!(
            r#"{{"type": "file", "target": "{}", "source": "{}", "content": ""}}"#,
            target.display(),
            src.display()
        ));
        assert_eq!(errs, "");
        let (out, ui) = test_ui("file");
        let ctx = BuildCtx::for_test(ui, d.path().to_path_buf());
        b.unwrap().run(&ctx, &NoHook).await.unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"12345");
        assert!(
            out.captured().contains("==> file: Copied 5 bytes"),
            "{}",
            out.captured()
        );

        let (_, errs, _) = prepare(&format!(
            r#"{{"type": "file", "target": "x", "source": "{}", "content": "y"}}"#,
            src.display()
        ));
        assert!(
            errs.contains("source and content cannot both be specified"),
            "{errs}"
        );
        let (_, errs, _) = prepare(r#"{"type": "file", "content": "y"}"#);
        assert!(errs.contains("`target` must be specified"), "{errs}");
    }
}
