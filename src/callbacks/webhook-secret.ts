import { randomBytes } from 'node:crypto';
import { ConfigError } from '../core/errors/config-error.js';
import type { Field } from '../core/options-schema.js';

/**
 * A signing secret shared by the sender and the receiver of webhooks, in one of two forms:
 *
 * - `whsec_<base64>` (the Standard Webhooks form, what {@link generateWebhookSecret} makes): the
 *   HMAC key is the base64-decoded bytes after the prefix.
 * - any other string: the HMAC key is the string's UTF-8 bytes, exactly as given (no trimming,
 *   no decoding). A receiver in another language must use the same bytes.
 *
 * Either way the key must be at least {@link MIN_SECRET_BYTES} bytes. An array of secrets is a
 * key rotation: a sender signs with each (one `v1,…` entry per secret in `webhook-signature`),
 * a receiver accepts a signature made with any of them.
 *
 * @example 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
 * @example ['whsec_new…', 'whsec_old…'] // during a rotation
 */
export type WebhookSecret = string | readonly string[];

/** Shortest HMAC key accepted: shorter ones can be guessed by brute force. */
export const MIN_SECRET_BYTES = 16;
/** Most secrets at once (a rotation needs two; more is a mistake, and costs an HMAC each). */
export const MAX_SECRETS = 10;

const PREFIX = 'whsec_';
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const EXPECTED =
  `a 'whsec_<base64>' string or a plain string of at least ${MIN_SECRET_BYTES} bytes ` +
  `(or an array of up to ${MAX_SECRETS} of them, during a key rotation)`;

/** What a value is, without its content: secrets never appear in messages. */
function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of ${value.length}`;
  return `a ${typeof value}`;
}

function decodeOne(value: unknown, label: string, key: string): Buffer {
  if (typeof value !== 'string') {
    throw new ConfigError(key, `${label} must be ${EXPECTED}; got ${kindOf(value)}`);
  }
  let bytes: Buffer;
  if (value.startsWith(PREFIX)) {
    const encoded = value.slice(PREFIX.length);
    if (!BASE64.test(encoded)) {
      throw new ConfigError(
        key,
        `${label} starts with '${PREFIX}' but what follows is not base64 (${encoded.length} characters); ` +
          `give the secret exactly as generated, or a plain string without the '${PREFIX}' prefix`,
      );
    }
    bytes = Buffer.from(encoded, 'base64');
  } else {
    bytes = Buffer.from(value, 'utf8');
  }
  if (bytes.length < MIN_SECRET_BYTES) {
    throw new ConfigError(
      key,
      `${label} is a key of ${bytes.length} bytes, under the minimum of ${MIN_SECRET_BYTES}; ` +
        `generate one with generateWebhookSecret() (32 random bytes)`,
      { bytes: bytes.length, min: MIN_SECRET_BYTES },
    );
  }
  return bytes;
}

/**
 * The HMAC keys of a {@link WebhookSecret}, one per secret. Throws a ConfigError (key `key`)
 * whose message starts with `label` and never shows the secret.
 */
export function webhookKeys(secret: unknown, label = 'secret', key = 'secret'): Buffer[] {
  if (!Array.isArray(secret)) return [decodeOne(secret, label, key)];
  if (secret.length === 0 || secret.length > MAX_SECRETS) {
    throw new ConfigError(key, `${label} must be ${EXPECTED}; got ${kindOf(secret)}`);
  }
  return secret.map((s: unknown, i) => decodeOne(s, `${label}[${i}]`, key));
}

/**
 * The `secret` option of an options schema: resolves to the decoded keys. Unlike the schema's
 * own fields its errors never show the value, since that value is the secret.
 */
export function secretField(): Field<Buffer[]> {
  return {
    expected: EXPECTED,
    resolve(value, at) {
      const label = `${at.owner} option ${at.path}`;
      if (value === undefined) {
        throw new ConfigError(at.path, `${label} is missing; give ${EXPECTED}`);
      }
      return webhookKeys(value, label, at.path);
    },
  };
}

/**
 * A new random secret in the Standard Webhooks form, `whsec_` and 32 random bytes in base64.
 *
 * @example
 * ```ts
 * const secret = generateWebhookSecret(); // store it where both sides read it (a secret manager)
 * ```
 */
export function generateWebhookSecret(bytes = 32): string {
  if (!Number.isInteger(bytes) || bytes < MIN_SECRET_BYTES || bytes > 1024) {
    throw new ConfigError(
      'bytes',
      `generateWebhookSecret(bytes): bytes must be an integer from ${MIN_SECRET_BYTES} to 1024, got ${bytes}`,
    );
  }
  return `${PREFIX}${randomBytes(bytes).toString('base64')}`;
}
