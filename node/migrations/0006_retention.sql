-- Retention (ARCHITECTURE.md §4.4): what a collection removed, the change feed's compaction
-- horizon, and an index for "is there a later change of this document".

-- Objects a collection removed, for operators and for telling a second pull of collected
-- content from a duplicate transfer. Pruned after the log retention like `fetch_log`.
CREATE TABLE collections (
    md5    TEXT    NOT NULL,
    size   INTEGER NOT NULL,
    reason TEXT    NOT NULL,  -- superseded | tombstoned | unreferenced | out_of_scope | released
    at     INTEGER NOT NULL   -- Unix ms
);
CREATE INDEX collections_md5 ON collections (md5, at);
CREATE INDEX collections_at ON collections (at);

-- One row: the highest change-feed seq at or below which the feed keeps only the latest change
-- of each document (0: nothing compacted yet).
CREATE TABLE feed_horizon (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    horizon INTEGER NOT NULL
);
INSERT INTO feed_horizon (id, horizon) VALUES (1, 0);

CREATE INDEX changes_doc ON changes (doc_id, seq);
CREATE INDEX changes_at ON changes (at);
CREATE INDEX fetch_log_done ON fetch_log (done_at);
