//! Publish, list and search, document page with propagation, new version, delete with
//! confirmation, reactivate; ownership; CSRF on every form.

use std::time::Duration;

use reqwest::StatusCode;

use crate::common::{bytes, eventually, Env, TestResult};

#[tokio::test]
async fn publish_list_version_delete_reactivate() -> TestResult {
    let env = Env::start(&[]).await?;
    let alice = env.author("alice").await?;

    // Publish: streamed to a primary, recorded as alice's, redirect to its page.
    let content = bytes(300_000, 7);
    let p = alice
        .upload(
            "/publish",
            &[
                ("title", "Annual <report> & co"),
                ("description", "line one\nline two"),
                ("tags", "Finance, 2025, finance"),
                ("source", "accounting dept"),
                ("scope", "global"),
            ],
            Some(("report.pdf", content.clone())),
        )
        .await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let id = p.doc_id();
    assert_eq!(p.location(), format!("/documents/{id}?done=published"));

    let meta = env
        .node_doc("pa", &id)
        .await?
        .or(env.node_doc("pb", &id).await?)
        .ok_or("not on a primary")?;
    assert_eq!(meta["title"], "Annual <report> & co");
    assert_eq!(meta["tags"], serde_json::json!(["finance", "2025"]));
    assert_eq!(meta["filename"], "report.pdf");
    assert_eq!(meta["source"], "accounting dept");
    assert_eq!(meta["author"], "alice");
    assert_eq!(meta["content_type"], "application/pdf");
    assert_eq!(meta["size"], 300_000);
    assert_eq!(meta["md5"], format!("{:032x}", md5_of(&content)));

    // The page: escaped title, metadata, propagation table, history, new-version form.
    let page = alice
        .get(&format!("/documents/{id}?done=published"))
        .await?;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Annual &lt;report&gt; &amp; co"));
    assert!(!page.body.contains("<report>"));
    assert!(page
        .body
        .contains("Published. The document is now spreading"));
    assert!(page.body.contains("id=\"propagation\""));
    assert!(page.body.contains("Version history"));
    assert!(page
        .body
        .contains(&format!("action=\"/documents/{id}/versions\"")));

    // Propagation JSON (what the page polls) reaches every node.
    let prop = eventually(
        Duration::from_secs(30),
        "all four nodes to hold version 1",
        || async {
            let (s, v) = alice
                .json(&format!("/documents/{id}/propagation.json"))
                .await?;
            assert_eq!(s, StatusCode::OK);
            Ok((v["complete"] == true).then_some(v))
        },
    )
    .await?;
    assert_eq!(prop["rows"].as_array().map(Vec::len), Some(4));
    assert!(prop["summary"]
        .as_str()
        .unwrap_or("")
        .starts_with("4 of 4 nodes hold version 1"));
    assert!(prop["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|r| r["state"] == "current"));

    // A second, regional document, to filter.
    let maps = alice
        .publish("Maps of Europe", "region:eu", "maps, geo", bytes(1000, 1))
        .await?;
    let list = alice.get("/documents").await?;
    assert!(list.body.contains("Annual &lt;report&gt;") && list.body.contains("Maps of Europe"));
    let only = |q: &str| {
        let alice = alice.clone();
        let q = q.to_owned();
        async move { alice.get(&format!("/documents?{q}")).await }
    };
    let p = only("q=annual").await?;
    assert!(p.body.contains("Annual") && !p.body.contains("Maps of Europe"));
    let p = only("tag=maps").await?;
    assert!(!p.body.contains("Annual") && p.body.contains("Maps of Europe"));
    let p = only("scope=region%3Aeu").await?;
    assert!(!p.body.contains("Annual") && p.body.contains("Maps of Europe"));
    let p = only("q=nothing-like-this").await?;
    assert!(p.body.contains("No documents match."));
    let p = only("offset=abc").await?;
    assert_eq!(p.status, StatusCode::OK, "a malformed query shows the list");

    // New version: same form on the document page.
    let v2 = bytes(5000, 9);
    let p = alice
        .upload(
            &format!("/documents/{id}/versions"),
            &[
                ("title", "Annual report, corrected"),
                ("description", ""),
                ("tags", "finance"),
                ("source", "x"),
                ("scope", "region:na"),
            ],
            Some(("report-v2.pdf", v2)),
        )
        .await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location(), format!("/documents/{id}?done=version"));
    let page = alice.get(&format!("/documents/{id}")).await?;
    assert!(page.body.contains("Annual report, corrected"));
    assert!(
        page.body.contains("report-v2.pdf") && page.body.contains("report.pdf"),
        "both versions in the history"
    );
    assert!(alice
        .get("/documents?q=corrected")
        .await?
        .body
        .contains("Annual report, corrected"));

    // Delete: a confirmation page first, then the tombstone.
    let confirm = alice.get(&format!("/documents/{id}/delete")).await?;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("Delete document"));
    let p = alice
        .post_form(
            &format!("/documents/{id}/delete"),
            &[("csrf", &confirm.csrf())],
        )
        .await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location(), format!("/documents/{id}?done=deleted"));
    let meta = env.node_doc("pa", &id).await?.ok_or("gone from pa")?;
    assert_eq!(meta["deleted"], true);
    assert!(!alice
        .get("/documents")
        .await?
        .body
        .contains("Annual report, corrected"));
    assert!(alice
        .get("/documents?state=deleted")
        .await?
        .body
        .contains("Annual report, corrected"));
    let page = alice.get(&format!("/documents/{id}")).await?;
    assert!(page.body.contains("Reactivate") && !page.body.contains("Publish a new version"));
    // A new version of a deleted document (say, from a page left open): the primary refuses
    // before reading the file; the author reads why, and the primary is not taken for dead.
    let p = alice
        .upload(
            &format!("/documents/{id}/versions"),
            &[("title", "Too late"), ("scope", "global")],
            Some(("late.pdf", bytes(8 << 20, 5))),
        )
        .await?;
    assert_eq!(p.status, StatusCode::CONFLICT, "{}", p.body);
    assert!(p.body.contains("reactivate it first"), "{}", p.body);
    assert!(!p.body.contains("class=\"banner\""), "{}", p.body);
    // Deleting again just shows the page.
    assert_eq!(
        alice.get(&format!("/documents/{id}/delete")).await?.status,
        StatusCode::SEE_OTHER
    );

    // Reactivate.
    let p = alice
        .post_with_csrf(
            &format!("/documents/{id}"),
            &format!("/documents/{id}/reactivate"),
            &[],
        )
        .await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location(), format!("/documents/{id}?done=reactivated"));
    eventually(Duration::from_secs(10), "reactivation on pa", || async {
        Ok(env
            .node_doc("pa", &id)
            .await?
            .filter(|m| m["deleted"] == false))
    })
    .await?;
    assert!(alice
        .get("/documents")
        .await?
        .body
        .contains("Annual report, corrected"));
    // Reactivating a live document: the node's refusal, as a page.
    let p = alice
        .post_with_csrf(
            &format!("/documents/{id}"),
            &format!("/documents/{id}/reactivate"),
            &[],
        )
        .await?;
    assert_eq!(p.status, StatusCode::CONFLICT);
    assert!(p.body.contains("is not deleted"));

    // Another author sees none of it and can change none of it.
    let bob = env.author("bob").await?;
    assert!(!bob
        .get("/documents?state=any")
        .await?
        .body
        .contains("Annual"));
    assert_eq!(
        bob.get(&format!("/documents/{id}")).await?.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bob.json(&format!("/documents/{id}/propagation.json"))
            .await?
            .0,
        StatusCode::NOT_FOUND
    );
    let p = bob
        .post_with_csrf("/publish", &format!("/documents/{id}/delete"), &[])
        .await?;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    let p = bob
        .upload(
            &format!("/documents/{maps}/versions"),
            &[("title", "mine now")],
            Some(("x", vec![1])),
        )
        .await?;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert_eq!(
        env.node_doc("pa", &id).await?.ok_or("gone")?["deleted"],
        false
    );
    assert_eq!(
        bob.get("/documents/not-an-id").await?.status,
        StatusCode::NOT_FOUND
    );
    Ok(())
}

