-- Mailroom schema, version 8: the receiving side (inbox), acknowledged delivery and callbacks.
-- See docs/inbox.md, docs/acknowledged-delivery.md and docs/callbacks.md.

-- What a message asks for beyond delivery: {"ack": {timeoutMs, maxResends, onExpire, replyTo},
-- "callback": {url}}, or NULL for a plain message (almost all: a NULL column costs one bit).
-- Carried from the outbox to the dead letters and back, and into the archive.
ALTER TABLE {{schema}}.outbox ADD COLUMN delivery jsonb;
ALTER TABLE {{schema}}.dead_letter ADD COLUMN delivery jsonb;
ALTER TABLE {{schema}}.archive ADD COLUMN delivery jsonb;

-- The inbox: which messages each receiving service (consumer) has processed, written in the
-- handler's own transaction, so a message's effects and its record commit together.
CREATE TABLE {{schema}}.inbox (
  consumer text NOT NULL CHECK (octet_length(consumer) BETWEEN 1 AND 255),
  id uuid NOT NULL,
  processed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, id)
);
-- Retention deletes a consumer's oldest records first.
CREATE INDEX inbox_processed_at ON {{schema}}.inbox (consumer, processed_at);

-- Messages with `ack` after their delivery: awaiting the receiver's acknowledgement until
-- `deadline`, then resent (state 'resending' while the copy is back in the outbox) or expired.
-- The message itself is kept for the resends. An acknowledgement that arrives before the relay
-- settled the delivery makes a row of its own ('acknowledged', message columns empty) that the
-- settle fills in.
CREATE TABLE {{schema}}.ack (
  id uuid PRIMARY KEY,
  state text NOT NULL CHECK (state IN ('awaiting', 'resending', 'acknowledged', 'expired')),
  topic text,
  key text,
  type text,
  payload bytea,
  content_type text,
  headers jsonb,
  created_at timestamptz,
  delivery jsonb,
  resends integer NOT NULL DEFAULT 0,
  deadline timestamptz,
  sent_at timestamptz,
  acked_at timestamptz,
  consumer text,
  result jsonb,
  expired_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ack_deadline ON {{schema}}.ack (deadline) WHERE state = 'awaiting';
CREATE INDEX ack_finished ON {{schema}}.ack (updated_at) WHERE state IN ('acknowledged', 'expired');

-- Outcomes to POST to callback URLs: a small outbox of their own, claimed under leases and
-- retried with backoff apart from the messages, so a slow callback never holds up delivery.
CREATE TABLE {{schema}}.callback (
  id uuid PRIMARY KEY DEFAULT {{schema}}.uuid_generate_v7(),
  message_id uuid NOT NULL,
  topic text NOT NULL,
  event text NOT NULL CHECK (event IN ('delivered', 'acknowledged', 'expired', 'dead')),
  url text NOT NULL,
  detail jsonb NOT NULL DEFAULT '{}'::jsonb,
  occurred_at timestamptz NOT NULL DEFAULT now(),
  available_at timestamptz NOT NULL DEFAULT now(),
  attempts integer NOT NULL DEFAULT 0,
  lease_owner text,
  lease_token uuid,
  lease_until timestamptz,
  last_error text,
  dead_at timestamptz
);
CREATE INDEX callback_due ON {{schema}}.callback (available_at) WHERE dead_at IS NULL;

-- Settles delivered messages that asked for an acknowledgement or a callback (the relay's plain
-- delete leaves them, `delivery IS NOT NULL`): moves them into `ack`, awaiting, and queues their
-- `delivered` callback, in the settle's transaction. A resend's delivery sets its row back to
-- awaiting; a row already acknowledged or expired stays so (an early or late acknowledgement).
CREATE FUNCTION {{schema}}.settle_tracked(p_seqs bigint[], p_archive boolean)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  r record;
  prior text;
  n integer := 0;
BEGIN
  FOR r IN DELETE FROM {{schema}}.outbox o WHERE o.seq = ANY(p_seqs) RETURNING o.* LOOP
    n := n + 1;
    IF p_archive THEN
      INSERT INTO {{schema}}.archive (id, topic, key, type, payload, content_type, headers, created_at, attempts, delivery)
      VALUES (r.id, r.topic, r.key, r.type, r.payload, r.content_type, r.headers, r.created_at, r.attempts, r.delivery)
      ON CONFLICT (id) DO NOTHING;
    END IF;
    IF r.delivery ? 'callback' THEN
      INSERT INTO {{schema}}.callback (message_id, topic, event, url)
      VALUES (r.id, r.topic, 'delivered', r.delivery->'callback'->>'url');
    END IF;
    IF r.delivery ? 'ack' THEN
      INSERT INTO {{schema}}.ack (id, state, topic, key, type, payload, content_type, headers, created_at,
                                  delivery, deadline, sent_at)
      VALUES (r.id, 'awaiting', r.topic, r.key, r.type, r.payload, r.content_type, r.headers, r.created_at,
              r.delivery, now() + (r.delivery->'ack'->>'timeoutMs')::bigint * interval '1 millisecond', now())
      ON CONFLICT (id) DO NOTHING;
      IF NOT FOUND THEN
        SELECT a.state INTO prior FROM {{schema}}.ack a WHERE a.id = r.id FOR UPDATE;
        UPDATE {{schema}}.ack a
        SET state = CASE WHEN a.state = 'resending' THEN 'awaiting' ELSE a.state END,
            deadline = CASE WHEN a.state = 'resending'
                            THEN now() + (r.delivery->'ack'->>'timeoutMs')::bigint * interval '1 millisecond' END,
            sent_at = now(), updated_at = now(),
            topic = r.topic, key = r.key, type = r.type, payload = r.payload, content_type = r.content_type,
            headers = r.headers, created_at = r.created_at, delivery = r.delivery
        WHERE a.id = r.id;
        -- Acknowledged before this settle (an early acknowledgement had no URL to tell).
        IF prior = 'acknowledged' AND r.delivery ? 'callback' AND NOT EXISTS (
          SELECT 1 FROM {{schema}}.callback c WHERE c.message_id = r.id AND c.event = 'acknowledged'
        ) THEN
          INSERT INTO {{schema}}.callback (message_id, topic, event, url, detail)
          SELECT r.id, r.topic, 'acknowledged', r.delivery->'callback'->>'url',
                 jsonb_build_object('consumer', a.consumer, 'result', a.result)
          FROM {{schema}}.ack a WHERE a.id = r.id;
        END IF;
      END IF;
      PERFORM pg_notify({{schema_text}} || '_state', r.id::text);
    END IF;
  END LOOP;
  RETURN n;
END
$$;

-- Records a receiver's acknowledgement of message p_id; returns what it did (see AckOutcome):
-- 'acknowledged', 'duplicate', 'late' (the message had expired: recorded, stays expired) or
-- 'early' (no delivery settled yet: recorded, and the settle keeps it acknowledged).
CREATE FUNCTION {{schema}}.apply_ack(p_id uuid, p_consumer text, p_result jsonb)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  r record;
BEGIN
  SELECT * INTO r FROM {{schema}}.ack a WHERE a.id = p_id FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO {{schema}}.ack (id, state, acked_at, consumer, result)
    VALUES (p_id, 'acknowledged', now(), p_consumer, p_result)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
      -- Another acknowledgement or a settle made the row meanwhile: apply to that row.
      RETURN {{schema}}.apply_ack(p_id, p_consumer, p_result);
    END IF;
    PERFORM pg_notify({{schema_text}} || '_state', p_id::text);
    RETURN 'early';
  END IF;
  IF r.state = 'acknowledged' THEN
    RETURN 'duplicate';
  END IF;
  IF r.state = 'expired' THEN
    IF r.acked_at IS NOT NULL THEN
      RETURN 'duplicate';
    END IF;
    UPDATE {{schema}}.ack a SET acked_at = now(), consumer = p_consumer, result = p_result, updated_at = now()
    WHERE a.id = p_id;
    RETURN 'late';
  END IF;
  UPDATE {{schema}}.ack a
  SET state = 'acknowledged', acked_at = now(), consumer = p_consumer, result = p_result, deadline = NULL,
      updated_at = now()
  WHERE a.id = p_id;
  IF r.delivery ? 'callback' THEN
    INSERT INTO {{schema}}.callback (message_id, topic, event, url, detail)
    VALUES (p_id, r.topic, 'acknowledged', r.delivery->'callback'->>'url',
            jsonb_build_object('consumer', p_consumer, 'result', p_result));
  END IF;
  PERFORM pg_notify({{schema_text}} || '_state', p_id::text);
  RETURN 'acknowledged';
END
$$;

-- Messages whose acknowledgement deadline passed, at most p_limit, skipping rows another relay
-- is sweeping: resent (the same id, back into the outbox, due now) while resends are left, else
-- expired — in the same transaction its cancellation (to ack.onExpire) and its `expired`
-- callback are enqueued, so compensation is as reliable as any message.
CREATE FUNCTION {{schema}}.ack_sweep(p_limit integer)
RETURNS TABLE (resent integer, expired integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  r record;
  n_resent integer := 0;
  n_expired integer := 0;
  reason text;
BEGIN
  FOR r IN SELECT * FROM {{schema}}.ack a
           WHERE a.state = 'awaiting' AND a.deadline <= now()
           ORDER BY a.deadline LIMIT p_limit
           FOR UPDATE SKIP LOCKED LOOP
    IF r.resends < (r.delivery->'ack'->>'maxResends')::integer THEN
      INSERT INTO {{schema}}.outbox (id, topic, key, type, payload, content_type, headers, created_at, delivery)
      VALUES (r.id, r.topic, r.key, r.type, r.payload, r.content_type, r.headers, r.created_at, r.delivery)
      ON CONFLICT (id) DO NOTHING;
      UPDATE {{schema}}.ack a SET state = 'resending', resends = a.resends + 1, deadline = NULL, updated_at = now()
      WHERE a.id = r.id;
      n_resent := n_resent + 1;
    ELSE
      reason := format('no acknowledgement within %s ms of each of %s deliveries',
                       r.delivery->'ack'->>'timeoutMs', r.resends + 1);
      UPDATE {{schema}}.ack a SET state = 'expired', expired_at = now(), deadline = NULL, updated_at = now()
      WHERE a.id = r.id;
      IF r.delivery->'ack'->>'onExpire' IS NOT NULL THEN
        INSERT INTO {{schema}}.outbox (id, topic, key, type, payload, content_type, headers)
        VALUES ({{schema}}.uuid_generate_v7(), r.delivery->'ack'->>'onExpire', r.key, 'mailroom.expired',
                convert_to(jsonb_build_object('id', r.id, 'topic', r.topic, 'reason', reason)::text, 'UTF8'),
                'application/json', jsonb_build_object('mailroom-expired-id', r.id::text));
      END IF;
      IF r.delivery ? 'callback' THEN
        INSERT INTO {{schema}}.callback (message_id, topic, event, url, detail)
        VALUES (r.id, r.topic, 'expired', r.delivery->'callback'->>'url', jsonb_build_object('reason', reason));
      END IF;
      PERFORM pg_notify({{schema_text}} || '_state', r.id::text);
      n_expired := n_expired + 1;
    END IF;
  END LOOP;
  IF n_resent > 0 OR n_expired > 0 THEN
    -- Resends and cancellations are outbox rows: wake the relays.
    PERFORM pg_notify({{channel_text}}, '');
  END IF;
  resent := n_resent;
  expired := n_expired;
  RETURN NEXT;
END
$$;
