//! Trust boundaries: input from anonymous clients and from other nodes is bounded, and a
//! node contacts only the places its topology names.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

const GIB: u64 = 1 << 30;
/// Size of the corrupt document of the hostile-member test.
const CORRUPT_SIZE: u64 = 200_000;

/// Publishes a small document and returns its id.
async fn publish_small(node: &TestNode) -> TestResult<String> {
    let resp = auth(client().post(node.url("/v1/documents?title=t")))
        .body("hello")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    Ok(resp.json::<Value>().await?["id"]
        .as_str()
        .ok_or("no id")?
        .to_owned())
}

/// A client streams 1 GiB of JSON whitespace (valid JSON so far) as an annotation without a
/// length: the node answers 413 after a bounded read, and its memory does not grow.
#[tokio::test]
async fn an_endless_annotation_body_gets_413_in_constant_memory() -> TestResult {
    let node = TestNode::start().await?;
    let id = publish_small(&node).await?;
    let before = node.peak_rss();
    let addr = node.url("").trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST /v1/documents/{id}/annotations HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 1 << 20];
        let framed = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk,
            b"\r\n".to_vec(),
        ]
        .concat();
        let mut sent = 0u64;
        while sent < GIB {
            // The node stops reading once it has refused: a write error ends the attack.
            if wr.write_all(&framed).await.is_err() {
                break;
            }
            sent += 1 << 20;
        }
        Ok::<u64, std::io::Error>(sent)
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(60), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match rd.read(&mut buf).await? {
                0 => break,
                n => answer.extend_from_slice(&buf[..n]),
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await??;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "answer: {answer}");
    let sent = writer.await??;
    assert!(sent < GIB, "the node read the whole gigabyte");
    let peak = node.peak_rss();
    assert!(
        peak < before + 48 * 1024 * 1024,
        "peak RSS grew from {before} to {peak} bytes"
    );
    let list: Value = auth(client().get(node.url("/v1/annotations?state=any")))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        list["annotations"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );
    Ok(())
}

/// An announced length over the limit is refused before the body is read.
#[tokio::test]
async fn an_announced_oversized_annotation_gets_413() -> TestResult {
    let node = TestNode::start().await?;
    let id = publish_small(&node).await?;
    let text = "a".repeat(300 * 1024);
    let resp = client()
        .post(node.url(&format!("/v1/documents/{id}/annotations")))
        .json(&serde_json::json!({ "text": text }))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = resp.json().await?;
    assert_eq!(body["code"], "too_large", "{body}");
    // A normal one still works.
    let resp = client()
        .post(node.url(&format!("/v1/documents/{id}/annotations")))
        .json(&serde_json::json!({ "text": "fine" }))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    Ok(())
}

/// Readers' notes to authors and operator data need the token; presence stays public (devices
/// use it to find other regional nodes).
#[tokio::test]
async fn operator_and_author_data_need_the_token() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    for path in ["/v1/annotations", "/v1/annotations?state=any", "/metrics"] {
        let resp = c.get(node.url(path)).send().await?;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let resp = auth(c.get(node.url(path))).send().await?;
        assert_eq!(resp.status(), StatusCode::OK, "{path} with the token");
    }
    let anonymous: Value = c.get(node.url("/v1/peers")).send().await?.json().await?;
    assert!(anonymous["peers"].is_array(), "{anonymous}");
    assert!(anonymous.get("outbox_depth").is_none(), "{anonymous}");
    let operator: Value = auth(c.get(node.url("/v1/peers")))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(operator["outbox_depth"], 0, "{operator}");
    assert!(anonymous.get("tasks").is_none(), "{anonymous}");
    assert_eq!(operator["tasks"][0]["name"], "retention", "{operator}");
    let metrics = auth(c.get(node.url("/metrics")))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("docfed_task_up{node=\"standalone\",task=\"retention\"} 1"),
        "{metrics}"
    );
    Ok(())
}

/// What the impostor does when asked for an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehaviour {
    /// Sends zeros for ever.
    Endless,
    /// Sends a byte every half second.
    Trickle,
    /// Redirects to another server.
    Redirect,
    /// Would serve it, but the declared size can never fit on the disk.
    Huge,
    /// Sends the declared size of wrong bytes, the last one a second after the others.
    Corrupt,
}

