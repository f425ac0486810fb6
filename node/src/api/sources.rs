//! `GET /v1/sources` (ARCHITECTURE.md §2.9): each reachback source of the topology, whether this
//! node runs it now, and its status as this node recorded it.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::{AppState, Authorized};
use crate::db::sources::StatusRow;
use crate::error::ApiError;

#[derive(Serialize)]
pub struct SourcesView {
    pub node: String,
    pub sources: Vec<SourceView>,
}

#[derive(Serialize)]
pub struct SourceView {
    pub name: String,
    pub kind: &'static str,
    pub scope: String,
    /// Whether this node holds the source's lease and runs it now.
    pub active: bool,
    /// Since when (ms since the epoch), when active.
    pub active_since: Option<i64>,
    /// This node's record of the source: its runs while it held the lease.
    #[serde(flatten)]
    pub status: StatusRow,
}

/// Token only: a source's errors name its paths and URLs.
pub async fn sources(
    State(node): State<AppState>,
    _auth: Authorized,
) -> Result<Json<SourcesView>, ApiError> {
    let rows = node.db.source_statuses().await?;
    let specs = node
        .federation()
        .map(|f| f.topology.sources.clone())
        .unwrap_or_default();
    let sources = specs
        .into_iter()
        .map(|spec| {
            let since = node.sources.since(&spec.name);
            let status = rows
                .iter()
                .find(|r| r.source == spec.name)
                .cloned()
                .unwrap_or_else(|| StatusRow {
                    source: spec.name.clone(),
                    ..StatusRow::default()
                });
            SourceView {
                kind: spec.kind.as_str(),
                scope: spec.scope().to_string(),
                active: since.is_some(),
                active_since: since.map(|t| t.millis()),
                name: spec.name,
                status,
            }
        })
        .collect();
    Ok(Json(SourcesView {
        node: node.config.node_id.clone(),
        sources,
    }))
}

/// Prometheus lines per source.
pub fn render_metrics(node: &str, view: &[SourceView]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    type Family = (
        &'static str,
        &'static str,
        &'static str,
        fn(&SourceView) -> i64,
    );
    let families: [Family; 5] = [
        (
            "docfed_source_active",
            "gauge",
            "Whether this node runs the source now.",
            |s| i64::from(s.active),
        ),
        (
            "docfed_source_items_seen",
            "gauge",
            "Items in the source's last complete run.",
            |s| s.status.items_seen,
        ),
        (
            "docfed_source_published_total",
            "counter",
            "Versions this node made from the source's items.",
            |s| s.status.published,
        ),
        (
            "docfed_source_removed_total",
            "counter",
            "Documents this node deleted because their item left the source.",
            |s| s.status.removed,
        ),
        (
            "docfed_source_failed_total",
            "counter",
            "Items this node could not take.",
            |s| s.status.failed,
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in view {
            let _ = writeln!(
                out,
                "{name}{{node=\"{node}\",source=\"{}\"}} {}",
                s.name,
                value(s)
            );
        }
    }
    out
}
