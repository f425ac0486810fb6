//! Progress deadlines for what a client sends and reads after its request header.
//!
//! A client may be slow, but not so slow that it holds a connection for nothing: while the
//! server waits on it (a handler waits for request body bytes, or the response waits for the
//! client to make room in the socket), every [`Pace::window`] of such waiting must move at least
//! [`Pace::min_bytes`] (at least one byte). Time the server spends on its own work (a handler
//! thinking, a stream-through pull waiting on its upstream) does not count, and neither does
//! anything the server sends or receives without waiting, so only the client's own slowness is
//! measured. A client reading a response at a megabyte a second waits the server for well under
//! a second per megabyte: it never comes near a limit of kilobytes per minute. The state is a
//! few counters and one timer per direction: memory stays constant.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// What a client must move while the server waits on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The waiting time over which progress is measured; also the longest wait without a byte.
    pub window: Duration,
    /// Bytes per second, on average over each window of waiting.
    pub min_rate: u64,
}

impl Policy {
    fn min_bytes(&self) -> u64 {
        let per_window = u128::from(self.min_rate) * self.window.as_millis() / 1000;
        u64::try_from(per_window).unwrap_or(u64::MAX).max(1)
    }
}

/// The client moved too little while the server waited on it.
#[derive(Debug, thiserror::Error)]
#[error("client too slow: fewer than {min_bytes} bytes in {window:?} of waiting on it")]
pub struct TooSlow {
    pub min_bytes: u64,
    pub window: Duration,
}

impl From<TooSlow> for std::io::Error {
    fn from(e: TooSlow) -> Self {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// Progress of one direction of one connection.
pub(crate) struct Pace {
    window: Duration,
    min_bytes: u64,
    /// Waiting accumulated in the current window.
    waited: Duration,
    /// Bytes moved in the current window.
    moved: u64,
    /// When the current wait began, while the server waits.
    waiting_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl Pace {
    pub(crate) fn new(policy: Policy) -> Pace {
        Pace {
            window: policy.window.max(Duration::from_millis(1)),
            min_bytes: policy.min_bytes(),
            waited: Duration::ZERO,
            moved: 0,
            waiting_since: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    fn too_slow(&self) -> TooSlow {
        TooSlow {
            min_bytes: self.min_bytes,
            window: self.window,
        }
    }

    /// The client did not move anything this time: the server waits on it. Arms the timer
    /// (with `cx`'s waker) for the end of the window; `Err` once a window ends short.
    pub(crate) fn waiting(&mut self, cx: &mut Context<'_>) -> Result<(), TooSlow> {
        loop {
            let now = Instant::now();
            let since = *self.waiting_since.get_or_insert(now);
            let end = since + self.window.saturating_sub(self.waited);
            if now >= end {
                if self.moved < self.min_bytes {
                    return Err(self.too_slow());
                }
                // Enough in that window: a new one begins, still waiting.
                self.waited = Duration::ZERO;
                self.moved = 0;
                self.waiting_since = Some(now);
                continue;
            }
            if self.timer.deadline() != end {
                self.timer.as_mut().reset(end);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
        }
    }

    /// The client moved `n` bytes (a read or a write completed).
    pub(crate) fn moved(&mut self, n: usize) -> Result<(), TooSlow> {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
        self.moved = self.moved.saturating_add(n as u64);
        if self.waited >= self.window {
            if self.moved < self.min_bytes {
                return Err(self.too_slow());
            }
            self.waited = Duration::ZERO;
            self.moved = 0;
        }
        Ok(())
    }
}

/// A connection's socket whose writes must keep pace: the response direction. Reads pass
/// through (the request header has hyper's timeout, bodies have [`PacedBody`]).
pub(crate) struct PacedIo<S> {
    inner: S,
    pace: Pace,
}

impl<S> PacedIo<S> {
    pub(crate) fn new(inner: S, policy: Policy) -> Self {
        PacedIo {
            inner,
            pace: Pace::new(policy),
        }
    }

    fn track(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                self.pace.moved(n)?;
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                self.pace.waiting(cx)?;
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PacedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PacedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that must keep pace. When it does not, the handler reading it gets an error
/// and the connection is closed (`abort`): the client gets no further chance to hold it.
pub(crate) struct PacedBody<B> {
    inner: B,
    pace: Pace,
    abort: CancellationToken,
}

impl<B> PacedBody<B> {
    pub(crate) fn new(inner: B, policy: Policy, abort: CancellationToken) -> Self {
        PacedBody {
            inner,
            pace: Pace::new(policy),
            abort,
        }
    }
}

impl<B> hyper::body::Body for PacedBody<B>
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = hyper::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let frame = match polled {
            Poll::Pending => {
                if let Err(e) = this.pace.waiting(cx) {
                    this.abort.cancel();
                    return Poll::Ready(Some(Err(e.into())));
                }
                return Poll::Pending;
            }
            Poll::Ready(f) => f,
        };
        if let Some(Ok(f)) = &frame {
            let n = f.data_ref().map_or(0, |d| d.len());
            if let Err(e) = this.pace.moved(n) {
                this.abort.cancel();
                return Poll::Ready(Some(Err(e.into())));
            }
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(window_ms: u64, rate: u64) -> Policy {
        Policy {
            window: Duration::from_millis(window_ms),
            min_rate: rate,
        }
    }

    #[test]
    fn at_least_one_byte_per_window() {
        assert_eq!(policy(1000, 0).min_bytes(), 1);
        assert_eq!(policy(60_000, 1024).min_bytes(), 60 * 1024);
        assert_eq!(policy(500, 1000).min_bytes(), 500);
    }

    // Real time, in spans wide enough apart that a busy machine does not blur them.

    #[tokio::test]
    async fn waiting_without_progress_ends_with_the_window() {
        let mut pace = Pace::new(policy(300, 100));
        let waker = futures_noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(pace.waiting(&mut cx).is_ok());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(pace.waiting(&mut cx).is_ok());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(pace.waiting(&mut cx).is_err());
    }

    #[tokio::test]
    async fn a_trickle_below_the_rate_fails_and_a_steady_flow_does_not() {
        let waker = futures_noop_waker();
        let mut cx = Context::from_waker(&waker);
        // 10 bytes per 30 ms of waiting is about 330 B/s: enough for 100 B/s, not for 2000.
        for (rate, ok) in [(100, true), (2000, false)] {
            let mut pace = Pace::new(policy(300, rate));
            let mut failed = false;
            for _ in 0..40 {
                if pace.waiting(&mut cx).is_err() {
                    failed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
                if pace.moved(10).is_err() {
                    failed = true;
                    break;
                }
            }
            assert_eq!(failed, !ok, "rate {rate}");
        }
    }

    #[tokio::test]
    async fn time_the_server_spends_elsewhere_does_not_count() {
        let waker = futures_noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut pace = Pace::new(policy(300, 1000));
        // One byte per 50 ms, but the server waited on the client only a moment each time.
        for _ in 0..20 {
            pace.waiting(&mut cx).unwrap();
            pace.moved(1).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn futures_noop_waker() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }
}
