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
//! | `GET /annotations` · `POST /annotations/{aid}/accept`/`reject` | annotations inbox |
//! | `GET /healthz` | the portal's own health, each primary's state, password-verification counters (JSON) |
//!
//! One middleware runs around every request: it resolves the session cookie, refuses
//! cross-site POSTs, renders [`PortalError`]s as full pages and adds security headers. Every POST
//! handler checks the session's CSRF token (the login form: its double-submit cookie).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use docfed_shared::wire::{DocumentMeta, VersionList};
use docfed_shared::DocId;
use serde::Deserialize;

use crate::auth::{self, LOGIN_COOKIE, SESSION_COOKIE};
use crate::config::Config;
use crate::db::{now_ms, Attempt, Db, DocFilter, DocRow, SessionRow};
use crate::error::{ErrorInfo, PortalError};
use crate::primaries::{Presence, Primaries, Propagation};
use crate::upload;
use crate::views::{self, FormValues, Nav, PageCtx, PropRow, PropView};

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
        .route("/annotations", get(annotations))
        .route("/annotations/{aid}/{decision}", post(decide))
        .route("/static/style.css", get(style))
        .route("/static/portal.js", get(script))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), session_layer))
        .with_state(state)
}

/// The session of the request, resolved by [`session_layer`].
#[derive(Clone)]
struct CurrentSession(Option<SessionRow>);

async fn session_layer(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let mut session = None;
    let mut refreshed_cookie = None;
    if let Some(v) = auth::cookie(req.headers(), SESSION_COOKIE) {
        if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
            match st.db.session(&auth::sha256_hex(v)).await {
                Ok(s) => session = s,
                Err(e) => tracing::error!(error = %e, "cannot read sessions"),
            }
            // Sliding expiry, written at most once a minute per session.
            if let Some(s) = &session {
                let ttl = st.config.session_ttl;
                let new_expiry = now_ms() + ttl.as_millis() as i64;
                if new_expiry - s.expires_at > 60_000
                    && st.db.extend_session(&s.id_hash, new_expiry).await.is_ok()
                {
                    refreshed_cookie = Some(auth::set_cookie(
                        SESSION_COOKIE,
                        v,
                        "/",
                        ttl,
                        st.config.cookie_secure,
                    ));
                }
            }
        }
    }
    if req.method() == Method::POST && !same_origin(req.headers()) {
        let ctx = st.ctx(session.as_ref(), None, Nav::None);
        let page = views::error_page(
            &ctx,
            "Refused",
            "This request came from another site. Nothing was changed.",
        );
        return with_security_headers(
            (StatusCode::FORBIDDEN, Html(page.into_string())).into_response(),
        );
    }
    req.extensions_mut().insert(CurrentSession(session.clone()));
    let mut resp = next.run(req).await;
    if let Some(info) = resp.extensions_mut().remove::<ErrorInfo>() {
        // The handler may have ended the session (logout) or not needed one; render with what
        // the request came with.
        let ctx = st.ctx(session.as_ref(), None, Nav::None);
        let keep_close = resp.headers().get(header::CONNECTION).cloned();
        resp = (
            info.status,
            Html(views::error_page(&ctx, &info.title, &info.message).into_string()),
        )
            .into_response();
        if let Some(c) = keep_close {
            resp.headers_mut().insert(header::CONNECTION, c);
        }
    }
    if let Some(c) = refreshed_cookie {
        if !resp.headers().contains_key(header::SET_COOKIE) {
            if let Ok(v) = HeaderValue::from_str(&c) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
    }
    with_security_headers(resp)
}

/// A browser's POST from another site carries its `Origin` (or `Sec-Fetch-Site: cross-site`);
/// such requests are refused before any handler runs. `SameSite=Strict` cookies and the CSRF
/// tokens already stop them; this is a second lock.
fn same_origin(h: &HeaderMap) -> bool {
    if h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        return false;
    }
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

fn with_security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "same-origin");
    if h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
    {
        // Pages hold CSRF tokens and private metadata.
        set(h, "cache-control", "no-store");
    }
    r
}

/// The logged-in author. Without a session, a page request is sent to the login form and any
/// other request is refused.
pub struct Author(pub SessionRow);

