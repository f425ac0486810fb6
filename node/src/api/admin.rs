//! `POST /v1/admin/import`: seed this node's directory from JSON lines of document versions
//! (the `document` objects of a change feed), for migrations and for loading a large directory
//! in benchmarks. Metadata only: no content is pulled and nothing is announced to other nodes.
//! Every line is held to the bounds a version arriving by message is held to and, on a node of
//! a keyed federation, must carry its primary's valid signature: the operator's token does not
//! make a forged version true.
//! Lines are recorded in transactions of a few thousand, each in a fixed number of set-based
//! statements (`db::import`); a malformed line stops the import with its line number, after
//! the lines before it were recorded (the import is idempotent, so it can simply be repeated
//! once the input is fixed).
//!
//! A **first load** (the directory is empty) is one transaction instead: the secondary indexes
//! and the full-text index are built once after the rows (`db::import::start_first_load`),
//! which is faster than keeping them current row by row. It holds the node's writer for its
//! whole duration: other writes are answered 503 with `Retry-After` meanwhile (the inbox and
//! pulls retry), and readers see the empty directory until it commits. A malformed line then
//! keeps nothing: the whole load is rolled back.

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use docfed_shared::wire::admin::ImportReport;
use docfed_shared::wire::{ChangeKind, DocumentVersion};
use futures::StreamExt;

use super::{AppState, Authorized};
use crate::db::import::{
    directory_is_empty, finish_first_load, record_versions, start_first_load, Deferred,
};
use crate::db::FirstLoad;
use crate::error::ApiError;

/// Versions recorded per transaction (each holds the writer for about 0.3 s at a million
/// documents; 20,000 was not measurably faster, BENCHMARKS.md §3).
const BATCH: usize = 5_000;
/// ... or fewer, once their lines add up to this: a batch of the largest versions the limits
/// allow stays bounded in memory.
const BATCH_BYTES: usize = 32 << 20;
const MAX_LINE: usize = 1 << 20;

pub async fn import(
    State(node): State<AppState>,
    _auth: Authorized,
    body: Body,
) -> Result<Json<ImportReport>, ApiError> {
    let mut mode = Mode::Incremental;
    let empty: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM versions)")
        .fetch_one(node.db.reader())
        .await?;
    if empty {
        let mut load = node.db.begin_first_load().await?;
        // Something may have been recorded between the look and the writer.
        if directory_is_empty(load.tx()).await? {
            let deferred = start_first_load(load.tx()).await?;
            tracing::info!("first load into an empty directory: indexes built after the rows");
            mode = Mode::First(load, deferred);
        }
    }
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut batch: Vec<DocumentVersion> = Vec::with_capacity(BATCH);
    let (mut line_no, mut imported, mut known) = (0u64, 0u64, 0u64);
    let mut batch_bytes = 0usize;
    let mut done = false;
    while !done {
        match stream.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(e)) => return Err(ApiError::UploadAborted(e.to_string())),
            None => {
                done = true;
                buf.push(b'\n');
            }
        }
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + pos];
            start += pos + 1;
            line_no += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed = serde_json::from_slice::<DocumentVersion>(line)
                .map_err(|e| e.to_string())
                .and_then(|v| check(&node, &v).map(|()| v));
            match parsed {
                Ok(v) => {
                    batch.push(v);
                    batch_bytes += line.len();
                }
                Err(e) => {
                    if let Mode::First(..) = mode {
                        // One transaction: dropped unrecorded.
                        return Err(ApiError::BadRequest(format!(
                            "line {line_no}: {e} (a first load into an empty directory is all or nothing: nothing was recorded)"
                        )));
                    }
                    // The lines before it are recorded, as the import's contract says.
                    record(&node, &mut mode, &mut batch).await?;
                    return Err(ApiError::BadRequest(format!("line {line_no}: {e}")));
                }
            }
            if batch.len() >= BATCH || batch_bytes >= BATCH_BYTES {
                let (i, k) = record(&node, &mut mode, &mut batch).await?;
                imported += i;
                known += k;
                batch_bytes = 0;
            }
        }
        buf.drain(..start);
        if buf.len() > MAX_LINE {
            return Err(ApiError::BadRequest(format!(
                "line {} is longer than {MAX_LINE} bytes",
                line_no + 1
            )));
        }
    }
    let (i, k) = record(&node, &mut mode, &mut batch).await?;
    if let Mode::First(mut load, deferred) = mode {
        let started = std::time::Instant::now();
        finish_first_load(load.tx(), deferred).await?;
        load.commit().await?;
        tracing::info!(
            versions = imported + i,
            index_ms = started.elapsed().as_millis() as u64,
            "first load committed"
        );
        node.changes_committed().await;
    }
    Ok(Json(ImportReport {
        imported: imported + i,
        already_known: known + k,
    }))
}

fn check(node: &AppState, v: &DocumentVersion) -> Result<(), String> {
    docfed_shared::limits::check_version(v)?;
    match node.federation() {
        Some(fed) if fed.topology.is_signed() => {
            crate::federation::admission::check_version_signature(&fed.topology, v)
                .map_err(|e| e.to_string())
        }
        _ => Ok(()),
    }
}

/// How the import records its batches.
enum Mode {
    /// A transaction per batch.
    Incremental,
    /// One transaction for the whole load, the indexes deferred to its end.
    First(FirstLoad, Deferred),
}

async fn record(
    node: &AppState,
    mode: &mut Mode,
    batch: &mut Vec<DocumentVersion>,
) -> Result<(u64, u64), ApiError> {
    if batch.is_empty() {
        return Ok((0, 0));
    }
    let versions: Vec<(DocumentVersion, ChangeKind)> = batch
        .drain(..)
        .map(|v| {
            let kind = match (v.version, v.deleted) {
                (_, true) => ChangeKind::Deleted,
                (1, false) => ChangeKind::Published,
                _ => ChangeKind::Updated,
            };
            (v, kind)
        })
        .collect();
    let done = match mode {
        Mode::First(load, _) => record_versions(load.tx(), &versions).await?,
        Mode::Incremental => {
            let mut tx = node.db.begin_write().await?;
            let done = record_versions(&mut tx, &versions).await?;
            tx.commit().await?;
            node.changes_committed().await;
            done
        }
    };
    Ok((done.recorded, done.known))
}
