//! `GET /v1/events`: Server-Sent Events for a registered device (its secret as a bearer token,
//! or the node's token). Hints, not data: the device catches up through `/v1/changes` and the
//! content endpoint when told.
//! * `event: changed`, `id: <seq>`, data `{"seq": N}`: the change feed moved to `N`. A stream
//!   that fell behind gets only the newest seq.
//! * `event: flagged`, data `{"id": doc, "version": V}`: content of a document this device flags
//!   is held here now (every flagged document, for the operator).
//!
//! With `Last-Event-ID: S` the first event is `changed` when the feed is beyond `S` already, so
//! a reconnecting device misses nothing. A comment every 15 s keeps idle connections open.
//! At most `max_event_streams` streams at once (503 beyond), and `max_event_streams_per_device`
//! of one device (429 beyond); streams end at shutdown.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit};

use docfed_shared::wire::events::{self, ChangedEvent, FlaggedEvent};
use docfed_shared::wire::ErrorCode;

use super::{carries_token, AppState};
use crate::db::devices::secret_hash;
use crate::error::ApiError;
use crate::events::Available;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Who listens: a device, or the operator (`None`), who hears of every flagged document.
async fn listener(node: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if carries_token(headers, node) {
        return Ok(None);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(ApiError::DeviceUnauthorized)?;
    // Looked up by the secret's hash: a secret is 32 random bytes, so there is nothing to learn
    // from how long a miss takes.
    let device =
        crate::db::devices::device_by_secret(node.db.reader(), &secret_hash(presented)).await?;
    device.map(Some).ok_or(ApiError::DeviceUnauthorized)
}

struct Subscriber {
    node: AppState,
    device: Option<String>,
    seq: watch::Receiver<i64>,
    available: broadcast::Receiver<Available>,
    first: Option<Event>,
    _permit: OwnedSemaphorePermit,
    _device_slot: Option<crate::events::DeviceSlot>,
}

enum Next {
    Seq,
    Available(Available),
    End,
}

impl Subscriber {
    fn changed(&mut self) -> Event {
        let seq = *self.seq.borrow_and_update();
        changed_event(seq)
    }

    async fn wants(&self, a: &Available) -> bool {
        let Some(device) = &self.device else {
            return true;
        };
        let flagged = crate::db::devices::has_flag(self.node.db.reader(), device, &a.id).await;
        // Unsure (the database is busy): tell; a needless catch-up costs little.
        !matches!(flagged, Ok(false))
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        if let Some(e) = self.first.take() {
            return Some((Ok(e), self));
        }
        loop {
            let shutdown = self.node.events.shutdown.clone();
            let next = tokio::select! {
                () = shutdown.cancelled() => Next::End,
                r = self.seq.changed() => match r {
                    Ok(()) => Next::Seq,
                    Err(_) => Next::End,
                },
                r = self.available.recv() => match r {
                    Ok(a) => Next::Available(a),
                    // Fell behind: the newest seq says enough to catch up.
                    Err(RecvError::Lagged(_)) => Next::Seq,
                    Err(RecvError::Closed) => Next::End,
                },
            };
            match next {
                Next::End => return None,
                Next::Seq => {
                    let e = self.changed();
                    return Some((Ok(e), self));
                }
                Next::Available(a) => {
                    if self.wants(&a).await {
                        let data = FlaggedEvent {
                            id: a.id,
                            version: a.version,
                        };
                        let e = Event::default()
                            .event(events::FLAGGED)
                            .data(serde_json::to_string(&data).expect("serialisable"));
                        return Some((Ok(e), self));
                    }
                }
            }
        }
    }
}

fn changed_event(seq: i64) -> Event {
    Event::default()
        .event(events::CHANGED)
        .id(seq.to_string())
        .data(serde_json::to_string(&ChangedEvent { seq }).expect("serialisable"))
}

/// `GET /v1/events`.
pub async fn events(
    State(node): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let device = listener(&node, &headers).await?;
    // The device's own share first: a device at its limit must not take a node-wide permit
    // from another, even for a moment.
    let device_slot = match &device {
        Some(d) => Some(
            node.events
                .device_slot(d)
                .ok_or_else(|| ApiError::LimitReached {
                    code: ErrorCode::Busy,
                    limit: "max_event_streams_per_device",
                    value: node.config.max_event_streams_per_device.to_string(),
                    message: format!(
                "device {d} has as many event streams open as this node allows one device; \
                 close one first"
            ),
                })?,
        ),
        None => None,
    };
    let permit = node
        .events
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy {
            what: "event streams",
            limit: "max_event_streams",
        })?;
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let mut seq = node.events.subscribe_seq();
    let available = node.events.subscribe_available();
    let now = *seq.borrow_and_update();
    let first = last_seen.filter(|&s| now > s).map(|_| changed_event(now));
    tracing::debug!(
        device = device.as_deref().unwrap_or("operator"),
        seq = now,
        "event stream opened"
    );
    let sub = Subscriber {
        node,
        device,
        seq,
        available,
        first,
        _permit: permit,
        _device_slot: device_slot,
    };
    let stream = futures::stream::unfold(sub, Subscriber::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
