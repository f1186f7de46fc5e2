import { InvalidMessageError } from './errors/invalid-message-error.js';
import { PayloadTooLargeError } from './errors/payload-too-large-error.js';
import { showValue as show } from './show-value.js';
import type { AckRequest, DeliveryOptions, EncodedMessage, MessageInput } from './types.js';
import { isUuid, uuidv7 } from './uuid.js';

/** Limits applied to every message at enqueue. */
export interface MessageLimits {
  /** Largest encoded payload accepted. @default 1048576 (1 MiB) */
  maxPayloadBytes?: number;
  /**
   * Where receivers send acknowledgements of messages with `ack` that name no `replyTo`.
   * @default 'mailroom.ack'
   */
  ackTopic?: string;
}

/** The topic acknowledgements go to when neither the message nor the Outbox names one. */
export const DEFAULT_ACK_TOPIC = 'mailroom.ack';
/** The header that carries `ack.replyTo` to the receiver: its presence asks for an acknowledgement. */
export const ACK_TO_HEADER = 'mailroom-ack-to';
/** Bounds of `ack.timeoutMs`: a second (resending faster is a storm) to the longest delay. */
export const MIN_ACK_TIMEOUT_MS = 1000;
export const MAX_ACK_RESENDS = 1000;
export const DEFAULT_ACK_RESENDS = 3;
const MAX_CALLBACK_URL_BYTES = 2048;

export const DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024;
export const MAX_TOPIC_BYTES = 255;
export const MAX_KEY_BYTES = 1024;
export const MAX_TYPE_BYTES = 255;
export const MAX_HEADER_NAME_BYTES = 255;
export const MAX_HEADERS_BYTES = 64 * 1024;
/**
 * Longest `delayMs`: 365 days. An outbox holds messages until they can be delivered, soon; a
 * delay past a year is far more often a unit mistake (seconds taken for milliseconds, or an
 * absolute time such as `Date.now() + x` passed as a delay, which is about 55 years) than a
 * plan, and a message that must wait longer belongs in a scheduler. The bound also keeps the
 * value far inside what PostgreSQL's `bigint` and `interval` hold, so a bad delay is this
 * error at enqueue, never a database error that aborts the caller's transaction. The SQL API
 * (`<schema>.enqueue(…, delay)`) enforces the same bound.
 */
export const MAX_DELAY_MS = 365 * 24 * 60 * 60 * 1000;

const ALLOWED_MESSAGE_FIELDS = new Set([
  'id',
  'topic',
  'key',
  'type',
  'payload',
  'contentType',
  'headers',
  'delayMs',
  'ack',
  'callback',
]);
const ACK_FIELDS = new Set(['timeoutMs', 'maxResends', 'onExpire', 'replyTo']);

// C0 controls, DEL and C1 controls.
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;
// eslint-disable-next-line no-control-regex
const HEADER_VALUE_FORBIDDEN_RE = /[\u0000\r\n]/;

function checkText(field: string, value: unknown, maxBytes: number, allowControl: boolean): string {
  if (typeof value !== 'string') {
    throw new InvalidMessageError(field, `${field} must be a string, got ${show(value)}`, {
      value: show(value),
    });
  }
  if (value.length === 0) {
    throw new InvalidMessageError(field, `${field} must not be empty`, { value });
  }
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > maxBytes) {
    throw new InvalidMessageError(
      field,
      `${field} is ${bytes} bytes, over the limit of ${maxBytes} bytes: ${show(value)}`,
      { value: show(value), bytes, limit: maxBytes },
    );
  }
  if (!allowControl && CONTROL_RE.test(value)) {
    throw new InvalidMessageError(
      field,
      `${field} ${show(value)} contains a control character; use printable characters only`,
      { value: show(value) },
    );
  }
  if (value.includes('\u0000')) {
    throw new InvalidMessageError(field, `${field} ${show(value)} contains a NUL character`, {
      value: show(value),
    });
  }
  if (!value.isWellFormed()) {
    throw new InvalidMessageError(field, `${field} ${show(value)} contains an unpaired surrogate`, {
      value: show(value),
    });
  }
  return value;
}

/** Validates a topic name; returns it unchanged. */
export function validateTopic(topic: unknown): string {
  return checkText('topic', topic, MAX_TOPIC_BYTES, false);
}

