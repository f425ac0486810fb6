//! Reachback sources in a real federation (ARCHITECTURE.md §2.9): a watched folder, an HTTP feed
//! and an operator's program publish into the federation, run by one primary under a broker
//! lease that the other takes over.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use docfed_shared::sources::item_id;
use reqwest::StatusCode;
use serde_json::Value;

use super::{content, T};
use crate::common::federation::Federation;
use crate::common::*;

const REGIONALS: [&str; 3] = ["na", "eu", "asia"];

fn watch_source(name: &str, dir: &Path) -> String {
    format!(
        "[[source]]\nname = {name:?}\nkind = \"watch\"\npath = {:?}\ntags = [\"dropped\"]\nsettle = \"400ms\"\n",
        dir.display().to_string()
    )
}

async fn sources(fed: &Federation, role: &str) -> TestResult<Value> {
    let resp = auth(client().get(fed.node(role).url("/v1/sources")))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(resp.json().await?)
}

/// The primary that runs `source` now, once exactly one does.
async fn active_primary(fed: &Federation, source: &str, timeout: Duration) -> TestResult<String> {
    eventually(
        timeout,
        "exactly one primary running the source",
        || async {
            let mut active = Vec::new();
            for role in ["primary-a", "primary-b"] {
                if fed.nodes.contains_key(role) {
                    let view = match sources(fed, role).await {
                        Ok(v) => v,
                        Err(_) => continue,
                    };
                    let on = view["sources"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|s| s["name"] == source && s["active"] == true);
                    if on {
                        active.push(role.to_owned());
                    }
                }
            }
            Ok((active.len() == 1).then(|| active.remove(0)))
        },
    )
    .await
}

/// Waits until every regional node serves `bytes` as the current content of `id`.
async fn await_everywhere(fed: &Federation, id: &str, bytes: &[u8]) -> TestResult {
    for role in REGIONALS {
        eventually(T, &format!("{role} serving {id}"), || async {
            // A read racing the node's own pull may be cut (the node never completes a body it
            // has not verified); only the final answer counts.
            Ok(match content(fed.node(role), id).await {
                Ok((status, body)) => (status == StatusCode::OK && body == bytes).then_some(()),
                Err(e) => {
                    eprintln!("{role}: {e}");
                    None
                }
            })
        })
        .await?;
    }
    Ok(())
}

async fn versions(node: &TestNode, id: &str) -> TestResult<Vec<Value>> {
    let v: Value = client()
        .get(node.url(&format!("/v1/documents/{id}/versions")))
        .send()
        .await?
        .json()
        .await?;
    Ok(v["versions"].as_array().cloned().unwrap_or_default())
}

