//! Connecting to RabbitMQ, declaring docfed's queues and closing cleanly: the steps every broker
//! connection takes. The URL and TLS set-up of one connection are `docfed-broker`'s, re-exported
//! here; the loop that connects, reconnects and backs off is `federation::session`.

use std::time::Duration;

pub use docfed_broker::{broker_uri, open, BrokerTls, FRAME_MAX};
use docfed_shared::topology::{QueueArgument, QueueLimits};

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

/// A durable queue with its exchange ([`declare_bound`]): an inbox or a dead-letter queue,
/// bounded by the federation's `[queues]` limits. Returns the channel to go on with.
///
/// A queue declared by an older docfed (without the bounds) or under other bounds cannot be
/// declared again with different arguments: the broker refuses (406) and closes the channel.
/// Such a queue is used as it is, on a new channel, with a warning that says how to bound it,
/// rather than stopping the node: its messages are still to be delivered.
pub async fn declare_durable(
    conn: &lapin::Connection,
    ch: lapin::Channel,
    name: &str,
    dead_letters: bool,
    limits: &QueueLimits,
) -> lapin::Result<lapin::Channel> {
    let durable = lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    match declare_bound(&ch, name, durable, queue_arguments(limits, dead_letters)).await {
        Ok(_) => Ok(ch),
        Err(e) if is_precondition_failed(&e) => {
            tracing::warn!(
                queue = name,
                "queue exists with other arguments than this federation's [queues] bounds \
                 (declared by an older docfed?); using it as it is. To bound it, apply a \
                 policy (`rabbitmqctl set_policy`, max-length / overflow reject-publish) or \
                 delete the queue once it is empty"
            );
            let ch = conn.create_channel().await?;
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                ..durable
            };
            declare_bound(&ch, name, passive, lapin::types::FieldTable::default()).await?;
            Ok(ch)
        }
        Err(e) => Err(e),
    }
}

/// The arguments of a bounded inbox or dead-letter queue ([`QueueLimits::arguments`]).
pub fn queue_arguments(limits: &QueueLimits, dead_letters: bool) -> lapin::types::FieldTable {
    use lapin::types::AMQPValue;
    let mut args = lapin::types::FieldTable::default();
    for (key, value) in limits.arguments(dead_letters) {
        let value = match value {
            QueueArgument::Int(n) => AMQPValue::LongLongInt(n),
            QueueArgument::Text(t) => AMQPValue::LongString(t.into()),
        };
        args.insert(key.into(), value);
    }
    args
}

/// Whether the broker refused a declaration because the queue exists with other properties
/// (406 PRECONDITION_FAILED).
fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(
        e.kind(),
        lapin::ErrorKind::ProtocolError(p)
            if matches!(
                p.kind(),
                lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::PRECONDITIONFAILED)
            )
    )
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
