-- Lazy reachback (ARCHITECTURE.md §2.9): a version whose bytes stay at its source until first
-- read. Part of the signed version, so every node knows not to pull it ahead of a request.
ALTER TABLE versions ADD COLUMN lazy INTEGER NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN lazy INTEGER NOT NULL DEFAULT 0;

-- Where the source running here reads a lazy item's bytes (a path or a URL; NULL for items
-- published with their bytes). Per node, like the rest of the cache: a takeover reads every
-- item once and so learns where each one is.
ALTER TABLE source_items ADD COLUMN locator TEXT;
CREATE INDEX source_items_lazy ON source_items (md5) WHERE locator IS NOT NULL;
