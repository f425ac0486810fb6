//! The propagation table: which node holds which version of a document.

use maud::{html, Markup};

use super::when_str;

/// One row of the propagation table, as the page renders it and `propagation.json` returns it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PropRow {
    pub node: String,
    pub tier: String,
    /// Version the node reported holding, if any.
    pub version: Option<i64>,
    /// `bytes`, `metadata only` or `tombstone`.
    pub holds: String,
    /// When the node reported it (RFC 3339, empty if it did not), as the page shows it:
    /// relative, and exact for the hover text.
    pub at: String,
    pub at_rel: String,
    pub at_exact: String,
    /// `current`, `older`, `waiting`, `slow` or `down`.
    pub state: String,
    /// What the status column says.
    pub label: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PropView {
    pub version: i64,
    pub deleted: bool,
    pub rows: Vec<PropRow>,
    /// e.g. "5 of 7 nodes hold version 3".
    pub summary: String,
    /// e.g. "5/7 nodes, 1 down", for the document list.
    pub short: String,
    /// Every node holds the current version.
    pub complete: bool,
    /// Nodes that have not caught up and that the primaries see as down.
    pub down: usize,
}

pub fn propagation_table(doc_id: &str, p: Option<&PropView>) -> Markup {
    html! {
        section.card #propagation-section {
            h2 { "Propagation" }
            p #propagation-summary role="status" aria-live="polite" {
                @match p { Some(p) => (p.summary), None => "Propagation status is unavailable while no primary answers." }
            }
            div.table-wrap {
                table.propagation.stack #propagation data-url={ "/documents/" (doc_id) "/propagation.json" } {
                    caption.visually-hidden { "Which node holds which version" }
                    thead { tr { th scope="col" { "Node" } th scope="col" { "Tier" } th scope="col" { "Version" }
                        th scope="col" { "Holds" } th scope="col" { "Reported" } th scope="col" { "Status" } } }
                    tbody {
                        @if let Some(p) = p {
                            @for r in &p.rows {
                                tr class={ "state-" (r.state) } {
                                    td data-label="Node" { (r.node) } td data-label="Tier" { (r.tier) }
                                    td data-label="Version" { @if let Some(v) = r.version { (v) } @else { "–" } }
                                    td data-label="Holds" { @if r.holds == "tombstone" { span.badge.warn { "tombstone" } } @else { (r.holds) } }
                                    td data-label="Reported" { @if !r.at.is_empty() { (when_str(&r.at)) } }
                                    td data-label="Status" { (r.label) }
                                }
                            }
                        }
                    }
                }
            }
            p.hint { "Refreshes every few seconds while the document spreads. "
                strong { "down" } ": the primaries cannot reach the node; "
                strong { "slow" } ": reachable, but still without the version a minute after it was published." }
        }
    }
}
