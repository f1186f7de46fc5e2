import { randomUUID } from 'node:crypto';
import { encodeGroup } from '../../core/atomic-group.js';
import { ConfigError } from '../../core/errors/config-error.js';
import { deadLetterBatchSize, runDeadLetterBatches } from '../dead-letter-run.js';
import { InvalidMessageError } from '../../core/errors/invalid-message-error.js';
import { NotATransactionError } from '../../core/errors/not-a-transaction-error.js';
import { StoreError } from '../../core/errors/store-error.js';
import { encodeMessage, type MessageLimits } from '../../core/message.js';
import { boolean, custom, integer, MAX_TIMER_MS, optionsSchema, string } from '../../core/options-schema.js';
import type { EnqueueOptions } from '../../core/outbox.js';
import type {
  ClaimRequest,
  ClaimedBatch,
  DeadLetterBatchOptions,
  DeadLetterFilter,
  DeadLetterOpResult,
  InboxPort,
  OutboxStats,
  OutboxStore,
  Settlement,
  SqlExecutor,
  SqlStatement,
  StoreCapabilities,
  Unsubscribe,
} from '../../core/ports.js';
import type { DeadLetter, EncodedMessage, MessageInput, OutboxMessage } from '../../core/types.js';
import { latestSqliteVersion, migrateSqlite, type SqliteMigrationResult } from './migrate.js';
import type { SqliteDatabase, SqliteDatabaseConstructor } from './sqlite-driver.js';
import { describeSqliteError } from './sqlite-errors.js';
import {
  isSqliteDatabase,
  rejectAutocommitDatabase,
  rollbackQuietly,
  runChanges,
  runSync,
  runTransaction,
  sqliteExecutor,
  type RunTransactionOptions,
  type SqliteTransactionHandle,
  type TransactionMode,
  whenBegun,
} from './sqlite-executor.js';
import {
  JSON_ENQUEUE_MAX_PAYLOAD_BYTES,
  MAX_ROWS_PER_INSERT,
  MIN_SQLITE_VERSION,
  sqliteSql as sql,
  whereClause,
} from './sqlite-sql.js';

/** Options of {@link SqliteStore}. Give `db` or `filename`. */
export interface SqliteStoreOptions {
  /**
   * Your better-sqlite3 `Database`; the store does not close it. The store's statements run on
   * it between your transactions (they wait while one is open on it). For wake-ups at commit and
   * for relaying while your transactions run, prefer `filename`: the store then has its own
   * connection beside yours.
   *
   * @example { db: new Database('./app.db') }
   */
  db?: SqliteDatabase;
  /**
   * The database file; the store opens (and on `close()` closes) its own connection to it. Needs
   * `better-sqlite3`: use `await SqliteStore.connect({ filename })`.
   *
   * @example { filename: './app.db' }
   */
  filename?: string;
  /**
   * Keep delivered messages in `mailroom_archive` instead of deleting them.
   *
   * @default false
   */
  archive?: boolean;
  /**
   * Longest the store waits for SQLite's write lock (another connection is writing), or on a
   * shared `db` for your open transaction to end, before a statement fails with a StoreError
   * (code `busy`). The wait is asynchronous: it never blocks the event loop.
   *
   * @default 5000
   */
  busyTimeoutMs?: number;
  /**
   * One relay per database file: the relay that claims holds a lock row and renews it every third
   * of this; a second relay's claims fail with a StoreError (code `relay_locked`) until the lock is
   * given back (`close()`) or, when the first relay died, until this long after its last renewal.
   *
   * @default 10000
   */
  relayLockMs?: number;
  /**
   * Wake relays when another connection commits, by watching SQLite's `data_version` (a counter
   * in shared memory that moves at every commit by another connection, never at a rollback) every
   * `wakeIntervalMs`. Commits on the store's own connection are not seen: with a shared `db`,
   * relays find those by polling.
   *
   * @default true, false for a database in memory (one connection: nothing else commits)
   */
  notify?: boolean;
  /**
   * How often a subscribed relay reads `data_version` (a read of shared memory, microseconds).
   *
   * @default 25
   */
  wakeIntervalMs?: number;
}

const sqliteStoreSchema = optionsSchema<SqliteStoreOptions>()('SqliteStore', {
  db: custom('a better-sqlite3 Database', isSqliteDatabase),
  filename: string({ expected: 'a database file path' }),
  archive: boolean({ default: false }),
  busyTimeoutMs: integer({ min: 0, max: MAX_TIMER_MS, default: 5000 }),
  relayLockMs: integer({ min: 1000, max: MAX_TIMER_MS, default: 10_000 }),
  notify: boolean(),
  wakeIntervalMs: integer({ min: 1, max: 60_000, default: 25 }),
});

