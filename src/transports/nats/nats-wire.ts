/**
 * Mailroom's wire format on NATS: the headers of an outbox message, and a received message's
 * headers read back. NATS has no fields for a message's key, type or content type, so they travel
 * as `mailroom-*` headers, named as the RabbitMQ and STOMP transports name theirs; the id also
 * goes in `Nats-Msg-Id`, which JetStream deduplicates on.
 *
 * @module
 */
import { headers as natsHeaders, type MsgHdrs } from '@nats-io/transport-node';

import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { toReceivedMessage } from '../../core/received-message.js';
import type { OutboxMessage, ReceivedMessage } from '../../core/types.js';
import { isUuid } from '../../core/uuid.js';
import { invalidHeaderError } from './nats-errors.js';

/** JetStream's dedupe header: a copy with an id seen within the stream's duplicate window is dropped. */
export const MSG_ID_HEADER = 'Nats-Msg-Id';
/** The message id (UUIDv7, the same on every copy: consumers dedupe on it). */
export const ID_HEADER = 'mailroom-id';
/** The message topic (the subject carries a prefix, and may be rewritten by a stream's transform). */
export const TOPIC_HEADER = 'mailroom-topic';
/** The message key; absent for keyless messages. */
export const KEY_HEADER = 'mailroom-key';
/** The message type; absent when null. */
export const TYPE_HEADER = 'mailroom-type';
/** The payload's content type. */
export const CONTENT_TYPE_HEADER = 'mailroom-content-type';
/** The delivery attempt, `'1'` for the first. */
export const ATTEMPT_HEADER = 'mailroom-attempt';
/** When the message was enqueued, ISO 8601 with milliseconds. */
export const CREATED_AT_HEADER = 'mailroom-created-at';

/** The headers the transport sets; a user header of the same name (any case) is dropped. */
const TRANSPORT_HEADERS: ReadonlySet<string> = new Set(
  [
    ID_HEADER,
    TOPIC_HEADER,
    KEY_HEADER,
    TYPE_HEADER,
    CONTENT_TYPE_HEADER,
    ATTEMPT_HEADER,
    CREATED_AT_HEADER,
  ].map((name) => name.toLowerCase()),
);

/** Printable ASCII except ':', what NATS (like HTTP/1) allows in a header name. */
const HEADER_NAME = /^[!-9;-~]+$/;

/**
 * The NATS headers of `message`, user headers last; values NATS would change are encoded (see
 * {@link encodeHeaderValue}). Throws a `PermanentDeliveryError` for a user header name NATS
 * cannot carry (outside printable ASCII, or with ':') or one the server reads itself (`Nats-*`).
 */
export function messageHeaders(message: OutboxMessage): MsgHdrs {
  const h = natsHeaders();
  h.set(MSG_ID_HEADER, message.id);
  h.set(ID_HEADER, message.id);
  h.set(TOPIC_HEADER, encodeHeaderValue(message.topic));
  if (message.key !== null) h.set(KEY_HEADER, encodeHeaderValue(message.key));
  if (message.type !== null) h.set(TYPE_HEADER, encodeHeaderValue(message.type));
  h.set(CONTENT_TYPE_HEADER, encodeHeaderValue(message.contentType));
  h.set(ATTEMPT_HEADER, String(message.attempts));
  h.set(CREATED_AT_HEADER, message.createdAt.toISOString());
  for (const [name, value] of Object.entries(message.headers)) {
    const lower = name.toLowerCase();
    if (TRANSPORT_HEADERS.has(lower)) continue;
    if (!HEADER_NAME.test(name)) {
      throw invalidHeaderError(
        message,
        name,
        "has a character NATS header names cannot carry (only printable ASCII without ':' or spaces)",
      );
    }
    if (lower.startsWith('nats-')) {
      throw invalidHeaderError(
        message,
        name,
        'starts with Nats-, a prefix the NATS server reads itself (Nats-Msg-Id, Nats-Expected-*, Nats-Rollup, Nats-TTL…)',
      );
    }
    h.append(name, encodeHeaderValue(value));
  }
  return h;
}

/** An RFC 2047 encoded word: how a value NATS would change travels (see {@link encodeHeaderValue}). */
const ENCODED_WORD = /^=\?utf-8\?b\?([A-Za-z0-9+/]*={0,2})\?=$/i;

