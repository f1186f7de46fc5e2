/**
 * Every statement of the SQLite store, as a value, in one place. Placeholders are `?` in order
 * (better-sqlite3 binds them positionally). Lists of values travel as one JSON text parameter read
 * with `json_each`, so no statement grows with a batch and none nears SQLite's parameter limit.
 * Times are integer milliseconds since 1970; `now` is read once per transaction ({@link NOW}) and
 * passed in, so every row a transaction touches agrees on it.
 *
 * @module
 */
import type { DeadLetterFilter } from '../../core/ports.js';
import type { EncodedMessage } from '../../core/types.js';

/**
 * SQLite's clock in milliseconds. `julianday('now')` has millisecond precision on every SQLite
 * version (`unixepoch('subsec')` needs 3.42); within one statement it returns the same instant.
 */
export const NOW = "CAST(round((julianday('now') - 2440587.5) * 86400000) AS INTEGER)";

/** The parameters one enqueued row binds. */
export const PARAMS_PER_ROW = 8;

/**
 * SQLite's limit of parameters per statement (`SQLITE_MAX_VARIABLE_NUMBER`): 32766 since 3.32,
 * which better-sqlite3 12 and every SQLite with the JSON functions this store needs have.
 */
export const SQLITE_MAX_PARAMS = 32_766;

/** Most rows one INSERT carries: under the parameter limit (4,095 rows of 8 parameters). */
export const MAX_ROWS_PER_INSERT = Math.floor(SQLITE_MAX_PARAMS / PARAMS_PER_ROW);

/** Oldest SQLite the store runs on: STRICT tables (3.37), built-in JSON and `->>` (3.38), `unhex` (3.41). */
export const MIN_SQLITE_VERSION = '3.41.0';

/**
 * Up to this many payload bytes in one enqueue, the rows travel as one JSON parameter
 * ({@link sqliteSql.enqueueJson}); above it, as a multi-row VALUES statement with the payloads as
 * blob parameters ({@link sqliteSql.enqueue}), so no JSON text nears SQLite's string limit (1e9
 * bytes) or V8's.
 */
export const JSON_ENQUEUE_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024;

/** The columns a message is read back with (`toMessage` in the store). */
const MESSAGE_COLUMNS = 'seq, id, topic, key, type, payload, content_type, headers, created_at, attempts';

const ENQUEUE_ROW = `(?, ?, ?, ?, ?, ?, ?, ${NOW}, ${NOW} + ?)`;

