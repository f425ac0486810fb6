//! Logging in and out: the login form with its double-submit CSRF cookie, password verification
//! under the lockout and concurrency limits, sessions.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use crate::auth::{self, LOGIN_COOKIE, SESSION_COOKIE};
use crate::db::{now_ms, Attempt};
use crate::error::PortalError;
use crate::views::{self, Nav};

use super::*;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct LoginQuery {
    pub(super) next: String,
    pub(super) done: String,
}

pub(super) async fn login_form(State(st): State<AppState>, req: Request) -> Response {
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
pub(super) fn render_login(
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
pub(super) struct LoginForm {
    pub(super) csrf: String,
    pub(super) name: String,
    pub(super) password: String,
    pub(super) next: String,
}

pub(super) const WRONG_LOGIN: &str = "Wrong user name or password.";

pub(super) const BUSY_LOGIN: &str =
    "The portal is checking too many logins at once. Nothing is wrong with your account: \
     please try again in a few seconds.";

pub(super) async fn login(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, PortalError> {
    let Ok(Form(f)) = form else {
        return Err(PortalError::csrf());
    };
    let cookie_token = auth::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if f.csrf.is_empty() || !auth::constant_time_eq(&cookie_token, &f.csrf) {
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
pub(super) struct CsrfForm {
    pub(super) csrf: String,
    /// Where to go afterwards (`annotations`), for forms shown on several pages.
    pub(super) back: String,
    pub(super) doc_id: String,
}

pub(super) async fn logout(
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
