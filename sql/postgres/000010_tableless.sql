-- Mailroom schema, version 10: table-less messages. See docs/replication.md, "Table-less mode".
--
-- A table-less enqueue writes no row: it emits a transactional logical decoding message
-- (pg_logical_emit_message(true, prefix, content)), which is in the WAL only if the transaction
-- commits and reaches a relay reading the log (wakeup 'replication') in commit order. Nothing is
-- left behind to vacuum. The table stays the retry path: a message whose publish fails is written
-- into the outbox by the relay, and later messages of its key follow it there.
--
-- The content is JSON text: {"v":1,"id","topic","key","type","ct","h","p","at"}, `p` the payload
-- in base64, `at` (optional) when it was written.
--
-- A logical message is kept only for slots that exist when it is written. emit_messages() and
-- emit() therefore check that the relay's slot exists and refuse to write otherwise: a message
-- emitted with no slot to read it would be lost at commit.

-- Emits `p_contents` in order, after checking that slot `p_slot` exists in this database.
-- Returns how many it emitted.
CREATE FUNCTION {{schema}}.emit_messages(p_prefix text, p_slot text, p_contents text[])
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  n integer := 0;
  c text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_replication_slots s
                 WHERE s.slot_name = p_slot AND s.database = current_database()) THEN
    RAISE EXCEPTION 'mailroom: table-less enqueue needs the replication slot %, which does not exist in database %; start the relay once with --wakeup replication --slot % (it creates the slot), or enqueue with a table store until then', quote_literal(p_slot), quote_literal(current_database()), p_slot
      USING ERRCODE = '55000';
  END IF;
  FOREACH c IN ARRAY coalesce(p_contents, '{}') LOOP
    PERFORM pg_logical_emit_message(true, p_prefix, c);
    n := n + 1;
  END LOOP;
  -- The audit ledger (`mailroom verify`), when it is on: the entries the outbox trigger would
  -- have written for rows, numbered from the outbox's own sequence so both kinds compare.
  IF EXISTS (SELECT 1 FROM pg_trigger t
             WHERE t.tgrelid = '{{schema}}.outbox'::regclass AND t.tgname = 'outbox_ledger' AND t.tgenabled <> 'D') THEN
    INSERT INTO {{schema}}.ledger (id, seq, topic, key, xid, snapshot)
    SELECT (j.x->>'id')::uuid, nextval(pg_get_serial_sequence('{{schema}}.outbox', 'seq')), j.x->>'topic', j.x->>'key',
           pg_current_xact_id(), pg_current_snapshot()
    FROM unnest(p_contents) WITH ORDINALITY AS u(c, i), LATERAL (SELECT u.c::json AS x) j
    ORDER BY u.i
    ON CONFLICT (id) DO NOTHING;
  END IF;
  RETURN n;
END
$$;

