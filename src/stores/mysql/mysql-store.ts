import { randomUUID } from 'node:crypto';
import { ConfigError } from '../../core/errors/config-error.js';
import { deadLetterBatchSize, runDeadLetterBatches } from '../dead-letter-run.js';
import { StoreError } from '../../core/errors/store-error.js';
import type {
  AckCounts,
  AckOutcome,
  AckRecord,
  CallbackEvent,
  ClaimRequest,
  ClaimedBatch,
  DeadLetterBatchOptions,
  DeadLetterFilter,
  DeadLetterOpResult,
  MessageStatus,
  OutboxStats,
  OutboxStore,
  Settlement,
  SqlExecutor,
  SqlStatement,
  StatsCount,
  StoreCapabilities,
} from '../../core/ports.js';
import {
  boolean,
  custom,
  hasMethods,
  integer,
  MAX_TIMER_MS,
  optionsSchema,
  string,
} from '../../core/options-schema.js';
import { redactUrl } from '../../core/redact.js';
import type { AckReceipt, DeadLetter, EncodedMessage, OutboxMessage } from '../../core/types.js';
import type {
  MySqlConnectionSettings,
  MySqlPool,
  MySqlPoolConnection,
  MySqlResultHeader,
  MySqlTransactionConnection,
  MySqlTransactionHandle,
} from './mysql-driver.js';
import {
  describeMySqlError,
  isMySqlStatementError,
  mysqlErrno,
  type MySqlErrorContext,
} from './mysql-errors.js';
import { mysqlExecutor, mysqlRows, requireMySqlTransaction } from './mysql-executor.js';
import {
  applyAck,
  deadCallbacks,
  readStatus,
  settleDelivered,
  sweepAcks,
  toAckCounts,
  toAckRecord,
  toCallbackEvent,
} from './mysql-ack.js';
import {
  MAX_ROWS_PER_INSERT,
  mysqlSql,
  utcDatetime,
  validateTablePrefix,
  type MySqlSql,
} from './mysql-sql.js';
import { latestMySqlVersion, migrateMySql, type MySqlMigrationResult } from './migrate.js';
import { validateIdentifier } from '../sql-identifier.js';

/** Options of {@link MySqlStore}. */
export interface MySqlStoreOptions {
  /**
   * A `mysql2/promise` pool (`mysql.createPool(…)`), or anything shaped like it, that the relay
   * side uses for claims and settles. Give this or `connectionString`.
   */
  pool?: MySqlPool;
  /**
   * A `mysql://` or `mariadb://` URL (`mysql://user:password@host:3306/app`); the store makes
   * (and on close ends) its own mysql2 pool. Needs `mysql2`; use {@link MySqlStore.connect}.
   */
  connectionString?: string;
  /** Connections in the pool the store makes from `connectionString`. @default 4 */
  poolSize?: number;
  /**
   * The database holding Mailroom's tables. Left out, the connection's current database (the
   * one in the URL): the tables then live beside your business tables, which is what lets one
   * transaction write both. A database given here must be on the same server.
   */
  database?: string;
  /**
   * Prefix of Mailroom's tables and procedures: `mailroom_` makes `mailroom_outbox`,
   * `mailroom_dead_letter`, `mailroom_enqueue`… Letters, digits and `_`, at most 40. Plays the
   * part of the PostgreSQL store's `schema`: several outboxes in one database need one each.
   * @default 'mailroom_'
   */
  tablePrefix?: string;
  /** Keep delivered messages in `<prefix>archive` instead of deleting them. @default false */
  archive?: boolean;
  /**
   * Deadline for opening a connection of the pool the store makes from `connectionString`
   * (mysql2's `connectTimeout`). Not for a `pool` you pass in: set `connectTimeout` on it.
   * @default 10000
   */
  connectTimeoutMs?: number;
  /**
   * Longest the driver waits for a statement of the store's own (claims, settles, stats,
   * dead-letter runs, migrations); past it mysql2 closes the connection, which ends the
   * statement and rolls back its transaction on the server. Applies to every pool.
   * @default 30000
   */
  statementTimeoutMs?: number;
}

const mysqlStoreSchema = optionsSchema<MySqlStoreOptions>()('MySqlStore', {
  pool: custom(
    'a mysql2/promise pool (getConnection and end methods)',
    hasMethods<MySqlPool>('getConnection', 'end'),
  ),
  connectionString: string({ expected: 'a mysql:// or mariadb:// URL', secret: true }),
  poolSize: integer({ min: 1, default: 4 }),
  database: string({ expected: 'a database name' }),
  tablePrefix: string({ expected: 'a table prefix', default: 'mailroom_' }),
  archive: boolean({ default: false }),
  connectTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
  statementTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
});

/** The bounds and defaults of the options, for CLI flags that set them. */
export const mysqlStoreOptionsSchema = mysqlStoreSchema;

/** Counts up to this are exact; past it, estimates (InnoDB's row estimate, a sample of topics). */
export const MYSQL_EXACT_COUNT_LIMIT = 100_000;
/** Topics `stats()` lists at most (the busiest); `topicsTruncated` says when there are more. */
export const MYSQL_MAX_TOPICS = 50;
/** Rows per table read for per-topic counts of a table past the exact limit. */
export const MYSQL_TOPIC_SAMPLE_ROWS = 20_000;
/** Dead letters per statement of a replay or purge run. */
export { DEFAULT_DEAD_LETTER_BATCH } from '../dead-letter-run.js';
/** A deadlock rolls a transaction back whole: the store runs it again, at most this often. */
const DEADLOCK_RETRIES = 3;

