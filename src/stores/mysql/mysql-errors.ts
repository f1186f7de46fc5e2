import { StoreError } from '../../core/errors/store-error.js';
import { isMailroomError } from '../../core/errors/mailroom-error.js';
import { portHint } from '../../core/well-known-ports.js';

/**
 * Server error numbers and driver codes after which the same operation can succeed later:
 * deadlocks, lock waits, a server going away or restarting, connections that broke. mysql2 puts
 * the server's number on `errno` and a name on `code` (`ER_LOCK_DEADLOCK`); socket errors have
 * only the code.
 */
export const RETRYABLE_MYSQL_ERRORS = new Set<number | string>([
  1213, // ER_LOCK_DEADLOCK: the transaction was rolled back, run it again
  1205, // ER_LOCK_WAIT_TIMEOUT: innodb_lock_wait_timeout passed
  1040, // ER_CON_COUNT_ERROR: too many connections
  1053, // ER_SERVER_SHUTDOWN
  1927, // ER_CONNECTION_KILLED (MariaDB)
  2006, // CR_SERVER_GONE_ERROR
  2013, // CR_SERVER_LOST
  3024, // ER_QUERY_TIMEOUT (MySQL max_execution_time)
  1969, // ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
  'PROTOCOL_CONNECTION_LOST',
  'PROTOCOL_SEQUENCE_TIMEOUT',
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
]);

interface MySqlErrorShape {
  code?: unknown;
  errno?: unknown;
  message?: unknown;
  fatal?: unknown;
  sqlState?: unknown;
  cause?: unknown;
}

function shape(err: unknown): MySqlErrorShape {
  return err !== null && typeof err === 'object' ? (err as MySqlErrorShape) : {};
}

/** The server's error number, when the server sent the error. */
export function mysqlErrno(err: unknown): number | undefined {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const errno = shape(e).errno;
    if (typeof errno === 'number' && errno >= 1000 && typeof shape(e).sqlState === 'string') return errno;
    // Prisma (P2010) keeps the driver's error as meta.driverAdapterError.cause: { kind: 'mysql', code }.
    const viaPrisma = (
      e as { meta?: { driverAdapterError?: { cause?: { kind?: unknown; code?: unknown } } } }
    ).meta?.driverAdapterError?.cause;
    if (viaPrisma?.kind === 'mysql' && typeof viaPrisma.code === 'number') return viaPrisma.code;
    e = shape(e).cause;
  }
  return undefined;
}

/** True when the error is transient: retry the operation after a pause. Looks through causes. */
export function isRetryableMySqlError(err: unknown): boolean {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const { code, errno } = shape(e);
    if (typeof errno === 'number' && RETRYABLE_MYSQL_ERRORS.has(errno)) return true;
    if (typeof code === 'string' && RETRYABLE_MYSQL_ERRORS.has(code)) return true;
    e = shape(e).cause;
  }
  return false;
}

/**
 * True for an error the server sent about a statement, on a connection that is still usable
 * (mysql2 marks the others `fatal`: a lost socket, a protocol error, a deadline).
 */
export function isMySqlStatementError(err: unknown): boolean {
  const e = shape(err);
  return typeof e.sqlState === 'string' && typeof e.errno === 'number' && e.fatal !== true;
}

/** Where and how a failing call ran, for the message that explains it. */
export interface MySqlErrorContext {
  /** The tables' name, e.g. `mailroom_outbox`, for "run migrate" messages. */
  tables: string;
  /** The server, `host:port` (never the password). */
  target?: string;
  /** Whether the error came while connecting or from a statement. */
  phase?: 'connect' | 'statement';
  connectTimeoutMs?: number;
  statementTimeoutMs?: number;
  /** How to name the migrate command (database and prefix flags). */
  migrateHint: string;
}

interface Case {
  code: string;
  errnos?: readonly number[];
  codes?: readonly string[];
  explain(f: { endpoint: string; message: string; ctx: MySqlErrorContext; hint: string }): string;
}

