//! Connecting to RabbitMQ, declaring docfed's queues and closing cleanly: the steps every broker
//! connection takes. The URL and TLS set-up of one connection are `docfed-broker`'s, re-exported
//! here; the loop that connects, reconnects and backs off is `federation::session`.

use std::time::Duration;

pub use docfed_broker::{broker_uri, open, BrokerTls, FRAME_MAX};

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
