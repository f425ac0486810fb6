//! Reachback (ARCHITECTURE.md §2.9): external data sources that the primaries publish into the
//! federation, each run by exactly one primary at a time.
//!
//! * [`lease`]: which primary runs a source (a single-active-consumer queue).
//! * [`items`]: an external item to a document version; the directory as the source's state.
//! * [`watch`], [`http`], [`exec`]: the kinds of source.
//! * [`lazy`]: reading a lazy item's bytes when a node is first asked for them.
//! * [`beneath`]: opening and listing files without following links, beneath a folder only.

pub mod beneath;
pub mod exec;
pub mod http;
pub mod items;
pub mod lazy;
pub mod lease;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use docfed_shared::sources::{SourceKind, SourceSpec};
use docfed_shared::wire::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::federation::session::{self, BrokerSession, Dial, End};
use crate::supervisor::Task;
use crate::Node;
use items::Publisher;
use lease::{Lease, LeaseError};

/// The sources whose lease this node holds, and since when.
#[derive(Debug, Default)]
pub struct Held(Mutex<BTreeMap<String, Timestamp>>);

impl Held {
    fn set(&self, source: &str, held: bool) {
        let mut m = self.0.lock().expect("not poisoned");
        if held {
            m.insert(source.to_owned(), Timestamp::now());
        } else {
            m.remove(source);
        }
    }

    /// Since when this node runs `source`, if it does.
    pub fn since(&self, source: &str) -> Option<Timestamp> {
        self.0.lock().expect("not poisoned").get(source).copied()
    }
}

/// Starts one task per source of the topology; only primaries run sources.
pub(crate) fn start(node: &Arc<Node>, cancel: &CancellationToken) {
    let Some(fed) = node.federation() else {
        return;
    };
    if !fed.is_primary() {
        return;
    }
    let topo = &fed.topology;
    let Some(first) = topo.primaries().next() else {
        return;
    };
    // As reached from here (the launcher's one broker, `--peer-amqp`), like the inboxes.
    let broker = fed.amqp_url_of(&first.id);
    for spec in &topo.sources {
        let queue = lease::queue_name(&first.id, &spec.name);
        let spec = Arc::new(spec.clone());
        let (node, cancel, broker) = (node.clone(), cancel.clone(), broker.clone());
        node.clone()
            .supervisor
            .critical(format!("source {}", spec.name), |task| {
                run(node, spec, broker, queue, cancel, task)
            });
    }
}

/// Contends for the source's lease and runs the source while holding it, until `cancel`.
async fn run(
    node: Arc<Node>,
    spec: Arc<SourceSpec>,
    broker: String,
    queue: String,
    cancel: CancellationToken,
    task: Task,
) {
    let dial = Dial {
        url: broker,
        tls: node.federation().and_then(|f| f.broker_tls.clone()),
        name: format!("{} source {}", node.config.node_id, spec.name),
        heartbeat: Some(lease::HEARTBEAT),
    };
    let source = Source {
        who: dial.name.clone(),
        node,
        spec,
        queue,
    };
    session::run(source, dial, cancel, task).await;
}

/// A source's session on its lease's connection: contend, run the source while the lease is
/// held, give it back.
struct Source {
    node: Arc<Node>,
    spec: Arc<SourceSpec>,
    queue: String,
    /// The connection's name, and the consumer's tag.
    who: String,
}

impl BrokerSession for Source {
    type Error = LeaseError;

    async fn run(
        &mut self,
        conn: &lapin::Connection,
        cancel: &CancellationToken,
        task: &Task,
    ) -> Result<End, LeaseError> {
        let Some(mut lease) = Lease::contend(conn, &self.queue, &self.who, cancel, task).await?
        else {
            return Ok(End::Stopped);
        };
        let (node, spec) = (&self.node, &self.spec);
        node.sources.set(&spec.name, true);
        tracing::info!(source = %spec.name, kind = spec.kind.as_str(), "holding the source's lease; running it");
        let publisher = Publisher {
            node: node.clone(),
            spec: spec.clone(),
        };
        let stop = cancel.child_token();
        let outcome = tokio::select! {
            r = run_kind(publisher, stop.clone()) => r.err().map(|e| format!("{e:#}")),
            why = lease.lost() => {
                tracing::warn!(source = %spec.name, reason = %why, "lost the source's lease; stopped it");
                Some(format!("lease lost: {why}"))
            }
        };
        stop.cancel();
        node.sources.set(&spec.name, false);
        if let Some(why) = &outcome {
            task.error(why);
            if let Err(e) = node.db.record_run(&spec.name, None, Some(why)).await {
                tracing::warn!(source = %spec.name, error = %e, "cannot record the source's run");
            }
        }
        lease.release().await;
        Ok(if cancel.is_cancelled() {
            End::Stopped
        } else {
            End::Renew(lease::RECONTEND_AFTER)
        })
    }

    fn failed(&self, error: &LeaseError, task: &Task) {
        task.retrying(&format_args!("source lease: {error}"));
        tracing::warn!(queue = self.queue.as_str(), %error, "source lease lost its broker; retrying");
    }
}

async fn run_kind(p: Publisher, stop: CancellationToken) -> anyhow::Result<()> {
    match p.spec.kind {
        SourceKind::Watch => watch::run(p, stop).await,
        SourceKind::Http => http::run(p, stop).await,
        SourceKind::Exec => exec::run(p, stop).await,
    }
}
