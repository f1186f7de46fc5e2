import { MailroomError } from '../core/errors/mailroom-error.js';

/**
 * A request the admin server refuses: answered with `status` and the JSON body
 * `{ error: { code, message } }`. The message says what was wrong, which value, and what to do;
 * it never contains the token.
 */
export class AdminRequestError extends MailroomError {
  override name = 'AdminRequestError';
  /** The HTTP status to answer with (4xx, or 503 when the database did not answer). */
  readonly status: number;
  /** Extra response headers (`Allow` on a 405, `WWW-Authenticate` on a 401). */
  readonly headers: Record<string, string>;

  constructor(status: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(code, message, { details: { status } });
    this.status = status;
    this.headers = headers;
  }
}

/** True for an {@link AdminRequestError}, also one from another copy of the package. */
export function isAdminRequestError(err: unknown): err is AdminRequestError {
  return err instanceof AdminRequestError || (err as { name?: unknown })?.name === 'AdminRequestError';
}
