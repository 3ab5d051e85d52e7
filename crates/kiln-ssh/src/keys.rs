//! Temporary key pairs and private key files.
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;
use std::io::Read;
use std::path::Path;

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
    /// `ssh-ed25519 AAAA... kiln-<uuid>`, one line, no newline.
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
        let mut seed = [0u8; 32];
        // The kernel's CSPRNG; failing to read it is not recoverable.
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .expect("reading /dev/urandom");
        let kp = Ed25519Keypair::from_seed(&seed);
        seed.fill(0);
        let mut key = PrivateKey::from(kp);
        key.set_comment(name);
        let private_openssh = key
            .to_openssh(LineEnding::LF)
            .expect("encoding an ed25519 key")
            .to_string();
        let public_authorized = key
            .public_key()
            .to_openssh()
            .expect("encoding an ed25519 public key");
        TempKeyPair {
            name: name.to_string(),
            private_openssh,
            public_authorized,
        }
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
