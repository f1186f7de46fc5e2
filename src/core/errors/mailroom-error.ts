/** Options shared by every Mailroom error. */
export interface MailroomErrorOptions {
  /** The underlying error, when this one wraps another. */
  cause?: unknown;
  /** Structured context: the offending value, the key, the allowed values… */
  details?: Record<string, unknown>;
}

/**
 * Base of every error Mailroom throws. `code` is stable and safe to branch on; `message` is for
 * people and says what was wrong, which value, and what to do.
 */
export class MailroomError extends Error {
  override name = 'MailroomError';
  readonly code: string;
  readonly details: Record<string, unknown>;

  constructor(code: string, message: string, options: MailroomErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }
}

/**
 * True for any Mailroom error, also one thrown by another copy of the package (so it checks the
 * name and code, not only the prototype chain).
 */
export function isMailroomError(err: unknown): err is MailroomError {
  if (err instanceof MailroomError) return true;
  return (
    typeof err === 'object' &&
    err !== null &&
    typeof (err as { code?: unknown }).code === 'string' &&
    typeof (err as { name?: unknown }).name === 'string' &&
    /Error$/.test((err as { name: string }).name) &&
    'details' in err
  );
}
