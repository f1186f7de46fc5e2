/**
 * Mailroom's wire format on Redis Streams: the fields of the stream entry `XADD` writes for an
 * outbox message, and an entry decoded back into a {@link ReceivedMessage}. A stream entry is a
 * flat list of field/value pairs of bytes, with no headers of its own; the fields are named as the
 * `mailroom-*` headers of the RabbitMQ and STOMP transports, so one vocabulary serves every
 * broker. The user's headers travel together as one JSON object (`headers`), the payload as raw
 * bytes (`payload`, binary-safe), last.
 *
 * @module
 */
import { groupOf } from '../../core/atomic-group.js';
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { ACK_TO_HEADER } from '../../core/message.js';
import { MAILROOM_HEADER_PREFIX } from '../../core/received-message.js';
import type { OutboxMessage, ReceivedMessage } from '../../core/types.js';
import { isUuid } from '../../core/uuid.js';
import type { RedisArgument } from './redis-client.js';

/** The message id (UUIDv7, the same on every copy: consumers dedupe on it). */
export const ID_FIELD = 'mailroom-id';
/** The message topic (the stream name may not give it back: a template). */
export const TOPIC_FIELD = 'mailroom-topic';
/** The message key; absent for keyless messages. */
export const KEY_FIELD = 'mailroom-key';
/** The message type; absent when null. */
export const TYPE_FIELD = 'mailroom-type';
/** The delivery attempt, `'1'` for the first. */
export const ATTEMPT_FIELD = 'mailroom-attempt';
/** When the message was enqueued, ISO 8601 with milliseconds. */
export const CREATED_AT_FIELD = 'mailroom-created-at';
/** The payload's content type. */
export const CONTENT_TYPE_FIELD = 'content-type';
/** The user's headers (Mailroom's `mailroom-group*`, `mailroom-ack-to` among them), as a JSON object of strings. */
export const HEADERS_FIELD = 'headers';
/** The payload bytes, exactly as enqueued. */
export const PAYLOAD_FIELD = 'payload';

/** The content type of an entry that came without one: bytes, handed over as they are. */
export const DEFAULT_CONTENT_TYPE = 'application/octet-stream';

/** The field/value arguments of `XADD` for `message`, payload last. */
export function entryFields(message: OutboxMessage): RedisArgument[] {
  const fields: RedisArgument[] = [ID_FIELD, message.id, TOPIC_FIELD, message.topic];
  if (message.key !== null) fields.push(KEY_FIELD, message.key);
  if (message.type !== null) fields.push(TYPE_FIELD, message.type);
  fields.push(
    ATTEMPT_FIELD,
    String(message.attempts),
    CREATED_AT_FIELD,
    message.createdAt.toISOString(),
    CONTENT_TYPE_FIELD,
    message.contentType,
    HEADERS_FIELD,
    JSON.stringify(message.headers),
    PAYLOAD_FIELD,
    message.payload,
  );
  return fields;
}

/** An entry decoded, or why it cannot be (a consumer dead-letters it). */
export type DecodedEntry =
  { ok: true; message: ReceivedMessage } | { ok: false; error: PermanentDeliveryError; id: string | null };

/** `application/json`, `application/cloudevents+json; charset=utf-8`… */
const JSON_CONTENT_TYPE = /^application\/(?:[\w.-]+\+)?json\s*(?:;|$)/i;

/**
 * Decodes a stream entry's fields (as `XREAD`/`XREADGROUP`/`XRANGE` return them with ioredis's
 * `…Buffer` methods: `[name, value, name, value, …]`, or the same as strings) into what a handler
 * gets, for `inbox.handle`. An entry without a UUID `mailroom-id` (nothing to recognise its
 * copies by), with `headers` that are not a JSON object of strings, or with a JSON content type
 * and a payload that does not parse comes back as `{ ok: false }`. `stream` names the stream in
 * errors, and is the topic when the entry has no `mailroom-topic`.
 *
 * @example
 * ```ts
 * const [[, entries]] = await redis.xreadgroupBuffer('GROUP', 'billing', 'c1', 'STREAMS', 'order.created', '>');
 * for (const [entryId, fields] of entries) {
 *   const decoded = decodeStreamEntry(fields, 'order.created');
 *   if (decoded.ok) await inbox.handle(decoded.message, async (tx) => { … });
 * }
 * ```
 */
