-- Mailroom schema for MySQL / MariaDB, version 4: acknowledged delivery and callbacks (see
-- docs/acknowledged-delivery.md and docs/callbacks.md). The outbox, dead letters and archive
-- carry the `delivery` column since version 1; the logic lives in the store
-- (src/stores/mysql/mysql-ack.ts), each step in the transaction of the settle, sweep or
-- acknowledgement it belongs to.

-- Messages with `ack` after their delivery: awaiting the receiver's acknowledgement until
-- `deadline`, then resent ('resending' while the copy is back in the outbox) or expired. An
-- acknowledgement that arrives before the relay settled the delivery makes a row of its own
-- ('acknowledged', message columns empty) that the settle fills in.
CREATE TABLE IF NOT EXISTS {{ack}} (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  state VARCHAR(16) CHARACTER SET ascii NOT NULL,
  topic VARCHAR(255) NULL,
  msg_key VARBINARY(1024) NULL,
  type VARCHAR(255) NULL,
  payload LONGBLOB NULL,
  content_type VARCHAR(255) NULL,
  headers JSON NULL,
  created_at DATETIME(6) NULL,
  delivery JSON NULL,
  resends INT NOT NULL DEFAULT 0,
  deadline DATETIME(6) NULL,
  sent_at DATETIME(6) NULL,
  acked_at DATETIME(6) NULL,
  consumer VARCHAR(255) NULL,
  result JSON NULL,
  expired_at DATETIME(6) NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  KEY ack_deadline (state, deadline),
  KEY ack_updated (state, updated_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Outcomes to POST to callback URLs: a small outbox of their own, claimed under leases and
-- retried with backoff apart from the messages, so a slow callback never holds up delivery.
CREATE TABLE IF NOT EXISTS {{callback}} (
  id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  message_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  topic VARCHAR(255) NOT NULL,
  event VARCHAR(16) CHARACTER SET ascii NOT NULL,
  url TEXT NOT NULL,
  detail JSON NOT NULL,
  occurred_at DATETIME(6) NOT NULL,
  available_at DATETIME(6) NOT NULL,
  attempts INT NOT NULL DEFAULT 0,
  lease_owner VARCHAR(255) NULL,
  lease_token CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
  lease_until DATETIME(6) NULL,
  last_error TEXT NULL,
  dead_at DATETIME(6) NULL,
  PRIMARY KEY (id),
  KEY callback_due (dead_at, available_at),
  KEY callback_message (message_id, event),
  KEY callback_lease_token (lease_token)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
