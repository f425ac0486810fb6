//! `docfed daemon`: keeps the replica caught up with a node until stopped (ARCHITECTURE.md §2.8).
//!
//! Three loops:
//! * the event stream (`GET /v1/events` with this device's secret) wakes a catch-up on any
//!   event; it reconnects with backoff, sending `Last-Event-ID` (the newest seq seen) so the
//!   node tells of changes missed meanwhile, and treats 45 s without a byte (three keep-alives)
//!   as a dead connection;
//! * the interface watcher (`if-watch`) reports an address coming up: the daemon drops its
//!   connections (they may be bound to an address that is gone), reconnects the event stream
//!   at once instead of waiting out its backoff, and catches up; a catch-up running at that
//!   moment is abandoned and started again on the fresh connections;
//! * the catch-up loop runs `sync::sync`, one at a time, at start, when woken and every
//!   `--catch-up-interval`. A `Notify` keeps one permit: events during a sync coalesce into one
//!   more sync.
//!
//! Failover: when a catch-up cannot reach the node and its health check fails too, the daemon
//! moves to another regional node of the same federation: one found over mDNS that the home
//! node listed as a member of its topology (`Replica::peers`, learned at each sync), then the
//! other learned members, then the configured fallbacks. There it uses the device's
//! registration (or enrols, when that node has open enrollment), and the first catch-up gives
//! that node the device's flags (`sync::reconcile_flags`), so it keeps their content and pushes
//! their new versions. Without a registration there it still keeps the directory and the
//! flagged files current, by catching up every `AWAY_CATCH_UP` instead of by push. The home
//! node is probed every `HOME_PROBE`; when it answers, the daemon goes back.
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
use tokio::task::JoinHandle;

use crate::client::{http_client, Client};
use crate::device::{self, Registration};
use crate::discover;
use crate::error::CliError;
use crate::replica::Replica;
use crate::sync;

pub struct Options {
    pub catch_up_interval: Duration,
    pub sync: sync::Options,
    pub json: bool,
    /// Servers to fail over to after the federation's own regional nodes.
    pub fallbacks: Vec<String>,
    /// Look for regional nodes over mDNS when failing over.
    pub mdns: bool,
}

/// A stream silent this long is taken for dead (the node sends a comment every 15 s).
const STREAM_IDLE: Duration = Duration::from_secs(45);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// While away from home: how often the home node is asked whether it is back.
const HOME_PROBE: Duration = Duration::from_secs(5);
/// While on a node that cannot push to this device (no registration there): catch-up period.
const AWAY_CATCH_UP: Duration = Duration::from_secs(30);
/// The interface watcher's report of the addresses present at start ends when it pauses this
/// long, or after `STARTUP_MAX`.
const STARTUP_QUIET: Duration = Duration::from_millis(300);
const STARTUP_MAX: Duration = Duration::from_secs(2);
/// How long mDNS is listened to when looking for another node.
const MDNS_WAIT: Duration = Duration::from_millis(1500);

/// What wakes the catch-up loop.
#[derive(Default)]
struct Wake {
    /// A catch-up is due (an event, a reconnection).
    sync: Notify,
    /// An interface got an address: reconnect now.
    net_up: Notify,
}

/// The node the daemon follows right now, and the event stream from it.
struct Link {
    client: Arc<Client>,
    /// This device's registration with that node, if it has one.
    registered: bool,
    /// The newest change-feed seq of that node known (from events or a catch-up).
    seen: Arc<AtomicI64>,
    events: Option<JoinHandle<()>>,
}

impl Link {
    /// Follows `url` with a fresh HTTP client (no connection of an earlier network is reused),
    /// enrolling there if needed and possible.
    async fn open(
        url: &str,
        found_by: &str,
        replica: &Replica,
        wake: &Arc<Wake>,
    ) -> Result<Link, CliError> {
        let client = Arc::new(Client::new(
            url.to_owned(),
            http_client()?,
            found_by.to_owned(),
        ));
        let reg = match device::load(url)? {
            Some(reg) => Some(reg),
            None => enrol(&client).await,
        };
        let seen = Arc::new(AtomicI64::new(replica.position(url).await?));
        let events = reg.clone().map(|reg| {
            tokio::spawn(event_stream(
                client.clone(),
                reg,
                wake.clone(),
                seen.clone(),
            ))
        });
        Ok(Link {
            client,
            registered: reg.is_some(),
            seen,
            events,
        })
    }

