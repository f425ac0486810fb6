//! The sources page: each reachback source and every primary's record of its runs.

use maud::{html, Markup};

use super::{layout, scope_label, when, PageCtx};
use crate::sources::{RecordState, SourceRow, SourcesView};

/// The operator's view of the reachback sources: per source, the primary running it and every
/// primary's record of its runs.
pub fn sources_page(ctx: &PageCtx, v: &SourcesView) -> Markup {
    layout(
        ctx,
        "Sources",
        html! {
            h1 { "Sources" }
            p #sources-summary role="status" { (v.summary()) }
            @if !v.any_answer {
                section.card {
                    p { "No primary answered, so the portal cannot tell which sources there are or how they run:" }
                    ul { @for (name, e) in &v.unreachable {
                        li { strong { (name) } ": " span.error-text { (e) } }
                    } }
                }
            } @else if v.sources.is_empty() {
                section.card {
                    p.empty #no-sources { "No sources are configured. Reachback sources (watched folders, HTTP feeds, "
                        "programs) are " code { "[[source]]" } " tables in the topology file; the primaries run them." }
                    @for (name, e) in &v.unreachable {
                        p.muted { (name) " did not answer (" span.error-text { (e) } ")." }
                    }
                }
            }
            @for s in &v.sources { (source_card(s)) }
            p.hint {
                "As of " (when(v.at_ms)) ". A source runs on one primary at a time, the one holding its lease; each primary "
                "counts only the runs it made itself, so after a takeover the history is split between them. "
                "Items seen: in the last complete run. Reload for a fresh view."
            }
        },
    )
}

fn source_card(s: &SourceRow) -> Markup {
    let count = |n: i64| n.to_string();
    let at = |t: Option<i64>| match t {
        Some(t) => when(t),
        None => html! { "never" },
    };
    html! {
        section.card.source data-source=(s.name) {
            h2 { (s.name) " " span.badge { (s.kind) } }
            p { "Scope: " (scope_label(&s.scope)) "." }
            p.running {
                @if s.running.is_empty() {
                    span.badge.warn { "not running" } " No primary runs it"
                    @if s.partly_unknown() { " among those that answered" } "."
                } @else {
                    span.badge.ok { "running" } " Run by "
                    @for (i, (primary, since)) in s.running.iter().enumerate() {
                        @if i > 0 { " and " }
                        strong.primary { (primary) }
                        @if let Some(t) = since { " since " (when(*t)) }
                    }
                    "."
                }
            }
            div.table-wrap {
                table.sources.stack {
                    caption.visually-hidden { "Runs of source " (s.name) " on each primary" }
                    thead { tr {
                        th scope="col" { "Primary" } th scope="col" { "Runs" } th scope="col" { "Last run" }
                        th scope="col" { "Last success" } th scope="col" { "Items seen" } th scope="col" { "Published" }
                        th scope="col" { "Removed" } th scope="col" { "Failed" } th scope="col" { "Last error" }
                    } }
                    tbody {
                        @for r in &s.records {
                            @match &r.state {
                                RecordState::Reported(st) => {
                                    tr data-primary=(r.primary) class=[st.active.then_some("active")] {
                                        th scope="row" data-label="Primary" {
                                            (r.primary)
                                            @if st.active { " " span.badge.ok { "runs it" } }
                                        }
                                        td data-label="Runs" { (count(st.status.runs)) }
                                        td data-label="Last run" { (at(st.status.last_run_at)) }
                                        td data-label="Last success" { (at(st.status.last_success_at)) }
                                        td data-label="Items seen" { (count(st.status.items_seen)) }
                                        td data-label="Published" { (count(st.status.published)) }
                                        td data-label="Removed" { (count(st.status.removed)) }
                                        td data-label="Failed" { (count(st.status.failed)) }
                                        td data-label="Last error" {
                                            @match &st.status.last_error {
                                                Some(e) => {
                                                    span.error-text { (e) }
                                                    @if let Some(t) = st.status.last_error_at { br; small.muted { (when(t)) } }
                                                },
                                                None => "–",
                                            }
                                        }
                                    }
                                },
                                RecordState::Unreachable(e) => {
                                    tr.unreachable data-primary=(r.primary) {
                                        th scope="row" data-label="Primary" { (r.primary) " " span.badge.down { "unreachable" } }
                                        td data-label="Status" colspan="8" { span.error-text { "Did not answer: " (e) } }
                                    }
                                },
                                RecordState::NotListed => {
                                    tr data-primary=(r.primary) {
                                        th scope="row" data-label="Primary" { (r.primary) }
                                        td data-label="Status" colspan="8" { span.muted { "Does not list this source: its topology differs." } }
                                    }
                                },
                            }
                        }
                    }
                }
            }
        }
    }
}