/** Options of {@link SqliteStore.enqueueSync}: the Outbox's message limits and enqueue options. */
export interface SqliteEnqueueOptions extends MessageLimits, EnqueueOptions {}

/** Who holds the relay lock of a database file ({@link SqliteStore.relayLock}). */
export interface SqliteRelayLock {
  owner: string;
  acquiredAt: Date;
  leaseUntil: Date;
  /** True when this store holds it. */
  mine: boolean;
}

/** Dead letters per statement of a replay or purge run. */
export { DEFAULT_DEAD_LETTER_BATCH } from '../dead-letter-run.js';
/** Most topics `stats()` lists (the busiest). */
export const MAX_TOPICS = 100;
/** Most messages one INSERT of `enqueueSync` carries (as `Outbox.enqueue`). */
const ENQUEUE_CHUNK = 1000;

let driver: SqliteDatabaseConstructor | undefined;

/** Loads `better-sqlite3` once; the store only needs it when it opens its own connection. */
export async function loadBetterSqlite3(): Promise<SqliteDatabaseConstructor> {
  if (driver) return driver;
  try {
    const mod = (await import('better-sqlite3')) as unknown as {
      default?: SqliteDatabaseConstructor;
    } & SqliteDatabaseConstructor;
    driver = mod.default ?? mod;
    return driver;
  } catch (err) {
    throw new ConfigError(
      'better-sqlite3',
      'the SQLite store needs the `better-sqlite3` package (12.x on Node 20): run `npm install better-sqlite3`',
      {},
      err,
    );
  }
}

interface MessageRow {
  seq: number;
  id: string;
  topic: string;
  key: string | null;
  type: string | null;
  payload: Buffer;
  content_type: string;
  headers: string;
  created_at: number;
  attempts: number;
}

function toMessage(row: MessageRow): OutboxMessage {
  return {
    seq: String(row.seq),
    id: row.id,
    topic: row.topic,
    key: row.key,
    type: row.type,
    payload: row.payload,
    contentType: row.content_type,
    headers: JSON.parse(row.headers) as Record<string, string>,
    createdAt: new Date(row.created_at),
    attempts: row.attempts,
  };
}

function truncateError(error: string): string {
  return error.length > 4000 ? `${error.slice(0, 4000)}…` : error;
}

function versionAtLeast(version: string, min: string): boolean {
  const a = version.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  }
  return true;
}

/**
 * The outbox in SQLite, through better-sqlite3. Your transaction writes the message rows; the
 * relay claims them under leases in `BEGIN IMMEDIATE` transactions, publishes, and settles them.
 * SQLite has one writer at a time, so one relay per database file is enforced (see
 * {@link SqliteStoreOptions.relayLockMs}); per-key order, leases, retries and dead letters are the
 * PostgreSQL store's.
 *
 * @example
 * ```ts
 * const store = await SqliteStore.connect({ filename: './app.db' });
 * await store.migrate();
 * const outbox = new Outbox({ store });
 * const db = new Database('./app.db'); // your connection
 * db.exec('BEGIN IMMEDIATE');
 * db.prepare('INSERT INTO orders (id, total) VALUES (?, ?)').run(id, total);
 * await outbox.enqueue(db, { topic: 'order.created', key: id, payload: { id, total } });
 * db.exec('COMMIT');
 * // or, inside better-sqlite3's synchronous db.transaction():
 * db.transaction(() => store.enqueueSync(db, { topic: 'order.created', payload: { id } }))();
 * ```
 */
export class SqliteStore implements OutboxStore<SqliteTransactionHandle>, InboxPort<SqliteDatabase> {
  readonly name = 'sqlite';
  readonly capabilities: StoreCapabilities;
  /** The store's connection: yours (`db`) or its own (`filename`). */
  readonly db: SqliteDatabase;
  /** The database file, as errors name it. */
  readonly file: string;
  readonly archive: boolean;
  readonly busyTimeoutMs: number;
  readonly relayLockMs: number;
  readonly wakeIntervalMs: number;
  readonly #ownsDb: boolean;
  readonly #tx: RunTransactionOptions;
  /** This store's relay lock token, and the timer that renews the lock while held. */
  readonly #lockToken = randomUUID();
  #lockRenewal: NodeJS.Timeout | undefined;
  #subscriptions = new Set<Unsubscribe>();
  #closed = false;

