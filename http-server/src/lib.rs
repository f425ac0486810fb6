//! The HTTP server loop shared by `docfed-node` and `docfed-portal`.
//!
//! `axum::serve` has no header-read timeout and no connection cap, so one client holding
//! thousands of idle or half-sent requests (slowloris) could exhaust a node's file descriptors
//! and tasks. This loop serves an axum [`Router`] with hyper directly:
//! * at most [`Limits::max_connections`] connections are served at a time, of which
//!   [`Limits::reserved_peer_connections`] only for clients whose TLS certificate names a node of
//!   the federation; at most [`Limits::max_connections_per_address`] come from one address (IPv6:
//!   one /64), nodes not counted; connections waiting for their TLS handshake or a slot wait in
//!   a bounded room where the longest waiting gives way to a newcomer (`admission`);
//! * a client must send a request's complete header within [`Limits::header_read_timeout`],
//!   which also bounds how long a kept-alive connection may sit idle between requests, and
//!   complete its TLS handshake within the same time;
//! * while the server waits on a client, for a request body or for room to write the response,
//!   the client must move [`Limits::min_client_rate`] bytes a second on average over each
//!   [`Limits::client_stall_timeout`] of waiting, and never nothing for that long (`pace`);
//!   otherwise its connection is closed;
//! * every request carries the peer address as axum's `ConnectInfo<SocketAddr>`;
//! * when `shutdown` fires, no new connection is accepted and [`serve`] returns once every open
//!   connection finished its in-flight request (callers put a deadline around that).
//!
//! Handlers may add their own bounds: uploads have an idle timeout and a size limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

mod admission;
pub mod pace;
pub mod tls;

pub use admission::AddressKey;

/// Bounds on what clients may hold of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once. Up to a quarter as many more (at least 16) may wait for
    /// their TLS handshake or a free slot.
    pub max_connections: usize,
    /// Longest wait for a complete request header, and longest idle time between requests.
    pub header_read_timeout: Duration,
    /// Connections from one IPv4 address or IPv6 /64 at once (served or waiting); connections
    /// of the federation's nodes are not counted.
    pub max_connections_per_address: usize,
    /// Of `max_connections`, how many only clients with a node's certificate may use (none
    /// without client certificates: plain HTTP, a standalone node, the portal).
    pub reserved_peer_connections: usize,
    /// The span over which a client's progress is measured while the server waits on it (a
    /// request body, room to write a response): also the longest it may move nothing.
    pub client_stall_timeout: Duration,
    /// Bytes per second a client must move, on average over each `client_stall_timeout` of
    /// waiting on it; 0: only "something in each `client_stall_timeout`".
    pub min_client_rate: u64,
}

/// A connection that moves less than this per second while the server waits on it is cut off:
/// far below any usable link (a phone on GPRS moves several times as much), far above a
/// slowloris trickle.
pub const DEFAULT_MIN_CLIENT_RATE: u64 = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
            max_connections_per_address: 64,
            reserved_peer_connections: 128,
            client_stall_timeout: Duration::from_secs(60),
            min_client_rate: DEFAULT_MIN_CLIENT_RATE,
        }
    }
}

impl Limits {
    fn pace(&self) -> pace::Policy {
        pace::Policy {
            window: self.client_stall_timeout,
            min_rate: self.min_client_rate,
        }
    }

    /// Places for connections waiting for their handshake or a slot.
    fn waiting_places(&self) -> usize {
        (self.max_connections / 4).max(16)
    }
}

