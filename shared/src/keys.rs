//! Node identities: an ed25519 key pair per node. The private key stays in the node's data
//! directory (`node.key`, the 32-byte seed in hex, mode 0600); the public key is in the topology
//! file (`public_key`, hex). Every message a node sends carries its signature over the exact
//! bytes sent, so a receiver can tell that the node named in `from` really sent it.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// File name of a node's private key in its data directory.
pub const KEY_FILE: &str = "node.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {} does not hold a key (64 hex digits)", path.display())]
    Malformed { path: PathBuf },
    #[error("{0:?} is not a public key (64 hex digits of an ed25519 point)")]
    BadPublicKey(String),
}

/// A node's private key.
pub struct NodeKey(SigningKey);

impl std::fmt::Debug for NodeKey {
    // Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.public().to_hex())
    }
}

impl NodeKey {
    pub fn generate() -> Self {
        NodeKey(SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let malformed = || KeyError::Malformed {
            path: path.to_owned(),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| malformed())?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| malformed())?;
        Ok(NodeKey(SigningKey::from_bytes(&seed)))
    }

    /// Writes the key to a new file readable by its owner only; never overwrites one.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let write_err = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write_err)?;
        writeln!(f, "{}", hex::encode(self.0.to_bytes()))
            .and_then(|()| f.sync_all())
            .map_err(write_err)
    }

    /// Loads the key at `path`, or creates one there if there is none.
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        if path.exists() {
            return Self::load(path);
        }
        let key = Self::generate();
        key.save(path)?;
        Ok(key)
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The signature of `bytes`, in hex.
    pub fn sign(&self, bytes: &[u8]) -> String {
        hex::encode(self.0.sign(bytes).to_bytes())
    }
}

/// A node's public key, as the topology file lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::BadPublicKey(s.to_owned());
        let bytes: [u8; 32] = hex::decode(s)
            .map_err(|_| bad())?
            .try_into()
            .map_err(|_| bad())?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| bad())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// Whether `signature` (hex) is this key's signature of `bytes`.
    pub fn verifies(&self, bytes: &[u8], signature: &str) -> bool {
        let Ok(sig) = hex::decode(signature) else {
            return false;
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(&sig) else {
            return false;
        };
        self.0.verify_strict(bytes, &sig).is_ok()
    }
}

/// Headers of a pull request signed by the pulling node: who it is, when, and its signature of
/// [`pull_signing_input`]. A node serves content that belongs only to deleted documents to its
/// peers (history, pulls in flight) but to no anonymous reader.
pub const PULL_NODE_HEADER: &str = "x-docfed-node";
pub const PULL_TIME_HEADER: &str = "x-docfed-time";
pub const PULL_SIGNATURE_HEADER: &str = "x-docfed-signature";
/// How far a signed pull request's time may be from the server's clock.
pub const PULL_FRESHNESS_SECS: u64 = 300;

/// What a node signs to pull `md5` at `unix_secs`.
pub fn pull_signing_input(node: &str, md5: &str, unix_secs: u64) -> Vec<u8> {
    format!("docfed-pull\n{node}\n{md5}\n{unix_secs}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_the_signer_and_the_bytes() {
        let (a, b) = (NodeKey::generate(), NodeKey::generate());
        let sig = a.sign(b"message");
        assert!(a.public().verifies(b"message", &sig));
        assert!(!a.public().verifies(b"messagE", &sig));
        assert!(!b.public().verifies(b"message", &sig));
        assert!(!a.public().verifies(b"message", "00"));
        assert!(!a.public().verifies(b"message", "not hex"));
        let round = PublicKey::from_hex(&a.public().to_hex()).unwrap();
        assert_eq!(round, a.public());
        assert!(PublicKey::from_hex("abcd").is_err());
    }

    #[test]
    fn key_files_round_trip_and_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let k = NodeKey::load_or_generate(&path).unwrap();
        assert_eq!(NodeKey::load(&path).unwrap().public(), k.public());
        assert_eq!(
            NodeKey::load_or_generate(&path).unwrap().public(),
            k.public()
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(k.save(&path).is_err(), "overwrote a key");
        std::fs::write(&path, "zz").unwrap();
        assert!(matches!(
            NodeKey::load(&path),
            Err(KeyError::Malformed { .. })
        ));
    }
}
