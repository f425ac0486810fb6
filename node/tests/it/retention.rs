//! Retention: a regional node's objects are exactly what its scope, flags and policy require;
//! a collection running during a pull and a stream-through read loses nothing; crash debris is
//! collected after a restart; a client asking from before the feed's horizon ends with the
//! node's directory, deleted documents staying deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::federation::Federation;
use crate::common::*;

const T: Duration = Duration::from_secs(60);

async fn publish_at(url: &str, query: &str, body: Vec<u8>) -> TestResult<(String, String)> {
    let resp = auth(client().post(format!("{url}/v1/documents?{query}")))
        .body(body)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED, "{}", resp.text().await?);
    let v: Value = resp.json().await?;
    Ok((
        v["id"].as_str().ok_or("no id")?.to_owned(),
        v["md5"].as_str().ok_or("no md5")?.to_owned(),
    ))
}

async fn new_version(url: &str, id: &str, body: Vec<u8>) -> TestResult<String> {
    let resp = auth(client().put(format!("{url}/v1/documents/{id}")))
        .body(body)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await?);
    let v: Value = resp.json().await?;
    Ok(v["md5"].as_str().ok_or("no md5")?.to_owned())
}

async fn delete(url: &str, id: &str) -> TestResult {
    let resp = auth(client().delete(format!("{url}/v1/documents/{id}")))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK, "{}", resp.text().await?);
    Ok(())
}

/// The content addresses `node` stores: files in `objects/` and small objects in its database.
fn stored(node: &TestNode) -> BTreeSet<String> {
    files_under(&node.dir.join("objects"))
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .chain(small_objects(&node.dir))
        .collect()
}

async fn gc(node: &TestNode, dry_run: bool) -> TestResult<Value> {
    let c = client();
    let req = if dry_run {
        c.get(node.url("/v1/admin/gc"))
    } else {
        c.post(node.url("/v1/admin/gc"))
    };
    let resp = auth(req).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await?;
    Ok(if dry_run { v["preview"].clone() } else { v })
}

async fn await_stored(node: &TestNode, md5s: &[&str]) -> TestResult {
    let want: Vec<String> = md5s.iter().map(|s| s.to_string()).collect();
    wait_until(T, "the node to hold every version", || {
        let have = stored(node);
        want.iter().all(|m| have.contains(m))
    })
    .await
}

