/**
 * A handler's way to choose the HTTP status a {@link WebhookConsumer} answers, and with it what
 * the sending transport does with the message.
 *
 * @module
 */
import { ConfigError } from '../../core/errors/config-error.js';
import { MailroomError } from '../../core/errors/mailroom-error.js';

/**
 * Thrown by a `WebhookConsumer` handler to answer `status` instead of the usual 500: the sender
 * retries a 5xx, 408 or 429, dead-letters any other 4xx at once, and with `retryAfterSec` on a
 * 429 or 503 sends nothing to the endpoint before then (a 503 with it spends no attempt). The
 * inbox transaction rolls back as for any throw.
 *
 * Only this error picks the status: an error that merely carries a `status` field (an HTTP
 * client's, for a call the handler made) is answered 500, so a 404 from some other service can
 * never dead-letter the message by accident.
 *
 * @example
 * ```ts
 * handler: async (message, tx) => {
 *   if (await rateLimited()) throw new WebhookStatusError(429, 'over quota', { retryAfterSec: 30 });
 *   …
 * }
 * ```
 */
export class WebhookStatusError extends MailroomError {
  override name = 'WebhookStatusError';
  /** The status answered, 400–599. */
  readonly status: number;
  /** The `Retry-After` answered with it, in seconds, if any. */
  readonly retryAfterSec: number | undefined;

  constructor(status: number, message: string, options: { retryAfterSec?: number; cause?: unknown } = {}) {
    if (!Number.isInteger(status) || status < 400 || status > 599) {
      throw new ConfigError(
        'status',
        `WebhookStatusError status must be an integer from 400 to 599, got ${String(status)}; a handler ` +
          'that succeeded returns instead (the consumer answers 2xx once the inbox committed)',
        { value: status },
      );
    }
    const { retryAfterSec } = options;
    if (retryAfterSec !== undefined && (!Number.isInteger(retryAfterSec) || retryAfterSec < 0)) {
      throw new ConfigError(
        'retryAfterSec',
        `WebhookStatusError retryAfterSec must be a whole number of seconds, got ${String(retryAfterSec)}`,
        { value: retryAfterSec },
      );
    }
    super('webhook_status', message, {
      ...(options.cause === undefined ? {} : { cause: options.cause }),
      details: { status, ...(retryAfterSec === undefined ? {} : { retryAfterSec }) },
    });
    this.status = status;
    this.retryAfterSec = retryAfterSec;
  }
}

/** True for a {@link WebhookStatusError}, also one from another copy of the package. */
export function isWebhookStatusError(err: unknown): err is WebhookStatusError {
  return (
    err instanceof WebhookStatusError ||
    ((err as { name?: unknown })?.name === 'WebhookStatusError' &&
      typeof (err as { status?: unknown }).status === 'number')
  );
}

/** True when the sending transport dead-letters a message answered `status` (a 4xx but 408, 429). */
export function isRefusal(status: number): boolean {
  return status >= 400 && status < 500 && status !== 408 && status !== 429;
}
