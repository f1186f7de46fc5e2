import { PermanentDeliveryError } from '../core/errors/permanent-delivery-error.js';
import { TransportError } from '../core/errors/transport-error.js';
import { custom, func, integer, optionsSchema, string } from '../core/options-schema.js';
import type { AckOutcome } from '../core/ports.js';
import { redactUrl } from '../core/redact.js';
import type { JsonValue } from '../core/types.js';
import { isUuid, uuidv7 } from '../core/uuid.js';
import { secretField, type WebhookSecret } from './webhook-secret.js';
import { webhookSignature } from './webhook-signature.js';

/** Options of {@link sendHttpAck}. */
export interface SendHttpAckOptions {
  /** The sender's ack endpoint (where it mounted `createAckHandler`). */
  url: string;
  /** The secret shared with the sender's ack endpoint. */
  secret: WebhookSecret;
  /** The id of the message acknowledged. */
  id: string;
  /** This receiving service's name. */
  consumer: string;
  /** A small result the sender reads back with `outbox.status(id)`. */
  result?: JsonValue;
  /** @default globalThis.fetch */
  fetch?: typeof fetch;
  /** Deadline of the request. @default 10000 */
  timeoutMs?: number;
}

const OUTCOMES = new Set<string>(['acknowledged', 'duplicate', 'late', 'early']);

const sendHttpAckSchema = optionsSchema<SendHttpAckOptions>()('sendHttpAck', {
  url: string({
    pattern: /^https?:\/\//i,
    expected: 'an http:// or https:// URL',
    secret: true,
    required: true,
  }),
  secret: secretField(),
  id: custom('a message id (a UUID)', isUuid, { required: true }),
  consumer: string({ required: true }),
  result: custom('a JSON value', (v): v is JsonValue => v !== undefined),
  fetch: func<typeof fetch>('a fetch function'),
  timeoutMs: integer({ min: 100, max: 600_000, default: 10_000 }),
});

/**
 * Acknowledges message `id` to its sender's HTTP ack endpoint, signed with the shared secret;
 * resolves to what the sender's store did (`acknowledged`, `duplicate`, `late`, `early`).
 * Throws a `TransportError` when the endpoint cannot be reached, times out or answers 5xx, 408
 * or 429 (send again later), and a `PermanentDeliveryError` for any other refusal (a bad secret,
 * a malformed acknowledgement: sending it again will not help).
 *
 * @example
 * ```ts
 * await sendHttpAck({ url: 'https://orders.internal/mailroom/ack', secret, id: message.id, consumer: 'billing', result: { invoice: 'F-1042' } });
 * ```
 */
export async function sendHttpAck(options: SendHttpAckOptions): Promise<AckOutcome> {
  const resolved = sendHttpAckSchema.resolve(options);
  const { url, secret: keys, id, consumer, result, timeoutMs } = resolved;
  const fetchFn = resolved.fetch ?? globalThis.fetch.bind(globalThis);
  const shown = redactUrl(url);
  const body = Buffer.from(
    JSON.stringify(result === undefined ? { id, consumer } : { id, consumer, result }),
    'utf8',
  );
  // A new webhook-id per call: the endpoint answers a replay of this very request `duplicate`
  // without a store call; a call made again is a new request, which applyAck deduplicates.
  const webhookId = uuidv7();
  const timestamp = String(Math.floor(Date.now() / 1000));
  let response: Response;
  try {
    response = await fetchFn(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'user-agent': 'mailroom',
        'webhook-id': webhookId,
        'webhook-timestamp': timestamp,
        'webhook-signature': webhookSignature(keys, webhookId, timestamp, body),
      },
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const timedOut = (err as { name?: unknown })?.name === 'TimeoutError';
    throw new TransportError(
      timedOut ? 'ack_timeout' : 'ack_unreachable',
      timedOut
        ? `acknowledgement of message ${id} to ${shown} got no answer within ${timeoutMs} ms; send it again`
        : `acknowledgement of message ${id} to ${shown} failed: ${String((err as { cause?: unknown }).cause ?? err)}; send it again`,
      { cause: err, details: { id, url: shown } },
    );
  }
  const text = await response.text().catch(() => '');
  let answer: { outcome?: unknown; message?: unknown } = {};
  try {
    answer = JSON.parse(text) as typeof answer;
  } catch {
    // Not JSON: the status says enough.
  }
  const { status } = response;
  if (status === 200 && typeof answer.outcome === 'string' && OUTCOMES.has(answer.outcome)) {
    return answer.outcome as AckOutcome;
  }
  const said = typeof answer.message === 'string' ? answer.message : text.slice(0, 200);
  const message = `acknowledgement of message ${id} to ${shown} answered ${status}${said ? `: ${said}` : ''}`;
  const details = { id, url: shown, status };
  if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
    throw new PermanentDeliveryError(`${message}; sending it again will not help`, { details });
  }
  throw new TransportError('ack_failed', `${message}; send it again later`, { details });
}
