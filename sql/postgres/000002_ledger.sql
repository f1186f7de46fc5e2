-- Mailroom schema, version 2: the audit ledger that `mailroom verify` compares deliveries with.
-- Off by default; `mailroom ledger enable` turns the trigger on. Each committed enqueue leaves
-- a row: id, topic, key, the enqueueing transaction's id and the snapshot it wrote under.
-- Together those say, for two messages of one key, whether the first had committed before the
-- second was written — the condition under which per-key order is promised.

CREATE TABLE {{schema}}.ledger (
  id uuid PRIMARY KEY,
  topic text NOT NULL,
  key text,
  xid xid8 NOT NULL,
  snapshot pg_snapshot NOT NULL,
  enqueued_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_enqueued_at ON {{schema}}.ledger (enqueued_at);

CREATE FUNCTION {{schema}}.ledger_record() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {{schema}}.ledger (id, topic, key, xid, snapshot)
  SELECT n.id, n.topic, n.key, pg_current_xact_id(), pg_current_snapshot() FROM new_rows n
  -- A replayed dead letter is the same message: keep its first entry.
  ON CONFLICT (id) DO NOTHING;
  RETURN NULL;
END
$$;

CREATE TRIGGER outbox_ledger AFTER INSERT ON {{schema}}.outbox
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.ledger_record();
ALTER TABLE {{schema}}.outbox DISABLE TRIGGER outbox_ledger;
