//! Connecting to a docfed federation's RabbitMQ: the broker URL as lapin takes it (frame size
//! capped) and, for `amqps://`, the TLS identity a node presents and the CA it trusts.
//!
//! A crate of its own because the node and the endurance harness (which connects as the broker's
//! administrator to inject faults) both connect this way, and lapin has no place in
//! `docfed-shared`.

use std::path::Path;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FrameSize;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};

/// The largest AMQP frame a node negotiates unless its broker URL sets `frame_max`.
///
/// lapin keeps a send and a receive buffer of 32 frames per connection. When the client proposes
/// no size it allocates them for the minimum frame and, once the broker's size is negotiated,
/// grows them by writing zeros: at RabbitMQ's default (128 KiB) 8 MiB per connection become
/// resident, and a node owns one connection per relay target besides its inbox (56 of an idle
/// regional node's 69 MiB in the demo federation). With a proposed size the buffers are
/// allocated once at their final size (1 MiB per connection here) and only touched where
/// messages pass. docfed's messages are a few kilobytes; a larger one travels as several body
/// frames, which lapin and the broker reassemble.
pub const FRAME_MAX: FrameSize = 16 * 1024;

/// The broker URL as lapin connects to it: `frame_max` capped at [`FRAME_MAX`] unless the
/// operator chose a value in the URL.
pub fn broker_uri(url: &str) -> Result<AMQPUri, String> {
    let mut uri: AMQPUri = url.parse()?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Ok(uri)
}

/// What a node presents to, and trusts in, a broker reached by `amqps://`: its own certificate
/// (the broker logs it in as the certificate's common name, the node id, with the EXTERNAL
/// mechanism) and the federation CA, the only authority its broker certificate may chain to.
/// Public roots are never trusted for a broker.
#[derive(Clone)]
pub struct BrokerTls(OwnedTLSConfig);

impl std::fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The identity holds the private key.
        f.write_str("BrokerTls(..)")
    }
}

impl BrokerTls {
    /// Reads the certificate, key and CA (PEM). Fails with the file named.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<BrokerTls, String> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let ca_pem = String::from_utf8(read(ca)?)
            .map_err(|_| format!("{} is not a PEM file", ca.display()))?;
        Ok(BrokerTls(OwnedTLSConfig {
            identity: Some(OwnedIdentity::PKCS8 {
                pem: read(cert)?,
                key: read(key)?,
            }),
            cert_chain: Some(ca_pem),
        }))
    }
}

/// Opens one connection to `uri`: in clear for `amqp://`, and for `amqps://` over TLS with
/// `tls` (without it, an `amqps://` broker is refused rather than trusted blindly).
pub async fn open(
    uri: AMQPUri,
    props: ConnectionProperties,
    tls: Option<&BrokerTls>,
) -> lapin::Result<Connection> {
    match (uri.scheme.clone(), tls) {
        (AMQPScheme::AMQP, _) => Connection::connect_uri(uri, props).await,
        (AMQPScheme::AMQPS, Some(tls)) => {
            // rustls-connector installs a process provider only when none is; install ours
            // (ring) first so every TLS client in the process agrees.
            docfed_http::tls::install_provider();
            let runtime = lapin::runtime::default_runtime()?;
            Connection::connect_uri_with_config(uri, props, tls.0.clone(), runtime).await
        }
        (AMQPScheme::AMQPS, None) => Err(lapin::ErrorKind::IOError(std::sync::Arc::new(
            std::io::Error::other(
                "an amqps:// broker needs the federation's [tls] (a node certificate and the CA)",
            ),
        ))
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_capped_unless_the_url_chooses() {
        let uri = broker_uri("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(uri.query.frame_max, Some(FRAME_MAX));
        let uri = broker_uri("amqp://127.0.0.1:5672/%2f?frame_max=131072&heartbeat=10").unwrap();
        assert_eq!(
            (uri.query.frame_max, uri.query.heartbeat),
            (Some(131072), Some(10))
        );
        assert!(broker_uri("amqp://127.0.0.1:notaport/%2f").is_err());
    }
}
