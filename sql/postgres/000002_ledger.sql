-- Mailroom schema, version 2: the audit ledger that `mailroom verify` compares deliveries with.
-- Off by default; `mailroom ledger enable` turns the trigger on. Each committed enqueue leaves
-- a row: id, topic, key, the enqueueing transaction's id and the snapshot it wrote under.
-- Together those say, for two messages of one key, whether the first had committed before the
-- second was written — the condition under which per-key order is promised.

CREATE TABLE {{schema}}.ledger (
  id uuid PRIMARY KEY,
  -- The outbox row's insert position. The snapshot below is taken when the trigger runs, a
  -- moment after the insert, so it can see a transaction that committed in between; such a
  -- transaction inserted later (higher seq) and was concurrent, not earlier. The verifier
  -- demands order only when the earlier message also has the lower seq.
  seq bigint NOT NULL,
  topic text NOT NULL,
  key text,
  xid xid8 NOT NULL,
  snapshot pg_snapshot NOT NULL,
  -- Already in the outbox when the ledger was switched on: checked for loss and phantoms, not
  -- for order (their transactions are unknown).
  baseline boolean NOT NULL DEFAULT false,
  enqueued_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_enqueued_at ON {{schema}}.ledger (enqueued_at);

-- What `mailroom verify check` received from the transport, in arrival order, so that checks can
-- be repeated and interrupted without forgetting deliveries.
CREATE TABLE {{schema}}.ledger_received (
  n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id uuid NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION {{schema}}.ledger_record() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {{schema}}.ledger (id, seq, topic, key, xid, snapshot)
  SELECT n.id, n.seq, n.topic, n.key, pg_current_xact_id(), pg_current_snapshot() FROM new_rows n
  -- A replayed dead letter is the same message: keep its first entry.
  ON CONFLICT (id) DO NOTHING;
  RETURN NULL;
END
$$;

CREATE TRIGGER outbox_ledger AFTER INSERT ON {{schema}}.outbox
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION {{schema}}.ledger_record();
ALTER TABLE {{schema}}.outbox DISABLE TRIGGER outbox_ledger;
