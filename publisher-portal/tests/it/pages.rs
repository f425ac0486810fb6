//! What a new author trips over in the first hour (issue 15): the navigation marks the current
//! page and counts pending annotations; times are `<time>` elements with a relative text; the
//! author downloads their own file (current or any version, resumable); a tombstone reads as a
//! tombstone; a node that is down reads "down", in the propagation table, in the document list
//! and on the federation page.

use std::time::Duration;

use reqwest::header::{CONTENT_DISPOSITION, RANGE};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{bytes, eventually, Client, Env, TestResult};

const T: Duration = Duration::from_secs(60);

/// Text of the page outside tags, where an RFC 3339 time (`2026-11-23T08:46:02`) must not
/// appear: times are shown relative, the exact one only in attributes.
pub(crate) fn raw_iso_in_text(html: &str) -> Option<String> {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let b = text.as_bytes();
    (0..b.len().saturating_sub(19)).find_map(|i| {
        let w = &b[i..i + 19];
        let digits = |r: std::ops::Range<usize>| r.into_iter().all(|j| w[j].is_ascii_digit());
        (digits(0..4)
            && w[4] == b'-'
            && digits(5..7)
            && w[7] == b'-'
            && digits(8..10)
            && w[10] == b'T'
            && digits(11..13)
            && w[13] == b':')
            .then(|| text[i..i + 19].to_owned())
    })
}

/// The `<tr>` of the federation page for node `id`.
fn node_row(page: &str, id: &str) -> Option<String> {
    let at = page.find(&format!("data-node=\"{id}\""))?;
    let rest = &page[page[..at].rfind("<tr")?..];
    Some(rest[..rest.find("</tr>")?].to_owned())
}

