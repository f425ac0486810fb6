//! Messages a node must not act on: malformed, forged or impersonated ones go to the dead-letter
//! queue with their reason and change nothing.

use super::*;

#[tokio::test]
async fn malformed_messages_go_to_the_dead_letter_queue() -> TestResult {
    let fed = Federation::start(&[]).await?;
    let na = fed.id("na");
    let conn = lapin::Connection::connect(
        &crate::common::federation::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let ch = conn.create_channel().await?;
    for payload in [
        &b"not json at all"[..],
        br#"{"schema":99,"id":"x","from":"y","body":{}}"#,
        br#"{"schema":1,"id":"x","from":"BAD ID","body":{"type":"receipt"}}"#,
    ] {
        fed.send_to_inbox(&ch, "na", payload, None).await?;
    }
    fed.await_metric("na", "docfed_notifications_dead_lettered_total", 3)
        .await?;
    assert_eq!(queue_depth(&ch, &format!("docfed.{na}.dead")).await?, 3);
    // The node goes on working.
    let id = publish(&fed, "primary-a", "title=after", b"ok".to_vec()).await?;
    fed.await_meta("na", &id, T, |m| m["available_here"] == true)
        .await?;
    conn.close(200, "done".into()).await?;
    Ok(())
}

/// While the broker refuses every message for the dead-letter queue (here: the queue is gone,
/// so a dead letter is unroutable), a malformed message is not acked: it stays in the inbox,
/// and reaches the dead-letter queue once the node has declared it again. Nothing is dropped
/// on the floor.
#[tokio::test]
async fn a_refused_dead_letter_is_not_acked() -> TestResult {
    let fed = Federation::start(&[]).await?;
    let na = fed.id("na");
    let dead = format!("docfed.{na}.dead");
    let conn = lapin::Connection::connect(
        &crate::common::federation::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let ch = conn.create_channel().await?;
    ch.queue_delete(dead.as_str().into(), Default::default())
        .await?;
    fed.send_to_inbox(&ch, "na", b"not a docfed message", None)
        .await?;
    wait_until(T, "na to report the refusal", || {
        fed.node("na")
            .log()
            .contains("the broker refused to take a message")
    })
    .await?;
    // The inbox connection starts over, declares its queues again, and the message, never
    // acked, comes back and is dead-lettered.
    fed.await_metric("na", "docfed_notifications_dead_lettered_total", 1)
        .await?;
    assert_eq!(queue_depth(&ch, &dead).await?, 1);
    conn.close(200, "done".into()).await?;
    Ok(())
}

/// Messages forged with a real AMQP client into a regional node's inbox: an unsigned one, one
/// signed with another node's key than its sender's, and, signed with the sender's real key (a
/// compromised member), a notification that names an outside server to pull from (SSRF), one
/// from a node that is not a parent, one whose version would overflow the next edit, a version
/// primary-a never signed, and one it signed that the relay altered. Each
/// lands in the dead-letter queue with its reason; the outside server is never contacted and no
/// node records the document.
#[tokio::test]
async fn forged_messages_are_dead_lettered_and_change_nothing() -> TestResult {
    use crate::common::relay;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // The "internal service" an attacker would like the node to fetch from.
    let victim = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let victim_url = format!("http://{}", victim.local_addr()?);
    let contacted = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = contacted.clone();
    let victim_task = tokio::spawn(async move {
        while let Ok((_conn, _)) = victim.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });

    let fed = Federation::start(&[]).await?;
    let (na, mid1) = (fed.id("na"), fed.id("mid-1"));
    let doc = |version: i64| {
        let mut d = relay::version(&fed, "forged", "0123456789abcdef0123456789abcdef", 1000)
            .expect("a valid version");
        d.version = version;
        d.sha256 = Some("0".repeat(64).parse().unwrap());
        d
    };
    let notify = relay::notification;
    let (unsigned, impersonated, ssrf, sibling, overflow) =
        (doc(1), doc(1), doc(1), doc(1), doc(i64::MAX));
    // Versions relayed by a member with its own valid key: one primary-a never signed, one it
    // signed and the relay then altered.
    let (unsigned_version, mut altered) = (doc(1), doc(1));
    altered.signature = Some(fed.key("primary-a")?.sign(&altered.signing_input()));
    altered.title = "altered on the way".into();
    let mid1_url = fed.node("mid-1").url("");
    // (message, whose key signs it, what the dead letter must say)
    let forged = [
        (
            notify(&mid1, unsigned.clone(), mid1_url.clone()),
            None,
            "unsigned",
        ),
        (
            notify(&mid1, impersonated.clone(), mid1_url.clone()),
            Some("mid-2"),
            "does not verify",
        ),
        (
            notify(&mid1, ssrf.clone(), victim_url.clone()),
            Some("mid-1"),
            "pull from",
        ),
        (
            notify(&fed.id("eu"), sibling.clone(), fed.node("eu").url("")),
            Some("eu"),
            "only a parent",
        ),
        (
            notify(&mid1, overflow.clone(), mid1_url.clone()),
            Some("mid-1"),
            "version",
        ),
        (
            notify(&mid1, unsigned_version.clone(), mid1_url.clone()),
            Some("mid-1"),
            "is not signed",
        ),
        (
            notify(&mid1, altered.clone(), mid1_url.clone()),
            Some("mid-1"),
            "does not match its origin's signature",
        ),
    ];
    let conn = lapin::Connection::connect(
        &crate::common::federation::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let ch = conn.create_channel().await?;
    for (env, signer, _) in &forged {
        fed.send_to_inbox(&ch, "na", &env.to_bytes(), *signer)
            .await?;
    }
    fed.await_metric("na", "docfed_notifications_dead_lettered_total", 7)
        .await?;
    let reasons = dead_letter_reasons(&ch, &format!("docfed.{na}.dead")).await?;
    assert_eq!(reasons.len(), 7, "{reasons:?}");
    for (_, _, expected) in &forged {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no dead letter says {expected:?}: {reasons:?}"
        );
    }
    // A real publication after the forgeries arrives, so the forgeries were handled first.
    let id = publish(&fed, "primary-a", "title=after", b"ok".to_vec()).await?;
    fed.await_meta("na", &id, T, |m| m["available_here"] == true)
        .await?;
    for d in [
        &unsigned,
        &impersonated,
        &ssrf,
        &sibling,
        &overflow,
        &unsigned_version,
        &altered,
    ] {
        let resp = client()
            .get(fed.node("na").url(&format!("/v1/documents/{}", d.id)))
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(
        contacted.load(Ordering::SeqCst),
        0,
        "the node contacted {victim_url}"
    );
    victim_task.abort();
    conn.close(200, "done".into()).await?;
    Ok(())
}

/// Batches forged into a regional node's inbox with a real AMQP client: in a batch its sender
/// signed, a good notification is recorded and a bad one beside it dead-lettered alone; a batch
/// signed with another key, one mixing senders, one too large and one that is not an array are
/// dead-lettered whole, and nothing in them is recorded.
#[tokio::test]
async fn batches_are_signed_whole_and_admitted_message_by_message() -> TestResult {
    use crate::common::relay;
    use docfed_shared::messages::{join_batch, BATCH_CONTENT_TYPE, MAX_BATCH};

    let fed = Federation::start(&[]).await?;
    let (na, mid1, mid2) = (fed.id("na"), fed.id("mid-1"), fed.id("mid-2"));
    let (mid1_url, mid2_url) = (fed.node("mid-1").url(""), fed.node("mid-2").url(""));
    // Genuine versions (signed by primary-a) whose bytes nobody holds: recording the metadata
    // is what shows a notification was acted on.
    let genuine = |title: &str| -> TestResult<docfed_shared::wire::DocumentVersion> {
        let mut d = relay::version(&fed, title, "0123456789abcdef0123456789abcdef", 1000)?;
        d.sha256 = Some("0".repeat(64).parse()?);
        relay::sign(&fed, "primary-a", d)
    };
    let (kept, also_kept, unsigned) = (genuine("kept")?, genuine("also kept")?, {
        let mut d = genuine("unsigned")?;
        d.signature = None;
        d
    });
    let (wrong_key, mixed) = (genuine("wrong key")?, genuine("mixed")?);
    let from_mid1 = |d: &docfed_shared::wire::DocumentVersion| {
        relay::notification(&mid1, d.clone(), mid1_url.clone()).to_bytes()
    };
    let conn = lapin::Connection::connect(
        &crate::common::federation::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let ch = conn.create_channel().await?;
    let batch = Some(BATCH_CONTENT_TYPE);
    let one_bad = join_batch([
        from_mid1(&kept).as_slice(),
        from_mid1(&unsigned).as_slice(),
        from_mid1(&also_kept).as_slice(),
    ]);
    fed.send_to_inbox_as(&ch, "na", &one_bad, Some("mid-1"), batch)
        .await?;
    let signed_by_another = join_batch([from_mid1(&wrong_key).as_slice()]);
    fed.send_to_inbox_as(&ch, "na", &signed_by_another, Some("mid-2"), batch)
        .await?;
    let from_mid2 = relay::notification(&mid2, mixed.clone(), mid2_url).to_bytes();
    let two_senders = join_batch([from_mid1(&mixed).as_slice(), from_mid2.as_slice()]);
    fed.send_to_inbox_as(&ch, "na", &two_senders, Some("mid-1"), batch)
        .await?;
    let one = from_mid1(&mixed);
    let too_many = join_batch(std::iter::repeat_n(one.as_slice(), MAX_BATCH + 1));
    fed.send_to_inbox_as(&ch, "na", &too_many, Some("mid-1"), batch)
        .await?;
    fed.send_to_inbox_as(&ch, "na", &one, Some("mid-1"), batch)
        .await?;

    fed.await_metric("na", "docfed_notifications_dead_lettered_total", 5)
        .await?;
    let reasons = dead_letter_reasons(&ch, &format!("docfed.{na}.dead")).await?;
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    for expected in [
        "in a batch: version 1 of",
        "does not verify",
        "more than one sender",
        "at most 256",
        "not a docfed message",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no dead letter says {expected:?}: {reasons:?}"
        );
    }
    for d in [&kept, &also_kept] {
        fed.await_meta("na", &d.id.to_string(), T, |m| {
            m["title"] == d.title.as_str()
        })
        .await?;
    }
    for d in [&unsigned, &wrong_key, &mixed] {
        let resp = client()
            .get(fed.node("na").url(&format!("/v1/documents/{}", d.id)))
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{}", d.title);
    }
    conn.close(200, "done".into()).await?;
    Ok(())
}

/// What the dead letters in `queue` say, taking them off the queue.
pub(super) async fn dead_letter_reasons(
    ch: &lapin::Channel,
    queue: &str,
) -> TestResult<Vec<String>> {
    let mut reasons = Vec::new();
    while let Some(m) = ch
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await?
    {
        let why = m.delivery.properties.headers().as_ref().and_then(|h| {
            match h.inner().get("x-docfed-error") {
                Some(lapin::types::AMQPValue::LongString(s)) => Some(s.to_string()),
                _ => None,
            }
        });
        reasons.push(why.unwrap_or_default());
    }
    Ok(reasons)
}

/// A member with its own valid key (a compromised regional node) reports receipts for another
/// node: that it holds content it does not, so the primaries would stop sending it there. The
/// parent refuses every receipt not from the node it names or a node below the sender.
#[tokio::test]
async fn a_receipt_for_another_node_is_dead_lettered() -> TestResult {
    use docfed_shared::messages::{Body, Envelope, Receipt};

    let fed = Federation::start(&[]).await?;
    let mid1 = fed.id("mid-1");
    let id = publish(&fed, "primary-a", "title=reported", b"bytes".to_vec()).await?;
    let meta = fed
        .await_meta("mid-1", &id, T, |m| m["available_here"] == true)
        .await?;
    let version = serde_json::from_value::<docfed_shared::wire::DocumentMeta>(meta)?.current;
    let forged = |node: &str| {
        Envelope::new(
            format!("r:{node}:forged"),
            &fed.id("eu"),
            Body::Receipt(Receipt::of(&version, &fed.id(node), true)),
        )
    };
    crate::common::relay::relay(&fed, "eu", "mid-1", &forged("na")).await?;
    crate::common::relay::relay(&fed, "eu", "mid-1", &forged("primary-b")).await?;
    fed.await_metric("mid-1", "docfed_notifications_dead_lettered_total", 2)
        .await?;
    let conn = lapin::Connection::connect(
        &crate::common::federation::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let ch = conn.create_channel().await?;
    let reasons = dead_letter_reasons(&ch, &format!("docfed.{mid1}.dead")).await?;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("neither the sender nor a node below it")),
        "{reasons:?}"
    );
    conn.close(200, "done".into()).await?;
    Ok(())
}

/// A member floods a neighbour's inbox while that node is down: the broker takes no more than
/// the federation's `[queues] max_messages` and refuses the rest (so the flood cannot fill the
/// broker's disk), and the federation's own notifications are not lost to the full queue: the
/// relays keep them in their outboxes and deliver once there is room.
#[tokio::test]
async fn a_flooded_inbox_is_bounded_and_real_notifications_still_arrive() -> TestResult {
    const BOUND: u32 = 40;
    let mut fed =
        Federation::start_with_sources(&[], &format!("[queues]\nmax_messages = {BOUND}\n")).await?;
    let na = fed.id("na");
    let inbox = docfed_shared::topology::inbox_queue(&na);
    fed.node_mut("na").kill();
    let conn = lapin::Connection::connect(
        &crate::common::federation::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(Default::default()).await?;
    let (mut taken, mut refused) = (0, 0);
    for i in 0..(BOUND + 20) {
        let confirm = ch
            .basic_publish(
                // The inbox's own exchange, as members publish.
                inbox.as_str().into(),
                "".into(),
                Default::default(),
                format!("junk {i}").as_bytes(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
        if confirm.is_ack() {
            taken += 1;
        } else {
            refused += 1;
        }
    }
    assert!(refused >= 20, "taken {taken}, refused {refused}");
    assert!(queue_depth(&ch, &inbox).await? <= BOUND);
    // A real publication while the queue is full: its notifications wait in the relays.
    let id = publish(
        &fed,
        "primary-a",
        "title=after%20the%20flood",
        b"ok".to_vec(),
    )
    .await?;
    // Twice the bound in dead letters: the dead-letter queue keeps the newest and drops the
    // oldest, so junk can never block the inbox behind a full dead-letter queue.
    for i in 0..BOUND {
        let confirm = ch
            .basic_publish(
                docfed_shared::topology::dead_letter_queue(&na)
                    .as_str()
                    .into(),
                "".into(),
                Default::default(),
                format!("old dead letter {i}").as_bytes(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
        assert!(confirm.is_ack(), "a dead-letter queue takes every message");
    }
    fed.node_mut("na").start_again().await?;
    // na drains the junk (dead letters), then takes the waiting notifications.
    fed.await_meta("na", &id, T, |m| m["available_here"] == true)
        .await?;
    assert!(
        queue_depth(&ch, &docfed_shared::topology::dead_letter_queue(&na)).await? <= BOUND,
        "the dead-letter queue keeps at most the bound"
    );
    conn.close(200, "done".into()).await?;
    Ok(())
}
