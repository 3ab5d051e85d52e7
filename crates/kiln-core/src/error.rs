use crate::communicator::CommError;

/// Why a build (or a step, provisioner, post-processor) did not succeed.
/// The message is the whole story: it is printed once, as is.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The user interrupted the build (Ctrl-C, SIGTERM) or a timeout hit.
    #[error("build was cancelled")]
    Cancelled,
    #[error("{0}")]
    Failed(String),
}

impl BuildError {
    pub fn msg(m: impl Into<String>) -> Self {
        BuildError::Failed(m.into())
    }
    /// Prefix the message with context: `"uploading x: <cause>"`.
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        match self {
            BuildError::Cancelled => BuildError::Cancelled,
            BuildError::Failed(m) => BuildError::Failed(format!("{ctx}: {m}")),
        }
    }
    pub fn is_cancelled(&self) -> bool {
        matches!(self, BuildError::Cancelled)
    }
}

impl From<CommError> for BuildError {
    fn from(e: CommError) -> Self {
        BuildError::Failed(e.to_string())
    }
}

/// `Err(BuildError::Failed(format!(...)))` shorthand.
#[macro_export]
macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::BuildError::Failed(format!($($t)*))) };
}
