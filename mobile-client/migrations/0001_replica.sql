-- The device's replica (ARCHITECTURE.md §2.8): the directory as the change feed describes it,
-- this device's flags, actions taken offline, and which content is held in files/.

-- Every version the feed delivered (losers of concurrent edits included), as the node's JSON.
CREATE TABLE versions (
    doc_id  TEXT    NOT NULL,
    version INTEGER NOT NULL,
    origin  TEXT    NOT NULL,
    json    TEXT    NOT NULL,  -- docfed_shared::wire::DocumentVersion
    PRIMARY KEY (doc_id, version, origin)
) WITHOUT ROWID;

-- The current version of each document (higher version, then higher origin, as on the node).
CREATE TABLE documents (
    rid          INTEGER PRIMARY KEY,
    doc_id       TEXT    NOT NULL UNIQUE,
    version      INTEGER NOT NULL,
    origin       TEXT    NOT NULL,
    title        TEXT    NOT NULL,
    description  TEXT    NOT NULL,
    tags_text    TEXT    NOT NULL,  -- tags joined by spaces, for full-text search
    filename     TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    author       TEXT    NOT NULL,
    md5          TEXT    NOT NULL,
    deleted      INTEGER NOT NULL,
    published_at INTEGER NOT NULL,  -- Unix ms, of the first version
    json         TEXT    NOT NULL   -- the current version, docfed_shared::wire::DocumentVersion
);

CREATE INDEX documents_deleted ON documents (deleted, rid);

-- Full-text index over the current version, kept in step by triggers (as the node's).
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

-- Documents this device flagged, as far as it knows (offline flags included).
CREATE TABLE flags (
    doc_id     TEXT    PRIMARY KEY,
    flagged_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Actions taken while no server answered, delivered in order by `docfed sync` and deleted only
-- once a server confirmed them. `id` is sent as the idempotency key where the API has one.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL UNIQUE,
    kind       TEXT    NOT NULL,  -- flag | unflag | annotate
    doc_id     TEXT    NOT NULL,
    body       TEXT    NOT NULL,  -- JSON: the annotation's text and author
    created_at INTEGER NOT NULL
);

-- The change-feed position reached at each server, committed with the changes it covers.
CREATE TABLE servers (
    url       TEXT    PRIMARY KEY,
    last_seq  INTEGER NOT NULL,
    synced_at INTEGER             -- Unix ms of the last complete sync against it
) WITHOUT ROWID;

-- Content held in files/: a row exists once the verified file was renamed into place.
CREATE TABLE files (
    doc_id    TEXT    PRIMARY KEY,
    name      TEXT    NOT NULL UNIQUE,  -- the file's name under files/, kept across versions
    version   INTEGER NOT NULL,
    origin    TEXT    NOT NULL,
    md5       TEXT    NOT NULL,
    size      INTEGER NOT NULL,
    stored_at INTEGER NOT NULL
) WITHOUT ROWID;
