//! `docfed daemon`: keeps the replica caught up with a node until stopped (ARCHITECTURE.md §2.8).
//!
//! Three loops share two `Notify`s:
//! * the event stream (`GET /v1/events` with this device's secret) wakes a catch-up on any
//!   event; it reconnects with backoff, sending `Last-Event-ID` (the newest seq seen) so the
//!   node tells of changes missed meanwhile, and treats 45 s without a byte (three keep-alives)
//!   as a dead connection;
//! * the interface watcher (`if-watch`) wakes a catch-up when an address comes up and cuts the
//!   event stream's backoff short;
//! * the catch-up loop runs `sync::sync`, one at a time, at start, when woken and every
//!   `--catch-up-interval`. A `Notify` keeps one permit: events during a sync coalesce into one
//!   more sync.
//!
//! SIGINT/SIGTERM abandon the current sync: a download stops where it is and its partial file
//! is resumed next time (its prefix re-hashed); the outbox and the change feed commit per item
//! and per page, and a repeated outbox action is harmless.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use futures::StreamExt;
use tokio::sync::Notify;

use crate::client::Client;
use crate::device::Registration;
use crate::error::CliError;
use crate::replica::Replica;
use crate::sync;

pub struct Options {
    pub catch_up_interval: Duration,
    pub sync: sync::Options,
    pub json: bool,
}

/// A stream silent this long is taken for dead (the node sends a comment every 15 s).
const STREAM_IDLE: Duration = Duration::from_secs(45);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

struct Shared {
    /// Wakes the catch-up loop.
    sync: Notify,
    /// An interface came up: reconnect now.
    net_up: Notify,
    /// The newest change-feed seq known (from events or a catch-up).
    seen: AtomicI64,
}

pub async fn run(
    client: Client,
    reg: Registration,
    replica: Replica,
    opts: Options,
) -> Result<(), CliError> {
    let shared = Arc::new(Shared {
        sync: Notify::new(),
        net_up: Notify::new(),
        seen: AtomicI64::new(replica.position(&client.base).await?),
    });
    let client = Arc::new(client);
    let events = tokio::spawn(event_stream(client.clone(), reg, shared.clone()));
    let interfaces = tokio::spawn(watch_interfaces(shared.clone()));
    let mut stop = std::pin::pin!(stop_signal());
    log(&format!(
        "docfed daemon: following {} (catch-up every {})",
        client.base,
        humantime::format_duration(opts.catch_up_interval)
    ));

    shared.sync.notify_one();
    let mut next = tokio::time::Instant::now() + opts.catch_up_interval;
    let mut retry = Duration::from_secs(5);
    loop {
        tokio::select! {
            sig = &mut stop => { log(&format!("docfed daemon: {sig}, stopping")); break }
            () = shared.sync.notified() => {}
            () = tokio::time::sleep_until(next) => {}
        }
        let outcome = tokio::select! {
            sig = &mut stop => {
                log(&format!("docfed daemon: {sig} during a catch-up, stopping; an unfinished download resumes next time"));
                break;
            }
            r = sync::sync(&client, &replica, &opts.sync) => r,
        };
        match outcome {
            Ok(report) => {
                shared.seen.fetch_max(report.position, Ordering::Relaxed);
                if opts.json {
                    log(&serde_json::to_string(&report).expect("serialisable"));
                } else {
                    log(&summary(&report));
                }
                next = tokio::time::Instant::now() + opts.catch_up_interval;
                retry = Duration::from_secs(5);
            }
            Err(e) => {
                log(&format!(
                    "docfed daemon: catch-up failed: {e}; next try in {}",
                    humantime::format_duration(retry.min(opts.catch_up_interval))
                ));
                next = tokio::time::Instant::now() + retry.min(opts.catch_up_interval);
                retry = (retry * 2).min(Duration::from_secs(300));
            }
        }
    }
    events.abort();
    interfaces.abort();
    replica.close().await;
    Ok(())
}

