//! Playing a federation member from a test: versions as a primary publishes them, notifications
//! as a relay passes them on, and a reader waiting for a node to serve what it pulls.

use std::time::{Duration, Instant};

use docfed_shared::messages::{Body, Envelope, Notification};
use docfed_shared::wire::{ChangeKind, DocumentVersion, Timestamp};
use reqwest::StatusCode;

use super::federation::Federation;
use super::{client, TestResult};

/// Version 1 of a new global document published at primary-a, unsigned: set what the test
/// varies, then [`sign`] it (or not).
pub fn version(fed: &Federation, title: &str, md5: &str, size: u64) -> TestResult<DocumentVersion> {
    Ok(DocumentVersion {
        id: docfed_shared::DocId::new(),
        version: 1,
        origin: fed.id("primary-a"),
        title: title.into(),
        description: String::new(),
        tags: vec![],
        filename: "f.bin".into(),
        source: String::new(),
        scope: docfed_shared::Scope::Global,
        content_type: "application/octet-stream".into(),
        md5: md5.parse()?,
        size,
        deleted: false,
        created_at: Timestamp::now(),
        author: String::new(),
        sha256: None,
        signature: None,
        lazy: false,
    })
}

/// `d` signed by `role`'s key: a genuine version when `role` is its origin.
pub fn sign(fed: &Federation, role: &str, mut d: DocumentVersion) -> TestResult<DocumentVersion> {
    d.signature = Some(fed.key(role)?.sign(&d.signing_input()));
    Ok(d)
}

/// The notification `from` (a node id) sends about `d`, whose bytes are at `origin_url`.
pub fn notification(from: &str, d: DocumentVersion, origin_url: String) -> Envelope {
    Envelope::new(
        format!("n:{}:{}:x", d.id, d.version),
        from,
        Body::Notify(Box::new(Notification {
            document: d,
            kind: ChangeKind::Published,
            origin_url,
            targets: vec![],
            content: None,
        })),
    )
}

/// Puts `env` into `to`'s inbox, signed with `from`'s key, as the member `from` would.
pub async fn relay(fed: &Federation, from: &str, to: &str, env: &Envelope) -> TestResult {
    let conn =
        lapin::Connection::connect(fed.broker(), lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    fed.send_to_inbox(&ch, to, &env.to_bytes(), Some(from))
        .await?;
    let _ = conn.close(200, "sent".into()).await;
    Ok(())
}

/// GETs `url` until it answers 200 (within a minute) and returns that response, for a reader
/// that joins a transfer as soon as the node serves it.
pub async fn await_ok(url: &str) -> TestResult<reqwest::Response> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = client().get(url).send().await?;
        if resp.status() == StatusCode::OK {
            return Ok(resp);
        }
        if Instant::now() > deadline {
            return Err(format!("{url} never served: {}", resp.status()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `/v1/health` route of an intermediate `id` played by the test, so the node below takes
/// it for up.
pub fn intermediate_health<S: Clone + Send + Sync + 'static>(
    id: String,
) -> axum::routing::MethodRouter<S> {
    axum::routing::get(move || {
        let node = id.clone();
        async move {
            axum::Json(serde_json::json!({
                "node": node, "tier": "intermediate", "region": null, "status": "ok"
            }))
        }
    })
}
