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
//!
//! The lease's connection is made, and made again after a failure, by the broker session loop
//! the inbox and the relays use too (`federation::session`, with [`HEARTBEAT`]); a source's
//! session contends for the lease on it ([`Lease::contend`]), runs the source while it holds
//! the lease, and gives it back.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use tokio_util::sync::CancellationToken;

use crate::federation::amqp;
use crate::supervisor::Task;

/// Heartbeat of lease connections, in seconds: a holder cut off from the broker is replaced
/// within about two intervals.
pub const HEARTBEAT: u16 = 3;

/// The queue whose single active consumer runs `source`. Named after the first primary so that
/// two federations on one broker never share a lease.
pub fn queue_name(first_primary: &str, source: &str) -> String {
    format!("docfed.source.{first_primary}.{source}")
}

/// A held lease: the token delivered to this consumer proves it. It ends with the consumer's
/// channel or connection.
pub struct Lease {
    channel: lapin::Channel,
    consumer: lapin::Consumer,
}

/// Why contending for a lease failed: its connection must be dropped and made again.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error("the broker ended the consumer")]
    Ended,
}

impl Lease {
    /// Waits until this node holds the lease of `queue` through `conn` (made with
    /// [`HEARTBEAT`]); `None` when `cancel` fires first.
    pub async fn contend(
        conn: &Connection,
        queue: &str,
        who: &str,
        cancel: &CancellationToken,
        task: &Task,
    ) -> Result<Option<Lease>, LeaseError> {
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
                return Ok(None);
            }
        };
        match delivery {
            Some(Ok(_token)) => Ok(Some(Lease { channel, consumer })),
            Some(Err(e)) => Err(e.into()),
            None => Err(LeaseError::Ended),
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

    /// Gives the lease back on a clean stop: the broker hands the token to the other primary
    /// once the channel is closed (before its connection is).
    pub async fn release(self) {
        amqp::cancel_consumer(&self.channel, &self.consumer).await;
        amqp::close_channel(&self.channel, "source released").await;
    }
}

/// How long a lost lease waits before contending again, so a flapping link does not make the
/// source bounce between the primaries.
pub const RECONTEND_AFTER: Duration = Duration::from_secs(1);