  /**
   * With `db`, ready at once. With `filename`, the store opens its own connection, which needs
   * `better-sqlite3` loaded first: use `await SqliteStore.connect(options)`.
   */
  constructor(options: SqliteStoreOptions) {
    const resolved = sqliteStoreSchema.resolve(options);
    if (resolved.db && resolved.filename !== undefined) {
      throw new ConfigError('filename', 'give SqliteStore a db or a filename, not both');
    }
    this.archive = resolved.archive;
    this.busyTimeoutMs = resolved.busyTimeoutMs;
    this.relayLockMs = resolved.relayLockMs;
    this.wakeIntervalMs = resolved.wakeIntervalMs;
    if (resolved.db) {
      this.db = resolved.db;
      this.#ownsDb = false;
    } else if (resolved.filename !== undefined) {
      this.db = openDatabase(resolved.filename, resolved.busyTimeoutMs);
      this.#ownsDb = true;
    } else {
      throw new ConfigError(
        'db',
        'SqliteStore options db and filename are both missing; give a better-sqlite3 Database as db, ' +
          'or a database file as filename',
      );
    }
    this.file = this.db.memory ? ':memory:' : this.db.name;
    this.capabilities = { notify: resolved.notify ?? !this.db.memory };
    this.#tx = {
      busyTimeoutMs: this.busyTimeoutMs,
      wrap: (err) => describeSqliteError(err, { file: this.file }),
      timedOut: (reason) =>
        new StoreError(
          'busy',
          reason === 'locked'
            ? `SQLite database ${JSON.stringify(this.file)} stayed locked by another connection's write ` +
                `transaction for ${this.busyTimeoutMs} ms (busyTimeoutMs): keep write transactions short ` +
                '(no awaits on the network inside them), or raise busyTimeoutMs'
            : `the connection to ${JSON.stringify(this.file)} the store shares with your application stayed ` +
                `inside one of your transactions for ${this.busyTimeoutMs} ms (busyTimeoutMs); the store's ` +
                'statements wait for it to end. Keep transactions short, or give the store its own connection ' +
                '(`SqliteStore.connect({ filename })`)',
          { details: { file: this.file, busyTimeoutMs: this.busyTimeoutMs } },
        ),
    };
  }

  /** Same options as the constructor; with `filename`, loads `better-sqlite3` first. */
  static async connect(options: SqliteStoreOptions): Promise<SqliteStore> {
    if (options.filename !== undefined && !options.db) await loadBetterSqlite3();
    return new SqliteStore(options);
  }

  #run<T>(mode: TransactionMode, fn: (now: number) => T): Promise<T> {
    if (this.#closed) {
      return Promise.reject(
        new StoreError(
          'closed',
          `this SqliteStore (${JSON.stringify(this.file)}) was closed; make a new one`,
        ),
      );
    }
    return runTransaction(this.db, mode, () => fn(this.#now()), this.#tx);
  }

  #now(): number {
    return Number((runSync<{ now: number }>(this.db, sql.now)[0] as { now: number }).now);
  }

  enqueueStatement(messages: readonly EncodedMessage[]): SqlStatement {
    for (const m of messages) {
      if (m.delivery !== null) {
        const what = m.delivery.ack ? 'ack' : 'callback';
        throw new InvalidMessageError(
          what,
          `message ${m.id} has ${what}, which the SQLite store does not support (acknowledged delivery and ` +
            'callbacks need PostgresStore or PGliteStore): send it without that field',
        );
      }
    }
    let payloadBytes = 0;
    for (const m of messages) payloadBytes += m.payload.byteLength;
    if (payloadBytes <= JSON_ENQUEUE_MAX_PAYLOAD_BYTES) {
      return { sql: sql.enqueueJson, params: [sql.enqueueJsonParam(messages)] };
    }
    if (messages.length > MAX_ROWS_PER_INSERT) {
      throw new RangeError(
        `enqueueStatement takes at most ${MAX_ROWS_PER_INSERT} messages whose payloads total over ` +
          `${JSON_ENQUEUE_MAX_PAYLOAD_BYTES} bytes (SQLite's limit of parameters per statement)`,
      );
    }
    return { sql: sql.enqueue(messages.length), params: sql.enqueueParams(messages) };
  }

  executor(tx: SqliteTransactionHandle): SqlExecutor {
    return sqliteExecutor(tx);
  }

  /**
   * Enqueues synchronously, in the transaction open on `db`: for better-sqlite3's
   * `db.transaction(() => …)`, whose function cannot await (an async `outbox.enqueue` would run
   * its statements after that transaction ended). Validates every message before writing any, as
   * `outbox.enqueue` does; returns the id (or ids, in order).
   *
   * @throws NotATransactionError when no transaction is open on `db`, or `db` is not a
   *   better-sqlite3 Database (adapters are async: use `outbox.enqueue`).
   * @example
   * ```ts
   * const placeOrder = db.transaction((order) => {
   *   db.prepare('INSERT INTO orders (id, total) VALUES (?, ?)').run(order.id, order.total);
   *   return store.enqueueSync(db, { topic: 'order.created', key: order.id, payload: order });
   * });
   * const messageId = placeOrder(order);
   * ```
   */
  enqueueSync(db: SqliteDatabase, message: MessageInput, options?: SqliteEnqueueOptions): string;
  enqueueSync(
    db: SqliteDatabase,
    messages: readonly MessageInput[],
    options?: SqliteEnqueueOptions,
  ): string[];
  enqueueSync(
    db: SqliteDatabase,
    input: MessageInput | readonly MessageInput[],
    options: SqliteEnqueueOptions = {},
  ): string | string[] {
    if (!isSqliteDatabase(db)) {
      throw new NotATransactionError(
        'not a better-sqlite3 Database',
        'enqueueSync takes the better-sqlite3 Database your transaction is open on; for an ORM adapter ' +
          '(`execute(sql, params)`), use `await outbox.enqueue(adapter, message)`',
      );
    }
    if (!db.inTransaction) rejectAutocommitDatabase(db);
    const list = Array.isArray(input) ? (input as readonly MessageInput[]) : [input as MessageInput];
    const { atomic, ...limits } = options;
    if (atomic !== undefined && typeof atomic !== 'boolean') {
      throw new ConfigError(
        'atomic',
        `enqueue option atomic must be true or false, got ${JSON.stringify(atomic)}`,
      );
    }
    const members = list.map((m) => encodeMessage(m, limits));
    this.writeSync(db, atomic ? [encodeGroup(members)] : members);
    const ids = members.map((m) => m.id);
    return Array.isArray(input) ? ids : (ids[0] as string);
  }

  /**
   * Writes messages already validated and encoded (`outbox.encode(…)`) synchronously, in the
   * transaction open on `db`, in statements of 1,000 messages; every statement is built (and
   * every message checked) before the first one runs. What {@link enqueueSync} and a synchronous
   * `Outbox` method would call.
   *
   * @throws NotATransactionError when no transaction is open on `db`.
   */
  writeSync(db: SqliteDatabase, messages: readonly EncodedMessage[]): void {
    if (!isSqliteDatabase(db)) {
      throw new NotATransactionError(
        'not a better-sqlite3 Database',
        'writeSync takes the better-sqlite3 Database your transaction is open on',
      );
    }
    if (!db.inTransaction) rejectAutocommitDatabase(db);
    const statements: SqlStatement[] = [];
    for (let i = 0; i < messages.length; i += ENQUEUE_CHUNK) {
      statements.push(this.enqueueStatement(messages.slice(i, i + ENQUEUE_CHUNK)));
    }
    for (const s of statements) runSync(db, s.sql, s.params);
  }

  /**
   * Runs `fn` in a new write transaction on the store's connection, with that connection as the
   * handle (what `outbox.enqueue` and your own statements take): commits when `fn` resolves,
   * rolls back and rethrows when it throws. The inbox runs handlers in these. The transaction
   * holds SQLite's write lock until it ends, so keep `fn` short: other writers wait for it.
   */
  async transaction<T>(fn: (tx: SqliteDatabase) => Promise<T>): Promise<T> {
    if (this.#closed) throw closedError(this.file);
    const db = this.db;
    return whenBegun(db, 'IMMEDIATE', this.#tx, async () => {
      let result: T;
      try {
        result = await fn(db);
      } catch (err) {
        rollbackQuietly(db);
        // The handler's own error, as it threw it.
        throw err;
      }
      try {
        db.exec('COMMIT');
      } catch (err) {
        rollbackQuietly(db);
        throw describeSqliteError(err, { file: this.file });
      }
      return result;
    });
  }

  inboxRecordStatement(consumer: string, id: string): SqlStatement {
    return { sql: sql.inboxRecord, params: [consumer, id] };
  }

  async pruneInbox(consumer: string, olderThanMs: number, limit: number): Promise<number> {
    return this.#run('IMMEDIATE', (now) =>
      runChanges(this.db, sql.pruneInbox, [consumer, now - Math.round(olderThanMs), limit]),
    );
  }

  async claim(request: ClaimRequest): Promise<ClaimedBatch> {
    const leaseToken = randomUUID();
    const limit = Math.max(0, Math.floor(request.limit));
    const maxPerKey = Math.max(1, Math.floor(request.maxPerKey ?? 1));
    const messages = await this.#run('IMMEDIATE', (now) => {
      this.#holdRelayLock(now, request.owner);
      if (limit === 0) return [];
      const heads = runSync<{ seq: number; key: string | null }>(this.db, sql.claimHeads, [now, now, limit]);
      const seqs: number[] = [];
      for (const head of heads) {
        if (seqs.length >= limit) break;
        seqs.push(head.seq);
        const room = Math.min(maxPerKey - 1, limit - seqs.length);
        if (head.key === null || room <= 0) continue;
        // The head's run: its key's next rows while due and unleased, no gaps.
        const run = runSync<{ seq: number; available_at: number; lease_until: number | null }>(
          this.db,
          sql.claimRun,
          [head.key, head.seq, room],
        );
        for (const r of run) {
          if (r.available_at > now || (r.lease_until !== null && r.lease_until > now)) break;
          seqs.push(r.seq);
        }
      }
      if (seqs.length === 0) return [];
      const rows = runSync<MessageRow>(this.db, sql.lease, [
        leaseToken,
        request.owner,
        now + Math.ceil(request.leaseMs),
        JSON.stringify(seqs),
      ]);
      return rows.map(toMessage).sort((a, b) => Number(a.seq) - Number(b.seq));
    });
    return { leaseToken, messages };
  }

  /**
   * Takes or renews the relay lock, inside the claim's transaction; throws when another relay
   * holds it. The first claim starts a timer that renews it, so the lock stays held while the
   * relay claims nothing (an outage of its transport).
   */
  #holdRelayLock(now: number, owner: string): void {
    const row = runSync<{ owner: string; token: string; acquired_at: number; lease_until: number }>(
      this.db,
      sql.relayLockRead,
    )[0];
    if (row && row.token !== this.#lockToken && row.lease_until > now) {
      throw new StoreError(
        'relay_locked',
        `another relay holds SQLite database ${JSON.stringify(this.file)}: owner ${JSON.stringify(row.owner)}, ` +
          `since ${new Date(row.acquired_at).toISOString()}, lease until ${new Date(row.lease_until).toISOString()}. ` +
          'SQLite has one writer, so Mailroom runs one relay per database file: stop the other relay, or, if it ' +
          'died, this one takes over once its lease runs out',
        { details: { file: this.file, owner: row.owner, leaseUntil: new Date(row.lease_until) } },
      );
    }
    const acquiredAt = row && row.token === this.#lockToken ? row.acquired_at : now;
    runSync(this.db, sql.relayLockTake, [owner, this.#lockToken, acquiredAt, now + this.relayLockMs]);
    if (this.#lockRenewal === undefined) {
      this.#lockRenewal = setInterval(() => void this.#renewRelayLock(), Math.floor(this.relayLockMs / 3));
      // A held lock must not keep the process alive; close() gives it back.
      this.#lockRenewal.unref();
    }
  }

  async #renewRelayLock(): Promise<void> {
    try {
      const renewed = await this.#run('IMMEDIATE', (now) => {
        const row = runSync<{ token: string }>(this.db, sql.relayLockRead)[0];
        if (row?.token !== this.#lockToken) return false;
        runSync(this.db, sql.relayLockRenew, [now + this.relayLockMs, this.#lockToken]);
        return true;
      });
      // Taken over (this process stalled past the lease): the next claim finds out who holds it.
      if (!renewed) this.#stopRenewal();
    } catch {
      // Locked or closed: the next tick (or claim) tries again; the lease covers two misses.
    }
  }

  #stopRenewal(): void {
    if (this.#lockRenewal !== undefined) clearInterval(this.#lockRenewal);
    this.#lockRenewal = undefined;
  }

  /** Who holds this file's relay lock now, or null when no relay does. */
  async relayLock(): Promise<SqliteRelayLock | null> {
    return this.#run('DEFERRED', (now) => {
      const row = runSync<{ owner: string; token: string; acquired_at: number; lease_until: number }>(
        this.db,
        sql.relayLockRead,
      )[0];
      if (!row || row.lease_until <= now) return null;
      return {
        owner: row.owner,
        acquiredAt: new Date(row.acquired_at),
        leaseUntil: new Date(row.lease_until),
        mine: row.token === this.#lockToken,
      };
    });
  }

  async extendLease(leaseToken: string, leaseMs: number): Promise<void> {
    await this.#run('IMMEDIATE', (now) => {
      runSync(this.db, sql.extendLease, [now + Math.ceil(leaseMs), leaseToken]);
    });
  }

  async settle(settlement: Settlement): Promise<void> {
    const { delivered, released, retry, dead, leaseToken } = settlement;
    if (!delivered.length && !released.length && !retry.length && !dead.length) return;
    await this.#run('IMMEDIATE', (now) => {
      if (delivered.length) {
        const seqs = JSON.stringify(delivered.map((m) => Number(m.seq)));
        if (this.archive) runSync(this.db, sql.archiveDelivered, [now, seqs]);
        runSync(this.db, sql.deleteDelivered, [seqs]);
      }
      for (const r of released) {
        runSync(this.db, sql.release, [now, truncateError(r.error), Number(r.message.seq), leaseToken]);
      }
      for (const r of retry) {
        const at = now + Math.max(0, Math.round(r.delayMs));
        runSync(this.db, sql.retry, [at, truncateError(r.error), Number(r.message.seq), leaseToken]);
      }
      for (const d of dead) {
        const seq = Number(d.message.seq);
        runSync(this.db, sql.deadLetter, [now, truncateError(d.error), seq, leaseToken]);
        runSync(this.db, sql.deleteLeased, [seq, leaseToken]);
      }
    });
  }

  async nextDueInMs(): Promise<number | null> {
    return this.#run('DEFERRED', (now) => {
      const at = runSync<{ at: number | null }>(this.db, sql.nextDue, [now, now, now])[0]?.at;
      return at === null || at === undefined ? null : Math.max(0, at - now);
    });
  }

  /**
   * Calls `onWake` when another connection commits to the file: SQLite's `data_version` moves at
   * every commit by another connection (and never at a rollback), read every `wakeIntervalMs`.
   */
  async subscribe(onWake: () => void, onError: (err: unknown) => void): Promise<Unsubscribe> {
    const read = () =>
      Number(runSync<{ data_version: number }>(this.db, 'PRAGMA data_version')[0]?.data_version);
    let last: number;
    try {
      last = read();
    } catch (err) {
      throw describeSqliteError(err, { file: this.file });
    }
    let active = true;
    const timer = setInterval(() => {
      if (!active || !this.db.open) return;
      try {
        const now = read();
        if (now !== last) {
          last = now;
          onWake();
        }
      } catch (err) {
        onError(describeSqliteError(err, { file: this.file }));
      }
    }, this.wakeIntervalMs);
    // The relay's own timers keep the process alive while it runs; this one need not.
    timer.unref();
    const unsubscribe: Unsubscribe = async () => {
      active = false;
      clearInterval(timer);
      this.#subscriptions.delete(unsubscribe);
    };
    this.#subscriptions.add(unsubscribe);
    return unsubscribe;
  }

  async check(): Promise<void> {
    await this.#run('DEFERRED', () => {
      const version = String(runSync<{ version: string }>(this.db, sql.sqliteVersion)[0]?.version);
      if (!versionAtLeast(version, MIN_SQLITE_VERSION)) {
        throw new StoreError(
          'sqlite_too_old',
          `SQLite ${version} is too old for Mailroom (needs ${MIN_SQLITE_VERSION} or later, for STRICT tables and ` +
            'JSON functions): upgrade better-sqlite3',
          { details: { version, needed: MIN_SQLITE_VERSION } },
        );
      }
      const exists = runSync(this.db, sql.migrationsTableExists).length > 0;
      const current = exists
        ? Number(runSync<{ version: number }>(this.db, sql.schemaVersion)[0]?.version ?? 0)
        : 0;
      const known = latestSqliteVersion();
      if (current < known) {
        throw new StoreError(
          current === 0 ? 'schema_missing' : 'schema_outdated',
          `the Mailroom tables in SQLite database ${JSON.stringify(this.file)} are at version ${current}, this ` +
            `version needs ${known}: run \`await store.migrate()\` (or \`npx mailroom migrate --database-url sqlite:${this.file}\`)`,
          { details: { version: current, needed: known, file: this.file } },
        );
      }
      if (current > known) {
        throw new StoreError(
          'schema_too_new',
          `the Mailroom tables in SQLite database ${JSON.stringify(this.file)} are at version ${current}, newer ` +
            `than this version of Mailroom knows (${known}): upgrade mailroom`,
          { details: { version: current, known, file: this.file } },
        );
      }
    });
  }

  /**
   * Creates or upgrades Mailroom's tables (numbered files in `sql/sqlite/`, recorded in
   * `mailroom_migrations`) and switches the file to WAL. Safe to run twice, and from two
   * processes at once. Results per migration file.
   */
  async migrate(options: { dryRun?: boolean } = {}): Promise<SqliteMigrationResult[]> {
    if (this.#closed)
      throw new StoreError('closed', `this SqliteStore (${JSON.stringify(this.file)}) was closed`);
    return migrateSqlite(this.db, { ...options, ...this.#tx });
  }

  /** Exact counts (SQLite counts a table of a million rows in tens of milliseconds). */
  async stats(): Promise<OutboxStats> {
    return this.#run('DEFERRED', (now) => {
      const s = runSync<{ backlog: number; in_flight: number; scheduled: number; oldest: number | null }>(
        this.db,
        sql.stats,
        [now, now, now],
      )[0] as { backlog: number; in_flight: number; scheduled: number; oldest: number | null };
      const deadLetters = Number(runSync<{ n: number }>(this.db, sql.deadLetterCount)[0]?.n ?? 0);
      const topics = runSync<{ topic: string; backlog: number; dead: number }>(this.db, sql.topics, [
        MAX_TOPICS + 1,
      ]);
      const stats: OutboxStats = {
        backlog: Number(s.backlog),
        inFlight: Number(s.in_flight),
        scheduled: Number(s.scheduled),
        oldestAgeMs: s.oldest === null ? null : Math.max(0, now - s.oldest),
        deadLetters,
        topics: topics
          .slice(0, MAX_TOPICS)
          .map((t) => ({ topic: t.topic, backlog: Number(t.backlog), deadLetters: Number(t.dead) })),
      };
      if (topics.length > MAX_TOPICS) stats.topicsTruncated = true;
      return stats;
    });
  }

  #checkLimit(filter: DeadLetterFilter): void {
    if (filter.limit !== undefined && (!Number.isInteger(filter.limit) || filter.limit < 1)) {
      throw new ConfigError('limit', `limit must be a positive integer, got ${String(filter.limit)}`);
    }
  }

  async listDeadLetters(filter: DeadLetterFilter = {}): Promise<DeadLetter[]> {
    this.#checkLimit(filter);
    const { conds, params } = sql.deadLetterWhere(filter);
    if (filter.limit !== undefined) params.push(filter.limit);
    const rows = await this.#run('DEFERRED', () =>
      runSync<MessageRow & { dead_at: number; last_error: string | null }>(
        this.db,
        sql.listDeadLetters(whereClause(conds), filter.limit !== undefined),
        params,
      ),
    );
    return rows.map((r) => ({ ...toMessage(r), deadAt: new Date(r.dead_at), lastError: r.last_error }));
  }

  async countDeadLetters(filter: DeadLetterFilter = {}): Promise<{ count: number; asOf: Date }> {
    this.#checkLimit(filter);
    const { conds, params } = sql.deadLetterWhere(filter);
    return this.#run('DEFERRED', (now) => {
      const count = Number(
        runSync<{ n: number }>(this.db, sql.countDeadLetters(whereClause(conds)), params)[0]?.n,
      );
      return {
        count: filter.limit === undefined ? count : Math.min(count, filter.limit),
        asOf: new Date(now),
      };
    });
  }

  /**
   * Moves dead letters back into the outbox, due now, attempts reset, ids kept (a dead letter
   * whose id is in the outbox again is left alone). In batches of `batchSize`, each its own short
   * transaction, and only dead letters that died before the run began, so it ends even while
   * others keep dying.
   */
  async replayDeadLetters(
    filter: DeadLetterFilter = {},
    options: DeadLetterBatchOptions = {},
  ): Promise<DeadLetterOpResult[]> {
    return this.#deadLetterRun('replay', filter, options);
  }

  /** Deletes dead letters for good, in batches, as {@link replayDeadLetters}. */
  async purgeDeadLetters(
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
    // The run's upper bound: dead letters that die from here on are not this run's.
    const bound = await this.#run('DEFERRED', (now) => now);
    const { limit: _limit, ...narrowing } = filter;
    // The ids stay in the filter (no slices): the batch looks among all of them.
    return runDeadLetterBatches<{ at: number; id: string }>(
      action,
      filter,
      options,
      async ({ cursor, size }) => {
        const { conds, params } = sql.deadLetterWhere(narrowing);
        conds.push('dead_at <= ?');
        params.push(bound);
        if (cursor) {
          conds.push('(dead_at, id) > (?, ?)');
          params.push(cursor.at, cursor.id);
        }
        params.push(size);
        const { found, done } = await this.#run('IMMEDIATE', (now) => {
          const rows = runSync<{ id: string; dead_at: number; seq: number }>(
            this.db,
            sql.deadLetterBatch(whereClause(conds)),
            params,
          );
          // Replayed in their original order, so a key's replayed messages keep theirs.
          const ordered = action === 'replay' ? [...rows].sort((a, b) => a.seq - b.seq) : rows;
          const doneIds = new Set<string>();
          for (const r of ordered) {
            if (action === 'replay') {
              const inserted = runChanges(this.db, sql.replayOne, [now, r.id]);
              if (inserted === 0) continue;
            }
            runSync(this.db, sql.deleteDeadLetter, [r.id]);
            doneIds.add(r.id);
          }
          return { found: rows, done: rows.filter((r) => doneIds.has(r.id)) };
        });
        const last = found[found.length - 1];
        return {
          found: found.length,
          cursor: last ? { at: last.dead_at, id: last.id } : undefined,
          done: done.map((r) => r.id),
        };
      },
      { sliceIds: false },
    );
  }

  /** Deletes archived messages older than `retentionMs`; returns how many. */
  async pruneArchive(retentionMs: number): Promise<number> {
    return this.#run('IMMEDIATE', (now) =>
      runChanges(this.db, sql.pruneArchive, [now - Math.round(retentionMs)]),
    );
  }

  /**
   * Ends subscriptions, gives back the relay lock (another relay can start at once), and closes
   * the connection when the store opened it. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    for (const unsubscribe of [...this.#subscriptions]) await unsubscribe();
    const held = this.#lockRenewal !== undefined;
    this.#stopRenewal();
    if (held && this.db.open) {
      await this.#run('IMMEDIATE', () => runSync(this.db, sql.relayLockRelease, [this.#lockToken])).catch(
        () => undefined,
      );
    }
    this.#closed = true;
    if (this.#ownsDb && this.db.open) this.db.close();
  }
}

/**
 * The database file a `sqlite:` URL names, for `--database-url`: `sqlite:./data/app.db` and
 * `sqlite:data/app.db` (relative to the working directory), `sqlite:///var/lib/app.db` (absolute).
 * Refuses other schemes, an empty path and `:memory:` (a private database no other process or
 * connection can write to), naming the value.
 */
