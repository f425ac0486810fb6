//! JSON bodies of the node HTTP API (ARCHITECTURE.md §6.2): every body a docfed program sends
//! another is defined once, here or in a module beside this one, and both sides use the same
//! type (the node serialises it, the portal, the command line and the harnesses deserialise it).
//! Field names here are the contract.
//!
//! * this module: documents, versions, the change feed, publication, errors, health, and the
//!   conflict rule ([`supersedes`]);
//! * [`peers`]: presence (`GET /v1/peers`) and the background tasks' table;
//! * [`propagation`]: which node holds which version (`GET /v1/documents/{id}/propagation`);
//! * [`annotations`]: readers' annotations and the authors' decisions;
//! * [`sources`]: reachback sources (`GET /v1/sources`);
//! * [`gc`]: the retention policy and collection reports (`/v1/admin/gc`);
//! * [`devices`]: device registration and flags;
//! * [`events`]: the event stream's data (`GET /v1/events`);
//! * [`admin`]: operator bodies (`POST /v1/admin/import`);
//! * [`batch`]: the answer to a bulk publication (`POST /v1/documents/batch`).
//!
//! Optional fields a newer node added are `#[serde(default)]` on the reading side, so an older
//! node's answer still reads.

pub mod admin;
pub mod annotations;
pub mod batch;
pub mod devices;
pub mod events;
pub mod gc;
pub mod peers;
pub mod propagation;
pub mod sources;

pub use devices::{DeviceInfo, DeviceRegistration, RegisterDevice};

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{DocId, Md5Hex, Scope, Sha256Hex};

/// A point in time, kept as Unix milliseconds (how the node stores it) and written as RFC 3339
/// (how people and other programs read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    fn system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_millis(self.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(self.0.unsigned_abs())
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_rfc3339_millis(self.system_time()).fmt(f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)?;
        let ms = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        };
        Ok(Self(ms))
    }
}

/// One version of a document: its metadata and the content it points to. Every change,
/// tombstones included, is a version; all of them are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentVersion {
    pub id: DocId,
    pub version: i64,
    /// The node that accepted this version (a primary), the tie-breaker between concurrent
    /// versions with the same number.
    pub origin: String,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    /// The author's file name: metadata only, never used to build a path.
    pub filename: String,
    pub source: String,
    pub scope: Scope,
    pub content_type: String,
    pub md5: Md5Hex,
    pub size: u64,
    pub deleted: bool,
    pub created_at: Timestamp,
    /// Who published this version (the portal's author name); empty when not given.
    #[serde(default)]
    pub author: String,
    /// SHA-256 of the content: collision-resistant, unlike the MD5 address. Absent only on
    /// versions recorded before docfed computed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Hex>,
    /// The accepting primary's ed25519 signature of [`DocumentVersion::signing_input`], hex.
    /// Present in federations whose topology lists keys; every node checks it before
    /// recording the version (ARCHITECTURE.md §7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The bytes stay at a reachback source until first read (ARCHITECTURE.md §2.9): no node
    /// pulls them ahead of a request; the first request streams them from the source through
    /// the tiers, and the primary then publishes the same content as an ordinary version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lazy: bool,
}

impl DocumentVersion {
    /// The bytes a primary signs for this version: every field but the signature itself, each
    /// length-prefixed after a domain tag, so no two different versions share an encoding and
    /// nothing else a node signs (messages, pull requests) can pass for a version.
    pub fn signing_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.description.len());
        let mut field = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(bytes);
        };
        field(b"docfed-version-v1");
        field(self.id.to_string().as_bytes());
        field(&self.version.to_be_bytes());
        field(self.origin.as_bytes());
        field(self.title.as_bytes());
        field(self.description.as_bytes());
        field(&(self.tags.len() as u64).to_be_bytes());
        for t in &self.tags {
            field(t.as_bytes());
        }
        field(self.filename.as_bytes());
        field(self.source.as_bytes());
        field(self.scope.to_string().as_bytes());
        field(self.content_type.as_bytes());
        field(self.md5.as_str().as_bytes());
        field(self.sha256.as_ref().map_or("", |h| h.as_str()).as_bytes());
        field(&self.size.to_be_bytes());
        field(&[u8::from(self.deleted)]);
        field(&self.created_at.millis().to_be_bytes());
        field(self.author.as_bytes());
        // Only when set, so every signature made before lazy versions existed still verifies.
        if self.lazy {
            field(b"lazy");
        }
        out
    }

    /// Whether this version supersedes `other` by the federation's conflict rule
    /// ([`supersedes`]).
    pub fn supersedes(&self, other: &DocumentVersion) -> bool {
        supersedes((self.version, &self.origin), (other.version, &other.origin))
    }
}

/// The conflict rule every node and every replica applies to two versions of one document,
/// each given as `(version, origin)`: the higher number wins, then the higher origin id (the
/// primary that accepted it), so all of them resolve concurrent edits the same way without
/// talking to each other. The node's SQL statements that pick a winner
/// (`node/src/db/import.rs`, retention) spell the same comparison in SQL.
pub fn supersedes(a: (i64, &str), b: (i64, &str)) -> bool {
    a > b
}