-- The SQL API's table-less enqueue: the arguments and checks of enqueue(), without `delay` (a
-- delayed message needs the table). The prefix and slot come from the settings
-- `mailroom.log_prefix` and `mailroom.slot`, by default the schema's name and `<schema>_relay`,
-- the relay's defaults.
CREATE FUNCTION {{schema}}.emit(
  topic text,
  payload jsonb,
  key text DEFAULT NULL,
  headers jsonb DEFAULT '{}'::jsonb,
  type text DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  new_id uuid := {{schema}}.uuid_generate_v7();
  body bytea := convert_to(coalesce(payload, 'null'::jsonb)::text, 'UTF8');
  limit_setting text := nullif(btrim(current_setting('mailroom.max_payload_bytes', true)), '');
  limit_bytes bigint := 1048576;
  prefix text := coalesce(nullif(btrim(current_setting('mailroom.log_prefix', true)), ''), {{schema_text}});
  slot text := coalesce(nullif(btrim(current_setting('mailroom.slot', true)), ''), {{schema_text}} || '_relay');
BEGIN
  IF topic IS NULL OR octet_length(topic) = 0 OR octet_length(topic) > 255 THEN
    RAISE EXCEPTION 'mailroom.emit: topic must be 1 to 255 bytes, got %', coalesce(quote_literal(topic), 'NULL')
      USING ERRCODE = '22023';
  END IF;
  IF topic ~ '[\x01-\x1f\x7f]' THEN
    RAISE EXCEPTION 'mailroom.emit: topic % contains a control character', quote_literal(topic)
      USING ERRCODE = '22023';
  END IF;
  IF key IS NOT NULL AND octet_length(key) > 1024 THEN
    RAISE EXCEPTION 'mailroom.emit: key is % bytes, over the limit of 1024', octet_length(key)
      USING ERRCODE = '22023';
  END IF;
  IF headers IS NULL OR jsonb_typeof(headers) <> 'object' THEN
    RAISE EXCEPTION 'mailroom.emit: headers must be a JSON object of strings'
      USING ERRCODE = '22023';
  END IF;
  IF EXISTS (SELECT 1 FROM jsonb_each(headers) h WHERE jsonb_typeof(h.value) <> 'string') THEN
    RAISE EXCEPTION 'mailroom.emit: every header value must be a JSON string; convert numbers with to_jsonb(x::text)'
      USING ERRCODE = '22023';
  END IF;
  IF limit_setting IS NOT NULL THEN
    IF limit_setting ~ '^[0-9]{1,15}$' THEN
      limit_bytes := limit_setting::bigint;
    END IF;
    IF limit_setting !~ '^[0-9]{1,15}$' OR limit_bytes < 1 THEN
      RAISE EXCEPTION 'mailroom.emit: setting mailroom.max_payload_bytes must be a whole number of bytes, at least 1, got %', quote_literal(limit_setting)
        USING ERRCODE = '22023';
    END IF;
  END IF;
  IF octet_length(body) > limit_bytes THEN
    RAISE EXCEPTION 'mailroom.emit: payload is % bytes, over the limit of % bytes; store large data elsewhere and send a reference, or raise the limit with SET mailroom.max_payload_bytes', octet_length(body), limit_bytes
      USING ERRCODE = '22023';
  END IF;
  PERFORM {{schema}}.emit_messages(prefix, slot, ARRAY[json_build_object(
    'v', 1, 'id', new_id, 'topic', topic, 'key', key, 'type', type, 'ct', 'application/json',
    'h', headers, 'p', translate(encode(body, 'base64'), E'\n', ''), 'at', now())::text]);
  RETURN new_id;
END
$$;

-- The keys among `p_keys` that have a row in the outbox (due, delayed, retrying or leased): a
-- table-less message of such a key goes into the table behind it instead of to the broker, so a
-- key's order holds across both paths. With `p_xids`, first waits (up to 1 s) until those
-- transactions are visible, as claim_ids() does: rows the log just reported may not be yet.
CREATE FUNCTION {{schema}}.keys_in_table(p_keys text[], p_xids bigint[])
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  waited integer := 0;
BEGIN
  WHILE waited < 1000 AND EXISTS (
    SELECT 1 FROM unnest(coalesce(p_xids, '{}')) AS t(x)
    WHERE NOT pg_visible_in_snapshot({{schema}}.xid8_of(t.x), pg_current_snapshot())
  ) LOOP
    PERFORM pg_sleep(0.001);
    waited := waited + 1;
  END LOOP;
  RETURN QUERY
  SELECT k.key FROM unnest(p_keys) AS k(key)
  WHERE EXISTS (SELECT 1 FROM {{schema}}.outbox o WHERE o.key = k.key);
END
$$;

-- How far a relay reading table-less messages had read when it last handed messages to its
-- transport, per slot: written before the publish, so after a crash every message the dead relay
-- may have published (and may have died of) is at or before it. The next relay sends those
-- through the table, where each claim counts an attempt and a message that kills relays becomes a
-- dead letter after maxAttempts. A row for a slot that had to be created again also says the log
-- lost a stretch (a `log_gap` error), across restarts.
CREATE TABLE {{schema}}.log_mark (
  slot text PRIMARY KEY,
  read_lsn pg_lsn NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
