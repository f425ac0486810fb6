//! The inbox consumer: takes messages from `docfed.<id>.inbox`, records their effect in SQLite,
//! and only then acks them (record-then-ack). A message that cannot be parsed or validated is
//! published to `docfed.<id>.dead` (with the reason in a header) and acked, so it never loops.
//! If the database is unavailable the message stays unacked and is retried.

use std::sync::Arc;

use docfed_shared::messages::{
    signing_input, split_batch, Annotation, Body, Envelope, Notification, BATCH_CONTENT_TYPE,
    SIGNATURE_HEADER,
};
use docfed_shared::topology::{dead_letter_queue, inbox_queue};
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use sqlx::SqliteConnection;
use tokio_util::sync::CancellationToken;

use super::admission::admit;
use super::fetch::enqueue_fetch;
use super::outbox::{enqueue_to_all, send_notifications, send_receipt, send_receipts};
use super::routing::{fan_out, route};
use super::session::{self, BrokerSession, Dial, End};
use super::{amqp, Federation};
use crate::db::documents::record_version;
use crate::metrics::Metrics;
use crate::supervisor::{Backoff, Task};
use crate::Node;

const PREFETCH: u16 = 64;

pub async fn run(node: Arc<Node>, cancel: CancellationToken, task: Task) {
    let fed = node.federation().expect("federation").clone();
    let dial = Dial {
        url: fed.amqp_url_of(fed.id()),
        tls: fed.broker_tls.clone(),
        name: format!("{}-inbox", fed.id()),
        heartbeat: None,
    };
    session::run(Inbox { node, fed }, dial, cancel, task).await;
}

/// The inbox consumer's session on its connection.
struct Inbox {
    node: Arc<Node>,
    fed: Federation,
}

impl BrokerSession for Inbox {
    type Error = InboxError;

    async fn run(
        &mut self,
        conn: &lapin::Connection,
        cancel: &CancellationToken,
        task: &Task,
    ) -> Result<End, InboxError> {
        consume(&self.node, &self.fed, conn, cancel, task)
            .await
            .map(|()| End::Stopped)
    }

    fn failed(&self, error: &InboxError, task: &Task) {
        task.retrying(error);
        tracing::warn!(%error, "inbox connection lost; reconnecting");
    }

    fn reconnected(&mut self) {
        Metrics::inc(&self.node.metrics.broker_reconnects);
    }
}

async fn consume(
    node: &Arc<Node>,
    fed: &Federation,
    conn: &lapin::Connection,
    cancel: &CancellationToken,
    task: &Task,
) -> Result<(), InboxError> {
    let inbox = inbox_queue(fed.id());
    let dead = dead_letter_queue(fed.id());
    let limits = fed.topology.queues;
    let ch = conn.create_channel().await?;
    let ch = amqp::declare_durable(conn, ch, &inbox, false, &limits).await?;
    let ch = amqp::declare_durable(conn, ch, &dead, true, &limits).await?;
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let dead_ch = conn.create_channel().await?;
    dead_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut consumer = ch
        .basic_consume(
            inbox.as_str().into(),
            format!("{}-inbox", fed.id()).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %inbox, "consuming inbox");
    task.running();
    node.inbox_connected
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let result = 'deliveries: loop {
        let first = tokio::select! {
            d = consumer.next() => d,
            () = cancel.cancelled() => break Ok(()),
        };
        // Take whatever else is already delivered (up to the prefetch) and record it all in one
        // transaction: one commit (one fsync) for a burst instead of one per message.
        let mut deliveries = Vec::new();
        let mut stream_end: Option<lapin::Error> = None;
        let mut pending: Option<Option<Result<lapin::message::Delivery, lapin::Error>>> =
            Some(first);
        while let Some(next) = pending.take() {
            match next {
                Some(Ok(d)) => deliveries.push(d),
                Some(Err(e)) => {
                    stream_end = Some(e);
                    break;
                }
                None => {
                    stream_end = Some(lapin::Error::from(
                        lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed),
                    ));
                    break;
                }
            }
            if deliveries.len() >= usize::from(PREFETCH) {
                break;
            }
            pending = consumer.next().now_or_never();
        }
        let Some(last) = deliveries.last() else {
            break Err(stream_end
                .unwrap_or_else(|| {
                    lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
                        lapin::ConnectionState::Closed,
                    ))
                })
                .into());
        };
        let last_tag = last.delivery_tag;
        let planted_early_ack = fed.planted_bug == Some(super::PlantedBug::AckBeforeCommit);
        if planted_early_ack {
            ch.basic_ack(last_tag, BasicAckOptions { multiple: true })
                .await?;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        let mut envelopes = Vec::with_capacity(deliveries.len());
        for delivery in &deliveries {
            let (admitted, refused) = unpack(fed, delivery);
            Metrics::add(
                &node.metrics.notifications_received,
                (admitted.len() + refused.len()) as u64,
            );
            envelopes.extend(admitted);
            for (payload, reason) in refused {
                tracing::warn!(queue = %inbox, error = %reason, "dead-lettering a message");
                dead_letter(
                    &dead_ch,
                    &dead,
                    payload,
                    &reason,
                    node.config.retention.dead_letter_retention,
                )
                .await?;
                Metrics::inc(&node.metrics.notifications_dead_lettered);
            }
        }
        let mut failures = 0u32;
        while !envelopes.is_empty() {
            match handle(node, fed, &envelopes).await {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    tracing::error!(messages = envelopes.len(), error = %e, "cannot record messages; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Backoff::BROKER.delay(failures)) => {}
                        // Not acked: redelivered after the restart.
                        () = cancel.cancelled() => break 'deliveries Ok(()),
                    }
                }
            }
        }
        // Everything up to the last delivery is recorded (or dead-lettered): ack them at once.
        if !planted_early_ack {
            ch.basic_ack(last_tag, BasicAckOptions { multiple: true })
                .await?;
        }
        if let Some(e) = stream_end {
            break Err(e.into());
        }
    };
    node.inbox_connected
        .store(false, std::sync::atomic::Ordering::Relaxed);
    if result.is_ok() {
        // A clean stop: stop the deliveries, then close the channels before the caller closes
        // the connection (see amqp::close_channel), so that shutting down logs no error.
        amqp::cancel_consumer(&ch, &consumer).await;
        drop(consumer);
        amqp::close_channel(&dead_ch, "shutting down").await;
        amqp::close_channel(&ch, "shutting down").await;
    }
    result
}

