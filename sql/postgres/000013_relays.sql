-- Mailroom schema, version 13: which relays run (presence), for `mailroom status` / `doctor`
-- and the admin server. Leases say which relay holds a message; this table says which relays
-- exist at all, whether they are alive and what state they are in.
--
-- Each relay upserts its row at start and at every heartbeat (heartbeat_at on the database
-- clock, so clocks of relay hosts do not matter), updates `state` when its transport goes down
-- or comes back and when it stops, and deletes the row once stopped. A relay killed without a
-- stop (SIGKILL, a lost host) leaves its row: `alive` is false once heartbeat_at is older than
-- three of its heartbeat intervals, and any relay's heartbeat deletes rows dead for over a day.
CREATE TABLE {{schema}}.relay (
  owner text PRIMARY KEY CHECK (octet_length(owner) BETWEEN 1 AND 255),
  host text NOT NULL,
  pid integer NOT NULL,
  version text NOT NULL,
  -- notify, poll or replication
  wakeup text NOT NULL,
  -- The transport's name (rabbitmq, kafka, …).
  transport text NOT NULL,
  state text NOT NULL CHECK (state IN ('running', 'unavailable', 'stopping')),
  -- How often the relay heartbeats: alive means a heartbeat within three of these.
  heartbeat_interval_ms integer NOT NULL CHECK (heartbeat_interval_ms > 0),
  started_at timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now()
);
