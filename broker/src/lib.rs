//! Connecting to a docfed federation's RabbitMQ: the broker URL as lapin takes it (frame size
//! capped) and, for `amqps://`, the TLS identity a node presents and the CA it trusts.
//!
//! A crate of its own because the node and the endurance harness (which connects as the broker's
//! administrator to inject faults) both connect this way, and lapin has no place in
//! `docfed-shared`.

use std::path::Path;
use std::sync::Arc;

use docfed_http::tls::{Expect, Trust};
use lapin::tcp::{AMQPUriTcpExt, OwnedTLSConfig};
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
/// Public roots are never trusted for a broker. The broker must present the broker's
/// certificate (`urn:docfed:broker`), not revoked by the federation's CRL: a node's
/// certificate names its own host too, and a node posing as the broker could confirm
/// publishes and drop them.
#[derive(Clone)]
pub struct BrokerTls(Arc<rustls::ClientConfig>);

impl std::fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The identity holds the private key.
        f.write_str("BrokerTls(..)")
    }
}

impl BrokerTls {
    /// Presents `cert`/`key` and trusts what `trust` trusts (its CRL as it is reloaded).
    pub fn new(trust: &Arc<Trust>, cert: &Path, key: &Path) -> Result<BrokerTls, String> {
        let mut config = trust
            .client_config_for(Some((cert, key)), Expect::Broker)
            .map_err(|e| e.to_string())?;
        // The configuration offers HTTP/1.1; AMQP is not that.
        config.alpn_protocols.clear();
        Ok(BrokerTls(Arc::new(config)))
    }

    /// Reads the certificate, key, CA and revocation list (PEM). Fails with the file named.
    /// The list is read once: a long-lived client follows it with [`BrokerTls::new`] and
    /// [`Trust::watch_crl`].
    pub fn load(
        cert: &Path,
        key: &Path,
        ca: &Path,
        crl: Option<&Path>,
    ) -> Result<BrokerTls, String> {
        let trust = Trust::load(ca, crl).map_err(|e| e.to_string())?;
        BrokerTls::new(&trust, cert, key)
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
            // lapin's own TLS set-up takes a CA bundle only; our configuration checks the CRL
            // and the broker's role, so the TLS layer is put on a plain TCP stream here.
            let connector = tcp_stream::RustlsConnector::from(tls.0.clone());
            Connection::connector(
                uri,
                runtime,
                async move |uri: AMQPUri, runtime| {
                    let mut plain = uri.clone();
                    plain.scheme = AMQPScheme::AMQP;
                    let stream = plain
                        .connect_with_config_async(OwnedTLSConfig::default().as_ref(), &runtime)
                        .await
                        .map_err(io_error)?;
                    stream
                        .into_rustls(&connector, &uri.authority.host)
                        .await
                        .map_err(io_error)
                },
                props,
            )
            .await
        }
        (AMQPScheme::AMQPS, None) => Err(io_error(std::io::Error::other(
            "an amqps:// broker needs the federation's [tls] (a node certificate and the CA)",
        ))),
    }
}

fn io_error(e: std::io::Error) -> lapin::Error {
    lapin::ErrorKind::IOError(Arc::new(e)).into()
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
