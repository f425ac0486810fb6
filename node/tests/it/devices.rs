//! Devices: registration (operator or open enrollment, capped), flags that need the device's
//! secret, per-device quotas, revocation, and unflagging that releases content a regional
//! node kept only for a flag.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::federation::Federation;
use crate::common::*;

const T: Duration = Duration::from_secs(60);

/// `POST /v1/devices` with an optional bearer token and JSON body.
async fn register(
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> TestResult<(StatusCode, Value)> {
    let mut req = client().post(format!("{url}/v1/devices"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    Ok((resp.status(), resp.json().await?))
}

/// A registered device: (id, secret).
async fn registered(url: &str) -> TestResult<(String, String)> {
    let (status, v) = register(url, Some(TOKEN), Some(serde_json::json!({"name": "test"}))).await?;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    Ok((
        v["device"].as_str().ok_or("no device")?.to_owned(),
        v["secret"].as_str().ok_or("no secret")?.to_owned(),
    ))
}

/// A flag request (`PUT`, `DELETE` or the `GET` of the list when `doc` is empty) sent with
/// `bearer`, if any.
async fn flag_req(
    method: reqwest::Method,
    url: &str,
    device: &str,
    doc: &str,
    bearer: Option<&str>,
) -> TestResult<(StatusCode, Value)> {
    let path = if doc.is_empty() {
        format!("{url}/v1/devices/{device}/flags")
    } else {
        format!("{url}/v1/devices/{device}/flags/{doc}")
    };
    let mut req = client().request(method, path);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn flag(
    url: &str,
    device: &str,
    doc: &str,
    secret: Option<&str>,
) -> TestResult<(StatusCode, Value)> {
    flag_req(reqwest::Method::PUT, url, device, doc, secret).await
}

async fn unflag(
    url: &str,
    device: &str,
    doc: &str,
    secret: Option<&str>,
) -> TestResult<(StatusCode, Value)> {
    flag_req(reqwest::Method::DELETE, url, device, doc, secret).await
}

async fn flagged_ids(url: &str, device: &str, bearer: &str) -> TestResult<Vec<String>> {
    let (status, v) = flag_req(reqwest::Method::GET, url, device, "", Some(bearer)).await?;
    assert_eq!(status, StatusCode::OK, "{v}");
    Ok(v["documents"]
        .as_array()
        .ok_or("no documents")?
        .iter()
        .map(|d| d["id"].as_str().unwrap_or_default().to_owned())
        .collect())
}

async fn publish_at(url: &str, query: &str, body: Vec<u8>) -> TestResult<(String, String)> {
    let resp = auth(client().post(format!("{url}/v1/documents?{query}")))
        .body(body)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED, "{}", resp.text().await?);
    let v: Value = resp.json().await?;
    Ok((
        v["id"].as_str().ok_or("no id")?.to_owned(),
        v["md5"].as_str().ok_or("no md5")?.to_owned(),
    ))
}

fn assert_unauthorized(status: StatusCode, body: &Value, what: &str) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    assert_eq!(body["code"], "unauthorized", "{what}: {body}");
}

#[tokio::test]
async fn registration_needs_the_token_unless_enrollment_is_open_and_then_it_is_capped() -> TestResult
{
    // Secure default: only the operator enrols.
    let node = TestNode::start().await?;
    let (status, v) = register(&node.url, None, None).await?;
    assert_unauthorized(status, &v, "anonymous registration");
    assert!(v["error"].as_str().unwrap().contains("token"), "{v}");
    let (status, v) = register(&node.url, Some("wrong-token-0123456789"), None).await?;
    assert_unauthorized(status, &v, "wrong token");

    // With the token: an id chosen by the node and a 64-hex secret, kept only as a hash.
    let (status, v) = register(&node.url, Some(TOKEN), None).await?;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (id, secret) = (v["device"].as_str().unwrap(), v["secret"].as_str().unwrap());
    assert_eq!(id.len(), 36, "a UUID: {v}");
    assert!(secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()));
    let (_, other) = register(
        &node.url,
        Some(TOKEN),
        Some(serde_json::json!({"name": "tablet"})),
    )
    .await?;
    assert_ne!(other["device"], v["device"]);
    assert_ne!(other["secret"], v["secret"]);
    assert_eq!(other["name"], "tablet");
    let mut stored = Vec::new();
    for f in ["node.sqlite", "node.sqlite-wal"] {
        stored.extend(std::fs::read(node.dir.join(f)).unwrap_or_default());
    }
    let stored = String::from_utf8_lossy(&stored);
    assert!(!stored.contains(secret), "the secret is stored in clear");
    assert!(
        stored.contains(&docfed_test_kit::sha256_hex(secret.as_bytes())),
        "the secret's SHA-256 is not stored"
    );

    // Bad bodies are refused, bounded like every JSON body.
    for body in [
        serde_json::json!({"name": "x".repeat(101)}),
        serde_json::json!({"name": "a\u{7}b"}),
        serde_json::json!({"nmae": "typo"}),
    ] {
        let (status, v) = register(&node.url, Some(TOKEN), Some(body.clone())).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
    let resp = auth(client().post(node.url("/v1/devices")))
        .header("content-type", "application/json")
        .body(vec![b' '; 300 * 1024])
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // The operator's list; nobody else's.
    let resp = client().get(node.url("/v1/devices")).send().await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let list: Value = auth(client().get(node.url("/v1/devices")))
        .send()
        .await?
        .json()
        .await?;
    let ids: Vec<&str> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(ids.contains(&id));
    assert!(
        list.to_string().find(secret).is_none(),
        "the list shows a secret"
    );

    // Open enrollment: anyone registers, up to --max-devices active devices.
    let open = TestNode::start_with(&["--open-enrollment", "--max-devices", "2"]).await?;
    let (status, first) = register(&open.url, None, None).await?;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, v) = register(&open.url, None, Some(serde_json::json!({"name": "b"}))).await?;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    for token in [None, Some(TOKEN)] {
        let (status, v) = register(&open.url, token, None).await?;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
        assert_eq!(v["code"], "device_limit");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains("max_devices") && msg.contains("= 2"), "{msg}");
    }
    // A revoked device frees its place.
    let resp = auth(client().delete(open.url(&format!(
        "/v1/devices/{}",
        first["device"].as_str().unwrap()
    ))))
    .send()
    .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, v) = register(&open.url, None, None).await?;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    Ok(())
}