impl<S: Send + Sync> FromRequestParts<S> for Author {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        if let Some(CurrentSession(Some(s))) = parts.extensions.get::<CurrentSession>() {
            return Ok(Author(s.clone()));
        }
        if parts.method == Method::GET || parts.method == Method::HEAD {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/documents");
            let q = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
            return Err(Redirect::to(&format!("/login?{q}")).into_response());
        }
        Err(PortalError::Forbidden(
            "You are not logged in (or your session expired): log in and try again. Nothing was \
             changed."
                .into(),
        )
        .into_response())
    }
}

fn maybe_session(parts: &axum::http::Extensions) -> Option<SessionRow> {
    parts.get::<CurrentSession>().and_then(|c| c.0.clone())
}

pub fn check_csrf(session: &SessionRow, token: &str) -> Result<(), PortalError> {
    if !token.is_empty() && auth::constant_time_eq(&session.csrf, token) {
        Ok(())
    } else {
        Err(PortalError::csrf())
    }
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
    static_asset("text/css; charset=utf-8", include_str!("assets/style.css"))
}

async fn script() -> Response {
    static_asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/portal.js"),
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

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LoginQuery {
    next: String,
    done: String,
}

async fn login_form(State(st): State<AppState>, req: Request) -> Response {
    let q: LoginQuery = req
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    if maybe_session(req.extensions()).is_some() {
        return see_other(auth::safe_next(&q.next));
    }
    render_login(&st, &q.next, "", None, StatusCode::OK, Some(&q.done))
}

/// The login page with a fresh double-submit token (cookie + hidden field).
fn render_login(
    st: &AppState,
    next: &str,
    name: &str,
    error: Option<&str>,
    status: StatusCode,
    done: Option<&str>,
) -> Response {
    let token = auth::random_token();
    let ctx = st.ctx(None, done, Nav::None);
    let mut r = html(
        status,
        views::login(&ctx, &token, name, auth::safe_next(next), error),
    );
    let cookie = auth::set_cookie(
        LOGIN_COOKIE,
        &token,
        "/login",
        Duration::from_secs(3600),
        st.config.cookie_secure,
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LoginForm {
    csrf: String,
    name: String,
    password: String,
    next: String,
}

const WRONG_LOGIN: &str = "Wrong user name or password.";
const BUSY_LOGIN: &str =
    "The portal is checking too many logins at once. Nothing is wrong with your account: \
     please try again in a few seconds.";

async fn login(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, PortalError> {
    let Ok(Form(f)) = form else {
        return Err(PortalError::csrf());
    };
    let cookie_token = auth::cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if f.csrf.is_empty() || !auth::constant_time_eq(cookie_token, &f.csrf) {
        return Err(PortalError::csrf());
    }
    let name = f.name.trim().to_owned();
    let client = st.config.trusted_proxies.client_ip(peer, &headers);
    let (user_key, ip_key) = auth::failure_keys(&name, &client);
    // The attempt counts as a failure from here on, before the password is checked, so that
    // parallel requests cannot all pass the lockout; a right password takes it back.
    let keys = [
        (user_key.as_str(), auth::MAX_USER_FAILURES),
        (ip_key.as_str(), auth::MAX_IP_FAILURES),
    ];
    let attempt = match st.db.begin_attempt(&keys, auth::FAILURE_WINDOW).await? {
        Attempt::Counted(a) => a,
        Attempt::Locked { until } => {
            let minutes = ((until - now_ms()).max(0) + 59_999) / 60_000;
            tracing::warn!(user = %name, ip = %client, "login refused: too many failures");
            let msg = format!(
                "Too many failed attempts. Logging in is blocked for {minutes} more minute{}.",
                if minutes == 1 { "" } else { "s" }
            );
            return Ok(render_login(
                &st,
                &f.next,
                &name,
                Some(&msg),
                StatusCode::TOO_MANY_REQUESTS,
                None,
            ));
        }
    };

    let author = if auth::valid_author_name(&name) {
        st.db.author_by_name(&name).await?
    } else {
        None
    };
    // Unknown names are verified against a dummy hash, so timing does not reveal which names
    // exist.
    let hash = author
        .as_ref()
        .map(|a| a.password_hash.clone())
        .unwrap_or_else(|| auth::dummy_hash().to_owned());
    let ok = match st.verifier.verify(f.password, hash).await {
        Ok(ok) => ok,
        Err(busy) => {
            // No password was checked, so this was no failed attempt.
            st.db.forget_attempt(attempt).await?;
            tracing::warn!(
                user = %name,
                ip = %client,
                error = %busy,
                "login shed: the portal is busy verifying passwords"
            );
            let mut r = render_login(
                &st,
                &f.next,
                &name,
                Some(BUSY_LOGIN),
                StatusCode::SERVICE_UNAVAILABLE,
                None,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return Ok(r);
        }
    };
    let author = match (ok, author) {
        (true, Some(a)) => a,
        _ => {
            // One line per password verified and found wrong (the lockout stays counted).
            tracing::info!(user = %name, ip = %client, "failed login");
            return Ok(render_login(
                &st,
                &f.next,
                &name,
                Some(WRONG_LOGIN),
                StatusCode::UNAUTHORIZED,
                None,
            ));
        }
    };
    st.db.forget_attempt(attempt).await?;
    st.db.clear_failures(&user_key).await?;
    let sid = auth::random_token();
    let ttl = st.config.session_ttl;
    st.db
        .create_session(
            &auth::sha256_hex(&sid),
            author.id,
            &auth::random_token(),
            now_ms() + ttl.as_millis() as i64,
        )
        .await?;
    tracing::info!(author = %author.name, "logged in");
    let mut r = see_other(auth::safe_next(&f.next));
    let secure = st.config.cookie_secure;
    for c in [
        auth::set_cookie(SESSION_COOKIE, &sid, "/", ttl, secure),
        auth::set_cookie(LOGIN_COOKIE, "", "/login", Duration::ZERO, secure),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(r)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CsrfForm {
    csrf: String,
    /// Where to go afterwards (`annotations`), for forms shown on several pages.
    back: String,
    doc_id: String,
}

async fn logout(
    State(st): State<AppState>,
    Author(s): Author,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PortalError> {
    let Form(f) = form.map_err(|_| PortalError::csrf())?;
    check_csrf(&s, &f.csrf)?;
    st.db.delete_session(&s.id_hash).await?;
    let mut r = see_other("/login?done=logged_out");
    let c = auth::set_cookie(
        SESSION_COOKIE,
        "",
        "/",
        Duration::ZERO,
        st.config.cookie_secure,
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(r)
}

// ---------------------------------------------------------------- documents

const PAGE_SIZE: u32 = 50;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListQuery {
    q: String,
    scope: String,
    tag: String,
    state: String,
    offset: u32,
    done: String,
}

async fn documents(
    State(st): State<AppState>,
    Author(s): Author,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, PortalError> {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let filter = DocFilter {
        q: q.q.chars().take(200).collect(),
        scope: q.scope,
        tag: q.tag.trim().chars().take(64).collect(),
        state: match q.state.as_str() {
            "deleted" | "any" => q.state,
            _ => "live".into(),
        },
        offset: q.offset.min(1_000_000),
        limit: PAGE_SIZE,
    };
    let mut rows = st.db.list_documents(s.author_id, &filter).await?;
    let has_more = rows.len() > PAGE_SIZE as usize;
    rows.truncate(PAGE_SIZE as usize);
    let (ctx, propagation) = tokio::join!(
        st.page(Some(&s), Some(&q.done), Nav::Documents),
        list_propagation(&st, &rows),
    );
    Ok(html(
        StatusCode::OK,
        views::documents_page(
            &ctx,
            &views::ListPage {
                filter: &filter,
                rows: &rows,
                has_more,
                regions: &st.config.regions,
                propagation: &propagation,
            },
        ),
    ))
}

/// The propagation of each listed document, asked of the primaries a few at a time. What has
/// not come back within two seconds is left out (the list shows "–"), so a slow or dead primary
/// never holds the list back for long; no primary is asked while all are known to be down.
async fn list_propagation(
    st: &AppState,
    rows: &[DocRow],
) -> std::collections::HashMap<String, PropView> {
    use futures::StreamExt;
    if rows.is_empty()
        || st
            .primaries
            .all()
            .iter()
            .all(|p| p.status().up == Some(false))
    {
        return Default::default();
    }
    let presence = st.primaries.presence().await;
    // Owned items: a stream of borrowed rows makes the handler's future not general enough
    // for axum.
    let items: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|d| (d.doc_id.clone(), d.version, d.updated_at))
        .collect();
    futures::stream::iter(items)
        .map(|(id, version, updated_at)| {
            let (st, presence) = (st.clone(), presence.clone());
            async move {
                let path = format!("/v1/documents/{id}/propagation");
                let (p, _) = st
                    .primaries
                    .get_json::<Propagation>(&path, &[])
                    .await
                    .ok()?;
                let published = (version == p.version).then_some(updated_at);
                let view = prop_view(&st, p, Some(&presence), published, &[]);
                Some((id, view))
            }
        })
        .buffer_unordered(8)
        .filter_map(|v| async move { v })
        .take_until(tokio::time::sleep(Duration::from_secs(2)))
        .collect()
        .await
}

async fn publish_form(State(st): State<AppState>, Author(s): Author) -> Response {
    let ctx = st.page(Some(&s), None, Nav::Publish).await;
    let values = FormValues {
        scope: "global".into(),
        ..Default::default()
    };
    html(
        StatusCode::OK,
        views::publish_page(&ctx, &upload::publish_form(&st, &s, &values, &[])),
    )
}

async fn publish(State(st): State<AppState>, Author(s): Author, req: Request) -> Response {
    upload::receive(&st, &s, None, req).await
}

async fn new_version(
    State(st): State<AppState>,
    Author(s): Author,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, PortalError> {
    let doc = owned(&st, &s, &id).await?;
    Ok(upload::receive(&st, &s, Some(doc), req).await)
}

/// The cached row of a document the author owns, or 404 (also for someone else's document).
async fn owned(st: &AppState, s: &SessionRow, id: &str) -> Result<DocRow, PortalError> {
    if id.parse::<DocId>().is_err() {
        return Err(PortalError::NotFound);
    }
    st.db
        .owned_document(s.author_id, id)
        .await?
        .ok_or(PortalError::NotFound)
}

/// Fresh metadata from a primary, cached; the cached row when no primary answers.
async fn refresh(st: &AppState, doc: DocRow) -> Result<(DocRow, bool), PortalError> {
    match st
        .primaries
        .get_json::<DocumentMeta>(&format!("/v1/documents/{}", doc.doc_id), &[])
        .await
    {
        Ok((meta, _)) => {
            let row = DocRow::from_meta(&meta);
            st.db.update_document(&row).await?;
            Ok((row, false))
        }
        Err(e) if e.is_not_found() => {
            // Published through the other primary a moment ago and not replicated yet: the
            // cache is the best there is.
            Ok((doc, true))
        }
        Err(crate::primaries::NodeError::Unavailable(_)) => Ok((doc, true)),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DoneQuery {
    done: String,
}

async fn document(
    State(st): State<AppState>,
    Author(s): Author,
    Path(id): Path<String>,
    q: Result<Query<DoneQuery>, QueryRejection>,
) -> Result<Response, PortalError> {
    let cached = owned(&st, &s, &id).await?;
    let (doc, stale) = refresh(&st, cached).await?;
    let versions_path = format!("/v1/documents/{id}/versions");
    let propagation_path = format!("/v1/documents/{id}/propagation");
    let (versions, prop, accepted, presence) = tokio::join!(
        st.primaries.get_json::<VersionList>(&versions_path, &[]),
        st.primaries.get_json::<Propagation>(&propagation_path, &[]),
        st.primaries.annotations("accepted", Some(&id)),
        st.primaries.presence(),
    );
    let versions = versions.ok().map(|(v, _)| v.versions);
    let tombstones: Vec<i64> = versions
        .iter()
        .flatten()
        .filter(|v| v.version.deleted)
        .map(|v| v.version.version)
        .collect();
    let prop = prop.ok().map(|(p, _)| {
        let published = (doc.version == p.version).then_some(doc.updated_at);
        prop_view(&st, p, Some(&presence), published, &tombstones)
    });
    let accepted = accepted.ok();
    let values = FormValues {
        title: doc.title.clone(),
        description: doc.description.clone(),
        tags: doc.tags.join(", "),
        source: doc.source.clone(),
        scope: doc.scope.clone(),
    };
    let ctx = st
        .page(
            Some(&s),
            q.as_ref().ok().map(|Query(q)| q.done.as_str()),
            Nav::None,
        )
        .await;
    let form = (!doc.deleted).then(|| upload::version_form(&st, &s, &doc, &values, &[]));
    Ok(html(
        StatusCode::OK,
        views::document_page(
            &ctx,
            &views::DocPage {
                doc: &doc,
                stale,
                versions: versions.as_deref(),
                propagation: prop.as_ref(),
                accepted: accepted.as_deref(),
                form,
            },
        ),
    ))
}

/// A node that has not reported the current version this long after it was published counts
/// as slow rather than merely waiting.
const SLOW_AFTER_MS: i64 = 60_000;

/// Rows for every node: those that reported, and those the primary lists as not holding the
/// current version yet. A node that has not caught up is `down` when the primaries' presence
/// says so, `slow` once the version is older than [`SLOW_AFTER_MS`], `waiting` before that
/// (`older` when it holds an earlier version). `published_ms` is when the current version was
/// published, `tombstones` the versions that are tombstones (from the version list, when at
/// hand; the current one is known from the answer).
fn prop_view(
    st: &AppState,
    p: Propagation,
    presence: Option<&Presence>,
    published_ms: Option<i64>,
    tombstones: &[i64],
) -> PropView {
    build_prop_view(
        p,
        &st.config.tiers,
        &|n| presence.is_some_and(|pr| pr.is_down(&st.primaries, n)),
        published_ms,
        tombstones,
        now_ms(),
    )
}

/// [`prop_view`] with its inputs spelled out: the tier of each node, whether the primaries see
/// a node as down, and the time now.
fn build_prop_view(
    p: Propagation,
    tiers: &std::collections::HashMap<String, String>,
    is_down: &dyn Fn(&str) -> bool,
    published_ms: Option<i64>,
    tombstones: &[i64],
    now: i64,
) -> PropView {
    let tier_of = |n: &str| tiers.get(n).cloned().unwrap_or_default();
    let behind_ms = published_ms.map(|t| now - t).unwrap_or(0);
    let lagging = |n: &str, older: bool| -> (&'static str, String) {
        if is_down(n) {
            ("down", "✗ down (not answering)".into())
        } else if behind_ms > SLOW_AFTER_MS {
            let since = views::relative(now - behind_ms, now);
            ("slow", format!("slow: published {since}, not here yet"))
        } else if older {
            ("older", "older version…".into())
        } else {
            ("waiting", "waiting…".into())
        }
    };
    let mut rows: Vec<PropRow> = p
        .nodes
        .iter()
        .map(|h| {
            let tombstone = (h.current && p.deleted) || tombstones.contains(&h.version);
            let (state, label) = if h.current {
                ("current", "✓ current".to_owned())
            } else {
                lagging(&h.node, true)
            };
            let at = h.at.clone().unwrap_or_default();
            let at_ms = views::parse_iso(&at);
            PropRow {
                node: h.node.clone(),
                tier: tier_of(&h.node),
                version: Some(h.version),
                holds: if tombstone {
                    "tombstone"
                } else if h.content {
                    "bytes"
                } else {
                    "metadata only"
                }
                .into(),
                at_rel: at_ms.map(|t| views::relative(t, now)).unwrap_or_default(),
                at_exact: at_ms.map(views::exact).unwrap_or_default(),
                at,
                state: state.into(),
                label,
            }
        })
        .collect();
    for n in &p.not_yet_current {
        if !rows.iter().any(|r| &r.node == n) {
            let (state, label) = lagging(n, false);
            rows.push(PropRow {
                node: n.clone(),
                tier: tier_of(n),
                version: None,
                holds: "–".into(),
                at: String::new(),
                at_rel: String::new(),
                at_exact: String::new(),
                state: state.into(),
                label,
            });
        }
    }
    let rank = |t: &str| match t {
        "primary" => 0,
        "intermediate" => 1,
        "regional" => 2,
        _ => 3,
    };
    rows.sort_by(|a, b| (rank(&a.tier), &a.node).cmp(&(rank(&b.tier), &b.node)));
    let current = rows.iter().filter(|r| r.state == "current").count();
    let down = rows.iter().filter(|r| r.state == "down").count();
    let slow = rows.iter().filter(|r| r.state == "slow").count();
    let complete = p.not_yet_current.is_empty();
    let mut short = format!("{current}/{} nodes", rows.len());
    if down > 0 {
        short += &format!(", {down} down");
    }
    if slow > 0 {
        short += &format!(", {slow} slow");
    }
    PropView {
        version: p.version,
        deleted: p.deleted,
        summary: format!(
            "{current} of {} nodes hold version {}{}{}{}",
            rows.len(),
            p.version,
            if p.deleted { " (a tombstone)" } else { "" },
            if down > 0 {
                format!("; {down} down")
            } else {
                String::new()
            },
            if complete {
                "."
            } else {
                "; still spreading…"
            }
        ),
        short,
        complete,
        down,
        rows,
    }
}

async fn propagation_json(
    State(st): State<AppState>,
    Author(s): Author,
    Path(id): Path<String>,
) -> Response {
    let json_error = |status: StatusCode, msg: &str| {
        (status, Json(serde_json::json!({ "error": msg }))).into_response()
    };
    let row = match st.db.owned_document(s.author_id, &id).await {
        Ok(Some(row)) => row,
        Ok(None) => return json_error(StatusCode::NOT_FOUND, "no such document of yours"),
        Err(e) => {
            tracing::error!(error = %e, "portal database");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "portal database unavailable",
            );
        }
    };
    let path = format!("/v1/documents/{id}/propagation");
    let (prop, presence) = tokio::join!(
        st.primaries.get_json::<Propagation>(&path, &[]),
        st.primaries.presence(),
    );
    match prop {
        Ok((p, _)) => {
            // The cached row's version may lag the primary's: its time is the current one's
            // only when the numbers match.
            let published = (row.version == p.version).then_some(row.updated_at);
            let mut r = Json(prop_view(&st, p, Some(&presence), published, &[])).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DownloadQuery {
    version: Option<i64>,
}

/// The author's own file: the current version, or `?version=N`. Streamed from a primary (with
/// the token, so old versions of a deleted document come too) chunk by chunk as it arrives,
/// never held whole; `Range`, `If-Range` and `If-None-Match` go through, so a browser can resume.
/// The primary's `Content-Disposition` (the author's file name, RFC 6266) is passed on, and the
/// bytes are never rendered on the portal's origin: `attachment`, `nosniff` and a sandboxing CSP.
async fn download(
    State(st): State<AppState>,
    Author(s): Author,
    Path(id): Path<String>,
    q: Result<Query<DownloadQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, PortalError> {
    owned(&st, &s, &id).await?;
    let Ok(Query(q)) = q else {
        return Err(PortalError::NotFound);
    };
    let mut query = Vec::new();
    if let Some(v) = q.version {
        query.push(("version", v.to_string()));
    }
    let mut forward = reqwest::header::HeaderMap::new();
    for h in [header::RANGE, header::IF_RANGE, header::IF_NONE_MATCH] {
        if let Some(v) = headers.get(&h) {
            forward.insert(h, v.clone());
        }
    }
    let (r, i) = st
        .primaries
        .download(&format!("/v1/documents/{id}/content"), &query, forward)
        .await?;
    let status = r.status();
    if !(status.is_success()
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::RANGE_NOT_SATISFIABLE)
    {
        return Err(match status {
            StatusCode::NOT_FOUND => PortalError::NotFound,
            _ => crate::primaries::refused(st.primaries.get(i).name.clone(), r)
                .await
                .into(),
        });
    }
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = status;
    let out = resp.headers_mut();
    for h in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
        header::ETAG,
        header::CONTENT_DISPOSITION,
    ] {
        if let Some(v) = r.headers().get(&h) {
            out.insert(h, v.clone());
        }
    }
    out.entry(header::CONTENT_DISPOSITION)
        .or_insert(HeaderValue::from_static("attachment"));
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    out.insert(
        "content-security-policy",
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    *resp.body_mut() = axum::body::Body::from_stream(r.bytes_stream());
    Ok(resp)
}

async fn delete_form(
    State(st): State<AppState>,
    Author(s): Author,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let doc = owned(&st, &s, &id).await?;
    if doc.deleted {
        return Ok(see_other(&format!("/documents/{id}")));
    }
    let ctx = st.page(Some(&s), None, Nav::None).await;
    Ok(html(StatusCode::OK, views::delete_confirm(&ctx, &doc)))
}

async fn delete(
    State(st): State<AppState>,
    Author(s): Author,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PortalError> {
    let Form(f) = form.map_err(|_| PortalError::csrf())?;
    check_csrf(&s, &f.csrf)?;
    owned(&st, &s, &id).await?;
    metadata_write(&st, reqwest::Method::DELETE, &format!("/v1/documents/{id}")).await?;
    tracing::info!(author = %s.author_name, doc_id = %id, "deleted");
    Ok(see_other(&format!("/documents/{id}?done=deleted")))
}

async fn reactivate(
    State(st): State<AppState>,
    Author(s): Author,
    Path(id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PortalError> {
    let Form(f) = form.map_err(|_| PortalError::csrf())?;
    check_csrf(&s, &f.csrf)?;
    owned(&st, &s, &id).await?;
    metadata_write(
        &st,
        reqwest::Method::POST,
        &format!("/v1/documents/{id}/reactivate"),
    )
    .await?;
    tracing::info!(author = %s.author_name, doc_id = %id, "reactivated");
    Ok(if f.back == "annotations" {
        see_other("/annotations?done=reactivated")
    } else {
        see_other(&format!("/documents/{id}?done=reactivated"))
    })
}

/// Delete or reactivate (retried on the other primary if one is down), then refresh the cache
/// from the primary that did it.
async fn metadata_write(
    st: &AppState,
    method: reqwest::Method,
    path: &str,
) -> Result<(), PortalError> {
    let (done, i) = st.primaries.write(method, path).await?;
    match st
        .primaries
        .get_json_from::<DocumentMeta>(i, &format!("/v1/documents/{}", done.id))
        .await
    {
        Ok(meta) => st.db.update_document(&DocRow::from_meta(&meta)).await?,
        Err(e) => tracing::warn!(error = %e, "cannot read back the document after a change"),
    }
    Ok(())
}

// ---------------------------------------------------------------- federation

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

// ---------------------------------------------------------------- annotations

async fn annotations(
    State(st): State<AppState>,
    Author(s): Author,
    q: Result<Query<DoneQuery>, QueryRejection>,
) -> Result<Response, PortalError> {
    let owned = st.db.owned_ids(s.author_id).await?;
    let list = match st.primaries.annotations("pending", None).await {
        Ok(all) => Some(
            all.into_iter()
                .filter(|a| owned.contains(&a.doc_id))
                .collect::<Vec<_>>(),
        ),
        Err(crate::primaries::NodeError::Unavailable(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let ctx = st
        .page(
            Some(&s),
            q.as_ref().ok().map(|Query(q)| q.done.as_str()),
            Nav::Annotations,
        )
        .await;
    Ok(html(
        StatusCode::OK,
        views::annotations_page(&ctx, list.as_deref()),
    ))
}

async fn decide(
    State(st): State<AppState>,
    Author(s): Author,
    Path((aid, decision)): Path<(String, String)>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, PortalError> {
    let Form(f) = form.map_err(|_| PortalError::csrf())?;
    check_csrf(&s, &f.csrf)?;
    if decision != "accept" && decision != "reject" {
        return Err(PortalError::NotFound);
    }
    // The annotation must be on one of the author's documents.
    owned(&st, &s, &f.doc_id).await?;
    let on_doc = st.primaries.annotations("any", Some(&f.doc_id)).await?;
    if !on_doc.iter().any(|a| a.id == aid) {
        return Err(PortalError::NotFound);
    }
    st.primaries.decide_annotation(&aid, &decision).await?;
    st.primaries.forget_pending().await;
    tracing::info!(author = %s.author_name, annotation = %aid, decision, "annotation vetted");
    Ok(see_other(&format!(
        "/annotations?done={}",
        if decision == "accept" {
            "accepted"
        } else {
            "rejected"
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primaries::Holding;

    fn holding(node: &str, version: i64, current: bool) -> Holding {
        Holding {
            node: node.into(),
            version,
            content: true,
            at: Some("2026-11-23T08:00:00Z".into()),
            current,
        }
    }

    /// pa and na hold version 2, pb holds version 1; eu and asia report nothing.
    fn spreading(deleted: bool) -> Propagation {
        Propagation {
            version: 2,
            origin: "pa".into(),
            deleted,
            nodes: vec![
                holding("pa", 2, true),
                holding("na", 2, true),
                holding("pb", 1, false),
            ],
            not_yet_current: vec!["pb".into(), "eu".into(), "asia".into()],
        }
    }

    fn states(v: &PropView) -> Vec<(String, String)> {
        v.rows
            .iter()
            .map(|r| (r.node.clone(), r.state.clone()))
            .collect()
    }

    #[test]
    fn down_slow_waiting_and_done_are_told_apart() {
        let tiers: std::collections::HashMap<String, String> = [
            ("pa", "primary"),
            ("pb", "primary"),
            ("na", "regional"),
            ("eu", "regional"),
            ("asia", "regional"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let now = 1_800_000_000_000;
        let eu_down = |n: &str| n == "eu";
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());

        // Just published: whoever lacks it is waiting, unless the primaries see it down.
        let v = build_prop_view(
            spreading(false),
            &tiers,
            &eu_down,
            Some(now - 5_000),
            &[],
            now,
        );
        assert_eq!(
            states(&v),
            [
                pair("pa", "current"),
                pair("pb", "older"),
                pair("asia", "waiting"),
                pair("eu", "down"),
                pair("na", "current"),
            ]
        );
        assert_eq!(
            v.summary,
            "2 of 5 nodes hold version 2; 1 down; still spreading…"
        );
        assert_eq!(v.short, "2/5 nodes, 1 down");
        assert_eq!((v.down, v.complete), (1, false));
        assert!(v
            .rows
            .iter()
            .all(|r| r.label != "waiting…" || r.node == "asia"));

        // Published three minutes ago: reachable but behind is slow; down stays down.
        let v = build_prop_view(
            spreading(false),
            &tiers,
            &eu_down,
            Some(now - 180_000),
            &[],
            now,
        );
        assert_eq!(
            states(&v),
            [
                pair("pa", "current"),
                pair("pb", "slow"),
                pair("asia", "slow"),
                pair("eu", "down"),
                pair("na", "current"),
            ]
        );
        assert_eq!(v.short, "2/5 nodes, 1 down, 2 slow");
        let asia = v
            .rows
            .iter()
            .find(|r| r.node == "asia")
            .map(|r| r.label.as_str());
        assert_eq!(asia, Some("slow: published 3 min ago, not here yet"));

        // A tombstone is held as a tombstone, not as bytes; so is an older tombstone version.
        let v = build_prop_view(spreading(true), &tiers, &|_| false, None, &[1], now);
        assert!(v
            .rows
            .iter()
            .filter(|r| r.version.is_some())
            .all(|r| r.holds == "tombstone"));
        assert!(v
            .summary
            .starts_with("2 of 5 nodes hold version 2 (a tombstone)"));
        let v = build_prop_view(spreading(true), &tiers, &|_| false, None, &[], now);
        let pb = v
            .rows
            .iter()
            .find(|r| r.node == "pb")
            .map(|r| r.holds.as_str());
        assert_eq!(pb, Some("bytes"), "version 1 is no tombstone");

        // Everyone has it.
        let done = Propagation {
            not_yet_current: vec![],
            nodes: vec![holding("pa", 2, true), holding("pb", 2, true)],
            ..spreading(false)
        };
        let v = build_prop_view(done, &tiers, &eu_down, Some(now - 500_000), &[], now);
        assert_eq!(v.summary, "2 of 2 nodes hold version 2.");
        assert_eq!((v.short.as_str(), v.complete), ("2/2 nodes", true));
        assert_eq!(v.rows[0].at_exact, "2026-11-23 08:00:00 UTC");
    }
}
