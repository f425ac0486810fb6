//! Publish → metadata → full and ranged reads → new version → tombstone → reactivate →
//! versions → change feed, and a restart that keeps all of it.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

/// Sizes around the 64 KiB read chunk and the 256 KiB write buffer, plus empty and one byte:
/// off-by-one errors in streaming code live at these edges.
const INTERESTING_SIZES: &[usize] = &[0, 1, 65_535, 65_536, 65_537, 262_144, 262_145, 1_000_003];

async fn publish(
    c: &reqwest::Client,
    node: &TestNode,
    query: &str,
    body: Vec<u8>,
) -> TestResult<Value> {
    let resp = auth(c.post(node.url(&format!("/v1/documents?{query}"))))
        .body(body)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED, "{}", resp.text().await?);
    Ok(resp.json().await?)
}

async fn get_json(c: &reqwest::Client, url: String) -> TestResult<Value> {
    let resp = c.get(&url).send().await?;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "GET {url}: {}",
        resp.text().await?
    );
    Ok(resp.json().await?)
}

async fn range(
    c: &reqwest::Client,
    url: &str,
    spec: &str,
) -> TestResult<(StatusCode, Option<String>, Vec<u8>)> {
    let resp = c.get(url).header("Range", spec).send().await?;
    let status = resp.status();
    let cr = resp
        .headers()
        .get("content-range")
        .map(|v| v.to_str().unwrap().to_owned());
    Ok((status, cr, resp.bytes().await?.to_vec()))
}

#[tokio::test]
async fn full_and_ranged_reads_are_byte_exact_at_every_interesting_size() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    for (i, &size) in INTERESTING_SIZES.iter().enumerate() {
        let data = pattern(i as u64, size);
        let p = publish(
            &c,
            &node,
            &format!("title=size%20{size}&filename=f.bin"),
            data.clone(),
        )
        .await?;
        assert_eq!(p["md5"], md5_hex(&data));
        assert_eq!(p["size"], size as u64);
        let url = node.url(&format!(
            "/v1/documents/{}/content",
            p["id"].as_str().unwrap()
        ));
        let resp = c.get(&url).send().await?;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()["etag"],
            format!("\"{}\"", md5_hex(&data)).as_str()
        );
        assert_eq!(
            resp.bytes().await?.as_ref(),
            &data[..],
            "full read of {size} bytes"
        );
        if size == 0 {
            let (status, cr, _) = range(&c, &url, "bytes=0-0").await?;
            assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
            assert_eq!(cr.as_deref(), Some("bytes */0"));
            continue;
        }
        let mid = size / 2;
        for (spec, lo, hi) in [
            ("bytes=0-0".to_owned(), 0, 0),
            (format!("bytes={mid}-"), mid, size - 1),
            (
                format!("bytes=-{}", size.min(100)),
                size - size.min(100),
                size - 1,
            ),
            (format!("bytes={}-{}", mid, size + 1000), mid, size - 1),
        ] {
            let (status, cr, body) = range(&c, &url, &spec).await?;
            assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{spec} on {size}");
            assert_eq!(cr, Some(format!("bytes {lo}-{hi}/{size}")), "{spec}");
            assert_eq!(body, &data[lo..=hi], "{spec} on {size} bytes");
        }
        let (status, cr, _) = range(&c, &url, &format!("bytes={size}-")).await?;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(cr, Some(format!("bytes */{size}")));
    }
    Ok(())
}

