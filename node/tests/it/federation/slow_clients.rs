//! Slow clients against a node of a TLS federation (issue 39, item 3): a thousand connections
//! trickling request bodies a byte at a time and reading responses a byte at a time, from one
//! address and from a thousand, while a peer's pull and health probe, made with its node
//! certificate as nodes make them, still get through within a second; and every one of those
//! connections is closed by the node, not held for as long as the attacker likes.
//!
//! The limits are scaled down so that a thousand connections are ten times what the node
//! serves (as ten thousand would be against the default 1024), and the progress window is
//! seconds instead of a minute, so the test takes seconds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

use super::*;

const MAX_CONNECTIONS: usize = 96;
const RESERVED: usize = 16;
const PER_ADDRESS: usize = 8;
const STALL: Duration = Duration::from_secs(6);
/// How long each trickling client waits between two bytes.
const TRICKLE: Duration = Duration::from_millis(250);
const DOC_SIZE: usize = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `POST` an annotation whose body comes a byte at a time.
    Body,
    /// `GET` a document's content and read it a byte at a time.
    Read,
}

/// The attacked node, and how an anonymous user reaches it.
struct Target {
    addr: SocketAddr,
    name: tokio_rustls::rustls::pki_types::ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    doc: String,
}

#[derive(Debug, Default)]
struct Outcome {
    /// The TLS handshake completed (the node did not close the connection at once).
    handshake: bool,
    /// Response bytes arrived while the client read slowly: the node served it.
    served: bool,
    /// The whole response arrived.
    full: bool,
    /// The node closed the connection (within the client's own patience).
    closed_by_node: bool,
}

