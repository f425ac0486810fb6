//! Newtypes for the identifiers that cross process boundaries, validated on parse so that a value
//! of these types is always safe to log, to put in a URL and to use as a database key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    #[error("not a document id (expected a UUID such as 01890a5d-ac96-774b-bcce-b302099a8057)")]
    DocId,
    #[error("not an MD5 digest (expected 32 lowercase hexadecimal characters)")]
    Md5,
    #[error("not a SHA-256 digest (expected 64 lowercase hexadecimal characters)")]
    Sha256,
}

/// A document id: a UUIDv7 for documents published through the API, so ids sort by creation
/// time, which keeps directory listings and keyset paging cheap; a UUIDv8 derived from the source
/// and item for reachback documents (`sources::item_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DocId(uuid::Uuid);

impl DocId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// An id chosen by the caller (reachback items derive theirs, `sources::item_id`).
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id)
    }
}

impl Default for DocId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for DocId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical hyphenated form, so one document has exactly one spelling.
        if s.len() != 36 {
            return Err(ParseIdError::DocId);
        }
        let id = uuid::Uuid::parse_str(s).map_err(|_| ParseIdError::DocId)?;
        if id.hyphenated().to_string() != s {
            return Err(ParseIdError::DocId);
        }
        Ok(Self(id))
    }
}

impl TryFrom<String> for DocId {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DocId> for String {
    fn from(id: DocId) -> Self {
        id.to_string()
    }
}

/// An MD5 digest in lowercase hex: the content address of a document version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Md5Hex(String);

impl Md5Hex {
    pub fn from_digest(d: [u8; 16]) -> Self {
        let mut s = String::with_capacity(32);
        for b in d {
            use fmt::Write;
            let _ = write!(s, "{b:02x}");
        }
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The MD5 of zero bytes.
    pub fn empty() -> Self {
        Self::from_digest(md5::compute([]).0)
    }
}

impl fmt::Display for Md5Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Md5Hex {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseIdError::Md5)
        }
    }
}

impl TryFrom<String> for Md5Hex {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Md5Hex> for String {
    fn from(m: Md5Hex) -> Self {
        m.0
    }
}

/// A SHA-256 digest in lowercase hex: the collision-resistant hash a version's signature covers,
/// beside the MD5 that stays the content address (MD5 alone lets whoever crafts a collision
/// substitute content).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn from_digest(d: [u8; 32]) -> Self {
        Self(hex::encode(d))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Sha256Hex {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseIdError::Sha256)
        }
    }
}

impl TryFrom<String> for Sha256Hex {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Sha256Hex> for String {
    fn from(m: Sha256Hex) -> Self {
        m.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_id_round_trips_and_rejects_other_spellings() {
        let id = DocId::new();
        assert_eq!(id.to_string().parse::<DocId>().unwrap(), id);
        assert!(id.to_string().to_uppercase().parse::<DocId>().is_err());
        assert!(id.to_string().replace('-', "").parse::<DocId>().is_err());
        assert!("../../etc/passwd".parse::<DocId>().is_err());
    }

    #[test]
    fn doc_ids_sort_by_creation() {
        let a = DocId::new();
        let b = DocId::new();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn md5_hex_validates() {
        assert_eq!(Md5Hex::empty().as_str(), "d41d8cd98f00b204e9800998ecf8427e");
        assert!("D41D8CD98F00B204E9800998ECF8427E"
            .parse::<Md5Hex>()
            .is_err());
        assert!("d41d8cd98f00b204e9800998ecf8427".parse::<Md5Hex>().is_err());
        assert!("../d41d8cd98f00b204e9800998ecf8".parse::<Md5Hex>().is_err());
    }
}
