import { MailroomError } from './mailroom-error.js';

/**
 * The relay refused or gave up on something because of its own state: started after it was
 * stopped (`stopped`), or a message it was asked to publish again after too many claims that
 * never got an outcome (`abandoned_too_often`, the reason such a message is dead-lettered), a
 * log source whose slot had to be created again (`log_gap`: what the log lost, the table delivers).
 */
export class RelayStateError extends MailroomError {
  override name = 'RelayStateError';

  constructor(
    code: string,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(code, message, options);
  }
}

export function isRelayStateError(err: unknown): err is RelayStateError {
  return err instanceof RelayStateError || (err as { name?: unknown })?.name === 'RelayStateError';
}
