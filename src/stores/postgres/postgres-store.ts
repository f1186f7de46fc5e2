import { randomUUID } from 'node:crypto';
import { ConfigError } from '../../core/errors/config-error.js';
import { StoreError } from '../../core/errors/store-error.js';
import { InvalidMessageError } from '../../core/errors/invalid-message-error.js';
import type {
  AdoptRequest,
  AckCounts,
  AckOutcome,
  AckRecord,
  CallbackEvent,
  ClaimIdsRequest,
  ClaimRequest,
  ClaimedBatch,
  DeadLetterBatchOptions,
  DeadLetterFilter,
  DeadLetterOpResult,
  MessageState,
  MessageStatus,
  OutboxStore,
  RelayInfo,
  RelayPresenceRecord,
  RelayState,
  Settlement,
  SqlExecutor,
  SqlStatement,
  StoreCapabilities,
  Unsubscribe,
  WakeGate,
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
import type { AckReceipt, DeadLetter, EncodedMessage, JsonValue, OutboxMessage } from '../../core/types.js';
import type {
  PgNotification,
  PgPool,
  PgPoolClient,
  PgQueryable,
  PgQueryResult,
  PgTransactionClient,
  PostgresTransactionHandle,
} from './postgres-driver.js';
import { describeDbError, isStatementError, type DbErrorContext } from './postgres-errors.js';
import { postgresExecutor, requirePostgresTransaction, type PgNamedQueryable } from './postgres-executor.js';
import { postgresSql, MAX_ROWS_PER_INSERT, type PostgresSql } from './postgres-sql.js';
import { latestVersion, migrate, type MigrationResult } from './migrate.js';
import { notifyChannel, SLOT_NAME, validateSchemaName } from './schema-name.js';
import { deadLetterBatchSize, runDeadLetterBatches } from '../dead-letter-run.js';
import { quoteIdent } from '../sql-identifier.js';
import { readStats, type PostgresStats } from './postgres-stats.js';
import { PostgresWakeGate } from './wake-gate.js';

/** Options of {@link PostgresStore}. */
export interface PostgresStoreOptions {
  /**
   * A `pg.Pool` (or anything shaped like it) the relay side uses for claims, settles and
   * LISTEN. Give this or `connectionString`.
   */
  pool?: PgPool;
  /** A PostgreSQL URL; the store makes (and on close ends) its own `pg.Pool`. Needs `pg`. */
  connectionString?: string;
  /** Connections in the pool the store makes from `connectionString`. @default 4 */
  poolSize?: number;
  /**
   * Schema holding Mailroom's tables: a plain identifier of at most 43 bytes (names derived from
   * it must fit PostgreSQL's 63), not a system schema (`pg_*`, `information_schema`).
   * @default 'mailroom'
   */
  schema?: string;
  /**
   * How the enqueueing transaction wakes relays at commit.
   *
   * - `'idle'`: a NOTIFY only while a relay is idle (it holds the wake gate, docs/design.md,
   *   "Wake-ups"). While relays are busy writers skip NOTIFY and the database-wide lock it
   *   takes at commit, and no wake-up is lost. Needs relays of version 0.2 or later: an older
   *   relay never takes the gate and finds messages by its poll.
   * - `true`: a NOTIFY from every enqueueing transaction (as before 0.2; as
   *   `SET mailroom.notify = on` for the SQL API).
   * - `false`: none; relays find work by polling.
   *
   * @default 'idle'
   */
  notify?: boolean | 'idle';
  /** Keep delivered messages in `<schema>.archive` instead of deleting them. @default false */
  archive?: boolean;
  /**
   * Let the driver prepare the one-message enqueue once per connection (node-postgres: a named
   * statement; postgres.js: `prepare`). Parsing and planning are most of that statement's cost.
   * The relay side also prepares its per-batch statements (deleting delivered messages,
   * extending leases) on the store's pool. Turn off behind a pooler in transaction mode that
   * cannot keep prepared statements (older PgBouncer). @default true
   */
  preparedStatements?: boolean;
  /**
   * Deadline for opening a connection of the pool the store makes from `connectionString`: TCP,
   * TLS, the PostgreSQL handshake and login (node-postgres's `connectionTimeoutMillis`; also
   * how long a call waits for a free connection when all are in use). A URL that points at
   * another kind of server (Redis, RabbitMQ) or at a black-holed address fails after this long
   * with a StoreError naming the host and port. Not for a `pool` you pass in: set
   * `connectionTimeoutMillis` on it.
   *
   * @default 10000
   * @example 3000
   */
  connectTimeoutMs?: number;
  /**
   * Longest a statement of the store's own pool may run: claims, settles, lease extensions,
   * stats, dead-letter runs, migrations. With `serverStatementTimeout` PostgreSQL cancels a
   * statement that runs longer (its transaction rolls back, its locks go), and the driver stops
   * waiting 5 s later still, for a server or link that no longer answers at all. Not for a `pool`
   * you pass in: set `statement_timeout` and `query_timeout` on it.
   *
   * @default 30000
   * @example 120000 // a migration that builds an index on a big outbox
   */
  statementTimeoutMs?: number;
  /**
   * Send `statement_timeout` (= `statementTimeoutMs`) when each connection opens, so the server
   * itself cancels a statement past its deadline. Without it only the driver stops waiting: the
   * statement goes on in the server, and a claim it gave up on still leases its rows (they come
   * back when the lease runs out). Turn off behind a pooler that refuses startup parameters
   * (PgBouncer without `statement_timeout` in `ignore_startup_parameters`, some managed poolers):
   * connecting then fails with code `startup_parameter_refused`.
   *
   * @default true
   */
  serverStatementTimeout?: boolean;
  /**
   * Table-less mode: `enqueue` writes no row but a logical decoding message
   * (`pg_logical_emit_message`) that a relay reading the log (`wakeup: 'replication'`) publishes
   * in commit order. No outbox table grows or needs vacuuming; the table is only the retry path.
   * Needs schema version 10, `wal_level = logical`, and the relay's slot: an enqueue fails (and
   * writes nothing) while the slot does not exist. Delayed messages and messages with `ack` or
   * `callback` need the table: enqueue them through a store without this option. See
   * docs/replication.md, "Table-less mode".
   *
   * @default false
   */
  tableless?: boolean;
  /** Table-less mode: the slot that must exist (the relay's `slot`). @default `${schema}_relay` */
  slot?: string;
  /**
   * Table-less mode: the prefix of the logical messages (the relay's `messagePrefix`).
   * @default the schema name
   */
  messagePrefix?: string;
}

const postgresStoreSchema = optionsSchema<PostgresStoreOptions>()('PostgresStore', {
  pool: custom('a pg.Pool (query, connect and end methods)', hasMethods<PgPool>('query', 'connect', 'end')),
  connectionString: string({ expected: 'a postgres:// URL', secret: true }),
  poolSize: integer({ min: 1, default: 4 }),
  // The type only; validateSchemaName applies the rules of schema names.
  schema: string({ expected: 'a schema name', default: 'mailroom' }),
  notify: custom(
    "true, false or 'idle'",
    (v): v is boolean | 'idle' => typeof v === 'boolean' || v === 'idle',
    { default: 'idle' },
  ),
  archive: boolean({ default: false }),
  preparedStatements: boolean({ default: true }),
  connectTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
  // PostgreSQL's statement_timeout is an int of milliseconds, the same bound as Node's timers.
  statementTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
  serverStatementTimeout: boolean({ default: true }),
  tableless: boolean({ default: false }),
  slot: string({ expected: 'a replication slot name' }),
  messagePrefix: string({ expected: 'a message prefix' }),
});

/** Options of the store's own pool; the bounds and defaults of the CLI flags that set them. */
export const postgresStoreOptionsSchema = postgresStoreSchema;

/**
 * How much longer than `statementTimeoutMs` the driver waits for an answer when the server was
 * told to cancel at `statementTimeoutMs`. The server's cancel must come first: it stops the
 * statement and rolls it back, where a driver that gives up first leaves it running (a claim
 * would still lease its rows). The grace covers the cancel's way back on a busy server.
 */
const SERVER_CANCEL_GRACE_MS = 5000;

/**
 * Deadlines of the store's own pool. Given with a pool of the caller's they are refused, not
 * ignored: a user who sets one expects a deadline, and that pool would not have it.
 */
const OWN_POOL_DEADLINES = ['connectTimeoutMs', 'statementTimeoutMs', 'serverStatementTimeout'] as const;

function toMessage(row: Record<string, unknown>): OutboxMessage {
  return {
    seq: String(row.seq),
    id: String(row.id),
    topic: String(row.topic),
    key: (row.key as string | null) ?? null,
    type: (row.type as string | null) ?? null,
    payload: row.payload as Buffer,
    contentType: String(row.content_type),
    headers: (row.headers as Record<string, string>) ?? {},
    createdAt: row.created_at as Date,
    attempts: Number(row.attempts),
  };
}

/** A statement node-postgres prepares once per connection under `name`. */
type NamedQuery = { name: string; text: string; values: unknown[] };

/** A checked-out client as the store's statements see it: plain or named statements. */
interface StoreClient extends PgQueryable {
  query(text: string, values?: unknown[]): Promise<PgQueryResult>;
  query(config: NamedQuery): Promise<PgQueryResult>;
}

function compareSeq(a: OutboxMessage, b: OutboxMessage): number {
  return a.seq.length - b.seq.length || (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0);
}

/**
 * The outbox in PostgreSQL (node-postgres for the relay side; enqueue also takes postgres.js
 * transactions). Claims use `FOR UPDATE SKIP LOCKED` under leases on the database clock, so
 * several relays share the work and a dead relay's rows come back when its lease runs out.
 *
 * @example
 * ```ts
 * const store = new PostgresStore({ pool, schema: 'mailroom' });
 * const outbox = new Outbox({ store });
 * await client.query('BEGIN');
 * await client.query('INSERT INTO orders …');
 * await outbox.enqueue(client, { topic: 'order.created', key: orderId, payload: order });
 * await client.query('COMMIT');
 * ```
 */
export class PostgresStore implements OutboxStore {
  // Typed wide so that stores built on this one (PGlite) can name themselves and narrow what
  // they can do.
  readonly name: string = 'postgres';
  readonly capabilities: StoreCapabilities = { notify: true };
  readonly schema: string;
  readonly notify: boolean | 'idle';
  readonly archive: boolean;
  readonly preparedStatements: boolean;
  /** Enqueue writes logical messages, not rows (see `PostgresStoreOptions.tableless`). */
  readonly tableless: boolean;
  /** The slot a table-less enqueue checks for. */
  readonly slot: string;
  /** The prefix of table-less messages. */
  readonly messagePrefix: string;
  readonly #pool: PgPool;
  readonly #ownsPool: boolean;
  readonly #sql: PostgresSql;
  /**
   * Where the claim's bounded walk over the keys goes on from (see the claim function): each
   * claim that walks keys walks the next slice, so every key is reached, however many there are.
   */
  #keyCursor: string | null = null;
  /** The server and deadlines named in the errors the store explains. */
  readonly #errorContext: DbErrorContext;
  #closed = false;

  constructor(options: PostgresStoreOptions) {
    const resolved = postgresStoreSchema.resolve(options);
    this.schema = validateSchemaName(resolved.schema);
    this.notify = resolved.notify;
    this.archive = resolved.archive;
    this.preparedStatements = resolved.preparedStatements;
    this.tableless = resolved.tableless;
    this.slot = resolved.slot ?? `${this.schema}_relay`;
    if (!SLOT_NAME.test(this.slot)) {
      throw new ConfigError(
        'slot',
        `PostgresStore option slot ${JSON.stringify(this.slot)} is not a replication slot name: use 1 to 63 of a-z, 0-9 and _`,
      );
    }
    this.messagePrefix = resolved.messagePrefix ?? this.schema;
    if (this.messagePrefix.length === 0) {
      throw new ConfigError(
        'messagePrefix',
        'PostgresStore option messagePrefix is empty; leave it out for the schema name',
      );
    }
    this.#sql = postgresSql(this.schema, notifyChannel(this.schema));
    if (resolved.pool) {
      const given = OWN_POOL_DEADLINES.filter((key) => options[key] !== undefined);
      if (given.length > 0) {
        throw new ConfigError(
          given[0] as string,
          `PostgresStore option${given.length > 1 ? 's' : ''} ${given.join(', ')} ` +
            `appl${given.length > 1 ? 'y' : 'ies'} to the pool the store makes from connectionString, ` +
            'and a pool was given: set connectionTimeoutMillis, statement_timeout and query_timeout ' +
            'on your pool instead (new pg.Pool({ connectionTimeoutMillis: 10000, … }))',
          { allowed: ['pool', 'schema', 'notify', 'archive', 'preparedStatements'] },
        );
      }
      this.#pool = resolved.pool;
      this.#ownsPool = false;
      this.#errorContext = { schema: this.schema, ...describePool(resolved.pool) };
    } else if (resolved.connectionString !== undefined) {
      const own = createPgPool(resolved.connectionString, resolved.poolSize, resolved);
      this.#pool = own.pool;
      this.#ownsPool = true;
      this.#errorContext = { schema: this.schema, ...own.context };
    } else {
      throw new ConfigError(
        'pool',
        'PostgresStore options pool and connectionString are both missing; give a pg.Pool as pool, ' +
          'or a postgres:// URL as connectionString',
      );
    }
  }

  /**
   * Same options as the constructor; with a `connectionString`, validates it and loads `pg`
   * first (the constructor cannot, being synchronous).
   */
  static async connect(options: PostgresStoreOptions): Promise<PostgresStore> {
    if (options.connectionString !== undefined && !options.pool) {
      validatePostgresUrl('connectionString', options.connectionString);
      await loadPg();
    }
    return new PostgresStore(options);
  }

  /** The NOTIFY channel relays of this schema listen on. */
  get channel(): string {
    return this.#sql.channel;
  }

  enqueueStatement(messages: readonly EncodedMessage[]): SqlStatement {
    if (messages.length > MAX_ROWS_PER_INSERT) {
      throw new RangeError(`enqueueStatement takes at most ${MAX_ROWS_PER_INSERT} messages`);
    }
    if (this.tableless) {
      for (const m of messages) {
        if (m.delayMs > 0 || m.delivery !== null) {
          const what = m.delayMs > 0 ? 'delay' : m.delivery?.ack ? 'ack' : 'callback';
          throw new InvalidMessageError(
            what,
            `message ${m.id} has ${what}, which needs the outbox table, and this PostgresStore is tableless: ` +
              'enqueue it through a PostgresStore without tableless on the same schema (the relay delivers both)',
          );
        }
      }
      return this.#sql.emit(messages, this.messagePrefix, this.slot, this.preparedStatements);
    }
    return this.#sql.enqueue(messages, this.notify, this.preparedStatements);
  }

  executor(tx: PostgresTransactionHandle): SqlExecutor {
    return postgresExecutor(tx);
  }

  /** For `Outbox({ requireTransaction: true })`: see {@link requirePostgresTransaction}. */
  requireTransaction(executor: SqlExecutor): Promise<void> {
    return requirePostgresTransaction(executor, this.#sql.requireTransaction);
  }

  /** A driver error explained: which server, what probably went wrong, what to do. */
  #wrap(err: unknown, phase: 'connect' | 'statement'): unknown {
    return describeDbError(err, { ...this.#errorContext, phase });
  }

  /** One statement on a client of its own (what `pool.query` does, with the errors told apart). */
  #query(sql: string, params?: unknown[]): Promise<PgQueryResult> {
    return this.#withClient((client) => client.query(sql, params));
  }

  /**
   * {@link #query} as a named statement, prepared once per connection, when
   * `preparedStatements` is on (a pooler in transaction mode cannot keep them); else plain.
   */
  #queryPrepared(name: string, sql: string, params: unknown[]): Promise<PgQueryResult> {
    if (!this.preparedStatements) return this.#query(sql, params);
    return this.#withClient((client) => client.query({ name, text: sql, values: params }));
  }

  /**
   * Runs `fn` on a client of its own. A checked-out client that loses its connection between
   * two queries emits 'error', which with no listener would crash the process; here the error
   * is kept, the failing query reports it, and the broken client is destroyed, not reused.
   *
   * After a failure that was not an answer from the server (a deadline, a broken socket) the
   * connection may still be busy with the statement, so `fn`'s later statements (a ROLLBACK)
   * fail at once with that error instead of queueing behind it, and the client is destroyed.
   */
  async #withClient<T>(
    fn: (client: StoreClient, markBroken: (err: Error) => void) => Promise<T>,
  ): Promise<T> {
    let client: PgPoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      throw this.#wrap(err, 'connect');
    }
    let broken: Error | undefined;
    const markBroken = (err: Error) => {
      broken ??= err;
    };
    client.on('error', markBroken);
    const guarded: StoreClient = {
      query: async (text: string | NamedQuery, values?: unknown[]) => {
        if (broken) throw broken;
        try {
          return await (typeof text === 'string'
            ? client.query(text, values)
            : (client as unknown as PgNamedQueryable).query(text));
        } catch (err) {
          if (!isStatementError(err)) markBroken(err instanceof Error ? err : new Error(String(err)));
          throw err;
        }
      },
    };
    try {
      return await fn(guarded, markBroken);
    } catch (err) {
      throw this.#wrap(err, 'statement');
    } finally {
      client.removeListener('error', markBroken);
      client.release(broken ?? false);
    }
  }

  #transaction<T>(fn: (client: PgQueryable) => Promise<T>): Promise<T> {
    return this.#withClient(async (client, markBroken) => {
      await client.query('BEGIN');
      try {
        const result = await fn(client);
        await client.query('COMMIT');
        return result;
      } catch (err) {
        // A client whose ROLLBACK failed is in an unknown state.
        await client.query('ROLLBACK').catch(markBroken);
        throw err;
      }
    });
  }

  async claim(request: ClaimRequest): Promise<ClaimedBatch> {
    const leaseToken = randomUUID();
    const res = await this.#query(this.#sql.claim, [
      request.limit,
      request.owner,
      leaseToken,
      Math.ceil(request.leaseMs),
      Math.max(1, Math.floor(request.maxPerKey ?? 1)),
      this.#keyCursor,
    ]);
    const rows = res.rows;
    const last = rows[rows.length - 1];
    if (last !== undefined && last.seq === null) {
      // The cursor row: where this claim's walk over the keys stopped (null: start over).
      this.#keyCursor = (last.key as string | null) ?? null;
      rows.pop();
    }
    const messages = rows.map(toMessage).sort(compareSeq);
    return { leaseToken, messages };
  }

  async claimIds(request: ClaimIdsRequest): Promise<ClaimedBatch> {
    const leaseToken = randomUUID();
    // Past the limit, ids are not claimed: their rows stay for the claim path.
    const ids = request.ids.slice(0, request.limit);
    if (ids.length === 0) return { leaseToken, messages: [] };
    const res = await this.#query(this.#sql.claimIds, [
      ids,
      request.xids ?? null,
      request.owner,
      leaseToken,
      Math.ceil(request.leaseMs),
      Math.max(1, Math.floor(request.maxPerKey ?? 1)),
    ]);
    return { leaseToken, messages: res.rows.map(toMessage).sort(compareSeq) };
  }

  async keysInTable(request: { keys: readonly string[]; xids?: readonly number[] }): Promise<string[]> {
    if (request.keys.length === 0) return [];
    const res = await this.#query(this.#sql.keysInTable, [request.keys, request.xids ?? null]);
    return res.rows.map((r) => String(r.key));
  }

  async adopt(request: AdoptRequest): Promise<void> {
    const { pending, dead } = request;
    if (pending.length === 0 && dead.length === 0) return;
    const col = <T>(rows: Array<{ message: OutboxMessage }>, f: (m: OutboxMessage) => T) =>
      rows.map((r) => f(r.message));
    const common = (rows: Array<{ message: OutboxMessage }>) => [
      col(rows, (m) => m.id),
      col(rows, (m) => m.topic),
      col(rows, (m) => m.key),
      col(rows, (m) => m.type),
      col(rows, (m) => m.payload),
      col(rows, (m) => m.contentType),
      col(rows, (m) => JSON.stringify(m.headers)),
      col(rows, (m) => m.createdAt),
    ];
    await this.#query(this.#sql.adopt, [
      ...common(pending),
      pending.map((p) => Math.max(0, Math.ceil(p.delayMs))),
      col(pending, (m) => m.attempts),
      pending.map((p) => p.error),
      ...common(dead),
      col(dead, (m) => m.attempts),
      dead.map((d) => d.error),
    ]);
  }

  async markLogRead(slot: string, lsn: string): Promise<void> {
    await this.#query(this.#sql.markLogRead, [slot, lsn]);
  }

  async logReadMark(slot: string): Promise<string | null> {
    const res = await this.#query(this.#sql.logReadMark, [slot]);
    return (res.rows[0]?.lsn as string | undefined) ?? null;
  }

  async extendLease(leaseToken: string, leaseMs: number): Promise<void> {
    await this.#queryPrepared(this.#sql.names.extendLease, this.#sql.extendLease, [
      leaseToken,
      Math.ceil(leaseMs),
    ]);
  }

  async settle(settlement: Settlement): Promise<void> {
    const { delivered, released, retry, dead, leaseToken } = settlement;
    // Each statement with the name it is prepared under, when it has one.
    const statements: Array<[string, unknown[], string?]> = [];
    if (delivered.length) {
      // The sequence numbers as one array literal (they are digits, from `seq::text`) instead
      // of an array the driver escapes element by element.
      statements.push(
        this.archive
          ? [this.#sql.archiveDelivered, [seqArray(delivered)], this.#sql.names.archiveDelivered]
          : [this.#sql.deleteDelivered, [seqArray(delivered)], this.#sql.names.deleteDelivered],
      );
    }
    if (released.length) {
      statements.push([
        this.#sql.release,
        [leaseToken, released.map((r) => r.message.seq), released.map((r) => truncateError(r.error))],
      ]);
    }
    if (retry.length) {
      statements.push([
        this.#sql.retry,
        [
          leaseToken,
          retry.map((r) => r.message.seq),
          retry.map((r) => Math.max(0, Math.round(r.delayMs))),
          retry.map((r) => truncateError(r.error)),
        ],
      ]);
    }
    if (dead.length) {
      statements.push([
        this.#sql.deadLetter,
        [leaseToken, dead.map((d) => d.message.seq), dead.map((d) => truncateError(d.error))],
      ]);
    }
    if (statements.length === 0) return;
    if (statements.length === 1) {
      // The common case, every message confirmed: one prepared statement.
      const [sql, params, name] = statements[0] as [string, unknown[], string?];
      const res = await (name === undefined
        ? this.#query(sql, params)
        : this.#queryPrepared(name, sql, params));
      // Fewer rows than delivered messages: some asked for an acknowledgement or a callback
      // (the plain delete leaves those), or were settled already; settleTracked finds which.
      if (delivered.length > 0 && (res.rowCount ?? 0) < delivered.length) {
        await this.#query(this.#sql.settleTracked, [seqArray(delivered), this.archive]);
      }
      return;
    }
    if (delivered.length)
      statements.splice(1, 0, [this.#sql.settleTracked, [seqArray(delivered), this.archive]]);
    await this.#transaction(async (client) => {
      for (const [sql, params] of statements) await client.query(sql, params);
    });
  }

  async nextDueInMs(): Promise<number | null> {
    const res = await this.#query(this.#sql.nextDue);
    const ms = res.rows[0]?.ms;
    return ms === null || ms === undefined ? null : Math.max(0, Number(ms));
  }

  /**
   * The wake gate a relay takes before it sleeps, so writers with `notify: 'idle'` (and the SQL
   * API's default) send a NOTIFY only then. On a connection of its own, checked out of the pool
   * only while the gate is held.
   */
  wakeGate(): WakeGate | undefined {
    return new PostgresWakeGate(this.#pool, this.#sql.wakeGate, (err, phase) => this.#wrap(err, phase));
  }

  async subscribe(onWake: () => void, onError: (err: unknown) => void): Promise<Unsubscribe> {
    return this.#listen(this.#sql.channel, () => onWake(), onError);
  }

  /** LISTEN on `channel` on a connection of its own, until the returned function is called. */
  async #listen(
    channel: string,
    onPayload: (payload: string) => void,
    onError: (err: unknown) => void,
  ): Promise<Unsubscribe> {
    let client: PgPoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      throw this.#wrap(err, 'connect');
    }
    const onNotification = (msg: PgNotification) => {
      if (msg.channel === channel) onPayload(msg.payload ?? '');
    };
    let done = false;
    const onClientError = (err: Error) => {
      if (done) return;
      done = true;
      cleanup();
      client.release(err);
      onError(err);
    };
    const onEnd = () => onClientError(new Error('LISTEN connection ended'));
    const cleanup = () => {
      client.removeListener('notification', onNotification);
      client.removeListener('error', onClientError);
      client.removeListener('end', onEnd);
    };
    client.on('notification', onNotification);
    client.on('error', onClientError);
    client.on('end', onEnd);
    try {
      await client.query(`LISTEN ${quoteIdent(channel)}`);
    } catch (err) {
      done = true;
      cleanup();
      client.release(err as Error);
      throw this.#wrap(err, 'statement');
    }
    return async () => {
      if (done) return;
      done = true;
      try {
        await client.query(`UNLISTEN ${quoteIdent(channel)}`);
        cleanup();
        client.release();
      } catch (err) {
        cleanup();
        client.release(err as Error);
      }
    };
  }

  /** Upserts this relay's presence row and heartbeat (schema version 13); see `OutboxStore.recordRelay`. */
  async recordRelay(presence: RelayPresenceRecord): Promise<void> {
    await this.#query(this.#sql.recordRelay, [
      presence.owner,
      presence.host,
      presence.pid,
      presence.version,
      presence.wakeup,
      presence.transport,
      presence.state,
      Math.max(1, Math.round(presence.heartbeatIntervalMs)),
    ]);
  }

  /** Deletes a relay's presence row; see `OutboxStore.removeRelay`. */
  async removeRelay(owner: string): Promise<void> {
    await this.#query(this.#sql.removeRelay, [owner]);
  }

  /** The relays' presence rows with liveness and leases; see `OutboxStore.listRelays`. */
  async listRelays(): Promise<RelayInfo[]> {
    const res = await this.#query(this.#sql.listRelays, [LIST_RELAYS_LEASE_LIMIT]);
    return res.rows.map(toRelayInfo);
  }

  async check(): Promise<void> {
    const res = await this.#query(this.#sql.schemaVersion);
    const version = Number(res.rows[0]?.version ?? 0);
    const known = latestVersion();
    if (version < known) {
      throw new StoreError(
        'schema_outdated',
        `the Mailroom schema "${this.schema}" is at version ${version}, this version needs ${known}: ` +
          `run \`npx mailroom migrate --schema ${this.schema}\``,
        { details: { version, needed: known } },
      );
    }
    if (version > known) {
      throw new StoreError(
        'schema_too_new',
        `the Mailroom schema "${this.schema}" is at version ${version}, newer than this version of Mailroom ` +
          `knows (${known}): upgrade mailroom`,
        { details: { version, known } },
      );
    }
  }

  /** Applies pending migrations (see {@link migrate}); results per migration file. */
  async migrate(options: { dryRun?: boolean } = {}): Promise<MigrationResult[]> {
    return this.#withClient((client) => migrate(client, { schema: this.schema, ...options }));
  }

  /**
   * Counts for `status` and metrics, cheap at any size: exact while a table holds at most
   * `EXACT_COUNT_LIMIT` (100,000) rows, estimated from PostgreSQL's statistics beyond (the result
   * says which, in `estimated`). Every statement goes through an index, a bounded count, the
   * catalog or a small block sample; none reads a whole table. See docs/stores/postgres.md,
   * "Stats on a big backlog".
   */
  async stats(): Promise<PostgresStats> {
    return readStats((sql, params) => this.#query(sql, params), this.#sql);
  }

  #deadLetterQuery(filter: DeadLetterFilter): { where: string; params: unknown[]; limit: string } {
    const { where, params } = this.#sql.deadLetterWhere(filter);
    let limit = '';
    if (filter.limit !== undefined) {
      if (!Number.isInteger(filter.limit) || filter.limit < 1) {
        throw new ConfigError('limit', `limit must be a positive integer, got ${String(filter.limit)}`);
      }
      params.push(filter.limit);
      limit = `LIMIT $${params.length}`;
    }
    return { where, params, limit };
  }

  async listDeadLetters(filter: DeadLetterFilter = {}): Promise<DeadLetter[]> {
    const q = this.#deadLetterQuery(filter);
    const res = await this.#query(this.#sql.listDeadLetters(q.where, q.limit), q.params);
    return res.rows.map((r) => ({
      ...toMessage(r),
      deadAt: r.dead_at as Date,
      lastError: (r.last_error as string | null) ?? null,
    }));
  }

  /**
   * How many dead letters match `filter`, counted without reading them, and the database time
   * of the count: pass `deadBefore: new Date(asOf.getTime() + 1)` to a replay or purge to act on
   * the dead letters counted (to the millisecond), not on those that die afterwards.
   */
  async countDeadLetters(filter: DeadLetterFilter = {}): Promise<{ count: number; asOf: Date }> {
    const { where, params } = this.#sql.deadLetterWhere(filter);
    const res = await this.#query(this.#sql.countDeadLetters(where), params);
    const row = res.rows[0] ?? {};
    const count = Number(row.n ?? 0);
    return {
      count: filter.limit === undefined ? count : Math.min(count, filter.limit),
      asOf: row.as_of as Date,
    };
  }

  /**
   * Moves dead letters back into the outbox, due now, attempts reset, ids kept. Works in
   * batches of `batchSize` (each statement its own short transaction, payloads never leave the
   * database) and acts only on dead letters that died before the run started, so a run over
   * all of them ends even while other processes keep dead-lettering.
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
    this.#deadLetterQuery(filter); // validates the limit before anything runs
    // The run's upper bound, on the database clock: dead letters that die from here on (a
    // replayed message failing again among them) are not this run's, so it always ends.
    const bound = String((await this.#query(this.#sql.clockText)).rows[0]?.t);
    const { ids: _ids, limit: _limit, ...narrowing } = filter;
    return runDeadLetterBatches<{ at: string; id: string }>(
      action,
      filter,
      options,
      async ({ ids, cursor, size }) => {
        const { conds, params } = this.#sql.deadLetterWhere({ ...narrowing, ...(ids ? { ids } : {}) });
        params.push(bound);
        conds.push(`dead_at <= $${params.length}::timestamptz`);
        if (cursor) {
          params.push(cursor.at, cursor.id);
          const a = `$${params.length - 1}::timestamptz`;
          // The plain dead_at bound lets the (dead_at) index start the scan at the cursor.
          conds.push(`dead_at >= ${a} AND (dead_at, id) > (${a}, $${params.length}::uuid)`);
        }
        params.push(size);
        const sql =
          action === 'replay'
            ? this.#sql.replayDeadLetterBatch(`WHERE ${conds.join(' AND ')}`, `LIMIT $${params.length}`)
            : this.#sql.purgeDeadLetterBatch(`WHERE ${conds.join(' AND ')}`, `LIMIT $${params.length}`);
        const rows = (await this.#deadLetterBatch(action, sql, params)).rows;
        const last = rows[rows.length - 1];
        return {
          found: rows.length,
          cursor: last ? { at: String(last.cursor_at), id: String(last.id) } : undefined,
          done: rows.filter((r) => r.done === true).map((r) => String(r.id)),
        };
      },
    );
  }

  /** Runs one batch; a replay also wakes the relays, in the same short transaction. */
  async #deadLetterBatch(action: 'replay' | 'purge', sql: string, params: unknown[]) {
    if (action === 'purge') return this.#query(sql, params);
    return this.#transaction(async (client) => {
      const res = await client.query(sql, params);
      if (res.rows.some((r) => r.done === true)) {
        await client.query('SELECT pg_notify($1, $2)', [this.#sql.channel, '']);
      }
      return res;
    });
  }

  /**
   * Runs `fn` in a transaction on a connection of the store's pool, with that connection as the
   * handle (what `outbox.enqueue` and your own statements take): commits when `fn` resolves,
   * rolls back and rethrows when it throws. The inbox runs handlers in these.
   */
  async transaction<T>(fn: (tx: PgTransactionClient) => Promise<T>): Promise<T> {
    return this.#withClient(async (client, markBroken) => {
      await client.query('BEGIN');
      let result: T;
      try {
        result = await fn(client as PgTransactionClient);
      } catch (err) {
        await client.query('ROLLBACK').catch(markBroken);
        throw new HandlerFailure(err);
      }
      await client.query('COMMIT');
      return result;
    }).catch((err: unknown) => {
      // The handler's own error, as it threw it: not a database error to explain.
      if (err instanceof HandlerFailure) throw err.error;
      throw err;
    });
  }

  inboxRecordStatement(consumer: string, id: string): SqlStatement {
    return { sql: this.#sql.inboxRecord, params: [consumer, id] };
  }

  async pruneInbox(consumer: string, olderThanMs: number, limit: number): Promise<number> {
    const res = await this.#query(this.#sql.pruneInbox, [consumer, Math.round(olderThanMs), limit]);
    return res.rowCount ?? 0;
  }

  async status(ids: readonly string[]): Promise<MessageStatus[]> {
    if (ids.length === 0) return [];
    const res = await this.#query(this.#sql.status, [ids]);
    return res.rows.map((r) => {
      const status: MessageStatus = { id: String(r.id), state: r.state as MessageState };
      if (r.topic !== null && r.topic !== undefined) status.topic = String(r.topic);
      if (r.attempts !== null && r.attempts !== undefined) status.attempts = Number(r.attempts);
      if (r.resends !== null && r.resends !== undefined) status.resends = Number(r.resends);
      if (r.acked_at) status.ackedAt = r.acked_at as Date;
      if (r.consumer !== null && r.consumer !== undefined) status.consumer = String(r.consumer);
      if (r.result !== null && r.result !== undefined) status.result = r.result as JsonValue;
      if (r.expired_at) status.expiredAt = r.expired_at as Date;
      if (r.deadline) status.ackDeadline = r.deadline as Date;
      if (r.last_error !== null && r.last_error !== undefined) status.lastError = String(r.last_error);
      return status;
    });
  }

  async applyAck(receipt: AckReceipt): Promise<AckOutcome> {
    const res = await this.#query(this.#sql.applyAck, [
      receipt.id,
      receipt.consumer,
      receipt.result === undefined ? null : JSON.stringify(receipt.result),
    ]);
    return res.rows[0]?.outcome as AckOutcome;
  }

  async sweepAcks(limit: number): Promise<{ resent: number; expired: number }> {
    const res = await this.#query(this.#sql.ackSweep, [limit]);
    const row = res.rows[0] ?? {};
    return { resent: Number(row.resent ?? 0), expired: Number(row.expired ?? 0) };
  }

  async nextAckDueInMs(): Promise<number | null> {
    const res = await this.#query(this.#sql.nextAckDue);
    const ms = res.rows[0]?.ms;
    return ms === null || ms === undefined ? null : Math.max(0, Number(ms));
  }

  async listAcks(filter: { state?: AckRecord['state']; limit?: number } = {}): Promise<AckRecord[]> {
    const limit = filter.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1) {
      throw new ConfigError('limit', `limit must be a positive integer, got ${String(limit)}`);
    }
    const state = filter.state === 'awaiting-ack' ? 'awaiting' : filter.state;
    const res = await this.#query(
      this.#sql.listAcks(state !== undefined),
      state !== undefined ? [limit, state] : [limit],
    );
    return res.rows.map((r) => ({
      id: String(r.id),
      state: r.state === 'awaiting' ? 'awaiting-ack' : (r.state as AckRecord['state']),
      topic: (r.topic as string | null) ?? null,
      key: (r.key as string | null) ?? null,
      resends: Number(r.resends),
      maxResends: r.max_resends === null || r.max_resends === undefined ? null : Number(r.max_resends),
      deadline: (r.deadline as Date | null) ?? null,
      sentAt: (r.sent_at as Date | null) ?? null,
      ackedAt: (r.acked_at as Date | null) ?? null,
      consumer: (r.consumer as string | null) ?? null,
      result: (r.result as JsonValue | null) ?? null,
      expiredAt: (r.expired_at as Date | null) ?? null,
    }));
  }

  async ackCounts(): Promise<AckCounts> {
    const row = (await this.#query(this.#sql.ackCounts)).rows[0] ?? {};
    return {
      awaiting: Number(row.awaiting ?? 0),
      acknowledged: Number(row.acknowledged ?? 0),
      expired: Number(row.expired ?? 0),
      callbacksPending: Number(row.callbacks_pending ?? 0),
      callbacksDead: Number(row.callbacks_dead ?? 0),
    };
  }

  async pruneAcks(olderThanMs: number, limit: number): Promise<number> {
    const res = await this.#query(this.#sql.pruneAcks, [Math.round(olderThanMs), limit]);
    return res.rowCount ?? 0;
  }

  async claimCallbacks(request: { owner: string; limit: number; leaseMs: number }): Promise<{
    leaseToken: string;
    callbacks: CallbackEvent[];
  }> {
    const leaseToken = randomUUID();
    const res = await this.#query(this.#sql.claimCallbacks, [
      request.limit,
      request.owner,
      leaseToken,
      Math.ceil(request.leaseMs),
    ]);
    const callbacks = res.rows.map((r): CallbackEvent => ({
      id: String(r.id),
      messageId: String(r.message_id),
      topic: String(r.topic),
      event: r.event as CallbackEvent['event'],
      url: String(r.url),
      attempts: Number(r.attempts),
      detail: (r.detail as Record<string, JsonValue>) ?? {},
      occurredAt: r.occurred_at as Date,
    }));
    return { leaseToken, callbacks };
  }

  async settleCallbacks(settlement: {
    leaseToken: string;
    delivered: string[];
    retry: Array<{ id: string; delayMs: number; error: string }>;
    dead: Array<{ id: string; error: string }>;
  }): Promise<void> {
    const { leaseToken, delivered, retry, dead } = settlement;
    const statements: Array<[string, unknown[]]> = [];
    if (delivered.length) statements.push([this.#sql.callbacksDelivered, [delivered]]);
    if (retry.length) {
      statements.push([
        this.#sql.callbacksRetry,
        [
          leaseToken,
          retry.map((r) => r.id),
          retry.map((r) => Math.max(0, Math.round(r.delayMs))),
          retry.map((r) => truncateError(r.error)),
        ],
      ]);
    }
    if (dead.length) {
      statements.push([
        this.#sql.callbacksDead,
        [leaseToken, dead.map((d) => d.id), dead.map((d) => truncateError(d.error))],
      ]);
    }
    if (statements.length === 0) return;
    await this.#transaction(async (client) => {
      for (const [sql, params] of statements) await client.query(sql, params);
    });
  }

  async nextCallbackDueInMs(): Promise<number | null> {
    const res = await this.#query(this.#sql.nextCallbackDue);
    const ms = res.rows[0]?.ms;
    return ms === null || ms === undefined ? null : Math.max(0, Number(ms));
  }

  /**
   * Calls `onChange(id)` when a message with `ack` changes state (delivered, acknowledged,
   * resent, expired), through LISTEN on a connection of its own; `outbox.waitFor` wakes on it.
   */
  async subscribeState(
    onChange: (id: string) => void,
    onError: (err: unknown) => void,
  ): Promise<Unsubscribe> {
    return this.#listen(this.#sql.stateChannel, (payload) => onChange(payload), onError);
  }

  /** Deletes archived messages older than `retentionMs`; returns how many. */
  async pruneArchive(retentionMs: number): Promise<number> {
    const res = await this.#query(this.#sql.pruneArchive, [Math.round(retentionMs)]);
    return res.rowCount ?? 0;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ownsPool) await this.#pool.end();
  }
}