#[tokio::test]
async fn a_thousand_slow_clients_leave_room_for_a_peers_pull_and_health_probe() -> TestResult {
    let fed = Federation::start_tls(&[
        "--max-connections",
        &MAX_CONNECTIONS.to_string(),
        "--reserved-peer-connections",
        &RESERVED.to_string(),
        "--max-connections-per-address",
        &PER_ADDRESS.to_string(),
        "--client-stall-timeout",
        &format!("{}s", STALL.as_secs()),
        "--min-client-rate",
        "1KiB",
    ])
    .await?;
    let certs = fed
        .certs
        .clone()
        .expect("a TLS federation has certificates");
    let trust = docfed_http::tls::Trust::load(&certs.ca(), None)?;
    let user = trust.reqwest(None)?.build()?;
    let body = pattern(39, DOC_SIZE);
    let resp = auth(user.post(fed.node("primary-a").url("/v1/documents?title=slow")))
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let doc: Value = resp.json().await?;
    let (doc, md5) = (
        doc["id"].as_str().unwrap().to_owned(),
        doc["md5"].as_str().unwrap().to_owned(),
    );
    let node_url = fed.node("na").url("");
    wait_until_async(T, "na serves the document", || async {
        let r = user
            .get(format!("{node_url}/v1/documents/{doc}/content"))
            .send()
            .await
            .ok()?;
        (r.status() == StatusCode::OK).then_some(())
    })
    .await?;

    let url = url::Url::parse(&node_url)?;
    let host = url.host_str().expect("a host").to_owned();
    let target = Arc::new(Target {
        addr: SocketAddr::new(host.parse()?, url.port().expect("a port")),
        name: tokio_rustls::rustls::pki_types::ServerName::try_from(host)?,
        tls: tokio_rustls::TlsConnector::from(Arc::new(trust.client_config(None)?)),
        doc,
    });
    let (mid1_cert, mid1_key) = certs.node(&fed.id("mid-1"));
    let peer = || trust.reqwest(Some((&mid1_cert, &mid1_key)));
    // What a peer does, on a connection of its own each time (a new client), within a second.
    let peer_pull = || async {
        let started = Instant::now();
        let r = peer()?
            .build()?
            .get(format!("{node_url}/v1/objects/{md5}"))
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::OK);
        let got = r.bytes().await?;
        let took = started.elapsed();
        assert!(got == body, "the pull's bytes differ");
        assert!(
            took < Duration::from_secs(1),
            "the peer's pull took {took:?}"
        );
        let started = Instant::now();
        let r = peer()?
            .build()?
            .get(format!("{node_url}/v1/health"))
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::OK);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "the peer's health probe took {took:?}"
        );
        TestResult::Ok(())
    };

    // One address: 200 connections trickling bodies. It gets its share, no more, and everyone
    // else (an anonymous user's health probe too) is served at once.
    let from_one: Vec<(IpAddr, Kind)> = (0..200)
        .map(|_| (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), Kind::Body))
        .collect();
    let attack = Attack::launch(&target, from_one).await?;
    let held = attack.outcomes_so_far_handshaken();
    peer_pull().await?;
    let started = Instant::now();
    let r = trust
        .reqwest(None)?
        .build()?
        .get(format!("{node_url}/v1/health"))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let outcomes = attack.finish().await?;
    let handshaken = outcomes.iter().filter(|o| o.handshake).count();
    assert!(
        handshaken <= PER_ADDRESS && held <= PER_ADDRESS,
        "one address held {handshaken} connections"
    );
    assert!(outcomes.iter().all(|o| o.closed_by_node), "{outcomes:?}");

    // A thousand addresses (127.0.1.1 to 127.0.4.250), one connection each, half trickling a
    // body, half reading a byte at a time: ten times what the node serves.
    let from_many: Vec<(IpAddr, Kind)> = (0..1000u32)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8);
            let kind = if i % 2 == 0 { Kind::Body } else { Kind::Read };
            (IpAddr::V4(ip), kind)
        })
        .collect();
    let kinds: Vec<Kind> = from_many.iter().map(|(_, k)| *k).collect();
    let attack = Attack::launch(&target, from_many).await?;
    peer_pull().await?;
    // Anonymous slots are all taken (without the reserve the peer's pull waits seconds for one):
    // an anonymous user now waits for a slot to free, which is not asserted, only shown.
    let started = Instant::now();
    let anonymous = trust
        .reqwest(None)?
        .build()?
        .get(format!("{node_url}/v1/health"))
        .send()
        .await
        .map(|r| r.status());
    eprintln!(
        "during the attack an anonymous health probe got {anonymous:?} after {:?}",
        started.elapsed()
    );
    let outcomes = attack.finish().await?;
    let served_readers = outcomes
        .iter()
        .zip(&kinds)
        .filter(|(o, k)| **k == Kind::Read && o.served)
        .count();
    eprintln!(
        "of 1000: {} completed a handshake, {served_readers} slow readers were served",
        outcomes.iter().filter(|o| o.handshake).count()
    );
    assert!(served_readers > 0, "no slow reader was ever served");
    for (o, k) in outcomes.iter().zip(&kinds) {
        assert!(
            o.closed_by_node,
            "a {k:?} client kept its connection: {o:?}"
        );
        assert!(
            !(*k == Kind::Read && o.served && o.full),
            "a client reading a byte at a time got the whole document"
        );
    }
    Ok(())
}

/// Attacking connections under way.
struct Attack {
    tasks: Vec<tokio::task::JoinHandle<Outcome>>,
    handshaken: Arc<std::sync::atomic::AtomicUsize>,
}

impl Attack {
    /// Opens a connection from each address and returns once every one has sent its request or
    /// was refused. Ten handshakes at a time, as an attacker who wants slots would: a flood of
    /// handshakes mostly sends itself away from the node's waiting room before it gets any.
    async fn launch(target: &Arc<Target>, from: Vec<(IpAddr, Kind)>) -> TestResult<Attack> {
        let gate = Arc::new(Semaphore::new(10));
        let (established, mut ready) = mpsc::unbounded_channel();
        let handshaken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = from.len();
        let tasks = from
            .into_iter()
            .map(|(ip, kind)| {
                tokio::spawn(attack(
                    target.clone(),
                    ip,
                    kind,
                    gate.clone(),
                    established.clone(),
                    handshaken.clone(),
                ))
            })
            .collect();
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(60), ready.recv())
                .await
                .map_err(|_| "the attacking connections were not all opened within 60 s")?;
        }
        Ok(Attack { tasks, handshaken })
    }

    fn outcomes_so_far_handshaken(&self) -> usize {
        self.handshaken.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn finish(self) -> TestResult<Vec<Outcome>> {
        let mut out = Vec::new();
        for t in self.tasks {
            out.push(t.await?);
        }
        Ok(out)
    }
}

