//! The HTTP server loop shared by `docfed-node` and `docfed-portal`.
//!
//! `axum::serve` has no header-read timeout and no connection cap, so one client holding
//! thousands of idle or half-sent requests (slowloris) could exhaust a node's file descriptors
//! and tasks. This loop serves an axum [`Router`] with hyper directly:
//! * at most [`Limits::max_connections`] connections at a time; further clients wait in the
//!   kernel's accept backlog until one closes;
//! * a client must send a request's complete header within [`Limits::header_read_timeout`],
//!   which also bounds how long a kept-alive connection may sit idle between requests;
//! * every request carries the peer address as axum's `ConnectInfo<SocketAddr>`;
//! * when `shutdown` fires, no new connection is accepted and [`serve`] returns once every open
//!   connection finished its in-flight request (callers put a deadline around that).
//!
//! Bodies are the handlers' business: uploads have their own idle timeout and size limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub mod tls;

/// Bounds on what clients may hold of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Longest wait for a complete request header, and longest idle time between requests.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
        }
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
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
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
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let builder = builder.clone();
        // A watcher counts as a connection from now on: shutdown waits for it, and signals
        // it once it serves, even if its TLS handshake is still under way.
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let trust = trust.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            // During a migration to TLS a client in clear is served too: a TLS client opens
            // with a handshake record (first byte 0x16), an HTTP request with a method name.
            let acceptor = match acceptor {
                Some(a) if also_plain => {
                    let mut first = [0u8; 1];
                    let peeked = tokio::select! {
                        p = tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)) => p,
                        () = shutdown.cancelled() => return,
                    };
                    match peeked {
                        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => Some(a),
                        Ok(Ok(1)) => None,
                        _ => return,
                    }
                }
                other => other,
            };
            match acceptor {
                None => serve_connection(stream, peer, None, router, &builder, watcher).await,
                Some(acceptor) => {
                    // The handshake is bounded like a request header: a silent client
                    // cannot hold its slot.
                    let handshake = tokio::select! {
                        h = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)) => h,
                        () = shutdown.cancelled() => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => {
                            let cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| c.clone().into_owned());
                            let node = cert.as_ref().and_then(tls::node_id_of);
                            let tls_peer = ConnectionPeer {
                                peer: tls::TlsPeer { node },
                                cert: cert.zip(trust),
                                verified: std::sync::atomic::AtomicU64::new(0),
                            };
                            serve_connection(
                                stream,
                                peer,
                                Some(tls_peer),
                                router,
                                &builder,
                                watcher,
                            )
                            .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
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

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    tls_peer: Option<ConnectionPeer>,
    router: Router,
    builder: &http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let tls_peer = tls_peer.map(Arc::new);
    let service = router.map_request(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        if let Some(p) = &tls_peer {
            req.extensions_mut().insert(p.current());
        }
        req
    });
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
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

    async fn start(limits: Limits) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/",
            get(|ConnectInfo(peer): Peer| async move { peer.ip().to_string() }),
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
}
