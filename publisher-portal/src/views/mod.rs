//! Server-rendered pages, one module per page (as `web/` has one per group of handlers), the
//! shared layout, navigation and banner here. `maud` escapes every interpolated value, so
//! user-supplied text (titles, descriptions, annotations, node error messages) can never become
//! markup.
//!
//! Pages work without JavaScript; `portal.js` adds the upload progress bar and the live
//! propagation table. Every input has a label, errors are announced (`role="alert"`) and linked
//! to their fields, and every control is reachable with the keyboard.

mod annotations;
mod documents;
mod federation;
mod login;
mod propagation;
mod publish;
mod sources;
mod time;

pub use annotations::annotations_page;
pub use documents::{delete_confirm, document_page, documents_page, DocPage, ListPage};
pub use federation::federation_page;
pub use login::login;
pub use propagation::{propagation_table, PropRow, PropView};
pub use publish::{publish_page, upload_form, FieldError, FormValues, UploadForm};
pub use sources::sources_page;
pub use time::{exact, fmt_ms, parse_iso, relative, when, when_str};

use maud::{html, Markup, DOCTYPE};

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

/// `region:eu` as "region eu"; `global` as it is.
fn scope_label(scope: &str) -> String {
    match scope.strip_prefix("region:") {
        Some(r) => format!("region {r}"),
        None => scope.to_owned(),
    }
}
