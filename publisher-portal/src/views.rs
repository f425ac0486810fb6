//! Server-rendered pages. `maud` escapes every interpolated value, so user-supplied text (titles,
//! descriptions, annotations, node error messages) can never become markup.
//!
//! Pages work without JavaScript; `portal.js` adds the upload progress bar and the live
//! propagation table. Every input has a label, errors are announced (`role="alert"`) and linked
//! to their fields, and every control is reachable with the keyboard.
//!
//! Over 600 lines on purpose: every page's markup with the shared layout, navigation and banner it
//! is rendered in; a page's template is found by its name.

use maud::{html, Markup, DOCTYPE};

use crate::config::human_size;
use crate::db::{DocFilter, DocRow};
use crate::federation::NodeRow;
use crate::sources::{RecordState, SourceRow, SourcesView};
use docfed_shared::wire::annotations::AnnotationEntry;
use docfed_shared::wire::VersionEntry;

/// What every page needs besides its own content.
#[derive(Debug, Clone, Default)]
pub struct PageCtx {
    /// Logged-in author's name.
    pub author: Option<String>,
    /// The session's CSRF token (for the logout form and page forms).
    pub csrf: String,
    /// Primary-down banner.
    pub banner: Option<String>,
    /// One-line confirmation of what just happened (fixed texts, see `flash_text`).
    pub flash: Option<&'static str>,
    /// The navigation entry of this page, marked `aria-current="page"`.
    pub nav: Nav,
    /// Pending annotations on the author's documents, when the count is at hand.
    pub pending: Option<u64>,
}

/// The navigation's entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Nav {
    /// A page that is none of them (login, errors).
    #[default]
    None,
    Documents,
    Publish,
    Annotations,
    Federation,
    Sources,
}

/// How long ago (or, for a clock that runs ahead, how far ahead) `ms` is from `now_ms`, in the
/// largest unit that fits: "just now", "40 s ago", "3 min ago", "5 h ago", "2 days ago",
/// "4 months ago", "2 years ago".
pub fn relative(ms: i64, now_ms: i64) -> String {
    let d = now_ms - ms;
    let s = d.unsigned_abs() / 1000;
    if s < 10 {
        return "just now".into();
    }
    let (n, unit) = match s {
        s if s < 60 => (s, "s"),
        s if s < 3600 => (s / 60, "min"),
        s if s < 86_400 => (s / 3600, "h"),
        s if s < 60 * 86_400 => (s / 86_400, if s < 2 * 86_400 { "day" } else { "days" }),
        s if s < 730 * 86_400 => (s / (30 * 86_400), "months"),
        s => (s / (365 * 86_400), "years"),
    };
    if d >= 0 {
        format!("{n} {unit} ago")
    } else {
        format!("in {n} {unit}")
    }
}

/// The exact time, as the hover text shows it: `2026-11-23 08:46:02 UTC`.
pub fn exact(ms: i64) -> String {
    let iso = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string();
    format!("{} UTC", iso.trim_end_matches('Z').replacen('T', " ", 1))
}

/// A point in time as a page shows it: `<time datetime="ISO" title="exact">3 min ago</time>`.
/// `portal.js` rewrites the title in the browser's time zone.
pub fn when(ms: i64) -> Markup {
    html! {
        time datetime=(fmt_ms(ms)) title=(exact(ms)) { (relative(ms, crate::db::now_ms())) }
    }
}

/// [`when`] of an RFC 3339 string from a node; the string itself if it cannot be read.
pub fn when_str(iso: &str) -> Markup {
    match parse_iso(iso) {
        Some(ms) => when(ms),
        None => html! { (iso) },
    }
}

/// Unix milliseconds of an RFC 3339 time.
pub fn parse_iso(iso: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(iso).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}

/// The confirmation shown after a redirect with `?done=WHAT`. Only these fixed texts can be
/// shown, so the query string cannot inject messages.
pub fn flash_text(done: &str) -> Option<&'static str> {
    Some(match done {
        "published" => "Published. The document is now spreading to the federation.",
        "version" => "New version published.",
        "deleted" => "Document deleted (tombstoned). You can reactivate it at any time.",
        "reactivated" => "Document reactivated.",
        "accepted" => "Annotation accepted: it is now attached to the document.",
        "rejected" => "Annotation rejected.",
        "logged_out" => "You are logged out.",
        _ => return None,
    })
}

