-- Mailroom schema, version 6: the SQL API's enqueue() wakes relays through the wake gate by
-- default, as the library's enqueue does (docs/design.md, "Wake-ups"). A NOTIFY takes a
-- database-wide lock at commit that serialises every notifying writer; with the gate, a writer
-- sends one only while a relay is idle and holds the gate, and a writer that skipped it is
-- waited for by the relay before its last claim, so no wake-up is lost.
--
-- `mailroom.notify` (per transaction, session, role or database):
--   unset or 'idle'  NOTIFY only while a relay holds the wake gate (the default from now on);
--   'off'            no NOTIFY: relays find the message by polling;
--   anything else    ('on') a NOTIFY at every commit, as versions 1 to 5 did by default.
-- Relays older than this version never take the gate: while one of them is the only relay,
-- writers with the default skip the NOTIFY and it finds their messages by its poll (1 s by
-- default). Upgrade the relays first, or `ALTER DATABASE … SET mailroom.notify = on` until they
-- are (CHANGELOG, upgrade notes).
--
-- The gate is the advisory lock hashtext('mailroom.wake.' || schema): a relay takes it
-- exclusively (session level) before it sleeps; a writer tries it shared for the rest of its
-- transaction without waiting, and notifies only when it cannot get it. It must stay the key
-- postgresSql().wakeGate uses. Everything version 4 checks is checked as before; the signature
-- is the same, so CREATE OR REPLACE keeps every grant and caller.

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
  notify_setting text;
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
  -- NULL when never set in this session, '' after a SET LOCAL has ended: both the default.
  notify_setting := coalesce(current_setting('mailroom.notify', true), '');
  IF notify_setting IN ('', 'idle') THEN
    -- Got the shared lock: no relay holds or waits for the gate, and one that asks for it now
    -- waits until this transaction has ended, then claims. Did not: a relay is idle, wake it.
    IF NOT pg_try_advisory_xact_lock_shared(hashtext('mailroom.wake.' || {{schema_text}})) THEN
      PERFORM pg_notify({{channel_text}}, '');
    END IF;
  ELSIF notify_setting <> 'off' THEN
    PERFORM pg_notify({{channel_text}}, '');
  END IF;
  RETURN new_id;
END
$$;
