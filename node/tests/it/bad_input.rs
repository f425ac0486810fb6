//! Every bad input gets a clear error and changes nothing.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

async fn expect_error(
    resp: reqwest::Response,
    status: StatusCode,
    code: &str,
    mentions: &str,
) -> TestResult {
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await?;
    assert_eq!(body["code"], code, "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains(mentions),
        "error {msg:?} should mention {mentions:?}"
    );
    Ok(())
}

async fn assert_unchanged(
    c: &reqwest::Client,
    node: &TestNode,
    expected_changes: usize,
) -> TestResult {
    let feed: Value = c.get(node.url("/v1/changes")).send().await?.json().await?;
    assert_eq!(
        feed["changes"].as_array().unwrap().len(),
        expected_changes,
        "{feed}"
    );
    let objects = files_under(&node.dir.join("objects")).len();
    assert!(objects <= expected_changes, "stray objects: {objects}");
    assert!(
        files_under(&node.dir.join("tmp")).is_empty(),
        "temporary files left behind"
    );
    Ok(())
}

#[tokio::test]
async fn writes_need_the_token() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let resp = c
        .post(node.url("/v1/documents?title=t"))
        .body("x")
        .send()
        .await?;
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"docfed\""
    );
    expect_error(resp, StatusCode::UNAUTHORIZED, "unauthorized", "token").await?;
    let resp = c
        .post(node.url("/v1/documents?title=t"))
        .bearer_auth("wrong-token-wrong-token")
        .body("x")
        .send()
        .await?;
    expect_error(resp, StatusCode::UNAUTHORIZED, "unauthorized", "token").await?;
    let resp = c
        .post(node.url("/v1/documents?title=t"))
        .header("Authorization", format!("Basic {TOKEN}"))
        .body("x")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_unchanged(&c, &node, 0).await?;

    let resp = auth(c.post(node.url("/v1/documents?title=t")))
        .body("x")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let id = resp.json::<Value>().await?["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for req in [
        c.put(node.url(&format!("/v1/documents/{id}"))).body("y"),
        c.delete(node.url(&format!("/v1/documents/{id}"))),
        c.post(node.url(&format!("/v1/documents/{id}/reactivate"))),
    ] {
        assert_eq!(req.send().await?.status(), StatusCode::UNAUTHORIZED);
    }
    assert_unchanged(&c, &node, 1).await?;
    Ok(())
}

#[tokio::test]
async fn malformed_metadata_names_the_field() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let long = "x".repeat(501);
    let cases: Vec<(String, &str)> = vec![
        ("filename=a.txt".into(), "`title`"),
        ("title=%20%20".into(), "`title`"),
        (format!("title={long}"), "`title`"),
        ("title=t&scope=mars".into(), "`scope`"),
        ("title=t&scope=region:EU".into(), "`scope`"),
        ("title=t&tags=".to_owned() + &"y".repeat(65), "`tags`"),
        ("title=t&filename=a%0Ab".into(), "`filename`"),
        ("title=t&content_type=not-a-type".into(), "`content_type`"),
    ];
    for (query, field) in cases {
        let resp = auth(c.post(node.url(&format!("/v1/documents?{query}"))))
            .body("data")
            .send()
            .await?;
        expect_error(resp, StatusCode::BAD_REQUEST, "invalid_field", field).await?;
    }
    let resp = auth(c.post(node.url("/v1/documents?titel=t")))
        .body("data")
        .send()
        .await?;
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_request", "titel").await?;

    for (query, field) in [
        ("deleted=maybe", "`deleted`"),
        ("limit=0", "`limit`"),
        ("scope=x", "`scope`"),
        ("cursor=zzz", "`cursor`"),
    ] {
        let resp = c
            .get(node.url(&format!("/v1/documents?{query}")))
            .send()
            .await?;
        expect_error(resp, StatusCode::BAD_REQUEST, "invalid_field", field).await?;
    }
    let resp = c.get(node.url("/v1/changes?since=-1")).send().await?;
    expect_error(resp, StatusCode::BAD_REQUEST, "invalid_field", "`since`").await?;
    assert_unchanged(&c, &node, 0).await?;
    Ok(())
}