/** Carries a handler's error through the store's error explaining, untouched. */
/** Most leased rows `listRelays` reads to count each relay's messages in flight. */
const LIST_RELAYS_LEASE_LIMIT = 100_000;

function toRelayInfo(row: Record<string, unknown>): RelayInfo {
  const oldest = row.oldest_lease_until;
  return {
    owner: String(row.owner),
    host: String(row.host),
    pid: Number(row.pid),
    version: String(row.version),
    wakeup: String(row.wakeup) as RelayInfo['wakeup'],
    transport: String(row.transport),
    state: String(row.state) as RelayState,
    heartbeatIntervalMs: Number(row.heartbeat_interval_ms),
    startedAt: new Date(row.started_at as string | Date),
    heartbeatAt: new Date(row.heartbeat_at as string | Date),
    heartbeatAgeMs: Math.max(0, Math.round(Number(row.heartbeat_age_ms))),
    alive: row.alive === true,
    inFlight: {
      messages: Number(row.in_flight),
      oldestLeaseUntil: oldest === null || oldest === undefined ? null : new Date(oldest as string | Date),
    },
  };
}

class HandlerFailure {
  constructor(readonly error: unknown) {}
}

/** Dead letters per statement of a replay or purge run. */
export { DEFAULT_DEAD_LETTER_BATCH } from '../dead-letter-run.js';

