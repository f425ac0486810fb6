-- The portal's own state: authors, their sessions, failed logins (rate limiting) and which
-- documents each author owns, with a cache of their metadata for "My documents".
-- Times are Unix milliseconds.

CREATE TABLE authors (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,            -- Argon2id PHC string
    created_at    INTEGER NOT NULL
);

CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,           -- hex SHA-256 of the cookie value
    author_id   INTEGER NOT NULL REFERENCES authors(id) ON DELETE CASCADE,
    csrf        TEXT NOT NULL,              -- per-session token every form carries
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX sessions_expiry ON sessions(expires_at);

CREATE TABLE login_failures (
    key  TEXT NOT NULL,                     -- 'user:NAME' (lowercase) or 'ip:ADDR'
    at   INTEGER NOT NULL
);
CREATE INDEX login_failures_key ON login_failures(key, at);

-- Ownership is recorded by the portal (the primaries know no authors). The other columns are
-- a cache of the document's current metadata as a primary last reported it.
CREATE TABLE documents (
    doc_id       TEXT PRIMARY KEY,
    author_id    INTEGER NOT NULL REFERENCES authors(id) ON DELETE CASCADE,
    title        TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    tags         TEXT NOT NULL DEFAULT '',  -- ',a,b,' so that one tag matches with LIKE '%,t,%'
    filename     TEXT NOT NULL DEFAULT '',
    source       TEXT NOT NULL DEFAULT '',
    scope        TEXT NOT NULL DEFAULT 'global',
    size         INTEGER NOT NULL DEFAULT 0,
    md5          TEXT NOT NULL DEFAULT '',
    version      INTEGER NOT NULL DEFAULT 1,
    deleted      INTEGER NOT NULL DEFAULT 0,
    published_at INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX documents_author ON documents(author_id, updated_at DESC);
