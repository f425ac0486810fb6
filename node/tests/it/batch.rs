//! Bulk publication (`POST /v1/documents/batch`): good items are published, bad ones refused
//! with their reasons, each named by index and file name; a request without the token publishes
//! nothing; curl's `-F` is a client.

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

/// One part of a multipart/form-data body.
enum Part<'a> {
    Meta(&'a str),
    File(&'a str, &'a [u8]),
}

const BOUNDARY: &str = "docfed-test-boundary-7e3c1a";

fn form(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match p {
            Part::Meta(json) => {
                body.extend_from_slice(
                    b"Content-Disposition: form-data; name=\"meta\"\r\n\
                      Content-Type: application/json\r\n\r\n",
                );
                body.extend_from_slice(json.as_bytes());
            }
            Part::File(name, bytes) => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(bytes);
            }
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn send(
    c: &reqwest::Client,
    node: &TestNode,
    query: &str,
    parts: &[Part<'_>],
) -> TestResult<reqwest::Response> {
    Ok(
        auth(c.post(node.url(&format!("/v1/documents/batch{query}"))))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(form(parts))
            .send()
            .await?,
    )
}

async fn content(c: &reqwest::Client, node: &TestNode, id: &str) -> TestResult<Vec<u8>> {
    let resp = c
        .get(node.url(&format!("/v1/documents/{id}/content")))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(resp.bytes().await?.to_vec())
}

async fn metadata(c: &reqwest::Client, node: &TestNode, id: &str) -> TestResult<Value> {
    Ok(c.get(node.url(&format!("/v1/documents/{id}")))
        .send()
        .await?
        .json()
        .await?)
}

async fn document_count(c: &reqwest::Client, node: &TestNode) -> TestResult<usize> {
    let list: Value = c
        .get(node.url("/v1/documents?limit=1000"))
        .send()
        .await?
        .json()
        .await?;
    Ok(list["documents"].as_array().ok_or("no list")?.len())
}

#[tokio::test]
async fn good_items_are_published_and_the_oversized_and_malformed_named() -> TestResult {
    let node = TestNode::start_with(&["--max-upload-size", "1KiB"]).await?;
    let c = client();
    let first = pattern(1, 1000);
    let over = pattern(2, 5000);
    let parts = [
        Part::Meta(r#"{"title":"First","tags":["x","y"],"description":"d"}"#),
        Part::File("first.txt", &first),
        Part::File("empty.bin", b""),
        Part::File("over.bin", &over),
        Part::Meta(r#"{"title": "unterminated"#),
        Part::File("bad.txt", b"never published"),
        Part::Meta(r#"{"title":"tab\there"}"#),
        Part::File("control.txt", b"never published either"),
        Part::File("one.txt", b"1"),
    ];
    let resp = send(&c, &node, "?tags=launch", &parts).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await?;
    assert_eq!(body["published"], 3, "{body}");
    assert_eq!(body["refused"], 3, "{body}");
    let items = body["items"].as_array().unwrap();
    let names: Vec<&str> = items
        .iter()
        .map(|i| i["filename"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "first.txt",
            "empty.bin",
            "over.bin",
            "bad.txt",
            "control.txt",
            "one.txt"
        ]
    );
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["index"], i, "{item}");
    }
    assert_eq!(items[2]["error"]["code"], "too_large", "{body}");
    assert!(items[2]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1024"));
    assert_eq!(items[3]["error"]["code"], "bad_request", "{body}");
    assert!(items[3]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("meta"));
    assert_eq!(items[4]["error"]["code"], "invalid_field", "{body}");
    assert!(items[4]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("title"));

    // The published ones, byte-exact, with their metadata.
    for (item, bytes) in [(&items[0], &first[..]), (&items[1], b""), (&items[5], b"1")] {
        let id = item["id"].as_str().unwrap();
        assert_eq!(item["version"], 1);
        assert_eq!(item["size"], bytes.len());
        assert_eq!(item["md5"], md5_hex(bytes));
        assert_eq!(content(&c, &node, id).await?, bytes);
    }
    let m = metadata(&c, &node, items[0]["id"].as_str().unwrap()).await?;
    assert_eq!(m["title"], "First");
    assert_eq!(m["filename"], "first.txt");
    assert_eq!(m["tags"], serde_json::json!(["x", "y"]));
    assert_eq!(m["content_type"], "text/plain");
    let m = metadata(&c, &node, items[1]["id"].as_str().unwrap()).await?;
    assert_eq!(
        m["title"], "empty.bin",
        "the title defaults to the file name"
    );
    assert_eq!(m["tags"], serde_json::json!(["launch"]));
    assert_eq!(document_count(&c, &node).await?, 3);
    wait_until(
        std::time::Duration::from_secs(10),
        "temporary files to go",
        || files_under(&node.dir.join("tmp")).is_empty(),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_batch_without_the_token_or_not_multipart_publishes_nothing() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let resp = c
        .post(node.url("/v1/documents/batch"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(form(&[Part::File("a.txt", b"a")]))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = auth(c.post(node.url("/v1/documents/batch")))
        .body("just bytes")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await?;
    assert!(
        body["error"].as_str().unwrap().contains("multipart"),
        "{body}"
    );
    // A bad default fails the request, not each item.
    let resp = send(&c, &node, "?scope=nowhere:x", &[Part::File("a.txt", b"a")]).await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await?;
    assert_eq!(body["code"], "invalid_field", "{body}");
    let resp = send(&c, &node, "", &[]).await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(document_count(&c, &node).await?, 0);
    assert!(files_under(&node.dir.join("objects")).is_empty());
    Ok(())
}

#[tokio::test]
async fn many_items_are_published_in_order_in_large_groups() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let docs: Vec<(String, Vec<u8>)> = (0..600)
        .map(|i| (format!("doc-{i:04}.txt"), pattern(i as u64, 100 + i)))
        .collect();
    // Every item with its `meta` part, as `docfed publish` sends them.
    let metas: Vec<String> = docs
        .iter()
        .map(|(n, _)| format!(r#"{{"title":"Title of {n}"}}"#))
        .collect();
    let parts: Vec<Part> = docs
        .iter()
        .zip(&metas)
        .flat_map(|((n, b), m)| [Part::Meta(m), Part::File(n.as_str(), b.as_slice())])
        .collect();
    let resp = send(&c, &node, "", &parts).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await?;
    assert_eq!(body["published"], 600);
    let items = body["items"].as_array().unwrap();
    for (i, (item, (name, bytes))) in items.iter().zip(&docs).enumerate() {
        assert_eq!(item["index"], i);
        assert_eq!(item["filename"], name.as_str());
        assert_eq!(item["md5"], md5_hex(bytes));
    }
    let last = items[599]["id"].as_str().unwrap();
    assert_eq!(content(&c, &node, last).await?, docs[599].1);
    let m = metadata(&c, &node, last).await?;
    assert_eq!(m["title"], "Title of doc-0599.txt");
    // A chunk's publications (256 items) wait for the recorder together: groups, not one
    // commit each (the recorder may start on the first ones while the others join).
    let log = node.log();
    let largest = log
        .lines()
        .filter(|l| l.contains("recorded local edit"))
        .filter_map(|l| l.split("edits=").nth(1))
        .filter_map(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .filter_map(|n| n.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    assert!(largest > 128, "largest group of edits: {largest}");
    Ok(())
}

#[tokio::test]
async fn curl_publishes_files_with_dash_f() -> TestResult {
    let node = TestNode::start().await?;
    let dir = tempfile::tempdir()?;
    let a = dir.path().join("notes.txt");
    let b = dir.path().join("report.pdf");
    std::fs::write(&a, b"some notes\n")?;
    std::fs::write(&b, pattern(9, 3000))?;
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .arg("-F")
        .arg(format!("file=@{}", a.display()))
        .args([
            "-F",
            r#"meta={"title":"Annual report","tags":"finance"};type=application/json"#,
        ])
        .arg("-F")
        .arg(format!("file=@{}", b.display()))
        .arg(node.url("/v1/documents/batch?scope=global"))
        .output()
        .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(body["published"], 2, "{body}");
    let c = client();
    let id = body["items"][1]["id"].as_str().unwrap();
    assert_eq!(content(&c, &node, id).await?, pattern(9, 3000));
    let m = metadata(&c, &node, id).await?;
    assert_eq!(m["title"], "Annual report");
    assert_eq!(m["filename"], "report.pdf");
    assert_eq!(m["content_type"], "application/pdf");
    let m = metadata(&c, &node, body["items"][0]["id"].as_str().unwrap()).await?;
    assert_eq!(m["title"], "notes.txt");
    Ok(())
}

#[tokio::test]
async fn a_batch_is_for_primaries_and_its_documents_reach_the_regional_nodes() -> TestResult {
    let fed = crate::common::federation::Federation::start(&[]).await?;
    let c = client();
    let small = pattern(31, 10_000);
    let large = pattern(32, 300_000);
    // A regional node refuses the request as a whole, as it refuses a single publication.
    let resp = send(&c, fed.node("eu"), "", &[Part::File("a.bin", &small)]).await?;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await?;
    assert_eq!(body["code"], "wrong_tier", "{body}");

    let parts = [Part::File("a.bin", &small), Part::File("b.bin", &large)];
    let resp = send(&c, fed.node("primary-a"), "?scope=region:eu", &parts).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await?;
    assert_eq!(body["published"], 2, "{body}");
    let timeout = std::time::Duration::from_secs(60);
    for (item, bytes) in body["items"]
        .as_array()
        .unwrap()
        .iter()
        .zip([&small, &large])
    {
        let id = item["id"].as_str().unwrap();
        let meta = fed
            .await_meta("eu", id, timeout, |m| m["available_here"] == true)
            .await?;
        assert_eq!(meta["scope"], "region:eu");
        assert_eq!(&content(&c, fed.node("eu"), id).await?, bytes);
    }
    Ok(())
}

#[tokio::test]
async fn a_body_that_ends_mid_item_publishes_the_whole_items_and_names_the_cut_one() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let whole = form(&[
        Part::File("a.txt", b"first"),
        Part::File("b.txt", b"second"),
        Part::File("c.txt", &pattern(4, 100_000)),
    ]);
    // The body ends properly, in the middle of the third file's bytes.
    let cut = whole[..whole.len() - 50_000].to_vec();
    let resp = auth(c.post(node.url("/v1/documents/batch")))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(cut)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await?;
    assert_eq!(body["published"], 2, "{body}");
    assert_eq!(body["items"][2]["filename"], "c.txt", "{body}");
    assert_eq!(
        body["items"][2]["error"]["code"], "upload_aborted",
        "{body}"
    );
    assert_eq!(document_count(&c, &node).await?, 2);
    Ok(())
}

#[tokio::test]
async fn a_client_that_goes_away_leaves_its_whole_items_published_and_nothing_else() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    // 256 items make a chunk, published while the next is read; the client sends up to the
    // middle of item 258, waits, and goes away.
    let docs: Vec<(String, Vec<u8>)> = (0..260)
        .map(|i| (format!("d{i}.bin"), pattern(i as u64, 2000)))
        .collect();
    let parts: Vec<Part> = docs
        .iter()
        .map(|(n, b)| Part::File(n.as_str(), b.as_slice()))
        .collect();
    let whole = form(&parts);
    let per_item = whole.len() / 260;
    let sent = whole[..258 * per_item + per_item / 2].to_vec();
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(sent) })
        .chain(futures::stream::pending());
    let request = auth(c.post(node.url("/v1/documents/batch")))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let client = tokio::spawn(request);
    eventually(
        std::time::Duration::from_secs(10),
        "the first chunk",
        || async { Ok((document_count(&c, &node).await? >= 256).then_some(())) },
    )
    .await?;
    client.abort();
    // The two whole items after the chunk are published too; the cut one leaves no trace.
    let tmp = node.dir.join("tmp");
    let settled = eventually(std::time::Duration::from_secs(10), "the rest", || async {
        let count = document_count(&c, &node).await?;
        Ok((count >= 258 && files_under(&tmp).is_empty()).then_some(count))
    })
    .await?;
    assert_eq!(settled, 258);
    Ok(())
}
