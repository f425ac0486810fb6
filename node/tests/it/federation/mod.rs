//! A real federation on the shared broker: routing, redundancy, dedupe, tombstones, dead
//! letters, failover pair. The helpers the scenarios share are here; the scenarios by concern
//! in the submodules.

mod annotations;
mod at_rest;
mod cross_region;
mod dead_letters;
mod failures;
mod inline;
mod memory;
mod presence;
mod reachback;
mod routing;
mod slow_clients;
mod tls;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::federation::{queue_depth, Federation, ROLES};
use crate::common::*;

const T: Duration = Duration::from_secs(60);

async fn publish(
    fed: &Federation,
    primary: &str,
    query: &str,
    body: Vec<u8>,
) -> TestResult<String> {
    let resp = auth(client().post(fed.node(primary).url(&format!("/v1/documents?{query}"))))
        .body(body)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED, "{}", resp.text().await?);
    Ok(resp.json::<Value>().await?["id"]
        .as_str()
        .unwrap()
        .to_owned())
}

async fn content(node: &TestNode, id: &str) -> TestResult<(StatusCode, Vec<u8>)> {
    let resp = client()
        .get(node.url(&format!("/v1/documents/{id}/content")))
        .send()
        .await?;
    Ok((resp.status(), resp.bytes().await?.to_vec()))
}

/// [`eventually`] for a condition whose check has no error of its own.
async fn wait_until_async<F, Fut>(timeout: Duration, what: &str, mut f: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    crate::common::eventually(timeout, what, || {
        let check = f();
        async move { Ok(check.await) }
    })
    .await
}
