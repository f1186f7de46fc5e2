-- Mailroom schema, version 1: the outbox, dead letters, archive and the SQL API.
-- {{schema}} is replaced by the quoted schema name, {{schema_text}} by its name as a string
-- literal, {{channel_text}} by the NOTIFY channel as a string literal.

CREATE TABLE {{schema}}.outbox (
  -- Insert order. A message with a key is claimed only when no row of the same key with a
  -- smaller seq is left, which is what keeps per-key order (see docs/design.md, "Per-key order").
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id uuid NOT NULL UNIQUE,
  topic text NOT NULL CHECK (octet_length(topic) BETWEEN 1 AND 255),
  key text CHECK (key IS NULL OR octet_length(key) <= 1024),
  type text,
  payload bytea NOT NULL,
  content_type text NOT NULL DEFAULT 'application/json',
  headers jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(headers) = 'object'),
  created_at timestamptz NOT NULL DEFAULT now(),
  available_at timestamptz NOT NULL DEFAULT now(),
  attempts integer NOT NULL DEFAULT 0,
  lease_owner text,
  lease_token uuid,
  lease_until timestamptz,
  last_error text
);

-- Head-of-key lookups for the claim and for status.
CREATE INDEX outbox_key_seq ON {{schema}}.outbox (key, seq) WHERE key IS NOT NULL;
-- Finding the next due time without scanning the backlog. Only delayed and retried rows are
-- ever due later than they were created, so only they are indexed: a plain enqueue skips it.
CREATE INDEX outbox_delayed ON {{schema}}.outbox (available_at) WHERE available_at > created_at;
CREATE INDEX outbox_lease_token ON {{schema}}.outbox (lease_token) WHERE lease_token IS NOT NULL;
-- Keyless rows past a window full of blocked keyed rows (the claim's second pass).
CREATE INDEX outbox_keyless_seq ON {{schema}}.outbox (seq) WHERE key IS NULL;

CREATE TABLE {{schema}}.dead_letter (
  id uuid PRIMARY KEY,
  topic text NOT NULL,
  key text,
  type text,
  payload bytea NOT NULL,
  content_type text NOT NULL,
  headers jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  attempts integer NOT NULL,
  dead_at timestamptz NOT NULL DEFAULT now(),
  last_error text
);
CREATE INDEX dead_letter_dead_at ON {{schema}}.dead_letter (dead_at);
CREATE INDEX dead_letter_topic ON {{schema}}.dead_letter (topic);

-- Delivered messages, when the relay runs with archive = true. Pruned by retention.
CREATE TABLE {{schema}}.archive (
  id uuid PRIMARY KEY,
  topic text NOT NULL,
  key text,
  type text,
  payload bytea NOT NULL,
  content_type text NOT NULL,
  headers jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  attempts integer NOT NULL,
  sent_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX archive_sent_at ON {{schema}}.archive (sent_at);

-- Claim: lease up to p_limit due messages, oldest first, at most one per key — a keyed row only
-- when no older row of its key is left (delivered rows are deleted, so its predecessors were
-- all delivered or dead-lettered). See docs/design.md.
--
-- Pass 1 looks at the oldest `window` due rows and keeps the heads among them: cheap when keys
-- are many (most rows are heads). When that window is full and yields fewer than p_limit rows,
-- deep per-key backlogs are hiding heads further back, so pass 2 walks the distinct keys through
-- the (key, seq) index (one probe per key) and adds keyless rows, so that a key with a deep
-- backlog never holds back other keys.
CREATE FUNCTION {{schema}}.claim(p_limit integer, p_owner text, p_token uuid, p_lease_ms bigint)
RETURNS TABLE (seq bigint, id uuid, topic text, key text, type text, payload bytea, content_type text,
               headers jsonb, created_at timestamptz, attempts integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  win integer := greatest(p_limit * 4, 1000);
  taken integer;
  due integer;
BEGIN
  RETURN QUERY
  WITH win AS (
    SELECT w.seq, w.key FROM {{schema}}.outbox w
    WHERE w.available_at <= now() AND (w.lease_until IS NULL OR w.lease_until <= now())
    ORDER BY w.seq LIMIT win
  ), heads AS (
    SELECT h.seq FROM win h
    WHERE h.key IS NULL OR NOT EXISTS (SELECT 1 FROM {{schema}}.outbox e WHERE e.key = h.key AND e.seq < h.seq)
    ORDER BY h.seq LIMIT p_limit
  ), locked AS (
    -- The due and lease conditions again, here on the locked scan: when another claim leased a
    -- row and committed after our snapshot, PostgreSQL re-checks these quals on the row's new
    -- version (the ones in `win` ran on the old snapshot), so the row is not claimed twice.
    SELECT l.seq FROM {{schema}}.outbox l
    WHERE l.seq IN (SELECT heads.seq FROM heads)
      AND l.available_at <= now() AND (l.lease_until IS NULL OR l.lease_until <= now())
    FOR UPDATE SKIP LOCKED
  )
  UPDATE {{schema}}.outbox o
  SET lease_owner = p_owner, lease_token = p_token,
      lease_until = now() + p_lease_ms * interval '1 millisecond', attempts = o.attempts + 1
  FROM locked WHERE o.seq = locked.seq
  RETURNING o.seq, o.id, o.topic, o.key, o.type, o.payload, o.content_type, o.headers, o.created_at, o.attempts;
  GET DIAGNOSTICS taken = ROW_COUNT;
  IF taken >= p_limit THEN
    RETURN;
  END IF;
  SELECT count(*) INTO due FROM (
    SELECT 1 FROM {{schema}}.outbox d
    WHERE d.available_at <= now() AND (d.lease_until IS NULL OR d.lease_until <= now())
    LIMIT win
  ) x;
  IF due < win THEN
    RETURN;
  END IF;
  RETURN QUERY
  WITH RECURSIVE keys AS (
    (SELECT k.key, k.seq FROM {{schema}}.outbox k WHERE k.key IS NOT NULL ORDER BY k.key, k.seq LIMIT 1)
    UNION ALL
    SELECT n.key, n.seq FROM keys,
      LATERAL (SELECT k2.key, k2.seq FROM {{schema}}.outbox k2
               WHERE k2.key > keys.key ORDER BY k2.key, k2.seq LIMIT 1) n
  ), candidates AS (
    SELECT keys.seq FROM keys
    UNION ALL
    (SELECT f.seq FROM {{schema}}.outbox f
     WHERE f.key IS NULL AND f.available_at <= now() AND (f.lease_until IS NULL OR f.lease_until <= now())
     ORDER BY f.seq LIMIT p_limit - taken)
  ), locked AS (
    SELECT l.seq FROM {{schema}}.outbox l
    WHERE l.seq IN (SELECT candidates.seq FROM candidates)
      AND l.available_at <= now() AND (l.lease_until IS NULL OR l.lease_until <= now())
    ORDER BY l.seq LIMIT p_limit - taken
    FOR UPDATE SKIP LOCKED
  )
  UPDATE {{schema}}.outbox o
  SET lease_owner = p_owner, lease_token = p_token,
      lease_until = now() + p_lease_ms * interval '1 millisecond', attempts = o.attempts + 1
  FROM locked WHERE o.seq = locked.seq
  RETURNING o.seq, o.id, o.topic, o.key, o.type, o.payload, o.content_type, o.headers, o.created_at, o.attempts;
END
$$;

-- UUIDv7 (RFC 9562) from the database clock: 48-bit milliseconds, then random bits.
CREATE FUNCTION {{schema}}.uuid_generate_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  SELECT encode(
    set_bit(
      set_bit(
        overlay(uuid_send(gen_random_uuid())
          PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
          FROM 1 FOR 6),
        52, 1),
      53, 1),
    'hex')::uuid
$$;

-- The SQL API: enqueue a message from a trigger, psql or any language, inside the caller's
-- transaction. The payload is stored as the JSON text PostgreSQL prints for it.
CREATE FUNCTION {{schema}}.enqueue(
  topic text,
  payload jsonb,
  key text DEFAULT NULL,
  headers jsonb DEFAULT '{}'::jsonb,
  type text DEFAULT NULL,
  delay interval DEFAULT '0'::interval
) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  new_id uuid := {{schema}}.uuid_generate_v7();
BEGIN
  IF topic IS NULL OR octet_length(topic) = 0 OR octet_length(topic) > 255 THEN
    RAISE EXCEPTION 'mailroom.enqueue: topic must be 1 to 255 bytes, got %', coalesce(quote_literal(topic), 'NULL')
      USING ERRCODE = '22023';
  END IF;
  IF topic ~ '[\x01-\x1f\x7f]' THEN
    RAISE EXCEPTION 'mailroom.enqueue: topic % contains a control character', quote_literal(topic)
      USING ERRCODE = '22023';
  END IF;
  IF key IS NOT NULL AND octet_length(key) > 1024 THEN
    RAISE EXCEPTION 'mailroom.enqueue: key is % bytes, over the limit of 1024', octet_length(key)
      USING ERRCODE = '22023';
  END IF;
  IF headers IS NULL OR jsonb_typeof(headers) <> 'object' THEN
    RAISE EXCEPTION 'mailroom.enqueue: headers must be a JSON object of strings'
      USING ERRCODE = '22023';
  END IF;
  IF EXISTS (SELECT 1 FROM jsonb_each(headers) h WHERE jsonb_typeof(h.value) <> 'string') THEN
    RAISE EXCEPTION 'mailroom.enqueue: every header value must be a JSON string; convert numbers with to_jsonb(x::text)'
      USING ERRCODE = '22023';
  END IF;
  IF delay IS NULL OR delay < '0'::interval THEN
    RAISE EXCEPTION 'mailroom.enqueue: delay must be zero or positive' USING ERRCODE = '22023';
  END IF;
  INSERT INTO {{schema}}.outbox (id, topic, key, type, payload, content_type, headers, available_at)
  VALUES (new_id, topic, key, type, convert_to(coalesce(payload, 'null'::jsonb)::text, 'UTF8'),
          'application/json', headers, now() + delay);
  -- Delivered at commit, dropped on rollback: relays listening on the channel wake up at once.
  -- `SET mailroom.notify = off` (per session, role or database) leaves waking to the poll.
  IF coalesce(current_setting('mailroom.notify', true), 'on') <> 'off' THEN
    PERFORM pg_notify({{channel_text}}, '');
  END IF;
  RETURN new_id;
END
$$;
