//! Counters for `GET /metrics` (Prometheus text format). Plain atomics: the handful of series we
//! export does not justify a metrics framework.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub notifications_received: AtomicU64,
    pub notifications_deduplicated: AtomicU64,
    pub notifications_dead_lettered: AtomicU64,
    pub messages_published: AtomicU64,
    pub broker_messages_published: AtomicU64,
    pub bytes_pulled: AtomicU64,
    pub bytes_served: AtomicU64,
    pub fetches_completed: AtomicU64,
    pub fetch_retries: AtomicU64,
    pub md5_mismatches: AtomicU64,
    pub sha256_mismatches: AtomicU64,
    pub broker_reconnects: AtomicU64,
    pub pulls_waiting_for_space: AtomicU64,
    pub pulls_stalled: AtomicU64,
    pub pulls_oversized: AtomicU64,
    pub ondemand_abandoned: AtomicU64,
    pub objects_released: AtomicU64,
    pub bytes_released: AtomicU64,
    pub fetches_dropped: AtomicU64,
    pub inline_stored: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Renders the counters plus the gauges the caller measured (outbox and fetch depth).
    pub fn render(&self, node: &str, outbox_depth: i64, pending_fetches: i64) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 20] = [
            (
                "docfed_objects_released_total",
                "Stored objects deleted because the last device flag that kept them here went.",
                &self.objects_released,
            ),
            (
                "docfed_bytes_released_total",
                "Bytes of the objects released when the last device flag on them went.",
                &self.bytes_released,
            ),
            (
                "docfed_fetches_dropped_total",
                "Pending pulls dropped because the device flag that queued them went.",
                &self.fetches_dropped,
            ),
            (
                "docfed_ondemand_abandoned_total",
                "Cross-region transfers stopped because no reader followed them any more.",
                &self.ondemand_abandoned,
            ),
            (
                "docfed_pulls_waiting_for_space_total",
                "Pulls postponed because the disk reserve would be crossed.",
                &self.pulls_waiting_for_space,
            ),
            (
                "docfed_pulls_stalled_total",
                "Pull attempts abandoned because the source made no progress.",
                &self.pulls_stalled,
            ),
            (
                "docfed_pulls_oversized_total",
                "Pull attempts cut because the source sent more than the declared size.",
                &self.pulls_oversized,
            ),
            (
                "docfed_notifications_received_total",
                "Notifications taken from the inbox.",
                &self.notifications_received,
            ),
            (
                "docfed_notifications_deduplicated_total",
                "Notifications already known (redundant copies, redeliveries).",
                &self.notifications_deduplicated,
            ),
            (
                "docfed_inline_content_stored_total",
                "Contents stored from the notification that carried them inline (no pull).",
                &self.inline_stored,
            ),
            (
                "docfed_notifications_dead_lettered_total",
                "Messages moved to the dead-letter queue.",
                &self.notifications_dead_lettered,
            ),
            (
                "docfed_messages_published_total",
                "Outbox messages confirmed by a broker.",
                &self.messages_published,
            ),
            (
                "docfed_broker_messages_published_total",
                "Broker messages confirmed, each carrying one or more outbox messages.",
                &self.broker_messages_published,
            ),
            (
                "docfed_bytes_pulled_total",
                "Content bytes received from other nodes.",
                &self.bytes_pulled,
            ),
            (
                "docfed_bytes_served_total",
                "Content bytes sent to clients and nodes.",
                &self.bytes_served,
            ),
            (
                "docfed_fetches_completed_total",
                "Pulls completed and verified.",
                &self.fetches_completed,
            ),
            (
                "docfed_fetch_retries_total",
                "Pull attempts that failed and will be retried.",
                &self.fetch_retries,
            ),
            (
                "docfed_md5_mismatches_total",
                "Pulls refused because the MD5 did not match.",
                &self.md5_mismatches,
            ),
            (
                "docfed_sha256_mismatches_total",
                "Pulls refused because the MD5 matched but the signed SHA-256 did not.",
                &self.sha256_mismatches,
            ),
            (
                "docfed_broker_reconnects_total",
                "Broker connections re-established after a failure.",
                &self.broker_reconnects,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{node=\"{node}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP docfed_outbox_depth Messages waiting in the outbox.\n# TYPE docfed_outbox_depth gauge\ndocfed_outbox_depth{{node=\"{node}\"}} {outbox_depth}");
        let _ = writeln!(out, "# HELP docfed_pending_fetches Content pulls not yet completed.\n# TYPE docfed_pending_fetches gauge\ndocfed_pending_fetches{{node=\"{node}\"}} {pending_fetches}");
        out
    }
}

