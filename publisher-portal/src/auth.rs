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
//! * Rate limit: login attempts are recorded per user name and per client address *before* the
//!   password is checked, and un-recorded when it proves right; at [`MAX_USER_FAILURES`] (resp.
//!   [`MAX_IP_FAILURES`]) within [`FAILURE_WINDOW`], logins for that name (resp. from that
//!   address) are refused until the window has passed, whatever the password. Counting first is
//!   what makes the limit hold for parallel requests: were attempts recorded only after a
//!   verification failed, every request sent at once would pass the check before the first
//!   failure was written. The message never says whether the name exists. The client address
//!   is the peer's, or what a trusted reverse proxy says ([`crate::forwarded`]).
//! * Argon2 cap: the [`Verifier`] runs at most `--max-concurrent-logins` verifications at once
//!   (the lockout bounds them per name and address, not in total).
//! * Redirects: the login's `next=` is followed only when it is a path on the portal
//!   ([`safe_next`]).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::http::HeaderMap;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

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
    hex::encode(b)
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub use docfed_shared::secrets::constant_time_eq;

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
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// A `Set-Cookie` value: HTTP-only, same-site strict. `max_age = 0` deletes the cookie.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: Duration, secure: bool) -> String {
    cookie::Cookie::build((name, value))
        .path(path)
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        ))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(secure)
        .build()
        .to_string()
}

/// Rate-limit keys of a login attempt: the user name, and the client's address, where an IPv6
/// client counts as its /64. A single host is routinely given a whole /64 (SLAAC, privacy
/// addresses, a cloud VM's prefix), so counting per address would let it try 2^64 addresses in
/// turn; an IPv4 address mapped into IPv6 counts as the IPv4 address it is.
pub fn failure_keys(name: &str, ip: &std::net::IpAddr) -> (String, String) {
    (
        format!("user:{}", name.to_lowercase()),
        format!("ip:{}", address_key(ip)),
    )
}

/// The part of a client address the login limit counts: an IPv4 address, or an IPv6 /64.
pub fn address_key(ip: &std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
    }
}

/// When a lockout ends, given the failure times (newest first) under one key, its limit and
/// how long failures count.
pub fn locked_until(failures_newest_first: &[i64], limit: usize, window: Duration) -> Option<i64> {
    if failures_newest_first.len() < limit.max(1) {
        return None;
    }
    // The lock lifts when the limit-th newest failure leaves the window.
    Some(failures_newest_first[limit.max(1) - 1] + window.as_millis() as i64)
}

/// How long a login waits for a free verification slot before it is answered 503.
pub const VERIFY_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// Runs password verifications on the blocking pool, at most `max` at once, and counts them.
///
/// One Argon2 verification holds ~19 MiB and a core for tens of milliseconds. The lockout
/// bounds the attempts per name and per address, but a burst spread over many names and
/// addresses would still run them all at once and exhaust memory. A login beyond the cap waits
/// for a slot for up to [`VERIFY_QUEUE_WAIT`] and then gets [`VerifyBusy`] (the handler answers
/// 503 with `Retry-After`): a short burst queues and is served, a flood is shed instead of
/// queueing without bound.
pub struct Verifier {
    slots: Arc<Semaphore>,
    max: usize,
    wait: Duration,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    started: AtomicU64,
    running: AtomicUsize,
    peak: AtomicUsize,
}

/// What `/healthz` shows of the [`Verifier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct VerifierStats {
    /// Password verifications run since the portal started.
    pub verifications: u64,
    /// Running now.
    pub verifying: usize,
    /// Most that ever ran at once (never more than the cap).
    pub verifying_peak: usize,
    /// The cap, `--max-concurrent-logins`.
    pub max_concurrent_verifications: usize,
}

/// No verification slot came free in time.
#[derive(Debug, thiserror::Error)]
#[error("all {max} password verification slots stayed busy for {waited:?}")]
pub struct VerifyBusy {
    pub max: usize,
    pub waited: Duration,
}

impl Verifier {
    /// At most `max` (at least 1) verifications at once; a caller waits up to `wait` for a slot.
    pub fn new(max: usize, wait: Duration) -> Verifier {
        let max = max.max(1);
        Verifier {
            slots: Arc::new(Semaphore::new(max)),
            max,
            wait,
            counters: Arc::default(),
        }
    }

