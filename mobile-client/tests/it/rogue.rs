//! Issue 39's attacks on the command line (items 2 and 11), performed against real processes: a
//! rogue server (a small HTTP server in the test that serves forged versions and records every
//! request), advertised over real mDNS as a regional node; forged versions (a tombstone of the
//! user's flagged document, a version signed by another key, an unsigned one) sent to a device
//! that pinned the federation's primary keys; and `fetch` without `-o` onto an existing file.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use docfed_shared::keys::NodeKey;
use docfed_shared::presence::{SERVICE_TYPE, TXT_HTTP, TXT_ID, TXT_REGION, TXT_TIER};
use docfed_shared::wire::{Change, ChangeFeed, ChangeKind, DocumentMeta, DocumentVersion};
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use serde_json::json;

use crate::common::*;

const T: Duration = Duration::from_secs(60);

/// What the rogue server serves, and every request it received ("METHOD PATH AUTHORIZATION").
#[derive(Clone, Default)]
struct Rogue {
    requests: Arc<Mutex<Vec<String>>>,
    feed: Arc<Mutex<Vec<DocumentVersion>>>,
    docs: Arc<Mutex<HashMap<String, DocumentVersion>>>,
}

impl Rogue {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// A server that answers as a node would, with whatever it was given to serve.
async fn start_rogue(rogue: Rogue) -> TestResult<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().fallback(serve).with_state(rogue);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

async fn serve(State(r): State<Rogue>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .unwrap_or_default();
    r.requests
        .lock()
        .unwrap()
        .push(format!("{} {path} {auth}", req.method()));
    let meta = |v: &DocumentVersion| DocumentMeta {
        current: v.clone(),
        published_at: v.created_at,
        available_here: true,
        available_at: Vec::new(),
    };
    match path.as_str() {
        "/v1/health" => Json(json!({"status": "ok"})).into_response(),
        "/v1/changes" => {
            let feed = r.feed.lock().unwrap().clone();
            let changes: Vec<Change> = feed
                .into_iter()
                .enumerate()
                .map(|(i, document)| Change {
                    seq: i as i64 + 1,
                    kind: ChangeKind::Updated,
                    at: document.created_at,
                    document,
                })
                .collect();
            Json(ChangeFeed {
                last_seq: changes.len() as i64,
                changes,
                horizon: 0,
            })
            .into_response()
        }
        "/v1/devices" => Json(json!({
            "device": "0190d5a0-0000-7000-8000-000000000000",
            "secret": "00".repeat(32),
            "name": "",
            "created_at": "2026-01-01T00:00:00Z",
        }))
        .into_response(),
        "/v1/documents" => {
            let docs: Vec<DocumentMeta> = r.docs.lock().unwrap().values().map(meta).collect();
            Json(json!({ "documents": docs })).into_response()
        }
        p if p.starts_with("/v1/documents/") => {
            let rest = &p["/v1/documents/".len()..];
            let (id, content) = match rest.strip_suffix("/content") {
                Some(id) => (id, true),
                None => (rest, false),
            };
            match r.docs.lock().unwrap().get(id) {
                Some(v) if content => vec![b'x'; v.size as usize].into_response(),
                Some(v) => Json(meta(v)).into_response(),
                None => axum::http::StatusCode::NOT_FOUND.into_response(),
            }
        }
        _ => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// `docfed` with `config` (XDG_CONFIG_HOME), `home` (its replica) and `cwd`; over mDNS unless
/// `args` say otherwise (the other tests' helpers turn it off).
fn docfed_in(config: &Path, home: &Path, cwd: &Path, mdns: bool, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_docfed"));
    c.args(args)
        .current_dir(cwd)
        .env_remove("DOCFED_SERVER")
        .env_remove("DOCFED_TOKEN")
        .env_remove("DOCFED_CA")
        .env_remove("DOCFED_PRIMARY_KEYS")
        .env_remove("DOCFED_NO_MDNS")
        .env("XDG_CONFIG_HOME", config)
        .env("XDG_DATA_HOME", config.join("data"))
        .env("DOCFED_HOME", home)
        .stdin(Stdio::null());
    if !mdns {
        c.env("DOCFED_NO_MDNS", "true");
    }
    c.output().expect("run docfed")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The version `v` as a forger would make it: `f` changes it, and it keeps `v`'s signature.
fn altered(v: &DocumentVersion, f: impl FnOnce(&mut DocumentVersion)) -> DocumentVersion {
    let mut forged = v.clone();
    f(&mut forged);
    forged
}

/// A device that pinned the federation's primary keys at `register` refuses every forged
/// version a server sends (a tombstone of its flagged document carrying the old signature, one
/// signed by another key in the primary's name, an unsigned new document): `sync` applies none
/// of them, keeps the user's file and says so (exit 5); `info` and `fetch` of a forged document
/// are refused and write nothing. Genuine versions from the federation verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_versions_are_refused_and_the_users_file_is_kept() -> TestResult {
    let fed = Fed::start().await?;
    let primary = fed.url("primary-a");
    let na = fed.url("na");
    let token = fed.token();
    let keys = fed.fed.topology_file().to_str().unwrap().to_owned();
    let tmp = tempfile::tempdir()?;
    let (config, home) = (tmp.path().join("config"), tmp.path().join("home"));
    let dcf = |mdns: bool, args: &[&str]| docfed_in(&config, &home, tmp.path(), mdns, args);

    let body = pattern(7, 20_000);
    let id = publish(
        &primary,
        &token,
        "title=Ship%20log&scope=global&filename=log.txt",
        body.clone(),
    )
    .await?;
    await_json(
        &format!("{na}/v1/documents/{id}"),
        "the document",
        T,
        |_| true,
    )
    .await?;
    ok(&dcf(
        false,
        &[
            "--primary-keys",
            &keys,
            "--server",
            &na,
            "--json",
            "register",
            "--token",
            &token,
        ],
    ));
    assert!(config.join("docfed/primary-keys.toml").is_file());
    ok(&dcf(false, &["--server", &na, "--json", "flag", &id]));
    let r = ok(&dcf(false, &["--server", &na, "--json", "sync"]));
    assert_eq!(r["files_downloaded"], 1, "genuine versions verify: {r}");
    let info = ok(&dcf(false, &["--offline", "--json", "info", &id]));
    let file = info["local_path"].as_str().expect("kept").to_owned();
    assert_eq!(std::fs::read(&file)?, body);

    // What the rogue serves: forgeries made from the genuine version.
    let genuine: DocumentMeta = docfed_http::tls::get(format!("{na}/v1/documents/{id}"))
        .await?
        .json()
        .await?;
    let v = genuine.current;
    assert!(v.signature.is_some(), "the federation signs its versions");
    let tombstone = altered(&v, |f| {
        f.version += 1;
        f.deleted = true;
    });
    let attacker = NodeKey::generate();
    let signed_by_attacker = altered(&v, |f| {
        f.version += 2;
        f.deleted = true;
        f.signature = Some(attacker.sign(&f.signing_input()));
    });
    let new_doc = altered(&v, |f| {
        f.id = docfed_shared::DocId::new();
        f.title = "Forged notice".into();
        f.signature = None;
    });
    let rogue = Rogue::default();
    *rogue.feed.lock().unwrap() = vec![
        tombstone.clone(),
        signed_by_attacker.clone(),
        new_doc.clone(),
    ];
    rogue
        .docs
        .lock()
        .unwrap()
        .insert(new_doc.id.to_string(), new_doc.clone());
    let rogue_url = start_rogue(rogue.clone()).await?;

    let out = dcf(false, &["--server", &rogue_url, "--json", "sync"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let said = stderr(&out);
    for words in [
        "3 refused versions",
        "does not match its origin's signature",
        "is not signed",
        "nothing of it was recorded",
    ] {
        assert!(said.contains(words), "{words:?}: {said}");
    }
    let report = stdout_json(&out);
    assert_eq!(
        report["refused"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
    assert_eq!(report["files_removed"], 0, "{report}");
    assert_eq!(
        std::fs::read(&file)?,
        body,
        "the user's file is still there, unchanged"
    );
    let info = ok(&dcf(false, &["--offline", "--json", "info", &id]));
    assert_eq!(info["deleted"], false, "{info}");
    assert_eq!(info["version"], v.version, "{info}");
    let versions = ok(&dcf(false, &["--offline", "--json", "versions", &id]));
    assert_eq!(versions["versions"].as_array().map(Vec::len), Some(1));
    let found = ok(&dcf(false, &["--offline", "--json", "search", "forged"]));
    assert_eq!(found["documents"], json!([]), "recorded nowhere: {found}");

    // Asked directly, the rogue's forged document is refused and nothing is written.
    let forged_id = new_doc.id.to_string();
    let out = dcf(false, &["--server", &rogue_url, "info", &forged_id]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(stderr(&out).contains("is not signed"), "{}", stderr(&out));
    let out = dcf(false, &["--server", &rogue_url, "fetch", &forged_id]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(!tmp.path().join("log.txt").exists());
    assert!(
        !rogue.requests().iter().any(|r| r.contains("/content")),
        "no byte was asked for: {:?}",
        rogue.requests()
    );
    let out = dcf(false, &["--server", &rogue_url, "--json", "search", "x"]);
    assert_eq!(ok(&out)["documents"], json!([]), "{}", stderr(&out));
    Ok(())
}

/// Advertises `id` as a regional node at `http` over mDNS (the daemon answers on every
/// interface, loopback included); [`await_advertised`] waits until it can be resolved.
fn advertise(daemon: &ServiceDaemon, id: &str, http: &str) -> TestResult<String> {
    let port: u16 = http.rsplit(':').next().unwrap().parse()?;
    let props = [
        (TXT_ID, id),
        (TXT_TIER, "regional"),
        (TXT_REGION, "eu"),
        (TXT_HTTP, http),
    ];
    let info = ServiceInfo::new(
        SERVICE_TYPE,
        id,
        &format!("{id}.local."),
        "127.0.0.1",
        port,
        &props[..],
    )?;
    let fullname = info.get_fullname().to_owned();
    daemon.register(info)?;
    Ok(fullname)
}

/// Waits until mDNS resolves every one of `ids` (as a device browsing now would).
async fn await_advertised(ids: &[&str]) -> TestResult {
    let browser = ServiceDaemon::new()?;
    let rx = browser.browse(SERVICE_TYPE)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut missing: Vec<&str> = ids.to_vec();
    while !missing.is_empty() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(|| format!("mDNS never resolved {missing:?}"))?;
        if let Ok(Ok(ServiceEvent::ServiceResolved(s))) =
            tokio::time::timeout(left, rx.recv_async()).await
        {
            if let Some(id) = s.txt_properties.get_property_val_str(TXT_ID) {
                missing.retain(|m| *m != id);
            }
        }
    }
    let _ = browser.shutdown();
    Ok(())
}

/// Runs `run` until its stderr contains `seen` (the device's browse saw the advertisement),
/// checking `each` on every run, at most 30 s: one mDNS answer may be lost on the way.
fn until_seen(seen: &str, mut run: impl FnMut() -> Output, each: impl Fn(&Output)) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run();
        each(&out);
        if stderr(&out).contains(seen) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "the device never reported {seen:?}: {}",
            stderr(&out)
        );
    }
}

/// A rogue advertises itself over mDNS as a regional node with an `http://` URL. Without a
/// pinned CA, mDNS is not used at all; with one, neither the rogue nor a real node of
/// the federation advertised under another node's id is, while the node advertised under its
/// own id is. `register --token` without `--server` is refused before any request. The rogue
/// receives nothing at all, the operator's token least of all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_mdns_advertisement_is_not_used_and_never_gets_the_token() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (node, _, certs) = crate::cli::https_node(tmp.path()).await?;
    let ca = certs.ca();
    let ca = ca.to_str().unwrap();
    let rogue = Rogue::default();
    let rogue_url = start_rogue(rogue.clone()).await?;
    let u = unique_u32();
    let rogue_id = format!("rogue-{u:08x}");
    let impostor_id = format!("impostor-{u:08x}");
    let daemon = ServiceDaemon::new()?;
    advertise(&daemon, &rogue_id, &rogue_url)?;
    // The real node's own address under an id that is not its certificate's.
    advertise(&daemon, &impostor_id, &node.url)?;
    await_advertised(&[&rogue_id, &impostor_id]).await?;

    let config = tmp.path().join("config");
    let home = tmp.path().join("home");
    let dcf = |args: &[&str]| docfed_in(&config, &home, tmp.path(), true, args);
    // Nothing else to fall back to: the device either uses what mDNS found, or nothing.
    let nowhere = "http://127.0.0.1:9";
    let not_used = |out: &Output| {
        assert_eq!(out.status.code(), Some(4), "no server: {out:?}");
    };

    // No CA pinned: nothing found over mDNS could prove it belongs to the federation, so
    // mDNS is not even listened to.
    let out = dcf(&["--fallbacks", nowhere, "--json", "search", "x"]);
    not_used(&out);
    assert!(
        stderr(&out).contains(
            "mDNS: not used: a server found over mDNS must present a certificate of the federation"
        ),
        "{}",
        stderr(&out)
    );

    // The operator's token only goes to a server named with --server.
    for args in [
        &["register", "--token", "operator-secret"][..],
        &[
            "--fallbacks",
            &rogue_url,
            "register",
            "--token",
            "operator-secret",
        ],
    ] {
        let out = dcf(args);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(stderr(&out).contains("--server"), "{}", stderr(&out));
    }

    // With the CA pinned (registering with the node named explicitly).
    ok(&dcf(&[
        "--ca", ca, "--server", &node.url, "--json", "register", "--token", TOKEN,
    ]));
    let out = dcf(&[
        "--no-mdns",
        "--fallbacks",
        &rogue_url,
        "--json",
        "search",
        "x",
    ]);
    not_used(&out);
    assert!(stderr(&out).contains("never allows plain http"), "{out:?}");
    let out = dcf(&["--server", &rogue_url, "search", "x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("never allows plain http"), "{out:?}");
    let out = dcf(&["register", "--token", TOKEN]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // The rogue (plain http://) and the impostor (a certificate of another node) are skipped.
    let rogue_said = format!(
        "not using {rogue_id} at {rogue_url}, found over mDNS: {rogue_url} is not https://"
    );
    let mut rogue_seen = false;
    let out = until_seen(
        &format!("not using {impostor_id}"),
        || {
            let out = dcf(&["--fallbacks", nowhere, "--json", "sync"]);
            rogue_seen |= stderr(&out).contains(&rogue_said);
            out
        },
        not_used,
    );
    assert!(
        stderr(&out).contains("its certificate is node cli-na's"),
        "{}",
        stderr(&out)
    );
    if !rogue_seen {
        until_seen(
            &rogue_said,
            || dcf(&["--fallbacks", nowhere, "--json", "search", "x"]),
            not_used,
        );
    }
    // Advertised under its own id, the node is used.
    advertise(&daemon, "cli-na", &node.url)?;
    await_advertised(&["cli-na"]).await?;
    let out = until_seen(
        "docfed: using cli-na",
        || dcf(&["--fallbacks", nowhere, "--json", "search", "x"]),
        |_| {},
    );
    assert!(out.status.success(), "{out:?}");

    assert_eq!(
        rogue.requests(),
        Vec::<String>::new(),
        "the rogue was asked nothing, given no token"
    );
    let _ = daemon.shutdown();
    Ok(())
}

/// `fetch` without `-o` writes the name the server chose in the current directory: it never
/// replaces a file there unless `--force` says so, and a name with folders stays in the
/// current directory.
#[tokio::test]
async fn fetch_never_overwrites_a_file_named_by_the_server_without_force() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let node = Standalone::start(&tmp.path().join("node")).await?;
    let id = publish(
        &node.url,
        TOKEN,
        "title=Notes&filename=notes.txt",
        b"from the server".to_vec(),
    )
    .await?;
    let escape = publish(
        &node.url,
        TOKEN,
        "title=Escape&filename=..%2F..%2Fescape.txt",
        b"escaping".to_vec(),
    )
    .await?;
    let cwd = tmp.path().join("work/here");
    std::fs::create_dir_all(&cwd)?;
    let config = tmp.path().join("config");
    let dcf = |args: &[&str]| {
        let mut all = vec!["--server", node.url.as_str()];
        all.extend_from_slice(args);
        docfed_in(&config, &config.join("home"), &cwd, false, &all)
    };
    let mine = cwd.join("notes.txt");
    std::fs::write(&mine, b"my own notes")?;

    let out = dcf(&["fetch", &id]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    for words in ["notes.txt", "already exists", "--force"] {
        assert!(stderr(&out).contains(words), "{words:?}: {}", stderr(&out));
    }
    assert_eq!(std::fs::read(&mine)?, b"my own notes");
    let left: Vec<_> = std::fs::read_dir(&cwd)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "nothing else written: {left:?}");

    ok(&dcf(&["--json", "fetch", &id, "--force"]));
    assert_eq!(std::fs::read(&mine)?, b"from the server");

    let v = ok(&dcf(&["--json", "fetch", &escape]));
    assert_eq!(std::fs::read(cwd.join("escape.txt"))?, b"escaping", "{v}");
    assert!(!tmp.path().join("work/escape.txt").exists());
    assert!(!tmp.path().join("escape.txt").exists());
    Ok(())
}
