-- Mailroom schema, version 4: the SQL API refuses a payload over the size limit the TypeScript
-- enqueue has (DEFAULT_MAX_PAYLOAD_BYTES in src/core/message.ts, 1 MiB), counted the same way:
-- the bytes stored, which for the SQL API are the UTF-8 text PostgreSQL prints for the jsonb.
-- Without it, a trigger or psql could write a row of any size (up to bytea's 1 GB) that the
-- relay then has to read and publish, and that a broker with a frame limit refuses forever.
--
-- `SET mailroom.max_payload_bytes = 4194304` raises (or lowers) the limit for a session;
-- `ALTER ROLE … SET` / `ALTER DATABASE … SET` for every session of a role or database, as
-- `Outbox({ maxPayloadBytes })` does for the TypeScript side. A custom setting, like
-- mailroom.notify, rather than a new argument: the signature stays the same, so CREATE OR
-- REPLACE keeps every grant and caller. Everything version 3 checks is checked as before.

CREATE OR REPLACE FUNCTION {{schema}}.enqueue(
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
  body bytea := convert_to(coalesce(payload, 'null'::jsonb)::text, 'UTF8');
  -- NULL when the setting was never set in this session; '' after a SET LOCAL has ended.
  limit_setting text := nullif(btrim(current_setting('mailroom.max_payload_bytes', true)), '');
  limit_bytes bigint;
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
  -- Checked before now() + delay is computed: a delay of centuries would otherwise fail there
  -- as "timestamp out of range", an error that says nothing about the argument.
  IF extract(epoch FROM delay) > 365 * 86400 THEN
    RAISE EXCEPTION 'mailroom.enqueue: delay % is over the limit of 365 days; schedule anything later outside the outbox', delay
      USING ERRCODE = '22023';
  END IF;
  -- Checked as text before the cast (in its own IF: SQL does not promise to evaluate AND left
  -- to right), so a bad value names the setting instead of failing as a cast error. At most
  -- 15 digits, so the cast cannot overflow.
  limit_bytes := 1048576;
  IF limit_setting IS NOT NULL THEN
    IF limit_setting ~ '^[0-9]{1,15}$' THEN
      limit_bytes := limit_setting::bigint;
    END IF;
    IF limit_setting !~ '^[0-9]{1,15}$' OR limit_bytes < 1 THEN
      RAISE EXCEPTION 'mailroom.enqueue: setting mailroom.max_payload_bytes must be a whole number of bytes, at least 1, got %', quote_literal(limit_setting)
        USING ERRCODE = '22023';
    END IF;
  END IF;
  IF octet_length(body) > limit_bytes THEN
    RAISE EXCEPTION 'mailroom.enqueue: payload is % bytes, over the limit of % bytes; store large data elsewhere and send a reference, or raise the limit with SET mailroom.max_payload_bytes', octet_length(body), limit_bytes
      USING ERRCODE = '22023';
  END IF;
  INSERT INTO {{schema}}.outbox (id, topic, key, type, payload, content_type, headers, available_at)
  VALUES (new_id, topic, key, type, body, 'application/json', headers, now() + delay);
  -- Delivered at commit, dropped on rollback: relays listening on the channel wake up at once.
  -- `SET mailroom.notify = off` (per session, role or database) leaves waking to the poll.
  IF coalesce(current_setting('mailroom.notify', true), 'on') <> 'off' THEN
    PERFORM pg_notify({{channel_text}}, '');
  END IF;
  RETURN new_id;
END
$$;
