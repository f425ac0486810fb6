//! Push hints for devices (`GET /v1/events`, ARCHITECTURE.md §2.8): the change-feed position in
//! a `watch` (a slow subscriber only ever sees the newest seq, nothing queues up) and "content of
//! this version is held here now" in a small `broadcast` (a subscriber that lags past it is told
//! the newest seq instead, which makes its device catch up all the same).
//!
//! Fed after commits only: a hint never announces what a reader could not see yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    /// Open streams per device, at most `max_event_streams_per_device` each: without it one
    /// device's secret could hold every stream of the node and leave the others deaf.
    per_device: Arc<Mutex<HashMap<String, usize>>>,
    max_per_device: usize,
    /// Fires at shutdown: event streams end instead of holding the graceful shutdown up.
    pub shutdown: CancellationToken,
}

impl Events {
    pub fn new(
        seq: i64,
        max_streams: usize,
        max_per_device: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            seq: watch::Sender::new(seq),
            available: broadcast::Sender::new(AVAILABLE_BACKLOG),
            streams: Arc::new(Semaphore::new(max_streams)),
            per_device: Default::default(),
            max_per_device,
            shutdown,
        }
    }

    /// A stream slot of `device`, held while its stream is open; `None` when the device has
    /// `max_event_streams_per_device` open already.
    pub fn device_slot(&self, device: &str) -> Option<DeviceSlot> {
        let mut open = self.per_device.lock().expect("not poisoned");
        let n = open.entry(device.to_owned()).or_insert(0);
        if *n >= self.max_per_device {
            return None;
        }
        *n += 1;
        Some(DeviceSlot {
            device: device.to_owned(),
            open: self.per_device.clone(),
        })
    }

    /// How many streams `device` holds open now.
    pub fn streams_of(&self, device: &str) -> usize {
        let open = self.per_device.lock().expect("not poisoned");
        open.get(device).copied().unwrap_or(0)
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

/// One open event stream of a device; closing the stream (dropping this) frees the slot.
pub struct DeviceSlot {
    device: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for DeviceSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("not poisoned");
        if let Some(n) = open.get_mut(&self.device) {
            *n -= 1;
            // No row per device that ever listened: the map holds open streams only.
            if *n == 0 {
                open.remove(&self.device);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_holds_at_most_its_share_of_streams() {
        let events = Events::new(0, 100, 2, CancellationToken::new());
        let a = events.device_slot("a").unwrap();
        let b = events.device_slot("a").unwrap();
        assert!(events.device_slot("a").is_none());
        assert!(
            events.device_slot("b").is_some(),
            "another device is not affected"
        );
        drop(a);
        assert_eq!(events.streams_of("a"), 1);
        let c = events.device_slot("a").unwrap();
        drop((b, c));
        assert_eq!(events.streams_of("a"), 0);
        assert!(events.per_device.lock().unwrap().is_empty());
    }
}
