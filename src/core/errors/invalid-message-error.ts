import { MailroomError } from './mailroom-error.js';

/** A message given to `enqueue` breaks a rule of the message model; nothing was written. */
export class InvalidMessageError extends MailroomError {
  override name = 'InvalidMessageError';
  /** The field at fault: `topic`, `key`, `headers.x-name`, `payload`… */
  readonly field: string;

  constructor(field: string, message: string, details: Record<string, unknown> = {}, cause?: unknown) {
    super('invalid_message', message, { details: { field, ...details }, cause });
    this.field = field;
  }
}

export function isInvalidMessageError(err: unknown): err is InvalidMessageError {
  return err instanceof InvalidMessageError || (err as { name?: unknown })?.name === 'InvalidMessageError';
}
