//! Failover between the two primaries: a banner while one is down, requests going to the other,
//! metadata changes retried there, and an upload whose primary dies half-way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;

use crate::common::{bytes, eventually, Client, Env, TestResult};

/// The role (`pa`/`pb`) of the primary the portal will use next.
async fn next_primary(env: &Env, c: &Client) -> TestResult<String> {
    let (_, h) = c.json("/healthz").await?;
    let name = h["next_primary"]
        .as_str()
        .ok_or("healthz without next_primary")?;
    Ok(name.rsplit('-').next().unwrap_or("").to_owned()).and_then(|r| {
        if env.id(&r) == name {
            Ok(r)
        } else {
            Err(format!("unexpected primary {name}").into())
        }
    })
}

fn other(role: &str) -> &'static str {
    if role == "pa" {
        "pb"
    } else {
        "pa"
    }
}

#[tokio::test]
async fn primary_down_banner_and_failover() -> TestResult {
    let mut env = Env::start(&[]).await?;
    let alice = env.author("alice").await?;
    let a = alice
        .publish("Before the outage", "global", "", bytes(1000, 1))
        .await?;
    for role in ["pa", "pb"] {
        eventually(
            Duration::from_secs(20),
            "replication to both primaries",
            || env.node_doc(role, &a),
        )
        .await?;
    }
    assert!(!alice
        .get("/documents")
        .await?
        .body
        .contains("class=\"banner\""));

    // The primary in use goes down: a banner names it, the portal moves to the other.
    let first = next_primary(&env, &alice).await?;
    let first_id = env.id(&first);
    env.fed.stop_node(&first_id).await?;
    let page = eventually(Duration::from_secs(15), "the banner", || async {
        let p = alice.get("/documents").await?;
        Ok(p.body.contains("class=\"banner\"").then_some(p))
    })
    .await?;
    assert!(
        page.body.contains(&format!("{first_id} (")),
        "{}",
        page.body
    );
    assert!(page.body.contains("is not reachable: it went down "));
    assert!(page
        .body
        .contains(&format!("The portal uses {}", env.id(other(&first)))));

    // Delete (metadata only) works through the other primary.
    let confirm = alice.get(&format!("/documents/{a}/delete")).await?;
    let p = alice
        .post_form(
            &format!("/documents/{a}/delete"),
            &[("csrf", &confirm.csrf())],
        )
        .await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(
        env.node_doc(other(&first), &a).await?.ok_or("missing")?["deleted"],
        true
    );
    // So does publishing.
    let b = alice
        .publish("During the outage", "global", "", bytes(2000, 2))
        .await?;
    assert!(env.node_doc(other(&first), &b).await?.is_some());
    let page = alice.get(&format!("/documents/{b}")).await?;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("During the outage"));

    // Both down: every page still renders, with the banner, from what the portal knows.
    let second_id = env.id(other(&first));
    env.fed.stop_node(&second_id).await?;
    let list = eventually(Duration::from_secs(15), "the all-down banner", || async {
        let p = alice.get("/documents?state=any").await?;
        Ok(p.body.contains("No primary is reachable").then_some(p))
    })
    .await?;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("During the outage") && list.body.contains("Before the outage"));
    let page = alice.get(&format!("/documents/{b}")).await?;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Showing what the portal last saw"));
    assert!(page.body.contains("Propagation status is unavailable"));
    let inbox = alice.get("/annotations").await?;
    assert_eq!(inbox.status, StatusCode::OK);
    assert!(inbox.body.contains("unavailable while no primary answers"));
    let p = alice
        .post_with_csrf(
            &format!("/documents/{b}"),
            &format!("/documents/{b}/delete"),
            &[],
        )
        .await?;
    assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        p.body.contains("No primary answers right now")
            && p.body.contains("No primary is reachable")
    );
    let p = alice
        .upload(
            "/publish",
            &[("title", "Nowhere to go"), ("scope", "global")],
            Some(("x.txt", bytes(1000, 3))),
        )
        .await?;
    assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE, "{}", p.body);
    assert!(p.body.contains("No primary answers"), "{}", p.body);
    assert!(p.body.contains("Nothing was published"), "{}", p.body);
    assert!(
        p.body.contains("value=\"Nowhere to go\""),
        "what was typed is kept"
    );
    for body in [&list.body, &page.body, &p.body] {
        assert!(!body.contains("panicked") && !body.contains("stack backtrace"));
    }

    // Back up: the banner goes away.
    env.fed.start_node(&first_id).await?;
    env.fed.start_node(&second_id).await?;
    eventually(Duration::from_secs(15), "the banner to go", || async {
        let p = alice.get("/documents").await?;
        Ok((!p.body.contains("class=\"banner\"")).then_some(()))
    })
    .await?;
    alice
        .publish("After the outage", "global", "", bytes(100, 4))
        .await?;
    Ok(())
}

