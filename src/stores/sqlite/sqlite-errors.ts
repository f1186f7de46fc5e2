import { isMailroomError } from '../../core/errors/mailroom-error.js';
import { StoreError } from '../../core/errors/store-error.js';

/**
 * SQLite result codes (better-sqlite3's `err.code`) after which the same statement can succeed
 * later: another connection holds the write lock, or a WAL snapshot went stale.
 */
export const RETRYABLE_SQLITE_CODES = new Set([
  'SQLITE_BUSY',
  'SQLITE_BUSY_SNAPSHOT',
  'SQLITE_BUSY_RECOVERY',
  'SQLITE_BUSY_TIMEOUT',
  'SQLITE_LOCKED',
  'SQLITE_LOCKED_SHAREDCACHE',
]);

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' ? code : undefined;
}

function messageOf(err: unknown): string {
  const message = (err as { message?: unknown })?.message;
  return typeof message === 'string' ? message : String(err);
}

/** True when another connection holds the lock: retry after a pause. Looks through `cause`. */
export function isBusyError(err: unknown): boolean {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const code = codeOf(e);
    if (code !== undefined && RETRYABLE_SQLITE_CODES.has(code)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/** What a store's errors are explained with. */
export interface SqliteErrorContext {
  /** The database file (`:memory:` for a database in memory). */
  file: string;
}

/**
 * A driver error explained as a {@link StoreError}: which file, what probably went wrong, what to
 * do; the driver's error is kept as `cause`. Mailroom's own errors pass through unchanged.
 */
export function describeSqliteError(err: unknown, context: SqliteErrorContext): unknown {
  if (isMailroomError(err)) return err;
  const code = codeOf(err) ?? 'unknown';
  const message = messageOf(err);
  const where = `SQLite database ${JSON.stringify(context.file)}`;
  const details = { file: context.file, sqliteCode: code };
  if (/no such table: mailroom_/i.test(message)) {
    return new StoreError(
      'schema_missing',
      `the Mailroom tables are missing in ${where} (${message}): run \`await store.migrate()\` ` +
        '(or `npx mailroom migrate --database-url sqlite:<path>`)',
      { cause: err, details },
    );
  }
  if (RETRYABLE_SQLITE_CODES.has(code)) {
    return new StoreError(
      'busy',
      `${where} stayed locked by another connection (${code}: ${message}); a writer holds a ` +
        'transaction open too long, or raise the store option busyTimeoutMs',
      { cause: err, details },
    );
  }
  if (code.startsWith('SQLITE_CANTOPEN') || code.startsWith('SQLITE_READONLY')) {
    return new StoreError(
      'unreachable',
      `cannot write ${where} (${code}: ${message}): check that the directory exists and that this ` +
        'process may write the file and its -wal and -shm companions',
      { cause: err, details },
    );
  }
  if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB') {
    return new StoreError(
      'corrupt',
      `${where} is not a database or is damaged (${code}: ${message}): restore it from a backup`,
      { cause: err, details },
    );
  }
  if (code.startsWith('SQLITE_FULL') || code.startsWith('SQLITE_IOERR')) {
    return new StoreError('io', `${where}: disk error (${code}: ${message}): check free space and the disk`, {
      cause: err,
      details,
    });
  }
  return err;
}