#[tokio::test]
async fn unknown_and_malformed_ids() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let unknown = "01890a5d-ac96-774b-bcce-b302099a8057";
    for path in ["", "/versions", "/content"] {
        let resp = c
            .get(node.url(&format!("/v1/documents/{unknown}{path}")))
            .send()
            .await?;
        expect_error(resp, StatusCode::NOT_FOUND, "not_found", unknown).await?;
        let resp = c
            .get(node.url(&format!("/v1/documents/..%2F..%2Fetc{path}")))
            .send()
            .await?;
        expect_error(resp, StatusCode::BAD_REQUEST, "invalid_field", "`id`").await?;
    }
    let resp = auth(c.put(node.url(&format!("/v1/documents/{unknown}"))))
        .body("x")
        .send()
        .await?;
    expect_error(resp, StatusCode::NOT_FOUND, "not_found", unknown).await?;
    let resp = auth(c.delete(node.url(&format!("/v1/documents/{unknown}"))))
        .send()
        .await?;
    expect_error(resp, StatusCode::NOT_FOUND, "not_found", unknown).await?;
    let resp = auth(c.post(node.url(&format!("/v1/documents/{unknown}/reactivate"))))
        .send()
        .await?;
    expect_error(resp, StatusCode::NOT_FOUND, "not_found", unknown).await?;
    let resp = c.get(node.url("/v1/nothing-here")).send().await?;
    expect_error(resp, StatusCode::NOT_FOUND, "not_found", "route").await?;
    assert_unchanged(&c, &node, 0).await?;
    Ok(())
}

#[tokio::test]
async fn oversized_uploads_are_refused_whether_announced_or_not() -> TestResult {
    let node = TestNode::start_with(&["--max-upload-size", "1MiB"]).await?;
    let c = client();
    // Announced by Content-Length: refused before the body is read.
    let resp = auth(c.post(node.url("/v1/documents?title=big")))
        .body(vec![0u8; 1024 * 1024 + 1])
        .send()
        .await;
    match resp {
        Ok(resp) => {
            expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "too_large", "1048576").await?
        }
        // The node may close the connection while the client is still sending: also a refusal.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    // Chunked, no length: refused as soon as the limit is crossed.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![1u8; 100_000])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let resp = auth(c.post(node.url("/v1/documents?title=big")))
        .body(body)
        .send()
        .await;
    if let Ok(resp) = resp {
        expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "too_large", "1048576").await?;
    }
    wait_until(
        std::time::Duration::from_secs(10),
        "temporary files to go",
        || files_under(&node.dir.join("tmp")).is_empty(),
    )
    .await?;
    assert_unchanged(&c, &node, 0).await?;
    // Exactly at the limit is fine.
    let resp = auth(c.post(node.url("/v1/documents?title=fits")))
        .body(vec![0u8; 1024 * 1024])
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    Ok(())
}

#[tokio::test]
async fn tombstoned_documents_take_no_new_version() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let resp = auth(c.post(node.url("/v1/documents?title=t")))
        .body("one")
        .send()
        .await?;
    let id = resp.json::<Value>().await?["id"]
        .as_str()
        .unwrap()
        .to_owned();
    auth(c.delete(node.url(&format!("/v1/documents/{id}"))))
        .send()
        .await?;
    let resp = auth(c.put(node.url(&format!("/v1/documents/{id}"))))
        .body("two")
        .send()
        .await?;
    expect_error(resp, StatusCode::CONFLICT, "conflict", "reactivate").await?;
    let resp = auth(c.post(node.url(&format!("/v1/documents/{id}/reactivate"))))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = auth(c.post(node.url(&format!("/v1/documents/{id}/reactivate"))))
        .send()
        .await?;
    expect_error(resp, StatusCode::CONFLICT, "conflict", "not deleted").await?;
    assert_unchanged(&c, &node, 3).await?;
    Ok(())
}

/// The deliberate defects of the endurance harness exist only in builds with the `plant-bug`
/// feature: this test's node, built like a release, refuses the switch.
#[test]
fn the_planted_bug_switch_is_not_in_normal_builds() -> TestResult {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_docfed-node"))
        .args(["--plant-bug", "ack-before-commit", "--help"])
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--plant-bug"), "{err}");
    Ok(())
}

