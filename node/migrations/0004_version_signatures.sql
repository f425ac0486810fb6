-- Signed versions (ARCHITECTURE.md §7): the content's SHA-256 beside its MD5 address, and the
-- accepting primary's signature over the version. NULL on versions recorded before this
-- migration and, for the signature, on standalone nodes and unkeyed federations.
ALTER TABLE versions ADD COLUMN sha256 TEXT;
ALTER TABLE versions ADD COLUMN signature TEXT;
ALTER TABLE documents ADD COLUMN sha256 TEXT;
ALTER TABLE documents ADD COLUMN signature TEXT;

-- The SHA-256 a pull must produce, from the signed version that asked for it.
ALTER TABLE pending_fetches ADD COLUMN sha256 TEXT;
