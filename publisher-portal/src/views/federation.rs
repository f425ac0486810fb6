//! The federation page: every node's health and queues as the primaries see them.

use maud::{html, Markup};

use super::{layout, when, PageCtx};
use crate::federation::NodeRow;

/// The operator's view: every node, its health, queues and last error.
pub fn federation_page(ctx: &PageCtx, rows: &[NodeRow], summary: &str, asked_ms: i64) -> Markup {
    let depth = |v: Option<i64>| match v {
        Some(n) => n.to_string(),
        None => "–".into(),
    };
    layout(
        ctx,
        "Federation",
        html! {
            h1 { "Federation" }
            p #federation-summary role="status" { (summary) }
            section.card {
                div.table-wrap {
                    table.federation.stack #federation {
                        caption.visually-hidden { "Every node of the federation" }
                        thead { tr {
                            th scope="col" { "Node" } th scope="col" { "Tier" } th scope="col" { "Region" }
                            th scope="col" { "Health" } th scope="col" { "Last seen" }
                            th scope="col" { "Outbox" } th scope="col" { "Pending fetches" } th scope="col" { "Last error" }
                        } }
                        tbody {
                            @for r in rows {
                                tr class={ "health-" (r.health.as_str()) } data-node=(r.id) {
                                    th scope="row" data-label="Node" { (r.id) br; small.muted { (r.url) } }
                                    td data-label="Tier" { (r.tier) }
                                    td data-label="Region" { (r.region.as_deref().unwrap_or("–")) }
                                    td data-label="Health" {
                                        span class={ "health badge " (r.health.as_str()) } { (r.health.as_str()) }
                                        @if !r.detail.is_empty() { br; small.muted { (r.detail) } }
                                    }
                                    td data-label="Last seen" { @match r.last_seen_ms { Some(t) => (when(t)), None => "–" } }
                                    td data-label="Outbox" { (depth(r.outbox)) }
                                    td data-label="Pending fetches" { (depth(r.pending_fetches)) }
                                    td data-label="Last error" {
                                        @if let Some(e) = &r.error { span.error-text { (e) } } @else { "–" }
                                    }
                                }
                            }
                        }
                    }
                }
                p.hint {
                    "What the primaries know, as of " (when(asked_ms)) ": a primary's health is the portal's own probe; "
                    "every other node's is the primaries' presence table (their health probes and mDNS). "
                    "Queue depths are reported by the primaries for themselves (outbox: notifications and receipts "
                    "not yet handed to the broker; pending fetches: content still to pull). Reload for a fresh view."
                }
            }
        },
    )
}
