//! `docfed sync`: one catch-up of the replica with a node, then exit (ARCHITECTURE.md §2.8).
//!
//! 1. The outbox is delivered in order, each action once: a row is deleted only after the node
//!    confirmed it, and a repeat after a lost answer is harmless (flag and unflag are idempotent
//!    `PUT`/`DELETE`; an annotation carries its outbox id as its client-chosen `id`).
//! 2. With nothing left queued, the replica's flags and the node's list for this device are
//!    merged three ways (`Replica::merge_flags`) and the node is told the result, so a node
//!    the device fails over to gets its flags. The node's regional peers are remembered.
//! 3. The change feed is read from the position reached at this node, page by page; each page
//!    and the position after it commit together (`Replica::apply_page`).
//! 4. Content of documents that are deleted or no longer flagged leaves `files/`; the newest
//!    version of every flagged document is downloaded into `partial/<md5>` (resumed with
//!    `Range`/`If-Range` after an interruption, the prefix re-hashed), verified by size, MD5
//!    and, when the version has one, SHA-256, then renamed into `files/`. Under a storage
//!    budget (`--max-storage`), documents flagged first are kept first; the content of the
//!    rest is deferred (`Replica::plan_content`).

use std::collections::HashSet;
use std::io::{Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use docfed_shared::hashing::StreamHash;
use docfed_shared::topology::Tier;
use docfed_shared::wire::annotations::NewAnnotation;
use docfed_shared::wire::devices::FlaggedDocuments;
use docfed_shared::wire::peers::PeersView;
use docfed_shared::wire::{ChangeFeed, DocumentVersion};
use docfed_shared::ContentHasher;
use futures::StreamExt;
use indicatif::ProgressBar;
use serde::de::IgnoredAny;
use serde::Serialize;

use crate::client::Client;
use crate::device;
use crate::error::CliError;
use crate::replica::{Applied, Peer, Replica};

pub struct Options {
    /// A progress bar per download on stderr.
    pub progress: bool,
    /// Cap on download speed, bytes per second.
    pub limit_rate: Option<u64>,
    /// Changes asked for per request (and applied per transaction).
    pub page: u32,
    /// Attempts per download after a network failure, each resuming.
    pub retries: u32,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub server: String,
    /// The change-feed position reached at `server`.
    pub position: i64,
    /// Change-feed entries read.
    pub changes: u64,
    pub documents: Applied,
    pub files_downloaded: u64,
    pub bytes_downloaded: u64,
    /// Files that left `files/` (deleted or unflagged documents).
    pub files_removed: u64,
    pub outbox_sent: u64,
    /// Actions the node refused for good (dropped from the outbox), with the reason.
    pub outbox_refused: Vec<String>,
    /// Actions still queued (the device is not registered with this node, or was revoked).
    pub outbox_pending: u64,
    /// Flags (and unflags) the node was told to make its list equal the replica's, e.g. after
    /// failing over to it.
    pub flags_sent: u64,
    /// Flags this node refused; they stay the device's and are offered again next time.
    pub flags_refused: Vec<String>,
    /// The storage budget for flagged content (`--max-storage`), if any.
    pub storage_budget: Option<u64>,
    /// Bytes of flagged content `files/` holds (or will, once downloads finish).
    pub storage_kept: u64,
    /// Flagged documents whose content does not fit in the budget: metadata only.
    pub deferred: Vec<String>,
    /// The node had compacted its change feed past this replica's position (retention): the
    /// sync replayed a snapshot (each document changed since, once, with deletions) instead
    /// of every change. The directory ends the same either way.
    pub snapshot: bool,
    /// Versions this server sent that the pinned primaries' keys do not accept (forged,
    /// altered, unsigned): neither recorded nor acted on (`trust`).
    pub refused: Vec<String>,
}

pub async fn sync(client: &Client, replica: &Replica, opts: &Options) -> Result<Report, CliError> {
    let mut report = Report {
        server: client.base.clone(),
        ..Report::default()
    };
    flush_outbox(client, replica, &mut report).await?;
    if report.outbox_pending == 0 {
        if let Some(reg) = device::load(&client.base)? {
            reconcile_flags(client, replica, &reg, &mut report).await?;
        }
    }

    let page_of = |since: i64| async move {
        client
            .get_json::<ChangeFeed>(
                "/v1/changes",
                &[
                    ("since", since.to_string()),
                    ("limit", opts.page.to_string()),
                ],
            )
            .await
    };
    let mut since = replica.position(&client.base).await?;
    let mut feed = page_of(since).await?;
    report.snapshot = since > 0 && since < feed.horizon;
    loop {
        let n = feed.changes.len();
        refuse_unverified(&mut feed, &client.base, &mut report);
        let after = since.max(feed.last_seq);
        // The next page is asked for while this one is written: the node's time to read it
        // overlaps the replica's time to apply this one (a first sync of a large directory
        // spends about as long in each). A failed apply drops the page fetched meanwhile.
        let (applied, next) = if n < opts.page as usize {
            (replica.apply_page(&client.base, &feed).await, None)
        } else {
            let (applied, next) =
                tokio::join!(replica.apply_page(&client.base, &feed), page_of(after));
            (applied, Some(next))
        };
        report.documents.add(applied?);
        report.changes += n as u64;
        since = after;
        match next {
            Some(next) => feed = next?,
            None => break,
        }
    }
    report.position = since;

    let budget = replica.storage_budget().await?;
    let plan = replica.plan_content(budget).await?;
    report.files_removed = replica.prune_files().await?.len() as u64;
    report.storage_budget = budget;
    report.storage_kept = plan.kept_bytes;
    report.deferred = plan.deferred.iter().map(|v| v.id.to_string()).collect();
    let keep: HashSet<String> = plan.download.iter().map(|v| v.md5.to_string()).collect();
    for v in &plan.download {
        // Recorded before keys were pinned, perhaps: checked again before any byte is kept.
        if let Some(Err(problem)) = crate::trust::keys().map(|k| k.verify(v)) {
            report
                .refused
                .push(crate::trust::refusal(v, &client.base, problem));
            continue;
        }
        report.bytes_downloaded += download(client, replica, v, opts).await?;
        report.files_downloaded += 1;
    }
    // Partial files of content no longer wanted (an older version, an unflagged document).
    if let Ok(dir) = std::fs::read_dir(replica.partial_dir()) {
        for e in dir.flatten() {
            if !keep.contains(&e.file_name().to_string_lossy().into_owned()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    learn_peers(client, replica).await;
    replica.mark_synced(&client.base).await?;
    Ok(report)
}

/// Drops from `feed` every version the pinned keys refuse, saying so in `report` (the page's
/// position still counts: what was refused is never asked for again from this server).
fn refuse_unverified(feed: &mut ChangeFeed, server: &str, report: &mut Report) {
    let Some(keys) = crate::trust::keys() else {
        return;
    };
    feed.changes.retain(|c| match keys.verify(&c.document) {
        Ok(()) => true,
        Err(problem) => {
            report
                .refused
                .push(crate::trust::refusal(&c.document, server, problem));
            false
        }
    });
}

/// Makes the flags `client`'s node holds for this device and the replica's agree
/// (`Replica::merge_flags`): the node's own changes are adopted, then the node is told the
/// replica's. A node the device fails over to thus receives all of its flags, and the home node
/// on return the ones made meanwhile.
async fn reconcile_flags(
    client: &Client,
    replica: &Replica,
    reg: &device::Registration,
    report: &mut Report,
) -> Result<(), CliError> {
    let flags_url = client.url(&format!("/v1/devices/{}/flags", reg.device));
    let flagged: FlaggedDocuments = client
        .send_json(client.http.get(&flags_url).bearer_auth(&reg.secret))
        .await?;
    let listed: Vec<String> = flagged
        .documents
        .iter()
        .map(|d| d.current.id.to_string())
        .collect();
    let Some(push) = replica.merge_flags(&client.base, &listed).await? else {
        return Ok(());
    };
    let mut held: HashSet<String> = listed.into_iter().collect();
    for (id, on) in push
        .flag
        .iter()
        .map(|id| (id, true))
        .chain(push.unflag.iter().map(|id| (id, false)))
    {
        let url = format!("{flags_url}/{id}");
        let req = if on {
            client.http.put(url)
        } else {
            client.http.delete(url)
        };
        match client
            .send_json::<IgnoredAny>(req.bearer_auth(&reg.secret))
            .await
        {
            Ok(_) | Err(CliError::NotFound(_)) if !on => {
                held.remove(id);
                report.flags_sent += 1;
            }
            Ok(_) => {
                held.insert(id.clone());
                report.flags_sent += 1;
            }
            // Refused here (a document outside this node's scope, its flag quota): the flag
            // stays the device's and is offered again at the next sync, here or elsewhere.
            Err(e @ (CliError::NotFound(_) | CliError::Refused(_))) => {
                report.flags_refused.push(format!("flag {id}: {e}"));
            }
            Err(e) => return Err(e),
        }
    }
    let held: Vec<String> = held.into_iter().collect();
    replica.set_server_flags(&client.base, &held).await
}

/// Remembers the regional nodes of `client`'s federation, where the daemon fails over to.
/// Best effort: an older node without `/v1/peers` leaves the list as it was. A request that
/// fails on the network is tried twice more at once: the list is what lets a daemon leave a node that dies, and the
/// next sync may be a catch-up interval away.
async fn learn_peers(client: &Client, replica: &Replica) {
    let mut answer = None;
    for attempt in 0..3u32 {
        match client.get_json::<PeersView>("/v1/peers", &[]).await {
            Ok(v) => {
                answer = Some(v);
                break;
            }
            Err(CliError::Network(_)) => {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await
            }
            Err(_) => return,
        }
    }
    let Some(view) = answer else {
        return;
    };
    let peers: Vec<Peer> = view
        .peers
        .iter()
        .filter(|p| p.in_topology && p.tier == Tier::Regional.as_str())
        .map(|p| Peer {
            url: p.http.trim_end_matches('/').to_owned(),
            node_id: p.id.clone(),
            region: p.region.clone(),
            backup: view.backup.as_deref() == Some(p.id.as_str()),
        })
        .filter(|p| p.url.starts_with("http://") || p.url.starts_with("https://"))
        .collect();
    if !peers.is_empty() {
        let _ = replica.set_peers(&client.base, &peers).await;
    }
}

pub async fn flush_outbox(
    client: &Client,
    replica: &Replica,
    report: &mut Report,
) -> Result<(), CliError> {
    let reg = device::load(&client.base)?;
    for item in replica.outbox().await? {
        let result = match (item.kind.as_str(), &reg) {
            ("annotate", _) => {
                let mut body: NewAnnotation = serde_json::from_str(&item.body)
                    .map_err(|e| CliError::Local(format!("outbox item {}: {e}", item.id)))?;
                // The outbox id: a repeat after a lost answer is not a second annotation.
                body.id = Some(item.id.clone());
                client
                    .send_json::<IgnoredAny>(
                        client
                            .http
                            .post(client.url(&format!("/v1/documents/{}/annotations", item.doc_id)))
                            .json(&body),
                    )
                    .await
            }
            (_, None) => {
                // Flags belong to a registration with this node: they wait for one.
                report.outbox_pending += 1;
                continue;
            }
            (kind, Some(reg)) => {
                let url = client.url(&format!("/v1/devices/{}/flags/{}", reg.device, item.doc_id));
                let req = if kind == "flag" {
                    client.http.put(url)
                } else {
                    client.http.delete(url)
                };
                client
                    .send_json::<IgnoredAny>(req.bearer_auth(&reg.secret))
                    .await
            }
        };
        match result {
            Ok(_) => {
                replica.outbox_done(item.seq).await?;
                report.outbox_sent += 1;
            }
            // The node does not know this flag: nothing left to undo.
            Err(CliError::NotFound(_)) if item.kind == "unflag" => {
                replica.outbox_done(item.seq).await?;
                report.outbox_sent += 1;
            }
            // Revoked (or the node lost its devices): kept until the device registers again.
            Err(CliError::Unauthorized(_)) => report.outbox_pending += 1,
            Err(e @ (CliError::NotFound(_) | CliError::Refused(_))) => {
                if item.kind == "flag" {
                    replica.set_flag(&item.doc_id, false).await?;
                }
                replica.outbox_done(item.seq).await?;
                report
                    .outbox_refused
                    .push(format!("{} {}: {e}", item.kind, item.doc_id));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Downloads and installs the content of `v`; returns the bytes received.
async fn download(
    client: &Client,
    replica: &Replica,
    v: &DocumentVersion,
    opts: &Options,
) -> Result<u64, CliError> {
    let part = replica.partial_dir().join(v.md5.as_str());
    let bar = opts
        .progress
        .then(|| crate::fetch::progress_bar(v.size, &v.filename));
    let mut received = 0u64;
    let mut attempt = 0u32;
    let hash = loop {
        match transfer(
            client,
            v,
            &part,
            bar.as_ref(),
            opts.limit_rate,
            &mut received,
        )
        .await
        {
            Ok(h) => break h,
            Err(e) if attempt < opts.retries && matches!(e, CliError::Network(_)) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500 << attempt.min(5))).await;
            }
            Err(e) => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                return Err(e);
            }
        }
    };
    if let Some(b) = &bar {
        b.finish();
    }
    let d = hash.finish();
    let sha_ok = v.sha256.as_ref().is_none_or(|s| *s == d.sha256);
    if d.md5 != v.md5 || d.size != v.size || !sha_ok {
        let _ = std::fs::remove_file(&part);
        return Err(CliError::Verification(format!(
            "document {} version {}: received {} bytes with MD5 {} (SHA-256 {}), expected {} \
             bytes with MD5 {}{}; nothing was kept",
            v.id,
            v.version,
            d.size,
            d.md5,
            d.sha256,
            v.size,
            v.md5,
            v.sha256
                .as_ref()
                .map(|s| format!(" (SHA-256 {s})"))
                .unwrap_or_default()
        )));
    }
    replica.install(v, &part).await?;
    Ok(received)
}

/// One attempt: hashes what `part` holds, asks for the rest, appends it.
async fn transfer(
    client: &Client,
    v: &DocumentVersion,
    part: &Path,
    bar: Option<&ProgressBar>,
    limit_rate: Option<u64>,
    received: &mut u64,
) -> Result<ContentHasher, CliError> {
    let (mut file, mut hash) =
        docfed_shared::hashing::open_for_resume::<ContentHasher>(part, v.size)?;
    let from = hash.len();
    if let Some(b) = bar {
        b.set_position(from);
    }
    if from == v.size {
        return Ok(hash);
    }
    let resp = client
        .content_request(v, from)
        .send()
        .await
        .map_err(|e| client.network(e))?;
    let resp = client.check(resp).await?;
    if resp.status() == reqwest::StatusCode::OK && from > 0 {
        // The node sent everything: start over.
        file.set_len(0)?;
        file.seek(std::io::SeekFrom::Start(0))?;
        hash = ContentHasher::new();
    }
    let started = Instant::now();
    let mut this_attempt = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| client.interrupted(&e))?;
        file.write_all(&chunk)?;
        hash.update(&chunk);
        *received += chunk.len() as u64;
        this_attempt += chunk.len() as u64;
        if let Some(b) = bar {
            b.set_position(hash.len());
        }
        if hash.len() > v.size {
            break;
        }
        if let Some(rate) = limit_rate.filter(|&r| r > 0) {
            let due = Duration::from_secs_f64(this_attempt as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    file.flush()?;
    if hash.len() < v.size {
        return Err(CliError::Network(format!(
            "{}: transfer ended after {} of {} bytes",
            client.base,
            hash.len(),
            v.size
        )));
    }
    Ok(hash)
}
