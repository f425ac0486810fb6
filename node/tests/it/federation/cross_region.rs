//! Reads of another region's documents: capped, collapsed into one transfer, abandoned without
//! readers.

use super::*;

/// Concurrent requests at na for content held only by eu and asia share one upstream transfer.
/// Cross-region transfers started by anonymous readers are bounded: beyond the cap a request
/// gets 503 instead of starting another pull, and a transfer whose reader went away is
/// abandoned (no device flagged the document), which frees its slot.
#[tokio::test]
async fn cross_region_transfers_are_capped_and_abandoned_without_readers() -> TestResult {
    use futures::StreamExt;
    let fed = Federation::start(&["--pull-rate-limit", "1MB", "--max-ondemand-pulls", "1"]).await?;
    let size = 12_000_000;
    let mut ids = Vec::new();
    for seed in [91, 92] {
        let q = format!("title=Regional%20eu%20{seed}&scope=region:eu");
        ids.push(publish(&fed, "primary-a", &q, pattern(seed, size)).await?);
    }
    for id in &ids {
        fed.await_meta("eu", id, T, |m| m["available_here"] == true)
            .await?;
        fed.await_meta("na", id, T, |m| m["available_here"] == false)
            .await?;
    }
    let url = |id: &str| fed.node("na").url(&format!("/v1/documents/{id}/content"));
    // A reader starts a transfer of the first document, reads a little and goes away.
    let resp = client().get(url(&ids[0])).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    body.next().await.ok_or("no bytes")??;
    // The one slot is taken: the second document cannot start a transfer now.
    let resp = client().get(url(&ids[1])).send().await?;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(body);
    fed.await_metric("na", "docfed_ondemand_abandoned_total", 1)
        .await?;
    // The slot is free again.
    wait_until_async(T, "the second document to be served", || async {
        let resp = client().get(url(&ids[1])).send().await.ok()?;
        (resp.status() == StatusCode::OK).then_some(())
    })
    .await?;
    let pulled = fed.metric("na", "docfed_bytes_pulled_total").await?;
    assert!(
        pulled < 2 * size as u64,
        "{pulled} bytes pulled: the abandoned transfer ran to its end"
    );
    Ok(())
}

#[tokio::test]
async fn cross_region_requests_collapse_into_one_transfer() -> TestResult {
    // Paced links keep the transfer open long enough for every request to join it.
    let fed = Federation::start(&["--pull-rate-limit", "20MB"]).await?;
    let size = 30_000_000;
    let data = pattern(81, size);
    let id = publish(
        &fed,
        "primary-a",
        "title=Regional%20eu&scope=region:eu",
        data.clone(),
    )
    .await?;
    for role in ["eu", "asia"] {
        fed.await_meta(role, &id, T, |m| m["available_here"] == true)
            .await?;
    }
    let meta = fed.await_meta("na", &id, T, |_| true).await?;
    assert_eq!(meta["available_here"], false);
    let before = fed.metric("na", "docfed_bytes_pulled_total").await?;
    let url = fed.node("na").url(&format!("/v1/documents/{id}/content"));
    let requests = (0..4).map(|_| {
        let url = url.clone();
        async move {
            let resp = client().get(&url).send().await?;
            Ok::<_, reqwest::Error>((resp.status(), resp.bytes().await?))
        }
    });
    for answer in futures::future::join_all(requests).await {
        let (status, body) = answer?;
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        );
        assert!(body == data, "content through na differs");
    }
    let pulled = fed.metric("na", "docfed_bytes_pulled_total").await? - before;
    assert_eq!(pulled, size as u64, "four requests, one upstream transfer");
    // Not flagged: na did not keep it.
    let meta = fed.await_meta("na", &id, T, |_| true).await?;
    assert_eq!(meta["available_here"], false);
    Ok(())
}

/// Open enrolment lets anyone register devices, and each device may flag up to its quota of
/// other regions' content: without a total, enough anonymous devices would make na keep every
/// region's content. Past `--max-flagged-bytes` a flag of content na would not keep is
/// refused; content na keeps anyway, and a document already flagged, cost nothing more.
#[tokio::test]
async fn devices_together_cannot_make_a_node_keep_more_than_its_total() -> TestResult {
    let fed = Federation::start(&["--open-enrollment", "--max-flagged-bytes", "1500"]).await?;
    let mut docs = Vec::new();
    for (name, scope) in [
        ("eu-a", "region:eu"),
        ("eu-b", "region:eu"),
        ("all", "global"),
    ] {
        let q = format!("title={name}&scope={scope}");
        docs.push(publish(&fed, "primary-a", &q, pattern(7, 1000)).await?);
    }
    for id in &docs {
        fed.await_meta("na", id, T, |_| true).await?;
    }
    let (eu_a, eu_b, global) = (&docs[0], &docs[1], &docs[2]);
    let na = fed.node("na");
    // Anyone: no token.
    let register = || async {
        let resp = client()
            .post(na.url("/v1/devices"))
            .json(&serde_json::json!({"name": "anonymous"}))
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let v: Value = resp.json().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((
            v["device"].as_str().ok_or("device")?.to_owned(),
            v["secret"].as_str().ok_or("secret")?.to_owned(),
        ))
    };
    let flag = |device: &(String, String), id: &str, on: bool| {
        let url = na.url(&format!("/v1/devices/{}/flags/{id}", device.0));
        let req = if on {
            client().put(url)
        } else {
            client().delete(url)
        };
        req.bearer_auth(device.1.clone()).send()
    };
    let first = register().await?;
    let second = register().await?;
    assert_eq!(
        flag(&first, eu_a, true).await?.status(),
        StatusCode::CREATED
    );
    let refused = flag(&first, eu_b, true).await?;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = refused.json().await?;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("max_flagged_bytes")),
        "{body}"
    );
    // Another device gets no fresh allowance: the total is the node's.
    assert_eq!(
        flag(&second, eu_b, true).await?.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // What is counted already, and what na keeps for its own region anyway, cost nothing.
    assert_eq!(
        flag(&second, eu_a, true).await?.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        flag(&second, global, true).await?.status(),
        StatusCode::CREATED
    );
    // Room comes back only when no device flags the document any more.
    assert_eq!(flag(&first, eu_a, false).await?.status(), StatusCode::OK);
    assert_eq!(
        flag(&first, eu_b, true).await?.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(flag(&second, eu_a, false).await?.status(), StatusCode::OK);
    assert_eq!(
        flag(&first, eu_b, true).await?.status(),
        StatusCode::CREATED
    );
    Ok(())
}
