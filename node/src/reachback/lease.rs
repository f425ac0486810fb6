//! Which primary runs a source: a lease held through a RabbitMQ queue with a single active
//! consumer (ARCHITECTURE.md §2.9), not an election of our own.
//!
//! Every primary consumes `docfed.source.<first primary>.<source>` (non-durable, auto-deleted,
//! `x-single-active-consumer`) with a prefetch of one. The queue holds a token message: the broker
//! delivers it only to the active consumer, which keeps it unacknowledged for as long as it runs
//! the source. When that consumer's connection ends (the process died: at once; the machine or
//! the network: after missed heartbeats, [`HEARTBEAT`]) the broker requeues the token and hands
//! it, and the lease, to the next consumer. Each contender that finds no ready token publishes
//! one; `x-max-length = 1` keeps at most one waiting, and whatever waits goes only to the active
//! consumer, so a second token never makes a second holder.
//!
//! The lease lives on the broker of the topology's first primary, which both primaries reach. A
//! holder that loses its connection stops the source before anything else; the other may already
//! have it. For the overlap of a partition (up to two heartbeat intervals) both may run the
//! source: items map to the same documents (`sources::item_id`) and an unchanged item makes no
//! version, so the worst case is a concurrent version of one item, which `wire::supersedes` resolves
//! like any other (§3.2).

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use crate::federation::amqp;
use crate::supervisor::{Backoff, Retry, Task};

/// Heartbeat of lease connections, in seconds: a holder cut off from the broker is replaced
/// within about two intervals.
const HEARTBEAT: u16 = 3;

/// The queue whose single active consumer runs `source`. Named after the first primary so that
/// two federations on one broker never share a lease.
pub fn queue_name(first_primary: &str, source: &str) -> String {
    format!("docfed.source.{first_primary}.{source}")
}

/// A held lease: the connection whose token delivery proves it. Losing it ends the lease.
pub struct Lease {
    conn: Connection,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
}

impl Lease {
    /// Waits until this node holds the lease of `queue` at `broker`, reconnecting after broker
    /// failures; `None` when `cancel` fires first.
    pub async fn acquire(
        broker: &str,
        tls: Option<&amqp::BrokerTls>,
        queue: &str,
        who: &str,
        cancel: &CancellationToken,
        task: &Task,
    ) -> Option<Lease> {
        let mut retry = Retry::new(Backoff::BROKER);
        loop {
            let started = std::time::Instant::now();
            match Self::try_acquire(broker, tls, queue, who, cancel, task).await {
                Ok(Some(lease)) => return Some(lease),
                Ok(None) => return None,
                Err(e) => {
                    task.retrying(&format_args!("source lease: {e}"));
                    tracing::warn!(queue, error = %e, "source lease lost its broker; retrying");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(retry.after(started.elapsed())) => {}
                () = cancel.cancelled() => return None,
            }
        }
    }

    async fn try_acquire(
        broker: &str,
        tls: Option<&amqp::BrokerTls>,
        queue: &str,
        who: &str,
        cancel: &CancellationToken,
        task: &Task,
    ) -> anyhow::Result<Option<Lease>> {
        let mut uri = amqp::broker_uri(broker).expect("broker URLs are checked at start");
        uri.query.heartbeat.get_or_insert(HEARTBEAT);
        let props = ConnectionProperties::default().with_connection_name(who.into());
        let conn = tokio::select! {
            c = amqp::open(uri, props, tls) => c?,
            () = cancel.cancelled() => return Ok(None),
        };
        let channel = conn.create_channel().await?;
        channel.basic_qos(1, BasicQosOptions::default()).await?;
        let mut args = FieldTable::default();
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        args.insert("x-max-length".into(), AMQPValue::LongInt(1));
        let options = QueueDeclareOptions {
            durable: false,
            auto_delete: true,
            ..Default::default()
        };
        let declared = amqp::declare_bound(&channel, queue, options, args).await?;
        if declared.message_count() == 0 {
            // Published before consuming, so that an auto-deleted queue is never left empty.
            channel
                .basic_publish(
                    // The queue's own exchange (amqp::declare_bound).
                    queue.into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    b"lease",
                    BasicProperties::default(),
                )
                .await?;
        }
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                who.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        task.running();
        tracing::info!(queue, "waiting for the source lease");
        let delivery = tokio::select! {
            d = consumer.next() => d,
            () = cancel.cancelled() => {
                amqp::cancel_consumer(&channel, &consumer).await;
                amqp::close_channel(&channel, "node stopping").await;
                amqp::close(&conn, "node stopping").await;
                return Ok(None);
            }
        };
        match delivery {
            Some(Ok(_token)) => Ok(Some(Lease {
                conn,
                channel,
                consumer,
            })),
            Some(Err(e)) => Err(e.into()),
            None => anyhow::bail!("the broker ended the consumer"),
        }
    }

    /// Completes when the lease is lost (the connection or the consumer ended). Deliveries of
    /// extra tokens while held stay unacknowledged, as the first one does.
    pub async fn lost(&mut self) -> String {
        loop {
            match self.consumer.next().await {
                Some(Ok(_extra_token)) => continue,
                Some(Err(e)) => return e.to_string(),
                None => return "the broker ended the lease's consumer".to_owned(),
            }
        }
    }

    /// Gives the lease back on a clean stop: the broker hands the token to the other primary.
    pub async fn release(self) {
        amqp::cancel_consumer(&self.channel, &self.consumer).await;
        amqp::close_channel(&self.channel, "source released").await;
        amqp::close(&self.conn, "source released").await;
    }
}

/// How long a lost lease waits before contending again, so a flapping link does not make the
/// source bounce between the primaries.
pub const RECONTEND_AFTER: Duration = Duration::from_secs(1);
