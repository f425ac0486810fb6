//! `GET /v1/events`: a device's stream hears of a publication within seconds; replay with
//! `Last-Event-ID`; no stream without a device secret or the token; a cap on open streams.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

const T: Duration = Duration::from_secs(10);

async fn register(node: &TestNode) -> TestResult<String> {
    let resp = auth(client().post(node.url("/v1/devices")))
        .json(&serde_json::json!({"name": "events"}))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    Ok(resp.json::<Value>().await?["secret"]
        .as_str()
        .ok_or("no secret")?
        .to_owned())
}

async fn publish(node: &TestNode) -> TestResult<String> {
    let resp = auth(client().post(node.url("/v1/documents?title=pushed")))
        .body(pattern(3, 1000))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    Ok(resp.json::<Value>().await?["id"]
        .as_str()
        .ok_or("no id")?
        .to_owned())
}

async fn open(
    node: &TestNode,
    bearer: Option<&str>,
    last_id: Option<&str>,
) -> TestResult<reqwest::Response> {
    let mut req = client().get(node.url("/v1/events"));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(l) = last_id {
        req = req.header("Last-Event-ID", l);
    }
    Ok(req.send().await?)
}

/// Reads the stream until an event whose text contains `needle`; returns that event's text.
async fn next_event(resp: &mut reqwest::Response, needle: &str) -> TestResult<String> {
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if event.contains(needle) {
                return Ok(event);
            }
            continue;
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .map_err(|_| format!("no event with {needle:?} within {T:?}; got {buf:?}"))??
            .ok_or("stream ended")?;
        buf.push_str(std::str::from_utf8(&chunk)?);
    }
}

#[tokio::test]
async fn a_device_hears_of_a_publication_and_catches_up_after_reconnecting() -> TestResult {
    let node = TestNode::start().await?;
    let secret = register(&node).await?;

    let mut stream = open(&node, Some(&secret), None).await?;
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(stream.headers()["content-type"]
        .to_str()?
        .starts_with("text/event-stream"));
    publish(&node).await?;
    let event = next_event(&mut stream, "event: changed").await?;
    assert!(event.contains("id: 1\n"), "{event:?}");
    assert!(event.contains(r#"data: {"seq":1}"#), "{event:?}");
    drop(stream);

    // Missed while disconnected: the first event says where the feed is.
    publish(&node).await?;
    let mut stream = open(&node, Some(&secret), Some("1")).await?;
    let event = next_event(&mut stream, "event:").await?;
    assert!(
        event.contains("event: changed") && event.contains("id: 2\n"),
        "{event:?}"
    );

    // The operator may listen too.
    let resp = open(&node, Some(TOKEN), None).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn no_stream_without_a_secret_and_at_most_the_cap() -> TestResult {
    let node = TestNode::start_with(&["--max-event-streams", "1"]).await?;
    assert_eq!(
        open(&node, None, None).await?.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        open(&node, Some("not-a-secret"), None).await?.status(),
        StatusCode::UNAUTHORIZED
    );
    let secret = register(&node).await?;
    let first = open(&node, Some(&secret), None).await?;
    assert_eq!(first.status(), StatusCode::OK);
    let second = open(&node, Some(&secret), None).await?;
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(first);
    // The slot is free again once the first stream is gone.
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    let deadline = tokio::time::Instant::now() + T;
    while status == StatusCode::SERVICE_UNAVAILABLE && tokio::time::Instant::now() < deadline {
        status = open(&node, Some(&secret), None).await?.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(status, StatusCode::OK);
    Ok(())
}

/// One device's secret opening stream after stream must not take every slot of the node: past
/// its own share it is refused (429), and another device still gets a stream.
#[tokio::test]
async fn one_device_cannot_hold_every_stream() -> TestResult {
    let node = TestNode::start_with(&[
        "--max-event-streams",
        "10",
        "--max-event-streams-per-device",
        "2",
    ])
    .await?;
    let greedy = register(&node).await?;
    let mut held = Vec::new();
    for _ in 0..2 {
        let s = open(&node, Some(&greedy), None).await?;
        assert_eq!(s.status(), StatusCode::OK);
        held.push(s);
    }
    for _ in 0..20 {
        let refused = open(&node, Some(&greedy), None).await?;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let body: Value = refused.json().await?;
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("max_event_streams_per_device")),
            "{body}"
        );
    }
    let other = register(&node).await?;
    assert_eq!(
        open(&node, Some(&other), None).await?.status(),
        StatusCode::OK,
        "another device must still get a stream"
    );
    // A closed stream gives the device its slot back.
    held.pop();
    let mut status = StatusCode::TOO_MANY_REQUESTS;
    let deadline = tokio::time::Instant::now() + T;
    while status == StatusCode::TOO_MANY_REQUESTS && tokio::time::Instant::now() < deadline {
        status = open(&node, Some(&greedy), None).await?.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(status, StatusCode::OK);
    Ok(())
}
