import { MailroomError } from './mailroom-error.js';

/**
 * A transport could not do its job right now (connection refused or dropped, channel closed,
 * confirm lost). Retryable: the relay keeps the message and tries again later.
 */
export class TransportError extends MailroomError {
  override name = 'TransportError';

  constructor(
    code: string,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(code, message, options);
  }
}

export function isTransportError(err: unknown): err is TransportError {
  return err instanceof TransportError || (err as { name?: unknown })?.name === 'TransportError';
}
