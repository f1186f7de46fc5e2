-- Mailroom schema, version 5: a claim whose cost does not grow with the number of keys, and
-- that can take a key's run of messages in one batch. See docs/design.md, "Claiming".
--
-- claim(limit, owner, token, lease_ms, per_key, after_key) leases up to `limit` due messages:
--
-- Pass 1 looks at the oldest `window` due, unleased rows (4 x limit, at least 1000; with runs,
-- `limit`). For each key there, its first row is a
-- candidate when no older row of the key is left (it is the key's head); keyless rows are all
-- candidates. When the window is full and yields fewer than `limit` candidates, deep backlogs of
-- blocked keys (a leased or retrying head) are hiding heads further back, and pass 2 walks at
-- most `walk` distinct keys through the (key, seq) index, starting after `after_key` and stopping
-- once it has found the heads it lacks, plus the
-- oldest due keyless rows. Version 1 walked every key here (seconds with 150k keys); now each
-- claim walks a bounded slice and the caller passes where the last one stopped, so every key is
-- reached after (keys / walk) claims, and a claim's cost is bounded by `window + walk` probes
-- whatever the number of keys.
--
-- Heads are taken oldest first. With per_key > 1 (runs), each head brings the next rows of its
-- key in seq order while they are due and unleased, up to per_key rows of the key in all, and
-- heads are taken until the limit is reached: a batch holds whole runs of a few keys rather than
-- one message of many. A key is in one batch at a time, so a hot key fills at most one of a
-- relay's concurrent batches and the others go to other keys. A run row is only ever locked by
-- the claim that locked its key's head, so two relays never split a run; a run is cut at the
-- first row another claim holds.
--
-- The last row returned is a cursor row (seq IS NULL) when pass 2 ran: its key is where the walk
-- stopped (NULL: it reached the last key, start from the first next time).
--
-- Version 1's claim(limit, owner, token, lease_ms) stays for relays of earlier versions.

CREATE FUNCTION {{schema}}.claim(p_limit integer, p_owner text, p_token uuid, p_lease_ms bigint,
                                 p_per_key integer, p_after_key text)
RETURNS TABLE (seq bigint, id uuid, topic text, key text, type text, payload bytea, content_type text,
               headers jsonb, created_at timestamptz, attempts integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  -- With runs, the oldest `limit` rows are enough: their keys' runs fill the batch. One message
  -- per key needs a wider window to find `limit` heads among keys with backlogs.
  win integer := CASE WHEN p_per_key > 1 THEN p_limit ELSE greatest(p_limit * 4, 1000) END;
  walk integer := greatest(p_limit * 2, 500);
  need integer;
  found integer;
  seen integer;
  cand bigint[];
  more bigint[];
  heads bigint[];
  runs bigint[] := '{}';
  plan_heads bigint[] := '{}';
  run_seq bigint[] := '{}';
  run_head bigint[] := '{}';
  chunk bigint[];
  got bigint[];
  used integer;
  h_seq bigint;
  h_key text;
  h_more boolean;
  first_key text;
  walked integer;
  last_key text;
  walked_keys boolean := false;
  cur bigint[];
  enough boolean;
BEGIN
  -- Pass 1. A key's later rows in the window are never heads (their predecessor is right there),
  -- so only each key's first window row is probed.
  SELECT count(*)::integer,
         coalesce(array_agg(f.seq) FILTER (WHERE f.head), '{}')
  INTO seen, cand
  FROM (
    SELECT w.seq,
           CASE WHEN w.key IS NULL THEN true
                WHEN w.seq <> w.key_first THEN false
                ELSE NOT EXISTS (SELECT 1 FROM {{schema}}.outbox e WHERE e.key = w.key AND e.seq < w.seq)
           END AS head
    FROM (
      SELECT d.seq, d.key, min(d.seq) OVER (PARTITION BY d.key) AS key_first
      FROM (
        SELECT o.seq, o.key FROM {{schema}}.outbox o
        WHERE o.available_at <= now() AND (o.lease_until IS NULL OR o.lease_until <= now())
        ORDER BY o.seq LIMIT win
      ) d
    ) w
  ) f;

  -- Plan. With runs: the heads oldest first, each with its run, until the limit. Without: the
  -- candidate heads. Pass 2 only when that is not enough and the window was full.
  used := 0;
  cur := cand;
  LOOP
    IF p_per_key > 1 THEN
      -- Plan on the snapshot, oldest head first: each head, then the next rows of its key while
      -- they are due and unleased. Rows read: what is taken, plus one probe per head. `more`
      -- is one index probe, so a key without a next row (most keys, when keys are many) costs
      -- no run lookup; the loop's cursor computes it only for the rows it reaches.
      FOR h_seq, h_key, h_more IN
        SELECT o.seq, o.key,
               o.key IS NOT NULL AND EXISTS (SELECT 1 FROM {{schema}}.outbox n WHERE n.key = o.key AND n.seq > o.seq)
        FROM {{schema}}.outbox o
        WHERE o.seq = ANY(cur) AND NOT o.seq = ANY(plan_heads)
          AND o.available_at <= now() AND (o.lease_until IS NULL OR o.lease_until <= now())
        ORDER BY o.seq
      LOOP
        EXIT WHEN used >= p_limit;
        plan_heads := plan_heads || h_seq;
        used := used + 1;
        CONTINUE WHEN NOT h_more OR used >= p_limit;
        SELECT coalesce(array_agg(z.seq ORDER BY z.seq), '{}') INTO chunk FROM (
          SELECT y.seq, bool_and(y.ready) OVER (ORDER BY y.seq) AS prefix FROM (
            SELECT x.seq, (x.available_at <= now() AND (x.lease_until IS NULL OR x.lease_until <= now())) AS ready
            FROM {{schema}}.outbox x
            WHERE x.key = h_key AND x.seq > h_seq
            ORDER BY x.seq LIMIT least(p_per_key - 1, p_limit - used)
          ) y
        ) z WHERE z.prefix;
        CONTINUE WHEN cardinality(chunk) = 0;
        run_seq := run_seq || chunk;
        run_head := run_head || array_fill(h_seq, ARRAY[cardinality(chunk)]);
        used := used + cardinality(chunk);
      END LOOP;
      enough := used >= p_limit;
    ELSE
      enough := cardinality(cand) >= p_limit;
    END IF;
    EXIT WHEN enough OR seen < win OR walked_keys;

    -- Pass 2, bounded: a slice of the keys after the cursor, and keyless rows past the window.
    walked_keys := true;
    need := p_limit - CASE WHEN p_per_key > 1 THEN used ELSE cardinality(cand) END;
    cur := '{}';
    IF p_after_key IS NULL THEN
      SELECT k.key INTO first_key FROM {{schema}}.outbox k WHERE k.key IS NOT NULL ORDER BY k.key, k.seq LIMIT 1;
    ELSE
      SELECT k.key INTO first_key FROM {{schema}}.outbox k WHERE k.key > p_after_key ORDER BY k.key, k.seq LIMIT 1;
    END IF;
    IF first_key IS NOT NULL THEN
      -- Stops as soon as it has found enough ready heads (`n` counts them) or at the budget.
      WITH RECURSIVE keys AS (
        (SELECT k.key, k.seq, k.ready, k.ready::integer AS n FROM (
           SELECT k0.key, k0.seq,
                  (k0.available_at <= now() AND (k0.lease_until IS NULL OR k0.lease_until <= now())) AS ready
           FROM {{schema}}.outbox k0 WHERE k0.key = first_key ORDER BY k0.seq LIMIT 1) k)
        UNION ALL
        SELECT x.key, x.seq, x.ready, keys.n + x.ready::integer FROM keys,
          LATERAL (SELECT k2.key, k2.seq,
                          (k2.available_at <= now() AND (k2.lease_until IS NULL OR k2.lease_until <= now())) AS ready
                   FROM {{schema}}.outbox k2
                   WHERE k2.key > keys.key ORDER BY k2.key, k2.seq LIMIT 1) x
        WHERE keys.n < need
      ), slice AS (
        SELECT * FROM keys LIMIT walk
      )
      SELECT count(*)::integer, max(s.key), coalesce(max(s.n), 0),
             coalesce(array_agg(s.seq) FILTER (WHERE s.ready), '{}')
      INTO walked, last_key, found, cur
      FROM slice s;
      -- A walk that ran out of keys (neither enough heads nor the budget stopped it) starts
      -- from the first key next time.
      IF walked < walk AND found < need THEN
        last_key := NULL;
      END IF;
    END IF;
    SELECT coalesce(array_agg(f.seq), '{}') INTO more FROM (
      SELECT f.seq FROM {{schema}}.outbox f
      WHERE f.key IS NULL AND f.available_at <= now() AND (f.lease_until IS NULL OR f.lease_until <= now())
      ORDER BY f.seq LIMIT p_limit
    ) f;
    cur := cur || more;
    cand := cand || cur;
  END LOOP;

  IF p_per_key <= 1 THEN
    -- The due and lease conditions again, on the locked rows: when another claim leased a row
    -- and committed after our snapshot, PostgreSQL re-checks them on the row's new version, so
    -- the row is not claimed twice.
    SELECT coalesce(array_agg(l.seq), '{}') INTO heads FROM (
      SELECT l.seq FROM {{schema}}.outbox l
      WHERE l.seq = ANY(cand)
        AND l.available_at <= now() AND (l.lease_until IS NULL OR l.lease_until <= now())
      ORDER BY l.seq LIMIT p_limit
      FOR UPDATE SKIP LOCKED
    ) l;
  ELSE
    -- Lock the planned heads (re-checked as above), then the runs of the heads this claim got.
    -- A run's rows are only ever locked by the claim holding its head, so two relays never split
    -- a run.
    SELECT coalesce(array_agg(l.seq), '{}') INTO heads FROM (
      SELECT l.seq FROM {{schema}}.outbox l
      WHERE l.seq = ANY(plan_heads)
        AND l.available_at <= now() AND (l.lease_until IS NULL OR l.lease_until <= now())
      FOR UPDATE SKIP LOCKED
    ) l;
    IF cardinality(run_seq) > 0 THEN
      SELECT coalesce(array_agg(l.seq), '{}') INTO got FROM (
        SELECT l.seq FROM {{schema}}.outbox l
        WHERE l.seq = ANY(ARRAY(SELECT u.seq FROM unnest(run_seq, run_head) AS u(seq, head) WHERE u.head = ANY(heads)))
          AND l.available_at <= now() AND (l.lease_until IS NULL OR l.lease_until <= now())
        FOR UPDATE SKIP LOCKED
      ) l;
      -- Each run up to its first row this claim could not lock: never a gap in a run.
      SELECT coalesce(array_agg(r.seq), '{}') INTO runs FROM (
        SELECT u.seq, bool_and(u.seq = ANY(got)) OVER (PARTITION BY u.head ORDER BY u.ord) AS whole
        FROM unnest(run_seq, run_head) WITH ORDINALITY AS u(seq, head, ord)
      ) r WHERE r.whole;
    END IF;
  END IF;

  RETURN QUERY
  UPDATE {{schema}}.outbox o
  SET lease_owner = p_owner, lease_token = p_token,
      lease_until = now() + p_lease_ms * interval '1 millisecond', attempts = o.attempts + 1
  WHERE o.seq = ANY(heads || runs)
  RETURNING o.seq, o.id, o.topic, o.key, o.type, o.payload, o.content_type, o.headers, o.created_at, o.attempts;

  IF walked_keys THEN
    RETURN QUERY SELECT NULL::bigint, NULL::uuid, NULL::text, last_key, NULL::text, NULL::bytea, NULL::text,
                        NULL::jsonb, NULL::timestamptz, NULL::integer;
  END IF;
END
$$;
