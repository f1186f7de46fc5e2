import { MailroomError } from '../core/errors/mailroom-error.js';

/**
 * The ORM ran a statement but could not read its result: Prisma's driver adapters refuse a
 * result column whose type they do not map (PostgreSQL's `void`, what `pg_notify()` returns).
 * The statement's changes are part of the open transaction, so let the error roll it back (an
 * error thrown from the transaction callback does). `cause` is the ORM's error.
 */
export class UnreadableResultError extends MailroomError {
  override name = 'UnreadableResultError';

  constructor(message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super('unreadable_result', message, options);
  }
}

export function isUnreadableResultError(err: unknown): err is UnreadableResultError {
  return (
    err instanceof UnreadableResultError || (err as { name?: unknown })?.name === 'UnreadableResultError'
  );
}
