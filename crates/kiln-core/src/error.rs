//! Why a build, a step, a provisioner or a post-processor did not succeed.
//!
//! Library crates keep their own `thiserror` enums (an `OsError` with the
//! HTTP status, a `QemuImgError` with the program's output, an I/O error
//! with its path) and hand them over whole: [`BuildError::Source`] keeps
//! the typed error, so code that must decide something looks at the type
//! ([`BuildError::find`]), never at the text. What kiln says in its own
//! words, with no error underneath (a refused input, a step's verdict), is
//! [`BuildError::Failed`].
//!
//! Printing: an error's `Display` is its whole story, each cause once
//! (`context: cause: cause`), and kiln prints exactly that, once. `source()`
//! links the chain for code that inspects it; it is never walked for
//! printing, so nothing is said twice.
use crate::communicator::CommError;
use std::error::Error as StdError;

/// Why a build (or a step, provisioner, post-processor) did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The user interrupted the build (Ctrl-C, SIGTERM) or a timeout hit.
    #[error("build was cancelled")]
    Cancelled,
    /// A problem kiln describes in its own words.
    #[error("{0}")]
    Failed(String),
    /// What was being done when `source` stopped it.
    #[error("{context}: {source}")]
    Context {
        context: String,
        source: Box<BuildError>,
    },
    /// A component's own typed error.
    #[error("{0}")]
    Source(Box<dyn StdError + Send + Sync + 'static>),
}

impl BuildError {
    /// A problem in kiln's own words.
    pub fn msg(m: impl Into<String>) -> Self {
        BuildError::Failed(m.into())
    }
    /// A component's typed error, kept whole.
    pub fn new<E: StdError + Send + Sync + 'static>(e: E) -> Self {
        BuildError::Source(Box::new(e))
    }
    /// Say what was being done: `"uploading x: <cause>"`. A cancel stays a
    /// cancel.
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        match self {
            BuildError::Cancelled => BuildError::Cancelled,
            e => BuildError::Context {
                context: ctx.to_string(),
                source: Box::new(e),
            },
        }
    }
    pub fn is_cancelled(&self) -> bool {
        matches!(self, BuildError::Cancelled)
    }
    /// The first error of type `E` in this error's chain (through
    /// contexts and the typed errors' own sources).
    pub fn find<E: StdError + 'static>(&self) -> Option<&E> {
        let mut cur: Option<&(dyn StdError + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(found) = e.downcast_ref::<E>() {
                return Some(found);
            }
            cur = match e.downcast_ref::<BuildError>() {
                Some(BuildError::Context { source, .. }) => Some(&**source),
                Some(BuildError::Source(typed)) => Some(&**typed),
                Some(_) => None,
                None => e.source(),
            };
        }
        None
    }
}

impl From<CommError> for BuildError {
    fn from(e: CommError) -> Self {
        BuildError::new(e)
    }
}

impl From<std::io::Error> for BuildError {
    /// Use `fs_err` (or a crate error that carries the path): a bare
    /// `std::io::Error` does not say which file.
    fn from(e: std::io::Error) -> Self {
        BuildError::new(e)
    }
}

/// `Err(BuildError::Failed(format!(...)))` shorthand.
#[macro_export]
macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::BuildError::Failed(format!($($t)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("disk full")]
    struct Full;

    #[derive(Debug, thiserror::Error)]
    #[error("writing x: {source}")]
    struct Write {
        source: Full,
    }

    #[test]
    fn display_says_each_cause_once() {
        let e = BuildError::new(Write { source: Full })
            .context("copying")
            .context("step output");
        assert_eq!(e.to_string(), "step output: copying: writing x: disk full");
    }

    #[test]
    fn find_reaches_typed_errors_through_contexts_and_sources() {
        let e = BuildError::new(Write { source: Full }).context("copying");
        assert!(e.find::<Write>().is_some());
        assert!(e.find::<Full>().is_some());
        assert!(e.find::<std::io::Error>().is_none());
        assert!(BuildError::msg("Full").find::<Full>().is_none());
    }

    #[test]
    fn a_cancel_stays_a_cancel() {
        assert!(BuildError::Cancelled.context("x").is_cancelled());
    }
}