/**
 * A header value as sent: unchanged, unless NATS would not carry it as it is. NATS trims header
 * values and cannot carry CR or LF; such a value (and one that already looks like an encoded
 * word) goes as an RFC 2047 encoded word, `=?utf-8?b?<base64>?=`, which
 * {@link decodeHeaderValue} (and {@link readMessageHeaders}) turn back into the original.
 */
export function encodeHeaderValue(value: string): string {
  if (value.trim() === value && !/[\r\n]/.test(value) && !ENCODED_WORD.test(value)) return value;
  return `=?utf-8?b?${Buffer.from(value, 'utf8').toString('base64')}?=`;
}

/** The original of a value {@link encodeHeaderValue} produced. */
export function decodeHeaderValue(value: string): string {
  const match = ENCODED_WORD.exec(value);
  return match ? Buffer.from(match[1] ?? '', 'base64').toString('utf8') : value;
}

/** What a consumer reads from a message the transport published. */
export interface NatsMessageFields {
  id: string | null;
  topic: string | null;
  key: string | null;
  type: string | null;
  contentType: string | null;
  attempt: number | null;
  createdAt: Date | null;
  /** The sender's own headers: without `mailroom-*` set by the transport and `Nats-*`. */
  headers: Record<string, string>;
}

/** Reads the transport's headers back (from a JetStream or core NATS message's `headers`). */
export function readMessageHeaders(h: MsgHdrs | undefined): NatsMessageFields {
  const get = (name: string): string | null => (h?.has(name) ? decodeHeaderValue(h.get(name)) : null);
  const attempt = get(ATTEMPT_HEADER);
  const createdAt = get(CREATED_AT_HEADER);
  const user: Record<string, string> = {};
  for (const [name, values] of h ?? []) {
    const lower = name.toLowerCase();
    if (TRANSPORT_HEADERS.has(lower) || lower.startsWith('nats-')) continue;
    user[name] = decodeHeaderValue(values[0] ?? '');
  }
  return {
    id: get(ID_HEADER) ?? get(MSG_ID_HEADER),
    topic: get(TOPIC_HEADER),
    key: get(KEY_HEADER),
    type: get(TYPE_HEADER),
    contentType: get(CONTENT_TYPE_HEADER),
    attempt: attempt === null ? null : Number(attempt),
    createdAt: createdAt === null ? null : new Date(createdAt),
    headers: user,
  };
}

/** The parts of a NATS or JetStream message {@link decodeNatsMessage} reads. */
export interface NatsWireMessage {
  subject: string;
  headers?: MsgHdrs | undefined;
  data: Uint8Array;
}

/**
 * A message the transport published, as an `Inbox` takes it (`inbox.handle(decodeNatsMessage(m), …)`):
 * the id from `mailroom-id`, the topic from `mailroom-topic` (else the subject), the sender's
 * headers without Mailroom's, the JSON payload parsed. Throws a `PermanentDeliveryError` for a
 * message without a UUID id (nothing to recognise its copies by) or with a JSON content type and
 * a body that does not parse: terminate it (`m.term()`) rather than redeliver it.
 */
export function decodeNatsMessage(msg: NatsWireMessage): ReceivedMessage {
  const fields = readMessageHeaders(msg.headers);
  if (fields.id === null || !isUuid(fields.id)) {
    throw new PermanentDeliveryError(
      `NATS message on ${JSON.stringify(msg.subject)} has no UUID mailroom-id or Nats-Msg-Id header ` +
        `(got ${JSON.stringify(fields.id)}): it was not published by Mailroom`,
      { details: { subject: msg.subject, id: fields.id } },
    );
  }
  const headers: Record<string, string> = {};
  for (const [name, values] of msg.headers ?? []) {
    if (!name.toLowerCase().startsWith('nats-')) headers[name] = decodeHeaderValue(values[0] ?? '');
  }
  const outboxMessage: OutboxMessage = {
    seq: '0',
    id: fields.id,
    topic: fields.topic ?? msg.subject,
    key: fields.key,
    type: fields.type,
    payload: Buffer.from(msg.data),
    contentType: fields.contentType ?? 'application/octet-stream',
    headers,
    createdAt: fields.createdAt ?? new Date(0),
    attempts: fields.attempt ?? 1,
  };
  try {
    return toReceivedMessage(outboxMessage);
  } catch (err) {
    throw new PermanentDeliveryError(
      `NATS message ${fields.id} on ${JSON.stringify(msg.subject)} has content type ` +
        `${JSON.stringify(outboxMessage.contentType)} and a body that does not parse as JSON`,
      { cause: err, details: { subject: msg.subject, id: fields.id } },
    );
  }
}
