/**
 * Mailroom's wire format on STOMP: the SEND headers of an outbox message, and a MESSAGE frame
 * decoded back into a {@link ReceivedMessage}. STOMP has no standard header for a message's id,
 * key or type that survives both RabbitMQ and ActiveMQ (each broker sets `message-id` on MESSAGE
 * itself), so they travel as `mailroom-*` headers, named as the RabbitMQ transport names the ones
 * it has (`mailroom-key`, `mailroom-attempt`).
 *
 * @module
 */
import { groupOf } from '../../core/atomic-group.js';
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { ACK_TO_HEADER } from '../../core/message.js';
import { MAILROOM_HEADER_PREFIX } from '../../core/received-message.js';
import type { OutboxMessage, ReceivedMessage } from '../../core/types.js';
import { isUuid } from '../../core/uuid.js';
import { reservedHeaderError, unencodableHeaderError } from './stomp-errors.js';
import type { HeaderList, StompFrame } from './stomp-frame.js';

/** The message id (UUIDv7, the same on every copy: consumers dedupe on it). */
export const ID_HEADER = 'mailroom-id';
/** The message topic (the destination may not give it back: a template, or a broker rewriting it). */
export const TOPIC_HEADER = 'mailroom-topic';
/** The message key; absent for keyless messages. */
export const KEY_HEADER = 'mailroom-key';
/** The message type; absent when null. */
export const TYPE_HEADER = 'mailroom-type';
/** The delivery attempt, `'1'` for the first. */
export const ATTEMPT_HEADER = 'mailroom-attempt';
/** When the message was enqueued, ISO 8601 with milliseconds. */
export const CREATED_AT_HEADER = 'mailroom-created-at';

/** The content type of a message that came without one: bytes, handed over as they are. */
export const DEFAULT_CONTENT_TYPE = 'application/octet-stream';

/** The headers the transport sets; a user header of the same name is dropped (the transport's wins). */
const TRANSPORT_HEADERS: ReadonlySet<string> = new Set([
  ID_HEADER,
  TOPIC_HEADER,
  KEY_HEADER,
  TYPE_HEADER,
  ATTEMPT_HEADER,
  CREATED_AT_HEADER,
]);

/**
 * User header names STOMP or a broker reads itself: they would change where or how the message is
 * delivered (`destination`, `transaction`, `expires`, `priority`, `reply-to`…), or are frame
 * mechanics. A message carrying one is refused (`permanent`) before sending.
 */
export const RESERVED_HEADERS: ReadonlySet<string> = new Set([
  'destination',
  'receipt',
  'transaction',
  'content-length',
  'content-type',
  'persistent',
  'expires',
  'priority',
  'reply-to',
  'message-id',
  'subscription',
  'ack',
  'id',
  'redelivered',
]);

/**
 * Headers a broker adds to MESSAGE frames (or echoes from SEND) besides the sender's: left out of
 * `ReceivedMessage.headers`, as are Mailroom's own.
 */
const BROKER_HEADERS: ReadonlySet<string> = new Set([
  ...RESERVED_HEADERS,
  'timestamp', // ActiveMQ: JMSTimestamp
  'x-queue-name',
]);

/**
 * The SEND headers of `message` to `destination`, user headers last. Throws a
 * `PermanentDeliveryError` for a user header that is reserved or cannot be encoded.
 */
export function sendHeaders(message: OutboxMessage, destination: string, persistent: boolean): HeaderList {
  const headers: Array<[string, string]> = [
    ['destination', destination],
    ['persistent', persistent ? 'true' : 'false'],
    ['content-type', message.contentType],
    [ID_HEADER, message.id],
    [TOPIC_HEADER, message.topic],
  ];
  if (message.key !== null) headers.push([KEY_HEADER, message.key]);
  if (message.type !== null) headers.push([TYPE_HEADER, message.type]);
  headers.push(
    [ATTEMPT_HEADER, String(message.attempts)],
    [CREATED_AT_HEADER, message.createdAt.toISOString()],
  );
  for (const [name, value] of Object.entries(message.headers)) {
    if (TRANSPORT_HEADERS.has(name)) continue;
    if (RESERVED_HEADERS.has(name.toLowerCase())) throw reservedHeaderError(message, name);
    if (name.includes('\0') || value.includes('\0')) throw unencodableHeaderError(message, name);
    headers.push([name, value]);
  }
  return headers;
}