export type { DeadLetterBatchOptions } from '../../core/ports.js';

/**
 * The sequence numbers of `messages` as one PostgreSQL array literal (`{1,2,3}`), for a
 * `$n::bigint[]` parameter. `seq` is the decimal text of a bigint, so nothing needs quoting.
 */
function seqArray(messages: readonly { seq: string }[]): string {
  return `{${messages.map((m) => m.seq).join(',')}}`;
}

function truncateError(error: string): string {
  return error.length > 4000 ? `${error.slice(0, 4000)}…` : error;
}

type PgModule = {
  Pool: new (config: Record<string, unknown>) => PgPool;
};

let pgModule: PgModule | undefined;

/** Loads `pg` once; the store only needs it when it makes its own pool. */
export async function loadPg(): Promise<PgModule> {
  if (pgModule) return pgModule;
  try {
    const mod = (await import('pg')) as unknown as { default?: PgModule } & PgModule;
    pgModule = mod.default ?? mod;
    return pgModule;
  } catch (err) {
    throw new ConfigError('pg', 'the PostgreSQL store needs the `pg` package: run `npm install pg`', {}, err);
  }
}

/** The deadlines of a pool made from a URL; see {@link PostgresStoreOptions}. */
export type PgPoolDeadlines = Required<
  Pick<PostgresStoreOptions, 'connectTimeoutMs' | 'statementTimeoutMs' | 'serverStatementTimeout'>
