-- The flags this device holds at each server as of the last reconciliation with it: the base of
-- a three-way merge (replica, server, base). A flag added or removed on either side since that
-- base wins, and a server the device fails over to, whose list starts empty, receives every
-- flag of the replica.
CREATE TABLE server_flags (
    url    TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    PRIMARY KEY (url, doc_id)
) WITHOUT ROWID;

-- Regional nodes of the federation, as a server this device synced with listed them
-- (`GET /v1/peers`, members of its topology only): where `docfed daemon` fails over to when its
-- server does not answer. Replaced as a whole at each successful sync.
CREATE TABLE peers (
    url          TEXT    PRIMARY KEY,
    node_id      TEXT    NOT NULL,
    region       TEXT,
    backup       INTEGER NOT NULL,  -- 1: the backup of the node that listed it (tried first)
    learned_from TEXT    NOT NULL,
    learned_at   INTEGER NOT NULL
) WITHOUT ROWID;

-- Device settings that outlive one command (`--max-storage`).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Flagged documents whose newest content did not fit in the storage budget at the last sync:
-- kept as metadata only (`docfed info` says so), fetched when room is made or with `docfed fetch`.
CREATE TABLE deferred (
    doc_id TEXT    PRIMARY KEY,
    size   INTEGER NOT NULL,   -- bytes of the newest version
    budget INTEGER NOT NULL,   -- the budget it did not fit in
    at     INTEGER NOT NULL    -- Unix ms of the sync that deferred it
) WITHOUT ROWID;