/** A MESSAGE frame decoded, or why it cannot be (the consumer dead-letters it at once). */
export type DecodedMessage =
  { ok: true; message: ReceivedMessage } | { ok: false; error: PermanentDeliveryError; id: string | null };

/** `application/json`, `application/cloudevents+json; charset=utf-8`… */
const JSON_CONTENT_TYPE = /^application\/(?:[\w.-]+\+)?json\s*(?:;|$)/i;

/**
 * Decodes one MESSAGE frame into what the handler gets. A frame without a UUID `mailroom-id`
 * (nothing to recognise its copies by) or with a JSON content type and a body that does not parse
 * comes back as `{ ok: false }`. The topic is `mailroom-topic`, else the destination.
 */
export function decodeMessage(frame: StompFrame): DecodedMessage {
  const h = frame.headers;
  const destination = h['destination'] ?? '';
  const topic = h[TOPIC_HEADER] ?? destination;
  const id = h[ID_HEADER] ?? null;
  if (id === null || id === '') {
    return malformed(
      null,
      `a message on ${JSON.stringify(destination)} has no ${ID_HEADER} header, so its copies cannot be ` +
        `recognised as one message; the publisher must set ${ID_HEADER} to a UUID (StompTransport does)`,
      ID_HEADER,
    );
  }
  if (!isUuid(id)) {
    return malformed(
      id,
      `${ID_HEADER} ${JSON.stringify(id)} (destination ${JSON.stringify(destination)}) is not a UUID; the ` +
        "publisher must set it to the message's UUID (StompTransport does)",
      ID_HEADER,
    );
  }
  const contentType = h['content-type'] ?? DEFAULT_CONTENT_TYPE;
  let payload: unknown = frame.body;
  if (JSON_CONTENT_TYPE.test(contentType)) {
    try {
      payload = JSON.parse(frame.body.toString('utf8'));
    } catch (err) {
      return malformed(
        id,
        `message ${id} (destination ${JSON.stringify(destination)}) has content type ${JSON.stringify(contentType)} ` +
          `but its body is not JSON (${err instanceof Error ? err.message : String(err)}); the publisher must send ` +
          'JSON, or another content type for other bytes',
        'body',
        err,
      );
    }
  }
  const headers: Record<string, string> = {};
  const mailroom: Record<string, string> = {};
  for (const [name, value] of Object.entries(h)) {
    if (name.startsWith(MAILROOM_HEADER_PREFIX)) mailroom[name] = value;
    else if (!BROKER_HEADERS.has(name)) headers[name] = value;
  }
  const created = h[CREATED_AT_HEADER] === undefined ? null : new Date(h[CREATED_AT_HEADER]);
  const attemptText = h[ATTEMPT_HEADER] ?? '';
  const message: ReceivedMessage = {
    id,
    topic,
    key: h[KEY_HEADER] ?? null,
    type: h[TYPE_HEADER] ?? null,
    headers,
    contentType,
    body: frame.body,
    payload,
    ackTo: h[ACK_TO_HEADER] || null,
    attempt: /^[1-9]\d{0,8}$/.test(attemptText) ? Number(attemptText) : 1,
    createdAt: created !== null && !Number.isNaN(created.getTime()) ? created : null,
    group: groupOf(mailroom),
  };
  return { ok: true, message };
}

function malformed(id: string | null, text: string, field: string, cause?: unknown): DecodedMessage {
  const error = new PermanentDeliveryError(text, {
    ...(cause === undefined ? {} : { cause }),
    details: { reason: 'malformed', field, messageId: id },
  });
  return { ok: false, error, id };
}
