//! `GET /v1/sources` (primaries, token): the topology's reachback sources, whether the
//! answering primary runs each one now (it holds the source's lease), and its own record of
//! their runs while it held the lease.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcesView {
    /// The answering primary.
    pub node: String,
    #[serde(default)]
    pub sources: Vec<SourceView>,
}

/// One source as a primary reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceView {
    pub name: String,
    /// watch | http | exec
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub scope: String,
    /// `watch`: the folder watched (absolute, as the node resolved it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// This primary holds the source's lease and runs it.
    #[serde(default)]
    pub active: bool,
    /// Unix ms, while active.
    #[serde(default)]
    pub active_since: Option<i64>,
    #[serde(flatten)]
    pub status: SourceStatus,
}

/// The answering primary's record of a source's runs (its `source_status` row).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The source's name again (the row's key).
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub runs: i64,
    /// Unix ms.
    #[serde(default)]
    pub last_run_at: Option<i64>,
    /// Unix ms.
    #[serde(default)]
    pub last_success_at: Option<i64>,
    /// Items in the last complete run.
    #[serde(default)]
    pub items_seen: i64,
    /// Versions made from the source's items.
    #[serde(default)]
    pub published: i64,
    /// Documents deleted because their item left the source.
    #[serde(default)]
    pub removed: i64,
    /// Items that could not be taken.
    #[serde(default)]
    pub failed: i64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Unix ms.
    #[serde(default)]
    pub last_error_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_view_round_trips_with_the_status_flattened() {
        let view = SourcesView {
            node: "primary-a".into(),
            sources: vec![SourceView {
                name: "inbox".into(),
                kind: "watch".into(),
                scope: "global".into(),
                path: Some("/srv/docfed/inbox".into()),
                active: true,
                active_since: Some(1_000),
                status: SourceStatus {
                    source: "inbox".into(),
                    runs: 3,
                    last_run_at: Some(2_000),
                    last_success_at: Some(2_000),
                    items_seen: 7,
                    published: 7,
                    removed: 1,
                    failed: 0,
                    last_error: None,
                    last_error_at: None,
                },
            }],
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["sources"][0]["items_seen"], 7);
        assert_eq!(json["sources"][0]["path"], "/srv/docfed/inbox");
        assert_eq!(serde_json::from_value::<SourcesView>(json).unwrap(), view);
    }
}
