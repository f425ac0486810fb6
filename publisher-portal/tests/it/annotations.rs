//! The annotations inbox: pending annotations on the author's own documents, those on deleted
//! documents marked with a reactivate button, accept (then shown on the document) and reject.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{bytes, eventually, Env, TestResult};

#[tokio::test]
async fn annotations_inbox() -> TestResult {
    let env = Env::start(&[]).await?;
    let alice = env.author("alice").await?;
    let bob = env.author("bob").await?;
    let kept = alice
        .publish("Field guide", "global", "", bytes(100, 1))
        .await?;
    let gone = alice
        .publish("Old timetable", "global", "", bytes(100, 2))
        .await?;
    let bobs = bob
        .publish("Bob's notes", "global", "", bytes(100, 3))
        .await?;

    // Readers annotate at their regional nodes; annotations travel up to the primaries.
    let annotate = |role: &str, id: &str, text: &str| {
        let url = format!("{}/v1/documents/{id}/annotations", env.node_url(role));
        let text = text.to_owned();
        async move {
            let client = docfed_http::tls::client_builder()
                .build()
                .expect("HTTP client");
            // The regional node learns of the document a moment after it is published.
            eventually(
                Duration::from_secs(20),
                "annotation accepted by the regional node",
                || {
                    let (client, url, text) = (client.clone(), url.clone(), text.clone());
                    async move {
                        let r = client
                            .post(&url)
                            .json(&json!({"text": text, "author": "reader <r@x>"}))
                            .send()
                            .await?;
                        Ok((r.status() == StatusCode::CREATED).then_some(()))
                    }
                },
            )
            .await
        }
    };
    annotate("na", &kept, "Page 3 has a <b>typo</b>").await?;
    annotate("eu", &gone, "Still useful!").await?;
    annotate("na", &bobs, "For bob only").await?;

    // Alice's inbox: both of hers, not bob's.
    let inbox = eventually(
        Duration::from_secs(30),
        "two annotations in alice's inbox",
        || async {
            let p = alice.get("/annotations").await?;
            Ok((p.body.contains("typo") && p.body.contains("Still useful!")).then_some(p))
        },
    )
    .await?;
    assert!(!inbox.body.contains("For bob only"));
    assert!(
        inbox.body.contains("Page 3 has a &lt;b&gt;typo&lt;/b&gt;"),
        "escaped"
    );
    assert!(inbox.body.contains("reader &lt;r@x&gt;"));

    // Delete one document: its annotation is flagged, with a reactivate button.
    let confirm = alice.get(&format!("/documents/{gone}/delete")).await?;
    let p = alice
        .post_form(
            &format!("/documents/{gone}/delete"),
            &[("csrf", &confirm.csrf())],
        )
        .await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let inbox = alice.get("/annotations").await?;
    assert!(inbox.body.contains("document deleted"), "{}", inbox.body);
    assert!(inbox
        .body
        .contains(&format!("action=\"/documents/{gone}/reactivate\"")));
    assert!(!inbox
        .body
        .contains(&format!("action=\"/documents/{kept}/reactivate\"")));

    // Reactivate from the inbox: back to the inbox.
    let token = inbox.csrf();
    let p = alice
        .post_form(
            &format!("/documents/{gone}/reactivate"),
            &[("csrf", &token), ("back", "annotations")],
        )
        .await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location(), "/annotations?done=reactivated");
    assert!(!alice
        .get("/annotations")
        .await?
        .body
        .contains("document deleted"));

    // Accept one, reject the other; each needs the annotation id and the author's document.
    let aid = |body: &str, doc: &str| {
        body.split("action=\"/annotations/")
            .skip(1)
            .filter_map(|s| s.split_once('/'))
            .map(|(a, _)| a.to_owned())
            .find(|a| {
                body.contains(&format!("/annotations/{a}/accept")) && {
                    let after = body
                        .split(&format!("/annotations/{a}/accept"))
                        .nth(1)
                        .unwrap_or("");
                    let form = after.split("</form>").next().unwrap_or("");
                    form.contains(&format!("value=\"{doc}\""))
                }
            })
    };
    let inbox = alice.get("/annotations").await?;
    let typo = aid(&inbox.body, &kept).ok_or("annotation on the kept document")?;
    let useful = aid(&inbox.body, &gone).ok_or("annotation on the reactivated document")?;
    let token = inbox.csrf();

    // Bob cannot vet alice's annotations.
    let bob_token = bob.csrf().await?;
    let p = bob
        .post_form(
            &format!("/annotations/{typo}/accept"),
            &[("csrf", &bob_token), ("doc_id", &kept)],
        )
        .await?;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    let p = bob
        .post_form(
            &format!("/annotations/{typo}/accept"),
            &[("csrf", &bob_token), ("doc_id", &bobs)],
        )
        .await?;
    assert_eq!(
        p.status,
        StatusCode::NOT_FOUND,
        "annotation of another document"
    );

    let p = alice
        .post_form(
            &format!("/annotations/{typo}/accept"),
            &[("csrf", &token), ("doc_id", &kept)],
        )
        .await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location(), "/annotations?done=accepted");
    let p = alice
        .post_form(
            &format!("/annotations/{useful}/reject"),
            &[("csrf", &token), ("doc_id", &gone)],
        )
        .await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let inbox = alice.get("/annotations").await?;
    assert!(
        inbox.body.contains("No pending annotations."),
        "{}",
        inbox.body
    );

    // The accepted annotation is on the document's page; the rejected one is not.
    let page = alice.get(&format!("/documents/{kept}")).await?;
    assert!(page.body.contains("Page 3 has a &lt;b&gt;typo&lt;/b&gt;"));
    let page = alice.get(&format!("/documents/{gone}")).await?;
    assert!(!page.body.contains("Still useful!"));

    // Both primaries recorded the decision.
    for role in ["pa", "pb"] {
        let v: serde_json::Value = docfed_http::tls::client_builder()
            .build()
            .expect("HTTP client")
            .get(format!(
                "{}/v1/annotations?state=any&doc_id={kept}",
                env.node_url(role)
            ))
            .bearer_auth(env.fed.token())
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(v["annotations"][0]["state"], "accepted", "{role}: {v}");
    }

    // Unknown decision and unknown annotation.
    let p = alice
        .post_form(
            &format!("/annotations/{typo}/maybe"),
            &[("csrf", &token), ("doc_id", &kept)],
        )
        .await?;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    let p = alice
        .post_form(
            "/annotations/nope/accept",
            &[("csrf", &token), ("doc_id", &kept)],
        )
        .await?;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    Ok(())
}