#[tokio::test]
async fn flags_need_the_device_secret_and_stay_within_the_quotas() -> TestResult {
    let node = TestNode::start_with(&[
        "--max-flags-per-device",
        "2",
        "--max-flagged-bytes-per-device",
        "1000B",
    ])
    .await?;
    let url = node.url.clone();
    let mut docs = Vec::new();
    for (i, size) in [100usize, 100, 100, 2000].into_iter().enumerate() {
        docs.push(
            publish_at(&url, &format!("title=doc{i}"), pattern(i as u64, size))
                .await?
                .0,
        );
    }
    let (a, b, c, big) = (&docs[0], &docs[1], &docs[2], &docs[3]);

    // Nobody flags for a made-up device, or with a wrong or another device's secret.
    let (status, v) = flag(&url, "made-up-device", a, None).await?;
    assert_unauthorized(status, &v, "anonymous flag of a made-up device");
    assert!(v["error"].as_str().unwrap().contains("secret"), "{v}");
    let (status, v) = flag(&url, "made-up-device", a, Some(&"0".repeat(64))).await?;
    assert_unauthorized(status, &v, "a made-up device with a made-up secret");
    let (d1, s1) = registered(&url).await?;
    let (d2, s2) = registered(&url).await?;
    let (status, v) = flag(&url, &d1, a, None).await?;
    assert_unauthorized(status, &v, "no secret");
    let (status, v) = flag(&url, &d1, a, Some(&s2)).await?;
    assert_unauthorized(status, &v, "another device's secret");
    let (status, v) = flag(&url, &d1, a, Some(&s1[..63])).await?;
    assert_unauthorized(status, &v, "a truncated secret");
    let (status, v) = flag_req(reqwest::Method::GET, &url, &d1, "", Some(&s2)).await?;
    assert_unauthorized(status, &v, "another device's list");
    assert!(
        flagged_ids(&url, &d1, &s1).await?.is_empty(),
        "a refused flag changed something"
    );

    // The quota on the number of flags: the third is refused, naming the limit; the first two
    // stay. Flagging again is idempotent and counts once.
    let (status, v) = flag(&url, &d1, a, Some(&s1)).await?;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = flag(&url, &d1, a, Some(&s1)).await?;
    assert_eq!(status, StatusCode::OK, "flagging again: {v}");
    let (status, v) = flag(&url, &d1, b, Some(&s1)).await?;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = flag(&url, &d1, c, Some(&s1)).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["code"], "flag_quota");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("max_flags_per_device") && msg.contains("= 2"),
        "{msg}"
    );
    let (status, _) = flag(&url, &d1, a, Some(&s1)).await?;
    assert_eq!(
        status,
        StatusCode::OK,
        "re-flagging at the limit is still fine"
    );
    let mut got = flagged_ids(&url, &d1, &s1).await?;
    got.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(got, want);

    // The quota on bytes: 2000 bytes over a 1000-byte limit.
    let (status, v) = flag(&url, &d2, big, Some(&s2)).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("max_flagged_bytes_per_device") && msg.contains("1000 bytes"),
        "{msg}"
    );
    assert!(flagged_ids(&url, &d2, &s2).await?.is_empty());

    // Unflagging frees a place; a wrong secret cannot unflag.
    let (status, v) = unflag(&url, &d1, b, Some(&s2)).await?;
    assert_unauthorized(status, &v, "unflag with another device's secret");
    assert_eq!(flagged_ids(&url, &d1, &s1).await?.len(), 2);
    let (status, v) = unflag(&url, &d1, b, Some(&s1)).await?;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _) = unflag(&url, &d1, b, Some(&s1)).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "not flagged any more");
    let (status, v) = flag(&url, &d1, c, Some(&s1)).await?;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    // The operator may act on any device's flags.
    assert_eq!(flagged_ids(&url, &d1, TOKEN).await?.len(), 2);

    // Revocation: the flags go, the secret stops working, the operator sees it.
    let resp = client()
        .delete(node.url(&format!("/v1/devices/{d1}")))
        .bearer_auth(&s1)
        .send()
        .await?;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "a device cannot revoke (itself)"
    );
    let resp = auth(client().delete(node.url(&format!("/v1/devices/{d1}"))))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await?;
    assert_eq!(v["flags_removed"], 2, "{v}");
    let (status, v) = flag_req(reqwest::Method::GET, &url, &d1, "", Some(&s1)).await?;
    assert_unauthorized(status, &v, "a revoked device's list");
    let (status, v) = flag(&url, &d1, a, Some(&s1)).await?;
    assert_unauthorized(status, &v, "a revoked device's flag");
    let list: Value = auth(client().get(node.url("/v1/devices")))
        .send()
        .await?
        .json()
        .await?;
    let entry = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == d1.as_str())
        .ok_or("revoked device not listed")?;
    assert_eq!(entry["flags"], 0, "{entry}");
    assert!(entry["revoked"].is_string(), "{entry}");
    let resp = auth(client().delete(node.url("/v1/devices/no-such-device")))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // A standalone node keeps everything: all its content is its own.
    let resp = client()
        .get(node.url(&format!("/v1/documents/{a}/content")))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(())
}

