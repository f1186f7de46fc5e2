import { MailroomError } from './mailroom-error.js';

/**
 * `outbox.waitFor()` ended without the state it waited for. `code` says how:
 *
 * - `expired`: the message was never acknowledged, after every resend;
 * - `dead`: the message became a dead letter;
 * - `not_tracked`: it was delivered without `ack`, so no acknowledgement will ever come;
 * - `timeout`: `timeoutMs` passed first;
 * - `aborted`: the `signal` aborted.
 *
 * `details.status` holds the last status read, when there is one.
 */
export class WaitError extends MailroomError {
  override name = 'WaitError';

  constructor(
    code: 'expired' | 'dead' | 'not_tracked' | 'timeout' | 'aborted',
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(code, message, options);
  }
}

export function isWaitError(err: unknown): err is WaitError {
  return err instanceof WaitError || (err as { name?: unknown })?.name === 'WaitError';
}