/// Serves `router` on `listener` until `shutdown` fires and open connections are done; over TLS
/// when `tls` is given (every request then carries a [`tls::TlsPeer`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<TlsServer>,
    shutdown: CancellationToken,
) {
    // HTTP/1.1 only: hyper-util's automatic HTTP/2 detection first reads the connection's
    // opening bytes with no timeout at all, so a silent client would hold its slot for ever.
    // Every docfed client (nodes, portal, devices, curl, browsers) speaks HTTP/1.1.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let trust = tls.as_ref().and_then(|t| t.trust.clone());
    let also_plain = tls.as_ref().is_some_and(|t| t.also_plain);
    // Only a server that asks for client certificates can tell nodes apart.
    let reserve = if trust.is_some() {
        limits.reserved_peer_connections
    } else {
        0
    };
    let admission = admission::Admission::new(
        limits.max_connections,
        reserve,
        limits.max_connections_per_address,
        limits.waiting_places(),
    );
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        // Accepting never waits for a slot: a connection beyond its address's share is closed
        // at once, any other waits in the admission room, which has a bounded size.
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, a connection reset before accept: wait, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Some(address) = admission.address_slot(peer.ip()) else {
            tracing::debug!(peer = %peer, "connection refused: its address holds --max-connections-per-address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (place, sent_away) = admission.wait();
        let conn = Connection {
            peer,
            router: router.clone(),
            builder: builder.clone(),
            // A watcher counts as a connection from now on: shutdown waits for it, and signals
            // it once it serves, even if its TLS handshake is still under way.
            watcher: graceful.watcher(),
            limits,
            admission: admission.clone(),
            address,
        };
        let acceptor = acceptor.clone();
        let trust = trust.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let admitted = tokio::select! {
                a = admit(stream, peer, acceptor, also_plain, trust, &conn) => a,
                () = sent_away.cancelled() => {
                    tracing::debug!(peer = %peer, "connection closed before its turn: the waiting room was full");
                    return;
                }
                () = shutdown.cancelled() => return,
            };
            drop(place);
            if let Some(admitted) = admitted {
                conn.serve(admitted).await;
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection's stream once admitted, and the slot it holds.
struct Admitted {
    stream: Stream,
    tls_peer: Option<ConnectionPeer>,
    slot: tokio::sync::OwnedSemaphorePermit,
}

enum Stream {
    Plain(pace::PacedIo<tokio::net::TcpStream>),
    Tls(Box<tokio_rustls::server::TlsStream<pace::PacedIo<tokio::net::TcpStream>>>),
}

/// What a connection's task needs besides its stream.
struct Connection {
    peer: SocketAddr,
    router: Router,
    builder: Arc<http1::Builder>,
    watcher: hyper_util::server::graceful::Watcher,
    limits: Limits,
    admission: Arc<admission::Admission>,
    address: admission::AddressSlot,
}

/// The handshake, then a serving slot: `None` when the client does not get that far.
async fn admit(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    also_plain: bool,
    trust: Option<Arc<tls::Trust>>,
    conn: &Connection,
) -> Option<Admitted> {
    let timeout = conn.limits.header_read_timeout;
    // During a migration to TLS a client in clear is served too: a TLS client opens with a
    // handshake record (first byte 0x16), an HTTP request with a method name.
    let acceptor = match acceptor {
        Some(a) if also_plain => {
            let mut first = [0u8; 1];
            match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => Some(a),
                Ok(Ok(1)) => None,
                _ => return None,
            }
        }
        other => other,
    };
    let stream = pace::PacedIo::new(stream, conn.limits.pace());
    let Some(acceptor) = acceptor else {
        let slot = conn.admission.serving_slot(false).await;
        return Some(Admitted {
            stream: Stream::Plain(stream),
            tls_peer: None,
            slot,
        });
    };
    // The handshake is bounded like a request header: a silent client cannot hold its place.
    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(peer = %peer, "TLS handshake timed out");
            return None;
        }
    };
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    // The handshake verified the certificate against the CA and the current CRL.
    let node = cert.as_ref().and_then(tls::node_id_of);
    let slot = conn.admission.serving_slot(node.is_some()).await;
    Some(Admitted {
        stream: Stream::Tls(Box::new(stream)),
        tls_peer: Some(ConnectionPeer {
            peer: tls::TlsPeer { node },
            cert: cert.zip(trust),
            verified: std::sync::atomic::AtomicU64::new(0),
        }),
        slot,
    })
}

impl Connection {
    async fn serve(mut self, admitted: Admitted) {
        let is_node = admitted
            .tls_peer
            .as_ref()
            .is_some_and(|p| p.peer.node.is_some());
        if is_node {
            self.address.release();
        }
        match admitted.stream {
            Stream::Plain(s) => self.serve_stream(s, admitted.tls_peer).await,
            Stream::Tls(s) => self.serve_stream(*s, admitted.tls_peer).await,
        }
        drop(admitted.slot);
    }

    async fn serve_stream<S>(self, stream: S, tls_peer: Option<ConnectionPeer>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.peer;
        let policy = self.limits.pace();
        // A request body too slow closes the whole connection, whatever its handler does.
        let abort = CancellationToken::new();
        let tls_peer = tls_peer.map(Arc::new);
        let abort_on_slow_body = abort.clone();
        let service = self
            .router
            .map_request(move |req: hyper::Request<hyper::body::Incoming>| {
                let abort = abort_on_slow_body.clone();
                let mut req =
                    req.map(|b| axum::body::Body::new(pace::PacedBody::new(b, policy, abort)));
                req.extensions_mut().insert(ConnectInfo(peer));
                if let Some(p) = &tls_peer {
                    req.extensions_mut().insert(p.current());
                }
                req
            });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        tokio::select! {
            r = self.watcher.watch(conn) => {
                if let Err(e) = r {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
            }
            () = abort.cancelled() => {
                tracing::debug!(peer = %peer, "connection closed: request body too slow");
            }
        }
    }
}

/// The TLS record type a client's first byte carries (a handshake).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a TLS server needs: its configuration, and the trust whose CRL revokes the client
/// certificates of connections already open.
#[derive(Clone)]
pub struct TlsServer {
    pub config: Arc<rustls::ServerConfig>,
    pub trust: Option<Arc<tls::Trust>>,
    /// Serve plain HTTP on the same port as well (a federation switching to TLS node by node):
    /// a connection that does not open with a TLS handshake is served in clear, without a
    /// [`tls::TlsPeer`].
    pub also_plain: bool,
}

/// A TLS connection's client, as its requests see it.
struct ConnectionPeer {
    peer: tls::TlsPeer,
    /// The client's certificate and the trust to check it against again after a CRL reload.
    cert: Option<(rustls::pki_types::CertificateDer<'static>, Arc<tls::Trust>)>,
    /// The CRL generation the certificate was last found valid under.
    verified: std::sync::atomic::AtomicU64,
}

impl ConnectionPeer {
    /// The peer for the next request: without its node identity once its certificate is
    /// revoked.
    fn current(&self) -> tls::TlsPeer {
        use std::sync::atomic::Ordering;
        if let Some((cert, trust)) = &self.cert {
            let now = trust.generation();
            if self.verified.load(Ordering::SeqCst) != now {
                if !trust.still_valid(cert) {
                    return tls::TlsPeer { node: None };
                }
                self.verified.store(now, Ordering::SeqCst);
            }
        }
        self.peer.clone()
    }
}

/// The peer address type handlers extract (`ConnectInfo<SocketAddr>`).
pub type Peer = ConnectInfo<SocketAddr>;

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Bytes `GET /big` answers with, in 64 KiB chunks made as they are sent.
    const BIG: usize = 64 << 20;

    async fn start(limits: Limits) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .route(
                "/",
                get(|ConnectInfo(peer): Peer| async move { peer.ip().to_string() }),
            )
            .route(
                "/echo",
                axum::routing::post(
                    |body: axum::body::Bytes| async move { body.len().to_string() },
                ),
            )
            .route(
                "/big",
                get(|| async {
                    let chunk = axum::body::Bytes::from(vec![b'x'; 64 << 10]);
                    let chunks =
                        (0..BIG / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
                    axum::body::Body::from_stream(futures::stream::iter(chunks))
                }),
            );
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(listener, router, limits, None, cancel.clone()));
        (addr, cancel, task)
    }

    /// Reads until the peer closes; returns what arrived and how long it took.
    async fn read_to_close(s: &mut tokio::net::TcpStream) -> (Vec<u8>, Duration) {
        let started = Instant::now();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
        (out, started.elapsed())
    }

    #[tokio::test]
    async fn a_half_sent_header_is_cut_off() {
        let limits = Limits {
            max_connections: 8,
            header_read_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let (addr, cancel, task) = start(limits).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        let (_, took) = read_to_close(&mut s).await;
        assert!(took < Duration::from_secs(5), "held for {took:?}");
        // An idle kept-alive connection is closed too, after a complete request.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (answer, took) = read_to_close(&mut s).await;
        assert!(String::from_utf8_lossy(&answer).contains("127.0.0.1"));
        assert!(
            took < Duration::from_secs(5),
            "idle connection held for {took:?}"
        );
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed() {
        let limits = Limits {
            max_connections: 8,
            header_read_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let (addr, cancel, task) = start(limits).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_, took) = read_to_close(&mut s).await;
        assert!(took < Duration::from_secs(5), "held for {took:?}");
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_a_free_slot() {
        let limits = Limits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(2),
            ..Limits::default()
        };
        let (addr, cancel, task) = start(limits).await;
        // Two silent connections take both slots.
        let hog1 = tokio::net::TcpStream::connect(addr).await.unwrap();
        let hog2 = tokio::net::TcpStream::connect(addr).await.unwrap();
        // No wait needed: the server accepts connections in the order they completed, so the
        // hogs take the slots before the request below.
        let started = Instant::now();
        let got = crate::tls::get(format!("http://{addr}/")).await.unwrap();
        // Served once the header-read timeout freed a slot, not before.
        assert_eq!(got.status(), 200);
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        drop((hog1, hog2));
        cancel.cancel();
        task.await.unwrap();
    }

    fn pacing(window_ms: u64, rate: u64) -> Limits {
        Limits {
            max_connections: 16,
            header_read_timeout: Duration::from_secs(10),
            client_stall_timeout: Duration::from_millis(window_ms),
            min_client_rate: rate,
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn a_trickled_body_is_cut_off() {
        let (addr, cancel, task) = start(pacing(500, 100)).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            .await
            .unwrap();
        // One byte each 50 ms: 20 B/s, a fifth of the rate asked. The server closes the
        // connection (the writes, then the read, fail) within a window or two.
        let started = Instant::now();
        let mut closed = false;
        let mut answer = Vec::new();
        for _ in 0..200 {
            if s.write_all(b"a").await.is_err() {
                closed = true;
                break;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => {
                    closed = true;
                    break;
                }
                // The handler's error for the body it could not read, then the end.
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        assert!(closed, "a trickling body kept its connection");
        assert!(
            !String::from_utf8_lossy(&answer).contains(" 200 "),
            "a body it never got was taken"
        );
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "cut off after {took:?}");
        // The same body sent at once is fine.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            .await
            .unwrap();
        let (answer, _) = read_to_close(&mut s).await;
        assert!(String::from_utf8_lossy(&answer).ends_with("\r\n5"));
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_its_response_is_cut_off() {
        let (addr, cancel, task) = start(pacing(300, 1024)).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // One byte each 100 ms (10 B/s) for 1.5 s: the socket buffers fill and stay full.
        let mut one = [0u8; 1];
        for _ in 0..15 {
            s.read_exact(&mut one).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Then everything at once: what the buffers held, and the end the server put after it.
        let mut got = 16usize;
        let mut buf = vec![0u8; 64 << 10];
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(n)) => got += n,
                Err(_) => break false,
            }
        };
        assert!(
            ended,
            "the server kept writing to a client that did not read"
        );
        assert!(got < BIG / 2, "got {got} of {BIG} bytes");
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_slow_but_steady_reader_gets_the_whole_response() {
        // The client reads 4 MiB/s against 64 KiB/s asked. The window is longer than TCP's
        // own hiccups: a paced reader on loopback (64 KiB segments) sees the sender wait for a
        // zero-window probe, 200 ms or more, now and then.
        let (addr, cancel, task) = start(pacing(2000, 64 << 10)).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 << 10];
        let started = Instant::now();
        // 12 MiB of it at a measured pace, then the rest as fast as it comes.
        while total < 12 << 20 {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "cut off after {total} bytes");
            total += n;
            let due = Duration::from_secs_f64(total as f64 / f64::from(4u32 << 20));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(total + rest.len() > BIG, "{} bytes", total + rest.len());
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn one_address_gets_its_share_and_no_more() {
        let limits = Limits {
            max_connections: 16,
            header_read_timeout: Duration::from_secs(5),
            max_connections_per_address: 2,
            ..Limits::default()
        };
        let (addr, cancel, task) = start(limits).await;
        let from = |ip: &str| {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            async move {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.bind(SocketAddr::new(ip, 0)).unwrap();
                sock.connect(addr).await.unwrap()
            }
        };
        let _hog1 = from("127.0.0.3").await;
        let _hog2 = from("127.0.0.3").await;
        // The third from that address is closed at once, long before the header timeout.
        let mut third = from("127.0.0.3").await;
        let (_, took) = read_to_close(&mut third).await;
        assert!(took < Duration::from_secs(2), "held for {took:?}");
        // Another address is served at once.
        let mut other = from("127.0.0.4").await;
        other
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (answer, took) = read_to_close(&mut other).await;
        assert!(String::from_utf8_lossy(&answer).contains("127.0.0.4"));
        assert!(took < Duration::from_secs(2), "{took:?}");
        cancel.cancel();
        task.await.unwrap();
    }
}
