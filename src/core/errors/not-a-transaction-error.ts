import { MailroomError } from './mailroom-error.js';

/**
 * `enqueue` was handed something that is not the caller's open transaction: a connection pool
 * (`pg.Pool`, the root postgres.js `sql`), a whole PGlite database, or a client that is not
 * inside `BEGIN`. Each of its statements would commit on its own, so the message would survive
 * the rollback of the business transaction and be delivered anyway (a phantom). Nothing was
 * written. The message names what was passed and what to pass instead.
 */
export class NotATransactionError extends MailroomError {
  override name = 'NotATransactionError';
  /** What was passed, in words: `a pg.Pool`, `the root postgres.js sql`, `a pg client outside BEGIN`… */
  readonly handle: string;

  constructor(
    handle: string,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super('not_a_transaction', message, { details: { handle, ...options.details }, cause: options.cause });
    this.handle = handle;
  }
}

export function isNotATransactionError(err: unknown): err is NotATransactionError {
  return err instanceof NotATransactionError || (err as { name?: unknown })?.name === 'NotATransactionError';
}
