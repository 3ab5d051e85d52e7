//! Temporary key pairs and private key files.
//!
//! Packer 1.6.6's `temporary_key_pair_type` (`rsa`, the default, `ecdsa`,
//! `ed25519`, `dsa`) and `temporary_key_pair_bits` choose the key a builder
//! generates (its `StepSSHKeyGen`: RSA 4096 bits unless told otherwise;
//! ECDSA 521; ed25519 has no size). kiln generates `rsa`, `ecdsa` and
//! `ed25519` keys with the same defaults and checks the sizes at decode
//! time; `dsa` is refused (OpenSSH disabled DSA in 7.0, 2015).
//! [`TempKeyPair::generate`] stays ed25519 (what kiln's own cloud-init
//! seed gives a modern guest); [`TempKeyPair::for_config`] follows the
//! template.
use crate::config::SshConfig;
use getrandom::SysRng;
use russh::keys::ssh_key::private::{EcdsaKeypair, Ed25519Keypair, RsaKeypair};
use russh::keys::ssh_key::rand_core::UnwrapErr;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{EcdsaCurve, PrivateKey};
use std::path::Path;

/// The kind of a temporary key pair (`temporary_key_pair_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TempKeyType {
    /// Packer's default; what an old OpenSSH (before 6.5, no ed25519)
    /// accepts.
    #[default]
    Rsa,
    Ecdsa,
    Ed25519,
}

impl TempKeyType {
    /// Packer's name for it.
    pub fn name(self) -> &'static str {
        match self {
            TempKeyType::Rsa => "rsa",
            TempKeyType::Ecdsa => "ecdsa",
            TempKeyType::Ed25519 => "ed25519",
        }
    }

    /// Parse `temporary_key_pair_type` (case-insensitive, as Packer's
    /// enumer).
    pub fn parse(s: &str) -> Result<TempKeyType, String> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" => Ok(TempKeyType::Rsa),
            "ecdsa" => Ok(TempKeyType::Ecdsa),
            "ed25519" => Ok(TempKeyType::Ed25519),
            "dsa" => Err(
                "temporary_key_pair_type `dsa` is not supported by kiln: OpenSSH refuses DSA keys since 7.0 (use `rsa`, `ecdsa` or `ed25519`)"
                    .into(),
            ),
            _ => Err(format!(
                "temporary_key_pair_type `{s}` is not a key type: possible algorithm types are `dsa` | `ecdsa` | `ed25519` | `rsa` ( the default )"
            )),
        }
    }

    /// Check `temporary_key_pair_bits` for this type (0: the default) and
    /// return the size to use (0 for ed25519, which has none).
    pub fn bits(self, bits: u32) -> Result<u32, String> {
        match self {
            TempKeyType::Rsa if bits == 0 => Ok(4096),
            TempKeyType::Rsa if bits < 1024 => Err(format!(
                "temporary_key_pair_bits {bits}: RSA keys need at least 1024 bits"
            )),
            TempKeyType::Rsa if bits > 16384 => Err(format!(
                "temporary_key_pair_bits {bits}: kiln generates RSA keys of at most 16384 bits"
            )),
            TempKeyType::Rsa => Ok(bits),
            TempKeyType::Ecdsa => match bits {
                0 => Ok(521),
                256 | 384 | 521 => Ok(bits),
                _ => Err(format!(
                    "temporary_key_pair_bits {bits}: ECDSA keys are 256, 384 or 521 bits"
                )),
            },
            // Packer ignores the size of an ed25519 key.
            TempKeyType::Ed25519 => Ok(0),
        }
    }
}

/// The system's CSPRNG (`getrandom(2)`) for the key generators, which want
/// a generator that cannot fail: it is tried once first, so that a system
/// without one is an error here rather than a panic in the generator.
fn system_rng() -> Result<UnwrapErr<SysRng>, String> {
    getrandom::fill(&mut [0u8; 1])
        .map_err(|e| format!("the system's random number generator: {e}"))?;
    Ok(UnwrapErr(SysRng))
}

