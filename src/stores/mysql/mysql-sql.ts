import type { SqlStatement } from '../../core/ports.js';
import type { EncodedMessage } from '../../core/types.js';
import { ConfigError } from '../../core/errors/config-error.js';
import { validateIdentifier } from '../sql-identifier.js';

/** Most rows in one INSERT: 9 parameters a row stays well under MySQL's 65535 placeholders. */
export const MAX_ROWS_PER_INSERT = 4000;

/** The objects of one Mailroom schema in MySQL, each `prefix` + this name. */
export const OBJECT_NAMES = [
  'outbox',
  'dead_letter',
  'archive',
  'inbox',
  'migrations',
  'enqueue',
  'inbox_record',
  'ack',
  'callback',
] as const;
export type ObjectName = (typeof OBJECT_NAMES)[number];

/** MySQL keeps identifiers of at most 64 characters; the longest suffix is `inbox_record` (12). */
export const MAX_TABLE_PREFIX_LENGTH = 40;
const PREFIX_RE = /^[A-Za-z_][A-Za-z0-9_]{0,39}$/;

/**
 * Validates the prefix of Mailroom's tables and procedures (`mailroom_` makes `mailroom_outbox`,
 * `mailroom_enqueue`…): a letter or `_`, then letters, digits or `_`, at most 40, so that every
 * derived name stays within MySQL's 64 characters and needs no quoting to be read.
 */
export function validateTablePrefix(value: unknown, key = 'tablePrefix'): string {
  if (typeof value !== 'string' || !PREFIX_RE.test(value)) {
    throw new ConfigError(
      key,
      `${key} must be a letter or _ then letters, digits or _, at most ${MAX_TABLE_PREFIX_LENGTH} characters ` +
        `(Mailroom appends names such as inbox_record, and MySQL cuts names at 64), got ${JSON.stringify(value)}`,
      { value },
    );
  }
  return value;
}

/** Backtick-quotes an identifier that passed validation. */
export function quoteMySqlIdent(name: string): string {
  return `\`${name.replace(/`/g, '``')}\``;
}

/** The quoted, prefixed and (with a database) qualified name of each object. */
export function mysqlNames(database: string | undefined, prefix: string): Record<ObjectName, string> {
  validateTablePrefix(prefix);
  if (database !== undefined) validateIdentifier('database', database);
  const db = database === undefined ? '' : `${quoteMySqlIdent(database)}.`;
  const names = {} as Record<ObjectName, string>;
  for (const n of OBJECT_NAMES) names[n] = `${db}${quoteMySqlIdent(prefix + n)}`;
  return names;
}

/** `?, ?, ?` for n values. */
export function marks(n: number): string {
  return Array.from({ length: n }, () => '?').join(', ');
}

/** The database clock, in UTC: every time Mailroom writes comes from here. */
const NOW = 'UTC_TIMESTAMP(6)';

/** A DATETIME(6) column (UTC) as epoch microseconds, whatever the session's time zone. */
export function epochMicros(column: string): string {
  return `TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', ${column})`;
}

/** Due and not leased (or its lease ran out), for a row aliased `a`. */
function due(a: string): string {
  return `${a}.available_at <= ${NOW} AND (${a}.lease_until IS NULL OR ${a}.lease_until <= ${NOW})`;
}

/** A Date as the DATETIME(6) text of its UTC time, for comparisons with stored times. */
export function utcDatetime(date: Date): string {
  return date.toISOString().replace('T', ' ').replace('Z', '');
}

/**
 * Every statement the MySQL store runs, as values, in one place. Names are validated and quoted
 * before they get here; values always travel as parameters (`?`).
 */