/// A member of the federation (mid-1, na's parent) turns hostile: it announces documents and
/// serves their content badly. na's pulls stop at the declared size, give up on a source that
/// trickles, never follow a redirect, and never start a pull that would cross the disk reserve.
#[tokio::test]
async fn pulls_from_a_hostile_member_are_bounded() -> TestResult {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::response::IntoResponse;
    use futures::StreamExt;

    use crate::common::federation::Federation;
    use crate::common::relay;

    let victim = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let victim_url = format!("http://{}", victim.local_addr()?);
    let victim_hits = Arc::new(AtomicUsize::new(0));
    let hits = victim_hits.clone();
    let victim_task = tokio::spawn(async move {
        while let Ok((_c, _)) = victim.accept().await {
            hits.fetch_add(1, Ordering::SeqCst);
        }
    });

    let mut fed = Federation::start_with_impostor(&["--pull-stall-timeout", "2s"], "mid-1").await?;
    let listener = fed.impostor.take().ok_or("no impostor socket")?;
    let mid1_url = format!("http://{}", listener.local_addr()?);
    let declared: u64 = 1024 * 1024;
    let md5 = |c: char| c.to_string().repeat(32);
    let plan: Vec<(Misbehaviour, String, u64)> = vec![
        (Misbehaviour::Endless, md5('e'), declared),
        (Misbehaviour::Trickle, md5('a'), declared),
        (Misbehaviour::Redirect, md5('b'), declared),
        (Misbehaviour::Huge, md5('c'), 1 << 55),
        (Misbehaviour::Corrupt, md5('d'), CORRUPT_SIZE),
    ];
    type Requests = Arc<Mutex<HashMap<String, usize>>>;
    let requests: Requests = Arc::default();
    let behaviour: HashMap<String, Misbehaviour> =
        plan.iter().map(|(b, m, _)| (m.clone(), *b)).collect();
    let state = (requests.clone(), Arc::new(behaviour), victim_url.clone());
    type St = (Requests, Arc<HashMap<String, Misbehaviour>>, String);
    let app = axum::Router::new()
        .route("/v1/health", relay::intermediate_health(fed.id("mid-1")))
        .route(
            "/v1/objects/{md5}",
            axum::routing::get(|State(s): State<St>, Path(m): Path<String>| async move {
                *s.0.lock().unwrap().entry(m.clone()).or_default() += 1;
                match s.1.get(&m) {
                    Some(Misbehaviour::Endless) => {
                        axum::body::Body::from_stream(futures::stream::repeat_with(|| {
                            Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 65536]))
                        }))
                        .into_response()
                    }
                    Some(Misbehaviour::Trickle) => {
                        axum::body::Body::from_stream(futures::stream::unfold((), |()| async {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x")), ()))
                        }))
                        .into_response()
                    }
                    Some(Misbehaviour::Corrupt) => axum::body::Body::from_stream(
                        futures::stream::iter([0u64, 1]).then(|i| async move {
                            if i == 0 {
                                Ok::<_, std::io::Error>(bytes::Bytes::from(vec![
                                    7u8;
                                    CORRUPT_SIZE
                                        as usize
                                        - 1
                                ]))
                            } else {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                Ok(bytes::Bytes::from_static(b"7"))
                            }
                        }),
                    )
                    .into_response(),
                    Some(Misbehaviour::Redirect) => (
                        StatusCode::FOUND,
                        [("location", format!("{}/v1/objects/{m}", s.2))],
                    )
                        .into_response(),
                    _ => StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        .with_state(state);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // The versions are genuine (signed by primary-a, as a relay would pass them on); only the
    // bytes mid-1 serves are hostile.
    for (_, m, size) in &plan {
        let mut d = relay::version(&fed, &format!("hostile {m}"), m, *size)?;
        d.sha256 = Some("0".repeat(64).parse()?);
        let d = relay::sign(&fed, "primary-a", d)?;
        let env = relay::notification(&fed.id("mid-1"), d, mid1_url.clone());
        // The impostor holds mid-1's real key: a compromised member, not an outsider.
        relay::relay(&fed, "mid-1", "na", &env).await?;
    }

    // A reader following na's pull of the corrupt content (stream-through) gets every byte
    // but the last, then a cut connection: never a complete body that fails its MD5.
    let object = fed.node("na").url(&format!("/v1/objects/{}", md5('d')));
    let resp = relay::await_ok(&object).await?;
    let mut body = resp.bytes_stream();
    let mut got = 0u64;
    let mut cut = false;
    while let Some(chunk) = futures::StreamExt::next(&mut body).await {
        match chunk {
            Ok(c) => got += c.len() as u64,
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the body ended cleanly after {got} bytes");
    assert!(got < CORRUPT_SIZE, "all {got} unverified bytes were served");

    fed.await_metric("na", "docfed_pulls_oversized_total", 1)
        .await?;
    fed.await_metric("na", "docfed_pulls_stalled_total", 1)
        .await?;
    fed.await_metric("na", "docfed_pulls_waiting_for_space_total", 2)
        .await?;
    let requested = |m: &str| requests.lock().unwrap().get(m).copied().unwrap_or(0);
    wait_until(
        Duration::from_secs(60),
        "the redirect to be tried twice",
        || requested(&md5('b')) >= 2,
    )
    .await?;
    // Cut at the declared size: the partial file of the endless source never grows past it.
    let partial = fed.node("na").dir.join("partial").join(md5('e'));
    let held = std::fs::metadata(&partial).map_or(0, |m| m.len());
    assert!(
        held <= declared,
        "{held} bytes kept of a {declared}-byte document"
    );
    assert_eq!(
        requested(&md5('c')),
        0,
        "a pull that cannot fit was started"
    );
    assert_eq!(
        victim_hits.load(Ordering::SeqCst),
        0,
        "a redirect was followed"
    );
    server.abort();
    victim_task.abort();
    Ok(())
}

/// A client that connects and sends nothing, or half a header, loses its connection after the
/// header-read timeout instead of holding it (and a task and a descriptor) for ever.
#[tokio::test]
async fn slow_clients_are_cut_off() -> TestResult {
    let node = TestNode::start_with(&["--header-read-timeout", "1s"]).await?;
    let addr = node.url("").trim_start_matches("http://").to_owned();
    for opening in [&b""[..], b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: "] {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(opening).await?;
        let started = std::time::Instant::now();
        let mut sink = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut sink)).await??;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "held for {:?}",
            started.elapsed()
        );
    }
    // Normal requests are unaffected.
    let resp = client().get(node.url("/v1/health")).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(())
}