export function decodeStreamEntry(fields: ReadonlyArray<Buffer | string>, stream = ''): DecodedEntry {
  const values = new Map<string, Buffer>();
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = String(fields[i]);
    const value = fields[i + 1] as Buffer | string;
    values.set(name, Buffer.isBuffer(value) ? value : Buffer.from(value));
  }
  const text = (name: string): string | undefined => values.get(name)?.toString('utf8');
  const id = text(ID_FIELD) ?? null;
  const where = `stream ${JSON.stringify(stream)}`;
  if (id === null || id === '') {
    return malformed(
      null,
      `an entry of ${where} has no ${ID_FIELD} field, so its copies cannot be recognised as one message; ` +
        `the publisher must set ${ID_FIELD} to a UUID (RedisStreamsTransport does)`,
      ID_FIELD,
    );
  }
  if (!isUuid(id)) {
    return malformed(
      id,
      `${ID_FIELD} ${JSON.stringify(id)} (${where}) is not a UUID; the publisher must set it to the message's ` +
        'UUID (RedisStreamsTransport does)',
      ID_FIELD,
    );
  }
  let headers: Record<string, string> = {};
  const headersText = text(HEADERS_FIELD);
  if (headersText !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(headersText);
    } catch (err) {
      parsed = err;
    }
    if (
      typeof parsed !== 'object' ||
      parsed === null ||
      Array.isArray(parsed) ||
      parsed instanceof Error ||
      Object.values(parsed).some((v) => typeof v !== 'string')
    ) {
      return malformed(
        id,
        `message ${id} (${where}) has a ${HEADERS_FIELD} field that is not a JSON object of strings`,
        HEADERS_FIELD,
      );
    }
    headers = parsed as Record<string, string>;
  }
  const contentType = text(CONTENT_TYPE_FIELD) ?? DEFAULT_CONTENT_TYPE;
  const body = values.get(PAYLOAD_FIELD) ?? Buffer.alloc(0);
  let payload: unknown = body;
  if (JSON_CONTENT_TYPE.test(contentType)) {
    try {
      payload = JSON.parse(body.toString('utf8'));
    } catch (err) {
      return malformed(
        id,
        `message ${id} (${where}) has content type ${JSON.stringify(contentType)} but its payload is not JSON ` +
          `(${err instanceof Error ? err.message : String(err)}); the publisher must send JSON, or another ` +
          'content type for other bytes',
        PAYLOAD_FIELD,
        err,
      );
    }
  }
  const userHeaders: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (!name.startsWith(MAILROOM_HEADER_PREFIX)) userHeaders[name] = value;
  }
  const createdText = text(CREATED_AT_FIELD);
  const created = createdText === undefined ? null : new Date(createdText);
  const attemptText = text(ATTEMPT_FIELD) ?? '';
  return {
    ok: true,
    message: {
      id,
      topic: text(TOPIC_FIELD) ?? stream,
      key: text(KEY_FIELD) ?? null,
      type: text(TYPE_FIELD) ?? null,
      headers: userHeaders,
      contentType,
      body,
      payload,
      ackTo: headers[ACK_TO_HEADER] || null,
      attempt: /^[1-9]\d{0,8}$/.test(attemptText) ? Number(attemptText) : 1,
      createdAt: created !== null && !Number.isNaN(created.getTime()) ? created : null,
      group: groupOf(headers),
    },
  };
}

function malformed(id: string | null, text: string, field: string, cause?: unknown): DecodedEntry {
  const error = new PermanentDeliveryError(text, {
    ...(cause === undefined ? {} : { cause }),
    details: { reason: 'malformed', field, messageId: id },
  });
  return { ok: false, error, id };
}
