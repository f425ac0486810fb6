-- Messages nobody waits on (receipts) may wait in the outbox a little to travel with others:
-- the relay holds a read of only such rows until the oldest is `RECEIPT_LINGER` old or a full
-- broker message's worth is queued (ARCHITECTURE.md §2.3).
ALTER TABLE outbox ADD COLUMN may_wait INTEGER NOT NULL DEFAULT 0;