/// A key pair generated for one build: builders put the public half on the
/// machine (cloud-init, a Nova key pair) and kiln logs in with the private
/// half.
#[derive(Clone)]
pub struct TempKeyPair {
    /// `kiln-<uuid>`: the public key's comment, and the name builders give
    /// the key pair in a cloud.
    pub name: String,
    /// The private key in OpenSSH format (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub private_openssh: String,
    /// `ssh-ed25519 AAAA... kiln-<uuid>` (or `ssh-rsa`, `ecdsa-sha2-nistp521`),
    /// one line, no newline.
    pub public_authorized: String,
}

impl std::fmt::Debug for TempKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempKeyPair")
            .field("name", &self.name)
            .field("public_authorized", &self.public_authorized)
            .finish_non_exhaustive()
    }
}

impl TempKeyPair {
    /// A fresh ed25519 key pair named `kiln-<uuid>`.
    pub fn generate() -> TempKeyPair {
        let name = format!("kiln-{}", uuid::Uuid::new_v4());
        Self::generate_named(&name)
    }

    /// A fresh ed25519 key pair with the given name (its comment).
    pub fn generate_named(name: &str) -> TempKeyPair {
        Self::generate_with(TempKeyType::Ed25519, 0, name).expect("generating an ed25519 key")
    }

    /// The key pair the template asks for: `temporary_key_pair_type` (or
    /// `default` when the template does not say: Packer's own default is
    /// [`TempKeyType::Rsa`]) and `temporary_key_pair_bits`, named
    /// `kiln-<uuid>`.
    pub fn for_config(cfg: &SshConfig, default: TempKeyType) -> Result<TempKeyPair, String> {
        let kind = cfg.temporary_key_pair_type.unwrap_or(default);
        let name = format!("kiln-{}", uuid::Uuid::new_v4());
        Self::generate_with(kind, cfg.temporary_key_pair_bits, &name)
    }

    /// A fresh key pair of `kind` (`bits`: 0 for the default size), with the
    /// given name (its comment). RSA keys take a moment (about a second for
    /// 4096 bits in an optimised build).
    pub fn generate_with(kind: TempKeyType, bits: u32, name: &str) -> Result<TempKeyPair, String> {
        let bits = kind.bits(bits)?;
        let mut rng = system_rng()?;
        let mut key = match kind {
            TempKeyType::Ed25519 => PrivateKey::from(Ed25519Keypair::random(&mut rng)),
            TempKeyType::Rsa => PrivateKey::from(
                RsaKeypair::random(&mut rng, bits as usize)
                    .map_err(|e| format!("generating an RSA key of {bits} bits: {e}"))?,
            ),
            TempKeyType::Ecdsa => {
                let curve = match bits {
                    256 => EcdsaCurve::NistP256,
                    384 => EcdsaCurve::NistP384,
                    _ => EcdsaCurve::NistP521,
                };
                PrivateKey::from(
                    EcdsaKeypair::random(&mut rng, curve)
                        .map_err(|e| format!("generating an ECDSA key of {bits} bits: {e}"))?,
                )
            }
        };
        key.set_comment(name);
        let private_openssh = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| format!("encoding the {} key: {e}", kind.name()))?
            .to_string();
        let public_authorized = key
            .public_key()
            .to_openssh()
            .map_err(|e| format!("encoding the {} public key: {e}", kind.name()))?;
        Ok(TempKeyPair {
            name: name.to_string(),
            private_openssh,
            public_authorized,
        })
    }

    /// The parsed private key.
    pub fn private_key(&self) -> Result<PrivateKey, String> {
        russh::keys::decode_secret_key(&self.private_openssh, None).map_err(|e| e.to_string())
    }
}

/// Read and parse a private key file (OpenSSH, PEM PKCS#1/PKCS#8). An
/// encrypted key is an error, as in Packer.
pub fn load_private_key(path: &Path) -> Result<PrivateKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    russh::keys::decode_secret_key(&text, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => format!(
            "{}: the key is encrypted with a passphrase, which kiln cannot ask for (decrypt it, or use ssh_agent_auth)",
            path.display()
        ),
        e => format!("{}: {e}", path.display()),
    })
}
