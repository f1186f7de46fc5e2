-- Mailroom schema, version 11: the audit ledger (`mailroom verify`) knows atomic groups.
-- An atomic group (`enqueue(…, { atomic: true })`, docs/design.md "Atomic groups") is stored as
-- one row, or one table-less message, whose payload holds its members; the ledger records each
-- member, as it would have recorded each message sent on its own. Members share the group's
-- seq: the verifier demands no order among them (they are published in one transaction).

CREATE OR REPLACE FUNCTION {{schema}}.ledger_record() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {{schema}}.ledger (id, seq, topic, key, xid, snapshot)
  SELECT n.id, n.seq, n.topic, n.key, pg_current_xact_id(), pg_current_snapshot() FROM new_rows n
  WHERE n.content_type <> 'application/vnd.mailroom.atomic-group+json'
  UNION ALL
  SELECT (m.value->>'id')::uuid, n.seq, m.value->>'topic', m.value->>'key', pg_current_xact_id(), pg_current_snapshot()
  FROM new_rows n, json_array_elements(convert_from(n.payload, 'UTF8')::json->'members') AS m(value)
  WHERE n.content_type = 'application/vnd.mailroom.atomic-group+json'
  -- A replayed dead letter is the same message: keep its first entry.
  ON CONFLICT (id) DO NOTHING;
  RETURN NULL;
END
$$;

-- emit_messages() as in version 10, its ledger entries with groups expanded the same way, and its
-- slot check made once per session: looking the slot up in pg_replication_slots at every enqueue
-- cost a table-less writer about what the outbox row it saves costs (docs/performance.md). Once a
-- session has seen the slot (`mailroom.slot_seen`, session-level, reverted with a transaction that
-- rolls back), it writes without looking again: the check is there to stop writes before the first
-- relay made the slot; a slot dropped later is a lost slot, which the relay reports (log_gap).
CREATE OR REPLACE FUNCTION {{schema}}.emit_messages(p_prefix text, p_slot text, p_contents text[])
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  n integer := 0;
  c text;
BEGIN
  IF coalesce(current_setting('mailroom.slot_seen', true), '') IS DISTINCT FROM p_slot THEN
    IF NOT EXISTS (SELECT 1 FROM pg_replication_slots s
                   WHERE s.slot_name = p_slot AND s.database = current_database()) THEN
      RAISE EXCEPTION 'mailroom: table-less enqueue needs the replication slot %, which does not exist in database %; start the relay once with --wakeup replication --slot % (it creates the slot), or enqueue with a table store until then', quote_literal(p_slot), quote_literal(current_database()), p_slot
        USING ERRCODE = '55000';
    END IF;
    PERFORM set_config('mailroom.slot_seen', p_slot, false);
  END IF;
  FOREACH c IN ARRAY coalesce(p_contents, '{}') LOOP
    PERFORM pg_logical_emit_message(true, p_prefix, c);
    n := n + 1;
  END LOOP;
  IF EXISTS (SELECT 1 FROM pg_trigger t
             WHERE t.tgrelid = '{{schema}}.outbox'::regclass AND t.tgname = 'outbox_ledger' AND t.tgenabled <> 'D') THEN
    INSERT INTO {{schema}}.ledger (id, seq, topic, key, xid, snapshot)
    SELECT e.id, e.seq, e.topic, e.key, pg_current_xact_id(), pg_current_snapshot()
    FROM (
      SELECT u.i, (j.x->>'id')::uuid AS id, nextval(pg_get_serial_sequence('{{schema}}.outbox', 'seq')) AS seq,
             j.x->>'topic' AS topic, j.x->>'key' AS key, j.x->>'ct' AS ct, j.x->>'p' AS p
      FROM unnest(p_contents) WITH ORDINALITY AS u(c, i), LATERAL (SELECT u.c::json AS x) j
    ) g
    CROSS JOIN LATERAL (
      SELECT g.id, g.seq, g.topic, g.key WHERE g.ct IS DISTINCT FROM 'application/vnd.mailroom.atomic-group+json'
      UNION ALL
      SELECT (m.value->>'id')::uuid, g.seq, m.value->>'topic', m.value->>'key'
      FROM json_array_elements(convert_from(decode(g.p, 'base64'), 'UTF8')::json->'members') AS m(value)
      WHERE g.ct = 'application/vnd.mailroom.atomic-group+json'
    ) e
    ORDER BY g.i
    ON CONFLICT (id) DO NOTHING;
  END IF;
  RETURN n;
END
$$;