/// Content that belongs only to deleted documents is served to nobody anonymous (410), but to
/// the author (the token) and to the federation's nodes: a pull signed with a node's key, fresh
/// and its own, still gets it (history, pulls in flight); a stale or foreign signature does not.
#[tokio::test]
async fn deleted_content_is_served_only_to_authors_and_nodes() -> TestResult {
    use docfed_shared::keys::{
        pull_signing_input, PULL_NODE_HEADER, PULL_SIGNATURE_HEADER, PULL_TIME_HEADER,
    };

    use crate::common::federation::Federation;

    let fed = Federation::start(&[]).await?;
    let resp = auth(client().post(fed.node("primary-a").url("/v1/documents?title=gone")))
        .body("soon deleted")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let p: Value = resp.json().await?;
    let (id, md5) = (p["id"].as_str().unwrap(), p["md5"].as_str().unwrap());
    fed.await_meta("na", id, Duration::from_secs(60), |m| {
        m["available_here"] == true
    })
    .await?;
    let object = fed.node("na").url(&format!("/v1/objects/{md5}"));
    assert_eq!(client().get(&object).send().await?.status(), StatusCode::OK);

    let resp = auth(client().delete(fed.node("primary-a").url(&format!("/v1/documents/{id}"))))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    fed.await_meta("na", id, Duration::from_secs(60), |m| m["deleted"] == true)
        .await?;

    let resp = client().get(&object).send().await?;
    assert_eq!(resp.status(), StatusCode::GONE);
    assert_eq!(resp.json::<Value>().await?["code"], "deleted");
    let resp = auth(client().get(&object)).send().await?;
    assert_eq!(resp.bytes().await?.as_ref(), b"soon deleted");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let signed = |role: &str, signer: &str, at: u64| -> TestResult<reqwest::RequestBuilder> {
        let sig = fed
            .key(signer)?
            .sign(&pull_signing_input(&fed.id(role), md5, at));
        Ok(client()
            .get(&object)
            .header(PULL_NODE_HEADER, fed.id(role))
            .header(PULL_TIME_HEADER, at)
            .header(PULL_SIGNATURE_HEADER, sig))
    };
    let resp = signed("mid-1", "mid-1", now)?.send().await?;
    assert_eq!(resp.status(), StatusCode::OK, "a peer's signed pull");
    assert_eq!(resp.bytes().await?.as_ref(), b"soon deleted");
    let resp = signed("mid-1", "mid-1", now - 3600)?.send().await?;
    assert_eq!(resp.status(), StatusCode::GONE, "a stale signature");
    let resp = signed("mid-1", "mid-2", now)?.send().await?;
    assert_eq!(resp.status(), StatusCode::GONE, "another node's key");
    Ok(())
}
