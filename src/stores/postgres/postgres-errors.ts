import { StoreError } from '../../core/errors/store-error.js';
import { isMailroomError } from '../../core/errors/mailroom-error.js';
import { portHint } from '../../core/well-known-ports.js';

/**
 * SQLSTATEs and socket errors after which the same statement can succeed later: serialization
 * failures, deadlocks, a server shutting down or restarting, connections that broke.
 */
export const RETRYABLE_ERROR_CODES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available
  '57P01', // admin_shutdown (pg_terminate_backend)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up)
  '53300', // too_many_connections
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
]);

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' ? code : undefined;
}

function messageOf(err: unknown): string {
  const message = (err as { message?: unknown })?.message;
  return typeof message === 'string' ? message : String(err);
}

/**
 * True when the error is transient: retry the operation after a pause. A {@link StoreError} made
 * by {@link describeDbError} is judged by the driver error it wraps.
 */
export function isRetryableDbError(err: unknown): boolean {
  // Bounded: a cause chain that loops must not hang the caller.
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const code = codeOf(e);
    if (code !== undefined && RETRYABLE_ERROR_CODES.has(code)) return true;
    if (
      /Connection terminated|connection (was )?closed|terminating connection|Client has encountered a connection error|not queryable|Query read timeout|timeout exceeded when trying to connect/i.test(
        messageOf(e),
      )
    ) {
      return true;
    }
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * SQLSTATEs PostgreSQL sends as it ends the session: connection exceptions, shutdown, a session
 * or transaction idle too long. The socket closes right after, maybe after the client was
 * handed back to a pool.
 */
const SESSION_ENDING = /^08|^57P0[1-5]$|^25P03$/;

/**
 * True for an error PostgreSQL itself sent about a statement (an ErrorResponse with a SQLSTATE,
 * not one that ends the session): the connection is still in step with the server and usable.
 * After any other error (a deadline, a broken socket, bytes that are not the PostgreSQL
 * protocol, a FATAL) it may not be.
 */
export function isStatementError(err: unknown): boolean {
  const e = err as { severity?: unknown; code?: unknown } | null | undefined;
  if (typeof e?.severity !== 'string' || typeof e.code !== 'string') return false;
  // The severity word is localized (lc_messages), so FATAL and PANIC are told by their SQLSTATE
  // as well as by the English words.
  return /^[0-9A-Z]{5}$/.test(e.code) && !SESSION_ENDING.test(e.code) && !/^(FATAL|PANIC)$/.test(e.severity);
}

/** Where and how a failing call ran, for the message that explains it. */
export interface DbErrorContext {
  /** The Mailroom schema the store works in. */
  schema: string;
  /**
   * The server: its URL with the password redacted (`postgres://app:***@db:5432/orders`), or
   * `host:port`. Messages name its host and port, never the password.
   */
  target?: string;
  /**
   * Whether the error came while opening a connection or from a statement on an open one: a
   * connection closed during the handshake means a wrong server far more often than one closed
   * during a statement. Unknown when left out.
   */
  phase?: 'connect' | 'statement';
  /** The connect deadline in effect (`connectTimeoutMs`), when the store set it. */
  connectTimeoutMs?: number;
  /** How long PostgreSQL lets a statement run (`statementTimeoutMs`), when the store set it. */
  statementTimeoutMs?: number;
  /** How long the driver waits for the answer to a statement, when the store set it. */
  readTimeoutMs?: number;
}

/** The facts a case's message is made of. */
interface Facts {
  /** `host:port`, or a socket path, or a stand-in when nothing is known. */
  endpoint: string;
  host: string | undefined;
  port: number | undefined;
  database: string | undefined;
  /** The driver's own message. */
  message: string;
  code: string | undefined;
  ctx: DbErrorContext;
  /** "Redis listens on 6379 by default", or '' for a port that says nothing. */
  hint: string;
}

/** One kind of failure: how to recognise it, its stable code, and what to tell the user. */
interface DbErrorCase {
  code: string;
  /** SQLSTATEs (errors the server sent) or Node error codes (socket errors). */
  codes?: readonly string[];
  /** node-postgres's own errors carry no code: they are known by their message. */
  message?: RegExp;
  /** For a code several failures share (57014 is any cancel): the message must match this too. */
  codeWhen?: RegExp;
  /** Only in this phase; a case without one applies in both, and when the phase is unknown. */
  phase?: 'connect' | 'statement';
  explain(f: Facts): string;
}

/** "is 127.0.0.1:6379 a PostgreSQL server? Redis listens on 6379 by default." */
function isItPostgres(f: Facts): string {
  return `is ${f.endpoint} a PostgreSQL server?${f.hint ? ` ${f.hint}.` : ''}`;
}

function within(ms: number | undefined, setting: string): string {
  return ms === undefined ? 'in time' : `within ${ms} ms (${setting})`;
}

/**
 * Every failure the store explains, first match wins. Connection-level errors come before the
 * generic "connection lost" rows, which also match their messages.
 */
const CASES: readonly DbErrorCase[] = [
  {
    code: 'schema_missing',
    codes: ['42P01', '3F000', '42883'], // undefined_table, invalid_schema_name, undefined_function
    explain: (f) =>
      `the Mailroom schema "${f.ctx.schema}" is missing or incomplete in the database at ${f.endpoint}: ` +
      `run \`npx mailroom migrate --schema ${f.ctx.schema}\` (${f.message})`,
  },
  {
    code: 'database_missing',
    codes: ['3D000'], // invalid_catalog_name
    explain: (f) =>
      `${f.database === undefined ? 'the database' : `database "${f.database}"`} does not exist on ` +
      `PostgreSQL at ${f.endpoint}: create it${f.database === undefined ? '' : ` (createdb ${f.database})`} ` +
      `or fix the database name in the URL (${f.message})`,
  },
  {
    code: 'auth_failed',
    codes: ['28P01', '28000'], // invalid_password, invalid_authorization_specification
    explain: (f) =>
      `PostgreSQL at ${f.endpoint} refused the login (${f.message}): check the user and password in ` +
      'the URL (percent-encode special characters) and that pg_hba.conf lets this user in from this host',
  },
  {
    // The server asked for a password (SCRAM) and the URL has none.
    code: 'auth_failed',
    message: /client password must be a string/,
    explain: (f) =>
      `PostgreSQL at ${f.endpoint} asks for a password and the URL has none: put it in the URL ` +
      '(postgres://user:password@host:5432/database) or in the PGPASSWORD environment variable',
  },
  {
    code: 'too_many_connections',
    codes: ['53300'],
    explain: (f) =>
      `PostgreSQL at ${f.endpoint} has no connection slot left (${f.message}): lower the pool sizes ` +
      "of this and other clients, put a pooler in front, or raise the server's max_connections",
  },
  {
    // PgBouncer and managed poolers refuse startup parameters they cannot keep per client.
    code: 'startup_parameter_refused',
    codes: ['08P01'], // protocol_violation
    codeWhen: /unsupported startup parameter/i,
    explain: (f) =>
      `${f.endpoint} refused a connection parameter (${f.message}): a pooler such as PgBouncer ` +
      'stands in front of PostgreSQL; add statement_timeout to its ignore_startup_parameters, or turn ' +
      'serverStatementTimeout off (--no-server-statement-timeout): statements keep their client-side ' +
      'deadline either way',
  },
  {
    code: 'unreachable',
    codes: ['ECONNREFUSED'],
    explain: (f) =>
      `cannot reach PostgreSQL at ${f.endpoint}: nothing accepts connections there (ECONNREFUSED); ` +
      'check the host and port in the URL, and that PostgreSQL is running and listens there ' +
      '(listen_addresses, port)',
  },
  {
    code: 'host_not_found',
    codes: ['ENOTFOUND', 'EAI_AGAIN'],
    explain: (f) =>
      `the host name ${JSON.stringify(f.host ?? f.endpoint)} does not resolve (${f.code}): check the ` +
      'host in the URL, and DNS on this machine',
  },
  {
    code: 'unreachable',
    codes: ['EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT'],
    explain: (f) =>
      `cannot reach PostgreSQL at ${f.endpoint} over the network (${f.code}): check the host in the URL, the ` +
      'route to it, and that no firewall drops the traffic',
  },
  {
    // pg-pool's deadline for a new connection (it keeps the driver's error as its cause), or the
    // client's own.
    code: 'connect_timeout',
    message: /^Connection terminated due to connection timeout|^timeout expired$/,
    explain: (f) =>
      `${f.endpoint} did not answer as PostgreSQL ${within(f.ctx.connectTimeoutMs, 'connectTimeoutMs')}: ` +
      `${isItPostgres(f)} If it is, check that nothing between (firewall, proxy) swallows the ` +
      'traffic, or raise connectTimeoutMs (--connect-timeout-ms) for a slow link',
  },
  {
    // pg-pool's deadline for a free connection when every one is checked out.
    code: 'pool_timeout',
    message: /^timeout exceeded when trying to connect/,
    explain: (f) =>
      `no connection to PostgreSQL at ${f.endpoint} came free ${within(f.ctx.connectTimeoutMs, 'connectTimeoutMs')}: ` +
      'every connection of the pool was in use; raise poolSize, or look for slow statements (pg_stat_activity)',
  },
  {
    // Bytes that are not the PostgreSQL protocol: another kind of server answered.
    code: 'not_postgres',
    message:
      /^Received unexpected \w+ message from backend|^received invalid response|^Unknown authenticationOk message type/,
    explain: (f) =>
      `${f.endpoint} did not answer as PostgreSQL (the driver read: ${f.message.replace(/\.$/, '')}): ${isItPostgres(f)}`,
  },
  {
    code: 'handshake_failed',
    phase: 'connect',
    codes: ['ECONNRESET', 'EPIPE'],
    message: /^Connection terminated( unexpectedly)?$/,
    explain: (f) =>
      `${f.endpoint} closed the connection without answering as PostgreSQL: ${isItPostgres(f)} A ` +
      'proxy or pooler in front of PostgreSQL does this too when it cannot reach the server',
  },
  {
    code: 'statement_timeout',
    codes: ['57014'], // query_canceled; the message says whether by statement_timeout
    codeWhen: /statement timeout/,
    explain: (f) =>
      `PostgreSQL at ${f.endpoint} cancelled a statement that ran longer than ` +
      `${f.ctx.statementTimeoutMs === undefined ? 'its statement_timeout' : `${f.ctx.statementTimeoutMs} ms (statementTimeoutMs)`}, ` +
      'and rolled back its transaction: it was most likely waiting for a lock another session holds ' +
      '(see pg_stat_activity and pg_locks), or the server is overloaded; raise statementTimeoutMs ' +
      '(--statement-timeout-ms) if such statements are expected to take longer',
  },
  {
    code: 'read_timeout',
    message: /^Query read timeout$/,
    explain: (f) =>
      `PostgreSQL at ${f.endpoint} did not answer a statement ${within(f.ctx.readTimeoutMs, 'statementTimeoutMs and a grace period')}: ` +
      'the server or the network to it stopped answering; the connection was closed, and the next ' +
      'call opens a new one',
  },
  {
    code: 'connection_lost',
    codes: ['57P01', '57P02', 'ECONNRESET', 'EPIPE'], // admin_shutdown, crash_shutdown
    message: /^Connection terminated( unexpectedly)?$|Client has encountered a connection error/,
    explain: (f) =>
      `the connection to PostgreSQL at ${f.endpoint} was lost${f.ctx.phase === 'statement' ? ' during a statement' : ''} ` +
      `(${f.message}): the server restarted or ended the session (pg_terminate_backend), or a proxy ` +
      'or pooler between cut the connection (idle timeout, failover)' +
      (f.ctx.phase === undefined
        ? `; if it happens on every connect, ${f.endpoint} is probably not a PostgreSQL server` +
          (f.hint ? ` (${f.hint})` : '')
        : '') +
      '; the next call opens a new connection',
  },
];

/** The host, port and database an error is about: from the target, else from a socket error. */
function locate(target: string | undefined, err: unknown): Omit<Facts, 'message' | 'code' | 'ctx' | 'hint'> {
  if (target !== undefined) {
    try {
      const url = new URL(target);
      if (url.protocol === 'postgres:' || url.protocol === 'postgresql:') {
        // node-postgres's defaults: localhost, 5432; `?host=/path` names a Unix socket directory.
        const host = decodeURIComponent(url.hostname) || url.searchParams.get('host') || 'localhost';
        const port = Number(url.port || url.searchParams.get('port') || 5432);
        const database = decodeURIComponent(url.pathname.slice(1)) || undefined;
        const endpoint = host.startsWith('/') ? `${host}/.s.PGSQL.${port}` : `${host}:${port}`;
        return { endpoint, host, port, database };
      }
    } catch {
      // Not a URL: a `host:port` the caller wrote, used as it is.
    }
    const port = /:(\d+)$/.exec(target)?.[1];
    return {
      endpoint: target,
      host: undefined,
      port: port === undefined ? undefined : Number(port),
      database: undefined,
    };
  }
  const e = err as { address?: unknown; port?: unknown; hostname?: unknown } | null | undefined;
  if (typeof e?.address === 'string' && typeof e.port === 'number') {
    return { endpoint: `${e.address}:${e.port}`, host: e.address, port: e.port, database: undefined };
  }
  if (typeof e?.hostname === 'string') {
    return { endpoint: e.hostname, host: e.hostname, port: undefined, database: undefined };
  }
  return { endpoint: 'the database server', host: undefined, port: undefined, database: undefined };
}

function matches(
  c: DbErrorCase,
  code: string | undefined,
  message: string,
  phase: DbErrorContext['phase'],
): boolean {
  if (c.phase !== undefined && c.phase !== phase) return false;
  const byCode =
    code !== undefined && c.codes?.includes(code) === true && (c.codeWhen?.test(message) ?? true);
  return byCode || c.message?.test(message) === true;
}

/**
 * Turns a driver error into a {@link StoreError} that says what is probably wrong, names the
 * server (`host:port`, never the password) and what to do, keeping the driver error as `cause`;
 * returns the error unchanged when it is not one of the known cases (or already explained).
 */
export function describeDbError(err: unknown, ctx: DbErrorContext): unknown {
  if (isMailroomError(err)) return err;
  const code = codeOf(err);
  const message = messageOf(err);
  const found = CASES.find((c) => matches(c, code, message, ctx.phase));
  if (!found) return err;
  const place = locate(ctx.target, err);
  const facts: Facts = { ...place, message, code, ctx, hint: portHint(place.port, [5432]) };
  return new StoreError(found.code, found.explain(facts), {
    cause: err,
    details: {
      schema: ctx.schema,
      server: place.endpoint,
      ...(ctx.phase === undefined ? {} : { phase: ctx.phase }),
      ...(code === undefined ? {} : { driverCode: code }),
    },
  });
}
