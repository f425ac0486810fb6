//! Annotations with a client-chosen id: sending the same request again (a device flushing its
//! offline outbox after a lost answer) stores the annotation once.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

async fn publish(node: &TestNode, title: &str) -> TestResult<String> {
    let resp = auth(client().post(node.url(&format!("/v1/documents?title={title}"))))
        .body(pattern(7, 1000))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    Ok(resp.json::<Value>().await?["id"]
        .as_str()
        .ok_or("no id")?
        .to_owned())
}

async fn annotate(node: &TestNode, doc: &str, body: Value) -> TestResult<(StatusCode, Value)> {
    let resp = client()
        .post(node.url(&format!("/v1/documents/{doc}/annotations")))
        .json(&body)
        .send()
        .await?;
    Ok((resp.status(), resp.json().await?))
}

#[tokio::test]
async fn an_annotation_sent_twice_with_its_id_is_stored_once() -> TestResult {
    let node = TestNode::start().await?;
    let doc = publish(&node, "first").await?;
    let other = publish(&node, "second").await?;
    let aid = "0190f3a1-7c2e-7d10-9a4b-3c5d6e7f8a9b";
    let body = serde_json::json!({"text": "Page 3: typo", "author": "ana", "id": aid});

    let (status, v) = annotate(&node, &doc, body.clone()).await?;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["id"], aid);
    let (status, v) = annotate(&node, &doc, body.clone()).await?;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["id"].as_str(), v["duplicate"].as_bool()),
        (Some(aid), Some(true))
    );

    // The id of one document's annotation cannot be reused for another's.
    let (status, v) = annotate(&node, &other, body).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    let (status, v) = annotate(&node, &doc, serde_json::json!({"text": "x", "id": "nope"})).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    // Without an id each request is a new annotation, as before.
    let (status, v) = annotate(&node, &doc, serde_json::json!({"text": "again"})).await?;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_ne!(v["id"], aid);

    let list: Value = auth(client().get(node.url(&format!("/v1/annotations?doc_id={doc}"))))
        .send()
        .await?
        .json()
        .await?;
    let ids: Vec<&str> = list["annotations"]
        .as_array()
        .ok_or("no list")?
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids.iter().filter(|i| **i == aid).count(), 1, "{list}");
    assert_eq!(ids.len(), 2, "{list}");
    Ok(())
}
