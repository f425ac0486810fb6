//! The publish / new-version form and the publish page.

use maud::{html, Markup};

use super::{layout, PageCtx};
use crate::config::human_size;

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
