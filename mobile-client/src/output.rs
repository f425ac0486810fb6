//! Human-readable tables, or JSON with `--json`.
//!
//! Every line goes through `out!`, which returns the failed write as an error instead of
//! panicking as `println!` does: a reader that stopped reading (`docfed search x | head -1`) ends
//! the command quietly (`CliError::StdoutClosed`).

use std::io::Write;

use bytesize::ByteSize;
use docfed_shared::wire::annotations::{AcceptedAnnotations, AnnotationStatus};
use docfed_shared::wire::peers::PeersView;
use docfed_shared::wire::{DocumentList, DocumentMeta, Timestamp, VersionList};

use crate::error::CliError;
use crate::fetch::FetchOutcome;

/// `println!` that returns a failed write (`?`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).map_err(CliError::stdout)?
    };
}

/// `s` cut to at most `width` terminal columns (an ellipsis marks the cut) and padded with
/// spaces to exactly `width`. Columns, not characters: a CJK character or an emoji takes two,
/// a combining accent none, so tables stay aligned whatever the titles are written in.
fn fit(s: &str, width: usize) -> String {
    use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};
    // Control characters (a newline in a title) would break the row: shown as spaces.
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out = String::new();
    let mut used = 0;
    if s.width() <= width {
        out = s;
        used = out.width();
    } else {
        for c in s.chars() {
            let w = c.width().unwrap_or(0);
            if used + w > width.saturating_sub(1) {
                break;
            }
            out.push(c);
            used += w;
        }
        out.push('…');
        used += 1;
    }
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
    out
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), CliError> {
    out!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
    Ok(())
}

fn where_available(d: &DocumentMeta) -> String {
    if d.available_here {
        "here".into()
    } else if d.available_at.is_empty() {
        "-".into()
    } else {
        d.available_at.join(",")
    }
}

pub fn search(list: &DocumentList, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(list);
    }
    if list.documents.is_empty() {
        out!("no documents found");
        return Ok(());
    }
    out!(
        "{:<36}  {:>3}  {:<40}  {:<12}  {:>9}  AVAILABLE",
        "ID",
        "VER",
        "TITLE",
        "SCOPE",
        "SIZE"
    );
    for d in &list.documents {
        let v = &d.current;
        let title = if v.deleted {
            format!("{} (deleted)", v.title)
        } else {
            v.title.clone()
        };
        out!(
            "{:<36}  {:>3}  {}  {}  {:>9}  {}",
            v.id,
            v.version,
            fit(&title, 40),
            fit(&v.scope.to_string(), 12),
            ByteSize(v.size).to_string(),
            where_available(d)
        );
    }
    if let Some(c) = &list.next_cursor {
        out!("more: --cursor {c}");
    }
    Ok(())
}

/// What the replica holds of a document's content.
#[derive(Debug, Default)]
pub struct LocalContent {
    /// Where the replica keeps the content (flagged documents, after `sync`).
    pub path: Option<std::path::PathBuf>,
    /// Flagged but over the storage budget: (its size, the budget).
    pub deferred: Option<(u64, u64)>,
}

pub fn info(d: &DocumentMeta, local: &LocalContent, json: bool) -> Result<(), CliError> {
    if json {
        let mut v = serde_json::to_value(d).expect("serialisable");
        if let Some(p) = &local.path {
            v["local_path"] = p.display().to_string().into();
        }
        if let Some((size, budget)) = local.deferred {
            v["local_content"] = serde_json::json!({
                "state": "over_storage_budget", "size": size, "max_storage": budget,
            });
        }
        return print_json(&v);
    }
    let v = &d.current;
    let rows = [
        ("id", v.id.to_string()),
        ("title", v.title.clone()),
        ("version", format!("{} (by {})", v.version, v.origin)),
        ("deleted", v.deleted.to_string()),
        ("scope", v.scope.to_string()),
        ("file name", v.filename.clone()),
        ("content type", v.content_type.clone()),
        ("size", format!("{} ({} bytes)", ByteSize(v.size), v.size)),
        ("md5", v.md5.to_string()),
        ("tags", v.tags.join(", ")),
        ("source", v.source.clone()),
        ("author", v.author.clone()),
        ("published", d.published_at.to_string()),
        ("updated", v.created_at.to_string()),
        ("available", where_available(d)),
        ("description", v.description.clone()),
    ];
    for (k, val) in rows {
        out!("{k:>13}: {val}");
    }
    if let Some(p) = &local.path {
        out!("{:>13}: {}", "local file", p.display());
    }
    if let Some((size, budget)) = local.deferred {
        out!(
            "{:>13}: not stored: {} does not fit in --max-storage {} with the documents flagged \
             before it (unflag one or raise the budget; `docfed fetch` downloads it anyway)",
            "local file",
            ByteSize(size),
            ByteSize(budget)
        );
    }
    Ok(())
}

pub fn synced(r: &crate::sync::Report, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(r);
    }
    let d = &r.documents;
    out!(
        "synced with {} up to change {}: {} new, {} updated, {} deleted, {} reactivated ({} changes read)",
        r.server, r.position, d.new, d.updated, d.deleted, d.reactivated, r.changes
    );
    if r.snapshot {
        out!(
            "the server had compacted its change feed past this replica's position: read a \
             snapshot of the documents changed since (deletions included) instead of every change"
        );
    }
    out!(
        "files: {} downloaded ({}), {} removed",
        r.files_downloaded,
        ByteSize(r.bytes_downloaded),
        r.files_removed
    );
    out!(
        "outbox: {} sent, {} still queued",
        r.outbox_sent,
        r.outbox_pending
    );
    for refused in &r.outbox_refused {
        out!("refused by the server, dropped: {refused}");
    }
    if r.flags_sent > 0 {
        out!("flags: {} changes sent to {}", r.flags_sent, r.server);
    }
    for refused in &r.flags_refused {
        out!("refused by {}, kept for the next sync: {refused}", r.server);
    }
    if let Some(budget) = r.storage_budget {
        out!(
            "storage: {} of {} (--max-storage) for flagged content",
            ByteSize(r.storage_kept),
            ByteSize(budget)
        );
    }
    if !r.deferred.is_empty() {
        out!(
            "not stored, over the storage budget (metadata only; unflag something or raise \
             --max-storage, or `docfed fetch ID -o FILE`): {}",
            r.deferred.join(", ")
        );
    }
    Ok(())
}

