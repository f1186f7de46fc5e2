-- Mailroom schema, version 9: claiming named rows, for relays that learn of new messages from the
-- transaction log (`wakeup: 'replication'`). See docs/design.md, "Log tailing".
--
-- claim_ids(ids, xids, owner, token, lease_ms, per_key) leases those of `ids` that a claim could
-- take now: due, unleased, and in key order. A row with a key is taken only when every older row
-- of its key still in the table is taken with it (so a key's head, or a run behind it, never a row
-- behind a head that is leased, retrying or not named), and at most `per_key` rows of a key.
-- Rows not taken stay in the table for the claim path, which delivers them in order; so a row
-- this function does not take is never lost, only later.
--
-- The log says a transaction committed slightly before the transaction is visible to other
-- sessions' snapshots. With `xids` (the transactions' 32-bit ids from the log), the function
-- first waits (up to 1 s, 1 ms steps) until those transactions are visible, so their rows are not
-- missed for being read too early; each statement after the wait takes a new snapshot. Without
-- them (NULL or empty), rows are read as they are now.

CREATE FUNCTION {{schema}}.xid8_of(p_xid bigint) RETURNS xid8
LANGUAGE sql STABLE AS $$
  -- The 64-bit id of a recent 32-bit xid: the epoch of the snapshot's xmax, one less when the xid
  -- is above xmax's low half (it is from before the wraparound).
  SELECT (((x >> 32) - CASE WHEN p_xid > (x & 4294967295) THEN 1 ELSE 0 END) << 32 | p_xid)::text::xid8
  FROM (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS x) s
$$;

CREATE FUNCTION {{schema}}.claim_ids(p_ids uuid[], p_xids bigint[], p_owner text, p_token uuid,
                                     p_lease_ms bigint, p_per_key integer)
RETURNS TABLE (seq bigint, id uuid, topic text, key text, type text, payload bytea, content_type text,
               headers jsonb, created_at timestamptz, attempts integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  waited integer := 0;
  cand bigint[];
  took bigint[];
BEGIN
  WHILE waited < 1000 AND EXISTS (
    SELECT 1 FROM unnest(coalesce(p_xids, '{}')) AS t(x)
    WHERE NOT pg_visible_in_snapshot({{schema}}.xid8_of(t.x), pg_current_snapshot())
  ) LOOP
    PERFORM pg_sleep(0.001);
    waited := waited + 1;
  END LOOP;

  -- The named rows that are due and unleased now, locked (rows another claim holds are skipped).
  SELECT coalesce(array_agg(l.seq), '{}') INTO cand FROM (
    SELECT o.seq FROM {{schema}}.outbox o
    WHERE o.id = ANY(p_ids)
      AND o.available_at <= now() AND (o.lease_until IS NULL OR o.lease_until <= now())
    FOR UPDATE SKIP LOCKED
  ) l;

  -- Key order: no older row of the key outside the candidates, and at most per_key of a key.
  SELECT coalesce(array_agg(c.seq), '{}') INTO took FROM (
    SELECT o.seq, o.key, row_number() OVER (PARTITION BY o.key ORDER BY o.seq) AS n
    FROM {{schema}}.outbox o
    WHERE o.seq = ANY(cand)
  ) c
  WHERE c.key IS NULL
     OR (c.n <= greatest(p_per_key, 1)
         AND NOT EXISTS (SELECT 1 FROM {{schema}}.outbox e
                         WHERE e.key = c.key AND e.seq < c.seq AND NOT e.seq = ANY(cand)));

  RETURN QUERY
  UPDATE {{schema}}.outbox o
  SET lease_owner = p_owner, lease_token = p_token,
      lease_until = now() + p_lease_ms * interval '1 millisecond', attempts = o.attempts + 1
  WHERE o.seq = ANY(took)
  RETURNING o.seq, o.id, o.topic, o.key, o.type, o.payload, o.content_type, o.headers, o.created_at, o.attempts;
END
$$;