#[tokio::test]
async fn every_post_needs_the_csrf_token() -> TestResult {
    let env = Env::start(&[]).await?;
    let alice = env.author("alice").await?;
    let id = alice.publish("Keep me", "global", "", bytes(10, 0)).await?;
    let other = env.author("other").await?;
    let other_token = other.csrf().await?;

    for (path, token) in [
        (format!("/documents/{id}/delete"), ""),
        (format!("/documents/{id}/delete"), "0000"),
        // A valid token of another session is no good either.
        (format!("/documents/{id}/delete"), other_token.as_str()),
        (format!("/documents/{id}/reactivate"), ""),
        ("/annotations/a1/accept".to_owned(), ""),
        ("/annotations/a1/reject".to_owned(), ""),
        ("/logout".to_owned(), ""),
    ] {
        let p = alice
            .post_form(&path, &[("csrf", token), ("doc_id", &id)])
            .await?;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{path} with {token:?}");
        assert!(p.body.contains("security token"), "{path}: {}", p.body);
    }
    // Multipart forms: the token must be the first field.
    for path in ["/publish".to_owned(), format!("/documents/{id}/versions")] {
        let form = reqwest::multipart::Form::new()
            .text("title", "sneaky")
            .text("scope", "global")
            .part(
                "file",
                reqwest::multipart::Part::bytes(vec![1, 2, 3]).file_name("x.bin"),
            );
        let r = alice
            .http
            .post(format!("{}{path}", alice.base))
            .multipart(form)
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        let form = reqwest::multipart::Form::new()
            .text("csrf", other_token.clone())
            .text("title", "sneaky")
            .part(
                "file",
                reqwest::multipart::Part::bytes(vec![1, 2, 3]).file_name("x.bin"),
            );
        let r = alice
            .http
            .post(format!("{}{path}", alice.base))
            .multipart(form)
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // Nothing changed.
    let meta = env.node_doc("pa", &id).await?.ok_or("missing")?;
    assert_eq!(meta["deleted"], false);
    assert_eq!(meta["version"], 1);
    assert!(env.node_search("pa", "sneaky").await?.is_empty());
    assert_eq!(
        alice.get("/documents").await?.status,
        StatusCode::OK,
        "still logged in"
    );
    Ok(())
}

fn md5_of(b: &[u8]) -> u128 {
    let mut s = docfed_shared::Md5Stream::new();
    s.update(b);
    u128::from_str_radix(s.finish().0.as_str(), 16).unwrap_or(0)
}
