//! The crate's own typed errors (the API client's is
//! [`crate::client::OsError`]).
use std::path::{Path, PathBuf};

/// A file or directory operation that failed, with the path and the
/// system's error kept whole: `"creating /tmp/x.qcow2: No space left on
/// device"`.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct FileError {
    /// What was being done ("creating", "reading", "writing").
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    /// `map_err(FileError::at("writing", &path))`.
    pub fn at(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
        let path = path.to_path_buf();
        move |source| FileError {
            action,
            path,
            source,
        }
    }
}

impl From<FileError> for kiln_core::BuildError {
    fn from(e: FileError) -> Self {
        kiln_core::BuildError::new(e)
    }
}
