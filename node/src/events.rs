//! Push hints for devices (`GET /v1/events`, ARCHITECTURE.md §2.8): the change-feed position in
//! a `watch` (a slow subscriber only ever sees the newest seq, nothing queues up) and "content of
//! this version is held here now" in a small `broadcast` (a subscriber that lags past it is told
//! the newest seq instead, which makes its device catch up all the same).
//!
//! Fed after commits only: a hint never announces what a reader could not see yet.

use std::sync::Arc;

use docfed_shared::DocId;
use tokio::sync::{broadcast, watch, Semaphore};
use tokio_util::sync::CancellationToken;

/// Content of a version became available on this node.
#[derive(Debug, Clone)]
pub struct Available {
    pub id: DocId,
    pub version: i64,
}

/// How many availability hints a subscriber may fall behind before it is told the seq instead.
const AVAILABLE_BACKLOG: usize = 64;

pub struct Events {
    seq: watch::Sender<i64>,
    available: broadcast::Sender<Available>,
    /// One permit per open event stream (`max_event_streams`).
    pub streams: Arc<Semaphore>,
    /// Fires at shutdown: event streams end instead of holding the graceful shutdown up.
    pub shutdown: CancellationToken,
}

impl Events {
    pub fn new(seq: i64, max_streams: usize, shutdown: CancellationToken) -> Self {
        Self {
            seq: watch::Sender::new(seq),
            available: broadcast::Sender::new(AVAILABLE_BACKLOG),
            streams: Arc::new(Semaphore::new(max_streams)),
            shutdown,
        }
    }

    /// The directory moved to `seq` (ignored unless it is beyond what was announced).
    pub fn changed(&self, seq: i64) {
        self.seq.send_if_modified(|s| {
            let newer = seq > *s;
            if newer {
                *s = seq;
            }
            newer
        });
    }

    pub fn available(&self, id: DocId, version: i64) {
        // No subscriber: nobody to tell.
        let _ = self.available.send(Available { id, version });
    }

    /// Whether any event stream listens for availability hints now.
    pub fn hears_available(&self) -> bool {
        self.available.receiver_count() > 0
    }

    pub fn subscribe_seq(&self) -> watch::Receiver<i64> {
        self.seq.subscribe()
    }

    pub fn subscribe_available(&self) -> broadcast::Receiver<Available> {
        self.available.subscribe()
    }
}
