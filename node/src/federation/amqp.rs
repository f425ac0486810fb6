//! Connecting to RabbitMQ, declaring docfed's queues and closing cleanly: the steps every broker
//! connection takes. The loop that connects, reconnects and backs off is the node's `federation::session`.

use std::path::Path;
use std::time::Duration;

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
const FRAME_MAX: FrameSize = 16 * 1024;

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

/// Declares queue `name` (returned as declared: its message count), the fanout exchange of the same name and the binding between them.
///
/// docfed publishes to these exchanges and never to the default one. A broker grants write
/// permission on exchanges, not queues, and write on the default exchange reaches every queue;
/// with an exchange per queue, a broker can let a node fill exactly the queues it should
/// (`docfed-topology up`'s broker: ARCHITECTURE §2.11).
pub async fn declare_bound(
    ch: &lapin::Channel,
    name: &str,
    queue: lapin::options::QueueDeclareOptions,
    args: lapin::types::FieldTable,
) -> lapin::Result<lapin::Queue> {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
    use lapin::types::FieldTable;
    let declared = ch.queue_declare(name.into(), queue, args).await?;
    ch.exchange_declare(
        name.into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: queue.durable,
            auto_delete: queue.auto_delete,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        name.into(),
        name.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(declared)
}

/// A durable queue with its exchange ([`declare_bound`]): inboxes and dead-letter queues.
pub async fn declare_durable(ch: &lapin::Channel, name: &str) -> lapin::Result<()> {
    declare_bound(
        ch,
        name,
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        lapin::types::FieldTable::default(),
    )
    .await
    .map(drop)
}

/// Longest a connection close may take: a broker that died never answers it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Closes a channel before its connection, on a clean stop, giving up after [`CLOSE_TIMEOUT`].
///
/// Dropping a lapin channel only *queues* its close. A connection close sent meanwhile overtakes
/// it, marks every channel `Closing`, and the queued channel close then fails ("invalid channel
/// state: Closing (channel.close)"), which lapin logs as an `ERROR` connection error: a clean
/// stop would print errors. Closed here first, the channel has nothing left to do when dropped.
pub async fn close_channel(ch: &lapin::Channel, why: &str) {
    match tokio::time::timeout(CLOSE_TIMEOUT, ch.close(200, why.into())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, why, "closing a broker channel failed"),
        Err(_) => tracing::debug!(why, "closing a broker channel timed out"),
    }
}

/// Cancels a consumer (no more deliveries) before its channel is closed, on a clean stop,
/// giving up after [`CLOSE_TIMEOUT`].
pub async fn cancel_consumer(ch: &lapin::Channel, consumer: &lapin::Consumer) {
    let cancel = ch.basic_cancel(
        consumer.tag(),
        lapin::options::BasicCancelOptions::default(),
    );
    match tokio::time::timeout(CLOSE_TIMEOUT, cancel).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "cancelling a consumer failed"),
        Err(_) => tracing::debug!("cancelling a consumer timed out"),
    }
}

/// Closes `conn`, giving up after [`CLOSE_TIMEOUT`] (the connection is then simply dropped).
/// On a clean stop, close its channels first ([`close_channel`]).
pub async fn close(conn: &lapin::Connection, why: &str) {
    if tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, why.into()))
        .await
        .is_err()
    {
        tracing::debug!(why, "closing the broker connection timed out; dropping it");
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
