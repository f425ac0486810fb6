//! Routes and handlers.
//!
//! | route | what |
//! |---|---|
//! | `GET /login` · `POST /login` · `POST /logout` | sessions |
//! | `GET /documents?q=&scope=&tag=&state=&offset=` | My documents: search and filters |
//! | `GET /publish` · `POST /publish` | upload form; multipart, streamed to a primary |
//! | `GET /documents/{id}` | metadata, propagation (live), versions, accepted annotations, new-version form |
//! | `POST /documents/{id}/versions` | new version (multipart, streamed) |
//! | `GET /documents/{id}/delete` · `POST /documents/{id}/delete` | confirmation, then tombstone |
//! | `POST /documents/{id}/reactivate` | undo a tombstone |
//! | `GET /documents/{id}/propagation.json` | what the page polls |
//! | `GET /documents/{id}/download[?version=N]` | the author's file, streamed from a primary |
//! | `GET /federation` | every node: presence, tier/region, queues, last error |
//! | `GET /sources` | each reachback source: the primary running it, each primary's runs, counts, last error |
//! | `GET /annotations` · `POST /annotations/{aid}/accept`/`reject` | annotations inbox |
//! | `GET /healthz` | the portal's own health, each primary's state, password-verification counters (JSON) |
//!
//! One middleware runs around every request: it resolves the session cookie, refuses
//! cross-site POSTs, renders [`PortalError`]s as full pages and adds security headers. Every POST
//! handler checks the session's CSRF token (the login form: its double-submit cookie).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::auth;
use crate::config::Config;
use crate::db::{Db, SessionRow};
use crate::error::PortalError;
use crate::primaries::Primaries;
use crate::views::{self, Nav, PageCtx};

mod annotations;
mod documents;
mod login;
mod propagation;
mod session;

pub use session::{check_csrf, Author};
// The handlers the router names, and what the submodules share (each has `use super::*`).
use annotations::*;
use documents::*;
use login::*;
use propagation::*;
use session::*;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub primaries: Arc<Primaries>,
    /// Runs the logins' password verifications, a few at a time.
    pub verifier: Arc<auth::Verifier>,
}

impl AppState {
    /// What the layout needs, without the pending-annotation count (for pages rendered where
    /// nothing may wait, such as a form sent back mid-upload).
    pub fn ctx(&self, session: Option<&SessionRow>, done: Option<&str>, nav: Nav) -> PageCtx {
        PageCtx {
            author: session.map(|s| s.author_name.clone()),
            csrf: session.map(|s| s.csrf.clone()).unwrap_or_default(),
            banner: self.primaries.banner(),
            flash: done.and_then(views::flash_text),
            nav,
            pending: None,
        }
    }

    /// [`ctx`](Self::ctx) with the count of pending annotations on the author's documents in
    /// the navigation: from a list cached for a few seconds; waits at most half a second for
    /// a primary to refresh it, and not at all while every primary is down.
    pub async fn page(
        &self,
        session: Option<&SessionRow>,
        done: Option<&str>,
        nav: Nav,
    ) -> PageCtx {
        let mut ctx = self.ctx(session, done, nav);
        if let Some(s) = session {
            if let Some(list) = self
                .primaries
                .pending_annotations(Duration::from_millis(500))
                .await
            {
                ctx.pending = self.db.count_owned(s.author_id, &list).await.ok();
            }
        }
        ctx
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/documents", get(documents))
        .route("/publish", get(publish_form).post(publish))
        .route("/documents/{id}", get(document))
        .route("/documents/{id}/versions", post(new_version))
        .route("/documents/{id}/delete", get(delete_form).post(delete))
        .route("/documents/{id}/reactivate", post(reactivate))
        .route("/documents/{id}/propagation.json", get(propagation_json))
        .route("/documents/{id}/download", get(download))
        .route("/federation", get(federation))
        .route("/sources", get(sources))
        .route("/annotations", get(annotations))
        .route("/annotations/{aid}/{decision}", post(decide))
        .route("/static/style.css", get(style))
        .route("/static/portal.js", get(script))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), session_layer))
        .with_state(state)
}

fn html(status: StatusCode, m: maud::Markup) -> Response {
    (status, Html(m.into_string())).into_response()
}

/// `/documents/ID?done=WHAT` after a change.
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

async fn home(req: Request) -> Response {
    if maybe_session(req.extensions()).is_some() {
        see_other("/documents")
    } else {
        see_other("/login")
    }
}

async fn not_found() -> PortalError {
    PortalError::NotFound
}

async fn style() -> Response {
    static_asset(
        "text/css; charset=utf-8",
        include_str!("../assets/style.css"),
    )
}

async fn script() -> Response {
    static_asset(
        "text/javascript; charset=utf-8",
        include_str!("../assets/portal.js"),
    )
}

fn static_asset(ct: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn healthz(State(st): State<AppState>) -> Json<serde_json::Value> {
    let primaries: Vec<serde_json::Value> = st
        .primaries
        .all()
        .iter()
        .map(|p| {
            let s = p.status();
            serde_json::json!({
                "name": p.name,
                "url": p.url,
                "up": s.up,
                "error": s.error,
            })
        })
        .collect();
    let next = st.primaries.get(st.primaries.pick()).name.clone();
    Json(serde_json::json!({
        "status": "ok",
        "primaries": primaries,
        "next_primary": next,
        "logins": st.verifier.stats(),
    }))
}

// ---------------------------------------------------------------- login

async fn federation(State(st): State<AppState>, Author(s): Author) -> Response {
    let presence = st.primaries.presence().await;
    let rows = crate::federation::nodes(&st.config, &st.primaries, &presence);
    let summary = crate::federation::summary(&rows);
    let ctx = st.page(Some(&s), None, Nav::Federation).await;
    html(
        StatusCode::OK,
        views::federation_page(&ctx, &rows, &summary, presence.at_ms),
    )
}

/// Both primaries are asked: each knows only the runs it made while holding a source's lease.
async fn sources(State(st): State<AppState>, Author(s): Author) -> Response {
    let asked = st.primaries.sources().await;
    let view = crate::sources::view(&st.primaries, &asked);
    let ctx = st.page(Some(&s), None, Nav::Sources).await;
    html(StatusCode::OK, views::sources_page(&ctx, &view))
}

// ---------------------------------------------------------------- annotations