pub fn versions(list: &VersionList, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(list);
    }
    out!(
        "{:>3}  {:<12}  {:<24}  {:<8}  {:>9}  TITLE",
        "VER",
        "ORIGIN",
        "WHEN",
        "STATE",
        "SIZE"
    );
    for e in &list.versions {
        let v = &e.version;
        let state = match (v.deleted, e.current) {
            (true, _) => "deleted",
            (false, true) => "current",
            _ => "",
        };
        out!(
            "{:>3}  {}  {:<24}  {:<8}  {:>9}  {}",
            v.version,
            fit(&v.origin, 12),
            v.created_at.to_string(),
            state,
            ByteSize(v.size).to_string(),
            v.title
        );
    }
    Ok(())
}

pub fn fetched(f: &FetchOutcome, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(&serde_json::json!({
            "path": f.path,
            "size": f.size,
            "md5": f.md5,
            "resumed_from": f.resumed_from,
            "bytes_downloaded": f.bytes_downloaded,
        }));
    }
    let resumed = if f.resumed_from > 0 {
        format!(", resumed at {}", ByteSize(f.resumed_from))
    } else {
        String::new()
    };
    out!(
        "{} ({}, MD5 {} verified{resumed})",
        f.path.display(),
        ByteSize(f.size),
        f.md5
    );
    Ok(())
}

pub fn value(v: &serde_json::Value, json: bool, human: &str) -> Result<(), CliError> {
    if json {
        print_json(v)
    } else {
        out!("{human}");
        Ok(())
    }
}

/// A node's answer read as its `shared::wire` body, for the tables (`--json` prints it as the
/// node sent it).
fn body<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, CliError> {
    T::deserialize(v).map_err(|e| CliError::Network(format!("unexpected answer: {e}")))
}

/// An operator's count, or `null` as the node's JSON would say it.
fn count(n: Option<i64>) -> String {
    n.map_or_else(|| "null".to_owned(), |n| n.to_string())
}

pub fn peers(v: &serde_json::Value, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(v);
    }
    let view: PeersView = body(v)?;
    let node = &view.node;
    // Queue depths are operator data: a node shows them only to a caller with its token.
    if view.outbox_depth.is_some() {
        out!(
            "node {node}: inbox {}, outbox depth {}, pending fetches {}",
            if view.inbox_connected == Some(true) {
                "connected"
            } else {
                "not connected"
            },
            count(view.outbox_depth),
            count(view.pending_fetches)
        );
    } else {
        out!("node {node}");
    }
    out!(
        "{:<20}  {:<12}  {:<8}  {:<28}  {:<5}  STATE",
        "PEER",
        "TIER",
        "REGION",
        "HTTP",
        "MDNS"
    );
    for p in &view.peers {
        let state = match p.healthy {
            Some(true) => "up",
            Some(false) => "down",
            None => "?",
        };
        out!(
            "{}  {}  {}  {}  {:<5}  {state}",
            fit(&p.id, 20),
            fit(&p.tier, 12),
            fit(p.region.as_deref().unwrap_or("-"), 8),
            fit(&p.http, 28),
            p.mdns,
        );
    }
    Ok(())
}

/// One annotation and its state (`docfed annotations AID`).
pub fn annotation(a: &serde_json::Value, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(a);
    }
    let a: AnnotationStatus = body(a)?;
    let decided = a.decided.map(|t| format!(" ({t})")).unwrap_or_default();
    out!(
        "annotation {} on document {} v{}: {}{decided}",
        a.id,
        a.doc_id,
        a.doc_version,
        a.state
    );
    out!("by {} at {}:", by(&a.author), when(a.created));
    out!("{}", a.text);
    Ok(())
}

/// A document's accepted annotations (`docfed annotations DOC_ID`).
pub fn annotations(list: &serde_json::Value, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(list);
    }
    let all = body::<AcceptedAnnotations>(list)?.annotations;
    if all.is_empty() {
        out!("no accepted annotations");
        return Ok(());
    }
    for a in &all {
        out!(
            "{}  v{}  {}: {}",
            when(a.created),
            a.doc_version,
            by(&a.author),
            a.text.replace('\n', " ")
        );
    }
    Ok(())
}

/// An annotation's author as readers see it.
fn by(author: &str) -> &str {
    if author.is_empty() {
        "(anonymous)"
    } else {
        author
    }
}

fn when(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "?".to_owned(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::fit;
    use unicode_width::UnicodeWidthStr;

    #[test]
    fn columns_are_measured_in_terminal_columns() {
        for s in [
            "Tide tables",
            "地震観測データ 2026 年度版の全国集計",
            "Rapport d'été",
            "e\u{301}te\u{301}",
            "🌊🌊 waves",
            "line\nbreak",
            "",
        ] {
            for width in [1, 5, 12, 40] {
                let f = fit(s, width);
                assert_eq!(f.width(), width, "{s:?} in {width}: {f:?}");
            }
        }
        assert_eq!(fit("地震", 3), "地…");
        assert_eq!(fit("abc", 5), "abc  ");
        assert_eq!(fit("abcdef", 4), "abc…");
    }
}
