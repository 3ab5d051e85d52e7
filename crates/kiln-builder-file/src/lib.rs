//! The `file` builder (Packer 1.6.6 compatible): produces an artifact that
//! is a single local file, either copied from `source` or written from
//! `content`. Useful to test post-processors without any machine.
use kiln_core::{async_trait, Artifact, BuildCtx, BuildError, Builder, FileArtifact, Hook};
use kiln_core::{PrepareOpts, Registry};
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
            d.error_here("one of `source` or `content` must be specified");
            None
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
        match &self.input {
            Input::Source(s) => {
                ctx.ui.say(&format!("Copying {} to {t}", s.display()));
                tokio::fs::copy(s, &self.target)
                    .await
                    .map_err(|e| BuildError::msg(format!("copying {} to {t}: {e}", s.display())))?;
            }
            Input::Content(c) => {
                ctx.ui.say(&format!("Writing content to {t}"));
                tokio::fs::write(&self.target, c)
                    .await
                    .map_err(|e| BuildError::msg(format!("writing {t}: {e}")))?;
            }
        }
        if let Err(e) = hook.provision(ctx, None).await {
            if !e.is_cancelled() {
                ctx.mark_failed();
                if let Err(c) = hook.cleanup(ctx, None).await {
                    ctx.ui.error(&c.to_string());
                }
            }
            return Err(e);
        }
        let mut a = FileArtifact::new(BUILDER_ID, vec![self.target.clone()]);
        a.description = Some(format!("Stored file: {t}"));
        Ok(Some(Arc::new(a)))
    }
}
