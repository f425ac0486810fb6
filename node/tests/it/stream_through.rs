//! Stream-through across a broken connection: a reader following a pull in progress is not cut
//! off because the pull's connection to its source broke, when the pull can resume.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use futures::StreamExt;
use reqwest::StatusCode;
use sha2::Digest;
use tokio::sync::Notify;

use crate::common::federation::Federation;
use crate::common::relay;
use crate::common::*;

const SIZE: usize = 4 * 1024 * 1024;
const CUT_AT: usize = SIZE / 4;

/// What na's parent saw: the `Range` header of every request for the content, in order.
type Requests = Arc<Mutex<Vec<Option<String>>>>;

/// na's parent (mid-1, played by the test) breaks its first response off after a quarter of
/// the bytes, once a reader follows na's pull. na resumes from the same parent at once with a
/// `Range` request, and the reader, who never reconnects, gets every byte.
#[tokio::test]
async fn a_reader_outlives_a_broken_upstream_connection() -> TestResult {
    let mut fed = Federation::start_with_impostor(&[], "mid-1").await?;
    let listener = fed.impostor.take().ok_or("no impostor socket")?;
    let mid1_url = format!("http://{}", listener.local_addr()?);
    let data = Arc::new(pattern(77, SIZE));
    let md5 = md5_hex(&data);

    let requests: Requests = Arc::default();
    let reader_attached = Arc::new(Notify::new());
    type St = (Requests, Arc<Notify>, Arc<Vec<u8>>, Arc<AtomicUsize>);
    let first_cut = Arc::new(AtomicUsize::new(0));
    let state: St = (
        requests.clone(),
        reader_attached.clone(),
        data.clone(),
        first_cut.clone(),
    );
    let app = axum::Router::new()
        .route("/v1/health", relay::intermediate_health(fed.id("mid-1")))
        .route(
            "/v1/objects/{md5}",
            axum::routing::get(
                |State(s): State<St>, Path(_m): Path<String>, headers: HeaderMap| async move {
                    let range = headers
                        .get("range")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    s.0.lock().unwrap().push(range.clone());
                    let from = range
                        .as_deref()
                        .and_then(|r| r.strip_prefix("bytes="))
                        .and_then(|r| r.strip_suffix('-'))
                        .and_then(|n| n.parse::<usize>().ok());
                    match from {
                        None if s.3.fetch_add(1, Ordering::SeqCst) == 0 => {
                            // First attempt: a quarter of the bytes, then (once a reader follows
                            // na's pull) a broken connection.
                            let head = bytes::Bytes::copy_from_slice(&s.2[..CUT_AT]);
                            let attached = s.1.clone();
                            let parts = futures::stream::iter([0, 1]).then(move |i| {
                                let head = head.clone();
                                let attached = attached.clone();
                                async move {
                                    if i == 0 {
                                        Ok(head)
                                    } else {
                                        attached.notified().await;
                                        Err(std::io::Error::other("connection broken"))
                                    }
                                }
                            });
                            axum::body::Body::from_stream(parts).into_response()
                        }
                        None => axum::body::Body::from(s.2.to_vec()).into_response(),
                        Some(from) if from < SIZE => (
                            StatusCode::PARTIAL_CONTENT,
                            [("content-range", format!("bytes {from}-{}/{SIZE}", SIZE - 1))],
                            s.2[from..].to_vec(),
                        )
                            .into_response(),
                        Some(_) => StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
                    }
                },
            ),
        )
        .with_state(state);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // A genuine version (signed by primary-a), announced by mid-1 as a relay would.
    let mut d = relay::version(&fed, "broken upstream", &md5, SIZE as u64)?;
    d.sha256 = Some(hex::encode(sha2::Sha256::digest(&*data)).parse()?);
    let d = relay::sign(&fed, "primary-a", d)?;
    let doc_id = d.id.to_string();
    let env = relay::notification(&fed.id("mid-1"), d, mid1_url);
    relay::relay(&fed, "mid-1", "na", &env).await?;

    // The reader joins na's pull while the first connection is open, reads some bytes, and
    // only then does mid-1 break that connection.
    let object = fed.node("na").url(&format!("/v1/objects/{md5}"));
    let resp = relay::await_ok(&object).await?;
    let mut body = resp.bytes_stream();
    let mut got = Vec::with_capacity(SIZE);
    let mut released = false;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("reader cut after {} bytes: {e}", got.len()))?;
        got.extend_from_slice(&chunk);
        if !released {
            released = true;
            reader_attached.notify_one();
        }
    }
    assert_eq!(got.len(), SIZE, "the reader's body is short");
    assert!(got == *data, "the reader got other bytes");
    let seen = requests.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "requests for the content: {seen:?}");
    assert_eq!(seen[0], None);
    assert_eq!(
        seen[1].as_deref(),
        Some(format!("bytes={CUT_AT}-").as_str()),
        "the pull did not resume where it broke"
    );
    fed.await_meta("na", &doc_id, Duration::from_secs(30), |m| {
        m["available_here"] == true
    })
    .await?;
    server.abort();
    Ok(())
}