#[tokio::test]
async fn document_lifecycle_survives_restart() -> TestResult {
    let mut node = TestNode::start().await?;
    let c = client();
    let v1 = pattern(1, 300_000);
    let v2 = pattern(2, 123_457);

    let p = publish(
        &c,
        &node,
        "title=Quarterly%20report&filename=report.pdf&scope=region:eu&tags=Finance,q3&description=Numbers&source=accounting",
        v1.clone(),
    )
    .await?;
    let id = p["id"].as_str().unwrap().to_owned();
    assert_eq!(p["version"], 1);

    let meta = get_json(&c, node.url(&format!("/v1/documents/{id}"))).await?;
    assert_eq!(meta["title"], "Quarterly report");
    assert_eq!(meta["scope"], "region:eu");
    assert_eq!(meta["tags"], serde_json::json!(["finance", "q3"]));
    assert_eq!(
        meta["content_type"], "application/pdf",
        "guessed from the file name"
    );
    assert_eq!(meta["md5"], md5_hex(&v1));
    assert_eq!(meta["deleted"], false);
    assert_eq!(meta["available_here"], true);

    let content = node.url(&format!("/v1/documents/{id}/content"));
    let (status, _, body) = range(&c, &content, "bytes=1000-1999").await?;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &v1[1000..2000]);

    // New version: new content, title changed, everything else inherited.
    let resp = auth(c.put(node.url(&format!("/v1/documents/{id}?title=Quarterly%20report%20v2"))))
        .body(v2.clone())
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await?);
    let meta = get_json(&c, node.url(&format!("/v1/documents/{id}"))).await?;
    assert_eq!(
        (meta["version"].as_i64(), meta["title"].as_str()),
        (Some(2), Some("Quarterly report v2"))
    );
    assert_eq!(meta["scope"], "region:eu");
    assert_eq!(meta["md5"], md5_hex(&v2));
    assert_eq!(
        c.get(&content).send().await?.bytes().await?.as_ref(),
        &v2[..]
    );

    // Tombstone: metadata kept, content gone for readers (every version), history still
    // readable by its author (the token).
    let resp = auth(c.delete(node.url(&format!("/v1/documents/{id}"))))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let meta = get_json(&c, node.url(&format!("/v1/documents/{id}"))).await?;
    assert_eq!(
        (meta["version"].as_i64(), meta["deleted"].as_bool()),
        (Some(3), Some(true))
    );
    assert_eq!(c.get(&content).send().await?.status(), StatusCode::GONE);
    let old = c.get(format!("{content}?version=1")).send().await?;
    assert_eq!(old.status(), StatusCode::GONE);
    let old = auth(c.get(format!("{content}?version=1"))).send().await?;
    assert_eq!(old.status(), StatusCode::OK);
    assert_eq!(old.bytes().await?.as_ref(), &v1[..]);
    let resp = auth(c.delete(node.url(&format!("/v1/documents/{id}"))))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CONFLICT, "deleting twice");

    // Reactivate.
    let resp = auth(c.post(node.url(&format!("/v1/documents/{id}/reactivate"))))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let meta = get_json(&c, node.url(&format!("/v1/documents/{id}"))).await?;
    assert_eq!(
        (meta["version"].as_i64(), meta["deleted"].as_bool()),
        (Some(4), Some(false))
    );
    assert_eq!(
        c.get(&content).send().await?.bytes().await?.as_ref(),
        &v2[..]
    );

    let check = |versions: Value, changes: Value| {
        let vs = versions["versions"].as_array().unwrap();
        let summary: Vec<(i64, bool, bool)> = vs
            .iter()
            .map(|v| {
                (
                    v["version"].as_i64().unwrap(),
                    v["deleted"].as_bool().unwrap(),
                    v["current"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, false, false),
                (2, false, false),
                (3, true, false),
                (4, false, true)
            ]
        );
        let ch = changes["changes"].as_array().unwrap();
        let kinds: Vec<&str> = ch.iter().map(|c| c["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["published", "updated", "deleted", "reactivated"]);
        let seqs: Vec<i64> = ch.iter().map(|c| c["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert_eq!(changes["last_seq"].as_i64(), seqs.last().copied());
        assert!(ch.iter().all(|c| c["document"]["id"] == id.as_str()));
    };
    let versions = get_json(&c, node.url(&format!("/v1/documents/{id}/versions"))).await?;
    let changes = get_json(&c, node.url("/v1/changes?since=0")).await?;
    check(versions.clone(), changes.clone());

    // Paging the feed: two at a time, then nothing past the end.
    let page = get_json(&c, node.url("/v1/changes?since=0&limit=2")).await?;
    assert_eq!(page["changes"].as_array().unwrap().len(), 2);
    let next = page["last_seq"].as_i64().unwrap();
    let page = get_json(&c, node.url(&format!("/v1/changes?since={next}&limit=2"))).await?;
    assert_eq!(page["changes"][0]["kind"], "deleted");
    let end = changes["last_seq"].as_i64().unwrap();
    let page = get_json(&c, node.url(&format!("/v1/changes?since={end}"))).await?;
    assert_eq!(page["changes"].as_array().unwrap().len(), 0);
    assert_eq!(page["last_seq"].as_i64(), Some(end));

    node.restart().await?;
    let after_versions = get_json(&c, node.url(&format!("/v1/documents/{id}/versions"))).await?;
    let after_changes = get_json(&c, node.url("/v1/changes?since=0")).await?;
    assert_eq!(after_versions, versions, "versions survive a restart");
    assert_eq!(after_changes, changes, "change feed survives a restart");
    assert_eq!(
        c.get(node.url(&format!("/v1/documents/{id}/content")))
            .send()
            .await?
            .bytes()
            .await?
            .as_ref(),
        &v2[..]
    );
    let old = c
        .get(node.url(&format!("/v1/documents/{id}/content?version=1")))
        .send()
        .await?;
    assert_eq!(old.bytes().await?.as_ref(), &v1[..]);
    Ok(())
}

#[tokio::test]
async fn conditional_requests_use_the_md5_etag() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let data = pattern(9, 10_000);
    let p = publish(&c, &node, "title=t", data.clone()).await?;
    let url = node.url(&format!(
        "/v1/documents/{}/content",
        p["id"].as_str().unwrap()
    ));
    let etag = format!("\"{}\"", md5_hex(&data));

    let resp = c.get(&url).header("If-None-Match", &etag).send().await?;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let resp = c
        .get(&url)
        .header("If-None-Match", "\"0000\"")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);

    // If-Range with a stale validator: the whole (changed) document, not a splice.
    let resp = c
        .get(&url)
        .header("Range", "bytes=5-9")
        .header("If-Range", "\"stale\"")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await?.len(), data.len());
    let resp = c
        .get(&url)
        .header("Range", "bytes=5-9")
        .header("If-Range", &etag)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.bytes().await?.as_ref(), &data[5..10]);

    let head = c.head(&url).send().await?;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "10000");
    assert_eq!(head.headers()["etag"], etag.as_str());
    assert_eq!(head.headers()["accept-ranges"], "bytes");
    Ok(())
}