    fn close(&mut self) {
        if let Some(e) = self.events.take() {
            e.abort();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.close();
    }
}

/// A registration with a node this device has none with, when the node has open enrollment
/// (under the name of one of the device's other registrations).
async fn enrol(client: &Client) -> Option<Registration> {
    let name = device::any_name().ok().flatten();
    let answer = client
        .send_json::<docfed_shared::wire::DeviceRegistration>(
            client
                .http
                .post(client.url("/v1/devices"))
                .json(&docfed_shared::wire::RegisterDevice { name }),
        )
        .await;
    match answer {
        Ok(got) => {
            let reg = Registration {
                device: got.device,
                secret: got.secret,
                name: got.name,
            };
            match device::save(&client.base, &reg) {
                Ok(_) => {
                    log(&format!(
                        "docfed daemon: enrolled with {} as device {}",
                        client.base, reg.device
                    ));
                    Some(reg)
                }
                Err(e) => {
                    log(&format!(
                        "docfed daemon: cannot keep the registration with {}: {e}",
                        client.base
                    ));
                    None
                }
            }
        }
        Err(e) => {
            log(&format!(
                "docfed daemon: not registered with {} and it does not enrol this device ({e}); \
                 following it without push or flags (run `docfed --server {} register` once to \
                 have both there)",
                client.base, client.base
            ));
            None
        }
    }
}

pub async fn run(home: Client, replica: Replica, opts: Options) -> Result<(), CliError> {
    let wake = Arc::new(Wake::default());
    let home_url = home.base.clone();
    let mut link = Link::open(&home_url, &home.found_by, &replica, &wake).await?;
    let interfaces = tokio::spawn(watch_interfaces(wake.clone()));
    let mut stop = std::pin::pin!(stop_signal());
    log(&format!(
        "docfed daemon: following {home_url} (catch-up every {})",
        humantime::format_duration(opts.catch_up_interval)
    ));

    wake.sync.notify_one();
    let mut next = tokio::time::Instant::now() + opts.catch_up_interval;
    let mut retry = Duration::from_secs(5);
    let mut probe = tokio::time::interval(HOME_PROBE);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let away = link.client.base != home_url;
        tokio::select! {
            sig = &mut stop => { log(&format!("docfed daemon: {sig}, stopping")); break }
            () = wake.sync.notified() => {}
            () = wake.net_up.notified() => {
                // Connections of the old network may hang until their timeouts: start afresh.
                let (url, by) = (link.client.base.clone(), link.client.found_by.clone());
                link.close();
                link = Link::open(&url, &by, &replica, &wake).await?;
            }
            () = tokio::time::sleep_until(next) => {}
            _ = probe.tick(), if away => {
                if !discover::healthy(&link.client.http, &home_url).await {
                    continue;
                }
                log(&format!("docfed daemon: {home_url} answers again; back from {}", link.client.base));
                link.close();
                link = Link::open(&home_url, &home.found_by, &replica, &wake).await?;
            }
        }
        let outcome = tokio::select! {
            sig = &mut stop => {
                log(&format!("docfed daemon: {sig} during a catch-up, stopping; an unfinished download resumes next time"));
                break;
            }
            // An address came up while catching up: the catch-up's connection may be bound to
            // an address that is gone and would hang until its timeout (30 s for a request,
            // 60 s for a read), leaving the device stale that long on the new network. It is
            // abandoned (safe, as for SIGTERM) and started again at once on fresh connections.
            () = wake.net_up.notified() => {
                log("docfed daemon: a network interface came up during a catch-up; starting it again on fresh connections");
                let (url, by) = (link.client.base.clone(), link.client.found_by.clone());
                link.close();
                link = Link::open(&url, &by, &replica, &wake).await?;
                next = tokio::time::Instant::now();
                continue;
            }
            r = sync::sync(&link.client, &replica, &opts.sync) => r,
        };
        let period = if link.registered {
            opts.catch_up_interval
        } else {
            opts.catch_up_interval.min(AWAY_CATCH_UP)
        };
        match outcome {
            Ok(report) => {
                link.seen.fetch_max(report.position, Ordering::Relaxed);
                if opts.json {
                    log(&serde_json::to_string(&report).expect("serialisable"));
                } else {
                    log(&summary(&report));
                }
                next = tokio::time::Instant::now() + period;
                retry = Duration::from_secs(5);
            }
            Err(e @ CliError::Network(_))
                if !discover::healthy(&link.client.http, &link.client.base).await =>
            {
                match failover(&link.client.base, &home_url, &replica, &opts).await {
                    Some((url, by)) => {
                        log(&format!(
                            "docfed daemon: {} does not answer ({e}); failing over to {url} ({by})",
                            link.client.base
                        ));
                        link.close();
                        link = Link::open(&url, &by, &replica, &wake).await?;
                        next = tokio::time::Instant::now();
                        retry = Duration::from_secs(5);
                    }
                    None => {
                        log(&format!(
                            "docfed daemon: catch-up failed: {e}; no other node answers either; next try in {}",
                            humantime::format_duration(retry.min(period))
                        ));
                        next = tokio::time::Instant::now() + retry.min(period);
                        retry = (retry * 2).min(Duration::from_secs(300));
                    }
                }
            }
            Err(e) => {
                log(&format!(
                    "docfed daemon: catch-up failed: {e}; next try in {}",
                    humantime::format_duration(retry.min(period))
                ));
                next = tokio::time::Instant::now() + retry.min(period);
                retry = (retry * 2).min(Duration::from_secs(300));
            }
        }
    }
    link.close();
    interfaces.abort();
    replica.close().await;
    Ok(())
}

