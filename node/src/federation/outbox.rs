//! The transactional outbox and its relay.
//!
//! A state change and the messages announcing it are written in one SQLite transaction
//! ([`enqueue`]). A relay task per target node then publishes that node's rows to its inbox on
//! its broker — persistent messages, publisher confirms awaited per batch — and deletes a row
//! only after the broker confirmed it. Crashes, broker restarts and network cuts can therefore
//! delay a message or duplicate it (receivers are idempotent) but never lose it.

use std::sync::Arc;
use std::time::Duration;

use docfed_shared::messages::{
    join_batch, signing_input, Envelope, BATCH_CONTENT_TYPE, MAX_BATCH_BYTES, SIGNATURE_HEADER,
};
use docfed_shared::topology::inbox_queue;
use docfed_shared::wire::Timestamp;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use sqlx::SqliteConnection;
use tokio_util::sync::CancellationToken;

use super::amqp;
use super::session::{self, BrokerSession, Dial, End};
use crate::db::messages::{self, Queued};
use crate::metrics::Metrics;
use crate::supervisor::Task;
use crate::Node;

/// Rows published per confirm round trip: waiting for every confirm costs ~6x throughput.
const BATCH: i64 = 256;

/// Queues `env` for each of `targets`, in one statement.
pub async fn enqueue_to_all(
    conn: &mut SqliteConnection,
    targets: &[String],
    env: &Envelope,
) -> Result<(), sqlx::Error> {
    let payload = env.to_bytes();
    let rows: Vec<(&String, &[u8])> = targets.iter().map(|t| (t, &payload[..])).collect();
    messages::enqueue_all(&mut *conn, &rows, false).await
}

pub async fn depth(node: &Node) -> Result<i64, sqlx::Error> {
    messages::depth(node.db.reader()).await
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("cannot find or declare {queue} on its broker ({error}); waiting for its node to declare it")]
    NoInbox { queue: String, error: lapin::Error },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Relays `target`'s outbox rows until cancelled.
pub async fn run_relay(node: Arc<Node>, target: String, cancel: CancellationToken, task: Task) {
    let fed = node
        .federation()
        .expect("relays run only in a federation")
        .clone();
    let dial = Dial {
        url: fed.amqp_url_of(&target),
        tls: fed.broker_tls.clone(),
        name: format!("{}->{}", fed.id(), target),
        heartbeat: None,
    };
    session::run(Relay { node, target }, dial, cancel, task).await;
}

/// One relay's session on its connection to its target's broker.
struct Relay {
    node: Arc<Node>,
    target: String,
}

impl BrokerSession for Relay {
    type Error = RelayError;

    async fn run(
        &mut self,
        conn: &lapin::Connection,
        cancel: &CancellationToken,
        task: &Task,
    ) -> Result<End, RelayError> {
        task.running();
        relay_on(&self.node, conn, &self.target, cancel)
            .await
            .map(|()| End::Stopped)
    }

    fn failed(&self, error: &RelayError, task: &Task) {
        task.retrying(error);
        tracing::warn!(target = %self.target, %error, "outbox relay failed; reconnecting");
    }

    fn reconnected(&mut self) {
        Metrics::inc(&self.node.metrics.broker_reconnects);
    }
}

/// Wakes the relays of the targets that have rows queued, after every commit that queued
/// some (`Node::wake_outbox`): one query per commit, instead of one per relay (a node has a
/// relay per other node of the federation, and most commits queue rows for one or two).
pub async fn dispatch(node: Arc<Node>, cancel: CancellationToken, task: Task) {
    let mut wake = node.outbox_wake.subscribe();
    task.running();
    let mut failing = false;
    loop {
        match messages::targets_waiting(node.db.reader()).await {
            Ok(targets) => {
                if std::mem::take(&mut failing) {
                    task.running();
                }
                for target in targets {
                    if let Some(relay) = node.relay_wakes.get(&target) {
                        relay.notify_one();
                    }
                }
            }
            // The relays still look every 2 s.
            Err(e) => {
                failing = true;
                task.error(&format_args!(
                    "cannot read which targets have messages: {e}"
                ));
                tracing::warn!(error = %e, "cannot read which outbox targets have messages");
            }
        }
        tokio::select! {
            changed = wake.changed() => if changed.is_err() { return },
            () = cancel.cancelled() => return,
        }
    }
}