fn object_file(node: &TestNode, md5: &str) -> std::path::PathBuf {
    node.dir.join("objects").join(&md5[..2]).join(md5)
}

async fn object_status(node: &TestNode, md5: &str) -> TestResult<StatusCode> {
    Ok(client()
        .get(node.url(&format!("/v1/objects/{md5}")))
        .send()
        .await?
        .status())
}

#[tokio::test]
async fn unflagging_releases_what_a_regional_node_kept_only_for_the_flag() -> TestResult {
    // A pull rate limit makes the 6 MB pull below last long enough to be unflagged mid-way.
    let fed = Federation::start(&["--pull-rate-limit", "4MB"]).await?;
    let primary = fed.node("primary-a").url.clone();
    // `na` holds region:na content; region:eu content is eu's and asia's (its backup).
    let (outside, outside_md5) = publish_at(
        &primary,
        "title=Outside&scope=region:eu",
        pattern(1, 200_000),
    )
    .await?;
    let (inside, inside_md5) = publish_at(
        &primary,
        "title=Inside&scope=region:na",
        pattern(2, 200_000),
    )
    .await?;
    // The same bytes in and out of na's scope: releasing one must not take the other's.
    let (twin_out, twin_md5) = publish_at(
        &primary,
        "title=TwinOut&scope=region:eu",
        pattern(3, 100_000),
    )
    .await?;
    let (twin_in, _) = publish_at(
        &primary,
        "title=TwinIn&scope=region:na",
        pattern(3, 100_000),
    )
    .await?;
    let (slow, slow_md5) = publish_at(
        &primary,
        "title=Slow&scope=region:eu",
        pattern(4, 6_000_000),
    )
    .await?;
    for id in [&outside, &twin_out, &slow] {
        fed.await_meta("na", id, T, |_| true).await?;
        fed.await_meta("eu", id, T, |m| m["available_here"] == true)
            .await?;
    }
    for id in [&inside, &twin_in] {
        fed.await_meta("na", id, T, |m| m["available_here"] == true)
            .await?;
    }
    let na = fed.node("na");
    let url = na.url.clone();
    assert_eq!(
        object_status(na, &outside_md5).await?,
        StatusCode::NOT_FOUND
    );

    // An anonymous flag of a made-up device: 401, and nothing is queued or pulled.
    let (status, v) = flag(&url, "made-up-device", &outside, None).await?;
    assert_unauthorized(status, &v, "anonymous flag");
    assert_eq!(fed.metric("na", "docfed_pending_fetches").await?, 0);
    assert_eq!(
        object_status(na, &outside_md5).await?,
        StatusCode::NOT_FOUND
    );
    let (device, secret) = registered(&url).await?;
    let (status, v) = flag(&url, &device, &outside, Some(&"f".repeat(64))).await?;
    assert_unauthorized(status, &v, "wrong secret");
    assert_eq!(fed.metric("na", "docfed_pending_fetches").await?, 0);

    // Flagged: na pulls and keeps the out-of-scope content.
    for id in [&outside, &inside, &twin_out] {
        let (status, v) = flag(&url, &device, id, Some(&secret)).await?;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    fed.await_meta("na", &outside, T, |m| m["available_here"] == true)
        .await?;
    assert!(object_file(na, &outside_md5).exists());

    // Unflagged: the out-of-scope object goes, file and row.
    let (status, v) = unflag(&url, &device, &outside, Some(&secret)).await?;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["objects_released"], 1, "{v}");
    assert!(
        !object_file(na, &outside_md5).exists(),
        "the released file is still there"
    );
    assert_eq!(
        object_status(na, &outside_md5).await?,
        StatusCode::NOT_FOUND
    );
    let meta = fed.await_meta("na", &outside, T, |_| true).await?;
    assert_eq!(meta["available_here"], false, "{meta}");
    assert!(fed.metric("na", "docfed_objects_released_total").await? >= 1);
    // In scope, or shared with a document in scope: kept.
    for (id, md5) in [(&inside, &inside_md5), (&twin_out, &twin_md5)] {
        let (status, v) = unflag(&url, &device, id, Some(&secret)).await?;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["objects_released"], 0, "{v}");
        assert!(
            object_file(na, md5).exists(),
            "{id}: released content na needs"
        );
        assert_eq!(object_status(na, md5).await?, StatusCode::OK);
    }

    // Two devices flag it: the first unflag keeps it, the second device's revocation frees it.
    let (other, other_secret) = registered(&url).await?;
    for (d, s) in [(&device, &secret), (&other, &other_secret)] {
        let (status, v) = flag(&url, d, &outside, Some(s)).await?;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    fed.await_meta("na", &outside, T, |m| m["available_here"] == true)
        .await?;
    let (status, v) = unflag(&url, &device, &outside, Some(&secret)).await?;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["objects_released"], 0,
        "another device still flags it: {v}"
    );
    assert!(object_file(na, &outside_md5).exists());
    let resp = auth(client().delete(na.url(&format!("/v1/devices/{other}"))))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await?;
    assert_eq!(v["objects_released"], 1, "{v}");
    assert!(!object_file(na, &outside_md5).exists());
    let (status, v) = flag(&url, &other, &outside, Some(&other_secret)).await?;
    assert_unauthorized(status, &v, "a revoked device");

    // Unflagged while its pull is queued or running: the fetch is dropped, the pull (which
    // nobody follows) stopped, and nothing is kept, whichever way the race goes.
    let pulled_before = fed.metric("na", "docfed_bytes_pulled_total").await?;
    let (status, v) = flag(&url, &device, &slow, Some(&secret)).await?;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["pulling"], true, "{v}");
    let (status, v) = unflag(&url, &device, &slow, Some(&secret)).await?;
    assert_eq!(status, StatusCode::OK, "{v}");
    let partial = na.dir.join("partial").join(&slow_md5);
    let deadline = std::time::Instant::now() + T;
    loop {
        let served = object_status(na, &slow_md5).await?;
        if served == StatusCode::NOT_FOUND
            && !partial.exists()
            && !object_file(na, &slow_md5).exists()
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the unflagged pull left something: /v1/objects {served}, partial {}, object {}",
                partial.exists(),
                object_file(na, &slow_md5).exists()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fed.metric("na", "docfed_pending_fetches").await?, 0);
    assert!(fed.metric("na", "docfed_fetches_dropped_total").await? >= 1);
    let pulled = fed.metric("na", "docfed_bytes_pulled_total").await? - pulled_before;
    assert!(
        pulled < 6_000_000,
        "the dropped pull ran to its end ({pulled} bytes)"
    );
    // The node still serves it to readers, through from a holder.
    let resp = client()
        .get(na.url(&format!("/v1/documents/{outside}/content")))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await?.to_vec() == pattern(1, 200_000));
    Ok(())
}

