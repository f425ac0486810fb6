//! Signed versions: a primary signs every version it accepts, over its metadata and the
//! content's SHA-256; every node checks the signature before recording a version and the SHA-256
//! before keeping the bytes, so a relaying node can pass a document on but not forge or alter it.

use std::time::Duration;

use docfed_shared::hashing::StreamHash;
use docfed_shared::wire::{DocumentMeta, DocumentVersion};
use docfed_shared::{ContentHasher, Digests};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::federation::Federation;
use crate::common::relay;
use crate::common::*;

const T: Duration = Duration::from_secs(60);

fn digests(data: &[u8]) -> Digests {
    let mut h = ContentHasher::new();
    h.update(data);
    h.finish()
}

/// A version as `role` serves it.
async fn version_at(fed: &Federation, role: &str, id: &str) -> TestResult<DocumentVersion> {
    let resp = client()
        .get(fed.node(role).url(&format!("/v1/documents/{id}")))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(resp.json::<DocumentMeta>().await?.current)
}

/// A publication and its tombstone reach a regional node signed by the primary that accepted
/// them, with the content's SHA-256; the regional node's admin import takes the genuine version
/// but refuses a forged one.
#[tokio::test]
async fn versions_arrive_signed_by_their_primary_with_the_content_sha256() -> TestResult {
    let fed = Federation::start(&[]).await?;
    let body = b"signed content".to_vec();
    let resp = auth(
        client().post(
            fed.node("primary-a")
                .url("/v1/documents?title=signed&filename=s.txt"),
        ),
    )
    .body(body.clone())
    .send()
    .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let id = resp.json::<Value>().await?["id"]
        .as_str()
        .ok_or("no id")?
        .to_owned();
    fed.await_meta("na", &id, T, |m| m["available_here"] == true)
        .await?;

    let primary_a = fed.key("primary-a")?.public();
    let v = version_at(&fed, "na", &id).await?;
    assert_eq!(v.sha256, Some(digests(&body).sha256));
    let signature = v.signature.clone().ok_or("the version is not signed")?;
    assert!(primary_a.verifies(&v.signing_input(), &signature));
    // The signature covers the metadata: any change breaks it.
    let mut changed = v.clone();
    changed.title = "other".into();
    assert!(!primary_a.verifies(&changed.signing_input(), &signature));

    let resp = auth(client().delete(fed.node("primary-a").url(&format!("/v1/documents/{id}"))))
        .send()
        .await?;
    assert!(resp.status().is_success(), "{}", resp.status());
    fed.await_meta("na", &id, T, |m| m["deleted"] == true)
        .await?;
    let tomb = version_at(&fed, "na", &id).await?;
    assert_eq!(
        tomb.sha256, v.sha256,
        "a tombstone keeps the content's hash"
    );
    assert!(primary_a.verifies(
        &tomb.signing_input(),
        tomb.signature.as_deref().ok_or("unsigned tombstone")?
    ));

    // Admin import on a node of a keyed federation: the token does not make a forgery true.
    let import = |lines: String| {
        auth(client().post(fed.node("na").url("/v1/admin/import")))
            .body(lines)
            .send()
    };
    let mut forged = v.clone();
    forged.id = docfed_shared::DocId::new();
    let resp = import(format!("{}\n", serde_json::to_string(&forged)?)).await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let text = resp.text().await?;
    assert!(
        text.contains("line 1") && text.contains("signature"),
        "{text}"
    );
    let resp = client()
        .get(fed.node("na").url(&format!("/v1/documents/{}", forged.id)))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = import(format!("{}\n", serde_json::to_string(&v)?)).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await?["already_known"], 1);
    Ok(())
}

/// A compromised intermediate relays a genuine signed version but serves other bytes with the
/// same MD5 (here: bytes whose MD5 the version names, while its signed SHA-256 is of something
/// else, which is what a crafted MD5 collision looks like to the receiver). The regional node
/// refuses them every time and never keeps or serves them as the document.
#[tokio::test]
async fn content_that_fails_the_signed_sha256_is_never_kept() -> TestResult {
    use axum::extract::Path;

    let mut fed = Federation::start_with_impostor(&[], "mid-1").await?;
    let listener = fed.impostor.take().ok_or("no impostor socket")?;
    let mid1 = fed.id("mid-1");
    let mid1_url = format!("http://{}", listener.local_addr()?);
    let served: &'static [u8] = b"bytes the intermediate substituted";
    let genuine = digests(b"the bytes primary-a accepted");
    let bad = digests(served);

    let app = axum::Router::new()
        .route("/v1/health", relay::intermediate_health(mid1.clone()))
        .route(
            "/v1/objects/{md5}",
            axum::routing::get(move |Path(_m): Path<String>| async move { served }),
        );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut d = relay::version(&fed, "collided", &bad.md5.to_string(), bad.size)?;
    d.filename = "c.bin".into();
    d.sha256 = Some(genuine.sha256.clone());
    let d = relay::sign(&fed, "primary-a", d)?;
    let id = d.id.to_string();
    relay::relay(
        &fed,
        "mid-1",
        "na",
        &relay::notification(&mid1, d, mid1_url),
    )
    .await?;

    // The version is genuine, so it is recorded; its bytes are refused, again and again.
    fed.await_metric("na", "docfed_sha256_mismatches_total", 2)
        .await?;
    let meta: Value = client()
        .get(fed.node("na").url(&format!("/v1/documents/{id}")))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(meta["available_here"], false, "{meta}");
    let object = fed
        .node("na")
        .dir
        .join("objects")
        .join(&bad.md5.as_str()[..2])
        .join(bad.md5.as_str());
    assert!(!object.exists(), "the substituted bytes were stored");
    assert_eq!(fed.metric("na", "docfed_fetches_completed_total").await?, 0);
    server.abort();
    Ok(())
}
