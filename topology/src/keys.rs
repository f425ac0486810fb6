//! Node keys for a topology: `docfed-topology keys FILE --out DIR`, and `docfed-topology up`
//! giving the nodes of its federation keys of their own.
//!
//! A key pair per node: the private key goes to the node (its data directory's `node.key`, or
//! `--key-file`), the public key into the topology file every node reads. With keys in the
//! topology, every message between nodes is signed by its sender and checked by its receiver.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use docfed_shared::keys::NodeKey;
use docfed_shared::Topology;

/// Gives every node of `topology` its key at `key_path(id)`: the one there, or a new one if the
/// topology lists no keys yet. Returns the topology with every node's public key. A topology
/// that already lists keys needs every private key to be there and to match.
pub fn provision(topology: &Topology, key_path: impl Fn(&str) -> PathBuf) -> Result<Topology> {
    let mut keyed = topology.clone();
    let signed = topology.is_signed();
    for node in &mut keyed.nodes {
        let path = key_path(&node.id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let key = if signed {
            if !path.exists() {
                bail!(
                    "the topology lists a public key for `{}` but its private key is not at {}",
                    node.id,
                    path.display()
                );
            }
            NodeKey::load(&path)?
        } else {
            NodeKey::load_or_generate(&path)?
        };
        let public = key.public().to_hex();
        if let Some(listed) = &node.public_key {
            if *listed != public {
                bail!(
                    "{} is not the key the topology lists for `{}`",
                    path.display(),
                    node.id
                );
            }
        }
        node.public_key = Some(public);
    }
    Ok(keyed)
}

/// Writes `topology` to `path` (atomically: a temp file renamed into place).
pub fn write_topology(topology: &Topology, path: &Path) -> Result<()> {
    let text = topology
        .to_toml()
        .context("cannot serialise the topology")?;
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioning_is_idempotent_and_checks_listed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let topo = Topology::parse(&crate::demo::toml(
            "k",
            &[7101, 7102, 7103, 7104, 7105, 7106, 7107],
            None,
            |_| None,
        ))
        .unwrap();
        assert!(!topo.is_signed());
        let at = |id: &str| dir.path().join(format!("{id}.key"));
        let keyed = provision(&topo, at).unwrap();
        keyed.validate().unwrap();
        assert!(keyed.is_signed());
        // Again: the same keys.
        assert_eq!(provision(&topo, at).unwrap(), keyed);
        assert_eq!(provision(&keyed, at).unwrap(), keyed);
        // A listed key whose private half is missing or different is an error.
        std::fs::remove_file(at("k-na")).unwrap();
        let e = provision(&keyed, at).unwrap_err().to_string();
        assert!(e.contains("k-na"), "{e}");
        NodeKey::generate().save(&at("k-na")).unwrap();
        let e = provision(&keyed, at).unwrap_err().to_string();
        assert!(e.contains("not the key"), "{e}");
    }
}
