-- Mailroom SQLite schema, version 2: the inbox, recording which messages each receiving service
-- (consumer) processed, written in the handler's own transaction (see Inbox).
CREATE TABLE IF NOT EXISTS mailroom_inbox (
  consumer TEXT NOT NULL,
  id TEXT NOT NULL,
  processed_at INTEGER NOT NULL,
  PRIMARY KEY (consumer, id)
) STRICT;
-- Pruning a consumer's oldest records.
CREATE INDEX IF NOT EXISTS mailroom_inbox_processed ON mailroom_inbox (consumer, processed_at);