#[tokio::test]
async fn a_regional_nodes_objects_are_exactly_what_scope_flags_and_policy_require() -> TestResult {
    // Collections only when asked; one superseded version kept for an hour; deleted documents'
    // content not kept at all.
    let policy = [
        "--gc-interval",
        "off",
        "--keep-versions",
        "1",
        "--version-grace",
        "1h",
        "--tombstone-grace",
        "0s",
    ];
    let mut fed = Federation::start(&policy).await?;
    let primary = fed.node("primary-a").url.clone();
    // na holds global and region:na content; region:eu content only when a device flags it.
    let (report, r1) =
        publish_at(&primary, "title=Report&scope=global", pattern(1, 50_000)).await?;
    let r2 = new_version(&primary, &report, pattern(2, 50_000)).await?;
    let r3 = new_version(&primary, &report, pattern(3, 50_000)).await?;
    // The bytes of the report's first version are another document's current version.
    let (_twin, _) = publish_at(&primary, "title=Twin&scope=region:na", pattern(1, 50_000)).await?;
    let (gone, gone_md5) =
        publish_at(&primary, "title=Gone&scope=region:na", pattern(4, 40_000)).await?;
    let (old, o1) = publish_at(&primary, "title=Old&scope=global", pattern(5, 30_000)).await?;
    let o2 = new_version(&primary, &old, pattern(6, 30_000)).await?;
    let (flagged, flagged_md5) = publish_at(
        &primary,
        "title=Flagged&scope=region:eu",
        pattern(7, 20_000),
    )
    .await?;
    let (_elsewhere, elsewhere_md5) = publish_at(
        &primary,
        "title=Elsewhere&scope=region:eu",
        pattern(8, 20_000),
    )
    .await?;
    let na = fed.node("na");
    await_stored(na, &[&r1, &r2, &r3, &gone_md5, &o1, &o2]).await?;
    delete(&primary, &gone).await?;
    fed.await_meta("na", &gone, T, |m| m["deleted"] == true)
        .await?;
    let resp = auth(client().post(na.url("/v1/devices")))
        .json(&serde_json::json!({"name": "test"}))
        .send()
        .await?;
    let dev: Value = resp.json().await?;
    let resp = client()
        .put(na.url(&format!(
            "/v1/devices/{}/flags/{flagged}",
            dev["device"].as_str().ok_or("no device")?
        )))
        .bearer_auth(dev["secret"].as_str().ok_or("no secret")?)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    fed.await_meta("na", &flagged, T, |m| m["available_here"] == true)
        .await?;

    // What the policy requires: current versions in scope or flagged, one superseded version
    // of each document (within the hour); not the report's v1 (beyond the one kept: but its
    // bytes are the twin's current version), not the deleted document's content, not the
    // eu document nobody flagged.
    let required: BTreeSet<String> = [&r1, &r2, &r3, &o1, &o2, &flagged_md5]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(!stored(na).contains(&elsewhere_md5));
    let preview = gc(na, true).await?;
    assert_eq!(preview["collectable"]["count"], 1, "{preview}");
    assert_eq!(preview["collectable_by_reason"]["tombstoned"]["count"], 1);
    assert_eq!(preview["dry_run"], true);
    assert_eq!(
        stored(na).len(),
        required.len() + 1,
        "a dry run removed something"
    );
    assert!(
        preview["tables"]["versions"].as_i64() >= Some(8),
        "{preview}"
    );

    let report_json = gc(na, false).await?;
    assert_eq!(report_json["collected"]["count"], 1, "{report_json}");
    assert_eq!(report_json["collected"]["bytes"], 40_000);
    assert_eq!(stored(na), required);
    // The collected content is still readable through this node (from one that keeps it).
    let resp = auth(client().get(na.url(&format!("/v1/documents/{gone}/content?version=1"))))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await?.as_ref(), &pattern(4, 40_000)[..]);
    assert_eq!(
        stored(na),
        required,
        "a read brought collected content back"
    );
    assert!(
        fed.metric("na", "docfed_gc_objects_collected_total")
            .await?
            >= 1
    );

    // The primaries keep the whole record by default: every version, the deleted document's
    // content too. (Restarted without the policy the test gave every node.)
    let primary_a = fed.node_mut("primary-a");
    primary_a.extra_args.truncate(4);
    assert_eq!(primary_a.extra_args[2], "--id");
    primary_a.restart().await?;
    let primary_a = fed.node("primary-a");
    let r = gc(primary_a, false).await?;
    assert_eq!(r["collected"]["count"], 0, "{r}");
    for md5 in [
        &r1,
        &r2,
        &r3,
        &o1,
        &o2,
        &gone_md5,
        &flagged_md5,
        &elsewhere_md5,
    ] {
        assert!(
            stored(primary_a).contains(md5.as_str()),
            "primary lost {md5}"
        );
    }

    // A stricter policy after a restart: no superseded version kept.
    let na = fed.node_mut("na");
    let at = na
        .extra_args
        .iter()
        .position(|a| a == "--keep-versions")
        .ok_or("no --keep-versions")?;
    na.extra_args[at + 1] = "0".into();
    na.restart().await?;
    let after = gc(na, false).await?;
    assert_eq!(after["collected"]["count"], 2, "{after}");
    let required: BTreeSet<String> = [&r1, &r3, &o2, &flagged_md5]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(stored(na), required);
    let meta = fed
        .await_meta("na", &report, T, |m| m["available_here"] == true)
        .await?;
    assert_eq!(meta["md5"], r3.as_str());
    Ok(())
}