function encodeJson(payload: unknown, id: string): Buffer {
  let text: string | undefined;
  try {
    text = JSON.stringify(payload, (_k, v: unknown) => {
      if (typeof v === 'number' && !Number.isFinite(v)) {
        throw new InvalidMessageError(
          'payload',
          `payload of message ${id} contains ${v}, which JSON cannot hold`,
        );
      }
      if (typeof v === 'function' || typeof v === 'symbol') {
        throw new InvalidMessageError(
          'payload',
          `payload of message ${id} contains ${show(v)}, which JSON cannot hold; pass plain data`,
        );
      }
      return v;
    });
  } catch (err) {
    if (err instanceof InvalidMessageError) throw err;
    throw new InvalidMessageError(
      'payload',
      `payload of message ${id} cannot be serialised to JSON (${(err as Error).message}); ` +
        `pass plain data (objects, arrays, strings, finite numbers, booleans, null) or bytes`,
      {},
      err,
    );
  }
  if (text === undefined) {
    throw new InvalidMessageError(
      'payload',
      `payload of message ${id} is ${show(payload)}, which JSON cannot hold; pass null for an empty payload`,
    );
  }
  return Buffer.from(text, 'utf8');
}

/**
 * Validates a message and encodes its payload. Throws {@link InvalidMessageError} or
 * {@link PayloadTooLargeError} naming the field and value; never returns a half-valid message.
 */
export function encodeMessage(input: MessageInput, limits: MessageLimits = {}): EncodedMessage {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new InvalidMessageError('message', `a message must be an object, got ${show(input)}`);
  }
  for (const field of Object.keys(input)) {
    if (!ALLOWED_MESSAGE_FIELDS.has(field)) {
      throw new InvalidMessageError(
        field,
        `unknown message field ${show(field)}; allowed: ${[...ALLOWED_MESSAGE_FIELDS].join(', ')}`,
      );
    }
  }
  const id = input.id === undefined ? uuidv7() : input.id;
  if (!isUuid(id)) {
    throw new InvalidMessageError('id', `id must be a UUID, got ${show(id)}; omit it to get a UUIDv7`);
  }
  const topic = validateTopic(input.topic);
  const key =
    input.key === undefined || input.key === null ? null : checkText('key', input.key, MAX_KEY_BYTES, true);
  const type =
    input.type === undefined || input.type === null
      ? null
      : checkText('type', input.type, MAX_TYPE_BYTES, false);

  let payload: Buffer;
  let defaultContentType: string;
  if (input.payload instanceof Uint8Array) {
    payload = Buffer.from(input.payload.buffer, input.payload.byteOffset, input.payload.byteLength);
    defaultContentType = 'application/octet-stream';
  } else {
    payload = encodeJson(input.payload, id);
    defaultContentType = 'application/json';
  }
  const limit = limits.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
  if (payload.byteLength > limit) throw new PayloadTooLargeError(payload.byteLength, limit, id);

  const contentType =
    input.contentType === undefined
      ? defaultContentType
      : checkText('contentType', input.contentType, 255, false);

  const headers: Record<string, string> = {};
  if (input.headers !== undefined) {
    if (typeof input.headers !== 'object' || input.headers === null || Array.isArray(input.headers)) {
      throw new InvalidMessageError(
        'headers',
        `headers must be an object of strings, got ${show(input.headers)}`,
      );
    }
    let total = 0;
    for (const [name, value] of Object.entries(input.headers)) {
      checkText(`header name ${show(name)}`, name, MAX_HEADER_NAME_BYTES, false);
      if (typeof value !== 'string') {
        throw new InvalidMessageError(
          `headers.${name}`,
          `header ${show(name)} must be a string, got ${show(value)}; convert it with String() first`,
          { value: show(value) },
        );
      }
      if (HEADER_VALUE_FORBIDDEN_RE.test(value)) {
        throw new InvalidMessageError(
          `headers.${name}`,
          `header ${show(name)} contains a NUL, CR or LF character: ${show(value)}`,
          { value: show(value) },
        );
      }
      total += Buffer.byteLength(name) + Buffer.byteLength(value);
      headers[name] = value;
    }
    if (total > MAX_HEADERS_BYTES) {
      throw new InvalidMessageError(
        'headers',
        `headers total ${total} bytes, over the limit of ${MAX_HEADERS_BYTES} bytes; move data to the payload`,
        { bytes: total, limit: MAX_HEADERS_BYTES },
      );
    }
  }

  let delayMs = 0;
  if (input.delayMs !== undefined) {
    if (typeof input.delayMs !== 'number' || Number.isNaN(input.delayMs) || input.delayMs < 0) {
      throw new InvalidMessageError(
        'delayMs',
        `delayMs must be a non-negative finite number of milliseconds, got ${show(input.delayMs)}`,
        { value: show(input.delayMs) },
      );
    }
    // Infinity lands here too: it is a delay past any limit, and the message says which limit.
    if (input.delayMs > MAX_DELAY_MS) {
      throw new InvalidMessageError(
        'delayMs',
        `delayMs ${String(input.delayMs)} is over the limit of ${MAX_DELAY_MS} (365 days); ` +
          `pass a delay in milliseconds, not an absolute time, and schedule anything later outside the outbox`,
        { value: input.delayMs, limit: MAX_DELAY_MS },
      );
    }
    delayMs = Math.round(input.delayMs);
  }

  let delivery: DeliveryOptions | null = null;
  if (input.ack !== undefined) {
    const ack = encodeAck(input.ack, limits);
    delivery = { ack };
    headers[ACK_TO_HEADER] = ack.replyTo;
  } else if (Object.hasOwn(headers, ACK_TO_HEADER)) {
    throw new InvalidMessageError(
      `headers.${ACK_TO_HEADER}`,
      `header ${ACK_TO_HEADER} is Mailroom's own (it asks the receiver for an acknowledgement); ` +
        'use the message field ack: { timeoutMs, replyTo } instead',
    );
  }
  if (input.callback !== undefined) {
    delivery = { ...delivery, callback: { url: checkCallbackUrl(input.callback) } };
  }

  return { id, topic, key, type, payload, contentType, headers, delayMs, delivery };
}