/// The current state of a document as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentMeta {
    #[serde(flatten)]
    pub current: DocumentVersion,
    /// When the first version was published.
    pub published_at: Timestamp,
    /// Whether this node holds the bytes of the current version.
    pub available_here: bool,
    /// The nodes whose scope makes them hold the content (regional nodes, then primaries);
    /// empty on a standalone node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub available_at: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEntry {
    #[serde(flatten)]
    pub version: DocumentVersion,
    /// This version is the document's current one.
    pub current: bool,
    /// The bytes of this version are held by this node.
    pub available_here: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionList {
    pub id: DocId,
    /// Oldest first.
    pub versions: Vec<VersionEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentList {
    pub documents: Vec<DocumentMeta>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Published,
    Updated,
    Deleted,
    Reactivated,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Published => "published",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Reactivated => "reactivated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "published" => ChangeKind::Published,
            "updated" => ChangeKind::Updated,
            "deleted" => ChangeKind::Deleted,
            "reactivated" => ChangeKind::Reactivated,
            _ => return None,
        })
    }
}

/// One entry of the change feed: a version became known to this node. The entry carries the
/// version's metadata so a client can rebuild the directory from the feed alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub seq: i64,
    pub kind: ChangeKind,
    pub at: Timestamp,
    pub document: DocumentVersion,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeFeed {
    pub changes: Vec<Change>,
    /// The highest sequence number returned, or `since` when there was nothing newer: pass it as
    /// the next `since`.
    pub last_seq: i64,
    /// The node's compaction horizon: at and below this seq the feed keeps only the latest
    /// change of each document (retention, ARCHITECTURE.md §4.4). A client whose `since` is
    /// below it gets a snapshot of the documents changed in between (one entry each, deletions
    /// included) followed by every change since, and ends with the same directory as a client
    /// that saw every change. 0 when nothing was compacted; absent from older nodes.
    #[serde(default)]
    pub horizon: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResponse {
    pub id: DocId,
    pub version: i64,
    pub md5: Md5Hex,
    pub size: u64,
}

/// The body of every error response: `error` is for people, `code` for programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: ErrorCode,
}

/// What went wrong, as a node says it in [`ErrorBody::code`]: the portal and the command line
/// decide on this, not on the HTTP status, which several codes share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A field of the request is invalid; the message names it.
    InvalidField,
    BadRequest,
    /// A token or device secret is missing or wrong (401).
    Unauthorized,
    /// The node registers no more devices (`--max-devices`).
    DeviceLimit,
    /// A device flags as much as it may.
    FlagQuota,
    NotFound,
    /// Not possible in the document's present state (e.g. editing a deleted document).
    Conflict,
    /// Only another tier does this (e.g. publishing at a regional node).
    WrongTier,
    /// Only a server of the federation may do this (a pull without a node's certificate).
    Forbidden,
    /// The content is still arriving here: retry shortly (503 with `Retry-After`).
    NotYet,
    /// A cap on concurrent work is reached: retry later.
    Busy,
    /// The document or content is deleted (410).
    Deleted,
    TooLarge,
    RangeNotSatisfiable,
    InsufficientStorage,
    UploadAborted,
    /// The node's database is unavailable for now.
    Unavailable,
    Internal,
    /// A code this build does not know (a newer node): decide on the HTTP status.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// This code, or when it is [`Unknown`](Self::Unknown) (a newer node, or an answer that is
    /// not a node's, such as a proxy's), the code a node gives with that HTTP status.
    pub fn or_from_status(self, status: u16) -> ErrorCode {
        if self != ErrorCode::Unknown {
            return self;
        }
        match status {
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::WrongTier,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::Conflict,
            410 => ErrorCode::Deleted,
            413 => ErrorCode::TooLarge,
            416 => ErrorCode::RangeNotSatisfiable,
            429 => ErrorCode::Busy,
            503 => ErrorCode::Unavailable,
            507 => ErrorCode::InsufficientStorage,
            400..=499 => ErrorCode::BadRequest,
            500..=599 => ErrorCode::Internal,
            _ => ErrorCode::Unknown,
        }
    }

    /// Whether asking again later may succeed without changing the request.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::NotYet | ErrorCode::Busy | ErrorCode::Unavailable | ErrorCode::Internal
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub node: String,
    pub tier: String,
    #[serde(default)]
    pub region: Option<String>,
    pub status: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Serialises `v`, checks that it reads back equal, and returns the JSON.
    pub(crate) fn round_trip<T>(v: &T) -> String
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let json = serde_json::to_string(v).unwrap();
        assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), v, "{json}");
        json
    }

    #[test]
    fn timestamp_round_trips_through_json() {
        let t = Timestamp(1_763_768_000_123);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2025-11-21T23:33:20.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }

    #[test]
    fn error_codes_are_snake_case_and_unknown_ones_are_tolerated() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"error":"e","code":"range_not_satisfiable"}"#).unwrap();
        assert_eq!(body.code, ErrorCode::RangeNotSatisfiable);
        let newer: ErrorBody =
            serde_json::from_str(r#"{"error":"e","code":"something_new"}"#).unwrap();
        assert_eq!(newer.code, ErrorCode::Unknown);
        assert_eq!(
            serde_json::to_string(&ErrorCode::NotYet).unwrap(),
            "\"not_yet\""
        );
    }
}
