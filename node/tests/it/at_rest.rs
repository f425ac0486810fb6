//! Content encrypted at rest (ARCHITECTURE.md §4.5): no plaintext in the data directory, Range
//! reads byte-exact across chunk boundaries, a node without its key refuses to start, and a key
//! rotation under load loses nothing.

use std::path::Path;
use std::time::Duration;

use docfed_node::atrest::{ContentKey, CHUNK};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

const MARKER: &[u8] = b"DOCFED-AT-REST-MARKER-7f3a91";

/// A document body that repeats [`MARKER`] between patterned bytes.
fn marked(seed: u64, size: usize) -> Vec<u8> {
    let mut body = pattern(seed, size);
    for at in (0..size.saturating_sub(MARKER.len())).step_by(4096) {
        body[at..at + MARKER.len()].copy_from_slice(MARKER);
    }
    body
}

fn write_key(dir: &Path, name: &str, byte: u8) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, hex::encode([byte; 32])).unwrap();
    path
}

/// Files under `dir` that contain [`MARKER`].
fn plaintext_files(dir: &Path) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|f| {
            std::fs::read(f)
                .map(|b| b.windows(MARKER.len()).any(|w| w == MARKER))
                .unwrap_or(false)
        })
        .collect()
}

async fn publish(node: &TestNode, body: Vec<u8>) -> TestResult<String> {
    let resp = auth(client().post(node.url("/v1/documents?title=sealed")))
        .body(body)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    Ok(resp.json::<Value>().await?["id"]
        .as_str()
        .unwrap()
        .to_owned())
}

async fn whole(node: &TestNode, id: &str) -> TestResult<Vec<u8>> {
    let resp = client()
        .get(node.url(&format!("/v1/documents/{id}/content")))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(resp.bytes().await?.to_vec())
}

async fn range(node: &TestNode, id: &str, from: u64, to: u64) -> TestResult<Vec<u8>> {
    let resp = client()
        .get(node.url(&format!("/v1/documents/{id}/content")))
        .header("Range", format!("bytes={from}-{to}"))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{from}-{to}");
    Ok(resp.bytes().await?.to_vec())
}

/// The key id in the header of every object file under `data`.
fn object_key_ids(data: &Path) -> Vec<String> {
    files_under(&data.join("objects"))
        .iter()
        .map(|f| hex::encode(&std::fs::read(f).unwrap()[8..16]))
        .collect()
}

#[tokio::test]
async fn sealed_content_reads_back_exactly_and_survives_a_key_rotation() -> TestResult {
    let keys = tempfile::tempdir()?;
    let (k1, k2) = (
        write_key(keys.path(), "k1", 1),
        write_key(keys.path(), "k2", 2),
    );
    let data = tempfile::tempdir()?;
    let dir = data.path().join("node");
    let c = CHUNK;
    let size = 3 * c + 123;
    let body = marked(1, size as usize);
    let mut node = TestNode::start_in(&dir, &["--content-key-file", k1.to_str().unwrap()]).await?;
    let id = publish(&node, body.clone()).await?;
    {
        let small_id = publish(&node, b"x".to_vec()).await?;
        assert!(
            plaintext_files(&dir).is_empty(),
            "plaintext at rest: {:?}",
            plaintext_files(&dir)
        );
        assert!(
            files_under(&dir).iter().all(|f| !f.ends_with("k1")),
            "the key stays out"
        );
        // Whole, and every range around the chunk boundaries, byte-exact.
        assert!(whole(&node, &id).await? == body, "whole content differs");
        for (from, to) in [
            (0, 0),
            (c - 1, c - 1),
            (c - 1, c),
            (c, c),
            (c + 1, c + 1),
            (c - 1, 2 * c),
            (2 * c - 1, 2 * c + 1),
            (c + 5, size - 1),
            (size - 1, size - 1),
            (0, size - 1),
        ] {
            let got = range(&node, &id, from, to).await?;
            assert!(
                got == body[from as usize..=to as usize],
                "range {from}-{to}"
            );
        }
        assert_eq!(range(&node, &small_id, 0, 0).await?, b"x");
    }
    node.stop().await?;

    // Without its key the node does not start: it would serve ciphertext as content.
    let refused = TestNode::start_in(&dir, &[]).await;
    let err = refused.err().ok_or("a node without its key started")?;
    assert!(err.to_string().contains("encrypted"), "{err}");

    // Rotation: the new key seals new content at once and the old objects in the background,
    // while documents keep arriving; nothing is lost.
    let mut node = TestNode::start_in(
        &dir,
        &[
            "--content-key-file",
            k2.to_str().unwrap(),
            "--old-content-key-file",
            k1.to_str().unwrap(),
        ],
    )
    .await?;
    let mut more = Vec::new();
    for i in 0..20 {
        let b = marked(10 + i, 70_000 + i as usize * 997);
        more.push((publish(&node, b.clone()).await?, b));
    }
    let new_id = ContentKey::from_hex(&hex::encode([2u8; 32]))?.id_hex();
    wait_until(
        Duration::from_secs(60),
        "every object sealed with the new key",
        || object_key_ids(&dir).iter().all(|k| *k == new_id),
    )
    .await?;
    node.stop().await?;
    // Only the new key from now on.
    let node = TestNode::start_in(&dir, &["--content-key-file", k2.to_str().unwrap()]).await?;
    for (doc, b) in more.iter().chain([(id.clone(), body.clone())].iter()) {
        assert!(whole(&node, doc).await? == *b, "{doc} after the rotation");
    }
    assert!(plaintext_files(&dir).is_empty());
    Ok(())
}