function encodeAck(value: unknown, limits: MessageLimits): NonNullable<DeliveryOptions['ack']> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidMessageError(
      'ack',
      `ack must be an object such as { timeoutMs: 30000, maxResends: 3 }, got ${show(value)}`,
    );
  }
  const ack = value as AckRequest;
  for (const field of Object.keys(ack)) {
    if (!ACK_FIELDS.has(field)) {
      throw new InvalidMessageError(
        `ack.${field}`,
        `unknown ack field ${show(field)}; allowed: ${[...ACK_FIELDS].join(', ')}`,
      );
    }
  }
  const timeoutMs = ack.timeoutMs;
  if (
    typeof timeoutMs !== 'number' ||
    !Number.isFinite(timeoutMs) ||
    timeoutMs < MIN_ACK_TIMEOUT_MS ||
    timeoutMs > MAX_DELAY_MS
  ) {
    throw new InvalidMessageError(
      'ack.timeoutMs',
      `ack.timeoutMs must be a number of milliseconds from ${MIN_ACK_TIMEOUT_MS} to ${MAX_DELAY_MS} (365 days), ` +
        `got ${show(timeoutMs)}: how long the receiver has to acknowledge before the message is resent`,
      { value: show(timeoutMs) },
    );
  }
  const maxResends = ack.maxResends ?? DEFAULT_ACK_RESENDS;
  if (!Number.isInteger(maxResends) || maxResends < 0 || maxResends > MAX_ACK_RESENDS) {
    throw new InvalidMessageError(
      'ack.maxResends',
      `ack.maxResends must be a whole number from 0 to ${MAX_ACK_RESENDS}, got ${show(maxResends)}`,
      { value: show(maxResends) },
    );
  }
  const onExpire =
    ack.onExpire === undefined || ack.onExpire === null
      ? null
      : checkText('ack.onExpire', ack.onExpire, MAX_TOPIC_BYTES, false);
  const replyTo =
    ack.replyTo === undefined
      ? (limits.ackTopic ?? DEFAULT_ACK_TOPIC)
      : checkText('ack.replyTo', ack.replyTo, MAX_TOPIC_BYTES, false);
  return { timeoutMs: Math.round(timeoutMs), maxResends, onExpire, replyTo };
}

function checkCallbackUrl(value: unknown): string {
  const url = typeof value === 'object' && value !== null ? (value as { url?: unknown }).url : undefined;
  if (typeof value !== 'object' || value === null || Object.keys(value).some((k) => k !== 'url')) {
    throw new InvalidMessageError(
      'callback',
      `callback must be an object { url: 'https://…' }, got ${show(value)}`,
    );
  }
  const text = checkText('callback.url', url, MAX_CALLBACK_URL_BYTES, false);
  let parsed: URL;
  try {
    parsed = new URL(text);
  } catch {
    throw new InvalidMessageError('callback.url', `callback.url is not a URL: ${show(text)}`, {
      value: show(text),
    });
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new InvalidMessageError(
      'callback.url',
      `callback.url must be an http:// or https:// URL, got scheme ${show(parsed.protocol)}`,
      { value: show(text) },
    );
  }
  return text;
}
