//! Passwords, sessions, CSRF tokens and the login rate limit.
//!
//! * Passwords: Argon2id PHC strings (the `argon2` crate's defaults). Hashing and verifying run
//!   on the blocking pool: each takes tens of milliseconds and ~19 MiB by design.
//! * Sessions: the cookie holds 32 random bytes (hex); the database holds only their SHA-256, so
//!   reading the database does not let anyone log in. Cookies are `HttpOnly; SameSite=Strict`
//!   (and `Secure` with `--cookie-secure`). A session expires after `--session-ttl` unused.
//! * CSRF: every session has its own random token, which every form of the portal carries in a
//!   hidden `csrf` field and every POST handler checks. The login form, which has no session
//!   yet, uses a double-submit cookie (`docfed_login`), equally `SameSite=Strict`.
//! * Rate limit: failed logins are recorded per user name and per client address; at
//!   [`MAX_USER_FAILURES`] (resp. [`MAX_IP_FAILURES`]) within [`FAILURE_WINDOW`], logins for that
//!   name (resp. from that address) are refused until the window has passed, whatever the
//!   password. The message never says whether the name exists.

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::http::HeaderMap;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "docfed_session";
/// Name of the login form's double-submit CSRF cookie.
pub const LOGIN_COOKIE: &str = "docfed_login";
/// Failed logins for one user name that lock it.
pub const MAX_USER_FAILURES: usize = 5;
/// Failed logins from one address that lock it (higher: several authors may share a NAT).
pub const MAX_IP_FAILURES: usize = 20;
/// How long failures count, and so how long a lockout lasts at most.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// 32 random bytes as 64 hex characters.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex(&b)
}

pub fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least 8 characters")]
    TooShort,
    #[error("the password must be at most 1024 characters")]
    TooLong,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Hashes a new password (Argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < 8 {
        return Err(PasswordError::TooShort);
    }
    if password.len() > 1024 {
        return Err(PasswordError::TooLong);
    }
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Checks a password against a stored PHC string; a malformed hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A valid hash of a password nobody knows: verifying against it when the user does not exist
/// makes a login for an unknown name take as long as one for a known name.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_token()).unwrap_or_default())
}

/// Author names: short and plain, since they appear in pages and logs.
pub fn valid_author_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value. `max_age = 0` deletes the cookie.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// Rate-limit keys of a login attempt.
pub fn failure_keys(name: &str, ip: &std::net::IpAddr) -> (String, String) {
    (format!("user:{}", name.to_lowercase()), format!("ip:{ip}"))
}

/// When a lockout ends, given the failure times (newest first) under one key and its limit.
pub fn locked_until(failures_newest_first: &[i64], limit: usize) -> Option<i64> {
    if failures_newest_first.len() < limit {
        return None;
    }
    // The lock lifts when the limit-th newest failure leaves the window.
    Some(failures_newest_first[limit - 1] + FAILURE_WINDOW.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert!(matches!(
            hash_password("short"),
            Err(PasswordError::TooShort)
        ));
        assert!(!verify_password("", dummy_hash()));
    }

    #[test]
    fn tokens_and_cookies() {
        let t = random_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, random_token());
        assert_eq!(sha256_hex("abc").len(), 64);
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; docfed_session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
        let c = set_cookie(SESSION_COOKIE, "v", "/", Duration::from_secs(60), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
    }

    #[test]
    fn names_and_lockout() {
        assert!(valid_author_name("alice.b-2_x"));
        assert!(!valid_author_name(""));
        assert!(!valid_author_name("a b"));
        assert!(!valid_author_name("<script>"));
        assert_eq!(locked_until(&[5, 4, 3, 2], 5), None);
        let w = FAILURE_WINDOW.as_millis() as i64;
        assert_eq!(locked_until(&[9, 8, 7, 6, 5, 4], 5), Some(5 + w));
    }
}