const CASES: readonly Case[] = [
  {
    code: 'schema_missing',
    errnos: [1146, 1305], // ER_NO_SUCH_TABLE, ER_SP_DOES_NOT_EXIST
    explain: (f) =>
      `the Mailroom tables (${f.ctx.tables}) are missing or incomplete in the database at ${f.endpoint}: ` +
      `run \`${f.ctx.migrateHint}\` (${f.message})`,
  },
  {
    code: 'database_missing',
    errnos: [1049, 1046], // ER_BAD_DB_ERROR, ER_NO_DB_ERROR
    explain: (f) =>
      `${f.message} on ${f.endpoint}: create the database (CREATE DATABASE …) or fix the database name in the URL`,
  },
  {
    code: 'auth_failed',
    errnos: [1045, 1044, 1698], // access denied (password, database), no password for a socket user
    explain: (f) =>
      `the server at ${f.endpoint} refused the login (${f.message}): check the user and password in the URL ` +
      "(percent-encode special characters) and the user's host and grants",
  },
  {
    code: 'too_many_connections',
    errnos: [1040],
    explain: (f) =>
      `the server at ${f.endpoint} has no connection left (${f.message}): lower the pool sizes of this and other ` +
      "clients, or raise the server's max_connections",
  },
  {
    code: 'deadlock',
    errnos: [1213],
    explain: (f) =>
      `the server at ${f.endpoint} found a deadlock and rolled back the transaction (${f.message}); ` +
      'run it again',
  },
  {
    code: 'lock_wait_timeout',
    errnos: [1205],
    explain: (f) =>
      `a statement waited for a row lock longer than innodb_lock_wait_timeout on ${f.endpoint} (${f.message}): ` +
      'another session holds the rows (see information_schema.INNODB_TRX, or sys.innodb_lock_waits on MySQL)',
  },
  {
    code: 'statement_timeout',
    errnos: [3024, 1969],
    codes: ['PROTOCOL_SEQUENCE_TIMEOUT'],
    explain: (f) =>
      `a statement on ${f.endpoint} ran longer than ` +
      `${f.ctx.statementTimeoutMs === undefined ? 'its deadline' : `${f.ctx.statementTimeoutMs} ms (statementTimeoutMs)`} ` +
      `(${f.message}): the connection was closed; look for long transactions holding locks, or raise statementTimeoutMs`,
  },
  {
    code: 'unreachable',
    codes: ['ECONNREFUSED'],
    explain: (f) =>
      `cannot reach MySQL/MariaDB at ${f.endpoint}: nothing accepts connections there (ECONNREFUSED); check the ` +
      'host and port in the URL and that the server is running and listens there (bind-address, port)',
  },
  {
    code: 'host_not_found',
    codes: ['ENOTFOUND', 'EAI_AGAIN'],
    explain: (f) =>
      `the host of ${f.endpoint} does not resolve (${f.message}): check the host in the URL, and DNS`,
  },
  {
    code: 'connect_timeout',
    codes: ['ETIMEDOUT'],
    explain: (f) =>
      `${f.endpoint} did not answer as MySQL/MariaDB ` +
      `${f.ctx.connectTimeoutMs === undefined ? 'in time' : `within ${f.ctx.connectTimeoutMs} ms (connectTimeoutMs)`}: ` +
      `is it a MySQL server?${f.hint ? ` ${f.hint}.` : ''} Check that nothing between drops the traffic`,
  },
  {
    code: 'connection_lost',
    errnos: [2006, 2013, 1053, 1927],
    codes: ['PROTOCOL_CONNECTION_LOST', 'ECONNRESET', 'EPIPE'],
    explain: (f) =>
      `the connection to MySQL/MariaDB at ${f.endpoint} was lost (${f.message}): the server restarted or ended ` +
      `the session (KILL, wait_timeout), or a proxy cut it${f.hint ? `; ${f.hint}` : ''}; the next call opens a new connection`,
  },
];

/**
 * Turns a mysql2 error into a {@link StoreError} that says what is probably wrong, names the
 * server (`host:port`, never the password) and what to do, keeping the driver's error as
 * `cause`; returns the error unchanged when it is not one of the known cases.
 */
export function describeMySqlError(err: unknown, ctx: MySqlErrorContext): unknown {
  if (isMailroomError(err)) return err;
  const e = shape(err);
  const errno = typeof e.errno === 'number' ? e.errno : undefined;
  const code = typeof e.code === 'string' ? e.code : undefined;
  const message = typeof e.message === 'string' ? e.message : String(err);
  const found = CASES.find(
    (c) =>
      (errno !== undefined && typeof e.sqlState === 'string' && c.errnos?.includes(errno) === true) ||
      (code !== undefined && c.codes?.includes(code) === true),
  );
  if (!found) return err;
  const endpoint = ctx.target ?? 'the database server';
  const port = Number(/:(\d+)$/.exec(endpoint)?.[1] ?? NaN);
  const hint = Number.isFinite(port) ? portHint(port, [3306]) : '';
  return new StoreError(found.code, found.explain({ endpoint, message, ctx, hint }), {
    cause: err,
    details: {
      tables: ctx.tables,
      server: endpoint,
      ...(ctx.phase === undefined ? {} : { phase: ctx.phase }),
      ...(errno === undefined ? {} : { errno }),
      ...(code === undefined ? {} : { driverCode: code }),
    },
  });
}
