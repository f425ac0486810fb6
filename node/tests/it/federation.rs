//! A real federation on the shared broker: routing, redundancy, dedupe, tombstones, dead
//! letters, failover pair.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::federation::Federation;
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

#[tokio::test]
async fn global_and_regional_documents_reach_the_right_nodes_once() -> TestResult {
    let fed = Federation::start(&[]).await?;
    let global = pattern(11, 3_000_000);
    let regional = pattern(12, 1_500_000);
    let gid = publish(
        &fed,
        "primary-a",
        "title=Global%20doc&filename=g.bin",
        global.clone(),
    )
    .await?;
    let rid = publish(
        &fed,
        "primary-a",
        "title=Tide%20tables&scope=region:eu",
        regional.clone(),
    )
    .await?;

    for role in ["na", "eu", "asia"] {
        fed.await_meta(role, &gid, T, |m| m["available_here"] == true)
            .await?;
        let (status, body) = content(fed.node(role), &gid).await?;
        assert_eq!(status, StatusCode::OK, "{role}");
        assert!(body == global, "{role}: global content differs");
        // Every regional directory knows the regional document.
        fed.await_meta(role, &rid, T, |m| m["title"] == "Tide tables")
            .await?;
    }
    // Content of region:eu goes to eu and eu's backup (asia), not to na.
    for role in ["eu", "asia"] {
        fed.await_meta(role, &rid, T, |m| m["available_here"] == true)
            .await?;
        assert!(content(fed.node(role), &rid).await?.1 == regional, "{role}");
    }
    let na = fed.await_meta("na", &rid, T, |_| true).await?;
    assert_eq!(na["available_here"], false);
    // The other primary replicated both.
    fed.await_meta("primary-b", &gid, T, |m| m["available_here"] == true)
        .await?;
    fed.await_meta("primary-b", &rid, T, |m| m["available_here"] == true)
        .await?;

    // Two notifications reached each regional node (one per intermediate), one transfer each.
    wait_for_metric(&fed, "na", "docfed_notifications_deduplicated_total", 2).await?;
    for role in ["na", "eu", "asia"] {
        let pulled = fed.metric(role, "docfed_bytes_pulled_total").await?;
        let expected = global.len() as u64
            + if role == "na" {
                0
            } else {
                regional.len() as u64
            };
        assert_eq!(pulled, expected, "{role} pulled more than one copy");
        assert_eq!(
            fed.metric(role, "docfed_fetches_completed_total").await?,
            if role == "na" { 1 } else { 2 }
        );
    }

    // Tombstones propagate everywhere.
    let resp = auth(client().delete(fed.node("primary-a").url(&format!("/v1/documents/{gid}"))))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    for role in ["primary-b", "mid-1", "mid-2", "na", "eu", "asia"] {
        fed.await_meta(role, &gid, T, |m| m["deleted"] == true)
            .await?;
    }
    let (status, _) = content(fed.node("na"), &gid).await?;
    assert_eq!(status, StatusCode::GONE);

    // The primary knows who holds what.
    wait_until_async(T, "receipts from every node", || async {
        let p: Value = client()
            .get(
                fed.node("primary-a")
                    .url(&format!("/v1/documents/{rid}/propagation")),
            )
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (p["not_yet_current"].as_array()?.is_empty()).then_some(())
    })
    .await?;
    Ok(())
}

async fn wait_for_metric(fed: &Federation, role: &str, name: &str, at_least: u64) -> TestResult {
    let deadline = std::time::Instant::now() + T;
    loop {
        let v = fed.metric(role, name).await?;
        if v >= at_least {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{role}: {name} = {v} < {at_least}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until_async<F, Fut>(timeout: Duration, what: &str, mut f: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f().await.is_some() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