#[tokio::test]
async fn a_collection_during_a_large_pull_and_a_stream_through_read_loses_nothing() -> TestResult {
    // Slow pulls, and a policy that keeps nothing old: every collection has work to do.
    let fed = Federation::start(&[
        "--pull-rate-limit",
        "4MB",
        "--gc-interval",
        "off",
        "--keep-versions",
        "0",
        "--tombstone-grace",
        "0s",
    ])
    .await?;
    let primary = fed.node("primary-a").url.clone();
    let na = fed.node("na");
    // Old versions waiting to be collected before the large pull starts.
    let (small, s1) = publish_at(&primary, "title=Small&scope=global", pattern(12, 1000)).await?;
    let s2 = new_version(&primary, &small, pattern(13, 1000)).await?;
    await_stored(na, &[&s1, &s2]).await?;
    // Content out of na's scope: a reader there gets it by an on-demand transfer.
    let far = pattern(10, 6_000_000);
    let (far_doc, _) = publish_at(&primary, "title=Far&scope=region:eu", far.clone()).await?;
    let big = pattern(11, 12_000_000);
    let (doc, md5) = publish_at(&primary, "title=Big&scope=global", big.clone()).await?;
    // The readers follow na's pull as it arrives (stream-through) and the on-demand transfer
    // while collections run.
    // A reader resumes from where it was (Range) if its response breaks off, as curl -C or
    // the docfed CLI would: what is asserted is the bytes it ends with.
    let read = |url: String| {
        tokio::spawn(async move {
            use futures::StreamExt;
            let deadline = Instant::now() + T;
            let mut got: Vec<u8> = Vec::new();
            loop {
                if Instant::now() > deadline {
                    return Err(format!("{url}: {} bytes after {T:?}", got.len()));
                }
                let mut req = client().get(&url);
                if !got.is_empty() {
                    req = req.header("range", format!("bytes={}-", got.len()));
                }
                let resp = match req.send().await {
                    Ok(r) if r.status().is_success() => r,
                    _ => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let mut body = resp.bytes_stream();
                let mut broken = false;
                while let Some(chunk) = body.next().await {
                    match chunk {
                        Ok(c) => got.extend_from_slice(&c),
                        Err(_) => {
                            broken = true;
                            break;
                        }
                    }
                }
                if !broken {
                    return Ok(got);
                }
            }
        })
    };
    let reader = read(na.url(&format!("/v1/documents/{doc}/content")));
    let far_reader = read(na.url(&format!("/v1/documents/{far_doc}/content")));
    let mut collections = 0;
    let mut collected = 0;
    let mut edits = 0u64;
    while !reader.is_finished() || !far_reader.is_finished() {
        // Something to collect each round: a superseded version of the small document.
        if edits < 20 {
            edits += 1;
            new_version(&primary, &small, pattern(100 + edits, 1000)).await?;
        }
        let r = gc(na, false).await?;
        collections += 1;
        collected += r["collected"]["count"].as_u64().unwrap_or(0);
    }
    let got = far_reader.await??;
    assert!(got == far, "the on-demand reader got other bytes");
    let got = reader.await??;
    assert_eq!(got.len(), big.len());
    assert!(got == big, "the reader got other bytes");
    assert!(
        collections >= 3,
        "only {collections} collections ran during the pull"
    );
    assert!(collected >= 1, "the collections had nothing to collect");
    fed.await_meta("na", &doc, T, |m| m["available_here"] == true)
        .await?;
    let path = na.dir.join("objects").join(&md5[..2]).join(&md5);
    assert_eq!(md5_hex(&std::fs::read(&path)?), md5);
    gc(na, false).await?;
    assert!(path.exists(), "a collection took the current version");
    Ok(())
}

#[tokio::test]
async fn files_a_crash_left_between_rename_and_commit_are_collected_after_restart() -> TestResult {
    let mut node = TestNode::start_with(&["--gc-interval", "off"]).await?;
    let (_id, md5) = publish_at(&node.url, "title=Kept", pattern(1, 10_000)).await?;
    node.kill();
    // What a kill between `Store::place`'s rename and the commit leaves: a file at its
    // content address with no row; and a partial file of a pull no row asks for any more.
    let orphan = pattern(2, 5000);
    let orphan_md5 = md5_hex(&orphan);
    let orphan_path = node
        .dir
        .join("objects")
        .join(&orphan_md5[..2])
        .join(&orphan_md5);
    std::fs::create_dir_all(orphan_path.parent().unwrap())?;
    std::fs::write(&orphan_path, &orphan)?;
    let partial = node.dir.join("partial").join(md5_hex(b"gone"));
    std::fs::create_dir_all(partial.parent().unwrap())?;
    std::fs::write(&partial, b"half")?;
    // A file that is not named by a content address is not the node's to remove.
    let stranger = node.dir.join("objects").join("README");
    std::fs::write(&stranger, b"operator's note")?;

    node.start_again().await?;
    wait_until(T, "the orphan and the partial file to go", || {
        !orphan_path.exists() && !partial.exists()
    })
    .await?;
    assert!(stranger.exists());
    assert_eq!(
        stored(&node),
        BTreeSet::from([md5.clone(), "README".into()])
    );
    let resp = client()
        .get(node.url(&format!("/v1/objects/{md5}")))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = auth(client().get(node.url("/metrics")))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        text.contains("docfed_gc_files_removed_total{node=\"standalone\"} 2"),
        "{text}"
    );
    Ok(())
}