>;

/** A pool made from a URL, and what its errors are explained with (server, deadlines). */
interface OwnPool {
  pool: PgPool;
  context: Omit<DbErrorContext, 'schema' | 'phase'>;
}

function createPgPool(connectionString: string, max: number, deadlines: PgPoolDeadlines): OwnPool {
  if (!pgModule) {
    throw new ConfigError(
      'connectionString',
      'call `await PostgresStore.connect({ connectionString })` (it loads `pg`), or pass a pool',
    );
  }
  const { connectTimeoutMs, statementTimeoutMs, serverStatementTimeout } = deadlines;
  const readTimeoutMs = serverStatementTimeout
    ? Math.min(MAX_TIMER_MS, statementTimeoutMs + SERVER_CANCEL_GRACE_MS)
    : statementTimeoutMs;
  const pool = new pgModule.Pool({
    connectionString,
    max,
    // Also bounds the wait for a free connection when all `max` are in use.
    connectionTimeoutMillis: connectTimeoutMs,
    // Client side: the driver stops waiting, and the pool destroys that connection.
    query_timeout: readTimeoutMs,
    // Server side, sent in the startup packet: PostgreSQL cancels and rolls back the statement.
    ...(serverStatementTimeout ? { statement_timeout: statementTimeoutMs } : {}),
  });
  // An idle client's error (server restart, pg_terminate_backend) must not crash the process:
  // the pool drops that client and the next query gets a fresh one.
  pool.on?.('error', () => undefined);
  return {
    pool,
    context: {
      target: redactUrl(connectionString),
      connectTimeoutMs,
      readTimeoutMs,
      ...(serverStatementTimeout ? { statementTimeoutMs } : {}),
    },
  };
}

