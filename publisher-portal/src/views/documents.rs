//! The author's documents: the list, one document's page and the delete confirmation.

use docfed_shared::wire::annotations::AnnotationEntry;
use docfed_shared::wire::VersionEntry;
use maud::{html, Markup};

use super::{
    layout, propagation_table, scope_label, upload_form, when, PageCtx, PropView, UploadForm,
};
use crate::config::human_size;
use crate::db::{DocFilter, DocRow};

pub struct ListPage<'a> {
    pub filter: &'a DocFilter,
    pub rows: &'a [DocRow],
    pub has_more: bool,
    pub regions: &'a [String],
    /// Propagation of each listed document's current version, by id (those a primary answered
    /// for in time).
    pub propagation: &'a std::collections::HashMap<String, PropView>,
}

pub fn documents_page(ctx: &PageCtx, p: &ListPage) -> Markup {
    let f = p.filter;
    let page_link = |offset: u32| {
        let q = serde_urlencoded::to_string([
            ("q", f.q.as_str()),
            ("scope", f.scope.as_str()),
            ("tag", f.tag.as_str()),
            ("state", f.state.as_str()),
            ("offset", &offset.to_string()),
        ])
        .unwrap_or_default();
        format!("/documents?{q}")
    };
    layout(
        ctx,
        "My documents",
        html! {
            div.heading {
                h1 { "My documents" }
                a.button.primary href="/publish" { "Publish a document" }
            }
            form.filters method="get" action="/documents" role="search" {
                div.field {
                    label for="q" { "Search" }
                    input #q name="q" type="search" value=(f.q) placeholder="words in title, description, tags, file name, source";
                }
                div.field {
                    label for="f-scope" { "Scope" }
                    select #f-scope name="scope" {
                        option value="" selected[f.scope.is_empty()] { "Any" }
                        option value="global" selected[f.scope == "global"] { "Global" }
                        @for r in p.regions {
                            @let v = format!("region:{r}");
                            option value=(v) selected[f.scope == v] { "Region " (r) }
                        }
                    }
                }
                div.field {
                    label for="tag" { "Tag" }
                    input #tag name="tag" type="text" value=(f.tag);
                }
                div.field {
                    label for="state" { "State" }
                    select #state name="state" {
                        option value="live" selected[f.state == "live" || f.state.is_empty()] { "Live" }
                        option value="deleted" selected[f.state == "deleted"] { "Deleted" }
                        option value="any" selected[f.state == "any"] { "All" }
                    }
                }
                button type="submit" { "Filter" }
            }
            @if p.rows.is_empty() {
                p.empty { "No documents match." @if f.q.is_empty() && f.tag.is_empty() && f.scope.is_empty() {
                    " " a href="/publish" { "Publish your first document." } } }
            } @else {
                div.table-wrap {
                    table.docs.stack {
                        caption.visually-hidden { "Your documents" }
                        thead { tr { th scope="col" { "Title" } th scope="col" { "Scope" } th scope="col" { "Tags" }
                            th scope="col" { "Version" } th scope="col" { "Size" } th scope="col" { "Changed" }
                            th scope="col" { "Propagation" } } }
                        tbody {
                            @for d in p.rows {
                                tr.deleted[d.deleted] {
                                    td data-label="Title" { a href={ "/documents/" (d.doc_id) } { (d.title) }
                                        @if d.deleted { " " span.badge.warn { "deleted" } }
                                        br; small.muted { (d.filename) } }
                                    td data-label="Scope" { (scope_label(&d.scope)) }
                                    td data-label="Tags" { @for t in &d.tags { span.tag { (t) } " " } }
                                    td data-label="Version" { (d.version) }
                                    td data-label="Size" { (human_size(d.size)) }
                                    td data-label="Changed" { (when(d.updated_at)) }
                                    td data-label="Propagation" {
                                        @match p.propagation.get(&d.doc_id) {
                                            Some(v) => span class={ "prop " @if v.down > 0 { "prop-down" } @else if v.complete { "prop-done" } @else { "prop-spreading" } }
                                                title=(v.summary) { (v.short) },
                                            None => span.muted title="No primary answered in time." { "–" },
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                nav.pager aria-label="Pages" {
                    @if f.offset > 0 { a href=(page_link(f.offset.saturating_sub(f.limit))) rel="prev" { "← Newer" } }
                    @if p.has_more { a href=(page_link(f.offset + f.limit)) rel="next" { "Older →" } }
                }
            }
        },
    )
}

pub struct DocPage<'a> {
    pub doc: &'a DocRow,
    /// The metadata came from the portal's cache (no primary answered).
    pub stale: bool,
    pub versions: Option<&'a [VersionEntry]>,
    pub propagation: Option<&'a PropView>,
    pub accepted: Option<&'a [AnnotationEntry]>,
    pub form: Option<UploadForm<'a>>,
}

pub fn document_page(ctx: &PageCtx, p: &DocPage) -> Markup {
    let d = p.doc;
    layout(
        ctx,
        &d.title,
        html! {
            div.heading {
                h1 { (d.title) @if d.deleted { " " span.badge.warn { "deleted" } } }
                div.actions {
                    @if d.deleted {
                        form method="post" action={ "/documents/" (d.doc_id) "/reactivate" } {
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            button.primary type="submit" { "Reactivate" }
                        }
                    } @else {
                        a.button.danger href={ "/documents/" (d.doc_id) "/delete" } { "Delete…" }
                    }
                }
            }
            @if p.stale {
                p.notice { "Showing what the portal last saw: no primary answered." }
            }
            section.card {
                h2 { "Metadata" }
                dl.meta {
                    dt { "Document id" } dd { code { (d.doc_id) } }
                    dt { "Version" } dd { (d.version) }
                    dt { "Scope" } dd { (scope_label(&d.scope)) }
                    dt { "Tags" } dd { @if d.tags.is_empty() { "–" } @for t in &d.tags { span.tag { (t) } " " } }
                    dt { "File" } dd {
                        @if d.deleted {
                            "– (the current version is a tombstone; earlier versions can be downloaded from the history below)"
                        } @else {
                            (d.filename) " (" (human_size(d.size)) ") "
                            a.button href={ "/documents/" (d.doc_id) "/download" } download { "Download" }
                        }
                    }
                    dt { "MD5" } dd { code { (d.md5) } }
                    dt { "Source" } dd { @if d.source.is_empty() { "–" } @else { (d.source) } }
                    dt { "Description" } dd.pre { @if d.description.is_empty() { "–" } @else { (d.description) } }
                    dt { "First published" } dd { (when(d.published_at)) }
                    dt { "Last change" } dd { (when(d.updated_at)) }
                }
            }
            (propagation_table(&d.doc_id, p.propagation))
            section.card {
                h2 { "Version history" }
                @match p.versions {
                    None => p.muted { "Unavailable while no primary answers." },
                    Some(vs) => div.table-wrap { table.versions.stack {
                        caption.visually-hidden { "Every version, newest first" }
                        thead { tr { th scope="col" { "Version" } th scope="col" { "Date" } th scope="col" { "Title" }
                            th scope="col" { "File" } th scope="col" { "Size" } th scope="col" { "Accepted by" } th scope="col" { "State" } } }
                        tbody {
                            @for v in vs.iter().rev() {
                                @let ver = &v.version;
                                tr.deleted[ver.deleted] {
                                    td data-label="Version" { (ver.version) }
                                    td data-label="Date" { (when(ver.created_at.millis())) }
                                    td data-label="Title" { (ver.title) }
                                    @if ver.deleted {
                                        td data-label="File" { span.badge.warn { "tombstone" } }
                                        td data-label="Size" { "–" }
                                    } @else {
                                        td data-label="File" { a href={ "/documents/" (d.doc_id) "/download?version=" (ver.version) } download
                                            title={ "Download version " (ver.version) } { (ver.filename) } }
                                        td data-label="Size" { (human_size(ver.size)) }
                                    }
                                    td data-label="Accepted by" { (ver.origin) }
                                    td data-label="State" {
                                        @if ver.deleted { span.badge.warn { "deleted" } " " }
                                        @if v.current { span.badge.ok { "current" } }
                                    }
                                }
                            }
                        }
                    } }
                }
            }
            section.card {
                h2 { "Accepted annotations" }
                @match p.accepted {
                    None => p.muted { "Unavailable while no primary answers." },
                    Some([]) => p.muted { "None yet. Pending ones are in your " a href="/annotations" { "annotations inbox" } "." },
                    Some(list) => ul.annotations { @for a in list { li {
                        blockquote { (a.text) }
                        p.muted { "— " (if a.author.is_empty() { "anonymous" } else { &a.author }) ", on version " (a.doc_version) }
                    } } },
                }
            }
            @if let Some(form) = &p.form {
                section.card { (upload_form(form)) }
            }
        },
    )
}

pub fn delete_confirm(ctx: &PageCtx, d: &DocRow) -> Markup {
    layout(
        ctx,
        "Delete document",
        html! {
            section.card.narrow {
                h1 { "Delete “" (d.title) "”?" }
                p { "Deleting publishes a tombstone: every node stops serving the document, but its metadata
                    and history are kept and you can reactivate it later." }
                form method="post" action={ "/documents/" (d.doc_id) "/delete" } {
                    input type="hidden" name="csrf" value=(ctx.csrf);
                    div.actions {
                        button.danger type="submit" { "Delete document" }
                        a.button href={ "/documents/" (d.doc_id) } { "Cancel" }
                    }
                }
            }
        },
    )
}
