//! Bad input: the form comes back with what is wrong and what was typed; over-size uploads;
//! malformed requests; unknown pages. Nothing is published by any of them.

use reqwest::StatusCode;

use crate::common::{bytes, Env, TestResult};

#[tokio::test]
async fn bad_form_input_keeps_what_was_typed() -> TestResult {
    // A small portal limit, to test over-size uploads cheaply.
    let env = Env::start(&["--max-upload-size", "1MiB"]).await?;
    let alice = env.author("alice").await?;

    // Missing title: 400, the message next to the field, the rest kept.
    let p = alice
        .upload(
            "/publish",
            &[
                ("title", "  "),
                ("description", "My <i>notes</i>"),
                ("tags", "keep, these"),
                ("source", "src-kept"),
                ("scope", "region:eu"),
            ],
            Some(("a.txt", bytes(100, 1))),
        )
        .await?;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.body.contains("Enter a title."), "{}", p.body);
    assert!(p.body.contains("id=\"title-error\""));
    assert!(p.body.contains("aria-invalid=\"true\""));
    assert!(
        p.body.contains("My &lt;i&gt;notes&lt;/i&gt;"),
        "description kept, escaped"
    );
    assert!(p.body.contains("value=\"keep, these\"") && p.body.contains("value=\"src-kept\""));
    assert!(p.body.contains("<option value=\"region:eu\" selected>"));
    assert!(
        p.body.contains("choose it again"),
        "tells the author to pick the file again"
    );

    // Unknown region, and a malformed scope.
    for scope in ["region:mars", "everywhere"] {
        let p = alice
            .upload(
                "/publish",
                &[("title", "Scoped"), ("scope", scope)],
                Some(("a.txt", bytes(100, 1))),
            )
            .await?;
        assert_eq!(p.status, StatusCode::BAD_REQUEST, "{scope}");
        assert!(
            p.body
                .contains("Choose the scope: global or one of the regions eu, na."),
            "{}",
            p.body
        );
        assert!(p.body.contains("value=\"Scoped\""));
        assert!(p.body.contains(&format!("{scope} (unknown)")));
    }

    // Several problems at once are all reported.
    let long = "x".repeat(501);
    let p = alice
        .upload(
            "/publish",
            &[
                ("title", &long),
                ("tags", &"t".repeat(65)),
                ("scope", "nope"),
            ],
            Some(("a.txt", vec![1])),
        )
        .await?;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    for msg in ["longer than 500", "Each tag must be", "Choose the scope"] {
        assert!(p.body.contains(msg), "{msg}");
    }

    // No file, or the empty part a browser sends when none was chosen.
    let p = alice
        .upload(
            "/publish",
            &[("title", "No file"), ("scope", "global")],
            None,
        )
        .await?;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.body.contains("Choose a file to publish."));
    let p = alice
        .upload(
            "/publish",
            &[("title", "No file"), ("scope", "global")],
            Some(("", vec![])),
        )
        .await?;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.body.contains("Choose a file to publish."));

    // Over the portal's limit: 413 and a clear message, during the stream...
    let p = alice
        .upload(
            "/publish",
            &[("title", "Too big"), ("scope", "global")],
            Some(("big.bin", bytes((1 << 20) + 1, 3))),
        )
        .await?;
    assert_eq!(p.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", p.body);
    assert!(
        p.body.contains("larger than the limit of 1.0 MiB"),
        "{}",
        p.body
    );
    assert!(p.body.contains("value=\"Too big\""));
    // ... or at once, when the declared length says so.
    let p = alice
        .upload(
            "/publish",
            &[("title", "Too big"), ("scope", "global")],
            Some(("big.bin", bytes(3 << 20, 3))),
        )
        .await?;
    assert_eq!(p.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(p.body.contains("larger than the limit"));
    // Exactly the limit is fine.
    alice
        .publish("Just fits", "global", "", bytes(1 << 20, 4))
        .await?;

    // Not multipart at all.
    let token = alice.csrf().await?;
    let p = alice
        .post_form("/publish", &[("csrf", &token), ("title", "x")])
        .await?;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.body.contains("multipart/form-data"));

    // None of the refused ones exists anywhere.
    for title in ["Scoped", "No file", "Too big"] {
        assert!(
            env.node_search("pa", title).await?.is_empty(),
            "{title} on pa"
        );
        assert!(
            env.node_search("pb", title).await?.is_empty(),
            "{title} on pb"
        );
    }
    let list = alice.get("/documents?state=any").await?;
    assert!(list.body.contains("Just fits") && !list.body.contains("Too big"));

    // Unknown pages and ids: a 404 page, no stack trace.
    let p = alice.get("/no/such/page").await?;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(p.body.contains("Not found") && p.body.contains("<nav"));
    assert_eq!(
        alice
            .get("/documents/01890a5d-ac96-774b-bcce-b302099a8057")
            .await?
            .status,
        StatusCode::NOT_FOUND
    );

    // Static assets.
    let css = alice.get("/static/style.css").await?;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.body.contains("@media"));
    let js = alice.get("/static/portal.js").await?;
    assert!(js.body.contains("XMLHttpRequest"));
    Ok(())
}