    /// Checks `password` against the PHC string `phc` (see [`verify_password`]) once a slot is
    /// free.
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, VerifyBusy> {
        let busy = || VerifyBusy {
            max: self.max,
            waited: self.wait,
        };
        let permit = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            // The semaphore is never closed.
            .map_err(|_| busy())?;
        let counters = self.counters.clone();
        // The permit moves into the blocking task: if the request is dropped meanwhile (the
        // client went away), the slot stays taken until Argon2 has really finished.
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            counters.started.fetch_add(1, Ordering::Relaxed);
            let now = counters.running.fetch_add(1, Ordering::SeqCst) + 1;
            counters.peak.fetch_max(now, Ordering::SeqCst);
            let ok = verify_password(&password, &phc);
            counters.running.fetch_sub(1, Ordering::SeqCst);
            ok
        });
        Ok(task.await.unwrap_or(false))
    }

    pub fn stats(&self) -> VerifierStats {
        VerifierStats {
            verifications: self.counters.started.load(Ordering::Relaxed),
            verifying: self.counters.running.load(Ordering::Relaxed),
            verifying_peak: self.counters.peak.load(Ordering::Relaxed),
            max_concurrent_verifications: self.max,
        }
    }
}

/// Where an author lands after logging in when `next=` names no page of the portal.
pub const DEFAULT_LANDING: &str = "/documents";

/// `next` when it is a path on this portal, else [`DEFAULT_LANDING`]: `next=` must not send an
/// author to another site after logging in (an open redirect, a phishing aid).
///
/// Accepted: one `/`, then neither `/` nor `\`, and no `\`, control character or whitespace
/// anywhere — checked on the value and again on each percent-decoding of it. Browsers drop tabs
/// and newlines inside URLs and read `\` as `/`, so `/<TAB>/evil.com` and `/\evil.com` are
/// `//evil.com` to them, another host; and a layer that decodes once more turns `/%2F/evil.com`
/// or `/%09/evil.com` into the same. A value that still decodes after three rounds, or is
/// longer than 2048 bytes, is nobody's link and is refused too.
pub fn safe_next(next: &str) -> &str {
    if is_local_path(next) {
        next
    } else {
        DEFAULT_LANDING
    }
}

fn is_local_path(next: &str) -> bool {
    if next.len() > 2048 {
        return false;
    }
    let mut s = Cow::Borrowed(next);
    for _ in 0..4 {
        if !plain_local_path(&s) {
            return false;
        }
        match percent_decode(&s) {
            None => return true,
            Some(decoded) => s = Cow::Owned(decoded),
        }
    }
    false
}

/// The rule without decoding: `/`, not `//` or `/\`, no `\`, control character or whitespace.
fn plain_local_path(s: &str) -> bool {
    s.starts_with('/')
        && !s[1..].starts_with(['/', '\\'])
        && !s
            .chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
}