type Row = Record<string, unknown>;

/** A connection as the store's statements see it. */
interface StoreConnection {
  rows(sql: string, params?: unknown[]): Promise<Row[]>;
  run(sql: string, params?: unknown[]): Promise<MySqlResultHeader>;
}

function parseJson(value: unknown): unknown {
  if (typeof value === 'string') return JSON.parse(value);
  if (Buffer.isBuffer(value)) return JSON.parse(value.toString('utf8'));
  return value;
}

function text(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  return Buffer.isBuffer(value) ? value.toString('utf8') : String(value);
}

function toMessage(row: Row): OutboxMessage {
  return {
    seq: String(row.seq),
    id: String(row.id),
    topic: String(text(row.topic)),
    key: text(row.msg_key),
    type: text(row.type),
    payload: Buffer.isBuffer(row.payload) ? row.payload : Buffer.from(String(row.payload)),
    contentType: String(text(row.content_type)),
    headers: (parseJson(row.headers) as Record<string, string> | null) ?? {},
    createdAt: new Date(Math.floor(Number(row.created_us) / 1000)),
    attempts: Number(row.attempts),
  };
}

function compareSeq(a: OutboxMessage, b: OutboxMessage): number {
  return a.seq.length - b.seq.length || (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0);
}

function truncateError(error: string): string {
  return error.length > 4000 ? `${error.slice(0, 4000)}…` : error;
}

/** `[seq1, v1, seq2, v2, …]` for a `CASE seq WHEN ? THEN ? …` of {@link MySqlSql.perRow}. */
function pairs<T>(items: readonly T[], seq: (t: T) => string, value: (t: T) => unknown): unknown[] {
  return items.flatMap((t) => [seq(t), value(t)]);
}

/** A claim candidate: a head (or keyless row), its key, and whether its key has a next row. */
interface Candidate {
  seq: string;
  key: Buffer | null;
  more: boolean;
}

/**
 * The outbox in MySQL 8 or MariaDB 10.6+ (driver `mysql2`). Claims lock rows with `FOR UPDATE
 * SKIP LOCKED` in short READ COMMITTED transactions under leases on the database clock, with the
 * PostgreSQL store's per-key rule (only the oldest row left of each key is claimable). MySQL has
 * no NOTIFY: relays poll (`capabilities.notify` is false), and an application that runs the
 * relay in its own process calls `relay.wake()` after it commits.
 *
 * @example
 * ```ts
 * const store = await MySqlStore.connect({ connectionString: 'mysql://app:secret@db:3306/shop' });
 * await store.migrate();
 * const outbox = new Outbox({ store });
 * const conn = await pool.getConnection();
 * await conn.beginTransaction();
 * await conn.query('INSERT INTO orders …');
 * await outbox.enqueue(conn, { topic: 'order.created', key: orderId, payload: order });
 * await conn.commit();
 * conn.release();
 * ```
 */
export class MySqlStore implements OutboxStore<MySqlTransactionHandle> {
  readonly name = 'mysql';
  readonly capabilities: StoreCapabilities = { notify: false };
  /** The database given in the options, or undefined for the connection's current one. */
  readonly database: string | undefined;
  readonly tablePrefix: string;
  readonly archive: boolean;
  readonly #pool: MySqlPool;
  readonly #ownsPool: boolean;
  readonly #sql: MySqlSql;
  readonly #statementTimeoutMs: number;
  readonly #errorContext: MySqlErrorContext;
  /** Connections of the store's own pool already switched to READ COMMITTED for the session. */
  readonly #prepared = new WeakSet<object>();
  /** Where the claim's bounded walk over the keys goes on from (null: from the first key). */
  #keyCursor: Buffer | null = null;
  #closed = false;