/// One slow client from `from`: TLS as a user (the CA, no certificate), its request, then a
/// byte each [`TRICKLE`] until the node closes the connection or the client's patience (far
/// beyond any limit the node has) runs out.
async fn attack(
    target: Arc<Target>,
    from: IpAddr,
    kind: Kind,
    gate: Arc<Semaphore>,
    established: mpsc::UnboundedSender<()>,
    handshaken: Arc<std::sync::atomic::AtomicUsize>,
) -> Outcome {
    let mut out = Outcome::default();
    let connected = async {
        let _turn = gate.acquire().await.ok()?;
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        // A small receive window, so that a response stays in the node's buffers rather than
        // the client's.
        socket.set_recv_buffer_size(8 << 10).ok()?;
        socket.bind(SocketAddr::new(from, 0)).ok()?;
        let tcp = socket.connect(target.addr).await.ok()?;
        let handshake = target.tls.connect(target.name.clone(), tcp);
        tokio::time::timeout(Duration::from_secs(30), handshake)
            .await
            .ok()?
            .ok()
    }
    .await;
    let Some(mut tls) = connected else {
        // Refused at once (its address's share is taken) or sent away while waiting.
        out.closed_by_node = true;
        let _ = established.send(());
        return out;
    };
    out.handshake = true;
    handshaken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let request = match kind {
        Kind::Body => format!(
            "POST /v1/documents/{}/annotations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{",
            target.doc
        ),
        Kind::Read => format!(
            "GET /v1/documents/{}/content HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            target.doc
        ),
    };
    let sent = tls.write_all(request.as_bytes()).await.is_ok() && tls.flush().await.is_ok();
    let _ = established.send(());
    if !sent {
        out.closed_by_node = true;
        return out;
    }
    let patience = Instant::now() + Duration::from_secs(90);
    let mut buf = vec![0u8; 64 << 10];
    match kind {
        Kind::Body => {
            while Instant::now() < patience {
                match tokio::time::timeout(TRICKLE, tls.read(&mut buf)).await {
                    // The node's answer to a body it could not read (if any), then the end.
                    Ok(Ok(0) | Err(_)) => {
                        out.closed_by_node = true;
                        break;
                    }
                    Ok(Ok(_)) => {}
                    Err(_) => {
                        // JSON whitespace, a byte at a time.
                        if tls.write_all(b" ").await.is_err() || tls.flush().await.is_err() {
                            out.closed_by_node = true;
                            break;
                        }
                    }
                }
            }
        }
        Kind::Read => {
            let mut one = [0u8; 1];
            // Waiting for the first byte: the node may keep the client waiting for a slot.
            let mut got =
                match tokio::time::timeout(Duration::from_secs(60), tls.read(&mut one)).await {
                    Ok(Ok(1)) => {
                        out.served = true;
                        1usize
                    }
                    Ok(Ok(_) | Err(_)) => {
                        out.closed_by_node = true;
                        return out;
                    }
                    Err(_) => return out,
                };
            // A byte each TRICKLE for longer than the node lets a reader stall (two windows:
            // the first may be credited with what the socket buffers took at once)...
            let slow_until = Instant::now() + 2 * STALL + Duration::from_secs(2);
            while Instant::now() < slow_until {
                match tls.read(&mut one).await {
                    Ok(1) => got += 1,
                    _ => break,
                }
                tokio::time::sleep(TRICKLE).await;
            }
            // ...then as fast as it comes: what the buffers held, and the end after it.
            loop {
                match tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => {
                        out.closed_by_node = true;
                        break;
                    }
                    Ok(Ok(n)) => {
                        got += n;
                        if got >= DOC_SIZE {
                            out.full = true;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
    out
}
