-- Reachback sources (ARCHITECTURE.md §2.9).

-- What this primary last saw of each item of a source: lets a rescan skip hashing a file that
-- has not changed. A cache only: the truth is the directory (the current version of the item's
-- document, `sources::item_id`), which the other primary holds too, so a takeover needs none
-- of these rows.
CREATE TABLE source_items (
    source  TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    md5     TEXT    NOT NULL,
    size    INTEGER NOT NULL,
    stamp   TEXT    NOT NULL,  -- the kind's change marker: a file's mtime, an entry's update time
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;

-- One row per source this node has run: what `GET /v1/sources` reports.
CREATE TABLE source_status (
    source          TEXT    PRIMARY KEY,
    runs            INTEGER NOT NULL DEFAULT 0,
    last_run_at     INTEGER,
    last_success_at INTEGER,
    items_seen      INTEGER NOT NULL DEFAULT 0,  -- in the last complete run
    published       INTEGER NOT NULL DEFAULT 0,  -- versions made, since the row exists
    removed         INTEGER NOT NULL DEFAULT 0,  -- tombstones made
    failed          INTEGER NOT NULL DEFAULT 0,  -- items that could not be taken
    last_error      TEXT,
    last_error_at   INTEGER,
    cursor          TEXT                         -- http: the validators of the last 200 answer
) WITHOUT ROWID;

-- A source's documents, found by their `source` field (`<source>:<key>`) on a takeover.
CREATE INDEX documents_by_source ON documents (source) WHERE source <> '';