/// The envelopes a delivery carries that may be acted on, and what must be dead-lettered with
/// its reason: the whole delivery, or one envelope of a batch ([`BATCH_CONTENT_TYPE`]). A batch
/// is signed as a whole by its one sender; each of its envelopes is then parsed and admitted on
/// its own, so one bad envelope does not hold back the others.
fn unpack<'d>(
    fed: &Federation,
    delivery: &'d lapin::message::Delivery,
) -> (Vec<Envelope>, Vec<(&'d [u8], String)>) {
    let whole = |reason: String| (Vec::new(), vec![(delivery.data.as_slice(), reason)]);
    let is_batch = delivery
        .properties
        .content_type()
        .as_ref()
        .is_some_and(|t| t.as_str() == BATCH_CONTENT_TYPE);
    if !is_batch {
        let admitted = Envelope::parse(&delivery.data)
            .map_err(|e| e.to_string())
            .and_then(|env| {
                check_signature(fed, &env.from, delivery)?;
                admit(fed, &env).map_err(|refusal| refusal.to_string())?;
                Ok(env)
            });
        return match admitted {
            Ok(env) => (vec![env], Vec::new()),
            Err(reason) => whole(reason),
        };
    }
    let parts = match split_batch(&delivery.data) {
        Ok(parts) => parts,
        Err(e) => return whole(e.to_string()),
    };
    let parsed: Vec<_> = parts.iter().map(|p| Envelope::parse(p)).collect();
    let mut senders = parsed.iter().flatten().map(|env| env.from.as_str());
    let Some(from) = senders.next() else {
        return whole("a batch without one valid message".to_owned());
    };
    if senders.any(|other| other != from) {
        return whole("a batch carries messages from more than one sender".to_owned());
    }
    if let Err(reason) = check_signature(fed, from, delivery) {
        return whole(reason);
    }
    let (mut admitted, mut refused) = (Vec::new(), Vec::new());
    for (part, env) in parts.into_iter().zip(parsed) {
        match env.map_err(|e| e.to_string()).and_then(|env| {
            admit(fed, &env).map_err(|refusal| refusal.to_string())?;
            Ok(env)
        }) {
            Ok(env) => admitted.push(env),
            Err(reason) => refused.push((part, format!("in a batch: {reason}"))),
        }
    }
    (admitted, refused)
}

/// In a federation whose topology lists keys, a message must carry its sender's signature of
/// the bytes as delivered to this node.
fn check_signature(
    fed: &Federation,
    from: &str,
    delivery: &lapin::message::Delivery,
) -> Result<(), String> {
    if !fed.topology.is_signed() {
        return Ok(());
    }
    let signature = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| match h.inner().get(SIGNATURE_HEADER) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            _ => None,
        })
        .ok_or_else(|| format!("unsigned message claiming to come from {from:?}"))?;
    let key = fed
        .topology
        .public_key(from)
        .ok_or_else(|| format!("no public key for sender {from:?}"))?;
    if key.verifies(&signing_input(fed.id(), &delivery.data), &signature) {
        Ok(())
    } else {
        Err(format!(
            "the signature does not verify against {from:?}'s key"
        ))
    }
}

