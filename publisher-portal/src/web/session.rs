//! What runs around every request: the session cookie resolved (with sliding expiry), cross-site
//! POSTs refused, [`PortalError`]s rendered as full pages, security headers; and the extractors
//! and checks handlers use (`Author`, `check_csrf`).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::auth::{self, SESSION_COOKIE};
use crate::db::{now_ms, SessionRow};
use crate::error::{ErrorInfo, PortalError};
use crate::views::{self, Nav};

use super::*;

/// The session of the request, resolved by [`session_layer`].
#[derive(Clone)]
pub(super) struct CurrentSession(Option<SessionRow>);

pub(super) async fn session_layer(
    State(st): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let mut session = None;
    let mut refreshed_cookie = None;
    if let Some(v) = auth::cookie(req.headers(), SESSION_COOKIE) {
        if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
            match st.db.session(&auth::sha256_hex(&v)).await {
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
                        &v,
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
pub(super) fn same_origin(h: &HeaderMap) -> bool {
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

pub(super) fn with_security_headers(mut r: Response) -> Response {
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

pub(super) fn maybe_session(parts: &axum::http::Extensions) -> Option<SessionRow> {
    parts.get::<CurrentSession>().and_then(|c| c.0.clone())
}

pub fn check_csrf(session: &SessionRow, token: &str) -> Result<(), PortalError> {
    if !token.is_empty() && auth::constant_time_eq(&session.csrf, token) {
        Ok(())
    } else {
        Err(PortalError::csrf())
    }
}