  constructor(options: MySqlStoreOptions) {
    const resolved = mysqlStoreSchema.resolve(options);
    this.tablePrefix = validateTablePrefix(resolved.tablePrefix);
    this.database =
      resolved.database === undefined ? undefined : validateIdentifier('database', resolved.database);
    this.archive = resolved.archive;
    this.#sql = mysqlSql(this.database, this.tablePrefix);
    this.#statementTimeoutMs = resolved.statementTimeoutMs;
    // The CLI's --schema is the table prefix without its trailing `_`.
    const migrateHint =
      this.tablePrefix === 'mailroom_'
        ? 'npx mailroom migrate --database-url mysql://…'
        : this.tablePrefix.endsWith('_')
          ? `npx mailroom migrate --database-url mysql://… --schema ${this.tablePrefix.slice(0, -1)}`
          : 'await store.migrate()';
    const tables = this.#sql.names.outbox;
    if (resolved.pool) {
      if (options.connectTimeoutMs !== undefined) {
        throw new ConfigError(
          'connectTimeoutMs',
          'MySqlStore option connectTimeoutMs applies to the pool the store makes from connectionString, and a pool ' +
            'was given: set connectTimeout on your pool instead (mysql.createPool({ connectTimeout: 10000, … }))',
        );
      }
      this.#pool = resolved.pool;
      this.#ownsPool = false;
      const settings = (
        resolved.pool.pool?.config as { connectionConfig?: MySqlConnectionSettings } | undefined
      )?.connectionConfig;
      const target =
        typeof settings?.host === 'string' ? `${settings.host}:${String(settings.port ?? 3306)}` : undefined;
      this.#errorContext = {
        tables,
        migrateHint,
        statementTimeoutMs: this.#statementTimeoutMs,
        ...(target ? { target } : {}),
      };
    } else if (resolved.connectionString !== undefined) {
      if (!mysql2Module) {
        throw new ConfigError(
          'connectionString',
          'call `await MySqlStore.connect({ connectionString })` (it loads mysql2), or pass a pool',
        );
      }
      const url = validateMySqlUrl('connectionString', resolved.connectionString);
      this.#pool = mysql2Module.createPool({
        uri: url.replace(/^mariadb:/, 'mysql:'),
        connectionLimit: resolved.poolSize,
        connectTimeout: resolved.connectTimeoutMs,
        // Times are read as epoch numbers computed in SQL; this keeps any DATETIME a user reads
        // through the store's connections in UTC as well.
        timezone: 'Z',
        supportBigNumbers: true,
      });
      this.#ownsPool = true;
      const parsed = new URL(url);
      this.#errorContext = {
        tables,
        migrateHint,
        target: `${parsed.hostname || 'localhost'}:${parsed.port || 3306}`,
        connectTimeoutMs: resolved.connectTimeoutMs,
        statementTimeoutMs: this.#statementTimeoutMs,
      };
    } else {
      throw new ConfigError(
        'pool',
        'MySqlStore options pool and connectionString are both missing; give a mysql2/promise pool as pool, ' +
          'or a mysql:// URL as connectionString',
      );
    }
  }

  /** Same options as the constructor; with a `connectionString`, loads `mysql2` first. */
  static async connect(options: MySqlStoreOptions): Promise<MySqlStore> {
    if (options.connectionString !== undefined && !options.pool) {
      validateMySqlUrl('connectionString', options.connectionString);
      await loadMysql2();
    }
    return new MySqlStore(options);
  }

  /** The quoted names of the store's tables and procedures (`outbox`, `enqueue`…). */
  get names(): MySqlSql['names'] {
    return this.#sql.names;
  }

  enqueueStatement(messages: readonly EncodedMessage[]): SqlStatement {
    if (messages.length > MAX_ROWS_PER_INSERT) {
      throw new RangeError(`enqueueStatement takes at most ${MAX_ROWS_PER_INSERT} messages`);
    }
    return this.#sql.enqueue(messages);
  }

  executor(tx: MySqlTransactionHandle): SqlExecutor {
    return mysqlExecutor(tx);
  }

  /** For `Outbox({ requireTransaction: true })`: see {@link requireMySqlTransaction}. */
  requireTransaction(executor: SqlExecutor): Promise<void> {
    return requireMySqlTransaction(executor, this.#sql);
  }

  #wrap(err: unknown, phase: 'connect' | 'statement'): unknown {
    return describeMySqlError(err, { ...this.#errorContext, phase });
  }

  /**
   * Runs `fn` on a connection of its own. A connection whose statement failed other than with
   * an answer from the server (a deadline, a lost socket) is destroyed, not handed back.
   */
  async #withConnection<T>(fn: (conn: StoreConnection, raw: MySqlPoolConnection) => Promise<T>): Promise<T> {
    if (this.#closed) throw new StoreError('closed', 'the MySQL store is closed');
    let raw: MySqlPoolConnection;
    try {
      raw = await this.#checkout();
    } catch (err) {
      throw this.#wrap(err, 'connect');
    }
    let broken = false;
    const call = async (sql: string, params: unknown[] = []): Promise<unknown> => {
      try {
        const [result] = await raw.query({ sql, values: params, timeout: this.#statementTimeoutMs });
        return result;
      } catch (err) {
        if (!isMySqlStatementError(err)) broken = true;
        throw err;
      }
    };
    const conn: StoreConnection = {
      rows: async (sql, params) => mysqlRows<Row>(await call(sql, params)),
      run: async (sql, params) => (await call(sql, params)) as MySqlResultHeader,
    };
    try {
      if (this.#ownsPool) {
        // The store's own connections run at READ COMMITTED (see #transaction), set once.
        const key = raw.connection ?? raw;
        if (!this.#prepared.has(key)) {
          await conn.run('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED');
          this.#prepared.add(key);
        }
      }
      return await fn(conn, raw);
    } catch (err) {
      throw this.#wrap(err, 'statement');
    } finally {
      if (broken) raw.destroy();
      else raw.release();
    }
  }

  /**
   * A connection of the pool, within a deadline (`connectTimeoutMs` on the store's own pool, else
   * `statementTimeoutMs`): mysql2 waits for a free connection for ever when every one is checked
   * out. A connection that comes after the deadline goes straight back.
   */
  async #checkout(): Promise<MySqlPoolConnection> {
    const ms = this.#errorContext.connectTimeoutMs ?? this.#statementTimeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let late = false;
    const pending = this.#pool.getConnection();
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        late = true;
        reject(
          new StoreError(
            'pool_timeout',
            `no connection to ${this.#errorContext.target ?? 'the database'} came free within ${ms} ms: every ` +
              'connection of the pool was in use (or opening one hung); raise poolSize, or look for long transactions ' +
              'holding connections (SHOW PROCESSLIST)',
          ),
        );
      }, ms);
    });
    pending.then(
      (conn) => {
        if (late) conn.release();
      },
      () => undefined,
    );
    try {
      return await Promise.race([pending, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Runs `fn` in a transaction at READ COMMITTED: InnoDB then locks only the rows a locking read
   * returns, never the gaps between them, so a claim never blocks writers inserting into the
   * outbox (at REPEATABLE READ, MySQL's default, a `FOR UPDATE` over a range takes gap locks).
   * On a pool of yours the level is set for this transaction only (`SET TRANSACTION`), leaving
   * your sessions as they are. A deadlock (1213) rolls back the whole transaction; it is run
   * again, up to three times.
   */
  async #transaction<T>(fn: (conn: StoreConnection) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#withConnection(async (conn) => {
          if (!this.#ownsPool) await conn.run('SET TRANSACTION ISOLATION LEVEL READ COMMITTED');
          await conn.run('START TRANSACTION');
          try {
            const result = await fn(conn);
            await conn.run('COMMIT');
            return result;
          } catch (err) {
            await conn.run('ROLLBACK').catch(() => undefined);
            throw err;
          }
        });
      } catch (err) {
        if (mysqlErrno(err) !== 1213 || attempt >= DEADLOCK_RETRIES) throw err;
      }
    }
  }

  /**
   * One writing statement: on the store's own pool (READ COMMITTED sessions) as it is, on yours
   * in a READ COMMITTED transaction of its own, so that it takes no gap locks there either.
   */
  #write<T>(fn: (conn: StoreConnection) => Promise<T>): Promise<T> {
    return this.#ownsPool ? this.#withConnection(fn) : this.#transaction(fn);
  }

  async claim(request: ClaimRequest): Promise<ClaimedBatch> {
    const leaseToken = randomUUID();
    const limit = request.limit;
    const perKey = Math.max(1, Math.floor(request.maxPerKey ?? 1));
    const messages = await this.#transaction(async (c) => {
      const seqs = perKey > 1 ? await this.#planRuns(c, limit, perKey) : await this.#planHeads(c, limit);
      if (seqs.length === 0) return [];
      await c.run(this.#sql.claimLease(seqs.length), [
        request.owner.slice(0, 255),
        leaseToken,
        Math.ceil(request.leaseMs) * 1000,
        ...seqs,
      ]);
      return (await c.rows(this.#sql.claimRead(seqs.length), seqs)).map(toMessage);
    });
    return { leaseToken, messages: messages.sort(compareSeq) };
  }

  /** Pass 1, the window: its rows, the candidates among them, and whether it was full. */
  async #window(c: StoreConnection, win: number, runs: boolean) {
    const rows = await c.rows(this.#sql.claimWindow(runs), [win]);
    const candidates: Candidate[] = rows
      .filter((r) => Number(r.head) === 1)
      .map((r) => ({
        seq: String(r.seq),
        key: (r.msg_key as Buffer | null) ?? null,
        more: Number(r.more) === 1,
      }));
    return { candidates, full: rows.length >= win };
  }

  /**
   * Pass 2, bounded: heads of the keys after the cursor that are ready, up to `need`, then the
   * oldest due keyless rows. Moves the cursor to where the walk stopped (the last key taken, or
   * the end of the slice), or back to the first key when it ran out of keys.
   */
  async #walk(c: StoreConnection, need: number, limit: number): Promise<Candidate[]> {
    const budget = Math.max(limit * 2, 500);
    const cursor = this.#keyCursor;
    const rows = await c.rows(
      this.#sql.claimWalk(cursor === null),
      cursor === null ? [budget] : [cursor, budget],
    );
    const found: Candidate[] = [];
    let last: Buffer | null = null;
    for (const r of rows) {
      last = r.msg_key as Buffer;
      if (Number(r.ready) !== 1) continue;
      found.push({ seq: String(r.seq), key: last, more: true });
      if (found.length >= need) break;
    }
    this.#keyCursor = found.length >= need || rows.length >= budget ? last : null;
    const keyless = await c.rows(this.#sql.claimKeyless, [limit]);
    return [...found, ...keyless.map((r) => ({ seq: String(r.seq), key: null, more: false }))];
  }

  /** One message per key: the window's heads, the walk's when those are too few; locked. */
  async #planHeads(c: StoreConnection, limit: number): Promise<string[]> {
    const window = await this.#window(c, Math.max(limit * 4, 1000), false);
    const seqs = new Set(window.candidates.map((h) => h.seq));
    if (seqs.size < limit && window.full) {
      for (const h of await this.#walk(c, limit - seqs.size, limit)) seqs.add(h.seq);
    }
    if (seqs.size === 0) return [];
    const list = [...seqs];
    const locked = await c.rows(this.#sql.claimLock(list.length, true), [...list, limit]);
    return locked.map((r) => String(r.seq));
  }

  /**
   * Runs: heads oldest first, each with the next rows of its key while they are due and
   * unleased (up to `perKey` of the key), until the batch is full. The heads are locked, then
   * the runs of the heads this claim got; a run is cut at its first row this claim could not
   * lock, so a run has no gap and two relays never split one.
   */
  async #planRuns(c: StoreConnection, limit: number, perKey: number): Promise<string[]> {
    const heads: string[] = [];
    const runs = new Map<string, string[]>();
    let used = 0;
    const plan = async (candidates: readonly Candidate[]) => {
      for (const h of candidates) {
        if (used >= limit) break;
        if (runs.has(h.seq) || heads.includes(h.seq)) continue;
        heads.push(h.seq);
        used++;
        if (h.key === null || !h.more || used >= limit) continue;
        const next = await c.rows(this.#sql.claimRun, [h.key, h.seq, Math.min(perKey - 1, limit - used)]);
        const chunk: string[] = [];
        for (const r of next) {
          if (Number(r.ready) !== 1) break;
          chunk.push(String(r.seq));
        }
        if (chunk.length === 0) continue;
        runs.set(h.seq, chunk);
        used += chunk.length;
      }
    };
    const window = await this.#window(c, limit, true);
    await plan(window.candidates);
    if (used < limit && window.full) await plan(await this.#walk(c, limit - used, limit));
    if (heads.length === 0) return [];
    const locked = new Set(
      (await c.rows(this.#sql.claimLock(heads.length, false), heads)).map((r) => String(r.seq)),
    );
    const wanted = [...locked].flatMap((h) => runs.get(h) ?? []);
    const got =
      wanted.length === 0
        ? new Set<string>()
        : new Set(
            (await c.rows(this.#sql.claimLock(wanted.length, false), wanted)).map((r) => String(r.seq)),
          );
    const taken = [...locked];
    for (const h of locked) {
      for (const seq of runs.get(h) ?? []) {
        if (!got.has(seq)) break;
        taken.push(seq);
      }
    }
    return taken;
  }

  async extendLease(leaseToken: string, leaseMs: number): Promise<void> {
    await this.#write((c) => c.run(this.#sql.extendLease, [Math.ceil(leaseMs) * 1000, leaseToken]));
  }

  async settle(settlement: Settlement): Promise<void> {
    const { delivered, released, retry, dead, leaseToken } = settlement;
    if (delivered.length + released.length + retry.length + dead.length === 0) return;
    const seqOf = (m: { message: OutboxMessage }) => m.message.seq;
    await this.#transaction(async (c) => {
      if (delivered.length) {
        const seqs = delivered.map((m) => m.seq);
        // Regardless of the lease: delivery happened, whoever holds the row now. Messages with
        // `ack` or `callback` go on to the ack table and the callbacks.
        await settleDelivered(c, this.#sql, seqs, this.archive);
      }
      if (released.length) {
        await c.run(this.#sql.release(released.length, this.#sql.perRow(released.length)), [
          ...pairs(released, seqOf, (r) => truncateError(r.error)),
          leaseToken,
          ...released.map(seqOf),
        ]);
      }
      if (retry.length) {
        const per = this.#sql.perRow(retry.length);
        await c.run(this.#sql.retry(retry.length, per, per), [
          ...pairs(retry, seqOf, (r) => Math.max(0, Math.round(r.delayMs)) * 1000),
          ...pairs(retry, seqOf, (r) => truncateError(r.error)),
          leaseToken,
          ...retry.map(seqOf),
        ]);
      }
      if (dead.length) {
        // Only the rows this lease still holds, locked, so the copy and the delete see the same rows.
        const held = new Set(
          (await c.rows(this.#sql.lockHeld(dead.length), [leaseToken, ...dead.map(seqOf)])).map((r) =>
            String(r.seq),
          ),
        );
        const mine = dead.filter((d) => held.has(d.message.seq));
        if (mine.length) {
          await deadCallbacks(
            c,
            this.#sql,
            mine.map((d) => ({ seq: d.message.seq, error: truncateError(d.error) })),
          );
          await c.run(this.#sql.deadLetter(mine.length, this.#sql.perRow(mine.length)), [
            ...pairs(mine, seqOf, (d) => truncateError(d.error)),
            ...mine.map(seqOf),
          ]);
          await c.run(this.#sql.deleteDelivered(mine.length), mine.map(seqOf));
        }
      }
    });
  }

  async nextDueInMs(): Promise<number | null> {
    const [row] = await this.#withConnection((c) => c.rows(this.#sql.nextDue));
    const us = row?.us;
    return us === null || us === undefined ? null : Math.max(0, Number(us) / 1000);
  }

  async check(): Promise<void> {
    const [row] = await this.#withConnection((c) => c.rows(this.#sql.schemaVersion));
    const version = Number(row?.version ?? 0);
    const known = latestMySqlVersion();
    if (version < known) {
      throw new StoreError(
        'schema_outdated',
        `the Mailroom tables ${this.#sql.names.outbox} are at schema version ${version}, this version needs ${known}: ` +
          `run \`${this.#errorContext.migrateHint}\` (or store.migrate())`,
        { details: { version, needed: known } },
      );
    }
    if (version > known) {
      throw new StoreError(
        'schema_too_new',
        `the Mailroom tables ${this.#sql.names.outbox} are at schema version ${version}, newer than this version of ` +
          `Mailroom knows (${known}): upgrade mailroom`,
        { details: { version, known } },
      );
    }
  }

  /** Applies pending migrations (see {@link migrateMySql}); a result per migration file. */
  async migrate(options: { dryRun?: boolean } = {}): Promise<MySqlMigrationResult[]> {
    return this.#withConnection((_c, raw) =>
      migrateMySql(
        {
          query: (sql, params) => raw.query({ sql, values: params ?? [], timeout: this.#statementTimeoutMs }),
        },
        { tablePrefix: this.tablePrefix, ...(this.database ? { database: this.database } : {}), ...options },
      ),
    );
  }

  /**
   * Counts for `status` and metrics, cheap at any size: each count reads at most
   * {@link MYSQL_EXACT_COUNT_LIMIT} + 1 rows (through an index where there is one); past that the
   * backlog and dead letters come from InnoDB's row estimate and topics from the oldest
   * {@link MYSQL_TOPIC_SAMPLE_ROWS} rows, scaled (`estimated` says which counts are estimates).
   */
  async stats(): Promise<OutboxStats> {
    const limit = MYSQL_EXACT_COUNT_LIMIT;
    return this.#withConnection(async (c) => {
      const [row = {}] = await c.rows(this.#sql.statsCounts, [limit + 1, limit + 1, limit + 1, limit + 1]);
      const estimated = new Set<StatsCount>();
      let backlog = Number(row.backlog ?? 0);
      let deadLetters = Number(row.dead_letters ?? 0);
      if (backlog > limit || deadLetters > limit) {
        const params = this.database === undefined ? [] : [this.database];
        const sizes = await c.rows(this.#sql.statsEstimates, [
          ...params,
          `${this.tablePrefix}outbox`,
          `${this.tablePrefix}dead_letter`,
        ]);
        const estimate = (table: string) =>
          Number(sizes.find((s) => String(s.name) === `${this.tablePrefix}${table}`)?.estimate ?? 0);
        if (backlog > limit) {
          backlog = Math.max(limit, estimate('outbox'));
          estimated.add('backlog');
        }
        if (deadLetters > limit) {
          deadLetters = Math.max(limit, estimate('dead_letter'));
          estimated.add('deadLetters');
        }
      }
      const atMost = (field: StatsCount, value: unknown) => {
        const n = Number(value ?? 0);
        if (n > limit) estimated.add(field);
        return Math.min(n, limit);
      };
      const sampleO = estimated.has('backlog');
      const sampleD = estimated.has('deadLetters');
      const topicRows = await c.rows(this.#sql.statsTopics, [
        sampleO ? MYSQL_TOPIC_SAMPLE_ROWS : limit + 1,
        sampleD ? MYSQL_TOPIC_SAMPLE_ROWS : limit + 1,
      ]);
      if (sampleO || sampleD) estimated.add('topics');
      const scale = {
        o: sampleO ? backlog / MYSQL_TOPIC_SAMPLE_ROWS : 1,
        d: sampleD ? deadLetters / MYSQL_TOPIC_SAMPLE_ROWS : 1,
      };
      const topics = new Map<string, { topic: string; backlog: number; deadLetters: number }>();
      for (const r of topicRows) {
        const topic = String(text(r.topic));
        const entry = topics.get(topic) ?? { topic, backlog: 0, deadLetters: 0 };
        if (r.side === 'o') entry.backlog += Math.round(Number(r.n) * scale.o);
        else entry.deadLetters += Math.round(Number(r.n) * scale.d);
        topics.set(topic, entry);
      }
      const oldest = row.oldest_us;
      // The busiest topics first, as the PostgreSQL store ranks them.
      const ranked = [...topics.values()].sort(
        (a, b) =>
          b.backlog - a.backlog ||
          b.deadLetters - a.deadLetters ||
          (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0),
      );
      const inFlight = atMost('inFlight', row.in_flight);
      const scheduled = atMost('scheduled', row.scheduled);
      return {
        backlog,
        inFlight,
        scheduled,
        oldestAgeMs:
          oldest === null || oldest === undefined ? null : Math.max(0, Math.round(Number(oldest) / 1000)),
        deadLetters,
        topics: ranked.slice(0, MYSQL_MAX_TOPICS),
        approximate: estimated.size > 0,
        estimated: (['backlog', 'inFlight', 'scheduled', 'deadLetters', 'topics'] as const).filter((f) =>
          estimated.has(f),
        ),
        topicsTruncated: ranked.length > MYSQL_MAX_TOPICS,
      };
    });
  }

  #where(filter: DeadLetterFilter): { where: string; params: unknown[] } {
    const { conds, params } = this.#sql.deadLetterWhere(filter);
    return { where: conds.length ? `WHERE ${conds.join(' AND ')}` : '', params };
  }

  #checkLimit(filter: DeadLetterFilter): void {
    if (filter.limit !== undefined && (!Number.isInteger(filter.limit) || filter.limit < 1)) {
      throw new ConfigError('limit', `limit must be a positive integer, got ${String(filter.limit)}`);
    }
  }

  async listDeadLetters(filter: DeadLetterFilter = {}): Promise<DeadLetter[]> {
    this.#checkLimit(filter);
    const { where, params } = this.#where(filter);
    if (filter.limit !== undefined) params.push(filter.limit);
    const rows = await this.#withConnection((c) =>
      c.rows(this.#sql.listDeadLetters(where, filter.limit !== undefined), params),
    );
    return rows.map((r) => ({
      ...toMessage(r),
      deadAt: new Date(Math.floor(Number(r.dead_us) / 1000)),
      lastError: text(r.last_error),
    }));
  }

  /**
   * How many dead letters match, counted without reading them, and the database time of the
   * count (pass `deadBefore: new Date(asOf.getTime() + 1)` to act on exactly those).
   */
  async countDeadLetters(filter: DeadLetterFilter = {}): Promise<{ count: number; asOf: Date }> {
    this.#checkLimit(filter);
    const { where, params } = this.#where(filter);
    const [row = {}] = await this.#withConnection((c) => c.rows(this.#sql.countDeadLetters(where), params));
    const count = Number(row.n ?? 0);
    return {
      count: filter.limit === undefined ? count : Math.min(count, filter.limit),
      asOf: new Date(Math.floor(Number(row.as_of_us) / 1000)),
    };
  }

  /**
   * Moves dead letters back into the outbox, due now, attempts reset, ids kept, in batches of
   * `batchSize` (each its own short transaction; payloads never leave the database), and only
   * those that died before the run began, so a run over all of them ends.
   */
  replayDeadLetters(
    filter: DeadLetterFilter = {},
    options: DeadLetterBatchOptions = {},
  ): Promise<DeadLetterOpResult[]> {
    return this.#deadLetterRun('replay', filter, options);
  }

  /** Deletes dead letters for good, in batches, as {@link replayDeadLetters}. */
  purgeDeadLetters(
    filter: DeadLetterFilter = {},
    options: DeadLetterBatchOptions = {},
  ): Promise<DeadLetterOpResult[]> {
    return this.#deadLetterRun('purge', filter, options);
  }

  async #deadLetterRun(
    action: 'replay' | 'purge',
    filter: DeadLetterFilter,
    options: DeadLetterBatchOptions,
  ): Promise<DeadLetterOpResult[]> {
    deadLetterBatchSize(options);
    this.#checkLimit(filter);
    const [clock] = await this.#withConnection((c) => c.rows(this.#sql.clockText));
    const bound = String(clock?.t);
    const { ids: _ids, limit: _limit, ...narrowing } = filter;
    return runDeadLetterBatches<{ at: string; id: string }>(
      action,
      filter,
      options,
      async ({ ids, cursor, size }) => {
        const { conds, params } = this.#sql.deadLetterWhere({ ...narrowing, ...(ids ? { ids } : {}) });
        conds.push('dl.dead_at <= ?');
        params.push(bound);
        if (cursor) {
          // The plain dead_at bound lets the (dead_at, id) index start the scan at the cursor.
          conds.push('dl.dead_at >= ? AND (dl.dead_at > ? OR dl.id > ?)');
          params.push(cursor.at, cursor.at, cursor.id);
        }
        params.push(size);
        const picked = await this.#transaction(async (c) => {
          const rows = await c.rows(
            this.#sql.pickDeadLetters(`WHERE ${conds.join(' AND ')}`, action === 'replay'),
            params,
          );
          const idsPicked = rows.map((r) => String(r.id));
          if (idsPicked.length > 0) {
            if (action === 'replay') await c.run(this.#sql.replayInsert(idsPicked.length), idsPicked);
            await c.run(this.#sql.deleteDeadLetters(idsPicked.length), idsPicked);
            if (action === 'purge') await c.run(this.#sql.ack.forgetResending(idsPicked.length), idsPicked);
          }
          return rows;
        });
        const last = picked[picked.length - 1];
        return {
          found: picked.length,
          cursor: last ? { at: String(last.cursor_at), id: String(last.id) } : undefined,
          done: picked.map((r) => String(r.id)),
        };
      },
    );
  }

  /**
   * Runs `fn` in a transaction on a connection of the store's pool, with that connection as the
   * handle (what `outbox.enqueue` and your own statements take): commits when `fn` resolves,
   * rolls back and rethrows when it throws. The inbox runs handlers in these. On the store's own
   * pool the transaction is READ COMMITTED (the store's sessions are); on yours, your default.
   */
  async transaction<T>(fn: (tx: MySqlTransactionConnection) => Promise<T>): Promise<T> {
    let failure: { error: unknown } | undefined;
    try {
      return await this.#withConnection(async (c, raw) => {
        await c.run('START TRANSACTION');
        let result: T;
        try {
          result = await fn(raw as MySqlTransactionConnection);
        } catch (error) {
          failure = { error };
          await c.run('ROLLBACK').catch(() => undefined);
          throw error;
        }
        await c.run('COMMIT');
        return result;
      });
    } catch (err) {
      // The handler's own error, as it threw it: not a database error to explain.
      if (failure) throw failure.error;
      throw err;
    }
  }

  inboxRecordStatement(consumer: string, id: string): SqlStatement {
    return { sql: this.#sql.inboxRecord, params: [consumer, id] };
  }

  async pruneInbox(consumer: string, olderThanMs: number, limit: number): Promise<number> {
    const res = await this.#write((c) =>
      c.run(this.#sql.pruneInbox, [consumer, Math.round(olderThanMs) * 1000, limit]),
    );
    return Number(res.affectedRows ?? 0);
  }

  async status(ids: readonly string[]): Promise<MessageStatus[]> {
    if (ids.length === 0) return [];
    return this.#withConnection((c) => readStatus(c, this.#sql, ids));
  }

  async applyAck(receipt: AckReceipt): Promise<AckOutcome> {
    try {
      return await this.#transaction((c) => applyAck(c, this.#sql, receipt));
    } catch (err) {
      // Two first acknowledgements (or one and the settle) made the row at once: apply to it.
      if (mysqlErrno(err) !== 1062) throw err;
      return this.#transaction((c) => applyAck(c, this.#sql, receipt));
    }
  }

  async sweepAcks(limit: number): Promise<{ resent: number; expired: number }> {
    return this.#transaction((c) => sweepAcks(c, this.#sql, limit));
  }

  async nextAckDueInMs(): Promise<number | null> {
    const [row] = await this.#withConnection((c) => c.rows(this.#sql.ack.nextDue));
    return row?.us === null || row?.us === undefined ? null : Math.max(0, Number(row.us) / 1000);
  }

  async listAcks(filter: { state?: AckRecord['state']; limit?: number } = {}): Promise<AckRecord[]> {
    const limit = filter.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1) {
      throw new ConfigError('limit', `limit must be a positive integer, got ${String(limit)}`);
    }
    const state = filter.state === 'awaiting-ack' ? 'awaiting' : filter.state;
    const rows = await this.#withConnection((c) =>
      c.rows(this.#sql.ack.list(state !== undefined), state !== undefined ? [state, limit] : [limit]),
    );
    return rows.map(toAckRecord);
  }

  async ackCounts(): Promise<AckCounts> {
    const [row = {}] = await this.#withConnection((c) => c.rows(this.#sql.ack.counts));
    return toAckCounts(row);
  }

  async pruneAcks(olderThanMs: number, limit: number): Promise<number> {
    const res = await this.#write((c) => c.run(this.#sql.ack.prune, [Math.round(olderThanMs) * 1000, limit]));
    return Number(res.affectedRows ?? 0);
  }

  async claimCallbacks(request: { owner: string; limit: number; leaseMs: number }): Promise<{
    leaseToken: string;
    callbacks: CallbackEvent[];
  }> {
    const leaseToken = randomUUID();
    const sql = this.#sql.callbacks;
    const callbacks = await this.#transaction(async (c) => {
      const ids = (await c.rows(sql.pick, [request.limit])).map((r) => String(r.id));
      if (ids.length === 0) return [];
      await c.run(sql.lease(ids.length), [
        request.owner.slice(0, 255),
        leaseToken,
        Math.ceil(request.leaseMs) * 1000,
        ...ids,
      ]);
      return (await c.rows(sql.read(ids.length), ids)).map(toCallbackEvent);
    });
    return { leaseToken, callbacks };
  }

  async settleCallbacks(settlement: {
    leaseToken: string;
    delivered: string[];
    retry: Array<{ id: string; delayMs: number; error: string }>;
    dead: Array<{ id: string; error: string }>;
  }): Promise<void> {
    const { leaseToken, delivered, retry, dead } = settlement;
    if (delivered.length + retry.length + dead.length === 0) return;
    const sql = this.#sql.callbacks;
    await this.#transaction(async (c) => {
      if (delivered.length) await c.run(sql.delivered(delivered.length), delivered);
      for (const r of retry) {
        await c.run(sql.retry, [
          Math.max(0, Math.round(r.delayMs)) * 1000,
          truncateError(r.error),
          r.id,
          leaseToken,
        ]);
      }
      for (const d of dead) await c.run(sql.dead, [truncateError(d.error), d.id, leaseToken]);
    });
  }

  async nextCallbackDueInMs(): Promise<number | null> {
    const [row] = await this.#withConnection((c) => c.rows(this.#sql.callbacks.nextDue));
    return row?.us === null || row?.us === undefined ? null : Math.max(0, Number(row.us) / 1000);
  }

  /** Deletes archived messages older than `retentionMs`; returns how many. */
  async pruneArchive(retentionMs: number): Promise<number> {
    const res = await this.#write((c) => c.run(this.#sql.pruneArchive, [Math.round(retentionMs) * 1000]));
    return Number(res.affectedRows ?? 0);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ownsPool) await this.#pool.end();
  }
}