#[derive(Debug, thiserror::Error)]
enum InboxError {
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused to take a message into {queue}")]
    DeadLetterRefused { queue: String },
}

/// Parks a refused message in the dead-letter queue with the reason in a header. Returns only
/// once the broker confirmed it: if it refuses, the original stays unacked (the connection is
/// dropped and the message redelivered), so a refused message is never simply lost.
async fn dead_letter(
    ch: &Channel,
    queue: &str,
    payload: &[u8],
    reason: &str,
    ttl: std::time::Duration,
) -> Result<(), InboxError> {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-docfed-error".into(),
        AMQPValue::LongString(reason.into()),
    );
    let confirm = ch
        .basic_publish(
            // The queue's own exchange (amqp::declare_bound).
            queue.into(),
            "".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            payload,
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_headers(headers)
                // The broker drops it after the retention (the queue is first in, first out,
                // so expired messages reach its head and go in order).
                .with_expiration(ttl.as_millis().to_string().into()),
        )
        .await?
        .await?;
    // A nack, or an ack of a message returned as unroutable (the queue is gone).
    if confirm.is_nack() || confirm.take_message().is_some() {
        return Err(InboxError::DeadLetterRefused {
            queue: queue.to_owned(),
        });
    }
    Ok(())
}

/// Records the effect of a batch of messages in one transaction.
async fn handle(node: &Arc<Node>, fed: &Federation, envs: &[Envelope]) -> Result<(), sqlx::Error> {
    let mut tx = node.db.begin_write().await?;
    let mut fetch = false;
    let mut effects = Effects::default();
    // Receipts touch only `receipts` and the outbox, and each other only by key: recorded
    // together after the rest, in their order, in a few statements for the lot.
    let mut receipts = Vec::new();
    let notifications: Vec<&Notification> = envs
        .iter()
        .filter_map(|env| match &env.body {
            Body::Notify(n) => Some(&**n),
            _ => None,
        })
        .collect();
    fetch |= on_notifications(node, fed, &mut tx, &notifications, &mut effects).await?;
    for env in envs {
        match &env.body {
            Body::Notify(_) => {}
            Body::Receipt(r) => receipts.push((r, env.id.as_str())),
            Body::Annotation(a) => {
                on_annotation(fed, &mut tx, a, &env.id).await?;
            }
            Body::Decision(d) => {
                crate::db::messages::apply_decision(&mut tx, d).await?;
            }
        }
    }
    crate::db::messages::enqueue_all(&mut tx, &effects.outbox, false).await?;
    let available = effects.store_inline(node, fed, &mut tx).await?;
    // This node's own receipts, then those it relays, in a few statements for the lot.
    let own: Vec<(docfed_shared::messages::Receipt, String)> = effects
        .receipts
        .into_iter()
        .map(|r| {
            let id = r.message_id();
            (r, id)
        })
        .collect();
    let all: Vec<_> = own
        .iter()
        .map(|(r, id)| (r, id.as_str()))
        .chain(receipts)
        .collect();
    if !all.is_empty() {
        send_receipts(&mut tx, fed, &all).await?;
    }
    tx.commit().await?;
    node.wake_outbox();
    node.changes_committed().await;
    if fetch {
        node.fetch_wake.notify_one();
    }
    if !available.is_empty() {
        Metrics::add(&node.metrics.inline_stored, available.len() as u64);
    }
    for (id, version) in available {
        node.content_available(id, version).await;
    }
    Ok(())
}

/// What the notifications of one batch leave to do once they were all looked at, in a few
/// statements for the lot rather than several per document: the inline content to store and
/// this node's receipts to send.
#[derive(Default)]
struct Effects {
    /// Inline content needed here: (document, version, md5, bytes).
    inline: Vec<(
        docfed_shared::DocId,
        i64,
        docfed_shared::Md5Hex,
        bytes::Bytes,
    )>,
    receipts: Vec<docfed_shared::messages::Receipt>,
    /// Forwards, `(next hop, message)`, in the order they were decided.
    outbox: Vec<(String, Vec<u8>)>,
}