/**
 * A `pg.Pool` for a PostgreSQL URL with the deadlines the store's own pool has (defaults as in
 * {@link PostgresStoreOptions}), for code beside a store that needs connections of its own (the
 * CLI's `send` runs a transaction on one). Loads `pg`. Explain its errors with
 * `describeDbError(err, { schema, target: redactUrl(url), phase })`.
 */
export async function openPgPool(
  connectionString: string,
  options: { max?: number } & Partial<PgPoolDeadlines> = {},
): Promise<PgPool> {
  const resolved = openPgPoolSchema.resolve(options);
  validatePostgresUrl('connectionString', connectionString);
  await loadPg();
  return createPgPool(connectionString, resolved.max, resolved).pool;
}

const openPgPoolSchema = optionsSchema<{ max?: number } & Partial<PgPoolDeadlines>>()('openPgPool', {
  max: integer({ min: 1, default: 1 }),
  connectTimeoutMs: postgresStoreSchema.fields.connectTimeoutMs,
  statementTimeoutMs: postgresStoreSchema.fields.statementTimeoutMs,
  serverStatementTimeout: postgresStoreSchema.fields.serverStatementTimeout,
});

/** Which server a pool the caller passed in connects to, as far as its settings tell. */
function describePool(pool: PgPool): { target?: string } {
  const settings = pool.options;
  if (typeof settings?.connectionString === 'string') return { target: redactUrl(settings.connectionString) };
  if (typeof settings?.host === 'string') {
    const port =
      typeof settings.port === 'number' || typeof settings.port === 'string' ? settings.port : 5432;
    return { target: `${settings.host}:${port}` };
  }
  return {};
}

/** Validates a PostgreSQL URL, with an error that names it (password hidden). */
export function validatePostgresUrl(key: string, value: string): void {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(
      key,
      `${key} is not a URL: ${JSON.stringify(redactUrl(value))}; expected postgres://user:password@host:5432/database`,
      { value: redactUrl(value) },
    );
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new ConfigError(
      key,
      `${key} must be a postgres:// or postgresql:// URL, got scheme "${url.protocol}" in ${redactUrl(value)}`,
      { value: redactUrl(value) },
    );
  }
}
