-- A listing filtered by region and author (or source) reads the region from the author's (or
-- source's) index instead of each document's row: a pair that matches few documents walked all
-- of the author's rows through the table, 30-90 ms at a million documents (BENCHMARKS.md §3).
-- The leading columns are unchanged, so a full-text search's filter still seeks
-- (value, deleted, rid) in them.
DROP INDEX documents_author;
CREATE INDEX documents_author ON documents (author, deleted, rid, scope);
DROP INDEX documents_source;
CREATE INDEX documents_source ON documents (source, deleted, rid, scope);