impl Effects {
    /// Stores the batch's inline content (the small-object store, this transaction), settles
    /// pulls of the same bytes queued earlier, and returns the versions whose content is now
    /// here, for the devices that flagged them (after the commit).
    async fn store_inline(
        &mut self,
        node: &Node,
        fed: &Federation,
        tx: &mut SqliteConnection,
    ) -> Result<Vec<(docfed_shared::DocId, i64)>, sqlx::Error> {
        if self.inline.is_empty() {
            return Ok(Vec::new());
        }
        let items: Vec<(&docfed_shared::Md5Hex, &[u8])> = self
            .inline
            .iter()
            .map(|(_, _, md5, b)| (md5, b.as_ref()))
            .collect();
        crate::small_objects::record_all(tx, node.store.keys(), &items).await?;
        // A pull of this content queued by an earlier notification without it (an older
        // sender, or a device's flag) is settled now that the bytes came inline: its forwards
        // and receipts go out as a finished pull's would.
        let md5s: Vec<&docfed_shared::Md5Hex> = items.iter().map(|(m, _)| *m).collect();
        let pending = crate::db::fetches::pending_of(tx, &md5s).await?;
        if !pending.is_empty() {
            let now = docfed_shared::wire::Timestamp::now().millis();
            let mut done: Vec<crate::db::fetches::Completed> = Vec::new();
            for (_, _, md5, bytes) in &self.inline {
                if pending.contains_key(md5.as_str()) && !done.iter().any(|c| c.md5 == md5) {
                    done.push(crate::db::fetches::Completed {
                        md5,
                        source: "inline",
                        bytes: bytes.len() as u64,
                        attempts: 0,
                        started_at: now,
                    });
                }
            }
            super::fetch::settle(tx, fed, &done).await?;
        }
        Ok(self.inline.iter().map(|(id, v, _, _)| (*id, *v)).collect())
    }
}

/// Batches of at least this many notifications record their versions set-based, in a fixed
/// number of statements (`db::import`); fewer, one at a time (fewer statements for one).
const SET_BASED: usize = 4;

/// Records the versions a batch's notifications carry and decides, for each one new here,
/// what this node does: store inline content, queue a pull, forward, send its receipt (left in
/// `effects` to be done for the whole batch). Returns whether a pull was queued.
async fn on_notifications(
    node: &Node,
    fed: &Federation,
    tx: &mut SqliteConnection,
    notifications: &[&Notification],
    effects: &mut Effects,
) -> Result<bool, sqlx::Error> {
    if notifications.is_empty() {
        return Ok(false);
    }
    let fresh = if notifications.len() >= SET_BASED {
        let versions: Vec<_> = notifications
            .iter()
            .map(|n| (n.document.clone(), n.kind))
            .collect();
        crate::db::import::record_versions_each(tx, &versions).await?
    } else {
        let mut fresh = Vec::with_capacity(notifications.len());
        for n in notifications {
            fresh.push(record_version(tx, &n.document, n.kind).await?);
        }
        fresh
    };
    let mut new = Vec::with_capacity(notifications.len());
    for (n, fresh) in notifications.iter().zip(fresh) {
        if fresh {
            new.push(*n);
        } else {
            Metrics::inc(&node.metrics.notifications_deduplicated);
            tracing::debug!(doc_id = %n.document.id, version = n.document.version, "duplicate notification");
        }
    }
    if new.is_empty() {
        return Ok(false);
    }
    let ids: Vec<String> = new.iter().map(|n| n.document.id.to_string()).collect();
    let flagged = crate::db::devices::flagged_among(&mut *tx, &ids).await?;
    let md5s: Vec<&docfed_shared::Md5Hex> = new.iter().map(|n| &n.document.md5).collect();
    // Held here, as the batch's earlier notifications leave it (their inline content is stored
    // with the batch's, at its end).
    let mut held = crate::db::documents::objects_held(tx, &md5s).await?;
    let mut fetch = false;
    for n in new {
        let d = &n.document;
        let stored_before = effects.inline.len();
        fetch |= decide(
            fed,
            tx,
            n,
            flagged.contains(&d.id.to_string()),
            held.contains(d.md5.as_str()),
            effects,
        )
        .await?;
        if effects.inline.len() > stored_before {
            held.insert(d.md5.to_string());
        }
    }
    Ok(fetch)
}

