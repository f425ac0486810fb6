//! The data of `GET /v1/events` (server-sent events): `changed` when the change feed moved
//! (a device then reads `/v1/changes`), `flagged` when a flagged document's new version is
//! available here (a device then fetches it).

use serde::{Deserialize, Serialize};

use crate::DocId;

/// The event's name when the change feed moved.
pub const CHANGED: &str = "changed";
/// The event's name when a flagged document's new version can be fetched here.
pub const FLAGGED: &str = "flagged";

/// `event: changed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedEvent {
    /// The feed's last sequence number.
    pub seq: i64,
}

/// `event: flagged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlaggedEvent {
    pub id: DocId,
    pub version: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_data_round_trips() {
        let c = ChangedEvent { seq: 42 };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"seq":42}"#);
        assert_eq!(serde_json::from_str::<ChangedEvent>(&json).unwrap(), c);
        let f = FlaggedEvent {
            id: DocId::new(),
            version: 3,
        };
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<FlaggedEvent>(&json).unwrap(), f);
    }
}