async fn relay_on(
    node: &Node,
    conn: &lapin::Connection,
    target: &str,
    cancel: &CancellationToken,
) -> Result<(), RelayError> {
    let queue = inbox_queue(target);
    let provisioned = node
        .federation()
        .is_some_and(|f| f.broker_tls.is_some() && f.amqp_url_of(target).starts_with("amqps://"));
    let limits = node
        .federation()
        .map(|f| f.topology.queues)
        .unwrap_or_default();
    let ch = inbox_channel(conn, &queue, provisioned, &limits).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let wake = node.relay_wakes.get(target);
    let most_per_message = node.federation().map_or(1, |f| f.message_batch);
    let mut queued = true;
    loop {
        if !queued && !rows_queued(wake, cancel).await {
            // Before the caller closes the connection: see amqp::close_channel.
            amqp::close_channel(&ch, "shutting down").await;
            return Ok(());
        }
        let rows = messages::batch(node.db.reader(), target, BATCH).await?;
        // A full batch may leave more behind; a shorter one took everything committed when it
        // was read, and whatever is committed later wakes this relay (`dispatch`).
        queued = rows.len() as i64 == BATCH;
        let (rows, unreadable) = unseal(node, rows);
        delete(node, &unreadable).await?;
        if rows.is_empty() {
            continue;
        }
        if let Some(wait) = linger(&rows, most_per_message, Timestamp::now().millis()) {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => {
                    amqp::close_channel(&ch, "shutting down").await;
                    return Ok(());
                }
            }
            queued = true;
            continue;
        }
        let mut pending = Vec::new();
        for group in batches(&rows, most_per_message) {
            let joined;
            let (payload, content_type) = match group {
                [one] => (one.payload.as_slice(), "application/json"),
                many => {
                    joined = join_batch(many.iter().map(|q| q.payload.as_slice()));
                    (joined.as_slice(), BATCH_CONTENT_TYPE)
                }
            };
            let mut props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(content_type.into());
            if let Some(key) = node.federation().and_then(|f| f.key.as_ref()) {
                let mut headers = FieldTable::default();
                headers.insert(
                    SIGNATURE_HEADER.into(),
                    AMQPValue::LongString(key.sign(&signing_input(target, payload)).into()),
                );
                props = props.with_headers(headers);
            }
            let confirm = ch
                .basic_publish(
                    // The inbox's own exchange (amqp::declare_bound).
                    queue.as_str().into(),
                    "".into(),
                    BasicPublishOptions {
                        // Unroutable (the queue was deleted): returned, so not counted as sent.
                        mandatory: true,
                        ..Default::default()
                    },
                    payload,
                    props,
                )
                .await?;
            pending.push((group, confirm));
        }
        let mut confirmed = Vec::with_capacity(rows.len());
        for (group, confirm) in pending {
            let confirmation = confirm.await?;
            if confirmation.is_ack() && confirmation.take_message().is_none() {
                confirmed.extend(group.iter().map(|q| q.id));
                Metrics::inc(&node.metrics.broker_messages_published);
            }
        }
        delete(node, &confirmed).await?;
        Metrics::add(&node.metrics.messages_published, confirmed.len() as u64);
        if confirmed.len() < rows.len() {
            tracing::warn!(
                target,
                refused = rows.len() - confirmed.len(),
                "broker refused or could not route messages; retrying in a second"
            );
            // Not at once: a refusal that lasts (a deleted queue) would spin.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = cancel.cancelled() => {
                    amqp::close_channel(&ch, "shutting down").await;
                    return Ok(());
                }
            }
            queued = true;
        }
    }
}

