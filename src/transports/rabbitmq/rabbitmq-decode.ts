/**
 * Mailroom's wire format on RabbitMQ, read back: an AMQP delivery decoded into a
 * {@link ReceivedMessage}. The inverse of `messageProperties()` in `rabbitmq-publish.ts`; a
 * consumer for another transport has a decoder of the same shape (`decodeDelivery(raw)` →
 * `{ ok, message }` or `{ ok: false, error }`).
 *
 * @module
 */
import { groupOf } from '../../core/atomic-group.js';
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { ACK_TO_HEADER } from '../../core/message.js';
import type { ReceivedMessage } from '../../core/types.js';
import { isUuid } from '../../core/uuid.js';
import type { AmqpDelivery } from './amqp-consumer-client.js';
import { ATTEMPT_HEADER, KEY_HEADER } from './rabbitmq-publish.js';

/** Headers Mailroom sets start with this; they are taken out of `ReceivedMessage.headers`. */
export const MAILROOM_HEADER_PREFIX = 'mailroom-';

/** The content type of a message published without one: bytes, handed over as they are. */
export const DEFAULT_CONTENT_TYPE = 'application/octet-stream';

/**
 * Headers RabbitMQ itself adds (dead-lettering history, the quorum queue's delivery count):
 * not the sender's, so not in `ReceivedMessage.headers`.
 */
const BROKER_HEADER = /^x-(?:death|delivery-count|first-death-.*|last-death-.*)$/;

/** `application/json`, `application/cloudevents+json; charset=utf-8`… */
const JSON_CONTENT_TYPE = /^application\/(?:[\w.-]+\+)?json\s*(?:;|$)/i;

/** A delivery decoded, or why it cannot be (the consumer dead-letters it at once). */
export type DecodedDelivery =
  | { ok: true; message: ReceivedMessage }
  | {
      ok: false;
      /** Says what is wrong with the delivery and what the sender should do instead. */
      error: PermanentDeliveryError;
      /** The `message-id` property, when there is one (possibly not a UUID). */
      id: string | null;
    };

/** True for JSON content types (`application/json`, `application/*+json`, with parameters). */
export function isJsonContentType(contentType: string): boolean {
  return JSON_CONTENT_TYPE.test(contentType);
}

/**
 * Decodes one delivery into the message the handler gets. A delivery without a UUID
 * `message-id` (nothing to recognise its copies by) or with a JSON content type and a body that
 * does not parse cannot be handled: it comes back as `{ ok: false, error }`. Other oddities of
 * a foreign publisher are tolerated: no content type reads as bytes, a missing or bad
 * `mailroom-attempt` as 1, a missing timestamp as `createdAt: null`.
 */
export function decodeDelivery(delivery: AmqpDelivery): DecodedDelivery {
  const { properties, fields, content } = delivery;
  const rawHeaders = properties.headers ?? {};
  const rawId = properties.messageId;
  const id = typeof rawId === 'string' ? rawId : rawId === undefined || rawId === null ? null : String(rawId);
  const topic = fields.routingKey;
  if (id === null || id === '') {
    return malformed(
      null,
      `a message on topic ${JSON.stringify(topic)} has no message-id property, so its copies cannot ` +
        'be recognised as one message; the publisher must set messageId to a UUID (RabbitMqTransport does)',
      'messageId',
    );
  }
  if (!isUuid(id)) {
    return malformed(
      id,
      `message-id ${JSON.stringify(id)} (topic ${JSON.stringify(topic)}) is not a UUID; the publisher ` +
        "must set messageId to the message's UUID (RabbitMqTransport does)",
      'messageId',
    );
  }

  const contentType = textOf(properties.contentType) ?? DEFAULT_CONTENT_TYPE;
  let payload: unknown = content;
  if (isJsonContentType(contentType)) {
    try {
      payload = JSON.parse(content.toString('utf8'));
    } catch (err) {
      return malformed(
        id,
        `message ${id} (topic ${JSON.stringify(topic)}) has content type ${JSON.stringify(contentType)} ` +
          `but its body is not JSON (${err instanceof Error ? err.message : String(err)}); the publisher ` +
          'must send JSON, or another content type for other bytes',
        'body',
        err,
      );
    }
  }

  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(rawHeaders)) {
    if (name.startsWith(MAILROOM_HEADER_PREFIX) || BROKER_HEADER.test(name)) continue;
    const text = headerText(value);
    if (text !== undefined) headers[name] = text;
  }

  const message: ReceivedMessage = {
    id,
    topic,
    key: textOf(rawHeaders[KEY_HEADER]) ?? null,
    type: textOf(properties.type) ?? null,
    headers,
    contentType,
    body: content,
    payload,
    ackTo: textOf(rawHeaders[ACK_TO_HEADER]) || null,
    attempt: attemptOf(rawHeaders[ATTEMPT_HEADER]),
    createdAt: dateOf(properties.timestamp),
    group: groupOf(groupHeaders(rawHeaders)),
  };
  return { ok: true, message };
}

/**
 * How many times the broker delivered this message before (quorum queues' `x-delivery-count`
 * header: failed or returned deliveries), 0 when the queue does not count them.
 */
export function brokerDeliveryCount(delivery: AmqpDelivery): number {
  const value = delivery.properties.headers?.['x-delivery-count'];
  const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : NaN;
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

function malformed(id: string | null, text: string, field: string, cause?: unknown): DecodedDelivery {
  const error = new PermanentDeliveryError(text, {
    ...(cause === undefined ? {} : { cause }),
    details: { reason: 'malformed', field, messageId: id },
  });
  return { ok: false, error, id };
}

/** A string property or header as text; a byte array (`x` field) as UTF-8. */
function textOf(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return undefined;
}

/**
 * A header value as the string Mailroom headers are. Another client may send numbers, booleans,
 * byte arrays, tables or arrays: those become their text (tables and arrays as JSON).
 */
function headerText(value: unknown): string | undefined {
  if (value === null || value === undefined) return undefined;
  const text = textOf(value);
  if (text !== undefined) return text;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return String(value);
  }
  if (value instanceof Date) return value.toISOString();
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/** `mailroom-attempt` as a positive integer; 1 when absent or not one. */
function attemptOf(value: unknown): number {
  const text = typeof value === 'number' ? String(value) : textOf(value);
  if (text === undefined || !/^[1-9]\d{0,8}$/.test(text)) return 1;
  return Number(text);
}

/** The AMQP timestamp (seconds since the epoch) as a Date, or null. */
function dateOf(value: unknown): Date | null {
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) return null;
  return new Date(value * 1000);
}

/** The `mailroom-group*` headers as text, for `groupOf`. */
function groupHeaders(raw: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(raw)) {
    if (!name.startsWith('mailroom-group')) continue;
    const text = headerText(value);
    if (text !== undefined) out[name] = text;
  }
  return out;
}
