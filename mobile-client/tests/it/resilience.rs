//! Issue 14 ("Mobile client") under adverse conditions, each against a real federation:
//! * 10,000 changes made while a device was not syncing (new documents, new versions of its
//!   flagged documents, deletes, reactivations) are caught up by one `docfed sync`;
//! * `docfed daemon` killed with SIGKILL in the middle of a 500 MiB flagged download resumes
//!   it instead of starting over;
//! * a daemon in a network namespace whose link goes down (and loses its address) catches up
//!   within 3 s of the link coming back, without waiting for its catch-up interval.
//!
//! Over 600 lines on purpose: each scenario is long (a federation, a device, a fault, the checks)
//! and reads best whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use crate::common::*;

const T: Duration = Duration::from_secs(120);

type Directory = BTreeMap<String, (i64, bool)>;

fn add_entries(dir: &mut Directory, list: &Value) {
    for d in list["documents"].as_array().expect("documents") {
        let id = d["id"].as_str().unwrap().to_owned();
        let entry = (
            d["version"].as_i64().unwrap(),
            d["deleted"].as_bool().unwrap(),
        );
        assert!(dir.insert(id.clone(), entry).is_none(), "{id} listed twice");
    }
}

/// id -> (version, deleted) of every document a node lists, page by page.
async fn node_directory(url: &str) -> TestResult<Directory> {
    let mut dir = Directory::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("deleted", "any".to_owned()), ("limit", "1000".to_owned())];
        if let Some(c) = cursor.take() {
            q.push(("cursor", c));
        }
        let list = send(
            docfed_http::tls::client_builder()
                .build()
                .expect("HTTP client")
                .get(format!("{url}/v1/documents"))
                .query(&q),
        )
        .await?;
        add_entries(&mut dir, &list);
        match list["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(dir),
        }
    }
}

/// The same from the replica alone (`docfed --offline search --deleted`), page by page.
fn replica_directory(config: &Path, home: &Path) -> Directory {
    let mut dir = Directory::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec![
            "--offline",
            "--json",
            "search",
            "--deleted",
            "--limit",
            "2000",
        ];
        let c;
        if let Some(next) = cursor.take() {
            c = next;
            args.extend(["--cursor", c.as_str()]);
        }
        let list = ok(&docfed_at(config, home, &args));
        add_entries(&mut dir, &list);
        match list["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return dir,
        }
    }
}

/// Reads the change feed of `url` beyond `*since`, advancing it; the number of entries read.
async fn read_feed(http: &reqwest::Client, url: &str, since: &mut i64) -> TestResult<u64> {
    let mut n = 0;
    loop {
        let feed = send(
            http.get(format!("{url}/v1/changes"))
                .query(&[("since", since.to_string()), ("limit", "10000".into())]),
        )
        .await?;
        let got = feed["changes"].as_array().map_or(0, Vec::len);
        n += got as u64;
        *since = feed["last_seq"].as_i64().ok_or("no last_seq")?;
        if got < 10_000 {
            return Ok(n);
        }
    }
}

/// Where the replica keeps the content of `id`, if it does.
fn local_path(config: &Path, home: &Path, id: &str) -> Option<PathBuf> {
    let info = ok(&docfed_at(
        config,
        home,
        &["--offline", "--json", "info", id],
    ));
    info["local_path"].as_str().map(PathBuf::from)
}

