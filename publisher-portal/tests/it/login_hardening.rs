//! The login under attack: parallel wrong passwords against the lockout and the Argon2 cap,
//! `next=` values that try to leave the portal, and `X-Forwarded-For` from trusted and
//! untrusted peers. These need no federation: the portal runs alone ([`LonePortal`]).

use std::net::{IpAddr, Ipv4Addr};

use docfed_portal::auth::{MAX_IP_FAILURES, MAX_USER_FAILURES};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{Client, LonePortal, Page, TestResult, PASSWORD};

/// The login form's double-submit token: the portal only checks that the cookie and the field
/// agree, so the tests pick their own and skip fetching the form.
const TOKEN: &str = "login-hardening-double-submit-token";

/// A client without cookies or redirects, connecting from `local` (any 127/8 address is this
/// machine's loopback, so a second one stands for a reverse proxy).
fn client_from(local: IpAddr) -> reqwest::Client {
    docfed_http::tls::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .local_address(local)
        .build()
        .expect("HTTP client")
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// One `POST /login`, optionally with `next` and an `X-Forwarded-For` header.
async fn post_login(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    password: &str,
    next: &str,
    forwarded_for: Option<&str>,
) -> TestResult<Page> {
    let mut req = http
        .post(format!("{base}/login"))
        .header("cookie", format!("docfed_login={TOKEN}"))
        .form(&[
            ("csrf", TOKEN),
            ("name", name),
            ("password", password),
            ("next", next),
        ]);
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    Client::read(req.send().await?).await
}

/// Lines of the portal's log that contain `what`.
fn log_lines(p: &LonePortal, what: &str) -> usize {
    p.portal
        .log_text()
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

#[tokio::test]
async fn parallel_wrong_passwords_verify_at_most_the_lockout() -> TestResult {
    // 64 logins at once from one address: the per-address connection limit is not what this
    // test is about.
    let p = LonePortal::start(&["--max-connections-per-address", "1000"]).await?;
    p.add_author("alice").await?;
    p.add_author("bob").await?;
    let base = p.portal.url.as_str();
    let http = client_from(loopback(1));

    let tries = (0..64).map(|i| {
        let http = http.clone();
        async move {
            post_login(
                &http,
                base,
                "alice",
                &format!("wrong password {i}"),
                "",
                None,
            )
            .await
        }
    });
    let pages = futures::future::try_join_all(tries).await?;
    let statuses: Vec<u16> = pages.iter().map(|p| p.status.as_u16()).collect();
    let unauthorized = pages
        .iter()
        .filter(|p| p.status == StatusCode::UNAUTHORIZED)
        .count();
    let refused = pages
        .iter()
        .filter(|p| p.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(unauthorized + refused, 64, "statuses: {statuses:?}");

    // The portal logs "failed login" once for every wrong password it ran Argon2 on (before
    // and after the fix alike), so the log counts the verifications.
    let verified = log_lines(&p, "failed login");
    assert!(
        verified <= MAX_USER_FAILURES,
        "64 parallel wrong passwords ran {verified} Argon2 verifications; the lockout allows \
         {MAX_USER_FAILURES} (statuses: {statuses:?})"
    );
    assert_eq!(
        unauthorized, MAX_USER_FAILURES,
        "exactly the allowed attempts are checked: {statuses:?}"
    );
    assert_eq!(verified, unauthorized);

    // /healthz counts the same verifications, and never more than the cap ran at once.
    let h: Value = http
        .get(format!("{base}/healthz"))
        .send()
        .await?
        .json()
        .await?;
    let logins = &h["logins"];
    assert_eq!(
        logins["verifications"].as_u64(),
        Some(verified as u64),
        "{h}"
    );
    let cap = logins["max_concurrent_verifications"]
        .as_u64()
        .ok_or_else(|| format!("no max_concurrent_verifications in {h}"))?;
    assert_eq!(cap, 2, "the default cap");
    let peak = logins["verifying_peak"]
        .as_u64()
        .ok_or_else(|| format!("no verifying_peak in {h}"))?;
    assert!((1..=cap).contains(&peak), "{h}");

    // The lock holds for the right password too.
    let locked = post_login(&http, base, "alice", PASSWORD, "", None).await?;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(locked.body.contains("Too many failed attempts"));

    // An attempt counts against the address until its password proves right: more good logins
    // than the address limit, on top of the failures above, never lock the address.
    for i in 0..MAX_IP_FAILURES + 5 {
        let ok = post_login(&http, base, "bob", PASSWORD, "", None).await?;
        assert_eq!(
            ok.status,
            StatusCode::SEE_OTHER,
            "good login {i}: {}",
            ok.body
        );
    }
    Ok(())
}

/// `next=` values that must not take a freshly logged-in author off the portal.
const FOREIGN_NEXT: &[&str] = &[
    "/%09/evil.com",
    "/%2F/evil.com",
    "/\\evil.com",
    "//evil.com",
    "https://evil.com",
    "/\t/evil.com",
    "/%5Cevil.com",
    "/%2f%2fevil.com",
];

#[tokio::test]
async fn foreign_next_redirects_to_the_documents_page() -> TestResult {
    let p = LonePortal::start(&[]).await?;
    p.add_author("carol").await?;
    let base = p.portal.url.as_str();

    for next in FOREIGN_NEXT {
        let c = Client::new(base);
        // The form does not carry the value on...
        let form = Client::read(
            c.http
                .get(format!("{base}/login"))
                .query(&[("next", next)])
                .send()
                .await?,
        )
        .await?;
        assert_eq!(form.status, StatusCode::OK);
        assert!(
            !form.body.contains("evil.com"),
            "{next:?} kept in the login form"
        );
        // ...a login posted with it lands on the default page...
        let r = c
            .post_form(
                "/login",
                &[
                    ("csrf", &form.csrf()),
                    ("name", "carol"),
                    ("password", PASSWORD),
                    ("next", next),
                ],
            )
            .await?;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{next:?}: {}", r.body);
        assert_eq!(r.location(), "/documents", "after logging in with {next:?}");
        // ...and so does the login page once logged in.
        let again = Client::read(
            c.http
                .get(format!("{base}/login"))
                .query(&[("next", next)])
                .send()
                .await?,
        )
        .await?;
        assert_eq!(again.status, StatusCode::SEE_OTHER);
        assert_eq!(again.location(), "/documents", "logged in, {next:?}");
    }

    // A path on the portal is still where the author goes back to.
    let c = Client::new(base);
    let form = c.get("/login?next=%2Fdocuments%3Ftag%3Dx").await?;
    let r = c
        .post_form(
            "/login",
            &[
                ("csrf", &form.csrf()),
                ("name", "carol"),
                ("password", PASSWORD),
                ("next", "/documents?tag=x"),
            ],
        )
        .await?;
    assert_eq!(r.location(), "/documents?tag=x");
    Ok(())
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() -> TestResult {
    // 127.0.0.2 plays the reverse proxy; 192.0.2.0/24 is a proxy tier in front of it.
    let p = LonePortal::start(&[
        "--trusted-proxy",
        "127.0.0.2",
        "--trusted-proxy",
        "192.0.2.0/24",
    ])
    .await?;
    p.add_author("dave").await?;
    let base = p.portal.url.as_str();
    let direct = client_from(loopback(1));
    let proxy = client_from(loopback(2));
    let fail = |http, i, xff| wrong_login(http, base, i, xff);
    let dave = |http, xff| dave_logs_in(http, base, xff);

    // From an untrusted peer the header is the client's own claim: ignored. A different
    // claimed address on every failure still locks the peer's address.
    for i in 0..MAX_IP_FAILURES {
        fail(&direct, i, format!("198.51.100.{i}")).await?;
    }
    assert_eq!(
        dave(&direct, Some("198.51.100.200")).await?,
        StatusCode::TOO_MANY_REQUESTS,
        "X-Forwarded-For from an untrusted peer must not pick the rate-limit key"
    );

    // From the trusted proxy the client is the rightmost address no trusted proxy owns: the
    // spoofed entries on the left change nothing, 192.0.2.10 (a trusted hop) is skipped.
    for i in 0..MAX_IP_FAILURES {
        fail(
            &proxy,
            100 + i,
            format!("198.51.100.{i}, 203.0.113.9, 192.0.2.10"),
        )
        .await?;
    }
    assert_eq!(
        dave(&proxy, Some("203.0.113.9")).await?,
        StatusCode::TOO_MANY_REQUESTS,
        "the client behind the proxy is locked"
    );
    assert!(
        p.portal.log_text().contains("ip=203.0.113.9"),
        "the log names the client, not the proxy"
    );
    // Other clients behind the same proxy, and the proxy itself, are not.
    assert_eq!(
        dave(&proxy, Some("203.0.113.11")).await?,
        StatusCode::SEE_OTHER,
        "one client's failures must not lock everyone behind the proxy"
    );
    assert_eq!(dave(&proxy, None).await?, StatusCode::SEE_OTHER);
    Ok(())
}

/// A failed login for `nobody{i}` (a name that does not exist, so only the address counts).
async fn wrong_login(http: &reqwest::Client, base: &str, i: usize, xff: String) -> TestResult {
    let r = post_login(http, base, &format!("nobody{i}"), "x", "", Some(&xff)).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "failure {i} ({xff})");
    Ok(())
}

/// The status of a login as `dave` with the right password.
async fn dave_logs_in(
    http: &reqwest::Client,
    base: &str,
    xff: Option<&str>,
) -> TestResult<StatusCode> {
    Ok(post_login(http, base, "dave", PASSWORD, "", xff)
        .await?
        .status)
}

#[tokio::test]
async fn an_ipv6_client_cannot_escape_the_lockout_by_changing_address_within_its_64() -> TestResult
{
    // 127.0.0.2 plays a reverse proxy that reports IPv6 clients.
    let p = LonePortal::start(&["--trusted-proxy", "127.0.0.2"]).await?;
    p.add_author("dave").await?;
    let base = p.portal.url.as_str();
    let proxy = client_from(loopback(2));
    // One host with a /64 of its own: a fresh address for every attempt.
    for i in 0..MAX_IP_FAILURES {
        wrong_login(&proxy, base, i, format!("2001:db8:5:6::{:x}", 0x1000 + i)).await?;
    }
    for address in [
        "2001:db8:5:6::ffff",
        "2001:db8:5:6:8000::1",
        "::ffff:127.0.0.9",
    ] {
        let status = dave_logs_in(&proxy, base, Some(address)).await?;
        if address.starts_with("::ffff") {
            // An IPv4 client (seen as a mapped address) is another client.
            assert_eq!(status, StatusCode::SEE_OTHER, "{address}");
        } else {
            assert_eq!(
                status,
                StatusCode::TOO_MANY_REQUESTS,
                "{address}: another address of the same /64 must be locked too"
            );
        }
    }
    // The neighbouring /64 is another site.
    assert_eq!(
        dave_logs_in(&proxy, base, Some("2001:db8:5:7::1")).await?,
        StatusCode::SEE_OTHER
    );
    Ok(())
}
