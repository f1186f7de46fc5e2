import { StoreError } from '../../core/errors/store-error.js';
import { isMailroomError } from '../../core/errors/mailroom-error.js';

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

/** True when the error is transient: retry the operation after a pause. */
export function isRetryableDbError(err: unknown): boolean {
  const code = codeOf(err);
  if (code !== undefined && RETRYABLE_ERROR_CODES.has(code)) return true;
  const msg = (err as { message?: unknown })?.message;
  return (
    typeof msg === 'string' &&
    /Connection terminated|connection (was )?closed|terminating connection|Client has encountered a connection error|not queryable/i.test(
      msg,
    )
  );
}

/**
 * Turns a driver error into a {@link StoreError} that tells the user what to do, when it is
 * one we recognise; returns the error unchanged otherwise.
 */
export function describeDbError(err: unknown, ctx: { schema: string; target?: string }): unknown {
  if (isMailroomError(err)) return err;
  const code = codeOf(err);
  const where = ctx.target ? ` at ${ctx.target}` : '';
  const message = (err as Error)?.message ?? String(err);
  if (code === '42P01' || code === '3F000' || code === '42883') {
    return new StoreError(
      'schema_missing',
      `the Mailroom schema "${ctx.schema}" is missing or incomplete in the database${where}: ` +
        `run \`npx mailroom migrate --schema ${ctx.schema}\` (${message})`,
      { cause: err, details: { schema: ctx.schema } },
    );
  }
  if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH' || code === 'ETIMEDOUT') {
    return new StoreError(
      'unreachable',
      `cannot reach PostgreSQL${where} (${code}): check the host and port and that the server is running`,
      { cause: err },
    );
  }
  if (code === '28P01' || code === '28000') {
    return new StoreError(
      'auth_failed',
      `PostgreSQL refused the login${where}: check the user and password (${message})`,
      { cause: err },
    );
  }
  if (code === '3D000') {
    return new StoreError(
      'database_missing',
      `the database${where} does not exist: create it or fix the database name (${message})`,
      { cause: err },
    );
  }
  return err;
}
