import { createHmac, timingSafeEqual } from 'node:crypto';
import { ConfigError } from '../core/errors/config-error.js';
import { WebhookVerificationError } from '../core/errors/webhook-verification-error.js';
import { showValue } from '../core/show-value.js';
import { webhookKeys, type WebhookSecret } from './webhook-secret.js';

/**
 * Standard Webhooks (https://www.standardwebhooks.com) signatures, both ways: Mailroom signs the
 * callbacks it POSTs, and verifies the HTTP acknowledgements it receives, with the same scheme.
 *
 * The signed content is `${webhook-id}.${webhook-timestamp}.${body}` (the body's raw bytes), the
 * signature `v1,` followed by the base64 HMAC-SHA256 of it under the secret's key.
 */

/** The message's own id: the same on every attempt, what a receiver deduplicates on. */
export const WEBHOOK_ID_HEADER = 'webhook-id';
/** When this attempt was sent, in whole Unix seconds. */
export const WEBHOOK_TIMESTAMP_HEADER = 'webhook-timestamp';
/** Space-separated `v1,<base64>` signatures, one per secret (several during a key rotation). */
export const WEBHOOK_SIGNATURE_HEADER = 'webhook-signature';

/**
 * The three Standard Webhooks headers. A type, not an interface, so that it passes where a
 * plain record of headers is expected (`verifyWebhook`, `fetch`).
 */
export type WebhookHeaders = {
  'webhook-id': string;
  'webhook-timestamp': string;
  'webhook-signature': string;
};

/** A request body as the bytes on the wire: a string is taken as UTF-8. */
export type WebhookBody = string | Uint8Array;

/** Headers as Node (`req.headers`) or fetch (`Headers`) give them; plain keys in any case. */
export type HeaderSource = Headers | Readonly<Record<string, string | readonly string[] | undefined>>;

export interface SignWebhookOptions {
  /** The shared secret (or several, during a rotation: one signature each). */
  secret: WebhookSecret;
  /** The webhook's id: the same on every attempt of one webhook. No whitespace. */
  id: string;
  /**
   * When this attempt is sent: a `Date`, or whole Unix seconds (a number of milliseconds would
   * be taken as a date far in the future, and refused by receivers). @default now
   */
  timestamp?: Date | number;
  /** The exact body that is sent. */
  body: WebhookBody;
}

export interface VerifyWebhookOptions {
  /** The shared secret, or several (a signature made with any of them is accepted). */
  secret: WebhookSecret;
  /** The request's headers: `req.headers` (Node), `request.headers` (fetch), or a plain object. */
  headers: HeaderSource;
  /** The raw request body, before any JSON parsing: parsing and serialising again changes bytes. */
  body: WebhookBody;
  /**
   * Largest difference between the timestamp and `now`, either way, in seconds: an older request
   * is refused as a possible replay. @default 300
   */
  toleranceSec?: number;
  /** The receiver's time: a `Date`, or Unix seconds. @default now */
  now?: Date | number;
}

/** What a verified request said. */
export interface VerifiedWebhook {
  id: string;
  /** Unix seconds. */
  timestamp: number;
}

const ID_PATTERN = /^[\x21-\x7e]{1,255}$/;
const TIMESTAMP_PATTERN = /^\d{1,15}$/;
const SIGNATURE_BYTES = 32;

function toSeconds(value: Date | number, name: string): number {
  const seconds = value instanceof Date ? value.getTime() / 1000 : value;
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) {
    throw new ConfigError(name, `${name} must be a Date or Unix seconds, got ${showValue(value)}`);
  }
  return Math.floor(seconds);
}

function bodyBytes(body: unknown): Uint8Array {
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body instanceof Uint8Array) return body;
  throw new ConfigError(
    'body',
    `body must be the raw request body as a string or Buffer, got ${showValue(body)}; ` +
      'sign and verify the bytes sent, before any JSON parsing',
  );
}

/** The raw HMAC-SHA256 of `${id}.${timestamp}.${body}` under `key`. */
export function webhookHmac(key: Uint8Array, id: string, timestamp: string, body: Uint8Array): Buffer {
  return createHmac('sha256', key).update(`${id}.${timestamp}.`, 'utf8').update(body).digest();
}

/**
 * The `webhook-signature` value for already decoded keys: what the dispatcher uses, so it decodes
 * its secret once and not per request.
 */
export function webhookSignature(
  keys: readonly Uint8Array[],
  id: string,
  timestamp: string,
  body: Uint8Array,
): string {
  return keys.map((key) => `v1,${webhookHmac(key, id, timestamp, body).toString('base64')}`).join(' ');
}

function checkId(id: unknown): string {
  if (typeof id !== 'string' || !ID_PATTERN.test(id)) {
    throw new ConfigError(
      'id',
      `webhook id must be 1 to 255 printable ASCII characters without spaces, got ${showValue(id)}`,
    );
  }
  return id;
}

/**
 * The Standard Webhooks headers for a request with this body.
 *
 * @example
 * ```ts
 * const body = JSON.stringify({ id, consumer: 'billing' });
 * const headers = signWebhook({ secret, id: randomUUID(), body });
 * await fetch(url, { method: 'POST', body, headers: { ...headers, 'content-type': 'application/json' } });
 * ```
 */
export function signWebhook(options: SignWebhookOptions): WebhookHeaders {
  const keys = webhookKeys(options.secret);
  const id = checkId(options.id);
  const timestamp = String(toSeconds(options.timestamp ?? new Date(), 'timestamp'));
  return {
    'webhook-id': id,
    'webhook-timestamp': timestamp,
    'webhook-signature': webhookSignature(keys, id, timestamp, bodyBytes(options.body)),
  };
}

