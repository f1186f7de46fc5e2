-- Mailroom schema, version 3: the SQL API refuses a delay over 365 days, the bound the
-- TypeScript enqueue has (MAX_DELAY_MS in src/core/message.ts; see docs/stores/postgres.md,
-- "Delays" for why). Same signature, so CREATE OR REPLACE keeps every grant and caller; like
-- every migration it runs once, under migrate's advisory lock, and would be harmless again.
--
-- The delay is measured with extract(epoch …), which counts a month as 30 days and a year as
-- 365.25: the same interval gets the same answer whatever the date ('1 year' is always over
-- the limit; write '365 days').

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
