//! Where a document's content must be held: everywhere (`global`) or in one region (`region:R`,
//! meaning R's regional node and R's backup node). Metadata always goes everywhere.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Scope {
    Global,
    Region(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope must be `global` or `region:NAME` (NAME: 1-64 of a-z, 0-9, `-`, `_`), got {0:?}")]
pub struct ParseScopeError(pub String);

/// Region names appear in queue names, URLs and file names of operators' tooling, so they are
/// kept to a conservative alphabet.
pub fn is_valid_region(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
}

impl Scope {
    pub fn region(&self) -> Option<&str> {
        match self {
            Scope::Global => None,
            Scope::Region(r) => Some(r),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Region(r) => write!(f, "region:{r}"),
        }
    }
}

impl FromStr for Scope {
    type Err = ParseScopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "global" {
            return Ok(Scope::Global);
        }
        match s.strip_prefix("region:") {
            Some(r) if is_valid_region(r) => Ok(Scope::Region(r.to_owned())),
            _ => Err(ParseScopeError(s.to_owned())),
        }
    }
}

impl TryFrom<String> for Scope {
    type Error = ParseScopeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> Self {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!("global".parse::<Scope>().unwrap(), Scope::Global);
        let eu: Scope = "region:eu".parse().unwrap();
        assert_eq!(eu.region(), Some("eu"));
        assert_eq!(eu.to_string(), "region:eu");
        for bad in ["", "Global", "region:", "region:EU", "region:a/b", "eu"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad:?} accepted");
        }
    }
}