/// Waits until rows are queued for the relay's target (`dispatch` wakes it) or 2 s passed, should
/// a wake be missed; false when cancelled.
async fn rows_queued(wake: Option<&tokio::sync::Notify>, cancel: &CancellationToken) -> bool {
    let woken = async {
        match wake {
            Some(w) => w.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = woken => true,
        () = tokio::time::sleep(Duration::from_secs(2)) => true,
        () = cancel.cancelled() => false,
    }
}

/// How long a read of only `may_wait` rows (receipts) waits for more to travel with them:
/// under a burst a node queues a few receipts per target at each commit, and sent as they came
/// they cost the broker and each receiver a message (a write, a confirm, a delivery, an inbox
/// transaction) for every few rows. Notifications, which readers wait on, never wait; the
/// relays that carry them downward carry no receipts, which travel upward.
pub const RECEIPT_LINGER: Duration = Duration::from_millis(250);

/// How long to wait before publishing `rows` (read oldest first) at `now` (Unix ms): none when
/// any row may not wait, when they fill a broker message of `most` rows, or when the oldest
/// has waited [`RECEIPT_LINGER`] already. A row stamped after `now` (the clock went back) does
/// not wait: waiting on such a stamp could hold receipts for as long as the clock jumped.
fn linger(rows: &[Queued], most: usize, now: i64) -> Option<Duration> {
    if rows.len() >= most.max(1) || rows.iter().any(|q| !q.may_wait || q.created_at > now) {
        return None;
    }
    let oldest = rows.iter().map(|q| q.created_at).min()?;
    let due = oldest.saturating_add(RECEIPT_LINGER.as_millis() as i64);
    (due > now).then(|| Duration::from_millis((due - now) as u64))
}

/// Splits queued rows, in order, into the groups sent as one broker message each: at most
/// `most` rows and, unless a row alone is larger, [`MAX_BATCH_BYTES`] of payload.
fn batches(rows: &[Queued], most: usize) -> Vec<&[Queued]> {
    let most = most.max(1);
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, Queued { payload, .. }) in rows.iter().enumerate() {
        let full = i - start == most || (i > start && bytes + payload.len() > MAX_BATCH_BYTES);
        if full {
            groups.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += payload.len();
    }
    if start < rows.len() {
        groups.push(&rows[start..]);
    }
    groups
}

/// A channel on which the target's inbox exchange exists.
///
/// On a broker reached with this node's certificate, every inbox was declared when the broker
/// was set up for the federation (`docfed-topology broker-definitions`), and a node may declare
/// only its own: the exchange is only checked (passively; if it is missing, the relay retries
/// until its node has started and declared it). On a broker shared under one account, the
/// relay declares the target's inbox itself, so a message is never lost to a target that has
/// not started yet.
async fn inbox_channel(
    conn: &lapin::Connection,
    queue: &str,
    provisioned: bool,
    limits: &docfed_shared::topology::QueueLimits,
) -> Result<lapin::Channel, RelayError> {
    let ch = conn.create_channel().await?;
    let no_inbox = |error| RelayError::NoInbox {
        queue: queue.to_owned(),
        error,
    };
    if provisioned {
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.exchange_declare(
            queue.into(),
            lapin::ExchangeKind::Fanout,
            passive,
            FieldTable::default(),
        )
        .await
        .map_err(no_inbox)?;
        Ok(ch)
    } else {
        amqp::declare_durable(conn, ch, queue, false, limits)
            .await
            .map_err(no_inbox)
    }
}

async fn delete(node: &Node, ids: &[i64]) -> Result<(), sqlx::Error> {
    // Not flushed: a delete lost in a power cut only sends the messages again, which receivers
    // drop as duplicates (as they must anyway: a crash between the broker's confirm and this
    // commit does the same). One fsync fewer per message and target.
    messages::delete_confirmed(&node.db, ids).await
}

/// Queues notifications of `doc` from this node toward `targets`, `width` next hops per target,
/// naming this node as the place to pull from.
pub async fn send_notifications(
    conn: &mut SqliteConnection,
    fed: &super::Federation,
    n: &docfed_shared::messages::Notification,
    hops: Vec<super::routing::Hop>,
) -> Result<(), sqlx::Error> {
    let rows = notification_rows(fed, n, hops);
    messages::enqueue_all(&mut *conn, &rows, false).await
}

/// The outbox rows, `(next hop, message)`, of [`send_notifications`], for a caller that queues
/// many notifications' rows with one statement.
pub fn notification_rows(
    fed: &super::Federation,
    n: &docfed_shared::messages::Notification,
    hops: Vec<super::routing::Hop>,
) -> Vec<(String, Vec<u8>)> {
    use docfed_shared::messages::{Body, Notification};
    let d = &n.document;
    hops.into_iter()
        .map(|hop| {
            let env = Envelope::new(
                n.message_id(),
                fed.id(),
                Body::Notify(Box::new(Notification {
                    document: d.clone(),
                    kind: n.kind,
                    origin_url: fed.my_url(),
                    targets: hop.targets,
                    content: n.content.clone(),
                })),
            );
            let payload = env.to_bytes();
            // A document's bytes in the outbox are content at rest like any other.
            let payload = match (&n.content, &fed.content_keys) {
                (Some(_), Some(keys)) => crate::atrest::seal_bytes(&keys.current, &payload),
                _ => payload,
            };
            (hop.next, payload)
        })
        .collect()
}

/// Opens the rows [`send_notifications`] sealed (their payload starts with the sealed format's
/// header; a message in clear starts with `{`). A row that cannot be opened (its key is gone)
/// cannot be sent: it is dropped and logged, and returned as such, so it does not block the
/// target's queue forever.
fn unseal(node: &Node, rows: Vec<messages::Queued>) -> (Vec<messages::Queued>, Vec<i64>) {
    let keys = node.federation().and_then(|f| f.content_keys.clone());
    let mut unreadable = Vec::new();
    let rows = rows
        .into_iter()
        .filter_map(|mut q| {
            if crate::atrest::sealed_with(&q.payload).is_none() {
                return Some(q);
            }
            let opened = match &keys {
                Some(keys) => crate::atrest::open_bytes(keys, &q.payload),
                None => Err(std::io::Error::other("this node was given no content key")),
            };
            match opened {
                Ok(plain) => {
                    q.payload = plain;
                    Some(q)
                }
                Err(e) => {
                    tracing::error!(id = q.id, error = %e, "a sealed outbox message cannot be opened; dropping it (the redundant path through another node still carries it)");
                    unreadable.push(q.id);
                    None
                }
            }
        })
        .collect();
    (rows, unreadable)
}

/// Records a receipt here and queues it upward (to the parents, or from a primary to the other
/// primaries). Returns false if it was already known, in which case nothing is sent.
pub async fn send_receipt(
    conn: &mut SqliteConnection,
    fed: &super::Federation,
    r: &docfed_shared::messages::Receipt,
    msg_id: &str,
) -> Result<bool, sqlx::Error> {
    Ok(send_receipts(conn, fed, &[(r, msg_id)]).await?[0])
}

/// [`send_receipt`] for many receipts, `(receipt, message id)`, as if one at a time in order,
/// in a few multi-row statements (`messages::record_receipts`). Returns which were news.
pub async fn send_receipts(
    conn: &mut SqliteConnection,
    fed: &super::Federation,
    rs: &[(&docfed_shared::messages::Receipt, &str)],
) -> Result<Vec<bool>, sqlx::Error> {
    use docfed_shared::messages::Body;
    let receipts: Vec<_> = rs.iter().map(|(r, _)| *r).collect();
    let news = messages::record_receipts(&mut *conn, &receipts).await?;
    // Intermediates send every receipt to all their parents, so both primaries get it; a
    // primary passes on only its own receipts, to the other primaries.
    let upstream = fed.upstream();
    let mut rows: Vec<(&str, Vec<u8>)> = Vec::new();
    for ((r, msg_id), _) in rs.iter().zip(&news).filter(|(_, &new)| new) {
        if fed.is_primary() && r.node != fed.id() {
            continue;
        }
        let env = Envelope::new((*msg_id).to_owned(), fed.id(), Body::Receipt((*r).clone()));
        let payload = env.to_bytes();
        rows.extend(upstream.iter().map(|t| (t.as_str(), payload.clone())));
    }
    // Nobody waits on a receipt: it may wait to travel with others (`relay_on`).
    messages::enqueue_all(&mut *conn, &rows, true).await?;
    Ok(news)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(sizes: &[usize]) -> Vec<Queued> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Queued {
                id: i as i64,
                payload: vec![b'x'; n],
                ..queued(0, false)
            })
            .collect()
    }

    fn shape(groups: &[&[Queued]]) -> Vec<Vec<i64>> {
        groups
            .iter()
            .map(|g| g.iter().map(|q| q.id).collect())
            .collect()
    }

    fn queued(created_at: i64, may_wait: bool) -> Queued {
        Queued {
            id: 0,
            payload: Vec::new(),
            created_at,
            may_wait,
        }
    }

    #[test]
    fn only_a_short_read_of_young_receipts_lingers() {
        let ms = RECEIPT_LINGER.as_millis() as i64;
        let young = vec![queued(1_000, true), queued(1_010, true)];
        assert_eq!(
            linger(&young, 64, 1_100),
            Some(Duration::from_millis((ms - 100) as u64)),
            "the oldest receipt sets the deadline"
        );
        assert_eq!(linger(&young, 64, 1_000 + ms), None, "the oldest is due");
        assert_eq!(linger(&young, 2, 1_100), None, "a full message goes now");
        let mixed = vec![queued(1_000, true), queued(1_050, false)];
        assert_eq!(linger(&mixed, 64, 1_100), None, "a notification goes now");
        assert_eq!(linger(&[], 64, 1_100), None);
        assert_eq!(
            linger(&young, 64, 900),
            None,
            "stamped after now: the clock went back, so nothing waits on it"
        );
    }

    #[test]
    fn rows_are_grouped_in_order_by_count_and_bytes() {
        let small = rows(&[10; 5]);
        assert_eq!(
            shape(&batches(&small, 2)),
            [vec![0, 1], vec![2, 3], vec![4]]
        );
        assert_eq!(shape(&batches(&small, 1)), [[0], [1], [2], [3], [4]]);
        assert_eq!(
            shape(&batches(&small, 0)).len(),
            5,
            "at least one row per message"
        );
        assert!(batches(&[], 64).is_empty());
        // A row larger than a batch may be still travels, alone.
        let half = MAX_BATCH_BYTES / 2;
        let mixed = rows(&[half, half, 1, MAX_BATCH_BYTES + 1, 1]);
        assert_eq!(
            shape(&batches(&mixed, 64)),
            [vec![0, 1], vec![2], vec![3], vec![4]]
        );
    }
}
