//! Directory listing and search: FTS, filters, tombstones, cursor paging, hostile queries.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

async fn titles(c: &reqwest::Client, node: &TestNode, query: &str) -> TestResult<BTreeSet<String>> {
    let resp = c
        .get(node.url(&format!("/v1/documents?{query}")))
        .send()
        .await?;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{query}: {}",
        resp.text().await?
    );
    let list: Value = resp.json().await?;
    Ok(list["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["title"].as_str().unwrap().to_owned())
        .collect())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn search_filters_and_pages() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let docs = [
        (
            "Annual report 2026",
            "scope=global&tags=finance,annual&filename=annual.pdf",
        ),
        (
            "Harbour tide tables",
            "scope=region:eu&tags=maritime&description=Tides%20for%20Rotterdam",
        ),
        (
            "Monsoon forecast",
            "scope=region:asia&tags=weather&source=met-office",
        ),
        (
            "Quarterly finance memo",
            "scope=region:eu&tags=finance&filename=memo-q3.docx",
        ),
    ];
    let mut ids = Vec::new();
    for (title, q) in docs {
        let resp = auth(c.post(node.url(&format!("/v1/documents?{q}"))))
            .query(&[("title", title)])
            .body(title.to_owned())
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::CREATED);
        ids.push(
            resp.json::<Value>().await?["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        titles(&c, &node, "q=finance").await?,
        set(&["Annual report 2026", "Quarterly finance memo"])
    );
    assert_eq!(
        titles(&c, &node, "q=rotterdam").await?,
        set(&["Harbour tide tables"]),
        "description is searched"
    );
    assert_eq!(
        titles(&c, &node, "q=met-office").await?,
        set(&["Monsoon forecast"]),
        "source is searched"
    );
    assert_eq!(
        titles(&c, &node, "q=memo").await?,
        set(&["Quarterly finance memo"]),
        "filename is searched"
    );
    assert_eq!(
        titles(&c, &node, "q=harb*").await?,
        set(&["Harbour tide tables"]),
        "prefix"
    );
    assert_eq!(
        titles(&c, &node, "region=eu").await?,
        set(&["Harbour tide tables", "Quarterly finance memo"])
    );
    assert_eq!(
        titles(&c, &node, "scope=global").await?,
        set(&["Annual report 2026"])
    );
    assert_eq!(
        titles(&c, &node, "tag=finance&region=eu").await?,
        set(&["Quarterly finance memo"])
    );
    assert_eq!(
        titles(&c, &node, "q=finance&tag=annual").await?,
        set(&["Annual report 2026"])
    );

    // Tombstones leave the default listing but stay findable on request.
    auth(c.delete(node.url(&format!("/v1/documents/{}", ids[2]))))
        .send()
        .await?;
    assert!(!titles(&c, &node, "").await?.contains("Monsoon forecast"));
    assert_eq!(
        titles(&c, &node, "deleted=true").await?,
        set(&["Monsoon forecast"])
    );
    assert_eq!(titles(&c, &node, "deleted=any").await?.len(), 4);
    assert_eq!(
        titles(&c, &node, "q=monsoon&deleted=any").await?,
        set(&["Monsoon forecast"])
    );
    // Full text alone and with a filter (seeking the filter's index by row id) agree on
    // tombstones.
    assert!(titles(&c, &node, "q=monsoon").await?.is_empty());
    assert_eq!(
        titles(&c, &node, "q=monsoon&deleted=true").await?,
        set(&["Monsoon forecast"])
    );
    assert!(titles(&c, &node, "q=forecast&deleted=true&tag=annual")
        .await?
        .is_empty());

    // A new version's metadata replaces the old one in the index.
    auth(c.put(node.url(&format!(
        "/v1/documents/{}?title=Harbour%20schedule",
        ids[1]
    ))))
    .body("v2")
    .send()
    .await?;
    assert!(titles(&c, &node, "q=tide").await?.is_empty());
    assert_eq!(
        titles(&c, &node, "q=schedule").await?,
        set(&["Harbour schedule"])
    );

    // FTS syntax in a query never becomes an SQL error.
    for q in [
        "%22",
        "*",
        "-",
        "NEAR",
        "a%20NEAR(b)",
        "title:x",
        "(",
        "AND%20OR%20NOT",
        "%22unbalanced",
        "^start",
        "'%3B%20DROP%20TABLE%20documents",
    ] {
        let resp = c
            .get(node.url(&format!("/v1/documents?q={q}")))
            .send()
            .await?;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "q={q}: {}",
            resp.text().await?
        );
    }
    Ok(())
}

#[tokio::test]
async fn cursor_paging_visits_every_document_once() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    for i in 0..23 {
        let resp = auth(c.post(node.url(&format!(
            "/v1/documents?title=paged%20item%20{i}&tags=paged"
        ))))
        .body(format!("{i}"))
        .send()
        .await?;
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    for base in ["tag=paged", "q=paged"] {
        let mut seen = BTreeSet::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut url = node.url(&format!("/v1/documents?{base}&limit=5"));
            if let Some(cur) = &cursor {
                url.push_str(&format!("&cursor={cur}"));
            }
            let page: Value = c.get(&url).send().await?.json().await?;
            pages += 1;
            for d in page["documents"].as_array().unwrap() {
                assert!(
                    seen.insert(d["id"].as_str().unwrap().to_owned()),
                    "{base}: duplicate across pages"
                );
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 23, "{base}");
        assert_eq!(pages, 5, "{base}");
    }
    Ok(())
}

/// Arbitrary text typed into the search box (sampled by proptest: FTS5 operators, quotes,
/// unbalanced parentheses, control characters, any Unicode) is a search, never an error.
#[tokio::test]
async fn arbitrary_search_text_never_errors() -> TestResult {
    use proptest::strategy::{Strategy, ValueTree};
    let node = TestNode::start().await?;
    let c = client();
    let resp = auth(c.post(node.url("/v1/documents?title=Annual%20report&tags=finance")))
        .body("x")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let strategy = proptest::prop_oneof![
        "[a-zA-Z0-9 \"*()^:+-]{0,40}",
        "(AND|OR|NOT|NEAR|\\(|\\)|\"|\\*|-|\\^|:| |annual|rep\\*){0,12}",
        ".{0,60}",
    ];
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..200 {
        let text = strategy
            .new_tree(&mut runner)
            .map_err(|e| e.to_string())?
            .current();
        let resp = c
            .get(node.url("/v1/documents"))
            .query(&[("q", text.as_str())])
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await?;
        assert_eq!(status, StatusCode::OK, "{text:?}: {body}");
    }
    Ok(())
}

/// A search is bounded before it runs: too long, too many words, too many prefix searches
/// (each prefix may expand into thousands of index terms) are refused with the reason, and
/// the node answers other searches as before.
#[tokio::test]
async fn a_search_beyond_the_bounds_is_refused_with_the_reason() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let resp = auth(c.post(node.url("/v1/documents?title=Bounded%20search")))
        .body("x")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let prefixes = "ab* bo* bu* ca* ce* ci*";
    let words = (0..40)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let long = "x".repeat(2000);
    for (q, says) in [
        (prefixes, "prefix"),
        (words.as_str(), "words"),
        (long.as_str(), "longer"),
    ] {
        let resp = c
            .get(node.url("/v1/documents"))
            .query(&[("q", q)])
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{q}");
        let body: Value = resp.json().await?;
        assert_eq!(body["code"], "invalid_field", "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("`q`") && error.contains(says), "{body}");
    }
    assert_eq!(
        titles(&c, &node, "q=bounded%20sea*").await?,
        set(&["Bounded search"])
    );
    Ok(())
}
