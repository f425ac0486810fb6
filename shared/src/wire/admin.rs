//! Operator bodies: `POST /v1/admin/import` (a directory loaded from JSON lines of signed
//! versions).

use serde::{Deserialize, Serialize};

/// The answer to `POST /v1/admin/import`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Versions recorded.
    pub imported: u64,
    /// Versions this node held already.
    pub already_known: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_report_round_trips() {
        let r = ImportReport {
            imported: 5,
            already_known: 2,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"imported":5,"already_known":2}"#);
        assert_eq!(serde_json::from_str::<ImportReport>(&json).unwrap(), r);
    }
}