/// Another node to follow while `current` does not answer: a member of the federation found
/// over mDNS, another member, a configured fallback; the first that answers, with how it was
/// found. The home node is not one: it is probed on its own schedule.
async fn failover(
    current: &str,
    home: &str,
    replica: &Replica,
    opts: &Options,
) -> Option<(String, String)> {
    let members = replica.peers().await.unwrap_or_default();
    let mut candidates: Vec<(String, String)> = Vec::new();
    if opts.mdns {
        if let Ok(probe) = discover::discovery_client() {
            // A node of another federation on the same network is no substitute, nor anything
            // that cannot prove it is the member it advertises (`discover::check_advertised`).
            let found = discover::browse_until(MDNS_WAIT, async |id: &str, url: &str| {
                members.iter().any(|m| m.url == url)
                    && discover::check_advertised(&probe, id, url).await.is_ok()
            })
            .await;
            if let Some((id, url)) = found {
                candidates.push((url, format!("mDNS found {id}, a member of the federation")));
            }
        }
    }
    for m in &members {
        candidates.push((
            m.url.clone(),
            format!("{} listed it as {}", home, m.node_id),
        ));
    }
    for url in &opts.fallbacks {
        candidates.push((url.clone(), "a configured fallback".to_owned()));
    }
    let http = http_client().ok()?;
    let mut tried = std::collections::HashSet::new();
    for (url, by) in candidates {
        if url == current
            || url == home
            || !tried.insert(url.clone())
            || crate::client::check_scheme(&url).is_err()
        {
            continue;
        }
        if discover::healthy(&http, &url).await {
            return Some((url, by));
        }
    }
    None
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
    if r.flags_sent > 0 {
        line.push_str(&format!("; {} flag changes sent to the node", r.flags_sent));
    }
    for refused in &r.outbox_refused {
        line.push_str(&format!("; refused and dropped: {refused}"));
    }
    for refused in &r.flags_refused {
        line.push_str(&format!("; refused here, kept: {refused}"));
    }
    for refused in &r.refused {
        line.push_str(&format!("; {refused}"));
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
async fn event_stream(
    client: Arc<Client>,
    reg: Registration,
    wake: Arc<Wake>,
    seen: Arc<AtomicI64>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let why = match follow(&client, &reg, &wake, &seen).await {
            Ok(()) => "the node ended the stream".to_owned(),
            Err(e) => e.to_string(),
        };
        // Reconnected after a failure: changes may have been missed before Last-Event-ID
        // could tell (an unreachable node says nothing), so catch up anyway.
        wake.sync.notify_one();
        log(&format!(
            "docfed daemon: event stream: {why}; reconnecting in {}",
            humantime::format_duration(backoff)
        ));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: returns when it ends.
async fn follow(
    client: &Client,
    reg: &Registration,
    wake: &Wake,
    seen: &AtomicI64,
) -> Result<(), CliError> {
    let resp = client
        .http
        .get(client.url("/v1/events"))
        .bearer_auth(&reg.secret)
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", seen.load(Ordering::Relaxed).to_string())
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
                    seen.fetch_max(s, Ordering::Relaxed);
                }
                wake.sync.notify_one();
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

/// Wakes a reconnection and a catch-up when an interface gets an address. Without netlink
/// (a sandbox), the daemon still reconnects with backoff and catches up on its interval.
async fn watch_interfaces(wake: Arc<Wake>) {
    let mut watcher = match if_watch::tokio::IfWatcher::new() {
        Ok(w) => w,
        Err(e) => {
            log(&format!(
                "docfed daemon: cannot watch network interfaces ({e}); relying on reconnection backoff"
            ));
            return;
        }
    };
    // The watcher first reports every address already there. They are not news (the daemon
    // catches up at start anyway), and taken for news they would abandon the first catch-up:
    // recorded, not signalled, until the reports pause for STARTUP_QUIET (at most
    // STARTUP_MAX). After that, only an address that was not up wakes the daemon.
    let mut up = std::collections::HashSet::new();
    let started = tokio::time::Instant::now();
    while started.elapsed() < STARTUP_MAX {
        match tokio::time::timeout(STARTUP_QUIET, watcher.next()).await {
            Ok(Some(Ok(if_watch::IfEvent::Up(net)))) => {
                up.insert(net);
            }
            Ok(Some(Ok(if_watch::IfEvent::Down(net)))) => {
                up.remove(&net);
            }
            Ok(Some(Err(_))) => {}
            Ok(None) => return,
            Err(_) => break,
        }
    }
    while let Some(event) = watcher.next().await {
        match event {
            Ok(if_watch::IfEvent::Up(net)) => {
                if up.insert(net) && !net.addr().is_loopback() {
                    wake.net_up.notify_one();
                }
            }
            Ok(if_watch::IfEvent::Down(net)) => {
                up.remove(&net);
            }
            Err(_) => {}
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
