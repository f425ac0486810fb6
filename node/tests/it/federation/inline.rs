//! Small documents inline (ARCHITECTURE.md §2a): content up to the topology's `inline_max`
//! (64 KiB here, the default) travels inside its notification and nobody pulls it; one byte
//! more and it is pulled as before. Bytes that are not the signed content are refused.

use futures::StreamExt;

use super::*;

const INLINE_MAX: usize = 64 * 1024;

fn md5_hex(b: &[u8]) -> String {
    format!("{:x}", md5::compute(b))
}

/// Sizes 0, 1, `inline_max - 1`, `inline_max` and `inline_max + 1` reach every regional node
/// byte for byte; only the last is pulled (and stored as a file), the others arrive with their
/// notifications and live in the database. A Range read of an inline object is served as of
/// any other.
#[tokio::test]
async fn content_up_to_inline_max_travels_inline_and_one_byte_more_is_pulled() -> TestResult {
    let fed = Federation::start(&[]).await?;
    let sizes = [0, 1, INLINE_MAX - 1, INLINE_MAX, INLINE_MAX + 1];
    let mut docs = Vec::new();
    for (i, size) in sizes.into_iter().enumerate() {
        let body = pattern(40 + i as u64, size);
        let id = publish(
            &fed,
            "primary-a",
            &format!("title=size-{size}&filename=s{size}.bin"),
            body.clone(),
        )
        .await?;
        docs.push((id, body));
    }
    for role in ["na", "eu", "asia"] {
        for (id, body) in &docs {
            fed.await_meta(role, id, T, |m| m["available_here"] == true)
                .await?;
            let (status, got) = content(fed.node(role), id).await?;
            assert_eq!(status, StatusCode::OK, "{role}");
            assert!(got == *body, "{role}: {} bytes differ", body.len());
        }
        // Only the document above inline_max was pulled, once.
        assert_eq!(
            fed.metric(role, "docfed_bytes_pulled_total").await?,
            (INLINE_MAX + 1) as u64,
            "{role}"
        );
        assert!(
            fed.metric(role, "docfed_inline_content_stored_total")
                .await?
                >= 4,
            "{role}"
        );
        // Only it is a file; the inline ones are in the database.
        let files: Vec<String> = files_under(&fed.node(role).dir.join("objects"))
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(files, vec![md5_hex(&docs[4].1)], "{role}");
    }
    // The primary that took the uploads wrote no file for the small ones either.
    let files = files_under(&fed.node("primary-a").dir.join("objects"));
    assert_eq!(files.len(), 1, "{files:?}");

    // Range, ETag and If-Range on an inline object, at a regional node.
    let (id, body) = &docs[3];
    let url = fed.node("eu").url(&format!("/v1/documents/{id}/content"));
    let resp = client()
        .get(&url)
        .header("range", "bytes=100-199")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes 100-199/{INLINE_MAX}").as_str()
    );
    let etag = resp.headers()["etag"].to_str()?.to_owned();
    assert!(etag.contains(&md5_hex(body)), "{etag}");
    assert!(resp.bytes().await? == body[100..200]);
    let resp = client()
        .get(&url)
        .header("range", format!("bytes={}-", INLINE_MAX - 10))
        .header("if-range", etag.as_str())
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert!(resp.bytes().await? == body[INLINE_MAX - 10..]);
    let resp = client()
        .get(&url)
        .header("range", format!("bytes={INLINE_MAX}-"))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // By address, as a peer pulls it.
    let resp = client()
        .get(
            fed.node("eu")
                .url(&format!("/v1/objects/{}", md5_hex(body))),
        )
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await? == *body);
    Ok(())
}