export function mysqlSql(database: string | undefined, prefix: string) {
  const n = mysqlNames(database, prefix);
  const t = n.outbox;
  const columns = `CAST(o.seq AS CHAR) AS seq, o.id, o.topic, o.msg_key, o.type, o.payload, o.content_type, o.headers,
  ${epochMicros('o.created_at')} AS created_us, o.attempts`;
  const dateText = (col: string) => `DATE_FORMAT(${col}, '%Y-%m-%d %H:%i:%s.%f')`;

  return {
    names: n,

    /**
     * The INSERT of `messages`: one statement, every value a parameter. The key goes in as
     * bytes (UTF-8), so the connection's character set cannot change it.
     */
    enqueue(messages: readonly EncodedMessage[]): SqlStatement {
      const params: unknown[] = [];
      const rows: string[] = [];
      // Messages with `ack` or `callback` carry a `delivery` column; plain ones leave it out, so
      // the statement of the common case stays the same.
      const tracked = messages.some((m) => m.delivery !== null);
      for (const m of messages) {
        params.push(
          m.id,
          m.topic,
          m.key === null ? null : Buffer.from(m.key, 'utf8'),
          m.type,
          m.payload,
          m.contentType,
          JSON.stringify(m.headers),
          m.delayMs * 1000,
        );
        if (tracked) params.push(m.delivery === null ? null : JSON.stringify(m.delivery));
        rows.push(`(?, ?, ?, ?, ?, ?, ?, ${NOW}, ${NOW} + INTERVAL ? MICROSECOND${tracked ? ', ?' : ''})`);
      }
      const sql =
        `INSERT INTO ${t} (id, topic, msg_key, type, payload, content_type, headers, created_at, available_at` +
        `${tracked ? ', delivery' : ''}) VALUES ${rows.join(', ')}`;
      // One message per transaction is the common case: the executor prepares that text once
      // per connection (mysql2 caches it under its text).
      return messages.length === 1 && !tracked
        ? { sql, params, name: `mailroom_enqueue1_${prefix}` }
        : { sql, params };
    },

    /**
     * Outbox({ requireTransaction: true }) on a handle whose status flags cannot be read: MariaDB
     * has @@in_transaction; MySQL 8 answers error 1193 (unknown variable).
     */
    inTransaction: 'SELECT @@in_transaction AS in_tx, @@autocommit AS autocommit',

    /** A statement whose OK packet carries the session's status flags, and that does nothing. */
    statusProbe: 'DO 0',

    /**
     * The claim's window (pass 1): the oldest `win` due, unleased rows. A row is a candidate when
     * it is keyless, or the first of its key in the window and no older row of its key is left
     * (the key's head). A key's later rows in the window are not heads (their predecessor is
     * right there) and cost no probe: CASE evaluates the subquery only for the first.
     * With runs, `more` says whether the key has a row after the head (one index probe).
     */
    claimWindow(runs: boolean): string {
      const more = runs
        ? `, (w.msg_key IS NOT NULL AND EXISTS (SELECT 1 FROM ${t} x WHERE x.msg_key = w.msg_key AND x.seq > w.seq)) AS more`
        : '';
      return `SELECT CAST(w.seq AS CHAR) AS seq, w.msg_key,
  CASE WHEN w.msg_key IS NULL THEN 1
       WHEN w.seq <> w.key_first THEN 0
       ELSE NOT EXISTS (SELECT 1 FROM ${t} e WHERE e.msg_key = w.msg_key AND e.seq < w.seq)
  END AS head${more}
FROM (
  SELECT d.seq, d.msg_key, MIN(d.seq) OVER (PARTITION BY d.msg_key) AS key_first
  FROM (SELECT o.seq, o.msg_key FROM ${t} o WHERE ${due('o')} ORDER BY o.seq LIMIT ?) d
) w
ORDER BY w.seq`;
    },

    /**
     * The claim's walk (pass 2): up to `?` distinct keys after a cursor, in key order, each with
     * its head row and whether that head is ready (due, unleased). `GROUP BY msg_key` with
     * `MIN(seq)` over the (msg_key, seq) index is a loose index scan on MySQL and MariaDB alike
     * ("Using index for group-by"): it jumps from key to key, two index reads per key, and stops
     * at the limit, so the walk is bounded whatever the number of keys. The store keeps the
     * cursor between claims so every key is reached.
     */
    claimWalk(fromStart: boolean): string {
      return `SELECT w.msg_key, CAST(h.seq AS CHAR) AS seq, (${due('h')}) AS ready
FROM (
  SELECT k.msg_key, MIN(k.seq) AS head FROM ${t} k
  WHERE ${fromStart ? 'k.msg_key IS NOT NULL' : 'k.msg_key > ?'}
  GROUP BY k.msg_key ORDER BY k.msg_key LIMIT ?
) w
JOIN ${t} h ON h.seq = w.head
ORDER BY w.msg_key`;
    },

    /** Due keyless rows, oldest first (past a window full of blocked keyed rows). */
    claimKeyless: `SELECT CAST(f.seq AS CHAR) AS seq FROM ${t} f
WHERE f.msg_key IS NULL AND ${due('f')} ORDER BY f.seq LIMIT ?`,

    /** The next rows of a key after its head, with whether each is ready: a run's candidates. */
    claimRun: `SELECT CAST(x.seq AS CHAR) AS seq, (${due('x')}) AS ready FROM ${t} x
WHERE x.msg_key = ? AND x.seq > ? ORDER BY x.seq LIMIT ?`,

    /**
     * Locks the planned rows that are still due and unleased. InnoDB's locking read sees the
     * latest committed version of each row and skips rows another claim holds, so a row that
     * another claim leased (and committed) after our plan's read fails the conditions here and
     * is not claimed twice.
     */
    claimLock(count: number, limited: boolean): string {
      return `SELECT CAST(l.seq AS CHAR) AS seq FROM ${t} l
WHERE l.seq IN (${marks(count)}) AND ${due('l')}
ORDER BY l.seq${limited ? ' LIMIT ?' : ''}
FOR UPDATE SKIP LOCKED`;
    },

    claimLease(count: number): string {
      return `UPDATE ${t} SET lease_owner = ?, lease_token = ?, lease_until = ${NOW} + INTERVAL ? MICROSECOND,
  attempts = attempts + 1
WHERE seq IN (${marks(count)})`;
    },

    claimRead(count: number): string {
      return `SELECT ${columns} FROM ${t} o WHERE o.seq IN (${marks(count)}) ORDER BY o.seq`;
    },

    extendLease: `UPDATE ${t} SET lease_until = ${NOW} + INTERVAL ? MICROSECOND WHERE lease_token = ?`,

    deleteDelivered(count: number): string {
      return `DELETE FROM ${t} WHERE seq IN (${marks(count)})`;
    },

    archiveDelivered(count: number): string {
      return `INSERT INTO ${n.archive} (id, topic, msg_key, type, payload, content_type, headers, created_at, attempts, sent_at, delivery)
SELECT id, topic, msg_key, type, payload, content_type, headers, created_at, attempts, ${NOW}, delivery
FROM ${t} WHERE seq IN (${marks(count)})
ON DUPLICATE KEY UPDATE sent_at = sent_at`;
    },

    /** Rows of `seqs` this lease still holds, locked for the settle's transaction. */
    lockHeld(count: number): string {
      return `SELECT CAST(seq AS CHAR) AS seq FROM ${t} WHERE lease_token = ? AND seq IN (${marks(count)}) FOR UPDATE`;
    },

    /** `CASE seq WHEN ? THEN ? … END`: one value per row, as parameters. */
    perRow(count: number): string {
      return `CASE seq ${Array.from({ length: count }, () => 'WHEN ? THEN ?').join(' ')} END`;
    },

    /** The transport was unavailable: the claim's attempt is given back and the row is due now. */
    release(count: number, errors: string): string {
      return `UPDATE ${t} SET attempts = GREATEST(attempts - 1, 0), last_error = ${errors},
  lease_owner = NULL, lease_token = NULL, lease_until = NULL
WHERE lease_token = ? AND seq IN (${marks(count)})`;
    },

    retry(count: number, delays: string, errors: string): string {
      return `UPDATE ${t} SET available_at = ${NOW} + INTERVAL (${delays}) MICROSECOND, last_error = ${errors},
  lease_owner = NULL, lease_token = NULL, lease_until = NULL
WHERE lease_token = ? AND seq IN (${marks(count)})`;
    },

    /** Into the dead letters (a dead letter with the same id, replayed and dead again, is replaced). */
    deadLetter(count: number, errors: string): string {
      return `INSERT INTO ${n.dead_letter} (id, topic, msg_key, type, payload, content_type, headers, created_at, attempts, dead_at, last_error, delivery)
SELECT id, topic, msg_key, type, payload, content_type, headers, created_at, attempts, ${NOW}, ${errors}, delivery
FROM ${t} WHERE seq IN (${marks(count)})
ON DUPLICATE KEY UPDATE dead_at = VALUES(dead_at), attempts = VALUES(attempts), last_error = VALUES(last_error),
  delivery = VALUES(delivery), topic = VALUES(topic), msg_key = VALUES(msg_key), type = VALUES(type),
  payload = VALUES(payload), content_type = VALUES(content_type), headers = VALUES(headers), created_at = VALUES(created_at)`;
    },

    // Delayed and retried rows are the only ones due later than now: the index on available_at
    // starts at now and reads one entry.
    nextDue: `SELECT TIMESTAMPDIFF(MICROSECOND, ${NOW}, MIN(available_at)) AS us FROM ${t} WHERE available_at > ${NOW}`,

    pruneArchive: `DELETE FROM ${n.archive} WHERE sent_at < ${NOW} - INTERVAL ? MICROSECOND`,

    schemaVersion: `SELECT MAX(version) AS version FROM ${n.migrations}`,

    /** The inbox record: one row back when new (sql/mysql/000003_inbox.sql). */
    inboxRecord: `CALL ${n.inbox_record}(?, ?)`,

    pruneInbox: `DELETE FROM ${n.inbox} WHERE consumer = ? AND processed_at < ${NOW} - INTERVAL ? MICROSECOND
ORDER BY processed_at LIMIT ?`,

    /** Counts for stats, each bounded by `LIMIT ?` (the exact-count limit + 1) or an index. */
    statsCounts: `SELECT
  (SELECT COUNT(*) FROM (SELECT 1 FROM ${t} LIMIT ?) b) AS backlog,
  (SELECT COUNT(*) FROM (SELECT 1 FROM ${t} WHERE lease_token IS NOT NULL AND lease_until > ${NOW} LIMIT ?) f) AS in_flight,
  (SELECT COUNT(*) FROM (SELECT 1 FROM ${t} WHERE available_at > ${NOW} LIMIT ?) s) AS scheduled,
  (SELECT COUNT(*) FROM (SELECT 1 FROM ${n.dead_letter} LIMIT ?) d) AS dead_letters,
  (SELECT TIMESTAMPDIFF(MICROSECOND, o.created_at, ${NOW}) FROM ${t} o ORDER BY o.seq LIMIT 1) AS oldest_us`,

    /** InnoDB's row estimates, for tables past the exact-count limit. */
    statsEstimates: `SELECT TABLE_NAME AS name, TABLE_ROWS AS estimate FROM information_schema.TABLES
WHERE TABLE_SCHEMA = ${database === undefined ? 'DATABASE()' : '?'} AND TABLE_NAME IN (?, ?)`,

    /**
     * Messages per topic in the outbox ('o') and the dead letters ('d'), over at most `?` rows of
     * each (the oldest): exact for a table within the limit, a sample the store scales up past it.
     */
    statsTopics: `SELECT 'o' AS side, topic, COUNT(*) AS n FROM (SELECT topic FROM ${t} ORDER BY seq LIMIT ?) o GROUP BY topic
UNION ALL
SELECT 'd', topic, COUNT(*) FROM (SELECT topic FROM ${n.dead_letter} ORDER BY dead_at, id LIMIT ?) d GROUP BY topic`,

    /** WHERE conditions and params for dead-letter filters. */
    deadLetterWhere(filter: {
      ids?: string[];
      topic?: string;
      key?: string;
      deadBefore?: Date;
      deadAfter?: Date;
    }): { conds: string[]; params: unknown[] } {
      const conds: string[] = [];
      const params: unknown[] = [];
      if (filter.ids !== undefined) {
        if (filter.ids.length === 0) conds.push('FALSE');
        else {
          conds.push(`dl.id IN (${marks(filter.ids.length)})`);
          params.push(...filter.ids);
        }
      }
      if (filter.topic !== undefined) {
        conds.push('dl.topic = ?');
        params.push(filter.topic);
      }
      if (filter.key !== undefined) {
        conds.push('dl.msg_key = ?');
        params.push(Buffer.from(filter.key, 'utf8'));
      }
      if (filter.deadBefore !== undefined) {
        conds.push('dl.dead_at < ?');
        params.push(utcDatetime(filter.deadBefore));
      }
      if (filter.deadAfter !== undefined) {
        conds.push('dl.dead_at >= ?');
        params.push(utcDatetime(filter.deadAfter));
      }
      return { conds, params };
    },

    listDeadLetters(where: string, limited: boolean): string {
      return `SELECT dl.id AS seq, dl.id, dl.topic, dl.msg_key, dl.type, dl.payload, dl.content_type, dl.headers,
  ${epochMicros('dl.created_at')} AS created_us, dl.attempts, ${epochMicros('dl.dead_at')} AS dead_us, dl.last_error
FROM ${n.dead_letter} dl ${where} ORDER BY dl.dead_at, dl.id${limited ? ' LIMIT ?' : ''}`;
    },

    countDeadLetters(where: string): string {
      return `SELECT COUNT(*) AS n, ${epochMicros(NOW)} AS as_of_us FROM ${n.dead_letter} dl ${where}`;
    },

    /** The database clock as exact DATETIME(6) text: the upper bound of a replay or purge run. */
    clockText: `SELECT ${dateText(NOW)} AS t`,

    /**
     * One batch of a replay or purge run: the dead letters it takes, locked (others running the
     * same filter skip them), oldest first after the keyset cursor. A replay leaves a dead letter
     * whose id is in the outbox again (re-enqueued by hand) where it is.
     */
    pickDeadLetters(where: string, replay: boolean): string {
      const and = where ? `${where} AND` : 'WHERE';
      const notQueued = replay ? ` NOT EXISTS (SELECT 1 FROM ${t} x WHERE x.id = dl.id)` : ' TRUE';
      return `SELECT dl.id, ${dateText('dl.dead_at')} AS cursor_at FROM ${n.dead_letter} dl
${and}${notQueued}
ORDER BY dl.dead_at, dl.id LIMIT ?
FOR UPDATE SKIP LOCKED`;
    },

    /** Replayed messages go to the back of the outbox, due now, attempts reset, ids kept. */
    replayInsert(count: number): string {
      return `INSERT INTO ${t} (id, topic, msg_key, type, payload, content_type, headers, created_at, available_at, delivery)
SELECT id, topic, msg_key, type, payload, content_type, headers, created_at, ${NOW}, delivery
FROM ${n.dead_letter} WHERE id IN (${marks(count)}) ORDER BY dead_at, id`;
    },

    /**
     * Acknowledged delivery and callbacks (sql/mysql/000004_ack_callbacks.sql); the steps are
     * run by src/stores/mysql/mysql-ack.ts in the transaction they belong to.
     */
    ack: {
      /** Delivered rows that asked for `ack` or `callback`, locked for the settle. */
      trackedRows(count: number): string {
        return `SELECT CAST(seq AS CHAR) AS seq, id, topic, delivery FROM ${t}
WHERE seq IN (${marks(count)}) AND delivery IS NOT NULL FOR UPDATE`;
      },

      /** Only the plain rows: tracked ones are settled by the steps below. */
      deletePlain(count: number): string {
        return `DELETE FROM ${t} WHERE seq IN (${marks(count)}) AND delivery IS NULL`;
      },

      /**
       * A delivered message with `ack` into the ack table, awaiting. A row already there: a
       * resend's delivery sets it back to awaiting with a new deadline; an early or late
       * acknowledgement keeps its state. (MySQL applies the assignments left to right, so the
       * deadline is computed from the state before the state changes.)
       */
      awaiting: `INSERT INTO ${n.ack} (id, state, topic, msg_key, type, payload, content_type, headers, created_at, delivery,
  deadline, sent_at, updated_at)
SELECT id, 'awaiting', topic, msg_key, type, payload, content_type, headers, created_at, delivery,
  ${NOW} + INTERVAL (CAST(JSON_EXTRACT(delivery, '$.ack.timeoutMs') AS UNSIGNED) * 1000) MICROSECOND, ${NOW}, ${NOW}
FROM ${t} WHERE seq = ?
ON DUPLICATE KEY UPDATE deadline = IF(state = 'resending', VALUES(deadline), NULL),
  sent_at = VALUES(sent_at), updated_at = VALUES(updated_at), topic = VALUES(topic), msg_key = VALUES(msg_key),
  type = VALUES(type), payload = VALUES(payload), content_type = VALUES(content_type), headers = VALUES(headers),
  created_at = VALUES(created_at), delivery = VALUES(delivery),
  state = IF(state = 'resending', 'awaiting', state)`,

      ackState: `SELECT state, acked_at IS NOT NULL AS acked, consumer, result, topic, delivery FROM ${n.ack} WHERE id = ? FOR UPDATE`,

      callbackExists: `SELECT 1 AS x FROM ${n.callback} WHERE message_id = ? AND event = ? LIMIT 1`,

      insertCallback: `INSERT INTO ${n.callback} (id, message_id, topic, event, url, detail, occurred_at, available_at)
VALUES (?, ?, ?, ?, ?, ?, ${NOW}, ${NOW})`,

      /** Tracked rows among those a dead-letter settle holds: their `dead` callbacks. */
      deadTracked(count: number): string {
        return `SELECT CAST(seq AS CHAR) AS seq, id, topic, delivery FROM ${t} WHERE seq IN (${marks(count)}) AND delivery IS NOT NULL`;
      },

      early: `INSERT INTO ${n.ack} (id, state, acked_at, consumer, result, updated_at)
VALUES (?, 'acknowledged', ${NOW}, ?, ?, ${NOW})`,

      acknowledge: `UPDATE ${n.ack} SET state = 'acknowledged', acked_at = ${NOW}, consumer = ?, result = ?, deadline = NULL,
  updated_at = ${NOW} WHERE id = ?`,

      late: `UPDATE ${n.ack} SET acked_at = ${NOW}, consumer = ?, result = ?, updated_at = ${NOW} WHERE id = ?`,

      /** Deadlines passed, oldest first, skipping rows another relay is sweeping. */
      due: `SELECT id, resends, topic, msg_key, delivery FROM ${n.ack}
WHERE state = 'awaiting' AND deadline <= ${NOW} ORDER BY deadline LIMIT ? FOR UPDATE SKIP LOCKED`,

      /** The same id back into the outbox, due now (a copy already there stays as it is). */
      resend: `INSERT INTO ${t} (id, topic, msg_key, type, payload, content_type, headers, created_at, available_at, delivery)
SELECT a.id, a.topic, a.msg_key, a.type, a.payload, a.content_type, a.headers, a.created_at, ${NOW}, a.delivery
FROM ${n.ack} a WHERE a.id = ?
ON DUPLICATE KEY UPDATE seq = ${t}.seq`,

      resending: `UPDATE ${n.ack} SET state = 'resending', resends = resends + 1, deadline = NULL, updated_at = ${NOW} WHERE id = ?`,

      expire: `UPDATE ${n.ack} SET state = 'expired', expired_at = ${NOW}, deadline = NULL, updated_at = ${NOW} WHERE id = ?`,

      /** An expired message's cancellation, an ordinary outbox message. */
      cancellation: `INSERT INTO ${t} (id, topic, msg_key, type, payload, content_type, headers, created_at, available_at)
VALUES (?, ?, ?, 'mailroom.expired', ?, 'application/json', ?, ${NOW}, ${NOW})`,

      nextDue: `SELECT TIMESTAMPDIFF(MICROSECOND, ${NOW}, MIN(deadline)) AS us FROM ${n.ack} WHERE state = 'awaiting'`,

      list(withState: boolean): string {
        return `SELECT id, state, topic, msg_key, resends, JSON_EXTRACT(delivery, '$.ack.maxResends') AS max_resends,
  ${epochMicros('deadline')} AS deadline_us, ${epochMicros('sent_at')} AS sent_us, ${epochMicros('acked_at')} AS acked_us,
  consumer, result, ${epochMicros('expired_at')} AS expired_us
FROM ${n.ack} ${withState ? 'WHERE state = ?' : ''} ORDER BY updated_at DESC, id LIMIT ?`;
      },

      counts: `SELECT
  (SELECT COUNT(*) FROM ${n.ack} WHERE state IN ('awaiting', 'resending')) AS awaiting,
  (SELECT COUNT(*) FROM ${n.ack} WHERE state = 'acknowledged') AS acknowledged,
  (SELECT COUNT(*) FROM ${n.ack} WHERE state = 'expired') AS expired,
  (SELECT COUNT(*) FROM ${n.callback} WHERE dead_at IS NULL) AS callbacks_pending,
  (SELECT COUNT(*) FROM ${n.callback} WHERE dead_at IS NOT NULL) AS callbacks_dead`,

      prune: `DELETE FROM ${n.ack} WHERE state IN ('acknowledged', 'expired') AND updated_at < ${NOW} - INTERVAL ? MICROSECOND
ORDER BY updated_at LIMIT ?`,

      /** A resend that died and is purged will never be delivered: its record would wait for ever. */
      forgetResending(count: number): string {
        return `DELETE FROM ${n.ack} WHERE id IN (${marks(count)}) AND state = 'resending'`;
      },

      /** Where each id is: outbox, ack table, dead letters. */
      status(count: number): string {
        const q = Array.from(
          { length: count },
          (_, i) => `SELECT CONVERT(? USING ascii) COLLATE ascii_bin AS id, ${i} AS n`,
        ).join(' UNION ALL ');
        return `SELECT q.id, o.id IS NOT NULL AS in_outbox, (o.lease_until > ${NOW}) AS leased, a.state AS ack_state,
  d.id IS NOT NULL AS dead, COALESCE(o.topic, a.topic, d.topic) AS topic, COALESCE(o.attempts, d.attempts) AS attempts,
  a.resends, ${epochMicros('a.acked_at')} AS acked_us, a.consumer, a.result, ${epochMicros('a.expired_at')} AS expired_us,
  ${epochMicros('a.deadline')} AS deadline_us, COALESCE(o.last_error, d.last_error) AS last_error
FROM (${q}) q
LEFT JOIN ${t} o ON o.id = q.id
LEFT JOIN ${n.ack} a ON a.id = q.id
LEFT JOIN ${n.dead_letter} d ON d.id = q.id
ORDER BY q.n`;
      },
    },

    /** Callbacks: claimed under leases and settled like messages. */
    callbacks: {
      pick: `SELECT id FROM ${n.callback}
WHERE dead_at IS NULL AND available_at <= ${NOW} AND (lease_until IS NULL OR lease_until <= ${NOW})
ORDER BY available_at LIMIT ? FOR UPDATE SKIP LOCKED`,
      lease(count: number): string {
        return `UPDATE ${n.callback} SET lease_owner = ?, lease_token = ?, lease_until = ${NOW} + INTERVAL ? MICROSECOND,
  attempts = attempts + 1 WHERE id IN (${marks(count)})`;
      },
      read(count: number): string {
        return `SELECT id, message_id, topic, event, url, attempts, detail, ${epochMicros('occurred_at')} AS occurred_us
FROM ${n.callback} WHERE id IN (${marks(count)}) ORDER BY available_at, id`;
      },
      delivered(count: number): string {
        return `DELETE FROM ${n.callback} WHERE id IN (${marks(count)})`;
      },
      retry: `UPDATE ${n.callback} SET available_at = ${NOW} + INTERVAL ? MICROSECOND, last_error = ?,
  lease_owner = NULL, lease_token = NULL, lease_until = NULL WHERE id = ? AND lease_token = ?`,
      dead: `UPDATE ${n.callback} SET dead_at = ${NOW}, last_error = ?, lease_owner = NULL, lease_token = NULL,
  lease_until = NULL WHERE id = ? AND lease_token = ?`,
      nextDue: `SELECT TIMESTAMPDIFF(MICROSECOND, ${NOW}, MIN(GREATEST(available_at, COALESCE(lease_until, available_at)))) AS us
FROM ${n.callback} WHERE dead_at IS NULL`,
    },

    deleteDeadLetters(count: number): string {
      return `DELETE FROM ${n.dead_letter} WHERE id IN (${marks(count)})`;
    },
  };
}

export type MySqlSql = ReturnType<typeof mysqlSql>;
