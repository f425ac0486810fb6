//! Reachback sources in a real federation (ARCHITECTURE.md §2.9): a watched folder, an HTTP feed
//! and an operator's program publish into the federation, run by one primary under a broker
//! lease that the other takes over.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use docfed_shared::sources::item_id;
use docfed_test_kit::content::pattern;
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
        .await
        .inspect_err(|_| {
            for r in ["primary-a", "primary-b", role] {
                eprintln!("----- {r}:\n{}", fed.node(r).log());
            }
        })?;
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

/// A feed server whose bodies the test changes, answering conditional requests by ETag.
#[derive(Clone, Default)]
struct Feeds {
    bodies: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    not_modified: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Feeds {
    fn set(&self, path: &str, body: String) {
        self.bodies.lock().unwrap().insert(path.to_owned(), body);
    }

    async fn serve(self) -> TestResult<String> {
        use axum::extract::{Path as UrlPath, State};
        use axum::http::{header, HeaderMap, StatusCode as S};
        async fn feed(
            State(feeds): State<Feeds>,
            UrlPath(name): UrlPath<String>,
            headers: HeaderMap,
        ) -> axum::response::Response {
            use axum::response::IntoResponse;
            let Some(body) = feeds.bodies.lock().unwrap().get(&name).cloned() else {
                return S::NOT_FOUND.into_response();
            };
            let etag = format!("\"{}\"", docfed_test_kit::md5_hex(body.as_bytes()));
            if headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                == Some(&etag)
            {
                feeds
                    .not_modified
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return (S::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
            }
            ([(header::ETAG, etag)], body).into_response()
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/{name}", axum::routing::get(feed))
            .with_state(self);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(url)
    }
}

fn quakes(events: &[(&str, f64, &str)]) -> String {
    let features: Vec<Value> = events
        .iter()
        .map(|(id, mag, place)| {
            serde_json::json!({
                "type": "Feature", "id": id,
                "properties": {"mag": mag, "place": place, "time": 1763900000000u64},
                "geometry": {"type": "Point", "coordinates": [-122.1, 37.4, 5.0]}
            })
        })
        .collect();
    serde_json::json!({"type": "FeatureCollection", "features": features}).to_string()
}

const ATOM: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Bulletins</title><id>urn:bulletins</id><updated>2026-11-23T00:00:00Z</updated>
  <entry><id>urn:bulletin:1</id><title>Storm warning</title><updated>2026-11-23T08:00:00Z</updated>
    <category term="weather"/><content type="text">Winds up to 120 km/h</content></entry>
  <entry><id>urn:bulletin:2</id><title>Road closure</title><updated>2026-11-23T09:00:00Z</updated>
    <summary>Route 9 closed at km 40</summary></entry>
</feed>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_feeds_become_documents_and_unchanged_feeds_make_nothing() -> TestResult {
    let feeds = Feeds::default();
    feeds.set("bulletins.atom", ATOM.to_owned());
    feeds.set(
        "quakes.geojson",
        quakes(&[
            ("us7000a", 4.5, "10 km N of Ridge"),
            ("us7000b", 2.1, "Bay"),
        ]),
    );
    let base = feeds.clone().serve().await?;
    let tag = format!("{:06x}", docfed_test_kit::unique_u32() & 0xffffff);
    let (atom, geo) = (format!("atom{tag}"), format!("geo{tag}"));
    let toml = format!(
        "[[source]]\nname = {atom:?}\nkind = \"http\"\nurl = \"{base}/bulletins.atom\"\nformat = \"feed\"\ninterval = \"1s\"\n\n\
         [[source]]\nname = {geo:?}\nkind = \"http\"\nurl = \"{base}/quakes.geojson\"\nformat = \"json\"\n\
         items = \"/features\"\nitem_key = \"/id\"\nitem_title = \"/properties/place\"\ninterval = \"1s\"\n\
         scope = \"region:eu\"\n\
         fields = {{ magnitude = \"/properties/mag\", place = \"/properties/place\" }}\n"
    );
    let fed = Federation::start_with_sources(&[], &toml).await?;

    let storm = item_id(&atom, "urn:bulletin:1").to_string();
    let road = item_id(&atom, "urn:bulletin:2").to_string();
    await_everywhere(&fed, &storm, b"Winds up to 120 km/h").await?;
    await_everywhere(&fed, &road, b"Route 9 closed at km 40").await?;
    let m = fed
        .await_meta("na", &storm, T, |m| m["version"] == 1)
        .await?;
    assert_eq!(m["title"], "Storm warning");
    assert_eq!(m["tags"], serde_json::json!(["weather"]));

    // Regional scope: eu holds it; na has the metadata.
    let a = item_id(&geo, "us7000a").to_string();
    let meta = fed.await_meta("na", &a, T, |m| m["version"] == 1).await?;
    assert_eq!(meta["title"], "10 km N of Ridge");
    assert_eq!(meta["scope"], "region:eu");
    let d = meta["description"].as_str().unwrap_or_default();
    assert!(
        d.contains("magnitude: 4.5") && d.contains("place: 10 km N of Ridge"),
        "{d}"
    );
    eventually(T, "eu serving the event", || async {
        let (status, body) = content(fed.node("eu"), &a).await?;
        Ok((status == StatusCode::OK
            && serde_json::from_slice::<Value>(&body)
                .ok()
                .map(|v| v["id"].clone())
                == Some(Value::from("us7000a")))
        .then_some(()))
    })
    .await?;

    // Unchanged feeds are answered 304 and make no version.
    let seen = feeds
        .not_modified
        .load(std::sync::atomic::Ordering::Relaxed);
    eventually(T, "conditional polls answered 304", || async {
        Ok((feeds
            .not_modified
            .load(std::sync::atomic::Ordering::Relaxed)
            >= seen + 4)
            .then_some(()))
    })
    .await?;
    // A changed event makes exactly one version of it, none of the other; a vanished one is
    // deleted.
    feeds.set(
        "quakes.geojson",
        quakes(&[("us7000a", 4.7, "10 km N of Ridge")]),
    );
    fed.await_meta("na", &a, T, |m| m["version"] == 2).await?;
    let b = item_id(&geo, "us7000b").to_string();
    fed.await_meta("na", &b, T, |m| m["deleted"] == true)
        .await?;
    assert_eq!(versions(fed.node("na"), &storm).await?.len(), 1);
    let d = fed.await_meta("na", &a, T, |m| m["version"] == 2).await?;
    assert!(d["description"]
        .as_str()
        .unwrap_or_default()
        .contains("magnitude: 4.7"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_exec_plugin_publishes_a_folder_of_readings() -> TestResult {
    let stations = tempfile::tempdir()?;
    std::fs::write(stations.path().join("north.csv"), "t,v\n1,2\n")?;
    std::fs::write(stations.path().join("south.csv"), "t,v\n1,3\n2,4\n")?;
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/reachback-exec.py");
    let name = format!("ex{:06x}", docfed_test_kit::unique_u32() & 0xffffff);
    let toml = format!(
        "[[source]]\nname = {name:?}\nkind = \"exec\"\ncommand = [\"python3\", {:?}, {:?}]\ninterval = \"1s\"\n",
        plugin.display().to_string(),
        stations.path().display().to_string()
    );
    let fed = Federation::start_with_sources(&[], &toml).await?;
    let north = item_id(&name, "readings/north.csv").to_string();
    let summary = item_id(&name, "summary").to_string();
    await_everywhere(&fed, &north, b"t,v\n1,2\n").await?;
    await_everywhere(&fed, &summary, b"2 stations, 5 rows\n").await?;
    let m = fed
        .await_meta("na", &north, T, |m| m["version"] == 1)
        .await?;
    assert_eq!(m["title"], "Readings of north");
    assert_eq!(m["content_type"], "text/csv");

    std::fs::remove_file(stations.path().join("south.csv"))?;
    let south = item_id(&name, "readings/south.csv").to_string();
    fed.await_meta("na", &south, T, |m| m["deleted"] == true)
        .await?;
    await_everywhere(&fed, &summary, b"1 stations, 2 rows\n").await?;
    assert_eq!(
        versions(fed.node("na"), &north).await?.len(),
        1,
        "unchanged, by its stamp"
    );
    Ok(())
}

/// Serves lazy items' bytes: `/blob` in two halves with a pause between them that the test
/// ends (so a reader downstream can only see the first half early if every tier streams it
/// through), `/liar` with other bytes than its item declares. Counts the requests of each.
#[derive(Clone)]
struct LazyOrigin {
    blob: bytes::Bytes,
    liar: bytes::Bytes,
    second_half: std::sync::Arc<tokio::sync::Semaphore>,
    blob_gets: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl LazyOrigin {
    async fn serve(self) -> TestResult<String> {
        use axum::extract::State;
        async fn blob(State(o): State<LazyOrigin>) -> axum::body::Body {
            use futures::StreamExt;
            o.blob_gets
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let half = o.blob.len() / 2;
            let (first, second) = (o.blob.slice(..half), o.blob.slice(half..));
            let gate = o.second_half.clone();
            let body = futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
                futures::stream::once(async move {
                    // Held until the test saw the first half arrive at a regional node.
                    let _ = gate.acquire().await;
                    Ok(second)
                }),
            );
            axum::body::Body::from_stream(body)
        }
        async fn liar(State(o): State<LazyOrigin>) -> bytes::Bytes {
            o.liar.clone()
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/blob", axum::routing::get(blob))
            .route("/liar", axum::routing::get(liar))
            .with_state(self);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_item_streams_from_its_source_through_the_tiers_on_first_read() -> TestResult {
    use futures::StreamExt;
    use std::sync::atomic::Ordering;

    let origin = LazyOrigin {
        blob: pattern(7, 3 << 20).into(),
        liar: pattern(11, 64 * 1024).into(),
        second_half: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
        blob_gets: Default::default(),
    };
    let base = origin.clone().serve().await?;
    let files = tempfile::tempdir()?;
    let notes = b"field notes, read once to learn their digests\n".repeat(100);
    std::fs::write(files.path().join("notes.txt"), &notes)?;
    // What the liar claims: the digests of other bytes of the same length.
    let claimed = pattern(13, 64 * 1024);
    let listing = [
        serde_json::json!({"key": "blob", "url": format!("{base}/blob"), "lazy": true,
            "size": origin.blob.len(), "md5": docfed_test_kit::md5_hex(&origin.blob),
            "sha256": docfed_test_kit::sha256_hex(&origin.blob),
            "content_type": "application/octet-stream"}),
        serde_json::json!({"key": "liar", "url": format!("{base}/liar"), "lazy": true,
            "size": claimed.len(), "md5": docfed_test_kit::md5_hex(&claimed),
            "sha256": docfed_test_kit::sha256_hex(&claimed)}),
        serde_json::json!({"key": "notes", "path": files.path().join("notes.txt"), "lazy": true}),
    ]
    .iter()
    .map(|l| format!("{l}\n"))
    .collect::<String>();
    std::fs::write(files.path().join("listing.jsonl"), listing)?;
    let name = format!("lz{:06x}", docfed_test_kit::unique_u32() & 0xffffff);
    let shelf = tempfile::tempdir()?;
    let shelved = format!("{name}w");
    let toml = format!(
        "[[source]]\nname = {name:?}\nkind = \"exec\"\ncommand = [\"cat\", {:?}]\ninterval = \"1s\"\n\n{}lazy = true\n",
        files.path().join("listing.jsonl").display().to_string(),
        watch_source(&shelved, shelf.path())
    );
    let fed = Federation::start_with_sources(&[], &toml).await?;
    let (blob, liar, notes_id) = (
        item_id(&name, "blob").to_string(),
        item_id(&name, "liar").to_string(),
        item_id(&name, "notes").to_string(),
    );

    // Published by their digests: in every directory, held nowhere, nothing read yet.
    for role in REGIONALS {
        for id in [&blob, &liar, &notes_id] {
            let m = match fed
                .await_meta(role, id, T, |m| m["version"] == 1 && m["lazy"] == true)
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    for p in ["primary-a", "primary-b"] {
                        eprintln!(
                            "----- {p}: {:?}\n{}",
                            sources(&fed, p).await,
                            fed.node(p).log()
                        );
                    }
                    return Err(e);
                }
            };
            assert_eq!(m["available_here"], false, "{role} {id}: {m}");
        }
    }
    let runner = active_primary(&fed, &name, T).await?;
    assert_eq!(
        origin.blob_gets.load(Ordering::SeqCst),
        0,
        "nothing pulled ahead"
    );

    // The first read, at a regional node, follows the source through mid and primary: the
    // first half arrives while the source still holds the second back.
    let resp = client()
        .get(
            fed.node("asia")
                .url(&format!("/v1/documents/{blob}/content")),
        )
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    let early = tokio::time::timeout(T, async {
        while got.len() < origin.blob.len() / 4 {
            match stream.next().await {
                Some(chunk) => got.extend_from_slice(&chunk?),
                None => break,
            }
        }
        TestResult::Ok(())
    })
    .await;
    assert!(
        matches!(early, Ok(Ok(()))) && got.len() >= origin.blob.len() / 4,
        "the first half must reach asia before the source sends the rest: {} bytes",
        got.len()
    );
    origin.second_half.add_permits(1);
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk?);
    }
    assert!(got == origin.blob, "byte-exact through the tiers");

    // From then on an ordinary document: the primary publishes the content as version 2,
    // which every regional node holds, and the source was read exactly once.
    await_everywhere(&fed, &blob, &origin.blob).await?;
    for role in REGIONALS {
        let m = fed
            .await_meta(role, &blob, T, |m| m["version"] == 2)
            .await?;
        assert!(m.get("lazy").is_none(), "{role}: {m}");
    }
    assert_eq!(origin.blob_gets.load(Ordering::SeqCst), 1);

    // A source that answers with other bytes than its item declared: refused, kept nowhere,
    // and the source's status says so.
    let (status, body) = content(fed.node("eu"), &liar)
        .await
        .unwrap_or((StatusCode::BAD_GATEWAY, Vec::new()));
    assert!(
        !(status == StatusCode::OK && body == origin.liar),
        "wrong bytes must never be served complete"
    );
    eventually(T, "the refusal in the source's status", || async {
        let view = sources(&fed, &runner).await?;
        let s = &view["sources"][0];
        let err = s["last_error"].as_str().unwrap_or_default();
        Ok((s["failed"].as_i64() >= Some(1) && err.contains("MD5 mismatch")).then_some(()))
    })
    .await?;
    for role in ["eu", "mid-1", "mid-2", "primary-a", "primary-b"] {
        let m = fed.await_meta(role, &liar, T, |_| true).await?;
        assert_eq!(m["available_here"], false, "{role}: {m}");
        assert_eq!(m["version"], 1, "{role}: {m}");
    }

    // An item published without declared digests: hashed once at the primary, then read on
    // demand like the others.
    let (status, body) = content(fed.node("na"), &notes_id).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(body == notes, "the learnt item, byte-exact");

    // A lazy watched folder: a dropped file is published by its digests, read from the folder
    // at the first request, then an ordinary version everywhere.
    let report = pattern(17, 200_000);
    write_file(&shelf.path().join("report.bin"), &report)?;
    let report_id = item_id(&shelved, "report.bin").to_string();
    let m = fed
        .await_meta("eu", &report_id, T, |m| m["lazy"] == true)
        .await?;
    assert_eq!(m["available_here"], false, "{m}");
    let (status, body) = content(fed.node("eu"), &report_id).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(body == report, "the watched lazy file, byte-exact");
    await_everywhere(&fed, &report_id, &report).await?;
    fed.await_meta("asia", &report_id, T, |m| m["version"] == 2)
        .await?;
    Ok(())
}

/// Every version of every document `role` knows (tombstones too): the MD5s they name.
async fn every_published_md5(fed: &Federation, role: &str) -> TestResult<Vec<(String, String)>> {
    let list: Value =
        auth(client().get(fed.node(role).url("/v1/documents?deleted=any&limit=1000")))
            .send()
            .await?
            .json()
            .await?;
    let docs = list["documents"].as_array().cloned().unwrap_or_default();
    assert!(list.get("next_cursor").is_none(), "one page holds them all");
    let mut out = Vec::new();
    for d in docs {
        let id = d["id"].as_str().unwrap_or_default().to_owned();
        let source = d["source"].as_str().unwrap_or_default().to_owned();
        out.push((
            source.clone(),
            d["md5"].as_str().unwrap_or_default().to_owned(),
        ));
        for v in versions(fed.node(role), &id).await? {
            out.push((
                source.clone(),
                v["md5"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    Ok(out)
}

/// Issue 39: whoever may write into a watched folder tries to make the primary publish a file
/// outside it (its signing key) through a symbolic link: a link dropped in, a path swapped
/// between a regular file and a link while the source looks at it, a linked folder and a
/// folder holding a link moved in. Nothing of the secret is ever published; ordinary files are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_folder_never_publishes_through_a_symbolic_link() -> TestResult {
    use std::os::unix::fs::symlink;

    let base = tempfile::tempdir()?;
    let inbox = base.path().join("inbox");
    let outside = base.path().join("etc-docfed");
    let staging = base.path().join("staging");
    for d in [&inbox, &outside, &staging] {
        std::fs::create_dir(d)?;
    }
    let secret_bytes = format!(
        "-----BEGIN PRIVATE KEY-----\nnode signing key {:08x}\n-----END PRIVATE KEY-----\n",
        docfed_test_kit::unique_u32()
    )
    .into_bytes();
    let secret_md5 = docfed_test_kit::md5_hex(&secret_bytes);
    let secret = outside.join("node.key");
    std::fs::write(&secret, &secret_bytes)?;

    // A linked folder already there when the source starts watching (moved in before a
    // restart or a takeover): the watcher's first walk must not enter it either.
    symlink(&outside, inbox.join("early"))?;
    let source = format!("ln{:06x}", docfed_test_kit::unique_u32() & 0xffffff);
    let toml = format!("{}rescan = \"300ms\"\n", watch_source(&source, &inbox));
    let fed = Federation::start_with_sources(&[], &toml).await?;
    let runner = active_primary(&fed, &source, T).await?;
    let marker = |n: usize| -> TestResult<(String, Vec<u8>)> {
        let bytes = format!("ordinary file {n}").into_bytes();
        write_file(&inbox.join(format!("marker-{n}.txt")), &bytes)?;
        Ok((
            item_id(&source, &format!("marker-{n}.txt")).to_string(),
            bytes,
        ))
    };
    let not_published = |key: &'static str| {
        let (fed, id) = (&fed, item_id(&source, key).to_string());
        async move {
            for role in ["primary-a", "primary-b", "na"] {
                let (status, body) = content(fed.node(role), &id).await?;
                assert_eq!(
                    status,
                    StatusCode::NOT_FOUND,
                    "{role} serves {key}: {body:?}"
                );
            }
            TestResult::Ok(())
        }
    };

    // (a) A link to the key, dropped in: not published, and the runner says why.
    symlink(&secret, inbox.join("key.txt"))?;
    let (id, bytes) = marker(1)?;
    await_everywhere(&fed, &id, &bytes).await?;
    eventually(T, "the link refused in the runner's log", || async {
        let log = fed.node(&runner).log();
        Ok(log
            .lines()
            .any(|l| l.contains("not followed") && l.contains("key.txt"))
            .then_some(()))
    })
    .await?;
    not_published("key.txt").await?;

    // (b) One path swapped between a regular file and a link to the key, as fast as the
    // folder's events and rescans look at it, for a few seconds. The regular files are two
    // fixed ones (hard links of them put in place), so that the path looks unchanged whenever
    // the same one is back: a source that checks the path, not what it opened, is fooled.
    let race = inbox.join("race.txt");
    let fixed = [staging.join("race-a"), staging.join("race-b")];
    std::fs::write(&fixed[0], b"harmless contents, first")?;
    std::fs::write(&fixed[1], b"harmless contents, second")?;
    let swapper = {
        let (race, secret, inbox) = (race.clone(), secret.clone(), inbox.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<u32> {
            let until = Instant::now() + Duration::from_secs(4);
            let tmp = inbox.join(".race.next");
            let mut rounds = 0;
            while Instant::now() < until {
                rounds += 1;
                for file in &fixed {
                    std::fs::hard_link(file, &tmp)?;
                    std::fs::rename(&tmp, &race)?;
                    std::thread::sleep(Duration::from_millis(2));
                    symlink(&secret, &tmp)?;
                    std::fs::rename(&tmp, &race)?;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok(rounds)
        })
    };
    let rounds = swapper.await??;
    assert!(rounds > 100, "only {rounds} swaps");
    let last = b"the race is over".to_vec();
    write_file(&race, &last)?;
    let race_id = item_id(&source, "race.txt").to_string();
    await_everywhere(&fed, &race_id, &last).await?;

    // (c) A linked folder, and a folder holding a link (and an ordinary file), moved in; then
    // a file written where the linked folders point.
    symlink(&outside, staging.join("linked"))?;
    std::fs::rename(staging.join("linked"), inbox.join("linked"))?;
    std::fs::create_dir(staging.join("holder"))?;
    symlink(&secret, staging.join("holder/inner.txt"))?;
    let ok = b"an ordinary file moved in with its folder".to_vec();
    std::fs::write(staging.join("holder/ok.txt"), &ok)?;
    std::fs::rename(staging.join("holder"), inbox.join("holder"))?;
    let ok_id = item_id(&source, "holder/ok.txt").to_string();
    await_everywhere(&fed, &ok_id, &ok).await?;
    std::fs::write(outside.join("late.key"), &secret_bytes)?;
    let (id, bytes) = marker(2)?;
    await_everywhere(&fed, &id, &bytes).await?;
    // The rescan that follows the marker has listed the folder with both moved in.
    let seen_before = sources(&fed, &runner).await?["sources"][0]["last_run_at"].clone();
    eventually(T, "another complete rescan", || async {
        let view = sources(&fed, &runner).await?;
        Ok((view["sources"][0]["last_run_at"] != seen_before).then_some(()))
    })
    .await?;
    for key in [
        "linked/node.key",
        "linked/late.key",
        "holder/inner.txt",
        "early/node.key",
        "early/late.key",
    ] {
        not_published(key).await?;
    }

    // Nowhere, under any name or version, the key's bytes.
    for role in ["primary-a", "primary-b", "na", "eu"] {
        let all = every_published_md5(&fed, role).await?;
        assert!(
            all.iter()
                .any(|(s, _)| s.starts_with(&format!("{source}:race.txt"))),
            "{role} knows the race item"
        );
        for (source, md5) in &all {
            assert_ne!(md5, &secret_md5, "{role} published the key as {source}");
        }
    }
    Ok(())
}

/// Issue 39, for an operator's program: an item's `path` that is a link, or passes through a
/// linked folder, to a file the program's folder does not hold is refused, and the source's
/// status says so; an ordinary path is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_item_path_through_a_symbolic_link_is_refused() -> TestResult {
    use std::os::unix::fs::symlink;

    let base = tempfile::tempdir()?;
    let (drop, outside) = (base.path().join("drop"), base.path().join("etc-docfed"));
    std::fs::create_dir(&drop)?;
    std::fs::create_dir(&outside)?;
    let secret = b"node signing key".to_vec();
    std::fs::write(outside.join("node.key"), &secret)?;
    symlink(outside.join("node.key"), drop.join("key.csv"))?;
    symlink(&outside, drop.join("linked"))?;
    let plain = b"t,v\n1,2\n".to_vec();
    std::fs::write(drop.join("plain.csv"), &plain)?;
    let listing: String = [
        ("plain", drop.join("plain.csv")),
        ("link", drop.join("key.csv")),
        ("through", drop.join("linked/node.key")),
    ]
    .iter()
    .map(|(key, path)| format!("{}\n", serde_json::json!({"key": key, "path": path})))
    .collect();
    std::fs::write(base.path().join("listing.jsonl"), listing)?;
    let name = format!("xl{:06x}", docfed_test_kit::unique_u32() & 0xffffff);
    let toml = format!(
        "[[source]]\nname = {name:?}\nkind = \"exec\"\ncommand = [\"cat\", {:?}]\ninterval = \"1s\"\n",
        base.path().join("listing.jsonl").display().to_string()
    );
    let fed = Federation::start_with_sources(&[], &toml).await?;
    await_everywhere(&fed, &item_id(&name, "plain").to_string(), &plain).await?;
    let runner = active_primary(&fed, &name, T).await?;
    eventually(T, "both links refused in the source's status", || async {
        let view = sources(&fed, &runner).await?;
        let s = &view["sources"][0];
        let err = s["last_error"].as_str().unwrap_or_default();
        Ok((s["failed"].as_i64() >= Some(2) && err.contains("symbolic link")).then_some(()))
    })
    .await?;
    for key in ["link", "through"] {
        let id = item_id(&name, key).to_string();
        for role in ["primary-a", "primary-b", "na"] {
            let (status, _) = content(fed.node(role), &id).await?;
            assert_eq!(status, StatusCode::NOT_FOUND, "{role} serves {key}");
        }
    }
    Ok(())
}
