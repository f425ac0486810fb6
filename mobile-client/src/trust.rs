//! What the command line believes of a server: only versions signed by a primary of the
//! federation it pinned (ARCHITECTURE.md §7, as nodes check them in
//! `node/src/federation/admission.rs`).
//!
//! The primaries' public keys come from a file the operator hands out (`--primary-keys FILE`,
//! `DOCFED_PRIMARY_KEYS`): the federation's topology file as `docfed-topology up` or
//! `docfed-topology keys` wrote it, or any TOML file of `[[node]]` tables with `id`, `tier` and
//! `public_key` (only primaries' keys are read; other tables and keys, such as broker URLs, are
//! ignored, so an operator may hand out a copy reduced to the primaries). `register` pins them
//! beside the CA (`$XDG_CONFIG_HOME/docfed/primary-keys.toml`); later commands check every
//! version a server sends against them, whichever server it is: a server is believed for what
//! it can prove, never for how it was found.
//!
//! Without keys (a standalone node signs nothing) versions are taken as the server gives them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use docfed_shared::keys::PublicKey;
use docfed_shared::wire::DocumentVersion;
use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// The federation's primaries and their public keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryKeys(BTreeMap<String, PublicKey>);

/// The part of a topology file read here: anything else in it is ignored.
#[derive(Deserialize, Serialize)]
struct KeysFile {
    #[serde(rename = "node", default)]
    nodes: Vec<NodeKeyEntry>,
}

#[derive(Deserialize, Serialize)]
struct NodeKeyEntry {
    id: String,
    tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
}

impl PrimaryKeys {
    /// The primaries' keys in `path` (a topology file, or the pinned copy).
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let what = |e: String| CliError::Local(format!("--primary-keys {}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| what(e.to_string()))?;
        let file: KeysFile = toml::from_str(&text).map_err(|e| what(e.to_string()))?;
        let mut keys = BTreeMap::new();
        for n in file.nodes.iter().filter(|n| n.tier == "primary") {
            let Some(hex) = &n.public_key else { continue };
            let key = PublicKey::from_hex(hex)
                .map_err(|_| what(format!("primary `{}` has no valid public_key", n.id)))?;
            keys.insert(n.id.clone(), key);
        }
        if keys.is_empty() {
            return Err(what(
                "it lists no primary node with a public_key; give the federation's topology \
                 file with its keys (RUN_DIR/topology.toml of `docfed-topology up`, e.g. \
                 run/federation/topology.toml, or keys/topology.toml of `docfed-topology keys`)"
                    .into(),
            ));
        }
        Ok(Self(keys))
    }

    fn to_toml(&self) -> String {
        let file = KeysFile {
            nodes: self
                .0
                .iter()
                .map(|(id, key)| NodeKeyEntry {
                    id: id.clone(),
                    tier: "primary".into(),
                    public_key: Some(key.to_hex()),
                })
                .collect(),
        };
        toml::to_string(&file).expect("serialisable")
    }

    /// Whether `v` carries a valid signature of its origin, a primary of these keys, and (unless
    /// it is a tombstone) the SHA-256 of its content; else what is wrong with it.
    pub fn verify(&self, v: &DocumentVersion) -> Result<(), &'static str> {
        let key = self
            .0
            .get(&v.origin)
            .ok_or("comes from an origin that is not a primary of the pinned federation")?;
        let signature = v.signature.as_deref().ok_or("is not signed")?;
        if !key.verifies(&v.signing_input(), signature) {
            return Err("does not match its origin's signature (forged or altered)");
        }
        if v.sha256.is_none() && !v.deleted {
            return Err("has no SHA-256 of its content");
        }
        Ok(())
    }
}

static KEYS: OnceLock<Option<PrimaryKeys>> = OnceLock::new();

/// Checks every version from now on against `keys` (none: versions are not checked).
pub fn install(keys: Option<PrimaryKeys>) {
    let _ = KEYS.set(keys);
}

/// The keys in force, if any.
pub fn keys() -> Option<&'static PrimaryKeys> {
    KEYS.get().and_then(Option::as_ref)
}

/// `v`, as `server` sent it, if the keys in force (if any) accept it; else a verification
/// error (exit 5) that says what is wrong and that nothing was recorded.
pub fn check(v: &DocumentVersion, server: &str) -> Result<(), CliError> {
    match keys().map(|k| k.verify(v)) {
        None | Some(Ok(())) => Ok(()),
        Some(Err(problem)) => Err(CliError::Verification(refusal(v, server, problem))),
    }
}

/// The words of a refused version.
pub fn refusal(v: &DocumentVersion, server: &str, problem: &str) -> String {
    format!(
        "version {} of document {} (origin {:?}) from {server} {problem}: refused, nothing of it \
         was recorded or written",
        v.version, v.id, v.origin
    )
}