async fn download(
    c: &Client,
    path: &str,
    range: Option<&str>,
) -> TestResult<(StatusCode, String, Vec<u8>)> {
    let mut r = c.http.get(format!("{}{path}", c.base));
    if let Some(range) = range {
        r = r.header(RANGE, range);
    }
    let r = r.send().await?;
    let disposition = r
        .headers()
        .get(CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok((r.status(), disposition, r.bytes().await?.to_vec()))
}

#[tokio::test]
async fn navigation_times_downloads_tombstones_and_down_nodes() -> TestResult {
    let mut env = Env::start(&[]).await?;
    let alice = env.author("alice").await?;
    let bob = env.author("bob").await?;

    // The navigation marks the page it is on.
    for (path, href) in [
        ("/documents", "/documents"),
        ("/publish", "/publish"),
        ("/annotations", "/annotations"),
        ("/federation", "/federation"),
        ("/sources", "/sources"),
    ] {
        let page = alice.get(path).await?;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(
            page.body
                .contains(&format!("href=\"{href}\" aria-current=\"page\"")),
            "{path} marks itself in the navigation"
        );
        assert_eq!(
            page.body.matches("aria-current").count(),
            1,
            "{path}: one entry is current"
        );
    }

    // A topology without sources says so, and where they would be configured.
    let page = alice.get("/sources").await?;
    assert!(
        page.body.contains("No sources are configured.") && page.body.contains("[[source]]"),
        "{}",
        page.body
    );

    // Publish, then a new version.
    let v1 = bytes(200_000, 3);
    let id = alice
        .publish("Survey notes", "global", "", v1.clone())
        .await?;
    let v2 = bytes(70_000, 4);
    let p = alice
        .upload(
            &format!("/documents/{id}/versions"),
            &[("title", "Survey notes"), ("scope", "global")],
            Some(("notes-v2.txt", v2.clone())),
        )
        .await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);

    // Times: <time datetime> with a relative text; no raw ISO time left in the page's text.
    let page = alice.get(&format!("/documents/{id}")).await?;
    assert!(page.body.contains("<time datetime=\""), "{}", page.body);
    assert!(page.body.contains(" ago</time>") || page.body.contains(">just now</time>"));
    assert_eq!(raw_iso_in_text(&page.body), None, "{}", page.body);
    assert_eq!(raw_iso_in_text(&alice.get("/documents").await?.body), None);

    // Downloads: the current version, any version, a range; the author's file name.
    assert!(page
        .body
        .contains(&format!("href=\"/documents/{id}/download\"")));
    assert!(page
        .body
        .contains(&format!("href=\"/documents/{id}/download?version=1\"")));
    let (s, disposition, body) =
        download(&alice, &format!("/documents/{id}/download"), None).await?;
    assert_eq!(s, StatusCode::OK);
    assert!(body == v2, "the current version's bytes");
    assert!(
        disposition.starts_with("attachment; filename=\"notes-v2.txt\""),
        "{disposition}"
    );
    let (s, disposition, body) =
        download(&alice, &format!("/documents/{id}/download?version=1"), None).await?;
    assert_eq!(s, StatusCode::OK);
    assert!(body == v1, "version 1's bytes");
    assert!(
        disposition.contains("filename=\"doc.txt\""),
        "{disposition}"
    );
    let (s, _, body) = download(
        &alice,
        &format!("/documents/{id}/download?version=1"),
        Some("bytes=100-199"),
    )
    .await?;
    assert_eq!(s, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, v1[100..200]);
    // Only the author's own.
    let (s, _, _) = download(&bob, &format!("/documents/{id}/download"), None).await?;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A reader's annotation: counted in the navigation (of alice, not of bob).
    let url = format!("{}/v1/documents/{id}/annotations", env.node_url("na"));
    eventually(T, "the annotation accepted by na", || async {
        let r = docfed_http::tls::client_builder()
            .build()
            .expect("HTTP client")
            .post(&url)
            .json(&json!({"text": "Page 3 is missing", "author": "reader"}))
            .send()
            .await?;
        Ok((r.status() == StatusCode::CREATED).then_some(()))
    })
    .await?;
    eventually(T, "a pending count of 1 in alice's navigation", || async {
        let page = alice.get("/documents").await?;
        Ok(page
            .body
            .contains("<span class=\"count\" title=\"1 pending\">1")
            .then_some(()))
    })
    .await?;
    assert!(!bob
        .get("/documents")
        .await?
        .body
        .contains("class=\"count\""));

    // Delete: the tombstone reads as a tombstone, in the history and the propagation table;
    // the earlier versions still download for their author.
    let confirm = alice.get(&format!("/documents/{id}/delete")).await?;
    let p = alice
        .post_form(
            &format!("/documents/{id}/delete"),
            &[("csrf", &confirm.csrf())],
        )
        .await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let page = alice.get(&format!("/documents/{id}")).await?;
    assert!(page.body.contains("tombstone"), "{}", page.body);
    assert!(!page
        .body
        .contains(&format!("href=\"/documents/{id}/download?version=3\"")));
    let prop = eventually(T, "the tombstone on every node", || async {
        let (_, v) = alice
            .json(&format!("/documents/{id}/propagation.json"))
            .await?;
        Ok((v["complete"] == true).then_some(v))
    })
    .await?;
    let rows = prop["rows"].as_array().cloned().unwrap_or_default();
    assert!(rows.iter().all(|r| r["holds"] == "tombstone"), "{prop:#}");
    let (s, _, body) =
        download(&alice, &format!("/documents/{id}/download?version=2"), None).await?;
    assert_eq!(s, StatusCode::OK);
    assert!(body == v2);

    // A regional node dies: the federation page, the propagation table and the list say
    // "down", not "waiting…".
    let eu = env.id("eu");
    env.fed.kill_node(&eu).await?;
    let page = match eventually(T, "the federation page to show eu down", || async {
        let page = alice.get("/federation").await?;
        Ok(node_row(&page.body, &eu)
            .filter(|row| row.contains("class=\"health-down\""))
            .map(|_| page.body))
    })
    .await
    {
        Ok(page) => page,
        Err(e) => {
            let page = alice.get("/federation").await?.body;
            return Err(format!("{e}: {}", node_row(&page, &eu).unwrap_or(page)).into());
        }
    };
    {
        // The primaries report their own queues; everyone else's health comes from them.
        for primary in [env.id("pa"), env.id("pb")] {
            let row = node_row(&page, &primary).unwrap_or_default();
            let outbox = row.split("data-label=\"Outbox\">").nth(1).unwrap_or("");
            assert!(outbox.starts_with(|c: char| c.is_ascii_digit()), "{row}");
        }
        // (Not "3 up": on a loaded machine a live node may miss two probes in a row too.)
        assert!(page.contains("4 nodes: "), "{page}");
    }

    let after = alice
        .publish("After the outage", "global", "", bytes(1000, 5))
        .await?;
    let prop = eventually(T, "eu shown as down for the new document", || async {
        let (_, v) = alice
            .json(&format!("/documents/{after}/propagation.json"))
            .await?;
        let three = v["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["state"] == "current")
            .count()
            == 3;
        Ok((three && v["down"] == 1).then_some(v))
    })
    .await?;
    let eu_row = prop["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["node"] == eu.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(eu_row["state"], "down", "{prop:#}");
    assert!(prop["summary"].as_str().unwrap_or("").contains("; 1 down"));
    let page = alice.get(&format!("/documents/{after}")).await?;
    assert!(page.body.contains("✗ down"), "{}", page.body);
    assert!(!page.body.contains("waiting…"));
    let list = alice.get("/documents").await?;
    assert!(list.body.contains("3/4 nodes, 1 down"), "{}", list.body);
    Ok(())
}