/// Replays the feed from `since` into (document → (version, deleted)).
async fn replay(node: &TestNode, since: i64) -> TestResult<(BTreeMap<String, (i64, bool)>, Value)> {
    let mut out = BTreeMap::new();
    let mut since = since;
    let mut first = Value::Null;
    loop {
        let feed: Value = client()
            .get(node.url(&format!("/v1/changes?since={since}&limit=2")))
            .send()
            .await?
            .json()
            .await?;
        if first.is_null() {
            first = feed.clone();
        }
        let changes = feed["changes"].as_array().ok_or("no changes")?;
        if changes.is_empty() {
            return Ok((out, first));
        }
        for c in changes {
            let d = &c["document"];
            out.insert(
                d["id"].as_str().unwrap_or_default().to_owned(),
                (
                    d["version"].as_i64().unwrap_or_default(),
                    d["deleted"].as_bool().unwrap_or_default(),
                ),
            );
        }
        since = feed["last_seq"].as_i64().ok_or("no last_seq")?;
    }
}

#[tokio::test]
async fn a_client_from_before_the_horizon_gets_a_snapshot_and_ends_with_the_directory() -> TestResult
{
    let node = TestNode::start_with(&["--gc-interval", "off", "--feed-horizon", "0s"]).await?;
    let (a, _) = publish_at(&node.url, "title=A", pattern(1, 100)).await?;
    let (b, _) = publish_at(&node.url, "title=B", pattern(2, 100)).await?;
    // A client synced up to here: it knows A and B, both alive.
    let position: i64 = client()
        .get(node.url("/v1/changes?since=0&limit=1000"))
        .send()
        .await?
        .json::<Value>()
        .await?["last_seq"]
        .as_i64()
        .ok_or("no last_seq")?;
    let (c, _) = publish_at(&node.url, "title=C", pattern(3, 100)).await?;
    new_version(&node.url, &a, pattern(4, 100)).await?;
    new_version(&node.url, &a, pattern(5, 100)).await?;
    delete(&node.url, &b).await?;
    delete(&node.url, &c).await?;
    let resp = auth(client().post(node.url(&format!("/v1/documents/{c}/reactivate"))))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let (before, _) = replay(&node, 0).await?;

    let r = gc(&node, false).await?;
    // 8 changes of 3 documents: 5 folded.
    assert_eq!(r["rows_pruned"]["changes"], 5, "{r}");
    let (from_zero, first) = replay(&node, 0).await?;
    assert!(first["horizon"].as_i64() > Some(position), "{first}");
    let (from_position, _) = replay(&node, position).await?;
    let all: Value = client()
        .get(node.url("/v1/changes?since=0&limit=1000"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(all["changes"].as_array().map(Vec::len), Some(3), "{all}");
    let expected = BTreeMap::from([
        (a.clone(), (3, false)),
        (b.clone(), (2, true)),
        (c.clone(), (3, false)),
    ]);
    assert_eq!(before, expected);
    assert_eq!(from_zero, expected);
    // The client that knew B alive learns it is deleted; nothing resurrects.
    assert_eq!(from_position.get(&b), Some(&(2, true)));
    assert_eq!(from_position.get(&a), Some(&(3, false)));
    for (id, (version, deleted)) in &expected {
        let meta: Value = client()
            .get(node.url(&format!("/v1/documents/{id}")))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(
            (meta["version"].as_i64(), meta["deleted"].as_bool()),
            (Some(*version), Some(*deleted))
        );
    }
    // Versions are the record: all of them stay.
    let versions: Value = client()
        .get(node.url(&format!("/v1/documents/{a}/versions")))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(versions["versions"].as_array().map(Vec::len), Some(3));
    Ok(())
}
