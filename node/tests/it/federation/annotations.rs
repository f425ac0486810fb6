//! Annotations travel up to both primaries exactly once, and decisions back down.

use super::*;

#[tokio::test]
async fn annotations_reach_both_primaries_exactly_once() -> TestResult {
    let fed = Federation::start(&[]).await?;
    let id = publish(&fed, "primary-a", "title=Annotated", b"text".to_vec()).await?;
    fed.await_meta("eu", &id, T, |_| true).await?;
    let resp = client()
        .post(
            fed.node("eu")
                .url(&format!("/v1/documents/{id}/annotations")),
        )
        .json(&serde_json::json!({"text": "Page 3 has a typo", "author": "reader@eu"}))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let aid = resp.json::<Value>().await?["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for primary in ["primary-a", "primary-b"] {
        let url = fed.node(primary).url("/v1/annotations");
        wait_until_async(T, "the annotation at the primary", || async {
            let list: Value = auth(client().get(&url)).json_or_none().await?;
            (!list["annotations"].as_array()?.is_empty()).then_some(())
        })
        .await?;
    }
    // Both intermediates relayed it; each primary still holds it once.
    wait_until_async(T, "both intermediates' outboxes to drain", || async {
        for mid in ["mid-1", "mid-2"] {
            let p: Value = auth(client().get(fed.node(mid).url("/v1/peers")))
                .json_or_none()
                .await?;
            if p["outbox_depth"] != 0 {
                return None;
            }
        }
        Some(())
    })
    .await?;
    for primary in ["primary-a", "primary-b"] {
        let list: Value = auth(client().get(fed.node(primary).url("/v1/annotations")))
            .send()
            .await?
            .json()
            .await?;
        let all = list["annotations"].as_array().unwrap();
        assert_eq!(all.len(), 1, "{primary}: {list}");
        assert_eq!(all[0]["id"], aid.as_str());
        assert_eq!(all[0]["text"], "Page 3 has a typo");
        assert_eq!(all[0]["document_deleted"], false);
    }
    let resp = auth(
        client().post(
            fed.node("primary-a")
                .url(&format!("/v1/annotations/{aid}/accept")),
        ),
    )
    .send()
    .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let list: Value =
        auth(client().get(fed.node("primary-a").url("/v1/annotations?state=accepted")))
            .send()
            .await?
            .json()
            .await?;
    assert_eq!(list["annotations"][0]["id"], aid.as_str());

    // The decision replicates: every node, those the annotation never passed through included,
    // shows it accepted, to anyone holding its id, and lists it with the document.
    let state_at = |role: &'static str| {
        let url = fed.node(role).url(&format!("/v1/annotations/{aid}"));
        async move {
            let v: Value = client().get(&url).json_or_none().await?;
            v["state"].as_str().map(str::to_owned)
        }
    };
    for role in crate::common::federation::ROLES {
        wait_until_async(T, "the decision everywhere", || async {
            (state_at(role).await.as_deref() == Some("accepted")).then_some(())
        })
        .await
        .map_err(|e| format!("{role}: {e}"))?;
    }
    let listed: Value = client()
        .get(
            fed.node("na")
                .url(&format!("/v1/documents/{id}/annotations")),
        )
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        listed["annotations"][0]["text"], "Page 3 has a typo",
        "{listed}"
    );
    // A later decision at the other primary wins everywhere.
    let resp = auth(
        client().post(
            fed.node("primary-b")
                .url(&format!("/v1/annotations/{aid}/reject")),
        ),
    )
    .send()
    .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    for role in crate::common::federation::ROLES {
        wait_until_async(T, "the later decision everywhere", || async {
            (state_at(role).await.as_deref() == Some("rejected")).then_some(())
        })
        .await
        .map_err(|e| format!("{role}: {e}"))?;
    }
    // A regional node cannot decide for the author: its forged decision is dead-lettered.
    let forged = docfed_shared::messages::Envelope::new(
        "d:forged".into(),
        &fed.id("na"),
        docfed_shared::messages::Body::Decision(docfed_shared::messages::Decision {
            annotation: docfed_shared::messages::Annotation {
                id: aid.clone(),
                doc_id: id.parse()?,
                doc_version: 1,
                author: "reader@eu".into(),
                text: "Page 3 has a typo".into(),
                created_at: docfed_shared::wire::Timestamp::now(),
                node: fed.id("na"),
            },
            state: docfed_shared::messages::AnnotationState::Accepted,
            decided_at: docfed_shared::wire::Timestamp::now(),
            by: fed.id("na"),
        }),
    );
    let conn = lapin::Connection::connect(
        &crate::common::federation::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let ch = conn.create_channel().await?;
    fed.send_to_inbox(&ch, "eu", &forged.to_bytes(), Some("na"))
        .await?;
    fed.await_metric("eu", "docfed_notifications_dead_lettered_total", 1)
        .await?;
    assert_eq!(state_at("eu").await.as_deref(), Some("rejected"));
    conn.close(200, "done".into()).await?;
    Ok(())
}