pub fn layout(ctx: &PageCtx, title: &str, body: Markup) -> Markup {
    let current = |n: Nav| (ctx.nav == n).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · docfed portal" }
                link rel="stylesheet" href="/static/style.css";
                script src="/static/portal.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/" { "docfed" span { " portal" } }
                        @if let Some(name) = &ctx.author {
                            ul {
                                li { a href="/documents" aria-current=[current(Nav::Documents)] { "My documents" } }
                                li { a href="/publish" aria-current=[current(Nav::Publish)] { "Publish" } }
                                li { a href="/annotations" aria-current=[current(Nav::Annotations)] {
                                    "Annotations"
                                    @match ctx.pending {
                                        Some(0) | None => {},
                                        Some(n) => { " " span.count title={ (n) " pending" } { (n) span.visually-hidden { " pending" } } },
                                    }
                                } }
                                li { a href="/federation" aria-current=[current(Nav::Federation)] { "Federation" } }
                                li { a href="/sources" aria-current=[current(Nav::Sources)] { "Sources" } }
                            }
                            form.logout method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(ctx.csrf);
                                span.who { (name) }
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                }
                @if let Some(b) = &ctx.banner {
                    div.banner role="alert" { strong { "Primary unavailable. " } (b) }
                }
                main #main tabindex="-1" {
                    @if let Some(f) = ctx.flash {
                        p.flash role="status" { (f) }
                    }
                    (body)
                }
                footer { "docfed publisher portal" }
            }
        }
    }
}

pub fn login(
    ctx: &PageCtx,
    login_csrf: &str,
    name: &str,
    next: &str,
    error: Option<&str>,
) -> Markup {
    layout(
        ctx,
        "Log in",
        html! {
            section.card.narrow {
                h1 { "Log in" }
                @if let Some(e) = error {
                    p.error role="alert" #login-error { (e) }
                }
                form method="post" action="/login" {
                    input type="hidden" name="csrf" value=(login_csrf);
                    input type="hidden" name="next" value=(next);
                    div.field {
                        label for="name" { "User name" }
                        input #name name="name" type="text" value=(name) autocomplete="username"
                            required autofocus maxlength="64" aria-describedby=[error.map(|_| "login-error")];
                    }
                    div.field {
                        label for="password" { "Password" }
                        input #password name="password" type="password" autocomplete="current-password" required;
                    }
                    button.primary type="submit" { "Log in" }
                }
                p.hint { "Accounts are created by the operator with "
                    code { "docfed-portal add-author NAME" } "." }
            }
        },
    )
}

/// What an author typed into the publish form, kept when the form is shown again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormValues {
    pub title: String,
    pub description: String,
    pub tags: String,
    pub source: String,
    pub scope: String,
}

/// A problem with one field (or `""` for the form as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

pub struct UploadForm<'a> {
    pub action: String,
    pub heading: &'a str,
    pub submit: &'a str,
    pub values: &'a FormValues,
    pub errors: &'a [FieldError],
    pub regions: &'a [String],
    pub max_upload: u64,
    pub csrf: &'a str,
}

fn field_error<'a>(errors: &'a [FieldError], field: &str) -> Option<&'a str> {
    errors
        .iter()
        .find(|e| e.field == field)
        .map(|e| e.message.as_str())
}

