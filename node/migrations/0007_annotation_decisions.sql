-- Decisions on annotations replicate to every node (`Decision` messages, ARCHITECTURE.md §3.1):
-- the latest decision wins everywhere, by (decided_at, decided_by).
ALTER TABLE annotations ADD COLUMN decided_at INTEGER;  -- Unix ms; NULL while pending
ALTER TABLE annotations ADD COLUMN decided_by TEXT;     -- the primary that decided