/// A clean stop (SIGTERM) of federated nodes, after their broker channels carried a document:
/// every node exits 0 and its log has no error. (lapin logged `ERROR … invalid channel state:
/// Closing` when a connection was closed before its channels.)
#[tokio::test]
async fn sigterm_stops_federated_nodes_without_errors() -> TestResult {
    use crate::common::federation::{Federation, ROLES};
    let mut fed = Federation::start(&[]).await?;
    let resp = auth(
        client().post(
            fed.node("primary-a")
                .url("/v1/documents?title=Quiet&filename=q.txt"),
        ),
    )
    .body(b"a quiet stop".to_vec())
    .send()
    .await?;
    assert_eq!(resp.status(), StatusCode::CREATED, "{}", resp.text().await?);
    let id = resp.json::<Value>().await?["id"]
        .as_str()
        .ok_or("no id")?
        .to_owned();
    for role in ["na", "eu", "asia"] {
        fed.await_meta(role, &id, std::time::Duration::from_secs(60), |m| {
            m["available_here"] == true
        })
        .await?;
    }
    for role in ROLES {
        // `stop` sends SIGTERM and fails unless the node exits 0.
        fed.node_mut(role).stop().await?;
        let log = fed.node(role).log();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert!(errors.is_empty(), "{role}: errors in its log: {errors:#?}");
    }
    Ok(())
}

/// Uploads that arrive together are recorded together (`edits::recorder`): whatever the groups
/// turn out to be, each accepted upload is a document with its bytes, two uploads of the same
/// bytes share one object, and an upload refused on its own merits (no title) leaves nothing,
/// not even its bytes, while the others of its group are recorded.
#[tokio::test]
async fn concurrent_uploads_are_each_recorded_or_refused_alone() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    // (query, body, accepted)
    let mut uploads: Vec<(String, Vec<u8>, bool)> = (0..20u64)
        .map(|i| (format!("title=doc{i}"), pattern(100 + i, 10_000), true))
        .collect();
    let shared = pattern(7, 20_000);
    uploads.push(("title=same-a".into(), shared.clone(), true));
    uploads.push(("title=same-b".into(), shared.clone(), true));
    uploads.push(("filename=untitled-1.bin".into(), pattern(201, 9_000), false));
    uploads.push(("filename=untitled-2.bin".into(), pattern(202, 9_000), false));
    let answers = futures::future::join_all(uploads.iter().map(|(query, body, _)| {
        auth(c.post(node.url(&format!("/v1/documents?{query}"))))
            .body(body.clone())
            .send()
    }))
    .await;
    for ((query, body, accepted), answer) in uploads.iter().zip(answers) {
        let resp = answer?;
        if !*accepted {
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
            let gone = auth(c.get(node.url(&format!("/v1/objects/{}", md5_hex(body)))))
                .send()
                .await?;
            assert_eq!(
                gone.status(),
                StatusCode::NOT_FOUND,
                "{query}: its bytes stay"
            );
            continue;
        }
        assert_eq!(resp.status(), StatusCode::CREATED, "{query}");
        let p: Value = resp.json().await?;
        assert_eq!(p["md5"], md5_hex(body), "{query}");
        let id = p["id"].as_str().unwrap();
        let got = c
            .get(node.url(&format!("/v1/documents/{id}/content")))
            .send()
            .await?
            .bytes()
            .await?;
        assert!(got[..] == body[..], "{query}: its bytes");
    }
    // Files for the larger contents, small objects in the database for the others.
    let mut objects: Vec<String> = files_under(&node.dir.join("objects"))
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .collect();
    objects.extend(small_objects(&node.dir));
    assert_eq!(
        objects.len(),
        21,
        "one object per accepted content: {objects:?}"
    );
    assert_eq!(
        files_under(&node.dir.join("tmp")),
        Vec::<std::path::PathBuf>::new()
    );
    Ok(())
}
