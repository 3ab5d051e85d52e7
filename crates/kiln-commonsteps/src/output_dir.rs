//! The output directory: refused when it exists (unless `-force`), made
//! empty, and removed again unless the build succeeded.
use kiln_core::context::LedgerId;
use kiln_core::{async_trait, BuildCtx, BuildError, Outcome, Step};
use std::path::{Path, PathBuf};

/// The problem with `dir` as a new build's output directory, if any: for
/// builders to report at validate time, with the key's position.
pub fn output_dir_problem(dir: &Path, force: bool) -> Option<String> {
    (!force && dir.exists()).then(|| {
        format!(
            "Output directory '{}' already exists. It must not exist (or use -force).",
            dir.display()
        )
    })
}

/// Makes the output directory (deleting an old one with `-force`); its
/// cleanup deletes it unless every step succeeded.
pub struct StepOutputDir {
    pub dir: PathBuf,
    pub force: bool,
    created: Option<LedgerId>,
}

impl StepOutputDir {
    pub fn new(dir: impl Into<PathBuf>, force: bool) -> Self {
        StepOutputDir {
            dir: dir.into(),
            force,
            created: None,
        }
    }
}

fn remove_dir(dir: &Path) -> Result<(), BuildError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(BuildError::msg(format!("removing {}: {e}", dir.display())))
        }
        _ => Ok(()),
    }
}

#[async_trait]
impl<S: Send> Step<S> for StepOutputDir {
    fn name(&self) -> &'static str {
        "output directory"
    }
    async fn run(&mut self, _: &mut S, ctx: &BuildCtx) -> Result<(), BuildError> {
        if self.dir.exists() {
            if let Some(p) = output_dir_problem(&self.dir, self.force) {
                return Err(BuildError::msg(p));
            }
            ctx.ui.say("Deleting previous output directory...");
            remove_dir(&self.dir)?;
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| BuildError::msg(format!("creating {}: {e}", self.dir.display())))?;
        self.created = Some(
            ctx.ledger
                .track(format!("output directory {}", self.dir.display())),
        );
        Ok(())
    }
    async fn cleanup(
        &mut self,
        _: &mut S,
        ctx: &BuildCtx,
        outcome: Outcome,
    ) -> Result<(), BuildError> {
        if let Some(id) = self.created.take() {
            if !outcome.succeeded() {
                ctx.ui.say("Deleting output directory...");
                remove_dir(&self.dir)?;
            }
            ctx.ledger.release(id);
        }
        Ok(())
    }
}