/// What this node does with a version new here, given whether a device of this node flagged
/// its document and whether its content is held here. Returns whether a pull was queued.
async fn decide(
    fed: &Federation,
    tx: &mut SqliteConnection,
    n: &Notification,
    flagged: bool,
    held: bool,
    effects: &mut Effects,
) -> Result<bool, sqlx::Error> {
    let d = &n.document;
    let salt = d.id.to_string();
    // A device of this node flagged the document: keep every version's bytes here too.
    let flagged = flagged && !d.deleted;
    // Nobody pulls a lazy version ahead of a request, unless a device here asked for it.
    let need = flagged || (!d.lazy && fed.needs_content(fed.id(), &d.scope, d.deleted, &n.targets));
    // Bytes that came with the notification were checked against the version's signed hashes
    // when it was parsed: stored (with the batch's) when needed here, and passed on with it.
    let inline = n.content.as_ref().filter(|_| need && !held);
    if need && !held && inline.is_none() {
        // Targets that need the bytes hear of them when our own pull starts (stream-through)
        // or ends; the others right away.
        let (later, now): (Vec<String>, Vec<String>) = n
            .targets
            .iter()
            .cloned()
            .partition(|t| !d.lazy && fed.needs_content(t, &d.scope, d.deleted, &[]));
        let hops = route(&fed.topology, fed.id(), &now, 1, &salt);
        effects
            .outbox
            .extend(super::outbox::notification_rows(fed, n, hops));
        enqueue_fetch(tx, fed, n, &later).await?;
        return Ok(true);
    }
    if let Some(content) = inline {
        effects
            .inline
            .push((d.id, d.version, d.md5.clone(), content.clone()));
    }
    let hops = route(&fed.topology, fed.id(), &n.targets, 1, &salt);
    effects
        .outbox
        .extend(super::outbox::notification_rows(fed, n, hops));
    effects.receipts.push(docfed_shared::messages::Receipt::of(
        d,
        fed.id(),
        held || inline.is_some(),
    ));
    Ok(false)
}

/// The content to carry inline in the notifications of version `v`, which this node accepted:
/// its bytes when the federation sends content of its size inline and they are in this node's
/// small-object store. Otherwise `None`, and whoever needs them pulls them.
pub async fn inline_content(
    node: &Node,
    fed: &Federation,
    tx: &mut SqliteConnection,
    v: &docfed_shared::wire::DocumentVersion,
) -> Result<Option<bytes::Bytes>, sqlx::Error> {
    if !carries_inline(fed, v) {
        return Ok(None);
    }
    match crate::small_objects::read(&mut *tx, node.store.keys(), &v.md5).await {
        Ok(content) => Ok(content),
        Err(crate::small_objects::ReadError::Db(e)) => Err(e),
        Err(e) => {
            tracing::warn!(doc_id = %v.id, md5 = %v.md5, error = %e, "cannot read small object; children will pull it");
            Ok(None)
        }
    }
}

/// Whether the federation sends version `v`'s content inside its notifications.
fn carries_inline(fed: &Federation, v: &docfed_shared::wire::DocumentVersion) -> bool {
    let max = fed.topology.inline_max.as_u64();
    max > 0 && v.size <= max && !v.deleted && !v.lazy
}

/// Stores an annotation once; passes it on toward the primaries the first time it is seen.
pub async fn on_annotation(
    fed: &Federation,
    tx: &mut SqliteConnection,
    a: &Annotation,
    msg_id: &str,
) -> Result<bool, sqlx::Error> {
    let new = crate::db::messages::record_annotation(&mut *tx, a).await?;
    // Intermediates send to every parent, so both primaries get it; a primary passes on only
    // annotations written on itself.
    let relay = new && (!fed.is_primary() || a.node == fed.id());
    if relay {
        let env = Envelope::new(msg_id.to_owned(), fed.id(), Body::Annotation(a.clone()));
        enqueue_to_all(tx, &fed.upstream(), &env).await?;
    }
    Ok(new)
}

/// What a primary queues, in the edit's own transaction, when it accepts an edit: the
/// fan-out to the other primaries and the tiers below (with the content inline when it is
/// `content` and small enough, see [`carries_inline`]), and its own receipt.
pub async fn announce_local_edit(
    fed: &Federation,
    tx: &mut SqliteConnection,
    v: &docfed_shared::wire::DocumentVersion,
    kind: docfed_shared::wire::ChangeKind,
    content: Option<bytes::Bytes>,
) -> Result<(), sqlx::Error> {
    let n = Notification {
        document: v.clone(),
        kind,
        origin_url: fed.my_url(),
        targets: Vec::new(),
        content: content.filter(|c| carries_inline(fed, v) && c.len() as u64 == v.size),
    };
    send_notifications(
        tx,
        fed,
        &n,
        fan_out(&fed.topology, fed.id(), &v.id.to_string()),
    )
    .await?;
    // A lazy version's bytes are still at its source.
    let r = docfed_shared::messages::Receipt::of(v, fed.id(), !v.lazy);
    send_receipt(tx, fed, &r, &r.message_id()).await?;
    Ok(())
}
