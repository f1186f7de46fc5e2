-- Mailroom SQLite schema, version 1: the outbox, dead letters, archive and the relay lock.
-- Times are integers: milliseconds since 1970 (UTC), from SQLite's own clock (every connection
-- to a SQLite file runs on the same machine, so they all read the same clock).
-- STRICT tables: a value of the wrong type is an error at INSERT, not a surprise at claim.
-- Payload and headers are the last columns: SQLite stores a row's columns in order and spills a
-- big row into overflow pages, so the columns a claim or a count reads (times, leases, key) stay
-- on the row's first page and never make it read a payload.

-- The outbox: one row per undelivered message, deleted (or archived) once the transport
-- confirmed it. AUTOINCREMENT: a seq is never used twice, not even after the newest row was
-- deleted. Settling a delivery deletes by seq whoever holds the lease, so a reused seq would let
-- a late settle delete another message.
CREATE TABLE IF NOT EXISTS mailroom_outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  topic TEXT NOT NULL,
  key TEXT,
  type TEXT,
  content_type TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  available_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  lease_token TEXT,
  lease_owner TEXT,
  lease_until INTEGER,
  last_error TEXT,
  headers TEXT NOT NULL DEFAULT '{}',
  payload BLOB NOT NULL
) STRICT;

-- The claim's per-key order probe ("is an older row of this key left?") and runs.
CREATE INDEX IF NOT EXISTS mailroom_outbox_key_seq ON mailroom_outbox (key, seq) WHERE key IS NOT NULL;
-- Extending and settling a claim's rows.
CREATE INDEX IF NOT EXISTS mailroom_outbox_lease_token ON mailroom_outbox (lease_token)
  WHERE lease_token IS NOT NULL;
CREATE INDEX IF NOT EXISTS mailroom_outbox_topic ON mailroom_outbox (topic);

-- Messages that failed for good or ran out of attempts; kept until replayed or purged.
CREATE TABLE IF NOT EXISTS mailroom_dead_letters (
  id TEXT PRIMARY KEY,
  seq INTEGER NOT NULL,
  topic TEXT NOT NULL,
  key TEXT,
  type TEXT,
  content_type TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  dead_at INTEGER NOT NULL,
  last_error TEXT,
  headers TEXT NOT NULL DEFAULT '{}',
  payload BLOB NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS mailroom_dead_letters_dead_at ON mailroom_dead_letters (dead_at, id);
CREATE INDEX IF NOT EXISTS mailroom_dead_letters_topic ON mailroom_dead_letters (topic);

-- Delivered messages, when the store runs with archive = true. Pruned with pruneArchive().
CREATE TABLE IF NOT EXISTS mailroom_archive (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL,
  topic TEXT NOT NULL,
  key TEXT,
  type TEXT,
  content_type TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  sent_at INTEGER NOT NULL,
  headers TEXT NOT NULL DEFAULT '{}',
  payload BLOB NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS mailroom_archive_sent_at ON mailroom_archive (sent_at);
CREATE INDEX IF NOT EXISTS mailroom_archive_id ON mailroom_archive (id);

-- One relay per database file: the relay that claims holds this row and renews its lease; a
-- second relay is refused until the lease runs out (the first one died) or is given back.
CREATE TABLE IF NOT EXISTS mailroom_relay_lock (
  name TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  token TEXT NOT NULL,
  acquired_at INTEGER NOT NULL,
  lease_until INTEGER NOT NULL
) STRICT;