fn write_file(path: &Path, bytes: &[u8]) -> TestResult {
    // Written beside and renamed in, as careful writers do; the watcher must also cope with
    // plain writes (below).
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_folder_reaches_every_regional_node() -> TestResult {
    let inbox = tempfile::tempdir()?;
    let source = format!("in{:06x}", docfed_test_kit::unique_u32() & 0xffffff);
    let fed = Federation::start_with_sources(&[], &watch_source(&source, inbox.path())).await?;
    active_primary(&fed, &source, T).await?;

    // A new file, in a subfolder: published with the folder as a tag.
    std::fs::create_dir(inbox.path().join("reports"))?;
    let first = b"quarterly report, first draft".to_vec();
    write_file(&inbox.path().join("reports/q3.txt"), &first)?;
    let id = item_id(&source, "reports/q3.txt").to_string();
    await_everywhere(&fed, &id, &first).await?;
    let meta = fed.await_meta("na", &id, T, |m| m["version"] == 1).await?;
    assert_eq!(meta["title"], "q3.txt");
    assert_eq!(meta["source"], format!("{source}:reports/q3.txt"));
    assert_eq!(meta["tags"], serde_json::json!(["dropped", "reports"]));
    assert_eq!(meta["content_type"], "text/plain");

    // Changed: exactly one new version.
    let second = b"quarterly report, final".to_vec();
    write_file(&inbox.path().join("reports/q3.txt"), &second)?;
    await_everywhere(&fed, &id, &second).await?;
    for role in REGIONALS {
        assert_eq!(versions(fed.node(role), &id).await?.len(), 2, "{role}");
    }

    // Hidden and temporary files are not items.
    std::fs::write(inbox.path().join(".hidden"), b"secret")?;
    std::fs::write(inbox.path().join("draft.txt~"), b"editor backup")?;

    // Written slowly, with pauses longer than the settle time, by one open handle: published
    // once, complete (the kernel says it is still open for writing; the close decides).
    let slow_path = inbox.path().join("slow.bin");
    let slow: Vec<u8> = (0..6u8).flat_map(|i| vec![i; 4096]).collect();
    {
        let mut f = std::fs::File::create(&slow_path)?;
        for chunk in slow.chunks(4096) {
            f.write_all(chunk)?;
            f.flush()?;
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    let slow_id = item_id(&source, "slow.bin").to_string();
    await_everywhere(&fed, &slow_id, &slow).await?;
    assert_eq!(
        versions(fed.node("na"), &slow_id).await?.len(),
        1,
        "a slowly written file is published once"
    );

    // Removed: deleted everywhere.
    std::fs::remove_file(inbox.path().join("reports/q3.txt"))?;
    for role in REGIONALS {
        fed.await_meta(role, &id, T, |m| m["deleted"] == true)
            .await?;
    }
    for name in [".hidden", "draft.txt~"] {
        let id = item_id(&source, name).to_string();
        let (status, _) = content(fed.node("primary-a"), &id).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name} was published");
    }

    let active = active_primary(&fed, &source, T).await?;
    let view = sources(&fed, &active).await?;
    let s = &view["sources"][0];
    assert_eq!(s["kind"], "watch");
    assert_eq!(s["published"], 3, "{view}");
    assert_eq!(s["removed"], 1, "{view}");
    assert!(s["last_run_at"].is_i64(), "{view}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_primary_takes_a_source_over_without_publishing_twice() -> TestResult {
    let inbox = tempfile::tempdir()?;
    let source = format!("to{:06x}", docfed_test_kit::unique_u32() & 0xffffff);
    let mut fed = Federation::start_with_sources(&[], &watch_source(&source, inbox.path())).await?;
    let first_holder = active_primary(&fed, &source, T).await?;
    let other = if first_holder == "primary-a" {
        "primary-b"
    } else {
        "primary-a"
    };

    let before: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("before-{i}.txt"), format!("item {i}").into_bytes()))
        .collect();
    for (name, bytes) in &before {
        write_file(&inbox.path().join(name), bytes)?;
    }
    for (name, bytes) in &before {
        let id = item_id(&source, name).to_string();
        await_everywhere(&fed, &id, bytes).await?;
        // The other primary has the directory too, so it finds these unchanged.
        fed.await_meta(other, &id, T, |m| m["version"] == 1).await?;
    }

    let killed = Instant::now();
    fed.node_mut(&first_holder).kill();
    fed.nodes.remove(&first_holder);
    let holder = active_primary(&fed, &source, Duration::from_secs(10)).await?;
    assert_eq!(holder, other);
    let took_over = killed.elapsed();

    // Meanwhile the folder changed: one new file, one removed.
    let after = b"arrived during the takeover".to_vec();
    write_file(&inbox.path().join("after.txt"), &after)?;
    std::fs::remove_file(inbox.path().join("before-0.txt"))?;
    let after_id = item_id(&source, "after.txt").to_string();
    await_everywhere(&fed, &after_id, &after).await?;
    let gone = item_id(&source, "before-0.txt").to_string();
    fed.await_meta("na", &gone, T, |m| m["deleted"] == true)
        .await?;

    for (name, _) in &before[1..] {
        let id = item_id(&source, name).to_string();
        let list = versions(fed.node("na"), &id).await?;
        assert_eq!(list.len(), 1, "{name} was published again: {list:?}");
    }
    let view = sources(&fed, other).await?;
    assert_eq!(
        view["sources"][0]["published"], 1,
        "only the new file: {view}"
    );
    eprintln!("takeover after kill -9: {took_over:?}");
    Ok(())
}
