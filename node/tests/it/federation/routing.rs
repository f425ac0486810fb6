//! Routing: global and regional documents reach the right nodes once, delivery outlives stopped
//! nodes, and presence finds peers and notices a dead one.

use super::*;

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
    fed.await_metric("na", "docfed_notifications_deduplicated_total", 2)
        .await?;
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
            .json_or_none()
            .await?;
        (p["not_yet_current"].as_array()?.is_empty()).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn delivery_survives_a_stopped_intermediate_and_a_stopped_regional_node() -> TestResult {
    let mut fed = Federation::start(&[]).await?;
    fed.node_mut("mid-1").stop().await?;
    fed.node_mut("asia").stop().await?;
    let data = pattern(21, 2_000_000);
    let id = publish(&fed, "primary-b", "title=During%20outage", data.clone()).await?;
    for role in ["na", "eu"] {
        fed.await_meta(role, &id, T, |m| m["available_here"] == true)
            .await?;
        assert!(content(fed.node(role), &id).await?.1 == data, "{role}");
    }
    // asia was down during publication: it catches up from its inbox after restart.
    fed.node_mut("asia").start_again().await?;
    fed.await_meta("asia", &id, T, |m| m["available_here"] == true)
        .await?;
    assert!(content(fed.node("asia"), &id).await?.1 == data);
    // mid-1 comes back and drains its inbox without a second transfer at the regional nodes.
    fed.node_mut("mid-1").start_again().await?;
    fed.await_meta("mid-1", &id, T, |m| m["available_here"] == true)
        .await?;
    wait_until_async(T, "mid-1's outbox to drain", || async {
        let p: Value = auth(client().get(fed.node("mid-1").url("/v1/peers")))
            .json_or_none()
            .await?;
        (p["outbox_depth"] == 0).then_some(())
    })
    .await?;
    for role in ["na", "eu"] {
        assert_eq!(
            fed.metric(role, "docfed_bytes_pulled_total").await?,
            data.len() as u64,
            "{role}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn presence_discovers_peers_and_notices_a_dead_one() -> TestResult {
    let mut fed = Federation::start(&[]).await?;
    let mid2 = fed.id("mid-2");
    let peer = |peers: &Value, id: &str| -> Option<Value> {
        peers["peers"]
            .as_array()?
            .iter()
            .find(|p| p["id"] == id)
            .cloned()
    };
    let na = fed.node("na").url("/v1/peers");
    wait_until_async(T, "na to see mid-2 by mDNS and probe", || async {
        let p: Value = client().get(&na).json_or_none().await?;
        let m = peer(&p, &mid2)?;
        (m["mdns"] == true && m["healthy"] == true && m["tier"] == "intermediate").then_some(())
    })
    .await?;
    fed.node_mut("mid-2").kill();
    wait_until_async(T, "na to mark the killed mid-2 down", || async {
        let p: Value = client().get(&na).json_or_none().await?;
        let m = peer(&p, &mid2)?;
        (m["healthy"] == false && m["failed_probes"].as_u64()? >= 2 && m["last_error"].is_string())
            .then_some(())
    })
    .await?;
    // Pulls skip it and still complete.
    let id = publish(
        &fed,
        "primary-a",
        "title=while%20mid-2%20is%20dead",
        pattern(61, 500_000),
    )
    .await?;
    fed.await_meta("na", &id, T, |m| m["available_here"] == true)
        .await?;
    Ok(())
}

/// A primary's edit queues, in one transaction, its notification and its own receipt for the
/// other primary: the relay sends the two as one broker message, or, with `--message-batch 1`
/// (a federation with nodes that do not read batches yet), as two.
#[tokio::test]
async fn messages_queued_together_travel_as_one_broker_message() -> TestResult {
    for (args, broker_messages) in [(&[][..], 3), (&["--message-batch", "1"][..], 4)] {
        let fed = Federation::start(args).await?;
        let id = publish(&fed, "primary-a", "title=together", b"x".to_vec()).await?;
        // To primary-b: notification and receipt; to each intermediate: a notification.
        fed.await_metric("primary-a", "docfed_messages_published_total", 4)
            .await?;
        let sent = |name| fed.metric("primary-a", name);
        assert_eq!(sent("docfed_messages_published_total").await?, 4);
        assert_eq!(
            sent("docfed_broker_messages_published_total").await?,
            broker_messages,
            "{args:?}"
        );
        fed.await_meta("primary-b", &id, T, |m| m["available_here"] == true)
            .await?;
    }
    Ok(())
}