/** A header's value, whatever the source and the spelling of its name. */
export function readHeader(headers: HeaderSource, name: string): string | undefined {
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
  const record = headers as Readonly<Record<string, string | readonly string[] | undefined>>;
  let value = record[name];
  if (value === undefined) {
    const key = Object.keys(record).find((k) => k.toLowerCase() === name);
    if (key !== undefined) value = record[key];
  }
  return typeof value === 'string' ? value : value?.join(' ');
}

function required(headers: HeaderSource, name: string): string {
  const value = readHeader(headers, name)?.trim();
  if (!value) {
    throw new WebhookVerificationError(
      'missing_header',
      `the ${name} header is missing; a signed request carries webhook-id, webhook-timestamp and ` +
        'webhook-signature (Standard Webhooks)',
      { details: { header: name } },
    );
  }
  return value;
}

/**
 * Checks a request's Standard Webhooks headers against its raw body: the timestamp within
 * `toleranceSec` of `now`, and one of the `v1` signatures (compared in constant time) made with
 * one of the secrets. Returns the request's id and timestamp; throws a
 * {@link WebhookVerificationError} (`missing_header`, `invalid_timestamp`, `timestamp_too_old`,
 * `timestamp_in_future`, `bad_signature`) otherwise, or a ConfigError for a bad secret.
 *
 * The tolerance bounds replays; to refuse a replay inside it, remember the ids you have seen
 * (`webhook-id` is the same on every attempt of one webhook).
 *
 * @example
 * ```ts
 * try {
 *   verifyWebhook({ secret, headers: req.headers, body: rawBody });
 * } catch (err) {
 *   if (isWebhookVerificationError(err)) return res.writeHead(401).end();
 *   throw err;
 * }
 * ```
 */
export function verifyWebhook(options: VerifyWebhookOptions): VerifiedWebhook {
  return verifyWebhookWithKeys(webhookKeys(options.secret), options);
}

/**
 * {@link verifyWebhook} with keys already decoded (by `webhookKeys`), for handlers that verify
 * many requests with one secret.
 */
export function verifyWebhookWithKeys(
  keys: readonly Uint8Array[],
  options: Omit<VerifyWebhookOptions, 'secret'>,
): VerifiedWebhook {
  const { headers, toleranceSec = 300 } = options;
  if (typeof toleranceSec !== 'number' || !Number.isFinite(toleranceSec) || toleranceSec < 0) {
    throw new ConfigError(
      'toleranceSec',
      `toleranceSec must be a number of seconds of at least 0, got ${showValue(toleranceSec)}`,
    );
  }
  const body = bodyBytes(options.body);
  if (typeof headers !== 'object' || headers === null) {
    throw new ConfigError('headers', `headers must be the request's headers, got ${showValue(headers)}`);
  }
  const id = required(headers, WEBHOOK_ID_HEADER);
  const timestampText = required(headers, WEBHOOK_TIMESTAMP_HEADER);
  const signatures = required(headers, WEBHOOK_SIGNATURE_HEADER);

  if (!TIMESTAMP_PATTERN.test(timestampText)) {
    throw new WebhookVerificationError(
      'invalid_timestamp',
      `the webhook-timestamp header must be whole Unix seconds, got ${showValue(timestampText)}`,
      { details: { timestamp: timestampText.slice(0, 40) } },
    );
  }
  const timestamp = Number(timestampText);
  const now = toSeconds(options.now ?? new Date(), 'now');
  if (now - timestamp > toleranceSec) {
    throw new WebhookVerificationError(
      'timestamp_too_old',
      `webhook-timestamp ${timestamp} is ${now - timestamp} s in the past, beyond the tolerance of ` +
        `${toleranceSec} s: a replayed request, or the sender's clock is behind (check NTP on both machines)`,
      { details: { timestamp, now, toleranceSec } },
    );
  }
  if (timestamp - now > toleranceSec) {
    throw new WebhookVerificationError(
      'timestamp_in_future',
      `webhook-timestamp ${timestamp} is ${timestamp - now} s in the future, beyond the tolerance of ` +
        `${toleranceSec} s: the sender's clock is ahead, or it sent milliseconds instead of seconds`,
      { details: { timestamp, now, toleranceSec } },
    );
  }

  const given: Buffer[] = [];
  for (const entry of signatures.split(' ')) {
    // Other versions (`v1a`, asymmetric) are skipped, as the spec asks of receivers that do
    // not support them.
    if (!entry.startsWith('v1,')) continue;
    const bytes = Buffer.from(entry.slice(3), 'base64');
    if (bytes.length === SIGNATURE_BYTES) given.push(bytes);
  }
  if (given.length > 0) {
    for (const key of keys) {
      const expected = webhookHmac(key, id, timestampText, body);
      // timingSafeEqual: a comparison that stops at the first differing byte would tell an
      // attacker, by its timing, how much of a forged signature is right.
      if (given.some((candidate) => timingSafeEqual(candidate, expected))) return { id, timestamp };
    }
  }
  throw new WebhookVerificationError(
    'bad_signature',
    given.length === 0
      ? 'the webhook-signature header holds no v1 signature (expected space-separated "v1,<base64>" entries)'
      : `none of the ${given.length} v1 signature(s) in webhook-signature matches the body under ` +
          `${keys.length === 1 ? 'the secret' : `any of the ${keys.length} secrets`}: the sender uses another ` +
          'secret, or the body was changed on the way (verify the raw bytes, before JSON parsing)',
    { details: { id, signatures: given.length } },
  );
}
