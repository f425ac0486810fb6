-- Every version of every document ever seen by this node. Nothing here is ever deleted:
-- tombstones are versions with deleted = 1, and the loser of a concurrent edit stays here.
CREATE TABLE versions (
    doc_id       TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    origin       TEXT    NOT NULL,  -- node that accepted the version; tie-breaker for conflicts
    title        TEXT    NOT NULL,
    description  TEXT    NOT NULL,
    tags         TEXT    NOT NULL,  -- JSON array of strings
    filename     TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    md5          TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    deleted      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,  -- Unix ms
    PRIMARY KEY (doc_id, version, origin)
) WITHOUT ROWID;

CREATE INDEX versions_md5 ON versions (md5);

-- The current version of each document, denormalised for search and filtering.
-- `rid` is an explicit INTEGER PRIMARY KEY so FTS rowids stay stable across VACUUM.
CREATE TABLE documents (
    rid          INTEGER PRIMARY KEY,
    doc_id       TEXT    NOT NULL UNIQUE,
    version      INTEGER NOT NULL,
    origin       TEXT    NOT NULL,
    title        TEXT    NOT NULL,
    description  TEXT    NOT NULL,
    tags         TEXT    NOT NULL,  -- JSON array, as in versions
    tags_text    TEXT    NOT NULL,  -- tags joined by spaces, for full-text search
    filename     TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    md5          TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    deleted      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,  -- of the current version
    published_at INTEGER NOT NULL,  -- of the first version
    last_seq     INTEGER NOT NULL   -- change-feed position of the latest change
);

CREATE INDEX documents_scope ON documents (scope, deleted, rid);
CREATE INDEX documents_deleted ON documents (deleted, rid);
CREATE INDEX documents_md5 ON documents (md5);

CREATE TABLE document_tags (
    tag TEXT    NOT NULL,
    rid INTEGER NOT NULL,
    PRIMARY KEY (tag, rid)
) WITHOUT ROWID;

CREATE INDEX document_tags_rid ON document_tags (rid);

-- Full-text index over the current version, kept in step with `documents` by triggers so no
-- code path can forget it.
CREATE VIRTUAL TABLE documents_fts USING fts5 (
    title, description, tags_text, filename, source,
    content = 'documents', content_rowid = 'rid',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER documents_fts_insert AFTER INSERT ON documents BEGIN
    INSERT INTO documents_fts (rowid, title, description, tags_text, filename, source)
    VALUES (new.rid, new.title, new.description, new.tags_text, new.filename, new.source);
END;

CREATE TRIGGER documents_fts_delete AFTER DELETE ON documents BEGIN
    INSERT INTO documents_fts (documents_fts, rowid, title, description, tags_text, filename, source)
    VALUES ('delete', old.rid, old.title, old.description, old.tags_text, old.filename, old.source);
END;

CREATE TRIGGER documents_fts_update AFTER UPDATE ON documents BEGIN
    INSERT INTO documents_fts (documents_fts, rowid, title, description, tags_text, filename, source)
    VALUES ('delete', old.rid, old.title, old.description, old.tags_text, old.filename, old.source);
    INSERT INTO documents_fts (rowid, title, description, tags_text, filename, source)
    VALUES (new.rid, new.title, new.description, new.tags_text, new.filename, new.source);
END;

-- The change feed: one row per version this node learned of, in the order it learned them.
CREATE TABLE changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id  TEXT    NOT NULL,
    version INTEGER NOT NULL,
    origin  TEXT    NOT NULL,
    kind    TEXT    NOT NULL,  -- published | updated | deleted | reactivated
    at      INTEGER NOT NULL
);

-- Content held in objects/: a row exists only once the file is complete, fsynced and renamed.
CREATE TABLE objects (
    md5       TEXT    PRIMARY KEY,
    size      INTEGER NOT NULL,
    stored_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Content this node still has to pull (federation). One row per content address.
CREATE TABLE pending_fetches (
    md5             TEXT    PRIMARY KEY,
    doc_id          TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    size            INTEGER NOT NULL,
    sources         TEXT    NOT NULL,  -- JSON array of base URLs, in preference order
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX pending_fetches_due ON pending_fetches (next_attempt_at);

-- Transactional outbox: messages to other nodes, written in the same transaction as the state
-- change they announce, deleted only once the broker confirmed them.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    target     TEXT    NOT NULL,  -- node id
    payload    BLOB    NOT NULL,  -- serialised message
    created_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX outbox_target ON outbox (target, id);

-- Annotations from readers, travelling upward to the author; deduplicated by id.
CREATE TABLE annotations (
    id          TEXT    PRIMARY KEY,
    doc_id      TEXT    NOT NULL,
    doc_version INTEGER NOT NULL,
    author      TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending'  -- pending | accepted | rejected
) WITHOUT ROWID;

CREATE INDEX annotations_doc ON annotations (doc_id, created_at);
CREATE INDEX annotations_state ON annotations (state, created_at);

-- Documents that a device asked to have pushed to it.
CREATE TABLE device_flags (
    device     TEXT    NOT NULL,
    doc_id     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (device, doc_id)
) WITHOUT ROWID;

CREATE INDEX device_flags_doc ON device_flags (doc_id);

-- Which node holds which version (delivery receipts; kept on primaries).
CREATE TABLE receipts (
    doc_id  TEXT    NOT NULL,
    node    TEXT    NOT NULL,
    version INTEGER NOT NULL,
    origin  TEXT    NOT NULL,
    md5     TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (doc_id, node, version, origin)
) WITHOUT ROWID;
