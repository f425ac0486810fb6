//! Readers' annotations and the authors' decisions on them:
//! * `POST /v1/documents/{id}/annotations` (any node) takes a [`NewAnnotation`] and answers
//!   [`AnnotationCreated`];
//! * `GET /v1/annotations` (primaries, token) lists the vetting queue ([`AnnotationList`]);
//! * `POST /v1/annotations/{aid}/accept|reject` answers a [`DecisionOutcome`];
//! * `GET /v1/annotations/{aid}` (any node) shows one annotation's [`AnnotationStatus`];
//! * `GET /v1/documents/{id}/annotations` (any node) lists the accepted ones
//!   ([`AcceptedAnnotations`]).
//!
//! The annotation and decision *messages* between nodes are `messages::{Annotation, Decision}`.

use serde::{Deserialize, Serialize};

use super::Timestamp;
use crate::messages::AnnotationState;
use crate::DocId;

/// Longest annotation text, in characters.
pub const MAX_TEXT: usize = 20_000;
/// Longest author name, in characters.
pub const MAX_AUTHOR: usize = 200;

/// `POST /v1/documents/{id}/annotations` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAnnotation {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// A UUID chosen by the client, which makes the request idempotent: a device that queued
    /// the annotation offline can send it again after a lost answer without a second copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The answer to a [`NewAnnotation`]: 201 for a new annotation; 200 with `duplicate` when one
/// with the client's `id` exists for this document already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnotationCreated {
    pub id: String,
    pub doc_id: DocId,
    /// The version it annotates (the current one when it was written).
    pub doc_version: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// One entry of the authors' vetting queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnotationEntry {
    pub id: String,
    pub doc_id: String,
    pub doc_version: i64,
    #[serde(default)]
    pub author: String,
    pub text: String,
    /// pending | accepted | rejected
    pub state: String,
    #[serde(default)]
    pub created: Option<Timestamp>,
    #[serde(default)]
    pub document_title: Option<String>,
    /// The annotated document is tombstoned now: the author may reactivate it.
    #[serde(default)]
    pub document_deleted: Option<bool>,
}

/// `GET /v1/annotations`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnotationList {
    pub annotations: Vec<AnnotationEntry>,
}

/// What anyone holding an annotation's id may read of it, on any node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnotationStatus {
    pub id: String,
    pub doc_id: String,
    pub doc_version: i64,
    #[serde(default)]
    pub author: String,
    pub text: String,
    /// pending | accepted | rejected
    pub state: String,
    #[serde(default)]
    pub created: Option<Timestamp>,
    #[serde(default)]
    pub decided: Option<Timestamp>,
}

/// `GET /v1/documents/{id}/annotations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedAnnotations {
    pub doc_id: DocId,
    pub annotations: Vec<AnnotationStatus>,
}

/// `POST /v1/annotations/{aid}/accept|reject`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionOutcome {
    pub id: String,
    pub state: AnnotationState,
    pub decided_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(v: &T) -> String
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let json = serde_json::to_string(v).unwrap();
        assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), v, "{json}");
        json
    }

    #[test]
    fn every_annotation_body_round_trips() {
        let doc = DocId::new();
        let at = Some(Timestamp(1_763_768_000_123));
        round_trip(&NewAnnotation {
            text: "typo on p. 3".into(),
            author: Some("ana".into()),
            id: Some(DocId::new().to_string()),
        });
        let created = AnnotationCreated {
            id: "a".into(),
            doc_id: doc,
            doc_version: 2,
            duplicate: false,
        };
        assert!(!round_trip(&created).contains("duplicate"));
        assert!(round_trip(&AnnotationCreated {
            duplicate: true,
            ..created
        })
        .contains(r#""duplicate":true"#));
        round_trip(&AnnotationList {
            annotations: vec![AnnotationEntry {
                id: "a".into(),
                doc_id: doc.to_string(),
                doc_version: 1,
                author: String::new(),
                text: "t".into(),
                state: "pending".into(),
                created: at,
                document_title: Some("Manual".into()),
                document_deleted: Some(false),
            }],
        });
        let status = AnnotationStatus {
            id: "a".into(),
            doc_id: doc.to_string(),
            doc_version: 1,
            author: "ana".into(),
            text: "t".into(),
            state: "accepted".into(),
            created: at,
            decided: at,
        };
        round_trip(&status);
        round_trip(&AcceptedAnnotations {
            doc_id: doc,
            annotations: vec![status],
        });
        let d = round_trip(&DecisionOutcome {
            id: "a".into(),
            state: AnnotationState::Rejected,
            decided_at: Timestamp(0),
        });
        assert!(d.contains(r#""state":"rejected""#));
    }

    #[test]
    fn unknown_fields_of_a_new_annotation_are_refused() {
        assert!(serde_json::from_str::<NewAnnotation>(r#"{"text":"t","extra":1}"#).is_err());
    }
}
