//! Issue 39, items 4 and 8, performed against real nodes: a member's certificate is good for its
//! own role and identity only (another node's address, the broker's), a broker certificate is no
//! client's, and a revocation outlives its list's file being deleted or emptied.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::common::federation::Federation;
use crate::common::{relay, TestResult};

/// What a test-played server saw of its clients.
#[derive(Default)]
struct Seen {
    /// Handshakes completed: the client accepted the certificate.
    accepted: AtomicUsize,
    /// Handshakes the client broke off (or that never completed).
    refused: AtomicUsize,
    /// Clients that went on to send AMQP's protocol header.
    amqp: AtomicUsize,
}

type Swappable = Arc<Mutex<Arc<rustls::ServerConfig>>>;

/// Serves TLS on `listener` with whatever `config` holds at each connection (the test swaps
/// it), counting what clients do in [`Seen`].
fn serve(listener: tokio::net::TcpListener, config: Swappable) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.lock().unwrap().clone());
            let seen = counts.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                let Ok(Ok(mut tls)) = handshake.await else {
                    seen.refused.fetch_add(1, SeqCst);
                    return;
                };
                seen.accepted.fetch_add(1, SeqCst);
                let mut header = [0u8; 8];
                let read =
                    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut header));
                if matches!(read.await, Ok(Ok(_))) && &header == b"AMQP\x00\x00\x09\x01" {
                    seen.amqp.fetch_add(1, SeqCst);
                }
            });
        }
    });
    seen
}