/// A device flags a document while a reader's on-demand transfer of its bytes is running at
/// na (out of na's scope, so na did not hold them). The flag queues a pull of the same bytes;
/// the transfer, once verified, keeps them for the flag and settles that queued pull in the
/// same transaction: the bytes cross once, and the primary hears at once that na holds them.
#[tokio::test]
async fn a_flag_during_a_readers_transfer_is_settled_by_that_transfer() -> TestResult {
    // 1 MB/s: the 6 MB read lasts about 6 s, so the flag lands while it runs.
    let fed = Federation::start(&["--pull-rate-limit", "1MB"]).await?;
    let size = 6_000_000;
    let data = pattern(5, size);
    let (id, md5) = publish_at(
        &fed.node("primary-a").url,
        "title=Far&scope=region:eu",
        data.clone(),
    )
    .await?;
    fed.await_meta("eu", &id, T, |m| m["available_here"] == true)
        .await?;
    fed.await_meta("na", &id, T, |m| m["available_here"] == false)
        .await?;
    let na = fed.node("na");
    let pulled_before = fed.metric("na", "docfed_bytes_pulled_total").await?;

    let resp = client()
        .get(na.url(&format!("/v1/documents/{id}/content")))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let (device, secret) = registered(&na.url).await?;
    let (status, v) = flag(&na.url, &device, &id, Some(&secret)).await?;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let pulled = fed.metric("na", "docfed_bytes_pulled_total").await? - pulled_before;
    assert!(
        pulled < size as u64,
        "the transfer ended ({pulled} bytes) before the flag: this test shows nothing"
    );
    assert!(resp.bytes().await? == data, "the reader's bytes differ");

    fed.await_meta("na", &id, T, |m| m["available_here"] == true)
        .await?;
    assert!(object_file(na, &md5).exists());
    let na_id = fed.id("na");
    let propagation = fed
        .node("primary-a")
        .url(&format!("/v1/documents/{id}/propagation"));
    eventually(T, "na's content receipt at primary-a", || async {
        let Some(p) = client().get(&propagation).json_or_none().await else {
            return Ok(None);
        };
        let held = p["nodes"].as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .any(|n| n["node"] == na_id.as_str() && n["content"] == true)
        });
        Ok(held.then_some(()))
    })
    .await?;
    assert_eq!(fed.metric("na", "docfed_pending_fetches").await?, 0);
    let pulled = fed.metric("na", "docfed_bytes_pulled_total").await? - pulled_before;
    assert_eq!(pulled, size as u64, "the bytes crossed more than once");
    Ok(())
}
