//! Hashing files: the one routine behind the `checksum` post-processor's
//! digests and the `iso_checksum` check of downloads. A file is read once,
//! in large chunks, whatever the number of algorithms.
use sha2::digest::DynDigest;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// The hash algorithms Packer 1.6.6 knows, by their template names
/// (`checksum_types`; `iso_checksum` takes md5, sha1, sha256 and sha512
/// of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algo {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Algo {
    pub const ALL: [Algo; 6] = [
        Algo::Md5,
        Algo::Sha1,
        Algo::Sha224,
        Algo::Sha256,
        Algo::Sha384,
        Algo::Sha512,
    ];

    /// The template's name for it (`sha256`).
    pub fn name(self) -> &'static str {
        match self {
            Algo::Md5 => "md5",
            Algo::Sha1 => "sha1",
            Algo::Sha224 => "sha224",
            Algo::Sha256 => "sha256",
            Algo::Sha384 => "sha384",
            Algo::Sha512 => "sha512",
        }
    }

    /// The algorithm of that exact name.
    pub fn parse(name: &str) -> Option<Algo> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    fn hasher(self) -> Box<dyn DynDigest + Send> {
        match self {
            Algo::Md5 => Box::new(md5::Md5::default()),
            Algo::Sha1 => Box::new(sha1::Sha1::default()),
            Algo::Sha224 => Box::new(sha2::Sha224::default()),
            Algo::Sha256 => Box::new(sha2::Sha256::default()),
            Algo::Sha384 => Box::new(sha2::Sha384::default()),
            Algo::Sha512 => Box::new(sha2::Sha512::default()),
        }
    }
}

/// Why a file could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("unable to open file {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to compute checksums of {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The caller's `each_chunk` said to stop.
    #[error("hashing {} was stopped", .path.display())]
    Stopped { path: PathBuf },
}

/// Hex digests (lower case) of the file at `path`, one for each of
/// `algos`, in their order, from one read of the file. `each_chunk` is
/// called with the length of every chunk read (for progress); breaking
/// stops the hashing with [`HashError::Stopped`] (for cancellation).
/// Blocking: call it from `spawn_blocking` in async code.
pub fn hash_file(
    path: &Path,
    algos: &[Algo],
    mut each_chunk: impl FnMut(usize) -> ControlFlow<()>,
) -> Result<Vec<String>, HashError> {
    let mut f = std::fs::File::open(path).map_err(|source| HashError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut hashers: Vec<_> = algos.iter().map(|a| a.hasher()).collect();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(HashError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        for h in &mut hashers {
            h.update(&buf[..n]);
        }
        if each_chunk(n).is_break() {
            return Err(HashError::Stopped {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(hashers
        .into_iter()
        .map(|h| hex::encode(h.finalize()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{hash_file, Algo, HashError};
    use std::ops::ControlFlow;

    #[test]
    fn digests_of_every_algorithm_in_one_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, "abc").unwrap();
        let mut chunks = vec![];
        let got = hash_file(&p, &Algo::ALL, |n| {
            chunks.push(n);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(chunks, [3]);
        // The FIPS/RFC test vectors for "abc".
        assert_eq!(got[0], "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(got[1], "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            got[2],
            "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"
        );
        assert_eq!(
            got[3],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(got[4].starts_with("cb00753f45a35e8bb5a03d699ac65007"));
        assert!(got[5].starts_with("ddaf35a193617abacc417349ae204131"));
        assert_eq!(
            Algo::ALL.map(Algo::name).map(Algo::parse),
            Algo::ALL.map(Some)
        );
    }

    #[test]
    fn open_failure_and_stop_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let missing = hash_file(&d.path().join("none"), &[Algo::Md5], |_| {
            ControlFlow::Continue(())
        });
        assert!(
            matches!(missing, Err(HashError::Open { .. })),
            "{missing:?}"
        );
        let p = d.path().join("f");
        std::fs::write(&p, "x").unwrap();
        let stopped = hash_file(&p, &[Algo::Md5], |_| ControlFlow::Break(()));
        assert!(
            matches!(stopped, Err(HashError::Stopped { .. })),
            "{stopped:?}"
        );
    }
}
