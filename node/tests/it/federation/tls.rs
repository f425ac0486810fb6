//! A federation whose links use TLS (ARCHITECTURE.md §2.10): documents travel over HTTPS with
//! mutual authentication between nodes; users' endpoints need only the CA; pulls need a node's
//! certificate; a revoked node is refused without restarting anyone.

use std::path::Path;
use std::process::Command;

use super::*;
use crate::common::federation::ROLES;

/// `curl` (a real third-party client) against `url`: the HTTP status, or `Err` with curl's exit
/// code and message when no HTTP answer came (a refused handshake, an unverified server).
fn curl(url: &str, ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<u16, String> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ]);
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    if let Some((cert, key)) = identity {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd.arg(url).output().map_err(|e| e.to_string())?;
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<u16>()
        .unwrap_or(0);
    if out.status.success() && code != 0 {
        Ok(code)
    } else {
        Err(format!(
            "curl exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[tokio::test]
async fn documents_travel_over_mutual_tls_and_a_revoked_node_is_locked_out() -> TestResult {
    let fed = Federation::start_tls(&[]).await?;
    let certs = fed
        .certs
        .clone()
        .expect("a TLS federation has certificates");
    let ca = certs.ca();
    // A user's client: it trusts the federation CA and has no certificate.
    let user = docfed_http::tls::reqwest_trusting(Some(&ca))?.build()?;
    for role in ROLES {
        assert!(
            fed.node(role).url("").starts_with("https://"),
            "{role} serves HTTPS"
        );
    }

    // Publication reaches every regional node, pulled over mutual TLS at every hop.
    let body = pattern(21, 2_000_000);
    let (id, md5) = publish_over_tls(&user, &fed, "Over%20TLS", &body).await?;
    await_everywhere(&user, &fed, &id, &body).await?;

    let object = fed.node("na").url(&format!("/v1/objects/{md5}"));
    let (mid1_cert, mid1_key) = certs.node(&fed.id("mid-1"));
    // curl without the CA does not trust the node; plain HTTP gets no answer from it.
    assert!(curl(&fed.node("na").url("/v1/health"), None, None).is_err());
    let plain = fed
        .node("na")
        .url("/v1/health")
        .replacen("https", "http", 1);
    assert!(
        curl(&plain, None, None).is_err(),
        "plain HTTP is not served"
    );
    // Users' endpoints need only the CA; a pull needs a node's certificate.
    assert_eq!(
        curl(&fed.node("na").url("/v1/health"), Some(&ca), None),
        Ok(200)
    );
    assert_eq!(curl(&object, Some(&ca), None), Ok(403));
    assert_eq!(
        curl(&object, Some(&ca), Some((&mid1_cert, &mid1_key))),
        Ok(200)
    );
    // A node may not claim to be another in the pull's node header.
    let claimed = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&ca)
        .arg("--cert")
        .arg(&mid1_cert)
        .arg("--key")
        .arg(&mid1_key)
        .args([
            "-H",
            &format!(
                "{}: {}",
                docfed_shared::keys::PULL_NODE_HEADER,
                fed.id("mid-2")
            ),
        ])
        .arg(&object)
        .output()?;
    assert_eq!(String::from_utf8_lossy(&claimed.stdout), "403");

    // A certificate of another CA with the same node id is refused at the handshake.
    let other = tempfile::tempdir()?;
    let stranger = topology::certs::CertDir(other.path().to_owned());
    let topo = docfed_shared::Topology::load(&fed_topology(&fed))?;
    topology::certs::generate(&topo, &stranger, &Default::default())?;
    let (fake_cert, fake_key) = stranger.node(&fed.id("mid-1"));
    assert!(curl(&object, Some(&ca), Some((&fake_cert, &fake_key))).is_err());

    // Revoking mid-1: within seconds, without a restart, its certificate no longer opens a
    // connection to its peers, and it pulls nothing more. (`revoke` takes the files away; the
    // running node keeps presenting the certificate it loaded, as would a stolen copy.)
    let copy = tempfile::tempdir()?;
    let (old_cert, old_key) = (copy.path().join("mid-1.pem"), copy.path().join("mid-1.key"));
    std::fs::copy(&mid1_cert, &old_cert)?;
    std::fs::copy(&mid1_key, &old_key)?;
    topology::certs::revoke(&topo, &certs, &fed.id("mid-1"))?;
    let primary_object = fed.node("primary-a").url(&format!("/v1/objects/{md5}"));
    wait_until_async(
        T,
        "the primaries refuse mid-1's revoked certificate",
        || async {
            curl(&primary_object, Some(&ca), Some((&old_cert, &old_key)))
                .is_err()
                .then_some(())
        },
    )
    .await?;
    for role in ["primary-b", "mid-2", "na"] {
        let url = fed.node(role).url(&format!("/v1/objects/{md5}"));
        wait_until_async(T, &format!("{role} refuses mid-1"), || async {
            curl(&url, Some(&ca), Some((&old_cert, &old_key)))
                .is_err()
                .then_some(())
        })
        .await?;
    }
    // The others are unaffected: mid-2's certificate still pulls.
    let (mid2_cert, mid2_key) = certs.node(&fed.id("mid-2"));
    assert_eq!(
        curl(&primary_object, Some(&ca), Some((&mid2_cert, &mid2_key))),
        Ok(200)
    );

    // A document published now reaches the regional nodes through mid-2; mid-1, whose pulls
    // are refused, never holds its content.
    let body2 = pattern(22, 500_000);
    let (id2, md5_2) = publish_over_tls(&user, &fed, "After%20revocation", &body2).await?;
    await_everywhere(&user, &fed, &id2, &body2).await?;
    let at_mid1 = auth(user.get(fed.node("mid-1").url(&format!("/v1/objects/{md5_2}"))))
        .send()
        .await?
        .status();
    assert_ne!(at_mid1, StatusCode::OK, "mid-1 pulled after its revocation");
    Ok(())
}

/// Publishes `body` at primary-a over HTTPS; its id and MD5.
async fn publish_over_tls(
    user: &reqwest::Client,
    fed: &Federation,
    title: &str,
    body: &[u8],
) -> TestResult<(String, String)> {
    let url = fed
        .node("primary-a")
        .url(&format!("/v1/documents?title={title}"));
    let resp = auth(user.post(url)).body(body.to_vec()).send().await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let doc: Value = resp.json().await?;
    Ok((
        doc["id"].as_str().unwrap().to_owned(),
        doc["md5"].as_str().unwrap().to_owned(),
    ))
}

/// Waits until every regional node serves document `id`, then checks its bytes.
async fn await_everywhere(
    user: &reqwest::Client,
    fed: &Federation,
    id: &str,
    body: &[u8],
) -> TestResult {
    for role in ["na", "eu", "asia"] {
        let url = fed.node(role).url(&format!("/v1/documents/{id}/content"));
        wait_until_async(T, &format!("{role} serves {id}"), || async {
            let r = user.get(&url).send().await.ok()?;
            (r.status() == StatusCode::OK).then_some(())
        })
        .await?;
        let got = user.get(&url).send().await?.bytes().await?;
        assert!(got == body, "{role}: content of {id} differs");
    }
    Ok(())
}

/// The topology file the federation's nodes read.
fn fed_topology(fed: &Federation) -> std::path::PathBuf {
    fed.topology_file()
}

/// A connection to the federation's broker as whoever `identity` (certificate, key) names.
async fn broker_as(
    fed: &Federation,
    identity: Option<(&Path, &Path)>,
) -> Result<lapin::Connection, lapin::Error> {
    use docfed_node::amqp;
    let ca = fed.certs.as_ref().expect("certificates").ca();
    let uri = amqp::broker_uri(fed.broker()).expect("a valid URL");
    let props = lapin::ConnectionProperties::default();
    match identity {
        Some((cert, key)) => {
            let crl = fed.certs.as_ref().expect("certificates").crl();
            let tls =
                amqp::BrokerTls::load(cert, key, &ca, Some(&crl)).expect("readable certificates");
            amqp::open(uri, props, Some(&tls)).await
        }
        // The CA alone: the broker is trusted, but no certificate is presented.
        None => {
            let tls = lapin::tcp::OwnedTLSConfig {
                identity: None,
                cert_chain: Some(std::fs::read_to_string(&ca).expect("the CA")),
            };
            let runtime = lapin::runtime::default_runtime()?;
            lapin::Connection::connect_uri_with_config(uri, props, tls, runtime).await
        }
    }
}

/// Publishes a test payload to `exchange` with `routing_key` on a new confirming channel of
/// `conn`, and waits for the broker's answer.
async fn publish_on(
    conn: &lapin::Connection,
    exchange: &str,
    routing_key: &str,
) -> Result<lapin::Confirmation, lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(Default::default()).await?;
    ch.basic_publish(
        exchange.into(),
        routing_key.into(),
        lapin::options::BasicPublishOptions::default(),
        b"not a message",
        Default::default(),
    )
    .await?
    .await
}

/// Whether a broker operation was refused for lack of permission (AMQP 403).
fn access_refused<T: std::fmt::Debug>(result: Result<T, lapin::Error>) -> bool {
    match result {
        Err(e) => e.to_string().contains("ACCESS_REFUSED") || e.to_string().contains("403"),
        Ok(v) => {
            eprintln!("allowed: {v:?}");
            false
        }
    }
}

#[tokio::test]
async fn the_broker_admits_enrolled_nodes_only_and_confines_each_to_its_own_queues() -> TestResult {
    use lapin::options::{BasicConsumeOptions, QueueDeleteOptions};
    use lapin::types::FieldTable;
    let mut fed = Federation::start_secure(&[]).await?;
    let certs = fed.certs.clone().expect("certificates");
    let user = docfed_http::tls::reqwest_trusting(Some(&certs.ca()))?.build()?;
    assert!(fed.broker().starts_with("amqps://"));

    // Every message between the nodes went through the TLS broker, each node logged in as itself.
    let body = pattern(23, 300_000);
    let (id, _) = publish_over_tls(&user, &fed, "Through%20the%20TLS%20broker", &body).await?;
    await_everywhere(&user, &fed, &id, &body).await?;

    // Every flow the nodes needed was allowed: no node met a refusal.
    for role in ROLES {
        let log = fed.node(role).log();
        assert!(
            !log.contains("ACCESS_REFUSED") && !log.contains(" ERROR "),
            "{role} was refused something: {}",
            log.lines()
                .filter(|l| l.contains("ACCESS_REFUSED") || l.contains(" ERROR "))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // No certificate, no connection: not in clear, not with only the CA, not as guest.
    let (_, port) = topology::broker::amqp_host_port(fed.broker()).expect("a port");
    let clear_url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let clear = lapin::Connection::connect(&clear_url, lapin::ConnectionProperties::default());
    assert!(
        tokio::time::timeout(Duration::from_secs(10), clear)
            .await
            .map_or(true, |r| r.is_err()),
        "the broker speaks AMQP in clear"
    );
    assert!(
        broker_as(&fed, None).await.is_err(),
        "no certificate, yet admitted"
    );
    let broker = fed.private_broker.as_ref().expect("a private broker");
    let users = broker.ctl(&["list_users", "-q"]).await?;
    assert!(
        !users.lines().any(|l| l.starts_with("guest")),
        "the broker has a guest account: {users}"
    );
    // A certificate of another CA, naming a node of this federation, is refused too.
    let other = tempfile::tempdir()?;
    let stranger = topology::certs::CertDir(other.path().to_owned());
    let topo = docfed_shared::Topology::load(&fed_topology(&fed))?;
    topology::certs::generate(&topo, &stranger, &Default::default())?;
    let (fake_cert, fake_key) = stranger.node(&fed.id("mid-2"));
    assert!(broker_as(&fed, Some((&fake_cert, &fake_key)))
        .await
        .is_err());

    // mid-2, logged in with its own certificate, cannot read, delete or fill mid-1's queues.
    let (mid2_cert, mid2_key) = certs.node(&fed.id("mid-2"));
    let mid2 = broker_as(&fed, Some((&mid2_cert, &mid2_key))).await?;
    let mid1_inbox = docfed_shared::topology::inbox_queue(&fed.id("mid-1"));
    let ch = mid2.create_channel().await?;
    assert!(
        access_refused(
            ch.basic_consume(
                mid1_inbox.as_str().into(),
                "thief".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        ),
        "mid-2 consumed mid-1's inbox"
    );
    let ch = mid2.create_channel().await?;
    assert!(
        access_refused(
            ch.queue_delete(mid1_inbox.as_str().into(), QueueDeleteOptions::default())
                .await
        ),
        "mid-2 deleted mid-1's inbox"
    );
    // The default exchange would reach any queue: closed to nodes.
    let dead = docfed_shared::topology::dead_letter_queue(&fed.id("mid-1"));
    assert!(
        access_refused(publish_on(&mid2, "", &dead).await),
        "mid-2 wrote through the default exchange"
    );
    // It may fill the inboxes whose admission takes it as a sender (na, its child: what it
    // sends there unsigned is dead-lettered by na), not its sibling's.
    let na_inbox = docfed_shared::topology::inbox_queue(&fed.id("na"));
    assert!(publish_on(&mid2, &na_inbox, "").await?.is_ack());
    assert!(
        access_refused(publish_on(&mid2, &mid1_inbox, "").await),
        "mid-2 wrote to its sibling's inbox"
    );
    // Its own inbox it may read (as the node itself does).
    let ch = mid2.create_channel().await?;
    let own = docfed_shared::topology::inbox_queue(&fed.id("mid-2"));
    ch.queue_declare(
        own.as_str().into(),
        lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    mid2.close(200, "done".into()).await?;

    // Revoking mid-1 at the broker: its connections are closed and its certificate no longer
    // logs in; the others carry on.
    let (mid1_cert, mid1_key) = certs.node(&fed.id("mid-1"));
    assert!(broker_as(&fed, Some((&mid1_cert, &mid1_key))).await.is_ok());
    let copy = tempfile::tempdir()?;
    let (old_cert, old_key) = (copy.path().join("mid-1.pem"), copy.path().join("mid-1.key"));
    std::fs::copy(&mid1_cert, &old_cert)?;
    std::fs::copy(&mid1_key, &old_key)?;
    topology::certs::revoke(&topo, &certs, &fed.id("mid-1"))?;
    let mid1 = fed.id("mid-1");
    fed.private_broker
        .as_mut()
        .expect("a private broker")
        .revoke(&mid1)
        .await?;
    let refused = broker_as(&fed, Some((&old_cert, &old_key))).await;
    assert!(refused.is_err(), "a revoked node logged in to the broker");
    let consumers = fed
        .private_broker
        .as_ref()
        .expect("a private broker")
        .ctl(&["list_consumers", "-q", "queue_name"])
        .await?;
    assert!(
        !consumers.lines().any(|l| l.trim() == mid1_inbox),
        "mid-1 still consumes its inbox: {consumers}"
    );
    let body2 = pattern(24, 200_000);
    let (id2, _) =
        publish_over_tls(&user, &fed, "After%20the%20broker%20revocation", &body2).await?;
    await_everywhere(&user, &fed, &id2, &body2).await?;
    Ok(())
}

/// A federation in clear switched to TLS one node at a time, with documents published and
/// delivered everywhere at every mixed stage (README "Switching to TLS"): every node to
/// `--tls-migration accept`, then every node to `prefer`, then every node to TLS only.
#[tokio::test]
async fn a_federation_in_clear_switches_to_tls_node_by_node_without_stopping() -> TestResult {
    let mut fed = Federation::start(&[]).await?;
    // The operator's step 0: certificates for the running federation's topology, and that
    // topology with [tls] (no longer `insecure`).
    let mut topo = docfed_shared::Topology::load(&fed.topology_file())?;
    let certs = topology::certs::CertDir(fed.dir().join("certs"));
    topology::certs::generate(&topo, &certs, &Default::default())?;
    topo.tls = Some(certs.spec());
    topo.insecure = false;
    let tls_topology = fed.dir().join("topology-tls.toml");
    topology::keys::write_topology(&topo, &tls_topology)?;
    let tls_topology = tls_topology.display().to_string();
    // Trusts the CA and speaks plain HTTP to nodes not yet switched.
    let user = docfed_http::tls::reqwest_trusting(Some(&certs.ca()))?.build()?;

    let mut n = 0;
    travels(&fed, &user, &mut n, "in clear").await?;
    // Each step goes through the nodes in two halves, and documents travel between the halves.
    for (step, flags) in [
        ("accept", vec!["--tls-migration", "accept"]),
        ("prefer", vec!["--tls-migration", "prefer"]),
        ("tls only", vec![]),
    ] {
        for half in [&ROLES[..4], &ROLES[4..]] {
            for role in half {
                let id = fed.id(role);
                let mut args = vec!["--topology", tls_topology.as_str(), "--id", id.as_str()];
                args.extend(flags.iter().copied());
                fed.restart_with(role, &args).await?;
                let https = fed.node(role).url("/v1/health");
                assert!(https.starts_with("https://"), "{role} serves TLS");
                assert_eq!(curl(&https, Some(&certs.ca()), None), Ok(200));
                // Until TLS only, the same port serves peers still in clear.
                let plain = https.replacen("https", "http", 1);
                assert_eq!(
                    curl(&plain, None, None).is_ok(),
                    !flags.is_empty(),
                    "{role}, {step}"
                );
            }
            let stage = format!("{step}, {} switched", half.join(" "));
            travels(&fed, &user, &mut n, &stage).await?;
        }
    }
    // The end: TLS only, as a federation started with [tls].
    for role in ROLES {
        let plain = fed
            .node(role)
            .url("/v1/health")
            .replacen("https", "http", 1);
        assert!(plain.starts_with("http://"));
        assert!(
            curl(&plain, None, None).is_err(),
            "{role} still serves plain HTTP"
        );
    }
    Ok(())
}

/// Publishes a new document and waits until every regional node serves it; errors name `stage`.
async fn travels(fed: &Federation, user: &reqwest::Client, n: &mut u64, stage: &str) -> TestResult {
    *n += 1;
    let body = pattern(30 + *n, 150_000);
    let title = format!("Stage%20{n}");
    let (id, _) = publish_over_tls(user, fed, &title, &body)
        .await
        .map_err(|e| format!("{stage}: {e}"))?;
    await_everywhere(user, fed, &id, &body)
        .await
        .map_err(|e| format!("{stage}: {e}"))?;
    Ok(())
}
