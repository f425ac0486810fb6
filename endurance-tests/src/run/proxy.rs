//! A fault-injecting TCP proxy for one directed link between two nodes (or a node and a broker).
//!
//! Each node reaches each peer through its own proxy (`--peer-http`, `--peer-amqp`), so a link
//! can be cut, throttled or made to corrupt bytes without touching any other. A cut is a black
//! hole, as a WAN partition is: bytes stop flowing, new connections are accepted and then hear
//! nothing, and when the cut heals every connection that lived through it is dropped, so only
//! the peers' own timeouts and retries get them going again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Bytes of a response left intact before corruption starts (so HTTP headers usually survive and
/// the damage lands in the content).
const CLEAN_PREFIX: u64 = 1024;

struct Control {
    upstream: SocketAddr,
    cut: watch::Sender<bool>,
    /// Bytes per second in each direction, 0 for unlimited.
    rate: AtomicU64,
    corrupt: AtomicBool,
    flipped: AtomicU64,
    pacer: [Mutex<Instant>; 2],
}

/// One directed link. Dropping it stops the proxy.
pub struct Link {
    addr: SocketAddr,
    ctl: Arc<Control>,
    task: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Link {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let ctl = Arc::new(Control {
            upstream,
            cut: watch::channel(false).0,
            rate: AtomicU64::new(0),
            corrupt: AtomicBool::new(false),
            flipped: AtomicU64::new(0),
            pacer: [Mutex::new(Instant::now()), Mutex::new(Instant::now())],
        });
        let c = ctl.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = client.set_nodelay(true);
                tokio::spawn(serve(c.clone(), client));
            }
        });
        Ok(Link { addr, ctl, task })
    }

    /// Where to connect to use the link.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_cut(&self, cut: bool) {
        self.ctl.cut.send_replace(cut);
    }

    pub fn set_rate(&self, bytes_per_second: Option<u64>) {
        self.ctl
            .rate
            .store(bytes_per_second.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn set_corrupt(&self, corrupt: bool) {
        self.ctl.corrupt.store(corrupt, Ordering::Relaxed);
    }

    /// Bytes flipped so far.
    pub fn flipped(&self) -> u64 {
        self.ctl.flipped.load(Ordering::Relaxed)
    }
}

async fn serve(ctl: Arc<Control>, client: TcpStream) {
    let mut cut = ctl.cut.subscribe();
    if *cut.borrow() {
        // Accepted into the black hole: silent until the cut heals, then dropped.
        until(&mut cut, false).await;
        return;
    }
    let upstream = match tokio::time::timeout(
        Duration::from_secs(5),
        TcpStream::connect(ctl.upstream),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => return,
    };
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    tokio::join!(
        pump(&ctl, cr, uw, 0, cut.clone()),
        pump(&ctl, ur, cw, 1, cut)
    );
}

/// Copies one direction (0 = request, 1 = response) until EOF, an error, or a cut.
async fn pump(
    ctl: &Control,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    direction: usize,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            () = until(&mut cut, true) => break,
        };
        if direction == 1 && ctl.corrupt.load(Ordering::Relaxed) && offset + n as u64 > CLEAN_PREFIX
        {
            let start = CLEAN_PREFIX.saturating_sub(offset) as usize;
            let at = start + (n - start) / 2;
            buf[at] ^= 0x5a;
            ctl.flipped.fetch_add(1, Ordering::Relaxed);
        }
        pace(ctl, direction, n).await;
        tokio::select! {
            r = to.write_all(&buf[..n]) => if r.is_err() { return },
            () = until(&mut cut, true) => break,
        }
        offset += n as u64;
    }
    // Cut: hold the connection silent until the link heals, then drop it.
    until(&mut cut, false).await;
}

/// Waits until the link's cut state is `state`.
async fn until(cut: &mut watch::Receiver<bool>, state: bool) {
    let _ = cut.wait_for(|c| *c == state).await;
}

async fn pace(ctl: &Control, direction: usize, n: usize) {
    let rate = ctl.rate.load(Ordering::Relaxed);
    if rate == 0 {
        return;
    }
    let start = {
        let mut next = ctl.pacer[direction].lock().expect("not poisoned");
        let now = Instant::now();
        let start = (*next).max(now);
        *next = start + Duration::from_secs_f64(n as f64 / rate as f64);
        start
    };
    tokio::time::sleep_until(start).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(data).await?;
        s.shutdown().await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn forwards_corrupts_and_cuts() {
        let link = Link::start(echo_server().await).await.unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        assert_eq!(round_trip(link.addr(), &data).await.unwrap(), data);

        link.set_corrupt(true);
        let got = round_trip(link.addr(), &data).await.unwrap();
        assert_eq!(got.len(), data.len());
        assert_ne!(got, data);
        assert_eq!(got[..CLEAN_PREFIX as usize], data[..CLEAN_PREFIX as usize]);
        assert!(link.flipped() > 0);
        link.set_corrupt(false);

        link.set_cut(true);
        let stalled = tokio::time::timeout(
            Duration::from_millis(300),
            round_trip(link.addr(), b"hello"),
        )
        .await;
        assert!(stalled.is_err(), "a cut link must not answer");
        link.set_cut(false);
        assert_eq!(round_trip(link.addr(), b"hello").await.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn throttles() {
        let link = Link::start(echo_server().await).await.unwrap();
        link.set_rate(Some(1_000_000));
        let data = vec![7u8; 300_000];
        let started = Instant::now();
        assert_eq!(round_trip(link.addr(), &data).await.unwrap(), data);
        // 300 kB each way at 1 MB/s per direction, overlapping: at least ~0.2 s.
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