/// Where the keys are pinned: `$XDG_CONFIG_HOME/docfed/primary-keys.toml`.
pub fn pinned_path() -> Result<PathBuf, CliError> {
    Ok(crate::device::config_dir()?.join("primary-keys.toml"))
}

/// The keys to check versions with: `given` (`--primary-keys`, `DOCFED_PRIMARY_KEYS`), else
/// the pinned ones. Given keys other than the pinned ones are refused (as `client::choose_ca`
/// refuses another CA), unless `repin`: registering again is how a device moves to new keys.
pub fn choose(given: Option<&Path>, repin: bool) -> Result<Option<PrimaryKeys>, CliError> {
    let pinned = pinned_path()?;
    let given = given.map(PrimaryKeys::load).transpose()?;
    if !pinned.exists() {
        return Ok(given);
    }
    let on_file = PrimaryKeys::load(&pinned)?;
    match given {
        None => Ok(Some(on_file)),
        Some(g) if repin || g == on_file => Ok(Some(g)),
        Some(_) => Err(CliError::Local(format!(
            "--primary-keys lists other keys than the primaries' keys this device pinned when \
             it registered ({}); to trust the new ones, register again with them (`docfed \
             --primary-keys FILE --server URL register`)",
            pinned.display()
        ))),
    }
}

/// Pins `keys` for later commands (beside this device's registrations and CA).
pub fn pin(keys: &PrimaryKeys) -> Result<(), CliError> {
    let pinned = pinned_path()?;
    crate::client::write_pinned(&pinned, keys.to_toml().as_bytes()).map_err(|e| {
        CliError::Local(format!(
            "cannot pin the primaries' keys in {}: {e}",
            pinned.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use docfed_shared::keys::NodeKey;

    fn version(origin: &str, deleted: bool) -> DocumentVersion {
        DocumentVersion {
            id: docfed_shared::DocId::new(),
            version: 1,
            origin: origin.into(),
            title: "t".into(),
            description: String::new(),
            tags: vec![],
            filename: "f.txt".into(),
            source: String::new(),
            scope: docfed_shared::Scope::Global,
            content_type: "text/plain".into(),
            md5: "0123456789abcdef0123456789abcdef".parse().unwrap(),
            size: 1,
            deleted,
            created_at: docfed_shared::wire::Timestamp(1),
            author: String::new(),
            sha256: Some(
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                    .parse()
                    .unwrap(),
            ),
            signature: None,
            lazy: false,
        }
    }

    /// A topology file's primaries are read (regional keys and unknown tables ignored), the
    /// pinned copy reads back the same, and only their signatures of the exact version pass.
    #[test]
    fn only_a_pinned_primarys_signature_of_the_version_passes() {
        let (p, r, other) = (
            NodeKey::generate(),
            NodeKey::generate(),
            NodeKey::generate(),
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("topology.toml");
        std::fs::write(
            &file,
            format!(
                "amqp_url = \"amqp://user:secret@broker\"\n[tls]\nca = \"ca.pem\"\n\
                 [[node]]\nid = \"p-a\"\ntier = \"primary\"\nhttp = \"127.0.0.1:1\"\npublic_key = \"{}\"\n\
                 [[node]]\nid = \"r-a\"\ntier = \"regional\"\nregion = \"eu\"\nhttp = \"127.0.0.1:2\"\n\
                 parents = [\"p-a\"]\npublic_key = \"{}\"\n",
                p.public().to_hex(),
                r.public().to_hex()
            ),
        )
        .unwrap();
        let keys = PrimaryKeys::load(&file).unwrap();
        assert_eq!(keys.0.len(), 1);
        let copy = dir.path().join("copy.toml");
        std::fs::write(&copy, keys.to_toml()).unwrap();
        assert_eq!(PrimaryKeys::load(&copy).unwrap(), keys);

        let mut v = version("p-a", false);
        assert_eq!(keys.verify(&v), Err("is not signed"));
        v.signature = Some(p.sign(&v.signing_input()));
        assert_eq!(keys.verify(&v), Ok(()));
        let mut altered = v.clone();
        altered.deleted = true;
        assert!(
            keys.verify(&altered).is_err(),
            "a tombstone made of a version"
        );
        let mut by_other = version("p-a", true);
        by_other.signature = Some(other.sign(&by_other.signing_input()));
        assert!(keys.verify(&by_other).is_err());
        let mut by_regional = version("r-a", true);
        by_regional.signature = Some(r.sign(&by_regional.signing_input()));
        assert!(keys.verify(&by_regional).is_err(), "only primaries sign");
        let mut no_sha = version("p-a", false);
        no_sha.sha256 = None;
        no_sha.signature = Some(p.sign(&no_sha.signing_input()));
        assert_eq!(keys.verify(&no_sha), Err("has no SHA-256 of its content"));

        let none = dir.path().join("none.toml");
        std::fs::write(&none, "[[node]]\nid = \"x\"\ntier = \"primary\"\n").unwrap();
        assert!(PrimaryKeys::load(&none).is_err());
    }
}
