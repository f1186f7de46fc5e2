import type { SqlStatement } from '../../core/ports.js';
import type { EncodedMessage } from '../../core/types.js';
import { quoteIdent, quoteLiteral } from '../sql-identifier.js';
import { preparedEnqueueName } from './schema-name.js';

/**
 * A table-less message as the log carries it: JSON text, the payload in base64. The relay reads
 * it back (`decodeLogMessage`); the SQL API's emit() writes the same shape, with `at`.
 */
export function encodeLogMessage(m: EncodedMessage): string {
  return JSON.stringify({
    v: 1,
    id: m.id,
    topic: m.topic,
    key: m.key,
    type: m.type,
    ct: m.contentType,
    h: m.headers,
    p: m.payload.toString('base64'),
  });
}

/** Most rows in one INSERT: 8 parameters a row stays well under PostgreSQL's 65535. */
export const MAX_ROWS_PER_INSERT = 4000;

/**
 * Every statement the PostgreSQL store runs, as values, in one place. `schema` is validated by
 * the store before it gets here; values always travel as parameters.
 */
export function postgresSql(schema: string, channel: string) {
  const s = quoteIdent(schema);
  const t = `${s}.outbox`;
  // The wake gate's advisory lock (see `wakeGate` below). hashtext() of a constant is folded
  // when the statement is planned, so a prepared enqueue computes it once.
  const gateKey = `hashtext(${quoteLiteral(`mailroom.wake.${schema}`)})`;
  return {
    channel,
    listen: `LISTEN ${quoteIdent(channel)}`,
    unlisten: `UNLISTEN ${quoteIdent(channel)}`,

    /**
     * The wake gate: NOTIFY only while a relay is idle, without ever losing a wake-up
     * (docs/design.md, "Wake-ups"). A relay that is about to sleep takes the session advisory
     * lock `arm` on a connection of its own; PostgreSQL grants it only once every transaction
     * holding the lock in shared mode has ended. An `enqueue(…, 'idle')` tries the shared lock
     * for the rest of its transaction without waiting: when it gets it, no relay holds or waits
     * for the gate and the writer skips the NOTIFY; when it cannot, it notifies. So a writer
     * that skipped the NOTIFY is still running when a relay asks for the gate, the relay's
     * `arm` returns only after that writer committed or rolled back, and the claim the relay
     * makes after `arm` returns sees its row. Every later writer sees the gate taken and
     * notifies. `disarm` (or the relay's session ending) opens the gate again.
     */
    wakeGate: {
      arm: `SELECT pg_advisory_lock(${gateKey})`,
      disarm: `SELECT pg_advisory_unlock(${gateKey}) AS released`,
    },

    /**
     * The INSERT of `messages`, and the wake-up: `true` sends a NOTIFY (delivered at commit),
     * `false` none (relays poll), `'idle'` one only while a relay holds the wake gate.
     */
    enqueue(messages: readonly EncodedMessage[], notify: boolean | 'idle', prepare = true): SqlStatement {
      const params: unknown[] = [];
      const rows: string[] = [];
      // Messages with `ack` or `callback` carry a `delivery` column; plain ones leave it out, so
      // the statement of the common case is the one it always was.
      const tracked = messages.some((m) => m.delivery !== null);
      for (const m of messages) {
        const b = params.length;
        params.push(
          m.id,
          m.topic,
          m.key,
          m.type,
          m.payload,
          m.contentType,
          JSON.stringify(m.headers),
          m.delayMs,
        );
        if (tracked) params.push(m.delivery === null ? null : JSON.stringify(m.delivery));
        rows.push(
          `($${b + 1}::uuid, $${b + 2}, $${b + 3}, $${b + 4}, $${b + 5}::bytea, $${b + 6}, $${b + 7}::text::jsonb, ` +
            `now() + $${b + 8}::bigint * interval '1 millisecond'${tracked ? `, $${b + 9}::text::jsonb` : ''})`,
        );
      }
      const insert =
        `INSERT INTO ${t} (id, topic, key, type, payload, content_type, headers, available_at${tracked ? ', delivery' : ''}) ` +
        `VALUES ${rows.join(', ')}`;
      // One message per transaction is the common case: give that text a name so drivers
      // prepare it once per connection.
      const name =
        messages.length === 1 && prepare && !tracked ? preparedEnqueueName(schema, notify) : undefined;
      const named = name ? { name } : {};
      if (!notify) return { sql: insert, params, ...named };
      // One round trip: the NOTIFY is queued in the caller's transaction and sent at commit.
      const wake =
        notify === 'idle'
          ? `CASE WHEN pg_try_advisory_xact_lock_shared(${gateKey}) THEN NULL ELSE pg_notify(${quoteLiteral(channel)}, '') END`
          : `pg_notify(${quoteLiteral(channel)}, '')`;
      return {
        // A boolean, not pg_notify's void: some drivers cannot read a void column (Prisma's
        // driver adapters fail the statement over it).
        sql: `WITH ins AS (${insert} RETURNING 1) SELECT (${wake}) IS NOT NULL AS notified FROM (SELECT 1 FROM ins LIMIT 1) AS x`,
        params,
        ...named,
      };
    },

    /**
     * Table-less enqueue (sql/postgres/000010_tableless.sql): one logical decoding message per
     * message, emitted in order in the caller's transaction, after checking that the relay's slot
     * exists (a message written with no slot to read it would be lost at commit).
     */
    emit(messages: readonly EncodedMessage[], prefix: string, slot: string, prepare = true): SqlStatement {
      return {
        sql: `SELECT ${s}.emit_messages($1::text, $2::text, $3::text[]) AS n`,
        params: [prefix, slot, messages.map(encodeLogMessage)],
        // One text whatever the number of messages: prepared once per connection.
        ...(prepare ? { name: `mailroom_emit1_${schema}` } : {}),
      };
    },

    /** Records how far a log reader had read (never lowers it); see `OutboxStore.markLogRead`. */
    markLogRead: `INSERT INTO ${s}.log_mark (slot, read_lsn) VALUES ($1::text, $2::pg_lsn)
ON CONFLICT (slot) DO UPDATE SET read_lsn = greatest(${s}.log_mark.read_lsn, excluded.read_lsn), updated_at = now()`,

    logReadMark: `SELECT read_lsn::text AS lsn FROM ${s}.log_mark WHERE slot = $1::text`,

    /** Keys of these that have rows in the outbox (000010_tableless.sql). */
    keysInTable: `SELECT k AS key FROM ${s}.keys_in_table($1::text[], $2::bigint[]) AS k`,

    /**
     * Messages read from the log into the table: pending rows in the given order (their seq
     * order), and dead letters. Ids already there are skipped (a message read again after a
     * restart).
     */
    adopt: `WITH p AS (
  INSERT INTO ${t} (id, topic, key, type, payload, content_type, headers, created_at, available_at, attempts, last_error)
  SELECT m.id, m.topic, m.key, m.type, m.payload, m.content_type, m.headers::jsonb, m.created_at,
         now() + m.delay_ms * interval '1 millisecond', m.attempts, m.error
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::text[], $8::timestamptz[],
              $9::bigint[], $10::integer[], $11::text[])
       WITH ORDINALITY AS m(id, topic, key, type, payload, content_type, headers, created_at, delay_ms, attempts, error, n)
  ORDER BY m.n
  ON CONFLICT (id) DO NOTHING
  RETURNING 1
), d AS (
  INSERT INTO ${s}.dead_letter (id, topic, key, type, payload, content_type, headers, created_at, attempts, last_error)
  SELECT m.id, m.topic, m.key, m.type, m.payload, m.content_type, m.headers::jsonb, m.created_at, m.attempts, m.error
  FROM unnest($12::uuid[], $13::text[], $14::text[], $15::text[], $16::bytea[], $17::text[], $18::text[], $19::timestamptz[],
              $20::integer[], $21::text[]) AS m(id, topic, key, type, payload, content_type, headers, created_at, attempts, error)
  ON CONFLICT (id) DO NOTHING
  RETURNING 1
)
SELECT (SELECT count(*) FROM p) AS pending, (SELECT count(*) FROM d) AS dead`,

    // Outbox({ requireTransaction: true }) runs this before the enqueue: PostgreSQL refuses LOCK
    // outside a transaction block (25P01), and inside one it takes the lock the INSERT takes
    // anyway (ROW EXCLUSIVE until commit; INSERT privilege allows it), so it waits for nothing new.
    requireTransaction: `LOCK TABLE ONLY ${t} IN ROW EXCLUSIVE MODE`,

    // Oldest first, a key's messages in order; the rule and its two passes live in the
    // <schema>.claim() function (sql/postgres/000005_claim_runs.sql), so PGlite runs the same code.
    // The last row is a cursor row (seq NULL) when the claim walked keys: its key is where the
    // next claim's walk starts.
    claim: `SELECT seq::text AS seq, id::text AS id, topic, key, type, payload, content_type, headers, created_at, attempts
FROM ${s}.claim($1::integer, $2::text, $3::uuid, $4::bigint, $5::integer, $6::text)`,

    /** Leases the named rows a claim could take now (sql/postgres/000009_claim_ids.sql). */
    claimIds: `SELECT seq::text AS seq, id::text AS id, topic, key, type, payload, content_type, headers, created_at, attempts
FROM ${s}.claim_ids($1::uuid[], $2::bigint[], $3::text, $4::uuid, $5::bigint, $6::integer)`,

    /**
     * Names of the relay's per-batch statements, for drivers that prepare named statements once
     * per connection (parsing and planning are then paid once, not once per batch). Derived
     * from the schema, since two stores on different schemas may share a pool; shorter than the
     * prepared enqueue's name, so the schema-name length check covers them.
     */
    names: {
      extendLease: `mailroom_lease1_${schema}`,
      deleteDelivered: `mailroom_del1_${schema}`,
      archiveDelivered: `mailroom_arch1_${schema}`,
    },

    extendLease: `UPDATE ${t} SET lease_until = now() + $2::bigint * interval '1 millisecond' WHERE lease_token = $1::uuid`,

    // Plain messages only: one that asked for an acknowledgement or a callback (`delivery`) is
    // left for settleTracked, which the store runs when fewer rows went than were delivered.
    deleteDelivered: `DELETE FROM ${t} WHERE seq = ANY($1::bigint[]) AND delivery IS NULL`,

    // The row count is the rows deleted (the CTE's), whatever the INSERT found already archived.
    archiveDelivered: `WITH d AS (DELETE FROM ${t} WHERE seq = ANY($1::bigint[]) AND delivery IS NULL RETURNING *),
a AS (
  INSERT INTO ${s}.archive (id, topic, key, type, payload, content_type, headers, created_at, attempts)
  SELECT id, topic, key, type, payload, content_type, headers, created_at, attempts FROM d
  ON CONFLICT (id) DO NOTHING
)
SELECT 1 FROM d`,

    /** Delivered messages with `delivery`: into `ack` and the callbacks (<schema>.settle_tracked). */
    settleTracked: `SELECT ${s}.settle_tracked($1::bigint[], $2::boolean) AS n`,

    // The transport was unavailable: the claim's attempt is given back and the row is due now.
    release: `UPDATE ${t} o
SET attempts = greatest(o.attempts - 1, 0), last_error = r.error,
    lease_owner = NULL, lease_token = NULL, lease_until = NULL
FROM unnest($2::bigint[], $3::text[]) AS r(seq, error)
WHERE o.seq = r.seq AND o.lease_token = $1::uuid`,

    retry: `UPDATE ${t} o
SET available_at = now() + r.delay_ms * interval '1 millisecond', last_error = r.error,
    lease_owner = NULL, lease_token = NULL, lease_until = NULL
FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS r(seq, delay_ms, error)
WHERE o.seq = r.seq AND o.lease_token = $1::uuid`,

    deadLetter: `WITH d AS (
  DELETE FROM ${t} o USING unnest($2::bigint[], $3::text[]) AS r(seq, error)
  WHERE o.seq = r.seq AND o.lease_token = $1::uuid
  RETURNING o.*, r.error AS dead_error
), cb AS (
  INSERT INTO ${s}.callback (message_id, topic, event, url, detail)
  SELECT id, topic, 'dead', delivery->'callback'->>'url', jsonb_build_object('error', dead_error)
  FROM d WHERE d.delivery ? 'callback'
)
INSERT INTO ${s}.dead_letter (id, topic, key, type, payload, content_type, headers, created_at, attempts, last_error, delivery)
SELECT id, topic, key, type, payload, content_type, headers, created_at, attempts, dead_error, delivery FROM d
ON CONFLICT (id) DO UPDATE SET dead_at = now(), attempts = excluded.attempts, last_error = excluded.last_error,
  delivery = excluded.delivery`,

    // `available_at > created_at` matches the partial index outbox_delayed (a row due in the
    // future was necessarily delayed or retried).
    nextDue: `SELECT extract(epoch FROM (min(available_at) - now())) * 1000 AS ms FROM ${t}
WHERE available_at > now() AND available_at > created_at`,

    pruneArchive: `DELETE FROM ${s}.archive WHERE sent_at < now() - $1::bigint * interval '1 millisecond'`,

    schemaVersion: `SELECT max(version) AS version FROM ${s}.migrations`,

    /** The channel `settle_tracked`, `apply_ack` and `ack_sweep` notify with a message id. */
    stateChannel: `${schema}_state`,

    // The inbox: one row back when the record is new. A second transaction recording the same
    // pair waits on the primary key for the first one's outcome, then inserts (it rolled back)
    // or finds the row (it committed).
    inboxRecord: `INSERT INTO ${s}.inbox (consumer, id) VALUES ($1, $2::uuid) ON CONFLICT DO NOTHING RETURNING 1 AS new`,

    pruneInbox: `DELETE FROM ${s}.inbox WHERE (consumer, id) IN (
  SELECT i.consumer, i.id FROM ${s}.inbox i
  WHERE i.consumer = $1 AND i.processed_at < now() - $2::bigint * interval '1 millisecond'
  ORDER BY i.processed_at LIMIT $3)`,

    /** Where each id is: outbox, acknowledgement table, dead letters (in that order). */
    status: `SELECT q.id::text AS id,
  CASE
    WHEN o.id IS NOT NULL THEN CASE WHEN o.lease_until > now() THEN 'in-flight' ELSE 'pending' END
    WHEN a.state IN ('acknowledged', 'expired') THEN a.state
    WHEN d.id IS NOT NULL THEN 'dead'
    WHEN a.state = 'awaiting' THEN 'awaiting-ack'
    ELSE 'unknown'
  END AS state,
  coalesce(o.topic, a.topic, d.topic) AS topic, coalesce(o.attempts, d.attempts) AS attempts,
  a.resends, a.acked_at, a.consumer, a.result, a.expired_at, a.deadline,
  coalesce(o.last_error, d.last_error) AS last_error
FROM unnest($1::uuid[]) WITH ORDINALITY AS q(id, n)
LEFT JOIN ${t} o ON o.id = q.id
LEFT JOIN ${s}.ack a ON a.id = q.id
LEFT JOIN ${s}.dead_letter d ON d.id = q.id
ORDER BY q.n`,

    applyAck: `SELECT ${s}.apply_ack($1::uuid, $2::text, $3::text::jsonb) AS outcome`,

    ackSweep: `SELECT resent, expired FROM ${s}.ack_sweep($1::integer)`,

    nextAckDue: `SELECT extract(epoch FROM (min(deadline) - now())) * 1000 AS ms FROM ${s}.ack WHERE state = 'awaiting'`,

    listAcks(withState: boolean): string {
      return `SELECT id::text AS id, state, topic, key, resends, (delivery->'ack'->>'maxResends')::integer AS max_resends,
  deadline, sent_at, acked_at, consumer, result, expired_at
FROM ${s}.ack ${withState ? 'WHERE state = $2' : ''}
ORDER BY updated_at DESC, id LIMIT $1`;
    },

    ackCounts: `SELECT
  (SELECT count(*) FROM ${s}.ack WHERE state IN ('awaiting', 'resending'))::bigint AS awaiting,
  (SELECT count(*) FROM ${s}.ack WHERE state = 'acknowledged')::bigint AS acknowledged,
  (SELECT count(*) FROM ${s}.ack WHERE state = 'expired')::bigint AS expired,
  (SELECT count(*) FROM ${s}.callback WHERE dead_at IS NULL)::bigint AS callbacks_pending,
  (SELECT count(*) FROM ${s}.callback WHERE dead_at IS NOT NULL)::bigint AS callbacks_dead`,

    pruneAcks: `DELETE FROM ${s}.ack WHERE id IN (
  SELECT a.id FROM ${s}.ack a
  WHERE a.state IN ('acknowledged', 'expired') AND a.updated_at < now() - $1::bigint * interval '1 millisecond'
  ORDER BY a.updated_at LIMIT $2)`,

    claimCallbacks: `WITH c AS (
  SELECT k.id FROM ${s}.callback k
  WHERE k.dead_at IS NULL AND k.available_at <= now() AND (k.lease_until IS NULL OR k.lease_until <= now())
  ORDER BY k.available_at LIMIT $1
  FOR UPDATE SKIP LOCKED
)
UPDATE ${s}.callback k
SET lease_owner = $2, lease_token = $3::uuid, lease_until = now() + $4::bigint * interval '1 millisecond',
    attempts = k.attempts + 1
FROM c WHERE k.id = c.id
RETURNING k.id::text AS id, k.message_id::text AS message_id, k.topic, k.event, k.url, k.attempts, k.detail, k.occurred_at`,

    callbacksDelivered: `DELETE FROM ${s}.callback WHERE id = ANY($1::uuid[])`,

    callbacksRetry: `UPDATE ${s}.callback k
SET available_at = now() + r.delay_ms * interval '1 millisecond', last_error = r.error,
    lease_owner = NULL, lease_token = NULL, lease_until = NULL
FROM unnest($2::uuid[], $3::bigint[], $4::text[]) AS r(id, delay_ms, error)
WHERE k.id = r.id AND k.lease_token = $1::uuid`,

    callbacksDead: `UPDATE ${s}.callback k
SET dead_at = now(), last_error = r.error, lease_owner = NULL, lease_token = NULL, lease_until = NULL
FROM unnest($2::uuid[], $3::text[]) AS r(id, error)
WHERE k.id = r.id AND k.lease_token = $1::uuid`,

    nextCallbackDue: `SELECT extract(epoch FROM (min(greatest(available_at, coalesce(lease_until, available_at))) - now())) * 1000 AS ms
FROM ${s}.callback WHERE dead_at IS NULL`,

    // What PostgreSQL already knows about the size of both tables, read from the catalog in
    // microseconds whatever the size: the live-row count the statistics system keeps up to date
    // on every commit (reset by a crash), and the planner's density (reltuples per page, from
    // the last VACUUM or ANALYZE) with the current number of pages.
    statsEstimates: `SELECT c.relname::text AS table, pg_stat_get_live_tuples(c.oid)::float8 AS live,
  c.reltuples::float8 AS reltuples, c.relpages::float8 AS relpages,
  (pg_relation_size(c.oid) / current_setting('block_size')::bigint)::float8 AS pages
FROM pg_catalog.pg_class c
WHERE c.oid IN (${quoteLiteral(`${s}.outbox`)}::regclass, ${quoteLiteral(`${s}.dead_letter`)}::regclass)`,

    /**
     * Counts for `stats()`, each one stopped at `$1` rows so none costs more than that however
     * big the table, and each through an index: in flight through outbox_lease_token, scheduled
     * through outbox_delayed, the backlog and the dead letters through their primary keys (an
     * index walk also skips the dead rows of a drained queue table that a plain scan would
     * read). The oldest message is the head of the primary key. A table the estimates already
     * show to be big is not counted at all (`null`).
     */
    statsCounts(countBacklog: boolean, countDeadLetters: boolean): string {
      return `SELECT
  ${countBacklog ? `(SELECT count(*) FROM (SELECT 1 FROM ${t} b ORDER BY b.seq LIMIT $1) x)` : 'NULL'}::bigint AS backlog,
  (SELECT count(*) FROM (SELECT 1 FROM ${t} l WHERE l.lease_token IS NOT NULL AND l.lease_until > now() LIMIT $1) x)::bigint AS in_flight,
  (SELECT count(*) FROM (SELECT 1 FROM ${t} d WHERE d.available_at > now() AND d.available_at > d.created_at LIMIT $1) x)::bigint AS scheduled,
  (SELECT extract(epoch FROM now() - h.created_at) * 1000 FROM ${t} h ORDER BY h.seq LIMIT 1) AS oldest_age_ms,
  ${countDeadLetters ? `(SELECT count(*) FROM (SELECT 1 FROM ${s}.dead_letter dl ORDER BY dl.id LIMIT $1) x)` : 'NULL'}::bigint AS dead_letters`;
    },

    /**
     * Messages per topic in the outbox ('o') and the dead letters ('d'). A big table is read
     * through a block sample (`TABLESAMPLE SYSTEM`, the percentage as a parameter) whose counts
     * the store scales up; a small one is counted exactly.
     */
    statsTopics(sampleOutbox: boolean, sampleDeadLetters: boolean): string {
      let n = 0;
      const sample = (on: boolean) => (on ? `TABLESAMPLE SYSTEM ($${++n})` : '');
      const o = sample(sampleOutbox);
      const d = sample(sampleDeadLetters);
      return `SELECT 'o' AS side, topic, count(*)::bigint AS n FROM ${t} ${o} GROUP BY topic
UNION ALL
SELECT 'd', topic, count(*)::bigint FROM ${s}.dead_letter ${d} GROUP BY topic`;
    },

    /**
     * Relay presence (schema version 13). The upsert heartbeats on the database clock and, in
     * the same statement, deletes rows of relays dead for over a day (killed without a stop).
     * Parameters: owner, host, pid, version, wakeup, transport, state, heartbeat interval (ms).
     */
    recordRelay: `WITH pruned AS (
  DELETE FROM ${s}.relay p WHERE p.heartbeat_at < now() - interval '1 day' AND p.owner <> $1
)
INSERT INTO ${s}.relay AS r (owner, host, pid, version, wakeup, transport, state, heartbeat_interval_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (owner) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version,
  wakeup = EXCLUDED.wakeup, transport = EXCLUDED.transport, state = EXCLUDED.state,
  heartbeat_interval_ms = EXCLUDED.heartbeat_interval_ms, heartbeat_at = now()`,
    removeRelay: `DELETE FROM ${s}.relay WHERE owner = $1`,
    /**
     * Every presence row with its liveness and the unexpired leases of its owner. The leases are
     * read through outbox_lease_token (only leased rows have a token), at most $1 of them, so
     * the statement costs the number of messages in flight, never the size of the backlog.
     */
    listRelays: `SELECT r.owner, r.host, r.pid, r.version, r.wakeup, r.transport, r.state,
  r.heartbeat_interval_ms, r.started_at, r.heartbeat_at,
  extract(epoch FROM now() - r.heartbeat_at) * 1000 AS heartbeat_age_ms,
  r.heartbeat_at > now() - 3 * r.heartbeat_interval_ms * interval '1 millisecond' AS alive,
  coalesce(l.n, 0)::bigint AS in_flight, l.oldest AS oldest_lease_until
FROM ${s}.relay r
LEFT JOIN (
  SELECT x.lease_owner, count(*) AS n, min(x.lease_until) AS oldest FROM (
    SELECT o.lease_owner, o.lease_until FROM ${t} o
    WHERE o.lease_token IS NOT NULL AND o.lease_until > now() LIMIT $1
  ) x GROUP BY x.lease_owner
) l ON l.lease_owner = r.owner
ORDER BY r.started_at, r.owner`,

    /** WHERE clause and params for dead-letter filters; parameters start at $1. */
    deadLetterWhere(filter: {
      ids?: string[];
      topic?: string;
      key?: string;
      deadBefore?: Date;
      deadAfter?: Date;
    }): { where: string; conds: string[]; params: unknown[] } {
      const conds: string[] = [];
      const params: unknown[] = [];
      if (filter.ids !== undefined) {
        params.push(filter.ids);
        conds.push(`id = ANY($${params.length}::uuid[])`);
      }
      if (filter.topic !== undefined) {
        params.push(filter.topic);
        conds.push(`topic = $${params.length}`);
      }
      if (filter.key !== undefined) {
        params.push(filter.key);
        conds.push(`key = $${params.length}`);
      }
      if (filter.deadBefore !== undefined) {
        params.push(filter.deadBefore);
        conds.push(`dead_at < $${params.length}`);
      }
      if (filter.deadAfter !== undefined) {
        params.push(filter.deadAfter);
        conds.push(`dead_at >= $${params.length}`);
      }
      return { where: conds.length ? `WHERE ${conds.join(' AND ')}` : '', conds, params };
    },

    listDeadLetters(where: string, limitParam: string): string {
      return `SELECT id::text AS id, id::text AS seq, topic, key, type, payload, content_type, headers, created_at,
  attempts, dead_at, last_error FROM ${s}.dead_letter ${where} ORDER BY dead_at, id ${limitParam}`;
    },

    /**
     * The database clock as exact text (microseconds, UTC): the upper bound of a replay or purge
     * run, so a run over "all" dead letters ends even while others keep dead-lettering. Text, not
     * a Date, because a Date would cut the microseconds and move the bound.
     */
    clockText: `SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,

    countDeadLetters(where: string): string {
      return `SELECT count(*)::bigint AS n, now() AS as_of FROM ${s}.dead_letter ${where}`;
    },

    /**
     * One batch of a replay run. `where` selects the dead letters (filters, the run's bound and
     * the keyset cursor); `limitParam` caps the batch. Only ids and cursors come back: payloads
     * move from table to table inside the statement and never travel to the client.
     *
     * `pick` is every row this batch looked at, in order; the cursor moves past all of them, so
     * a row another run deleted first (SKIP LOCKED, or gone by the time DELETE runs) costs
     * nothing and ends nothing. Replayed messages keep their id (consumers dedupe on it) and go
     * to the back of the outbox; a dead letter whose id is in the outbox again (re-enqueued by
     * hand) is not picked and stays where it is.
     */
    replayDeadLetterBatch(where: string, limitParam: string): string {
      const and = where ? `${where} AND` : 'WHERE';
      return `WITH pick AS (
  SELECT dl.id, dl.dead_at FROM ${s}.dead_letter dl
  ${and} NOT EXISTS (SELECT 1 FROM ${t} x WHERE x.id = dl.id)
  ORDER BY dl.dead_at, dl.id ${limitParam}
  FOR UPDATE SKIP LOCKED
), d AS (
  DELETE FROM ${s}.dead_letter t USING pick WHERE t.id = pick.id
  RETURNING t.*
), ins AS (
  INSERT INTO ${t} (id, topic, key, type, payload, content_type, headers, created_at, delivery)
  SELECT id, topic, key, type, payload, content_type, headers, created_at, delivery FROM d ORDER BY dead_at, id
  RETURNING id
)
SELECT pick.id::text AS id,
  to_char(pick.dead_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS cursor_at,
  ins.id IS NOT NULL AS done
FROM pick LEFT JOIN ins ON ins.id = pick.id ORDER BY pick.dead_at, pick.id`;
    },

    /** One batch of a purge run; as {@link replayDeadLetterBatch}, deleting instead of moving. */
    purgeDeadLetterBatch(where: string, limitParam: string): string {
      return `WITH pick AS (
  SELECT dl.id, dl.dead_at FROM ${s}.dead_letter dl ${where}
  ORDER BY dl.dead_at, dl.id ${limitParam}
  FOR UPDATE SKIP LOCKED
), d AS (
  DELETE FROM ${s}.dead_letter t USING pick WHERE t.id = pick.id RETURNING t.id
), a AS (
  -- A resend that died and is purged will never be delivered: its record would wait for ever.
  DELETE FROM ${s}.ack k USING d WHERE k.id = d.id AND k.state = 'resending'
)
SELECT pick.id::text AS id,
  to_char(pick.dead_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS cursor_at,
  d.id IS NOT NULL AS done
FROM pick LEFT JOIN d ON d.id = pick.id ORDER BY pick.dead_at, pick.id`;
    },
  };
}

export type PostgresSql = ReturnType<typeof postgresSql>;