/// Waits until `done` holds, for at most `within`.
async fn until(what: &str, within: Duration, done: impl Fn() -> bool) -> TestResult {
    let end = Instant::now() + within;
    while !done() {
        if Instant::now() > end {
            return Err(format!("not within {within:?}: {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `GET url` with a fresh connection, presenting `identity`, trusting `ca`: the status, or the
/// error when no HTTP answer came (a refused handshake).
async fn get_as(ca: &Path, identity: (&Path, &Path), url: &str) -> Result<u16, String> {
    let client = docfed_http::tls::Trust::load(ca, None)
        .and_then(|t| t.reqwest(Some(identity)))
        .map_err(|e| e.to_string())?
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    match client.get(url).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// Copies of a node's certificate and key (`revoke` takes the originals away, but the node
/// keeps presenting what it loaded, as would a thief).
fn keep_copy(
    certs: &topology::certs::CertDir,
    id: &str,
    to: &Path,
) -> TestResult<(PathBuf, PathBuf)> {
    let (cert, key) = certs.node(id);
    let copy = (to.join(format!("{id}.pem")), to.join(format!("{id}.key")));
    std::fs::copy(cert, &copy.0)?;
    std::fs::copy(key, &copy.1)?;
    Ok(copy)
}

#[tokio::test]
async fn a_member_cannot_pose_as_another_node_or_the_broker_and_revocations_outlive_their_file(
) -> TestResult {
    let t = Duration::from_secs(30);
    let mut fed = Federation::start_tls_with_impostor(&[], "mid-1").await?;
    let listener = fed.impostor.take().ok_or("no impostor socket")?;
    let mid1_url = format!("https://{}", listener.local_addr()?);
    let certs = fed
        .certs
        .clone()
        .ok_or("a TLS federation has certificates")?;
    let ca = certs.ca();
    let trust = docfed_http::tls::Trust::load(&ca, Some(&certs.crl()))?;
    let (mid1_cert, mid1_key) = certs.node(&fed.id("mid-1"));
    let (mid2_cert, mid2_key) = certs.node(&fed.id("mid-2"));
    let (broker_cert, broker_key) = certs.broker();

    // 1. At mid-1's address, mid-2's genuine certificate: every node that reaches for mid-1
    // (health probes, and na's pull of a version mid-1 announces) breaks the handshake off.
    let config: Swappable = Arc::new(Mutex::new(
        trust.server_config(&mid2_cert, &mid2_key, true)?,
    ));
    let seen = serve(listener, config.clone());
    let d = relay::version(&fed, "from mid-1", &"ab".repeat(16), 1000)?;
    let d = relay::sign(&fed, "primary-a", d)?;
    let env = relay::notification(&fed.id("mid-1"), d, mid1_url.clone());
    relay::relay(&fed, "mid-1", "na", &env).await?;
    until("nodes reach for mid-1", t, || {
        seen.refused.load(SeqCst) >= 6
    })
    .await?;
    assert_eq!(
        seen.accepted.load(SeqCst),
        0,
        "no node accepted mid-2 as mid-1"
    );

    // 2. The broker's certificate there: not a node's, refused too.
    *config.lock().unwrap() =
        docfed_http::tls::server_config_without_clients(&broker_cert, &broker_key)?;
    let before = seen.refused.load(SeqCst);
    until("nodes reach for mid-1 again", t, || {
        seen.refused.load(SeqCst) >= before + 6
    })
    .await?;
    assert_eq!(
        seen.accepted.load(SeqCst),
        0,
        "no node accepted the broker as mid-1"
    );

    // Control: mid-1's own certificate is accepted, so the refusals were the identity's.
    *config.lock().unwrap() = trust.server_config(&mid1_cert, &mid1_key, true)?;
    until("a node accepts mid-1", t, || {
        seen.accepted.load(SeqCst) >= 1
    })
    .await?;

    // 3. The broker's certificate as a client: it may only serve, so a node refuses it at the
    // handshake; a node's certificate is accepted.
    let eu = fed.node("eu").url("/v1/health");
    assert!(get_as(&ca, (&broker_cert, &broker_key), &eu).await.is_err());
    assert_eq!(get_as(&ca, (&mid2_cert, &mid2_key), &eu).await, Ok(200));

    // 4. A node's certificate (mid-1's, whose host is the broker's: localhost) serving as the
    // broker: na, restarted with its inbox there, never sends the AMQP protocol header to it.
    let fake = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = fake.local_addr()?.port();
    let fake_config: Swappable = Arc::new(Mutex::new(
        docfed_http::tls::server_config_without_clients(&mid1_cert, &mid1_key)?,
    ));
    let broker_seen = serve(fake, fake_config.clone());
    let topo = fed.topology_file().display().to_string();
    let na_id = fed.id("na");
    let amqps = format!("amqps://localhost:{port}/%2f?auth_mechanism=external");
    let na_args = ["--topology", &topo, "--id", &na_id, "--amqp-url", &amqps];
    fed.restart_with("na", &na_args).await?;
    until("na reaches for its broker", t, || {
        broker_seen.refused.load(SeqCst) >= 2
    })
    .await?;
    assert_eq!(
        broker_seen.accepted.load(SeqCst),
        0,
        "na accepted a node as its broker"
    );
    assert_eq!(broker_seen.amqp.load(SeqCst), 0);
    // Control: with the broker's certificate na speaks AMQP to it.
    *fake_config.lock().unwrap() =
        docfed_http::tls::server_config_without_clients(&broker_cert, &broker_key)?;
    fed.restart_with("na", &na_args).await?;
    until("na speaks AMQP to the broker", t, || {
        broker_seen.amqp.load(SeqCst) >= 1
    })
    .await?;

    // 5. Revoking mid-2 (a running node): eu refuses its certificate within seconds. Deleting
    // the CRL file, then emptying it, does not let it back: eu says so and keeps the list.
    // eu also probes mid-2 every 2 s, over a connection kept alive: after the revocation its
    // probes fail too (its clients are built again at a CRL reload).
    let user = docfed_http::tls::reqwest_trusting(Some(&ca))?.build()?;
    let mid2 = fed.id("mid-2");
    let eu_peers = fed.node("eu").url("/v1/peers");
    let eu_sees_mid2 = || async {
        let view: serde_json::Value = user.get(&eu_peers).send().await?.json().await?;
        let healthy = view["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["id"] == mid2.as_str()))
            .and_then(|p| p["healthy"].as_bool());
        TestResult::<Option<bool>>::Ok(healthy)
    };
    let end = Instant::now() + t;
    while eu_sees_mid2().await? != Some(true) {
        if Instant::now() > end {
            return Err("eu never saw mid-2 healthy".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let keep = tempfile::tempdir()?;
    let (stolen_cert, stolen_key) = keep_copy(&certs, &fed.id("mid-2"), keep.path())?;
    let topology = docfed_shared::Topology::load(&fed.topology_file())?;
    topology::certs::revoke(&topology, &certs, &fed.id("mid-2"))?;
    let end = Instant::now() + t;
    while get_as(&ca, (&stolen_cert, &stolen_key), &eu).await.is_ok() {
        if Instant::now() > end {
            return Err("eu still accepts mid-2's revoked certificate".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while eu_sees_mid2().await? != Some(false) {
        if Instant::now() > end {
            return Err("eu still reaches the revoked mid-2 as a healthy peer".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let warnings = || {
        fed.node("eu")
            .log()
            .matches("revocation list not reloaded")
            .count()
    };
    std::fs::remove_file(certs.crl())?;
    until("eu notices the CRL is gone", t, || warnings() >= 1).await?;
    assert!(
        fed.node("eu").log().contains("crl.pem"),
        "the warning names the file"
    );
    let after_delete = get_as(&ca, (&stolen_cert, &stolen_key), &eu).await;
    assert!(
        after_delete.is_err(),
        "deleting the CRL un-revoked mid-2: {after_delete:?}"
    );
    std::fs::write(certs.crl(), "")?;
    until("eu notices the CRL is empty", t, || warnings() >= 2).await?;
    let after_empty = get_as(&ca, (&stolen_cert, &stolen_key), &eu).await;
    assert!(
        after_empty.is_err(),
        "emptying the CRL un-revoked mid-2: {after_empty:?}"
    );
    // Others are still served.
    let (na_cert, na_key) = certs.node(&fed.id("na"));
    assert_eq!(get_as(&ca, (&na_cert, &na_key), &eu).await, Ok(200));
    Ok(())
}