/// Retention's counters, and gauges from the last collection (disk use by class, table rows).
pub fn render_retention(node: &str, r: &crate::retention::Retention) -> String {
    let mut out = String::new();
    let counters = [
        (
            "docfed_gc_runs_total",
            "Collections of content and old rows that ran.",
            &r.runs,
        ),
        (
            "docfed_gc_objects_collected_total",
            "Stored objects removed by collections (superseded, tombstoned, out of scope, unreferenced).",
            &r.objects_collected,
        ),
        (
            "docfed_gc_bytes_collected_total",
            "Bytes of the objects removed by collections.",
            &r.bytes_collected,
        ),
        (
            "docfed_gc_files_removed_total",
            "Files without a row removed (crash debris: orphan objects, stale partial files).",
            &r.files_removed,
        ),
        (
            "docfed_gc_rows_pruned_total",
            "Rows of operational tables and change-feed entries removed by retention.",
            &r.rows_pruned,
        ),
    ];
    for (name, help, c) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{node=\"{node}\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }
    let Some(last) = r.last() else {
        return out;
    };
    let _ = writeln!(
        out,
        "# HELP docfed_storage_bytes Object bytes by retention class at the last collection \
         (live: current content; retained: old versions the policy keeps; collectable: what \
         that collection found to remove).\n# TYPE docfed_storage_bytes gauge"
    );
    for (class, usage) in [
        ("live", last.live),
        ("retained", last.retained),
        ("collectable", last.collectable),
    ] {
        let _ = writeln!(
            out,
            "docfed_storage_bytes{{node=\"{node}\",class=\"{class}\"}} {}",
            usage.bytes
        );
    }
    let _ = writeln!(
        out,
        "# HELP docfed_table_rows Rows per database table at the last collection.\n# TYPE docfed_table_rows gauge"
    );
    for (table, rows) in &last.tables {
        let _ = writeln!(
            out,
            "docfed_table_rows{{node=\"{node}\",table=\"{table}\"}} {rows}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP docfed_gc_last_run_timestamp_seconds When the last collection ran.\n# TYPE docfed_gc_last_run_timestamp_seconds gauge\ndocfed_gc_last_run_timestamp_seconds{{node=\"{node}\"}} {}",
        last.at / 1000
    );
    out
}

/// The supervisor's task table: whether each background task is at work, and its errors.
pub fn render_tasks(node: &str, tasks: &[crate::supervisor::TaskView]) -> String {
    use crate::supervisor::TaskState;
    let mut out = String::from(
        "# HELP docfed_task_up Whether a background task is at work (1) or starting, retrying, stopped or failed (0).\n# TYPE docfed_task_up gauge\n",
    );
    let label = |name: &str| name.replace('\\', "\\\\").replace('"', "\\\"");
    for t in tasks {
        let _ = writeln!(
            out,
            "docfed_task_up{{node=\"{node}\",task=\"{}\"}} {}",
            label(&t.name),
            u8::from(t.state == TaskState::Running)
        );
    }
    out.push_str("# HELP docfed_task_errors_total Errors a background task reported (failed connections, failed rounds).\n# TYPE docfed_task_errors_total counter\n");
    for t in tasks {
        let _ = writeln!(
            out,
            "docfed_task_errors_total{{node=\"{node}\",task=\"{}\"}} {}",
            label(&t.name),
            t.errors
        );
    }
    out
}