/// A batch its sender signed, into a regional node's inbox with a real AMQP client: a genuine
/// inline document beside one whose inline bytes are not the ones its origin signed (a relay
/// substituted them). The substituted one is dead-lettered alone, with its reason; the genuine
/// one is recorded and served without a pull.
#[tokio::test]
async fn inline_bytes_that_are_not_the_signed_content_are_dead_lettered_alone() -> TestResult {
    use crate::common::relay;
    use docfed_shared::messages::{join_batch, Body, Envelope, Notification, BATCH_CONTENT_TYPE};

    let fed = Federation::start(&[]).await?;
    let (na, mid1) = (fed.id("na"), fed.id("mid-1"));
    let mid1_url = fed.node("mid-1").url("");
    let inline = |title: &str, signed: &[u8], carried: &[u8]| -> TestResult<Vec<u8>> {
        use sha2::Digest;
        let mut d = relay::version(&fed, title, &md5_hex(signed), signed.len() as u64)?;
        d.sha256 = Some(hex::encode(sha2::Sha256::digest(signed)).parse()?);
        let d = relay::sign(&fed, "primary-a", d)?;
        let env = Envelope::new(
            format!("n:{}:1:x", d.id),
            &mid1,
            Body::Notify(Box::new(Notification {
                document: d,
                kind: docfed_shared::wire::ChangeKind::Published,
                origin_url: mid1_url.clone(),
                targets: vec![],
                content: Some(bytes::Bytes::copy_from_slice(carried)),
            })),
        );
        Ok(env.to_bytes())
    };
    let genuine = pattern(51, 10_000);
    let mut substituted = genuine.clone();
    substituted[5_000] ^= 0xff;
    let good = inline("genuine", &genuine, &genuine)?;
    let bad = inline("substituted", &genuine, &substituted)?;
    let conn = lapin::Connection::connect(
        &crate::common::federation::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let ch = conn.create_channel().await?;
    fed.send_to_inbox_as(
        &ch,
        "na",
        &join_batch([bad.as_slice(), good.as_slice()]),
        Some("mid-1"),
        Some(BATCH_CONTENT_TYPE),
    )
    .await?;
    fed.await_metric("na", "docfed_notifications_dead_lettered_total", 1)
        .await?;
    let reasons =
        super::dead_letters::dead_letter_reasons(&ch, &format!("docfed.{na}.dead")).await?;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("inline content"), "{reasons:?}");
    // The genuine one: recorded, held, served, and never pulled.
    let good_id = serde_json::from_slice::<Value>(&good)?["body"]["document"]["id"]
        .as_str()
        .ok_or("no id")?
        .to_owned();
    fed.await_meta("na", &good_id, T, |m| m["available_here"] == true)
        .await?;
    let (status, got) = content(fed.node("na"), &good_id).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(got == genuine);
    assert_eq!(fed.metric("na", "docfed_bytes_pulled_total").await?, 0);
    let bad_id = serde_json::from_slice::<Value>(&bad)?["body"]["document"]["id"]
        .as_str()
        .ok_or("no id")?
        .to_owned();
    let resp = client()
        .get(fed.node("na").url(&format!("/v1/documents/{bad_id}")))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    conn.close(200, "done".into()).await?;
    Ok(())
}

/// An intermediate and a regional node killed with -9 while a burst of small documents flows
/// through them in batches: after both restart, every document is on every regional node, byte
/// for byte, and each is recorded and stored exactly once (whatever was redelivered or came by
/// both paths was recognised).
#[tokio::test]
async fn killed_mid_batch_an_intermediate_and_a_regional_lose_nothing_and_store_nothing_twice(
) -> TestResult {
    let mut fed = Federation::start(&[]).await?;
    const DOCS: usize = 400;
    let bodies: Vec<Vec<u8>> = (0..DOCS)
        .map(|i| pattern(1000 + i as u64, 10_000))
        .collect();
    let publisher = {
        let primary = fed.node("primary-a").url("");
        let bodies = bodies.clone();
        tokio::spawn(async move {
            let ids = futures::stream::iter(bodies.into_iter().enumerate())
                .map(|(i, body)| {
                    let url = format!("{primary}/v1/documents?title=burst-{i}");
                    async move {
                        let resp = auth(client().post(url)).body(body).send().await?;
                        assert_eq!(resp.status(), StatusCode::CREATED);
                        let v: Value = resp.json().await?;
                        Ok::<_, reqwest::Error>(v["id"].as_str().unwrap_or_default().to_owned())
                    }
                })
                .buffered(8)
                .collect::<Vec<_>>()
                .await;
            ids.into_iter().collect::<Result<Vec<_>, _>>()
        })
    };
    // Kill both once na is in the middle of the burst.
    let na_received = || fed.metric("na", "docfed_notifications_received_total");
    crate::common::eventually(T, "na to be in the middle of the burst", || async {
        Ok((na_received().await? >= 40).then_some(()))
    })
    .await?;
    fed.node_mut("mid-1").kill();
    fed.node_mut("na").kill();
    let ids = publisher.await??;
    fed.node_mut("mid-1").start_again().await?;
    fed.node_mut("na").start_again().await?;
    for role in ["na", "eu", "asia"] {
        for (id, body) in ids.iter().zip(&bodies) {
            fed.await_meta(role, id, T, |m| m["available_here"] == true)
                .await?;
            let (status, got) = content(fed.node(role), id).await?;
            assert_eq!(status, StatusCode::OK, "{role}");
            assert!(got == *body, "{role}: {id} differs");
        }
    }
    // Once each, in the directory, the history, the feed and the store.
    let db = rusqlite::Connection::open_with_flags(
        fed.node("na").dir.join("node.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let count = |sql: &str| -> rusqlite::Result<i64> { db.query_row(sql, [], |r| r.get(0)) };
    assert_eq!(count("SELECT COUNT(*) FROM documents")?, DOCS as i64);
    assert_eq!(count("SELECT COUNT(*) FROM versions")?, DOCS as i64);
    assert_eq!(count("SELECT COUNT(*) FROM small_objects")?, DOCS as i64);
    assert_eq!(count("SELECT COUNT(*) FROM objects")?, DOCS as i64);
    assert_eq!(
        count("SELECT COUNT(*) FROM changes WHERE kind = 'published'")?,
        DOCS as i64
    );
    assert!(files_under(&fed.node("na").dir.join("objects")).is_empty());
    Ok(())
}