fn file_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A running `docfed daemon`, killed (SIGKILL) when dropped; what it prints is collected.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn new(mut child: Child) -> Daemon {
        let lines = Arc::new(Mutex::new(Vec::new()));
        fn collect(from: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
            std::thread::spawn(move || {
                for line in BufReader::new(from).lines() {
                    let Ok(line) = line else { break };
                    into.lock().unwrap().push(line);
                }
            });
        }
        if let Some(out) = child.stdout.take() {
            collect(out, lines.clone());
        }
        if let Some(err) = child.stderr.take() {
            collect(err, lines.clone());
        }
        Daemon { child, lines }
    }

    /// Everything printed so far.
    fn said(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The `--json` reports of its catch-ups so far.
    fn reports(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("bytes_downloaded").is_some())
            .collect()
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// SIGKILL, and reaped.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

// --- 1. 10,000 changes while disconnected ---------------------------------------------------

const BEFORE: usize = 40;
const FLAGGED: usize = 5;
const NEW: usize = 5_001;
const UPDATES_PER_FLAGGED: usize = 40;
/// Per primary: new documents it accepted that it deletes, of those it reactivates, of those
/// it deletes again (and at primary-a: flagged 3 and 4 deleted, flagged 3 reactivated).
const DELETED: usize = 1_000;
const REACTIVATED: usize = 750;
const DELETED_AGAIN: usize = 648;
const IN_FLIGHT: usize = 32;

fn flagged_body(f: usize, n: usize) -> Vec<u8> {
    pattern((f * 1000 + n) as u64, 3_000 + 7 * n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_changes_made_while_disconnected_are_caught_up_by_one_sync() -> TestResult {
    const N: usize =
        NEW + FLAGGED * UPDATES_PER_FLAGGED + 3 + 2 * (DELETED + REACTIVATED + DELETED_AGAIN);
    assert_eq!(N, 10_000);
    let fed = Fed::start().await?;
    let primary = fed.url("primary-a");
    let primary_b = fed.url("primary-b");
    let na = fed.url("na");
    let token = fed.token();
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("config");
    let home = tmp.path().join("home");
    let dcf = |args: &[&str]| docfed_at(&config, &home, args);

    // Before: BEFORE documents, the first FLAGGED of them (global, so na keeps their content)
    // flagged by the device after its first sync.
    let mut before = Vec::new();
    for i in 0..BEFORE {
        let (query, body) = if i < FLAGGED {
            (
                format!("title=Flagged%20{i}&scope=global&filename=flagged-{i}.bin"),
                flagged_body(i, 0),
            )
        } else {
            (
                format!("title=Before%20{i}&scope=region:eu&filename=before-{i}.txt"),
                format!("{} before {i}", fed.prefix).into_bytes(),
            )
        };
        before.push(publish(&primary, &token, &query, body).await?);
    }
    for id in &before {
        await_json(
            &format!("{na}/v1/documents/{id}"),
            "the document",
            T,
            |_| true,
        )
        .await?;
    }
    let r = ok(&dcf(&["--server", &na, "--json", "sync"]));
    assert_eq!(r["documents"]["new"], BEFORE, "{r}");
    ok(&dcf(&[
        "--server", &na, "--json", "register", "--token", &token,
    ]));
    let flagged: Vec<String> = before[..FLAGGED].to_vec();
    for id in &flagged {
        ok(&dcf(&["--server", &na, "--json", "flag", id]));
    }
    let r = ok(&dcf(&["--server", &na, "--json", "sync"]));
    assert_eq!(r["files_downloaded"], FLAGGED, "{r}");

    // The device does not sync while 10,000 changes happen, IN_FLIGHT at a time: new documents
    // at both primaries (each primary's writer commits one edit at a time, so two are twice
    // as fast), new versions of the flagged documents at primary-a, then deletes and
    // reactivations at the primary that accepted the document.
    let started = Instant::now();
    let newest: Arc<Mutex<HashMap<usize, (i64, usize)>>> = Arc::default();
    // New documents and new versions of the flagged ones, interleaved.
    let mut phase_a: Vec<(usize, usize)> = (0..NEW).map(|i| (usize::MAX, i)).collect();
    for n in 1..=UPDATES_PER_FLAGGED {
        for f in 0..FLAGGED {
            let at = (n * FLAGGED + f) * NEW / (FLAGGED * (UPDATES_PER_FLAGGED + 1));
            phase_a.insert(at, (f, n));
        }
    }
    let new_ids: Vec<(usize, String)> = futures::stream::iter(phase_a)
        .map(|(f, n)| {
            let (http, primary, token, prefix) = (&http, &primary, &token, &fed.prefix);
            let (flagged, newest, primary_b) = (&flagged, &newest, &primary_b);
            async move {
                if f == usize::MAX {
                    // Both primaries accept new documents (each its own).
                    let at = if n % 2 == 0 { primary } else { primary_b };
                    let v = send(
                        http.post(format!(
                            "{at}/v1/documents?title=New%20{n}&scope=region:eu&filename=new-{n}.txt"
                        ))
                        .bearer_auth(token)
                        .body(format!("{prefix} new {n}")),
                    )
                    .await?;
                    let id = v["id"].as_str().ok_or("no id")?.to_owned();
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Some((n, id)))
                } else {
                    let v = send(
                        http.put(format!("{primary}/v1/documents/{}", flagged[f]))
                            .bearer_auth(token)
                            .body(flagged_body(f, n)),
                    )
                    .await?;
                    let version = v["version"].as_i64().ok_or("no version")?;
                    let mut newest = newest.lock().unwrap();
                    let e = newest.entry(f).or_insert((version, n));
                    if version > e.0 {
                        *e = (version, n);
                    }
                    Ok(None)
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter_map(|r| async move { r.transpose() })
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    eprintln!(
        "{} new documents and {} new versions in {:?}",
        NEW,
        FLAGGED * UPDATES_PER_FLAGGED,
        started.elapsed()
    );
    assert_eq!(new_ids.len(), NEW);
    let mut new_ids = new_ids;
    new_ids.sort();
    let accepted_by = |b: usize| -> Vec<String> {
        new_ids
            .iter()
            .filter(|(n, _)| n % 2 == b)
            .map(|(_, id)| id.clone())
            .collect()
    };
    let (at_a, at_b) = (accepted_by(0), accepted_by(1));

    // Deletes, then reactivations of some deleted documents, then deletes again of some of
    // those, each at the primary that accepted the document: flagged 3 and 4 and new
    // documents deleted, flagged 3 and new documents reactivated, new documents deleted again.
    // Tombstones and reactivations carry no new content: the federation pulls nothing for them.
    let mut rounds: Vec<(&str, Vec<(&String, &String)>)> = Vec::new();
    let mut first = vec![(&primary, &flagged[3]), (&primary, &flagged[4])];
    let mut back = vec![(&primary, &flagged[3])];
    let mut again = Vec::new();
    for (url, ids) in [(&primary, &at_a), (&primary_b, &at_b)] {
        first.extend(ids[..DELETED].iter().map(|id| (url, id)));
        back.extend(ids[..REACTIVATED].iter().map(|id| (url, id)));
        again.extend(ids[..DELETED_AGAIN].iter().map(|id| (url, id)));
    }
    rounds.push(("delete", first));
    rounds.push(("reactivate", back));
    rounds.push(("delete", again));
    let mut is_deleted: HashMap<String, bool> = HashMap::new();
    for (action, ids) in &rounds {
        let results: Vec<TestResult<Value>> = futures::stream::iter(ids.iter())
            .map(|(url, id)| {
                let req = if *action == "delete" {
                    http.delete(format!("{url}/v1/documents/{id}"))
                } else {
                    http.post(format!("{url}/v1/documents/{id}/reactivate"))
                };
                send(req.bearer_auth(&token))
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        for r in results {
            r.map_err(|e| format!("{action}: {e}"))?;
        }
        for (_, id) in ids {
            is_deleted.insert((*id).clone(), *action == "delete");
        }
        eprintln!("{} {action}s done at {:?}", ids.len(), started.elapsed());
    }
    let published_in = started.elapsed();

    // Until primary-a (which learns primary-b's documents) and na have recorded every change.
    let at_primary = (BEFORE + N) as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut since, mut at_na) = (0, 0);
    let (mut since_a, mut at_a) = (0, 0);
    let mut said = Instant::now();
    loop {
        at_a += read_feed(&http, &primary, &mut since_a).await?;
        at_na += read_feed(&http, &na, &mut since).await?;
        assert!(
            at_a <= at_primary && at_na <= at_primary,
            "more changes than were made"
        );
        if at_na == at_primary && at_a == at_primary {
            break;
        }
        if Instant::now() > deadline {
            let peers = |url: String| {
                let req = http.get(format!("{url}/v1/peers")).bearer_auth(&token);
                async move { send(req).await.map(|v| v.to_string()) }
            };
            return Err(format!(
                "primary-a recorded {at_a}, na {at_na} of {at_primary} changes in 600 s\nna: {:?}\nprimary-a: {:?}",
                peers(na.clone()).await,
                peers(primary.clone()).await
            )
            .into());
        }
        if said.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "primary-a: {at_a}, na: {at_na} of {at_primary} changes at {:?}",
                started.elapsed()
            );
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "10,000 changes published in {published_in:?}, at na after {:?}",
        started.elapsed()
    );

    // One sync catches up.
    let sync_started = Instant::now();
    let r = ok(&dcf(&["--server", &na, "--json", "sync"]));
    let took = sync_started.elapsed();
    eprintln!("catch-up sync of 10,000 changes took {took:?}: {r}");
    assert_eq!(r["changes"], N, "{r}");
    let docs = &r["documents"];
    // Counted per change; how deletes and reactivations count depends on the order na
    // learnt versions in (two intermediates), so only the new documents are certain.
    assert_eq!(docs["new"], NEW, "{r}");
    // Flagged 4 was deleted (its file leaves), 0-3 have new versions (3 was deleted and
    // reactivated meanwhile).
    assert_eq!(r["files_downloaded"], 4, "{r}");
    assert_eq!(r["files_removed"], 1, "{r}");

    let replica = replica_directory(&config, &home);
    let node = node_directory(&na).await?;
    assert_eq!(replica.len(), BEFORE + NEW);
    assert!(replica == node, "the replica's directory is na's");
    let gone: BTreeSet<&String> = is_deleted
        .iter()
        .filter(|(_, d)| **d)
        .map(|(id, _)| id)
        .collect();
    for (id, d) in &is_deleted {
        assert_eq!(replica[id.as_str()].1, *d, "{id} deleted: {d}");
    }
    assert_eq!(
        replica.values().filter(|(_, d)| *d).count(),
        gone.len(),
        "no other document is deleted"
    );
    let newest = newest.lock().unwrap().clone();
    let mut kept = BTreeSet::new();
    for (f, id) in flagged.iter().enumerate() {
        let path = local_path(&config, &home, id);
        if gone.contains(id) {
            assert_eq!(path, None, "deleted flagged document {f} has no file");
            continue;
        }
        let path = path.ok_or_else(|| format!("flagged document {f} has no file"))?;
        let (version, n) = newest[&f];
        assert_eq!(node[id.as_str()].0, version + i64::from(f == 3) * 2);
        assert!(
            std::fs::read(&path)? == flagged_body(f, n),
            "flagged document {f}: {} is not version {version}'s content",
            path.display()
        );
        kept.insert(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(
        file_names(&home.join("files")),
        kept,
        "files/ holds exactly the live flagged documents"
    );
    assert!(file_names(&home.join("partial")).is_empty());
    Ok(())
}

// --- 2. kill -9 during a 500 MiB download ---------------------------------------------------

const BIG: u64 = 500 << 20;
const CHUNK: usize = 1 << 20;

/// Chunk `i` of the big document: one random block, numbered (cheap to make twice).
fn big_chunk(block: &[u8], i: u64) -> Vec<u8> {
    let mut c = block.to_vec();
    c[..8].copy_from_slice(&i.to_le_bytes());
    c
}

fn md5_of_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut ctx = md5::Context::new();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(format!("{:x}", ctx.finalize()));
        }
        ctx.consume(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_during_a_500_mib_download_resumes_it() -> TestResult {
    let fed = Fed::start().await?;
    let primary = fed.url("primary-a");
    let na = fed.url("na");
    let token = fed.token();
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("config");
    let home = tmp.path().join("home");

    // The body is made as it is sent, never held whole; its MD5 first.
    let block = Arc::new(pattern(u64::from(unique_u32()), CHUNK));
    let chunks = BIG / CHUNK as u64;
    let mut ctx = md5::Context::new();
    for i in 0..chunks {
        ctx.consume(big_chunk(&block, i));
    }
    let md5 = format!("{:x}", ctx.finalize());
    let b = block.clone();
    let body =
        futures::stream::iter(0..chunks).map(move |i| Ok::<_, std::io::Error>(big_chunk(&b, i)));
    let started = Instant::now();
    let v = send(
        docfed_http::tls::client_builder()
            .build()
            .expect("HTTP client")
            .post(format!(
                "{primary}/v1/documents?title=Survey&scope=region:na&filename=survey.bin"
            ))
            .bearer_auth(&token)
            .body(reqwest::Body::wrap_stream(body)),
    )
    .await?;
    assert_eq!(v["md5"], md5.as_str(), "{v}");
    let id = v["id"].as_str().ok_or("no id")?.to_owned();
    await_json(
        &format!("{na}/v1/documents/{id}"),
        "na to hold the content",
        Duration::from_secs(300),
        |v| v["available_here"] == true,
    )
    .await?;
    eprintln!("500 MiB published and at na in {:?}", started.elapsed());
    for args in [
        &["--server", &na, "--json", "register", "--token", &token][..],
        &["--server", &na, "--json", "flag", &id][..],
    ] {
        ok(&docfed_at(&config, &home, args));
    }

    // Slowed down, caught past 40 %, killed.
    let daemon_args = |rate: Option<&'static str>| {
        let mut a = vec![
            "--server",
            &na,
            "--json",
            "daemon",
            "--catch-up-interval",
            "120s",
        ];
        if let Some(r) = rate {
            a.extend(["--limit-rate", r]);
        }
        a
    };
    let mut daemon = Daemon::new(docfed_at_child(&config, &home, &daemon_args(Some("50MB"))));
    let part = home.join("partial").join(&md5);
    let deadline = Instant::now() + T;
    loop {
        if std::fs::metadata(&part).map_or(0, |m| m.len()) * 10 >= BIG * 4 {
            break;
        }
        if daemon.exited() || Instant::now() > deadline {
            return Err(format!("the partial file did not reach 40 %:\n{}", daemon.said()).into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.kill();
    let at_kill = std::fs::metadata(&part)?.len();
    assert!(at_kill < BIG, "killed during the download, not after it");
    assert!(!home.join("files").join("survey.bin").exists());

    // Without a rate limit: the download resumes and completes.
    let resumed_at = Instant::now();
    let daemon = Daemon::new(docfed_at_child(&config, &home, &daemon_args(None)));
    let file = home.join("files").join("survey.bin");
    let deadline = Instant::now() + T;
    let reports = loop {
        let reports = daemon.reports();
        if reports.iter().any(|r| r["files_downloaded"] == 1) {
            break reports;
        }
        if Instant::now() > deadline {
            return Err(format!("no catch-up downloaded the file:\n{}", daemon.said()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let resume_took = resumed_at.elapsed();
    assert_eq!(std::fs::metadata(&file)?.len(), BIG);
    assert_eq!(md5_of_file(&file)?, md5, "the file's MD5");
    assert!(!part.exists());
    let resumed: u64 = reports
        .iter()
        .map(|r| r["bytes_downloaded"].as_u64().unwrap_or(0))
        .sum();
    drop(daemon);
    let total = at_kill + resumed;
    eprintln!(
        "killed at {at_kill} of {BIG} bytes ({:.1} %), {resumed} more in {resume_took:?}: \
         {total} received in all, {:.3} x the size",
        at_kill as f64 * 100.0 / BIG as f64,
        total as f64 / BIG as f64
    );
    assert_eq!(resumed, BIG - at_kill, "resumed where it stopped");
    assert!((total as f64) < 1.3 * BIG as f64, "{total} bytes for {BIG}");
    Ok(())
}

// --- 3. link down and up in a network namespace ---------------------------------------------

/// A network namespace joined to the root one by a veth pair: 10.231.X.1/24 outside,
/// 10.231.X.2/24 (at first) inside. Removed (namespace, veth) when dropped.
struct Netns {
    name: String,
    outer: String,
    inner: String,
    x: u32,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    fn create() -> TestResult<Netns> {
        let r = unique_u32();
        let used = Command::new("ip")
            .args(["-4", "-o", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let x = (0..250)
            .map(|k| (r + k) % 250 + 2)
            .find(|x| !used.contains(&format!("10.231.{x}.")))
            .ok_or("no free 10.231.X.0/24")?;
        let tag = format!("{:06x}", r & 0xff_ffff);
        let ns = Netns {
            name: format!("docfed-{tag}"),
            outer: format!("dfo{tag}"),
            inner: format!("dfi{tag}"),
            x,
        };
        ip(&["netns", "add", &ns.name]).map_err(|e| {
            format!("this test needs root and network namespaces (`ip netns add`): {e}")
        })?;
        let outer = format!("10.231.{x}.1/24");
        ip(&[
            "link", "add", &ns.outer, "type", "veth", "peer", "name", &ns.inner,
        ])?;
        ip(&["link", "set", &ns.inner, "netns", &ns.name])?;
        ip(&["addr", "add", &outer, "dev", &ns.outer])?;
        ip(&["link", "set", &ns.outer, "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        ns.up(2)?;
        Ok(ns)
    }

    fn outer_ip(&self) -> String {
        format!("10.231.{}.1", self.x)
    }

    /// The link comes up, then gets the address 10.231.X.`host` (as a DHCP client gives it
    /// one once the link is up).
    fn up(&self, host: u8) -> Result<(), String> {
        ip(&["-n", &self.name, "link", "set", &self.inner, "up"])?;
        ip(&[
            "-n",
            &self.name,
            "addr",
            "add",
            &format!("10.231.{}.{host}/24", self.x),
            "dev",
            &self.inner,
        ])
    }

    /// The link goes down and loses its address 10.231.X.`host`.
    fn down(&self, host: u8) -> Result<(), String> {
        ip(&["-n", &self.name, "link", "set", &self.inner, "down"])?;
        ip(&[
            "-n",
            &self.name,
            "addr",
            "del",
            &format!("10.231.{}.{host}/24", self.x),
            "dev",
            &self.inner,
        ])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; deleting the namespace deletes what is left in it.
        let _ = ip(&["link", "del", &self.outer]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A TCP forwarder from `listen` to `to`, stopped (with its connections) when dropped.
struct Forwarder {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(listen: SocketAddr, to: SocketAddr) -> TestResult<Forwarder> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        conns.spawn(async move {
                            if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Forwarder { addr, task })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until `path` holds exactly `want`, at most `limit`; how long it took.
async fn await_file(path: &Path, want: &[u8], limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if std::fs::read(path).is_ok_and(|got| got == want) {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_catches_up_within_3_s_of_its_link_coming_back() -> TestResult {
    let ns = Netns::create()?;
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

    // Nodes listen on loopback only: the namespace reaches na through a forwarder.
    let na_addr: SocketAddr = na.trim_start_matches("http://").parse()?;
    let fwd = Forwarder::start(format!("{}:0", ns.outer_ip()).parse()?, na_addr).await?;
    let server = format!("http://{}", fwd.addr);

    let body1 = pattern(31, 150_000);
    let id = publish(
        &primary,
        &token,
        "title=Roaming&scope=global&filename=roaming.bin",
        body1.clone(),
    )
    .await?;
    await_json(&format!("{na}/v1/documents/{id}"), "the document", T, |v| {
        v["available_here"] == true
    })
    .await?;
    // Registered with the node under the URL the daemon will use.
    for args in [
        &["--server", &server, "--json", "register", "--token", &token][..],
        &["--server", &server, "--json", "flag", &id][..],
    ] {
        ok(&docfed_at(&config, &home, args));
    }

    let daemon = Daemon::new(docfed_at_child_via(
        &["ip", "netns", "exec", &ns.name],
        &config,
        &home,
        &[
            "--server",
            &server,
            "--json",
            "daemon",
            "--catch-up-interval",
            "120s",
        ],
    ));
    let file = home.join("files").join("roaming.bin");
    if await_file(&file, &body1, T).await.is_none() {
        return Err(format!("the first catch-up did not happen:\n{}", daemon.said()).into());
    }

    // The network goes (link down, address gone) and comes back twice: with the same address,
    // then with another one, as a new DHCP lease would be, where the connections of the old
    // address are dead for good (packets to it find nobody). Each time two new versions and a
    // new document reach na meanwhile, and the daemon catches up within 3 s of the link coming
    // back, although its next periodic catch-up is two minutes away.
    let mut version = 1;
    for (round, (host, back_as)) in [(2u8, 2u8), (2, 3)].into_iter().enumerate() {
        ns.down(host)?;
        let bodies = [
            pattern(32 + 2 * round as u64, 160_000),
            pattern(33 + 2 * round as u64, 170_000),
        ];
        for b in &bodies {
            send(
                http.put(format!("{primary}/v1/documents/{id}"))
                    .bearer_auth(&token)
                    .body(b.clone()),
            )
            .await?;
        }
        version += 2;
        let other = publish(
            &primary,
            &token,
            &format!("title=Arrived%20offline%20{round}&scope=region:eu&filename=other.txt"),
            format!("published while the device was offline, round {round}").into_bytes(),
        )
        .await?;
        await_json(
            &format!("{na}/v1/documents/{other}"),
            "the new document",
            T,
            |_| true,
        )
        .await?;
        await_json(
            &format!("{na}/v1/documents/{id}"),
            "the new versions",
            T,
            |v| v["version"] == version && v["available_here"] == true,
        )
        .await?;
        assert!(
            std::fs::read(&file)? != bodies[1],
            "round {round}: the daemon cannot have caught up with its link down:\n{}",
            daemon.said()
        );

        let back = Instant::now();
        ns.up(back_as)?;
        if await_file(&file, &bodies[1], T).await.is_none() {
            return Err(format!(
                "round {round}: the daemon never caught up after the link came back:\n{}",
                daemon.said()
            )
            .into());
        }
        let took = back.elapsed();
        eprintln!(
            "round {round} (address 10.231.{}.{host} -> .{back_as}): caught up {took:?} after \
             the link came back",
            ns.x
        );
        let listed = ok(&docfed_at(
            &config,
            &home,
            &["--offline", "--json", "info", &other],
        ));
        assert_eq!(listed["id"], other.as_str(), "{listed}");
        assert!(
            took <= Duration::from_secs(3),
            "round {round}: caught up only {took:?} after the link came back:\n{}",
            daemon.said()
        );
    }
    drop(daemon);
    drop(fwd);
    Ok(())
}
