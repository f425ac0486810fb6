//! Bulk publication (`POST /v1/documents/batch`): the answer, one item per `file` part of the
//! request, in the request's order.

use serde::{Deserialize, Serialize};

use super::{ErrorCode, PublishResponse};

/// What came of a batch: how many items were published and refused, and each item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub published: usize,
    pub refused: usize,
    pub items: Vec<BatchItem>,
}

/// One item of a batch: the `file` part at `index` (counted from 0 among the `file` parts),
/// published or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    pub index: usize,
    /// The document's file name; `None` for a refusal that no `file` part names (a `meta`
    /// part at the end of the request, or a request that broke off between parts).
    pub filename: Option<String>,
    #[serde(flatten)]
    pub outcome: ItemOutcome,
}

/// A published item carries its document's id, version, MD5 and size as `POST /v1/documents`
/// answers them; a refused one its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ItemOutcome {
    Published(PublishResponse),
    Refused { error: ItemError },
}

/// Why an item was refused: the `code` a node gives in [`ErrorBody`](super::ErrorBody) for the
/// same failure of a single publication, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    pub code: ErrorCode,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_read_back_as_written() {
        let json = r#"{"published":1,"refused":1,"items":[
            {"index":0,"filename":"a.txt","id":"01890a5d-ac96-774b-bcce-b302099a8057",
             "version":1,"md5":"d41d8cd98f00b204e9800998ecf8427e","size":0},
            {"index":1,"filename":"b.txt","error":{"code":"too_large","message":"big"}}]}"#;
        let r: BatchResponse = serde_json::from_str(json).unwrap();
        assert!(matches!(r.items[0].outcome, ItemOutcome::Published(_)));
        match &r.items[1].outcome {
            ItemOutcome::Refused { error } => assert_eq!(error.code, ErrorCode::TooLarge),
            other => panic!("{other:?}"),
        }
        let again: BatchResponse =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }
}
