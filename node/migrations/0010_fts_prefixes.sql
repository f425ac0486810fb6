-- Prefix indexes of 2, 3 and 4 characters for the full-text table: a prefix search (`kah*`)
-- reads one doclist instead of merging the doclists of every word it begins (BENCHMARKS.md §3).
-- FTS5 takes its options only at creation, so the table and its triggers are made again and
-- the index rebuilt from `documents` (about 30 s at a million documents, once).
DROP TRIGGER documents_fts_insert;
DROP TRIGGER documents_fts_delete;
DROP TRIGGER documents_fts_update;
DROP TABLE documents_fts;

CREATE VIRTUAL TABLE documents_fts USING fts5 (
    title, description, tags_text, filename, source,
    content = 'documents', content_rowid = 'rid',
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '2 3 4'
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

INSERT INTO documents_fts (documents_fts) VALUES ('rebuild');
