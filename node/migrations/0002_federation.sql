-- Each notification that needs content not yet held waits here for its fetch: its downstream
-- forwards go out when the pull starts (stream-through) and its receipt when the pull completes.
CREATE TABLE fetch_waiters (
    md5          TEXT    NOT NULL,
    doc_id       TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    origin       TEXT    NOT NULL,
    notification TEXT    NOT NULL,  -- JSON Notification; `targets` = forwards still owed
    forwarded    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (md5, doc_id, version, origin)
) WITHOUT ROWID;

ALTER TABLE receipts ADD COLUMN content INTEGER NOT NULL DEFAULT 1;

-- Bytes pulled per fetch, to show that a redundant notification causes no second transfer.
ALTER TABLE pending_fetches ADD COLUMN bytes_pulled INTEGER NOT NULL DEFAULT 0;

-- Completed pulls, kept for the propagation view and transfer accounting.
CREATE TABLE fetch_log (
    md5        TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    bytes      INTEGER NOT NULL,
    attempts   INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    done_at    INTEGER NOT NULL
);
CREATE INDEX fetch_log_md5 ON fetch_log (md5);
