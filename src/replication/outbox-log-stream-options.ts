import { ConfigError } from '../core/errors/config-error.js';
import { silentLogger, type Logger } from '../core/logger.js';
import {
  boolean,
  custom,
  hasMethods,
  integer,
  MAX_TIMER_MS,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../core/options-schema.js';
import { SLOT_NAME, validateSchemaName } from '../stores/postgres/schema-name.js';

/**
 * Connection settings in node-postgres's `ClientConfig` shape (`host`, `port`, `user`,
 * `password`, `database`, `ssl`…), passed through to `pg.Client`. The stream adds
 * `replication: 'database'` for its replication connection.
 */
export type ReplicationConnectionConfig = Readonly<Record<string, unknown>> & {
  readonly host?: string;
  readonly port?: number;
  readonly user?: string;
  readonly database?: string;
  readonly connectionString?: string;
};

/** Options of {@link OutboxLogStream}. Give `connectionString` or `connection`. */
export interface OutboxLogStreamOptions {
  /** Where to connect, e.g. `postgres://relay@db:5432/app`. */
  connectionString?: string;
  /** Or node-postgres client settings (`{ host, port, user, password, database, ssl }`). */
  connection?: ReplicationConnectionConfig;
  /** The schema of the outbox table; the stream publishes `<schema>.outbox`. */
  schema: string;
  /**
   * The logical replication slot (`[a-z0-9_]`, at most 63 characters). One stream at a time can
   * use a slot; a second one fails with `slot_in_use`.
   * @default `${schema}_relay`
   */
  slot?: string;
  /**
   * The publication (`[a-z0-9_]`, at most 63): created as `FOR TABLE <schema>.outbox WITH
   * (publish = 'insert')` when missing; an existing one must cover exactly that.
   * @default `${schema}_outbox`
   */
  publication?: string;
  /**
   * Logical decoding messages (`pg_logical_emit_message`) with this prefix are yielded too;
   * others are ignored. Prefer transactional ones (`pg_logical_emit_message(true, …)`): they
   * arrive with their transaction's commit. A non-transactional message is not flushed to the
   * WAL by its own statement (PostgreSQL before 17 has no `flush` argument), so it reaches the
   * stream only with the server's next WAL flush (another commit, or the WAL writer).
   * @default the schema name (what a table-less `PostgresStore` of the schema writes)
   */
  messagePrefix?: string;
  /**
   * How often a standby status update (reporting the confirmed position) is sent while nothing
   * else asks for one, like `wal_receiver_status_interval`. Must be well below the server's
   * `wal_sender_timeout` (60 s by default), or the server ends the connection.
   * @default 10000
   */
  statusIntervalMs?: number;
  /**
   * The connection counts as lost when the server sends nothing this long, although the stream
   * asks it for a reply at every idle status update (like `wal_receiver_timeout`).
   * @default 60000
   */
  timeoutMs?: number;
  /** Deadline of each connection attempt. @default 10000 */
  connectTimeoutMs?: number;
  /**
   * Deadline of each setup statement. Creating a slot waits for every transaction open at that
   * moment (in any database of the server) to end, so it can take as long as the longest one.
   * @default 60000
   */
  setupTimeoutMs?: number;
  /** How long `stop()` waits for the server to end the stream before it cuts the socket. @default 5000 */
  stopTimeoutMs?: number;
  /**
   * Create the slot when it is missing. Set `false` when a missing slot must be noticed rather
   * than replaced (a relay that knows it confirmed positions on a slot that is now gone).
   * @default true
   */
  createSlot?: boolean;
  /** Create the publication when it is missing. @default true */
  createPublication?: boolean;
  /**
   * Committed rows and messages held for `next()` before the stream stops reading the socket
   * (it reads on once half have been taken). A transaction still being received is always read
   * to its end.
   * @default 10000
   */
  highWaterMark?: number;
  /** `application_name` of the replication connection, shown in pg_stat_replication. @default 'mailroom-relay' */
  applicationName?: string;
  /** @default silentLogger */
  logger?: Logger;
  /** Aborting it stops the stream, as `stop()` does. */
  signal?: AbortSignal;
}

const NAME = SLOT_NAME;
const NAME_EXPECTED = 'a name of 1 to 63 characters from a-z, 0-9 and _';

const isConnectionConfig = (v: unknown): v is ReplicationConnectionConfig =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

const schema = optionsSchema<OutboxLogStreamOptions>()(
  'OutboxLogStream',
  {
    connectionString: string({ secret: true }),
    connection: custom(
      'node-postgres client settings ({ host, port, user, password, database… })',
      isConnectionConfig,
    ),
    schema: string({ required: true }),
    slot: string({ pattern: NAME, expected: NAME_EXPECTED, default: (r) => `${String(r.schema)}_relay` }),
    publication: string({
      pattern: NAME,
      expected: NAME_EXPECTED,
      default: (r) => `${String(r.schema)}_outbox`,
    }),
    messagePrefix: string({ default: (r) => String(r.schema) }),
    statusIntervalMs: integer({ min: 10, max: MAX_TIMER_MS, default: 10_000 }),
    timeoutMs: integer({ min: 100, max: MAX_TIMER_MS, default: 60_000 }),
    connectTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
    setupTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 60_000 }),
    stopTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 5_000 }),
    createSlot: boolean({ default: true }),
    createPublication: boolean({ default: true }),
    highWaterMark: integer({ min: 1, max: 10_000_000, default: 10_000 }),
    applicationName: string({ default: 'mailroom-relay' }),
    logger: custom(
      'a logger with debug, info, warn and error',
      hasMethods<Logger>('debug', 'info', 'warn', 'error'),
      {
        default: silentLogger,
      },
    ),
    signal: custom('an AbortSignal', (v): v is AbortSignal => v instanceof AbortSignal),
  },
  { ordered: [['statusIntervalMs', 'timeoutMs']] },
);

export type ResolvedOutboxLogStreamOptions = ResolvedOptions<typeof schema.fields>;

/** Applies defaults and checks every option; throws a ConfigError naming the key. */
export function resolveOutboxLogStreamOptions(
  options: OutboxLogStreamOptions,
): ResolvedOutboxLogStreamOptions {
  const resolved = schema.resolve(options);
  validateSchemaName(resolved.schema);
  if ((resolved.connectionString === undefined) === (resolved.connection === undefined)) {
    throw new ConfigError(
      'connectionString',
      'OutboxLogStream needs exactly one of connectionString (a postgres:// URL) and connection (client settings)',
    );
  }
  // Defaults derived from the schema skip the pattern check: say where a bad one came from.
  for (const key of ['slot', 'publication'] as const) {
    if (!NAME.test(resolved[key])) {
      throw new ConfigError(
        key,
        `OutboxLogStream option ${key} defaults to "${resolved[key]}" (from schema "${resolved.schema}"), which is ` +
          `not ${NAME_EXPECTED}; give ${key} explicitly`,
        { value: resolved[key] },
      );
    }
  }
  return resolved;
}
