//! `GET /v1/sources` (ARCHITECTURE.md §2.9): each reachback source of the topology, whether this
//! node runs it now, and its status as this node recorded it.

use axum::extract::State;
use axum::Json;
use docfed_shared::sources::SourceKind;
use docfed_shared::wire::sources::{SourceStatus, SourceView, SourcesView};

use super::{AppState, Authorized};
use crate::error::ApiError;

pub async fn sources(
    State(node): State<AppState>,
    _auth: Authorized,
) -> Result<Json<SourcesView>, ApiError> {
    Ok(Json(view(&node).await?))
}

/// Every source of the topology with this node's record of it (also read by `/metrics`).
pub async fn view(node: &AppState) -> Result<SourcesView, ApiError> {
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
                .unwrap_or_else(|| SourceStatus {
                    source: spec.name.clone(),
                    ..SourceStatus::default()
                });
            let path = match spec.kind {
                SourceKind::Watch => spec.path.as_ref().map(|p| p.display().to_string()),
                SourceKind::Http | SourceKind::Exec => None,
            };
            SourceView {
                kind: spec.kind.as_str().to_owned(),
                scope: spec.scope().to_string(),
                path,
                active: since.is_some(),
                active_since: since.map(|t| t.millis()),
                name: spec.name,
                status,
            }
        })
        .collect();
    Ok(SourcesView {
        node: node.config.node_id.clone(),
        sources,
    })
}

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
