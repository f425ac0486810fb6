-- Content at most `small_object_max` (64 KiB by default), kept here instead of as a file in
-- objects/: one commit makes a whole batch of small documents durable, where a file each cost a
-- write, its fsync and a directory fsync. A row here always has its `objects` row, written in
-- the same transaction, and goes with it. `data` is sealed (the atrest format, whole) when
-- `sealed` is 1, the plain content when 0 (a node without a content key, or rows from before
-- encryption was turned on, until the re-encryption pass seals them).
CREATE TABLE small_objects (
    md5    TEXT    PRIMARY KEY,
    sealed INTEGER NOT NULL,
    data   BLOB    NOT NULL
);

-- Whatever deletes an `objects` row (retention, a released device flag) deletes its bytes here
-- in the same statement's transaction: no code path can leave an orphan small object.
CREATE TRIGGER objects_delete_small AFTER DELETE ON objects BEGIN
    DELETE FROM small_objects WHERE md5 = old.md5;
END;
