//! Whether and how the node serves HTTPS, decided once at start-up from the topology's `[tls]`
//! and the flags, with the certificate checked now rather than at the first handshake.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{ConfigError, NodeTls};

/// Secure by default (ARCHITECTURE.md §2.10): a federated node uses its topology's `[tls]`, or
/// runs in clear only when the topology or `--insecure` says so; a standalone node serves HTTPS
/// with `--tls-cert`, and plain HTTP on loopback or with `--insecure`. Never a silent fallback.
pub(super) fn node_tls(
    federation: Option<&crate::federation::Federation>,
    files: Option<(PathBuf, PathBuf)>,
    insecure: bool,
    http: SocketAddr,
) -> Result<Option<NodeTls>, ConfigError> {
    let Some(fed) = federation else {
        return match files {
            Some((cert, key)) => Ok(Some(NodeTls {
                cert,
                key,
                trust: None,
            })),
            None if insecure || http.ip().is_loopback() => Ok(None),
            None => Err(ConfigError::Tls(format!(
                "{http} is not a loopback address: serve HTTPS with --tls-cert and --tls-key, \
                 or pass --insecure to serve plain HTTP there"
            ))),
        };
    };
    let Some(spec) = &fed.topology.tls else {
        if fed.topology.insecure || insecure {
            return Ok(None);
        }
        return Err(ConfigError::Tls(
            "the topology has no [tls] table, so links would be in clear: run `docfed-topology \
             certs FILE --out DIR` and use the topology it writes, or say `insecure = true` in \
             the topology (or --insecure) to run without TLS"
                .to_owned(),
        ));
    };
    if insecure {
        return Err(ConfigError::Tls(
            "--insecure contradicts the topology's [tls] table: every peer speaks HTTPS to this \
             node"
                .to_owned(),
        ));
    }
    let (cert, key) = files.unwrap_or_else(|| spec.node_files(fed.id()));
    let trust = docfed_http::tls::Trust::load(&spec.ca, spec.crl.as_deref())
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
    // Fails now, with the file named, rather than at the first handshake.
    trust
        .server_config(&cert, &key, true)
        .map_err(|e| ConfigError::Tls(e.to_string()))?;
    let der = &docfed_http::tls::load_certs(&cert, "certificate")
        .map_err(|e| ConfigError::Tls(e.to_string()))?[0];
    match docfed_http::tls::node_id_of(der) {
        Some(id) if id == fed.id() => {}
        other => {
            return Err(ConfigError::Tls(format!(
                "{} names node {:?}, not `{}`: peers would refuse it",
                cert.display(),
                other.unwrap_or_default(),
                fed.id()
            )))
        }
    }
    Ok(Some(NodeTls {
        cert,
        key,
        trust: Some(trust),
    }))
}