/// `s` with its `%XX` escapes decoded (bytes that are not UTF-8 become U+FFFD), or `None` when
/// it has none.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut decoded_any = false;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                decoded_any = true;
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    decoded_any.then(|| String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_counts_as_its_64() {
        let key = |s: &str| address_key(&s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }

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
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; docfed_session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
        let c = set_cookie(SESSION_COOKIE, "v", "/", Duration::from_secs(60), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("; Secure"));
        assert!(c.starts_with("docfed_session=v;") && c.contains("Max-Age=60"));
    }

    #[test]
    fn names_and_lockout() {
        assert!(valid_author_name("alice.b-2_x"));
        assert!(!valid_author_name(""));
        assert!(!valid_author_name("a b"));
        assert!(!valid_author_name("<script>"));
        let window = FAILURE_WINDOW;
        assert_eq!(locked_until(&[5, 4, 3, 2], 5, window), None);
        let w = window.as_millis() as i64;
        assert_eq!(locked_until(&[9, 8, 7, 6, 5, 4], 5, window), Some(5 + w));
        assert_eq!(locked_until(&[9, 8, 7, 6, 5], 5, window), Some(5 + w));
    }

    /// (next, accepted)
    const NEXT_CASES: &[(&str, bool)] = &[
        ("/documents", true),
        ("/documents?tag=x&q=a+b", true),
        ("/documents/0190c0de-0000-7000-8000-000000000000", true),
        ("/annotations?done=accepted#top", true),
        ("/", true),
        ("/search?q=100%25", true),
        ("/a/b//c", true),
        ("/..//evil.com", true), // a path on the portal: //evil.com is the path, not a host
        ("", false),
        ("documents", false),
        ("//evil.com", false),
        ("///evil.com", false),
        ("/\\evil.com", false),
        ("/a\\b", false),
        ("\\\\evil.com", false),
        ("https://evil.com", false),
        ("javascript:alert(1)", false),
        (" /documents", false),
        ("/%09/evil.com", false),
        ("/\t/evil.com", false),
        ("/\n/evil.com", false),
        ("/\r\n/evil.com", false),
        ("/%0a/evil.com", false),
        ("/%0D%0ALocation:%20x", false),
        ("/%2F/evil.com", false),
        ("/%2f%2fevil.com", false),
        ("/%5Cevil.com", false),
        ("/%5c/evil.com", false),
        ("/%2509/evil.com", false), // decoded twice
        ("/%252F/evil.com", false),
        ("/%25252F/evil.com", false),
        ("/a b", false),
        ("/a%20b", false),
        // The price of the whitespace rule: an encoded space sends to the default page. (The
        // portal's own search form encodes spaces as `+`.)
        ("/documents?q=a%20b", false),
        ("/a\u{a0}b", false),   // no-break space
        ("/a%C2%A0b", false),   // the same, encoded
        ("/a\u{2028}b", false), // line separator
        ("/a\u{7f}b", false),
        ("/a%7Fb", false),
        ("/%00", false),
    ];

    #[test]
    fn next_table() {
        for (next, accepted) in NEXT_CASES {
            let want = if *accepted { *next } else { DEFAULT_LANDING };
            assert_eq!(safe_next(next), want, "next={next:?}");
        }
        let long = format!("/{}", "a".repeat(2048));
        assert_eq!(safe_next(&long), DEFAULT_LANDING);
    }

    /// Fully percent-decoded, for the property below.
    fn decoded_fully(s: &str) -> String {
        let mut s = s.to_owned();
        for _ in 0..16 {
            match percent_decode(&s) {
                Some(d) if d != s => s = d,
                _ => break,
            }
        }
        s
    }

    /// Where a browser on `https://portal.example/login` goes for `Location: next`.
    fn browser_host(next: &str) -> Option<String> {
        let base = url::Url::parse("https://portal.example/login").ok()?;
        base.join(next).ok()?.host_str().map(str::to_owned)
    }

    /// Pieces an attacker would try, glued together at random.
    const PIECES: &[&str] = &[
        "/", "//", "\\", "%", "%2F", "%2f", "%5C", "%09", "%0a", "%20", "%25", "%2", "25", "2F",
        "\t", "\n", " ", "\u{a0}", ".", "..", ":", "@", "?", "#", "evil.com", "a", "https:",
    ];

    proptest::proptest! {
        /// Whatever `safe_next` lets through keeps a browser on the portal, as written and
        /// however often some layer percent-decodes it.
        #[test]
        fn accepted_next_stays_on_the_portal(
            leading_slash in proptest::bool::ANY,
            pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..8),
        ) {
            let next = format!("{}{}", if leading_slash { "/" } else { "" }, pieces.concat());
            let got = safe_next(&next);
            proptest::prop_assert!(got == next || got == DEFAULT_LANDING);
            if got == next {
                let once = percent_decode(&next).unwrap_or_default();
                for form in [next.clone(), once, decoded_fully(&next)] {
                    if form.is_empty() {
                        continue;
                    }
                    let host = browser_host(&form);
                    proptest::prop_assert_eq!(
                        host.as_deref(),
                        Some("portal.example"),
                        "next={:?} accepted; as {:?} it leaves the portal",
                        next,
                        form
                    );
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verifier_caps_concurrency() {
        let phc = hash_password("correct horse").unwrap();
        let v = Arc::new(Verifier::new(2, Duration::from_secs(60)));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (v, phc) = (v.clone(), phc.clone());
                let pw = if i == 0 {
                    "correct horse"
                } else {
                    "wrong horse"
                };
                tokio::spawn(async move { v.verify(pw.to_owned(), phc).await })
            })
            .collect();
        let mut right = 0;
        for t in tasks {
            right += usize::from(t.await.unwrap().unwrap());
        }
        assert_eq!(right, 1);
        let s = v.stats();
        assert_eq!(s.verifications, 8);
        assert_eq!(s.verifying, 0);
        assert!((1..=2).contains(&s.verifying_peak), "{s:?}");
        assert_eq!(s.max_concurrent_verifications, 2);
    }

    #[tokio::test]
    async fn verifier_sheds_when_every_slot_stays_busy() {
        let v = Verifier::new(1, Duration::from_millis(50));
        // Hold the only slot.
        let _held = v.slots.clone().acquire_owned().await.unwrap();
        let r = v.verify("x".into(), dummy_hash().to_owned()).await;
        assert!(matches!(r, Err(VerifyBusy { max: 1, .. })), "{r:?}");
        assert_eq!(v.stats().verifications, 0, "nothing was verified");
    }
}
