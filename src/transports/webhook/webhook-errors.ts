/**
 * The errors of the webhook transport, one builder each: what happened, to which URL (redacted),
 * and what to do. `TransportError` codes: `closed`, `unreachable`, `connection_lost`,
 * `publish_aborted`, `endpoint_paused`, `endpoint_unavailable`, `http_status`, `redirect`,
 * `timeout`, `key_stopped`, `probe_failed`, `probe_aborted`. Refusals that will never change are
 * `PermanentDeliveryError`s.
 *
 * @module
 */
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { OutboxMessage } from '../../core/types.js';

/** `ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:9` — the socket's code first when the text lacks it. */
export function describeSocketError(error: Error & { code?: string }): string {
  const inner =
    error instanceof AggregateError && error.errors.length > 0
      ? (error.errors[0] as Error & { code?: string })
      : error;
  const code = inner.code ?? error.code;
  return typeof code === 'string' && !inner.message.includes(code)
    ? `${code}: ${inner.message}`
    : inner.message;
}

export function closedError(origin: string): TransportError {
  return new TransportError(
    'closed',
    `the webhook transport to ${origin} is closed; call start() to open it again`,
    { details: { origin } },
  );
}

export function unreachableError(
  origin: string,
  what: string,
  error: Error & { code?: string },
): TransportError {
  return new TransportError(
    'unreachable',
    `${what}: could not connect to ${origin} (${describeSocketError(error)}); is the receiver running and ` +
      'the host, port and scheme right? Nothing was sent; the relay waits for the endpoint to come back',
    { cause: error, details: { origin, socketCode: error.code } },
  );
}

export function connectionLostError(
  origin: string,
  what: string,
  error: Error & { code?: string },
): TransportError {
  return new TransportError(
    'connection_lost',
    `${what}: the connection to ${origin} broke before an answer came (${describeSocketError(error)}); ` +
      'the receiver may have got the message (a later copy carries the same webhook-id)',
    { cause: error, details: { origin, socketCode: error.code } },
  );
}

export function abortedError(origin: string, what: string, sent: boolean): TransportError {
  return new TransportError(
    'publish_aborted',
    `${what}: the publish was aborted (the relay's publish deadline passed, or it is stopping) ` +
      (sent ? `before ${origin} answered; it may have the message` : 'before it was sent'),
    { details: { origin, sent } },
  );
}

export function pausedError(origin: string, untilMs: number, why: string): TransportError {
  const left = Math.max(0, Math.ceil((untilMs - Date.now()) / 1000));
  return new TransportError(
    'endpoint_paused',
    `${origin} asked to wait until ${new Date(untilMs).toISOString()} (${left} s from now; ${why}); ` +
      'nothing is POSTed to it before then',
    { details: { origin, until: new Date(untilMs).toISOString() } },
  );
}

/** What an answer said, for messages: `POST https://… answered 404 Not Found: <snippet>`. */
export function answeredText(what: string, status: number, statusText: string, snippet: string): string {
  return `${what} answered ${status}${statusText ? ` ${statusText}` : ''}${snippet ? `: ${snippet}` : ''}`;
}

export function unavailableStatusError(origin: string, text: string, retryAfterMs: number): TransportError {
  return new TransportError(
    'endpoint_unavailable',
    `${text} (503 with Retry-After ${Math.round(retryAfterMs / 1000)} s: the endpoint as a whole is unavailable, ` +
      'not this message; no attempt is spent)',
    { details: { origin, status: 503, retryAfterMs } },
  );
}

export function statusError(text: string, status: number, retryAfterMs: number | undefined): TransportError {
  return new TransportError(
    'http_status',
    retryAfterMs === undefined ? text : `${text} (Retry-After ${Math.round(retryAfterMs / 1000)} s)`,
    { details: { status, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) } },
  );
}

export function refusedError(text: string, status: number): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `${text} (a 4xx other than 408 and 429: the receiver refuses this message, so it is not retried)`,
    { details: { reason: 'refused', status } },
  );
}

export function redirectError(text: string, location: string | undefined): TransportError {
  return new TransportError(
    'redirect',
    `${text}${location ? ` to ${location}` : ''}: redirects are not followed (the signed message would go to ` +
      'a URL the configuration does not name); give the final URL',
    { details: { location } },
  );
}

export function timeoutError(what: string, timeoutMs: number): TransportError {
  return new TransportError(
    'timeout',
    `${what}: no answer within timeoutMs (${timeoutMs} ms) on an open connection; the receiver may still ` +
      'process it (a later copy carries the same webhook-id). Raise timeoutMs if the receiver is slow on purpose',
    { details: { timeoutMs } },
  );
}

export function tooLargeError(
  message: OutboxMessage,
  bytes: number,
  max: number,
  batch: boolean,
): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} (topic ${JSON.stringify(message.topic)}) makes a ${batch ? 'batch entry' : 'request body'} ` +
      `of ${bytes} bytes, over maxBodyBytes (${max}); raise maxBodyBytes (and the receiver's limit) or send less`,
    { details: { reason: 'too_large', bytes, max, messageId: message.id } },
  );
}

export function keyStoppedError(message: OutboxMessage, blocker: string): TransportError {
  return new TransportError(
    'key_stopped',
    `message ${message.id} not sent: the earlier message ${blocker} of its key failed in the same publish call, ` +
      'and sending this one would deliver the key out of order',
    { details: { key: message.key, blocker } },
  );
}

export function probeFailedError(
  origin: string,
  text: string,
  status: number,
  expected: string,
): TransportError {
  return new TransportError('probe_failed', `${text}; expected ${expected}`, {
    details: { origin, status },
  });
}

export function probeAbortedError(origin: string): TransportError {
  return new TransportError('probe_aborted', `probe of ${origin} aborted before it finished`, {
    details: { origin },
  });
}

export function unsendableError(what: string, error: Error): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `${what}: the request cannot be built (${error.message}); nothing was sent`,
    {
      cause: error,
      details: { reason: 'unsendable' },
    },
  );
}
