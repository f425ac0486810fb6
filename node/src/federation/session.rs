//! The one life of a long-lived broker connection: the inbox consumer, each outbox relay and
//! each reachback source lease live it, with what they do while connected as a
//! [`BrokerSession`].
//!
//! Each of them owns its connection, so that a broker that fails takes down one component's
//! session, not the node's, and each lives the same life ([`run`]): connect (retried in place
//! until it works, [`connect`]), let the session set up what it needs on the connection
//! (channels, queues, consumers) and work, and on any error drop the connection and connect
//! again after a capped, jittered backoff ([`Retry`]), forever, until the node stops. Only what
//! a session does and how its failure is told differ, so reconnection is written once, here,
//! and a new kind of session is a new implementation of the trait, not a new loop.
//!
//! Redelivery after a reconnect is harmless because every handler is idempotent: the inbox
//! records before it acks, the relay deletes a row only once the broker confirmed it, and a
//! lease's token goes back to its queue when the connection that held it ends.

use std::future::Future;
use std::time::{Duration, Instant};

use docfed_shared::secrets::redact_url;
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use super::amqp::{self, BrokerTls};
use crate::supervisor::{Backoff, Retry, Task};

/// Longest one connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom a session connects.
#[derive(Debug, Clone)]
pub struct Dial {
    pub url: String,
    /// For an `amqps://` broker: this node's certificate and the federation CA.
    pub tls: Option<BrokerTls>,
    /// The connection's name on the broker, and `who` in the logs.
    pub name: String,
    /// Heartbeat interval in seconds, unless the URL chooses one (`None`: the broker's).
    pub heartbeat: Option<u16>,
}

/// How a session ended without a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The node is stopping: the connection is closed and the loop ends.
    Stopped,
    /// Done with this connection (a lease given back): connect again after this delay, with
    /// the backoff starting over.
    Renew(Duration),
}

/// What a component does with a connection of its own. On a clean end it closes what it opened
/// on the connection (consumers, channels: [`amqp::close_channel`]); the connection itself is
/// [`run`]'s to close.
pub trait BrokerSession: Send {
    type Error: Send;

    /// Sets up on the fresh `conn` and works until `cancel` fires (then [`End::Stopped`]) or
    /// the connection fails. Reports `task.running()` once at work.
    fn run(
        &mut self,
        conn: &Connection,
        cancel: &CancellationToken,
        task: &Task,
    ) -> impl Future<Output = Result<End, Self::Error>> + Send;

    /// Tells of a failed session (its task's state, the log) before the loop reconnects.
    fn failed(&self, error: &Self::Error, task: &Task);

    /// Called with every connection after the first.
    fn reconnected(&mut self) {}
}

/// Runs `session` over connections to `dial`'s broker until `cancel` fires, reconnecting after
/// every failure.
pub async fn run<S: BrokerSession>(
    mut session: S,
    dial: Dial,
    cancel: CancellationToken,
    task: Task,
) {
    let mut retry = Retry::new(Backoff::BROKER);
    let mut connected_before = false;
    loop {
        let Some(conn) = connect(&dial, &cancel, &task).await else {
            return;
        };
        let started = Instant::now();
        if std::mem::replace(&mut connected_before, true) {
            session.reconnected();
        }
        let wait = match session.run(&conn, &cancel, &task).await {
            Ok(End::Stopped) => {
                amqp::close(&conn, "shutting down").await;
                return;
            }
            Ok(End::Renew(after)) => {
                amqp::close(&conn, "session renewed").await;
                retry = Retry::new(Backoff::BROKER);
                after
            }
            Err(e) => {
                session.failed(&e, &task);
                // Unacked deliveries go back to their queue when the connection closes.
                // Bounded: closing a connection whose broker died waits for an answer that
                // never comes (an unbounded close here once left a primary's inbox unread for
                // good).
                amqp::close(&conn, "reconnecting").await;
                retry.after(started.elapsed())
            }
        };
        drop(conn);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// Connects, retrying until it works or `cancel` fires (then `None`); failures are reported to
/// `task`, and logged every tenth attempt: a broker that is down is an expected state, which
/// the task table shows.
pub async fn connect(dial: &Dial, cancel: &CancellationToken, task: &Task) -> Option<Connection> {
    let Dial {
        url,
        tls,
        name: who,
        ..
    } = dial;
    // `NodeConfig::load` parsed every broker URL of the topology before the node started.
    let mut uri = amqp::broker_uri(url).expect("broker URLs are checked at start");
    if let Some(heartbeat) = dial.heartbeat {
        uri.query.heartbeat.get_or_insert(heartbeat);
    }
    let mut attempt = 0u32;
    loop {
        let props = ConnectionProperties::default().with_connection_name(who.as_str().into());
        let connecting = amqp::open(uri.clone(), props, tls.as_ref());
        let outcome = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, connecting) => r,
            () = cancel.cancelled() => return None,
        };
        match outcome {
            Ok(Ok(conn)) => {
                if attempt > 0 {
                    tracing::info!(broker = %redact_url(url), who, attempts = attempt, "connected to broker");
                }
                return Some(conn);
            }
            Ok(Err(e)) => {
                task.retrying(&format_args!("cannot connect to broker: {e}"));
                if attempt.is_multiple_of(10) {
                    tracing::warn!(broker = %redact_url(url), who, error = %e, attempt, "cannot connect to broker; retrying");
                }
            }
            Err(_) => {
                task.retrying(&"broker connection timed out");
                tracing::warn!(broker = %redact_url(url), who, "broker connection timed out; retrying")
            }
        }
        attempt += 1;
        tokio::select! {
            () = tokio::time::sleep(Backoff::BROKER.delay(attempt)) => {}
            () = cancel.cancelled() => return None,
        }
    }
}
