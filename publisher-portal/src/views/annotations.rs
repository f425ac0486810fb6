//! The authors' annotations inbox.

use docfed_shared::wire::annotations::AnnotationEntry;
use maud::{html, Markup};

use super::{layout, when, PageCtx};

pub fn annotations_page(ctx: &PageCtx, list: Option<&[AnnotationEntry]>) -> Markup {
    layout(
        ctx,
        "Annotations",
        html! {
            h1 { "Annotations inbox" }
            p.hint { "Annotations readers sent on your documents. Accept attaches one to its document; reject discards it." }
            @match list {
                None => p.muted { "The inbox is unavailable while no primary answers." },
                Some([]) => p.empty { "No pending annotations." },
                Some(list) => ul.inbox {
                    @for a in list {
                        @let deleted = a.document_deleted.unwrap_or(false);
                        li.card.deleted[deleted] {
                            p.about {
                                "On " a href={ "/documents/" (a.doc_id) } { (a.document_title.as_deref().unwrap_or("(unknown document)")) }
                                " (version " (a.doc_version) ")"
                                @if deleted { " " span.badge.warn { "document deleted" } }
                            }
                            blockquote { (a.text) }
                            p.muted { "— " (if a.author.is_empty() { "anonymous" } else { &a.author })
                                @if let Some(c) = a.created { ", " (when(c.millis())) } }
                            div.actions {
                                @if deleted {
                                    form method="post" action={ "/documents/" (a.doc_id) "/reactivate" } {
                                        input type="hidden" name="csrf" value=(ctx.csrf);
                                        input type="hidden" name="back" value="annotations";
                                        button.primary type="submit" { "Reactivate document" }
                                    }
                                }
                                form method="post" action={ "/annotations/" (a.id) "/accept" } {
                                    input type="hidden" name="csrf" value=(ctx.csrf);
                                    input type="hidden" name="doc_id" value=(a.doc_id);
                                    button type="submit" { "Accept" }
                                }
                                form method="post" action={ "/annotations/" (a.id) "/reject" } {
                                    input type="hidden" name="csrf" value=(ctx.csrf);
                                    input type="hidden" name="doc_id" value=(a.doc_id);
                                    button type="submit" { "Reject" }
                                }
                            }
                        }
                    }
                },
            }
        },
    )
}