#[tokio::test]
async fn primary_dies_during_an_upload() -> TestResult {
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: u64 = 32;
    const KILL_AFTER: u64 = 12;
    let mut env = Env::start(&[]).await?;
    let alice = env.author("alice").await?;
    let target = next_primary(&env, &alice).await?;
    let target_id = env.id(&target);

    // A browser-like multipart body whose file part is produced slowly; it pauses after
    // KILL_AFTER chunks until the test has killed the primary.
    let token = alice.csrf().await?;
    let boundary = "----docfedtestboundary7MA4YWxkTrZu0gW";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{token}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nCut short\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"scope\"\r\n\r\nglobal\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let sent = Arc::new(AtomicU64::new(0));
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let chunk = Bytes::from(bytes(CHUNK, 5));
    let stream = {
        let sent = sent.clone();
        futures::stream::unfold((0u64, Some(go_rx)), move |(i, mut go)| {
            let (sent, chunk, head, tail) =
                (sent.clone(), chunk.clone(), head.clone(), tail.clone());
            async move {
                let item = match i {
                    0 => Bytes::from(head),
                    n if n <= CHUNKS => {
                        if n == KILL_AFTER + 1 {
                            if let Some(go) = go.take() {
                                let _ = go.await;
                            }
                        }
                        chunk
                    }
                    n if n == CHUNKS + 1 => Bytes::from(tail),
                    _ => return None,
                };
                sent.store(i, Ordering::SeqCst);
                Some((Ok::<_, std::io::Error>(item), (i + 1, go)))
            }
        })
    };
    let http = alice.http.clone();
    let url = format!("{}/publish", alice.base);
    let upload = tokio::spawn(async move {
        let r = http
            .post(url)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await?;
        Client::read(r).await
    });

    eventually(
        Duration::from_secs(30),
        "the upload to be under way",
        || async { Ok((sent.load(Ordering::SeqCst) >= KILL_AFTER).then_some(())) },
    )
    .await?;
    // Let the portal forward what it has, then crash the primary.
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.fed.kill_node(&target_id).await?;
    let _ = go_tx.send(());

    let page = tokio::time::timeout(Duration::from_secs(60), upload).await???;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    assert!(
        page.body
            .contains(&format!("Primary {target_id} failed during the upload")),
        "{}",
        page.body
    );
    assert!(page.body.contains("Nothing was published; please retry"));
    assert!(page.body.contains("value=\"Cut short\""));
    assert!(
        page.body.contains("class=\"banner\""),
        "the dead primary is announced"
    );

    // Nothing half-published: not on the surviving primary, not on the crashed one after its
    // restart, not in the portal.
    assert!(env
        .node_search(other(&target), "Cut short")
        .await?
        .is_empty());
    env.fed.start_node(&target_id).await?;
    assert!(env.node_search(&target, "Cut short").await?.is_empty());
    assert!(!alice
        .get("/documents?state=any")
        .await?
        .body
        .contains("Cut short"));

    // The retry goes through (to whichever primary is preferred now).
    let id = alice
        .publish("Cut short", "global", "", bytes(3 * CHUNK, 6))
        .await?;
    assert!(
        env.node_doc(other(&target), &id).await?.is_some()
            || env.node_doc(&target, &id).await?.is_some()
    );
    Ok(())
}