#[tokio::test]
async fn an_import_stops_at_a_malformed_line_after_recording_the_lines_before_it() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let line = |i: u64| import_line(i, "Imported", "imported");
    let good: Vec<String> = (0..3).map(line).collect::<TestResult<_>>()?;
    // A directory that holds something already: an incremental import, a transaction per
    // batch (into an empty one, a first load is all or nothing: the next test).
    let resp = auth(c.post(node.url("/v1/admin/import")))
        .body(line(100)?)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = format!(
        "{}\n{}\n{}\n{{\"id\": 42}}\n{}\n",
        good[0],
        good[1],
        good[2],
        line(3)?
    );
    let resp = auth(c.post(node.url("/v1/admin/import")))
        .body(body)
        .send()
        .await?;
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_request", "line 4").await?;
    let list: Value = c
        .get(node.url("/v1/documents?tag=imported"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        list["documents"].as_array().map(Vec::len),
        Some(4),
        "{list}"
    );
    // Repeated once fixed, the import records only what is new.
    let resp = auth(c.post(node.url("/v1/admin/import")))
        .body(format!("{}\n", good.join("\n")))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let counts: Value = resp.json().await?;
    assert_eq!(
        (
            counts["imported"].as_u64(),
            counts["already_known"].as_u64()
        ),
        (Some(0), Some(3))
    );
    Ok(())
}

/// A first load into an empty directory is one transaction, its indexes built after the rows:
/// a malformed line keeps nothing; while a load runs, other writes are answered 503 with
/// `Retry-After` and readers see the directory as it was; once committed, listings by tag and
/// full-text search find every document (the indexes and the full-text index were rebuilt).
#[tokio::test]
async fn a_first_load_is_all_or_nothing_and_turns_writers_away_while_it_runs() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let line = |i: u64| -> TestResult<String> {
        Ok(format!(
            "{}\n",
            import_line(i, "Harbour chart", "firstload")?
        ))
    };
    let count = |query: &'static str| {
        let c = c.clone();
        let url = node.url(query);
        async move {
            let list: Value = c.get(url).send().await?.json().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                list["documents"].as_array().map_or(0, Vec::len),
            )
        }
    };
    // All or nothing.
    let resp = auth(c.post(node.url("/v1/admin/import")))
        .body(format!("{}{}{{\"id\": 42}}\n", line(0)?, line(1)?))
        .send()
        .await?;
    expect_error(
        resp,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "nothing was recorded",
    )
    .await?;
    assert_eq!(count("/v1/documents?tag=firstload").await?, 0);

    // A load whose body is still arriving holds the writer.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let load = tokio::spawn(auth(c.post(node.url("/v1/admin/import"))).body(body).send());
    for i in 0..50 {
        tx.send(Ok(line(i)?.into_bytes())).await?;
    }
    // The request's first bytes may still sit in socket buffers: wait until the load holds the
    // writer, probing with a write that records no version (a device's registration, which
    // would not make the directory non-empty if it got in first).
    crate::common::eventually(
        std::time::Duration::from_secs(30),
        "the load to hold the writer",
        || async {
            let resp = auth(c.post(node.url("/v1/devices")))
                .json(&serde_json::json!({"name": "probe"}))
                .send()
                .await?;
            Ok((resp.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(()))
        },
    )
    .await?;
    // A publication meanwhile is turned away at once, told when to come back.
    let resp = auth(c.post(node.url("/v1/documents?title=during")))
        .body("x")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    // Readers see the directory as it was committed: empty.
    assert_eq!(count("/v1/documents?tag=firstload").await?, 0);
    for i in 50..100 {
        tx.send(Ok(line(i)?.into_bytes())).await?;
    }
    drop(tx);
    let resp = load.await??;
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await?);
    assert_eq!(count("/v1/documents?tag=firstload&limit=200").await?, 100);
    assert_eq!(count("/v1/documents?q=harbour&limit=200").await?, 100);
    assert_eq!(count("/v1/documents?q=chart*&limit=200").await?, 100);
    // Writers are welcome again.
    let resp = auth(c.post(node.url("/v1/documents?title=after")))
        .body("x")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    Ok(())
}

/// The receiving end of `rx` as a stream of request body chunks.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A JSON line for `POST /v1/admin/import`: version 1 of a new document titled `{title} {i}`
/// with tag `tag`, at a standalone node.
fn import_line(i: u64, title: &str, tag: &str) -> TestResult<String> {
    let v = docfed_shared::wire::DocumentVersion {
        id: docfed_shared::DocId::new(),
        version: 1,
        origin: "standalone".into(),
        title: format!("{title} {i}"),
        description: String::new(),
        tags: vec![tag.into()],
        filename: format!("{i}.bin"),
        source: String::new(),
        scope: docfed_shared::Scope::Global,
        content_type: "application/octet-stream".into(),
        md5: md5_hex(&i.to_be_bytes()).parse()?,
        size: 8,
        deleted: false,
        created_at: docfed_shared::wire::Timestamp::now(),
        author: String::new(),
        sha256: None,
        signature: None,
        lazy: false,
    };
    Ok(serde_json::to_string(&v)?)
}