/// The publish / new-version form. Field order matters: the portal validates the text fields
/// before the file arrives, so `csrf` comes first and `file` last.
pub fn upload_form(f: &UploadForm) -> Markup {
    let err = |name: &str| field_error(f.errors, name);
    let described = |name: &str| err(name).map(|_| format!("{name}-error"));
    let invalid = |name: &str| err(name).map(|_| "true");
    html! {
        form.upload method="post" action=(f.action) enctype="multipart/form-data"
            data-upload="1" data-max-upload=(f.max_upload) {
            h2 { (f.heading) }
            @if !f.errors.is_empty() {
                div.error-summary role="alert" tabindex="-1" {
                    p { strong { "The document was not published:" } }
                    ul {
                        @for e in f.errors {
                            li {
                                @if e.field.is_empty() { (e.message) }
                                @else { a href={ "#" (e.field) } { (e.message) } }
                            }
                        }
                    }
                }
            }
            input type="hidden" name="csrf" value=(f.csrf);
            div.field {
                label for="title" { "Title" span.req { " (required)" } }
                input #title name="title" type="text" value=(f.values.title) required maxlength="500"
                    aria-invalid=[invalid("title")] aria-describedby=[described("title")];
                @if let Some(e) = err("title") { p.field-error #title-error { (e) } }
            }
            div.field {
                label for="description" { "Description" }
                textarea #description name="description" rows="4" maxlength="20000"
                    aria-invalid=[invalid("description")] aria-describedby=[described("description")] { (f.values.description) }
                @if let Some(e) = err("description") { p.field-error #description-error { (e) } }
            }
            div.row {
                div.field {
                    label for="tags" { "Tags" }
                    input #tags name="tags" type="text" value=(f.values.tags) placeholder="finance, 2025"
                        aria-invalid=[invalid("tags")] aria-describedby={ "tags-hint" @if err("tags").is_some() { " tags-error" } };
                    p.hint #tags-hint { "Separated by commas." }
                    @if let Some(e) = err("tags") { p.field-error #tags-error { (e) } }
                }
                div.field {
                    label for="source" { "Source" }
                    input #source name="source" type="text" value=(f.values.source) maxlength="500"
                        aria-invalid=[invalid("source")] aria-describedby=[described("source")];
                    @if let Some(e) = err("source") { p.field-error #source-error { (e) } }
                }
            }
            div.field {
                label for="scope" { "Scope" }
                select #scope name="scope" aria-invalid=[invalid("scope")] aria-describedby={ "scope-hint" @if err("scope").is_some() { " scope-error" } } {
                    option value="global" selected[f.values.scope == "global" || f.values.scope.is_empty()] { "Global: every region" }
                    @for r in f.regions {
                        @let v = format!("region:{r}");
                        option value=(v) selected[f.values.scope == v] { "Region " (r) " only" }
                    }
                    // Keep an unknown value visible so the author sees what was wrong.
                    @if !f.values.scope.is_empty() && f.values.scope != "global"
                        && !f.regions.iter().any(|r| format!("region:{r}") == f.values.scope) {
                        option value=(f.values.scope) selected { (f.values.scope) " (unknown)" }
                    }
                }
                p.hint #scope-hint { "Metadata always reaches every region; the content goes where the scope says." }
                @if let Some(e) = err("scope") { p.field-error #scope-error { (e) } }
            }
            div.field {
                label for="file" { "File" span.req { " (required)" } }
                input #file name="file" type="file" required
                    aria-invalid=[invalid("file")] aria-describedby={ "file-hint" @if err("file").is_some() { " file-error" } };
                p.hint #file-hint { "Up to " (human_size(f.max_upload)) "."
                    @if !f.errors.is_empty() { " Browsers forget the chosen file when a form comes back: please choose it again." } }
                @if let Some(e) = err("file") { p.field-error #file-error { (e) } }
            }
            div.upload-progress hidden {
                progress max="100" value="0" aria-label="Upload progress" {}
                p.upload-status role="status" aria-live="polite" {}
            }
            button.primary type="submit" { (f.submit) }
        }
    }
}

pub fn publish_page(ctx: &PageCtx, form: &UploadForm) -> Markup {
    layout(
        ctx,
        "Publish",
        html! { section.card { (upload_form(form)) } },
    )
}

fn scope_label(scope: &str) -> String {
    match scope.strip_prefix("region:") {
        Some(r) => format!("region {r}"),
        None => scope.to_owned(),
    }
}

pub fn fmt_ms(ms: i64) -> String {
    docfed_shared::wire::Timestamp(ms).to_string()
}

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

pub fn error_page(ctx: &PageCtx, title: &str, message: &str) -> Markup {
    layout(
        ctx,
        title,
        html! {
            section.card.narrow {
                h1 { (title) }
                p role="alert" { (message) }
                p { a href="/documents" { "Back to my documents" } }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const DAY: i64 = 86_400_000;

    #[test]
    fn relative_times_use_the_largest_unit_that_fits() {
        let now = 1_800_000_000_000;
        let ago = |ms: i64| relative(now - ms, now);
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(9_999), "just now");
        assert_eq!(ago(40_000), "40 s ago");
        assert_eq!(ago(3 * MIN + 20_000), "3 min ago");
        assert_eq!(ago(5 * 60 * MIN), "5 h ago");
        assert_eq!(ago(DAY + 1), "1 day ago");
        assert_eq!(ago(2 * DAY), "2 days ago");
        assert_eq!(ago(120 * DAY), "4 months ago");
        assert_eq!(ago(800 * DAY), "2 years ago");
        // A clock running ahead of the portal's.
        assert_eq!(ago(-3 * MIN), "in 3 min");
    }

    #[test]
    fn times_render_as_time_elements_with_the_exact_time_on_hover() {
        assert_eq!(exact(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(exact(1_763_887_562_123), "2025-11-23 08:46:02 UTC");
        let t = when(1_763_887_562_123).into_string();
        assert!(
            t.starts_with(
                "<time datetime=\"2025-11-23T08:46:02.123Z\" title=\"2025-11-23 08:46:02 UTC\">"
            ),
            "{t}"
        );
        assert!(t.ends_with(" ago</time>"), "{t}");
        assert_eq!(
            parse_iso("2025-11-23T08:46:02.123Z"),
            Some(1_763_887_562_123)
        );
        assert_eq!(when_str("not a time").into_string(), "not a time");
    }
}