export function sqliteFilenameFromUrl(key: string, url: string): string {
  if (!url.startsWith('sqlite:')) {
    throw new ConfigError(
      key,
      `${key} must be a sqlite: URL such as sqlite:./app.db, got ${JSON.stringify(url)}`,
      {
        value: url,
      },
    );
  }
  let path = url.slice('sqlite:'.length);
  if (path.startsWith('//')) path = path.slice(2);
  const query = path.search(/[?#]/);
  if (query !== -1) {
    throw new ConfigError(
      key,
      `${key} ${JSON.stringify(url)} has a query or fragment, which a sqlite: URL does not take: give the file path only`,
      { value: url },
    );
  }
  if (path === '' || path === ':memory:') {
    throw new ConfigError(
      key,
      `${key} ${JSON.stringify(url)} names no database file: give one, e.g. sqlite:./app.db or sqlite:///var/lib/app.db ` +
        '(a database in memory cannot be shared with the application that writes the outbox)',
      { value: url },
    );
  }
  return decodeURIComponent(path);
}

function closedError(file: string): StoreError {
  return new StoreError('closed', `this SqliteStore (${JSON.stringify(file)}) was closed; make a new one`);
}

function openDatabase(filename: string, busyTimeoutMs: number): SqliteDatabase {
  if (!driver) {
    throw new ConfigError(
      'filename',
      'call `await SqliteStore.connect({ filename })` (it loads better-sqlite3), or pass a better-sqlite3 Database as db',
    );
  }
  let db: SqliteDatabase;
  try {
    // The timeout is the busy handler of your statements on this connection; the store's own
    // transactions never wait in it (see runTransaction).
    db = new driver(filename, { timeout: busyTimeoutMs });
  } catch (err) {
    throw describeSqliteError(err, { file: filename });
  }
  return db;
}
