import { MailroomError } from './mailroom-error.js';

/**
 * Why a webhook request failed verification:
 * - `missing_header`: `webhook-id`, `webhook-timestamp` or `webhook-signature` is absent or empty.
 * - `invalid_timestamp`: `webhook-timestamp` is not a whole number of Unix seconds.
 * - `timestamp_too_old`: the timestamp is further in the past than the tolerance (a replay, or a
 *   clock far behind).
 * - `timestamp_in_future`: the timestamp is further ahead than the tolerance (a clock far ahead).
 * - `bad_signature`: no `v1` signature in `webhook-signature` matches the body under any of the
 *   secrets (wrong secret, or a body changed on the way, e.g. parsed and serialised again).
 */
export type WebhookVerificationCode =
  'missing_header' | 'invalid_timestamp' | 'timestamp_too_old' | 'timestamp_in_future' | 'bad_signature';

/**
 * A webhook request (a Mailroom callback, an HTTP acknowledgement) is not what its Standard
 * Webhooks headers say: answer it 401 and do not act on it. `code` says which check failed; the
 * message never contains the secret or the expected signature.
 */
export class WebhookVerificationError extends MailroomError {
  override name = 'WebhookVerificationError';
  declare readonly code: WebhookVerificationCode;

  constructor(
    code: WebhookVerificationCode,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(code, message, options);
  }
}

export function isWebhookVerificationError(err: unknown): err is WebhookVerificationError {
  return (
    err instanceof WebhookVerificationError ||
    (err as { name?: unknown })?.name === 'WebhookVerificationError'
  );
}
