-- Who published a version (the portal's author name; empty for API publications).
ALTER TABLE versions ADD COLUMN author TEXT NOT NULL DEFAULT '';
ALTER TABLE documents ADD COLUMN author TEXT NOT NULL DEFAULT '';

-- Filters of the directory search, designed for a million documents: each filter column is
-- indexed with `deleted` first (the default filter) and `rid` last (the listing order).
CREATE INDEX documents_source ON documents (source, deleted, rid);
CREATE INDEX documents_author ON documents (author, deleted, rid);
CREATE INDEX documents_content_type ON documents (content_type, deleted, rid);
CREATE INDEX documents_published ON documents (published_at);
