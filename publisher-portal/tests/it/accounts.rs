//! Logging in and out, sessions, CSRF on the login and logout forms, the rate limit.

use reqwest::StatusCode;

use crate::common::{Client, Env, TestResult, PASSWORD};

#[tokio::test]
async fn login_logout_sessions_and_rate_limit() -> TestResult {
    let env = Env::start(&[]).await?;
    env.add_author("alice").await?;
    env.add_author("bob").await?;
    let c = Client::new(&env.portal.url);

    // Anonymous: pages send to the login form, remembering where to go back.
    let p = c.get("/").await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/login");
    let p = c.get("/documents?tag=x").await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/login?next=%2Fdocuments%3Ftag%3Dx");
    for path in ["/publish", "/annotations"] {
        assert_eq!(c.get(path).await?.status, StatusCode::SEE_OTHER, "{path}");
    }

    // The login form sets its double-submit cookie: HttpOnly, SameSite=Strict.
    let p = c.get("/login").await?;
    assert_eq!(p.status, StatusCode::OK);
    let cookie = p
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(p.headers.get("content-security-policy").is_some());

    // A login post without (or with a wrong) token is refused, even with the right password.
    let fresh = Client::new(&env.portal.url);
    let p = fresh
        .post_form(
            "/login",
            &[("csrf", "x"), ("name", "alice"), ("password", PASSWORD)],
        )
        .await?;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let p = fresh
        .post_form("/login", &[("name", "alice"), ("password", PASSWORD)])
        .await?;
    assert_eq!(p.status, StatusCode::FORBIDDEN);

    // Wrong password and unknown user read the same.
    let wrong = c.login("alice", "not the password").await?;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("Wrong user name or password."));
    assert!(
        wrong.body.contains("value=\"alice\""),
        "the name typed is kept"
    );
    let unknown = c.login("mallory", "whatever").await?;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(unknown.body.contains("Wrong user name or password."));

    // Five failures lock the name, even for the right password; other names still work.
    for _ in 0..4 {
        assert_eq!(
            c.login("alice", "nope").await?.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let locked = c.login("alice", PASSWORD).await?;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        locked.body.contains("Too many failed attempts"),
        "{}",
        locked.body
    );
    // Case does not dodge the lock.
    assert_eq!(
        c.login("ALICE", PASSWORD).await?.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let bob = Client::new(&env.portal.url);
    let p = bob.login("bob", PASSWORD).await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/documents");
    let session = p
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("docfed_session="))
        .unwrap_or("")
        .to_owned();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert_eq!(
        session.split(';').next().map(str::len),
        Some("docfed_session=".len() + 64)
    );
    let p = bob.get("/documents").await?;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("bob"));
    // Logged in, the login page sends on.
    assert_eq!(bob.get("/login").await?.status, StatusCode::SEE_OTHER);

    // `next` goes back where the author wanted, but never to another site.
    let carol = Client::new(&env.portal.url);
    env.add_author("carol").await?;
    let t = carol.get("/login").await?.csrf();
    let p = carol
        .post_form(
            "/login",
            &[
                ("csrf", &t),
                ("name", "carol"),
                ("password", PASSWORD),
                ("next", "//evil.example/"),
            ],
        )
        .await?;
    assert_eq!(p.location(), "/documents");

    // Logout needs the session's token and a same-site request.
    assert_eq!(
        bob.post_form("/logout", &[]).await?.status,
        StatusCode::FORBIDDEN
    );
    let token = bob.csrf().await?;
    let cross = bob
        .http
        .post(format!("{}/logout", bob.base))
        .header("origin", "http://evil.example")
        .form(&[("csrf", token.as_str())])
        .send()
        .await?;
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        bob.get("/documents").await?.status,
        StatusCode::OK,
        "still logged in"
    );
    let p = bob.post_form("/logout", &[("csrf", &token)]).await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(bob.get("/documents").await?.status, StatusCode::SEE_OTHER);
    // The old session cookie is dead server-side too.
    let p = bob.post_form("/logout", &[("csrf", &token)]).await?;
    assert_eq!(p.status, StatusCode::FORBIDDEN);

    // Twenty failures from one address lock every name from it (six so far).
    for i in 0..14 {
        let r = c.login(&format!("nobody{i}"), "x").await?;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let p = bob.login("bob", PASSWORD).await?;
    assert_eq!(
        p.status,
        StatusCode::TOO_MANY_REQUESTS,
        "address locked after 20 failures"
    );
    Ok(())
}

#[tokio::test]
async fn add_author_command() -> TestResult {
    let dir = tempfile::tempdir()?;
    let ok = crate::common::add_author(dir.path(), "dana", "long enough pw", &[]).await?;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dup = crate::common::add_author(dir.path(), "dana", "long enough pw", &[]).await?;
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("exists already"));
    let short = crate::common::add_author(dir.path(), "erin", "short", &[]).await?;
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8"));
    let bad = crate::common::add_author(dir.path(), "<b>", "long enough pw", &[]).await?;
    assert!(!bad.status.success());
    let reset =
        crate::common::add_author(dir.path(), "dana", "another password", &["--reset"]).await?;
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    Ok(())
}
