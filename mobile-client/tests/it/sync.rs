//! The device replica: `docfed sync` against real nodes, offline answers and the offline
//! outbox, and a sync killed mid-download that resumes.
//!
//! Over 600 lines on purpose: each scenario is long (a federation, a device, the checks) and reads
//! best whole.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

const T: Duration = Duration::from_secs(60);

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// (id, version, deleted) of every document a node lists.
async fn node_directory(url: &str) -> TestResult<BTreeSet<(String, i64, bool)>> {
    let v: Value = docfed_http::tls::get(format!("{url}/v1/documents?deleted=any&limit=1000"))
        .await?
        .json()
        .await?;
    Ok(entries(&v))
}

fn entries(list: &Value) -> BTreeSet<(String, i64, bool)> {
    list["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["version"].as_i64().unwrap(),
                d["deleted"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// The same, from the replica alone.
fn replica_directory(config: &Path, home: &Path) -> BTreeSet<(String, i64, bool)> {
    let out = docfed_at(
        config,
        home,
        &[
            "--offline",
            "--json",
            "search",
            "--deleted",
            "--limit",
            "1000",
        ],
    );
    entries(&ok(&out))
}

#[tokio::test]
async fn a_device_catches_up_works_offline_and_delivers_its_queue_once() -> TestResult {
    let mut fed = Fed::start().await?;
    let primary = fed.url("primary-a");
    let na = fed.url("na");
    let token = fed.token();
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("config");
    let home = tmp.path().join("home");
    let dcf = |args: &[&str]| docfed_at(&config, &home, args);

    // a and d are flagged (both named report.pdf), b is only listed, c is deleted before the
    // first sync and reactivated after it.
    let body_a = pattern(1, 200_000);
    let body_d = pattern(4, 150_000);
    let a = publish(
        &primary,
        &token,
        "title=Tide%20tables&scope=global&filename=report.pdf",
        body_a.clone(),
    )
    .await?;
    let b = publish(
        &primary,
        &token,
        "title=Harbour%20rules&scope=region:eu&filename=rules.txt",
        pattern(2, 5_000),
    )
    .await?;
    let c = publish(
        &primary,
        &token,
        "title=Old%20charts&scope=global&filename=charts.bin",
        pattern(3, 7_000),
    )
    .await?;
    let d = publish(
        &primary,
        &token,
        "title=Lighthouse%20log&scope=region:na&filename=report.pdf",
        body_d.clone(),
    )
    .await?;
    send(
        http.delete(format!("{primary}/v1/documents/{c}"))
            .bearer_auth(&token),
    )
    .await?;
    for id in [&a, &b, &d] {
        await_json(
            &format!("{na}/v1/documents/{id}"),
            "the document",
            T,
            |_| true,
        )
        .await?;
    }
    await_json(&format!("{na}/v1/documents/{c}"), "the tombstone", T, |v| {
        v["deleted"] == true
    })
    .await?;

    ok(&dcf(&[
        "--server", &na, "--json", "register", "--token", &token,
    ]));
    for id in [&a, &d] {
        ok(&dcf(&["--server", &na, "--json", "flag", id]));
    }

    // A fresh sync: the replica is the node's directory, the flagged content is in files/.
    let r = ok(&dcf(&["--server", &na, "--json", "sync"]));
    assert_eq!(r["documents"]["new"], 4, "{r}");
    assert_eq!(r["files_downloaded"], 2, "{r}");
    assert_eq!(
        replica_directory(&config, &home),
        node_directory(&na).await?
    );
    // Offline, `info` and `flags` agree that the flagged content is here (on this device), and
    // that the listed-only document is not.
    let info = ok(&dcf(&["--offline", "--json", "info", &a]));
    assert_eq!(info["available_here"], true, "{info}");
    let info = ok(&dcf(&["--offline", "--json", "info", &b]));
    assert_eq!(info["available_here"], false, "{info}");
    let flags = ok(&dcf(&["--offline", "--json", "flags"]));
    let listed = flags["documents"].as_array().ok_or("no documents")?;
    assert_eq!(listed.len(), 2, "{flags}");
    assert!(
        listed.iter().all(|d| d["available_here"] == true),
        "{flags}"
    );
    let files = home.join("files");
    let mut held: Vec<Vec<u8>> = ["report.pdf", "report (2).pdf"]
        .iter()
        .map(|n| std::fs::read(files.join(n)))
        .collect::<Result<_, _>>()?;
    held.sort();
    let mut expected = vec![body_a.clone(), body_d.clone()];
    expected.sort();
    assert!(
        held == expected,
        "files/ holds both flagged documents byte-exact"
    );
    let info = ok(&dcf(&["--server", &na, "--json", "info", &a]));
    let path_a = info["local_path"]
        .as_str()
        .ok_or("no local_path")?
        .to_owned();
    assert!(std::fs::read(&path_a)? == body_a);

    // Nothing new: nothing changes, nothing is downloaded.
    let r = ok(&dcf(&["--server", &na, "--json", "sync"]));
    assert_eq!(
        (
            &r["changes"],
            &r["files_downloaded"],
            &r["documents"]["new"],
            &r["documents"]["updated"]
        ),
        (
            &Value::from(0),
            &Value::from(0),
            &Value::from(0),
            &Value::from(0)
        ),
        "{r}"
    );

    // A new version of a, d deleted, c reactivated.
    let body_a2 = pattern(11, 250_000);
    send(
        http.put(format!(
            "{primary}/v1/documents/{a}?title=Tide%20tables%202"
        ))
        .bearer_auth(&token)
        .body(body_a2.clone()),
    )
    .await?;
    send(
        http.delete(format!("{primary}/v1/documents/{d}"))
            .bearer_auth(&token),
    )
    .await?;
    send(
        http.post(format!("{primary}/v1/documents/{c}/reactivate"))
            .bearer_auth(&token),
    )
    .await?;
    await_json(&format!("{na}/v1/documents/{a}"), "version 2", T, |v| {
        v["version"] == 2
    })
    .await?;
    await_json(&format!("{na}/v1/documents/{d}"), "the tombstone", T, |v| {
        v["deleted"] == true
    })
    .await?;
    await_json(
        &format!("{na}/v1/documents/{c}"),
        "the reactivation",
        T,
        |v| v["deleted"] == false,
    )
    .await?;
    let r = ok(&dcf(&["--server", &na, "--json", "sync"]));
    let docs = &r["documents"];
    assert_eq!(
        (&docs["updated"], &docs["deleted"], &docs["reactivated"]),
        (&Value::from(1), &Value::from(1), &Value::from(1)),
        "{r}"
    );
    assert_eq!(
        (&r["files_downloaded"], &r["files_removed"]),
        (&Value::from(1), &Value::from(1)),
        "{r}"
    );
    assert_eq!(
        replica_directory(&config, &home),
        node_directory(&na).await?
    );
    assert!(
        std::fs::read(&path_a)? == body_a2,
        "the new version replaces the file at its path"
    );
    let names: Vec<String> = std::fs::read_dir(&files)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        names.len(),
        1,
        "the deleted document's file left files/: {names:?}"
    );

    // Offline: the node is stopped.
    let na_id = topology::demo::node_id(&fed.prefix, "na");
    fed.fed
        .stop_node(&na_id)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let out = dcf(&["--server", &na, "--json", "search", "tide"]);
    let found = ok(&out);
    assert_eq!(found["documents"][0]["id"], a.as_str(), "{found}");
    let note = stderr(&out);
    assert!(
        note.contains("answering from the replica") && note.contains("last synced"),
        "{note}"
    );
    let out = dcf(&["--server", &na, "--json", "info", &a]);
    assert_eq!(ok(&out)["local_path"], path_a.as_str());
    assert!(stderr(&out).contains("last synced"));
    let flags = ok(&dcf(&["--server", &na, "--json", "flags"]));
    assert_eq!(
        flags["documents"].as_array().map(Vec::len),
        Some(2),
        "a and the deleted d: {flags}"
    );
    let out = dcf(&["--server", &na, "--json", "versions", &a]);
    assert_eq!(ok(&out)["versions"].as_array().map(Vec::len), Some(2));

    // Actions taken offline are queued, and the replica shows them at once.
    let q = ok(&dcf(&["--server", &na, "--json", "flag", &b]));
    assert_eq!(q["queued"], true, "{q}");
    let q = ok(&dcf(&[
        "--server",
        &na,
        "--json",
        "annotate",
        &c,
        "--text",
        "Chart 4 is outdated",
        "--author",
        "ana",
    ]));
    assert_eq!(q["queued"], true, "{q}");
    let aid = q["id"].as_str().ok_or("no id")?.to_owned();
    let flags = ok(&dcf(&["--offline", "--json", "flags"]));
    assert!(
        flags["documents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == b.as_str()),
        "{flags}"
    );

    // The next sync delivers each once; another sync sends nothing again.
    fed.fed
        .start_node(&na_id)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let r = ok(&dcf(&["--server", &na, "--json", "sync"]));
    assert_eq!(
        (&r["outbox_sent"], &r["outbox_pending"]),
        (&Value::from(2), &Value::from(0)),
        "{r}"
    );
    assert_eq!(r["files_downloaded"], 1, "b's content: {r}");
    let r = ok(&dcf(&["--server", &na, "--json", "sync"]));
    assert_eq!(r["outbox_sent"], 0, "{r}");
    let list = send(
        http.get(format!("{na}/v1/annotations?state=any&doc_id={c}"))
            .bearer_auth(&token),
    )
    .await?;
    let notes = list["annotations"].as_array().ok_or("no list")?;
    assert_eq!(notes.len(), 1, "{list}");
    assert_eq!(
        (notes[0]["id"].as_str(), notes[0]["text"].as_str()),
        (Some(aid.as_str()), Some("Chart 4 is outdated"))
    );
    // The annotation reaches the author's side: each primary holds it, once.
    for role in ["primary-a", "primary-b"] {
        let url = format!("{}/v1/annotations?state=any&doc_id={c}", fed.url(role));
        let deadline = Instant::now() + T;
        let list = loop {
            let list = send(http.get(&url).bearer_auth(&token)).await?;
            if list["annotations"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                break list;
            }
            assert!(Instant::now() < deadline, "{role} never got the annotation");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let notes = list["annotations"].as_array().ok_or("no list")?;
        assert_eq!(notes.len(), 1, "{role}: {list}");
        assert_eq!(notes[0]["id"].as_str(), Some(aid.as_str()), "{role}");
    }
    let server_flags = ok(&dcf(&["--server", &na, "--json", "flags"]));
    assert!(
        server_flags["documents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == b.as_str()),
        "{server_flags}"
    );
    Ok(())
}

async fn bytes_served(url: &str) -> TestResult<u64> {
    let text = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client")
        .get(format!("{url}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("docfed_bytes_served_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .ok_or("no docfed_bytes_served_total")?
        .parse::<f64>()? as u64)
}

#[tokio::test]
async fn a_sync_killed_mid_download_resumes_and_verifies() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let node = Standalone::start(&tmp.path().join("node")).await?;
    let size = 40 << 20;
    let body = pattern(9, size);
    let id = publish(
        &node.url,
        TOKEN,
        "title=Survey&filename=survey.bin",
        body.clone(),
    )
    .await?;
    let md5 = format!("{:x}", md5::compute(&body));
    let config = tmp.path().join("config");
    let home = tmp.path().join("home");
    ok(&docfed_at(
        &config,
        &home,
        &[
            "--server", &node.url, "--json", "register", "--token", TOKEN,
        ],
    ));
    ok(&docfed_at(
        &config,
        &home,
        &["--server", &node.url, "--json", "flag", &id],
    ));
    let served_before = bytes_served(&node.url).await?;

    // Slowed down so it can be caught half-way, then killed.
    let mut child = docfed_at_child(
        &config,
        &home,
        &[
            "--server",
            &node.url,
            "sync",
            "--quiet",
            "--limit-rate",
            "8MiB",
        ],
    );
    let part = home.join("partial").join(&md5);
    let deadline = Instant::now() + T;
    let caught = loop {
        if std::fs::metadata(&part).map_or(0, |m| m.len()) >= (size / 4) as u64 {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err("the partial file did not grow");
        }
        if child.try_wait()?.is_some() {
            break Err("sync ended before it was killed");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill()?; // SIGKILL
    child.wait()?;
    caught?;
    let at_kill = std::fs::metadata(&part)?.len();
    assert!(at_kill < size as u64, "killed half-way, not after the end");

    let r = ok(&docfed_at(
        &config,
        &home,
        &["--server", &node.url, "--json", "sync"],
    ));
    assert_eq!(r["files_downloaded"], 1, "{r}");
    assert_eq!(
        r["bytes_downloaded"].as_u64(),
        Some(size as u64 - at_kill),
        "resumed: {r}"
    );
    assert!(std::fs::read(home.join("files").join("survey.bin"))? == body);
    assert!(!part.exists());
    let served = bytes_served(&node.url).await? - served_before;
    assert!(
        (served as f64) < 1.3 * size as f64,
        "{served} bytes served for {size}"
    );
    Ok(())
}

/// Sizes of the files in `dir`, by name.
fn held_files(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().map(|m| m.len()).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Under `--max-storage`, documents flagged first are kept first; the rest stay metadata with a
/// mark, and are fetched once room is made. `files/` never holds more than the budget.
#[tokio::test]
async fn flagged_content_beyond_the_storage_budget_stays_metadata_until_room_is_made() -> TestResult
{
    let fed = Fed::start().await?;
    let primary = fed.url("primary-a");
    let na = fed.url("na");
    let token = fed.token();
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("config");
    let home = tmp.path().join("home");
    let files = home.join("files");
    let dcf = |args: &[&str]| docfed_at(&config, &home, args);

    let mut ids = Vec::new();
    for (i, name) in ["a.bin", "b.bin", "c.bin"].iter().enumerate() {
        let id = publish(
            &primary,
            &token,
            &format!("title=Budget%20{i}&scope=global&filename={name}"),
            pattern(40 + i as u64, 300_000),
        )
        .await?;
        await_json(&format!("{na}/v1/documents/{id}"), "the document", T, |v| {
            v["available_here"] == true
        })
        .await?;
        ids.push(id);
    }
    ok(&dcf(&[
        "--server", &na, "--json", "register", "--token", &token,
    ]));
    for id in &ids {
        ok(&dcf(&["--server", &na, "--json", "flag", id]));
    }

    // 700 kB: a and b (flagged first) fit, c does not.
    let r = ok(&dcf(&[
        "--server",
        &na,
        "--json",
        "sync",
        "--max-storage",
        "700kB",
    ]));
    assert_eq!(r["deferred"], serde_json::json!([ids[2]]), "{r}");
    assert_eq!(r["storage_budget"], 700_000, "{r}");
    assert_eq!(
        held_files(&files).into_keys().collect::<Vec<_>>(),
        ["a.bin", "b.bin"]
    );
    let info = ok(&dcf(&["--server", &na, "--json", "info", &ids[2]]));
    assert_eq!(
        info["local_content"]["state"], "over_storage_budget",
        "{info}"
    );
    assert!(info.get("local_path").is_none(), "{info}");
    let human = dcf(&["--server", &na, "info", &ids[2]]);
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("not stored"),
        "{human:?}"
    );

    // b grows to 500 kB: a and b would take 800 kB, over the budget kept from the last sync,
    // so b is deferred (its old file goes: files/ only ever holds newest versions), a stays,
    // and c, flagged later but small enough for the room left, is fetched.
    let resp = http
        .put(format!("{primary}/v1/documents/{}", ids[1]))
        .bearer_auth(&token)
        .body(pattern(50, 500_000))
        .send()
        .await?;
    assert!(resp.status().is_success(), "{}", resp.text().await?);
    await_json(
        &format!("{na}/v1/documents/{}", ids[1]),
        "version 2",
        T,
        |v| v["version"] == 2 && v["available_here"] == true,
    )
    .await?;
    let r = ok(&dcf(&["--server", &na, "--json", "sync"]));
    assert_eq!(r["deferred"], serde_json::json!([ids[1]]), "{r}");
    assert_eq!(
        held_files(&files).into_keys().collect::<Vec<_>>(),
        ["a.bin", "c.bin"]
    );

    // Room is made: a unflagged, b (500 kB, flagged before c) fits again and c no longer
    // does; c comes back once the budget is lifted.
    ok(&dcf(&["--server", &na, "--json", "unflag", &ids[0]]));
    let r = ok(&dcf(&["--server", &na, "--json", "sync"]));
    assert_eq!(r["deferred"], serde_json::json!([ids[2]]), "{r}");
    let held = held_files(&files);
    assert_eq!(held.keys().collect::<Vec<_>>(), ["b.bin"]);
    assert!(std::fs::read(files.join("b.bin"))? == pattern(50, 500_000));
    let r = ok(&dcf(&[
        "--server",
        &na,
        "--json",
        "sync",
        "--max-storage",
        "unlimited",
    ]));
    assert_eq!(r["deferred"], serde_json::json!([]), "{r}");
    assert!(r["storage_budget"].is_null(), "{r}");
    assert!(std::fs::read(files.join("c.bin"))? == pattern(42, 300_000));
    let info = ok(&dcf(&["--server", &na, "--json", "info", &ids[2]]));
    assert!(info.get("local_content").is_none(), "{info}");
    Ok(())
}

/// A node that compacted its change feed past a replica's position (retention's horizon) sends
/// a snapshot: the replica ends with the node's directory, deletions included.
#[tokio::test]
async fn a_replica_behind_a_compacted_feed_reads_a_snapshot_and_ends_equal() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let node = Standalone::start_with(
        &tmp.path().join("node"),
        &["--feed-horizon", "0s", "--gc-interval", "off"],
    )
    .await?;
    let url = node.url.clone();
    let (config, home) = (tmp.path().join("config"), tmp.path().join("home"));
    let dcf = |args: &[&str]| docfed_at(&config, &home, args);
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    let a = publish(&url, TOKEN, "title=A", pattern(1, 100)).await?;
    let b = publish(&url, TOKEN, "title=B", pattern(2, 100)).await?;
    let c = publish(&url, TOKEN, "title=C", pattern(3, 100)).await?;
    let r = ok(&dcf(&["--server", &url, "--json", "sync"]));
    assert_eq!(r["snapshot"], false, "{r}");

    send(
        http.put(format!("{url}/v1/documents/{a}?title=A2"))
            .bearer_auth(TOKEN)
            .body(pattern(4, 100)),
    )
    .await?;
    send(
        http.delete(format!("{url}/v1/documents/{b}"))
            .bearer_auth(TOKEN),
    )
    .await?;
    send(
        http.delete(format!("{url}/v1/documents/{c}"))
            .bearer_auth(TOKEN),
    )
    .await?;
    send(
        http.post(format!("{url}/v1/documents/{c}/reactivate"))
            .bearer_auth(TOKEN),
    )
    .await?;
    publish(&url, TOKEN, "title=D", pattern(5, 100)).await?;
    let gc = send(http.post(format!("{url}/v1/admin/gc")).bearer_auth(TOKEN)).await?;
    assert!(gc["rows_pruned"]["changes"].as_u64() >= Some(3), "{gc}");

    let r = ok(&dcf(&["--server", &url, "--json", "sync"]));
    assert_eq!(r["snapshot"], true, "{r}");
    let replica = replica_directory(&config, &home);
    assert_eq!(replica, node_directory(&url).await?);
    assert!(replica.contains(&(b.clone(), 2, true)), "{replica:?}");
    assert!(replica.contains(&(c.clone(), 3, false)), "{replica:?}");
    // The next sync is an ordinary one.
    let r = ok(&dcf(&["--server", &url, "--json", "sync"]));
    assert_eq!(r["snapshot"], false, "{r}");
    Ok(())
}