/** Dead-letter filters' dates, as the store compares them (UTC DATETIME text). */
export { utcDatetime };

type Mysql2Module = {
  createPool(config: Record<string, unknown>): MySqlPool;
};

let mysql2Module: Mysql2Module | undefined;

/** Loads `mysql2/promise` once; the store only needs it when it makes its own pool. */
export async function loadMysql2(): Promise<Mysql2Module> {
  if (mysql2Module) return mysql2Module;
  try {
    const mod = (await import('mysql2/promise')) as unknown as { default?: Mysql2Module } & Mysql2Module;
    mysql2Module = typeof mod.createPool === 'function' ? mod : (mod.default as Mysql2Module);
    return mysql2Module;
  } catch (err) {
    throw new ConfigError(
      'mysql2',
      'the MySQL store needs the `mysql2` package: run `npm install mysql2`',
      {},
      err,
    );
  }
}

/** Validates a MySQL URL (`mysql://` or `mariadb://`), with an error that names it (password hidden). */
export function validateMySqlUrl(key: string, value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(
      key,
      `${key} is not a URL: ${JSON.stringify(redactUrl(value))}; expected mysql://user:password@host:3306/database`,
      { value: redactUrl(value) },
    );
  }
  if (url.protocol !== 'mysql:' && url.protocol !== 'mariadb:') {
    throw new ConfigError(
      key,
      `${key} must be a mysql:// or mariadb:// URL, got scheme "${url.protocol}" in ${redactUrl(value)}`,
      { value: redactUrl(value) },
    );
  }
  return value;
}
