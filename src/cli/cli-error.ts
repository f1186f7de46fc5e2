import { MailroomError } from '../core/errors/mailroom-error.js';

/** A command line that cannot run: unknown flag, missing option, bad value. Exit code 2. */
export class UsageError extends MailroomError {
  override name = 'UsageError';

  constructor(message: string, details: Record<string, unknown> = {}) {
    super('usage', message, { details });
  }
}
