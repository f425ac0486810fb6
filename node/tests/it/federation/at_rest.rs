//! A federation whose nodes seal content at rest: pulls, stream-through and on-demand reads work
//! on sealed files, and no node's data directory holds the document's plaintext, nor that of a
//! small document that travelled inline (its bytes in the database and in the outbox are
//! sealed too).

use super::*;

const MARKER: &[u8] = b"DOCFED-FEDERATION-AT-REST-5c1e";

#[tokio::test]
async fn sealed_nodes_relay_documents_and_keep_no_plaintext() -> TestResult {
    let keys = tempfile::tempdir()?;
    let key = keys.path().join("content.key");
    std::fs::write(&key, hex::encode([7u8; 32]))?;
    let fed = Federation::start(&["--content-key-file", key.to_str().unwrap()]).await?;
    let mut body = pattern(31, 3_000_000);
    for at in (0..body.len() - MARKER.len()).step_by(10_000) {
        body[at..at + MARKER.len()].copy_from_slice(MARKER);
    }
    let id = publish(
        &fed,
        "primary-a",
        "title=Sealed&filename=s.bin",
        body.clone(),
    )
    .await?;
    let regional = publish(
        &fed,
        "primary-b",
        "title=Sealed%20regional&scope=region:eu",
        body[..1_000_000].to_vec(),
    )
    .await?;
    // Small enough to travel inline: stored in the database, queued in outboxes.
    let small: Vec<u8> = MARKER.repeat(300);
    let small_id = publish(&fed, "primary-a", "title=Sealed%20small", small.clone()).await?;
    for role in ["na", "eu", "asia"] {
        fed.await_meta(role, &small_id, T, |m| m["available_here"] == true)
            .await?;
        let (status, got) = content(fed.node(role), &small_id).await?;
        assert_eq!(status, StatusCode::OK, "{role}");
        assert!(got == small, "{role}: small content differs");
    }
    for role in ["na", "eu", "asia"] {
        fed.await_meta(role, &id, T, |m| m["available_here"] == true)
            .await?;
        let (status, got) = content(fed.node(role), &id).await?;
        assert_eq!(status, StatusCode::OK, "{role}");
        assert!(got == body, "{role}: content differs");
    }
    // na does not hold region:eu content: it streams it from eu's sealed file on demand.
    fed.await_meta("eu", &regional, T, |m| m["available_here"] == true)
        .await?;
    let (status, got) = content(fed.node("na"), &regional).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(got == body[..1_000_000], "cross-region read differs");
    // The marker as it is, and as base64 puts it in a message (at each of the three offsets).
    let needles: Vec<Vec<u8>> = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&small);
        let mut n = vec![MARKER.to_vec()];
        n.extend((0..3).map(|i| b64.as_bytes()[4 * i..4 * i + 16].to_vec()));
        n
    };
    for role in ROLES {
        let dir = &fed.node(role).dir;
        let leaks: Vec<_> = files_under(dir)
            .into_iter()
            .filter(|f| {
                std::fs::read(f)
                    .map(|b| {
                        needles
                            .iter()
                            .any(|n| b.windows(n.len()).any(|w| w == n.as_slice()))
                    })
                    .unwrap_or(false)
            })
            .collect();
        assert!(leaks.is_empty(), "{role} keeps plaintext: {leaks:?}");
    }
    Ok(())
}