fn log(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// One line: what the catch-up changed.
fn summary(r: &sync::Report) -> String {
    let d = &r.documents;
    let mut line = format!(
        "synced with {} up to change {}: {} new, {} updated, {} deleted, {} reactivated; files {} downloaded ({}), {} removed; outbox {} sent, {} queued",
        r.server, r.position, d.new, d.updated, d.deleted, d.reactivated,
        r.files_downloaded, ByteSize(r.bytes_downloaded), r.files_removed,
        r.outbox_sent, r.outbox_pending
    );
    for refused in &r.outbox_refused {
        line.push_str(&format!("; refused and dropped: {refused}"));
    }
    line
}

/// Resolves with the name of the first SIGINT or SIGTERM.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Keeps an event stream open, waking a catch-up on every event.
async fn event_stream(client: Arc<Client>, reg: Registration, shared: Arc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let why = match follow(&client, &reg, &shared).await {
            Ok(()) => "the node ended the stream".to_owned(),
            Err(e) => e.to_string(),
        };
        // Reconnected after a failure: changes may have been missed before Last-Event-ID
        // could tell (an unreachable node says nothing), so catch up anyway.
        shared.sync.notify_one();
        log(&format!(
            "docfed daemon: event stream: {why}; reconnecting in {}",
            humantime::format_duration(backoff)
        ));
        tokio::select! {
            () = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(BACKOFF_MAX),
            () = shared.net_up.notified() => backoff = BACKOFF_MIN,
        }
    }
}

/// One connection: returns when it ends.
async fn follow(client: &Client, reg: &Registration, shared: &Shared) -> Result<(), CliError> {
    let resp = client
        .http
        .get(client.url("/v1/events"))
        .bearer_auth(&reg.secret)
        .header("Accept", "text/event-stream")
        .header(
            "Last-Event-ID",
            shared.seen.load(Ordering::Relaxed).to_string(),
        )
        .send()
        .await
        .map_err(|e| client.network(e))?;
    let resp = client.check(resp).await?;
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    loop {
        let chunk = match tokio::time::timeout(STREAM_IDLE, body.next()).await {
            Err(_) => {
                return Err(CliError::Network(format!(
                    "{}: nothing received for {}",
                    client.base,
                    humantime::format_duration(STREAM_IDLE)
                )))
            }
            Ok(None) => return Ok(()),
            Ok(Some(c)) => c.map_err(|e| client.network(e))?,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if let Some(seq) = parse_event(&event) {
                if let Some(s) = seq {
                    shared.seen.fetch_max(s, Ordering::Relaxed);
                }
                shared.sync.notify_one();
            }
        }
    }
}

/// `None` for a comment (keep-alive); otherwise the event's id as a seq, if it has one.
fn parse_event(text: &str) -> Option<Option<i64>> {
    let mut is_event = false;
    let mut id = None;
    for line in text.lines() {
        if line.starts_with(':') || line.is_empty() {
            continue;
        }
        is_event = true;
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse().ok();
        }
    }
    is_event.then_some(id)
}

/// Wakes a catch-up and a reconnection when an interface gets an address. Without netlink
/// (a sandbox), the daemon still reconnects with backoff and catches up on its interval.
async fn watch_interfaces(shared: Arc<Shared>) {
    let mut watcher = match if_watch::tokio::IfWatcher::new() {
        Ok(w) => w,
        Err(e) => {
            log(&format!(
                "docfed daemon: cannot watch network interfaces ({e}); relying on reconnection backoff"
            ));
            return;
        }
    };
    while let Some(event) = watcher.next().await {
        if let Ok(if_watch::IfEvent::Up(net)) = event {
            if !net.addr().is_loopback() {
                shared.net_up.notify_one();
                shared.sync.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_event;

    #[test]
    fn events_and_comments() {
        assert_eq!(
            parse_event("event: changed\nid: 7\ndata: {\"seq\":7}\n\n"),
            Some(Some(7))
        );
        assert_eq!(
            parse_event("event: flagged\ndata: {\"id\":\"x\",\"version\":2}\n\n"),
            Some(None)
        );
        assert_eq!(parse_event(":\n\n"), None);
    }
}