/** The statements, fixed text. */
export const sqliteSql = {
  now: `SELECT ${NOW} AS now`,
  sqliteVersion: 'SELECT sqlite_version() AS version',

  migrationsTableExists: "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'mailroom_migrations'",
  createMigrationsTable: `CREATE TABLE mailroom_migrations (
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  applied_at INTEGER NOT NULL DEFAULT (${NOW})
) STRICT`,
  appliedMigrations: 'SELECT version FROM mailroom_migrations ORDER BY version',
  recordMigration: 'INSERT INTO mailroom_migrations (version, name) VALUES (?, ?)',
  schemaVersion: 'SELECT coalesce(max(version), 0) AS version FROM mailroom_migrations',

  /**
   * The claim's first step: the oldest due, unleased rows that are the head of their key (no
   * older row of the key is left in the outbox: delivered rows are deleted, so "no older row"
   * means every older message of the key was delivered or dead-lettered), and keyless rows.
   * A key whose head is leased, waiting for a retry or delayed has no claimable row at all, so
   * per-key order holds across relays and retries. The probe is one seek in (key, seq).
   * Parameters: now, now, limit.
   */
  claimHeads: `SELECT o.seq AS seq, o.key AS key FROM mailroom_outbox o
WHERE o.available_at <= ? AND (o.lease_until IS NULL OR o.lease_until <= ?)
  AND (o.key IS NULL OR NOT EXISTS (
    SELECT 1 FROM mailroom_outbox p WHERE p.key = o.key AND p.seq < o.seq))
ORDER BY o.seq
LIMIT ?`,
  /**
   * A head's run: the key's next rows in order (parameters: key, head seq, most rows). The store
   * cuts it at the first row that is not due or is leased, so a run has no gaps.
   */
  claimRun: `SELECT seq, available_at, lease_until FROM mailroom_outbox
WHERE key = ? AND seq > ? ORDER BY seq LIMIT ?`,
  /** Leases the rows (parameters: token, owner, lease end, seqs as a JSON array); counts the attempt. */
  lease: `UPDATE mailroom_outbox
SET lease_token = ?, lease_owner = ?, lease_until = ?, attempts = attempts + 1
WHERE seq IN (SELECT value FROM json_each(?))
RETURNING ${MESSAGE_COLUMNS}`,
  /** Parameters: lease end, token. Only rows this claim still holds. */
  extendLease: 'UPDATE mailroom_outbox SET lease_until = ? WHERE lease_token = ?',

  /** Delivered: gone, whoever holds the lease now (delivery happened). Parameter: seqs (JSON). */
  deleteDelivered: 'DELETE FROM mailroom_outbox WHERE seq IN (SELECT value FROM json_each(?))',
  /** Parameters: sent at, seqs (JSON). Followed by {@link deleteDelivered}. */
  archiveDelivered: `INSERT OR IGNORE INTO mailroom_archive
  (seq, id, topic, key, type, payload, content_type, headers, created_at, attempts, sent_at)
SELECT seq, id, topic, key, type, payload, content_type, headers, created_at, attempts, ?
FROM mailroom_outbox WHERE seq IN (SELECT value FROM json_each(?))`,
  /**
   * Not published (transport unavailable): lease dropped, the claim's attempt given back, due now.
   * Parameters: now, error, seq, token.
   */
  release: `UPDATE mailroom_outbox
SET lease_token = NULL, lease_owner = NULL, lease_until = NULL,
    attempts = max(attempts - 1, 0), available_at = ?, last_error = ?
WHERE seq = ? AND lease_token = ?`,
  /** Parameters: due at, error, seq, token. */
  retry: `UPDATE mailroom_outbox
SET lease_token = NULL, lease_owner = NULL, lease_until = NULL, available_at = ?, last_error = ?
WHERE seq = ? AND lease_token = ?`,
  /** Parameters: dead at, error, seq, token. Followed by {@link deleteLeased}. */
  deadLetter: `INSERT OR REPLACE INTO mailroom_dead_letters
  (id, seq, topic, key, type, payload, content_type, headers, created_at, attempts, dead_at, last_error)
SELECT id, seq, topic, key, type, payload, content_type, headers, created_at, attempts, ?, ?
FROM mailroom_outbox WHERE seq = ? AND lease_token = ?`,
  /** Parameters: seq, token. */
  deleteLeased: 'DELETE FROM mailroom_outbox WHERE seq = ? AND lease_token = ?',

  /** When the next delayed, retrying or leased row becomes claimable. Parameters: now × 3. */
  nextDue: `SELECT min(CASE WHEN lease_until > ? THEN max(lease_until, available_at) ELSE available_at END) AS at
FROM mailroom_outbox WHERE available_at > ? OR lease_until > ?`,

  /** Parameters: now × 3. */
  stats: `SELECT count(*) AS backlog,
  coalesce(sum(lease_until > ?), 0) AS in_flight,
  coalesce(sum(available_at > ? AND (lease_until IS NULL OR lease_until <= ?)), 0) AS scheduled,
  min(created_at) AS oldest
FROM mailroom_outbox`,
  deadLetterCount: 'SELECT count(*) AS n FROM mailroom_dead_letters',
  /** Busiest topics first. Parameter: most topics. */
  topics: `SELECT topic, sum(b) AS backlog, sum(d) AS dead FROM (
  SELECT topic, count(*) AS b, 0 AS d FROM mailroom_outbox GROUP BY topic
  UNION ALL
  SELECT topic, 0, count(*) FROM mailroom_dead_letters GROUP BY topic
) GROUP BY topic ORDER BY sum(b) + sum(d) DESC, topic LIMIT ?`,

  /** Back into the outbox, due now, attempts reset, id kept. Parameters: now, id. */
  replayOne: `INSERT INTO mailroom_outbox
  (id, topic, key, type, payload, content_type, headers, created_at, available_at, attempts)
SELECT id, topic, key, type, payload, content_type, headers, created_at, ?, 0
FROM mailroom_dead_letters d WHERE d.id = ? AND NOT EXISTS (SELECT 1 FROM mailroom_outbox o WHERE o.id = d.id)`,
  deleteDeadLetter: 'DELETE FROM mailroom_dead_letters WHERE id = ?',
  /** Parameters: older than (ms since 1970). */
  pruneArchive: 'DELETE FROM mailroom_archive WHERE sent_at < ?',

  /**
   * Records that a consumer processed a message: one row back when new, none for a duplicate.
   * Parameters: consumer, id.
   */
  inboxRecord: `INSERT INTO mailroom_inbox (consumer, id, processed_at) VALUES (?, ?, ${NOW})
ON CONFLICT (consumer, id) DO NOTHING RETURNING id`,
  /** Parameters: consumer, older than (ms since 1970), most rows. */
  pruneInbox: `DELETE FROM mailroom_inbox WHERE rowid IN (
  SELECT rowid FROM mailroom_inbox WHERE consumer = ? AND processed_at < ? ORDER BY processed_at LIMIT ?)`,

  relayLockRead:
    "SELECT owner, token, acquired_at, lease_until FROM mailroom_relay_lock WHERE name = 'relay'",
  /** Parameters: owner, token, acquired at, lease end. */
  relayLockTake: `INSERT INTO mailroom_relay_lock (name, owner, token, acquired_at, lease_until)
VALUES ('relay', ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = excluded.token,
  acquired_at = excluded.acquired_at, lease_until = excluded.lease_until`,
  /** Parameters: lease end, token. */
  relayLockRenew: "UPDATE mailroom_relay_lock SET lease_until = ? WHERE name = 'relay' AND token = ?",
  /** Parameter: token. */
  relayLockRelease: "DELETE FROM mailroom_relay_lock WHERE name = 'relay' AND token = ?",

  /**
   * The usual enqueue: one statement of constant text for any number of messages, the rows as one
   * JSON array parameter (payloads in hex), inserted in array order (`ORDER BY j.key`, the array
   * index), so seq follows the order given. Constant text is prepared once per connection; SQLite
   * parses a multi-row VALUES statement in time that grows faster than its rows (measured with
   * better-sqlite3 12: 1,000 rows 170 ms, 4,095 rows 1.5 s to prepare, against 16 ms and 78 ms to
   * run this one), and each distinct row count is another statement to prepare.
   */
  enqueueJson: `INSERT INTO mailroom_outbox
  (id, topic, key, type, payload, content_type, headers, created_at, available_at)
SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, unhex(j.value ->> 4),
  j.value ->> 5, j.value ->> 6, n.now, n.now + (j.value ->> 7)
FROM json_each(?) j, (SELECT ${NOW} AS now) n
ORDER BY j.key`,

  /** The one parameter of {@link enqueueJson}. */
  enqueueJsonParam(messages: readonly EncodedMessage[]): string {
    return JSON.stringify(
      messages.map((m) => [
        m.id,
        m.topic,
        m.key,
        m.type,
        m.payload.toString('hex'),
        m.contentType,
        JSON.stringify(m.headers),
        m.delayMs,
      ]),
    );
  },

  /**
   * One multi-row INSERT for `rows` messages (at most {@link MAX_ROWS_PER_INSERT}, under SQLite's
   * parameter limit), for batches whose payloads are too big for {@link enqueueJson}.
   */
  enqueue(rows: number): string {
    return (
      'INSERT INTO mailroom_outbox (id, topic, key, type, payload, content_type, headers, created_at, available_at) VALUES ' +
      Array.from({ length: rows }, () => ENQUEUE_ROW).join(', ')
    );
  },

  /** The parameters of {@link enqueue}, row after row. */
  enqueueParams(messages: readonly EncodedMessage[]): unknown[] {
    const params: unknown[] = [];
    for (const m of messages) {
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
    }
    return params;
  },

  /** Conditions and parameters of a dead-letter filter (without its limit). */
  deadLetterWhere(filter: Omit<DeadLetterFilter, 'limit'>): { conds: string[]; params: unknown[] } {
    const conds: string[] = [];
    const params: unknown[] = [];
    if (filter.ids !== undefined) {
      conds.push('id IN (SELECT value FROM json_each(?))');
      params.push(JSON.stringify(filter.ids));
    }
    if (filter.topic !== undefined) {
      conds.push('topic = ?');
      params.push(filter.topic);
    }
    if (filter.key !== undefined) {
      conds.push('key = ?');
      params.push(filter.key);
    }
    if (filter.deadBefore !== undefined) {
      conds.push('dead_at < ?');
      params.push(filter.deadBefore.getTime());
    }
    if (filter.deadAfter !== undefined) {
      conds.push('dead_at >= ?');
      params.push(filter.deadAfter.getTime());
    }
    return { conds, params };
  },

  listDeadLetters(where: string, limit: boolean): string {
    return `SELECT ${MESSAGE_COLUMNS}, dead_at, last_error FROM mailroom_dead_letters ${where}
ORDER BY dead_at, id${limit ? ' LIMIT ?' : ''}`;
  },

  countDeadLetters(where: string): string {
    return `SELECT count(*) AS n FROM mailroom_dead_letters ${where}`;
  },

  /** One batch of a replay or purge run: ids in (dead_at, id) order after the cursor. */
  deadLetterBatch(where: string): string {
    return `SELECT id, dead_at FROM mailroom_dead_letters ${where} ORDER BY dead_at, id LIMIT ?`;
  },
} as const;

/** `WHERE a AND b`, or nothing. */
export function whereClause(conds: readonly string[]): string {
  return conds.length ? `WHERE ${conds.join(' AND ')}` : '';
}
