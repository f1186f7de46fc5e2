-- Mailroom schema for MySQL 8 / MariaDB 10.6+, version 1: the outbox, dead letters and archive.
-- A name in double braces is replaced by the quoted, prefixed (and, with a database option,
-- qualified) name of an object: outbox in braces becomes `mailroom_outbox` by default.
--
-- DDL commits on its own in MySQL, so a migration cannot be one transaction as in PostgreSQL.
-- Every statement here is safe to run again (IF NOT EXISTS), so a run that failed half-way is
-- finished by running migrate again; migrate serialises runs with GET_LOCK.
--
-- Types, and why:
-- - seq: insert order (AUTO_INCREMENT). A keyed row is claimed only when no row of its key with
--   a smaller seq is left (docs/design.md, "Per-key order").
-- - id: the UUIDv7 as text, ascii (36 bytes): MySQL 8 has no UUID type and MariaDB's (10.7+)
--   sorts differently; text reads the same everywhere.
-- - msg_key: bytes (VARBINARY), compared byte for byte whatever the connection's collation
--   ('A' and 'a' are two keys), and small enough (1024 bytes, the core's limit) for the
--   (msg_key, seq) index whole. `key` is a reserved word in MySQL.
-- - times: DATETIME(6) in UTC, always written from UTC_TIMESTAMP(6) on the database clock and
--   read back as epoch microseconds, so neither the session's time_zone nor the driver's
--   timezone option can shift them.
-- - headers, delivery: JSON (MySQL 8: a binary JSON type; MariaDB: LONGTEXT with a JSON_VALID
--   check). The store reads both.

CREATE TABLE IF NOT EXISTS {{outbox}} (
  seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  topic VARCHAR(255) NOT NULL,
  msg_key VARBINARY(1024) NULL,
  type VARCHAR(255) NULL,
  payload LONGBLOB NOT NULL,
  content_type VARCHAR(255) NOT NULL,
  headers JSON NOT NULL,
  created_at DATETIME(6) NOT NULL,
  available_at DATETIME(6) NOT NULL,
  attempts INT NOT NULL DEFAULT 0,
  lease_owner VARCHAR(255) NULL,
  lease_token CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
  lease_until DATETIME(6) NULL,
  last_error TEXT NULL,
  delivery JSON NULL,
  PRIMARY KEY (seq),
  UNIQUE KEY outbox_id (id),
  -- Head-of-key probes and the claim's walk over keys.
  KEY outbox_key_seq (msg_key, seq),
  -- The next due time of delayed and retried rows (nextDueInMs), and `scheduled` in stats.
  KEY outbox_available_at (available_at),
  -- Settles, lease extensions and `inFlight` in stats.
  KEY outbox_lease_token (lease_token)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {{dead_letter}} (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  topic VARCHAR(255) NOT NULL,
  msg_key VARBINARY(1024) NULL,
  type VARCHAR(255) NULL,
  payload LONGBLOB NOT NULL,
  content_type VARCHAR(255) NOT NULL,
  headers JSON NOT NULL,
  created_at DATETIME(6) NOT NULL,
  attempts INT NOT NULL,
  dead_at DATETIME(6) NOT NULL,
  last_error TEXT NULL,
  delivery JSON NULL,
  PRIMARY KEY (id),
  KEY dead_letter_dead_at (dead_at, id),
  KEY dead_letter_topic (topic)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Delivered messages, when the store runs with archive = true. Pruned by retention.
CREATE TABLE IF NOT EXISTS {{archive}} (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  topic VARCHAR(255) NOT NULL,
  msg_key VARBINARY(1024) NULL,
  type VARCHAR(255) NULL,
  payload LONGBLOB NOT NULL,
  content_type VARCHAR(255) NOT NULL,
  headers JSON NOT NULL,
  created_at DATETIME(6) NOT NULL,
  attempts INT NOT NULL,
  sent_at DATETIME(6) NOT NULL,
  delivery JSON NULL,
  PRIMARY KEY (id),
  KEY archive_sent_at (sent_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
