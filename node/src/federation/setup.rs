//! Joining a federation at start-up: the topology (validated, its paths made relative to its
//! file), this node's entry in it, the routes to peers that the flags override, every broker URL
//! parsed, then the node's key and the broker's TLS set-up. Problems stop the start with a
//! [`ConfigError`] that names the file or flag at fault.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use docfed_shared::Topology;

use super::Federation;
use crate::config::{ConfigError, NodeTls, Settings};

impl Federation {
    /// The federation `--topology` and `--id` name, or `None` for a standalone node. Every
    /// broker this node may connect to is parsed now, so a bad URL stops the start with a clear
    /// error instead of a relay retrying for ever.
    pub(crate) fn from_settings(s: &Settings) -> Result<Option<Federation>, ConfigError> {
        let (Some(path), Some(id)) = (&s.topology, &s.id) else {
            return Ok(None);
        };
        let mut topo =
            Topology::load_validated(path).map_err(|e| ConfigError::Topology(e.to_string()))?;
        let base = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_owned))
            .unwrap_or_default();
        for source in &mut topo.sources {
            source.resolve_path(&base);
        }
        if let Some(tls) = topo.tls.as_mut() {
            tls.resolve_paths(&base);
        }
        let me = topo
            .node(id)
            .cloned()
            .ok_or_else(|| ConfigError::UnknownNode {
                id: id.clone(),
                path: path.clone(),
            })?;
        let http_routes = parse_routes(&s.peer_http, "--peer-http", &topo, |a| {
            a.parse::<SocketAddr>()
                .map(|_| ())
                .map_err(|e| format!("not HOST:PORT: {e}"))
        })?
        .into_iter()
        .map(|(id, addr)| {
            let advertised = topo.url(topo.node(&id).expect("validated"));
            let scheme = if topo.tls.is_some() { "https" } else { "http" };
            (advertised, format!("{scheme}://{addr}"))
        })
        .collect();
        let amqp_routes = parse_routes(&s.peer_amqp, "--peer-amqp", &topo, |u| {
            if u.starts_with("amqp://") || u.starts_with("amqps://") {
                Ok(())
            } else {
                Err("not an amqp:// URL".to_owned())
            }
        })?;
        let federation = Federation {
            topology: Arc::new(topo),
            me,
            amqp_override: s.amqp_url.clone(),
            stream_through: !s.no_stream_through,
            message_batch: usize::from(
                s.message_batch
                    .unwrap_or(crate::config::DEFAULT_MESSAGE_BATCH),
            ),
            http_routes,
            amqp_routes,
            planted_bug: s.plant_bug,
            key: None,
            broker_tls: None,
            tls_migration: s.tls_migration,
            content_keys: None,
        };
        for n in &federation.topology.nodes {
            let url = federation.amqp_url_of(&n.id);
            super::amqp::broker_uri(&url).map_err(|reason| ConfigError::BrokerUrl {
                url: docfed_shared::secrets::redact_url(&url),
                reason,
            })?;
        }
        Ok(Some(federation))
    }

    /// Loads this node's private key (`key_file`, default `DATA_DIR/node.key`) for a topology
    /// that lists public keys, and checks it is the one listed for this node.
    pub(crate) fn load_key(
        &mut self,
        key_file: Option<&Path>,
        data_dir: &Path,
    ) -> Result<(), ConfigError> {
        let path = key_file.map_or_else(
            || data_dir.join(docfed_shared::keys::KEY_FILE),
            Path::to_owned,
        );
        let key = docfed_shared::keys::NodeKey::load(&path)
            .map_err(|e| ConfigError::Key(e.to_string()))?;
        if self.topology.public_key(self.id()) != Some(key.public()) {
            return Err(ConfigError::Key(format!(
                "the key in {} is not the one the topology lists for `{}` (public key {})",
                path.display(),
                self.id(),
                key.public().to_hex()
            )));
        }
        self.key = Some(Arc::new(key));
        Ok(())
    }

    /// The node's certificate and the federation CA and CRL (the node's own, as it reloads it),
    /// for `amqps://` brokers.
    pub(crate) fn attach_broker_tls(&mut self, tls: &NodeTls) -> Result<(), ConfigError> {
        let trust = tls
            .trust
            .as_ref()
            .expect("node_tls trusts the federation CA in a federation");
        self.broker_tls = Some(
            super::amqp::BrokerTls::new(trust, &tls.cert, &tls.key).map_err(ConfigError::Tls)?,
        );
        Ok(())
    }
}

/// Parses `ID=VALUE` overrides of how peers are reached; every ID must be a peer in the topology.
fn parse_routes(
    items: &[String],
    flag: &str,
    topo: &Topology,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<HashMap<String, String>, ConfigError> {
    let mut out = HashMap::new();
    for item in items.iter().filter(|i| !i.trim().is_empty()) {
        let bad = |why: String| ConfigError::Route(format!("{flag} {item:?}: {why}"));
        let (id, value) = item
            .split_once('=')
            .ok_or_else(|| bad("expected ID=VALUE".to_owned()))?;
        let (id, value) = (id.trim(), value.trim());
        if topo.node(id).is_none() {
            return Err(bad(format!("no node {id:?} in the topology")));
        }
        check(value).map_err(bad)?;
        out.insert(id.to_owned(), value.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_routes_name_known_peers_and_valid_addresses() {
        let topo =
            Topology::parse(include_str!("../../../topology/demo.toml")).expect("demo topology");
        let ok = |v: &str| -> Result<(), String> {
            v.parse::<SocketAddr>()
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let routes = parse_routes(
            &[
                "mid-1=127.0.0.1:9001".into(),
                " eu = 127.0.0.1:9002 ".into(),
                String::new(),
            ],
            "--peer-http",
            &topo,
            ok,
        )
        .unwrap();
        assert_eq!(routes["mid-1"], "127.0.0.1:9001");
        assert_eq!(routes["eu"], "127.0.0.1:9002");
        for (bad, why) in [
            ("nobody=127.0.0.1:1", "no node"),
            ("mid-1", "expected ID=VALUE"),
            ("mid-1=not-an-address", "mid-1=not-an-address"),
        ] {
            let e = parse_routes(&[bad.into()], "--peer-http", &topo, ok)
                .unwrap_err()
                .to_string();
            assert!(e.contains("--peer-http") && e.contains(why), "{bad}: {e}");
        }
    }
}
