/**
 * Mailroom's wire format over HTTP: the request headers of a message POSTed on its own, and the
 * JSON body of a batch (decoding: webhook-decode.ts). The header names are
 * the ones the RabbitMQ and STOMP transports use (`mailroom-id`, `mailroom-key`, …).
 *
 * HTTP header names are case-insensitive and values are bytes with little room for what is not
 * printable ASCII, while a message's headers are any strings. So the request also lists the
 * message's header names as written (`mailroom-headers`), and carries a value that HTTP would
 * change (non-ASCII, control characters, leading or trailing blanks, which HTTP trims)
 * percent-encoded as UTF-8, naming it in `mailroom-headers-encoded`. Decoding undoes both, so a
 * receiver gets the headers exactly as sent.
 *
 * @module
 */
import { validateHeaderName } from 'node:http';

import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { showValue } from '../../core/show-value.js';
import type { OutboxMessage } from '../../core/types.js';
import { FRAMING_HEADERS } from './webhook-options.js';

/** The message id (UUIDv7, the same on every copy); also the `webhook-id` of a single POST. */
export const ID_HEADER = 'mailroom-id';
/** The topic, percent-encoded (`encodeURIComponent`). */
export const TOPIC_HEADER = 'mailroom-topic';
/** The key, percent-encoded; absent for keyless messages. */
export const KEY_HEADER = 'mailroom-key';
/** The type, percent-encoded; absent when null. */
export const TYPE_HEADER = 'mailroom-type';
/** The delivery attempt, `'1'` for the first. */
export const ATTEMPT_HEADER = 'mailroom-attempt';
/** When the message was enqueued, ISO 8601 with milliseconds. */
export const CREATED_AT_HEADER = 'mailroom-created-at';
/** The message's header names as written (case kept), comma-separated; absent when it has none. */
export const HEADER_NAMES_HEADER = 'mailroom-headers';
/** Of those, the ones whose value is percent-encoded UTF-8, comma-separated. */
export const ENCODED_HEADERS_HEADER = 'mailroom-headers-encoded';
/** On a batch POST: how many messages its JSON array holds. */
export const BATCH_HEADER = 'mailroom-batch';

/** Headers the transport sets; a message header of the same name is dropped (the transport's wins). */
const TRANSPORT_HEADERS: ReadonlySet<string> = new Set([
  ID_HEADER,
  TOPIC_HEADER,
  KEY_HEADER,
  TYPE_HEADER,
  ATTEMPT_HEADER,
  CREATED_AT_HEADER,
  HEADER_NAMES_HEADER,
  ENCODED_HEADERS_HEADER,
  BATCH_HEADER,
]);

/** A value HTTP carries unchanged: printable ASCII, not starting or ending with a blank. */
const PLAIN_VALUE = /^(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?$/;

function refused(
  message: OutboxMessage,
  header: string,
  why: string,
  cause?: unknown,
): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} (topic ${JSON.stringify(message.topic)}) has header ${showValue(header)}, which ${why}`,
    {
      ...(cause === undefined ? {} : { cause }),
      details: { reason: 'invalid_header', header, messageId: message.id },
    },
  );
}

function encodeField(message: OutboxMessage, name: string, value: string): string {
  try {
    return encodeURIComponent(value);
  } catch (err) {
    // A lone surrogate: no UTF-8 for it.
    throw refused(message, name, 'holds text that is not valid Unicode (a lone surrogate)', err);
  }
}

/**
 * The `mailroom-*` headers and the message's own headers for a POST of `message` on its own.
 * Throws a `PermanentDeliveryError` naming the header for one HTTP cannot carry: a name that is
 * not an HTTP token, one HTTP or the transport reads itself (`content-length`, `webhook-id`…), one
 * set by the transport's `headers` option, or two names equal but for case.
 */
export function messageHeaders(
  message: OutboxMessage,
  fixed: Readonly<Record<string, string>>,
): Record<string, string> {
  if (!PLAIN_VALUE.test(message.contentType)) {
    throw refused(
      message,
      'content-type',
      `(the content type ${showValue(message.contentType)}) is not printable ASCII`,
    );
  }
  const headers: Record<string, string> = {
    'content-type': message.contentType,
    [ID_HEADER]: message.id,
    [TOPIC_HEADER]: encodeField(message, TOPIC_HEADER, message.topic),
  };
  if (message.key !== null) headers[KEY_HEADER] = encodeField(message, KEY_HEADER, message.key);
  if (message.type !== null) headers[TYPE_HEADER] = encodeField(message, TYPE_HEADER, message.type);
  headers[ATTEMPT_HEADER] = String(message.attempts);
  headers[CREATED_AT_HEADER] = message.createdAt.toISOString();

  const fixedNames = new Set(Object.keys(fixed).map((n) => n.toLowerCase()));
  const seen = new Map<string, string>();
  const names: string[] = [];
  const encoded: string[] = [];
  for (const [name, value] of Object.entries(message.headers)) {
    const lower = name.toLowerCase();
    if (TRANSPORT_HEADERS.has(lower)) continue;
    try {
      validateHeaderName(name);
    } catch (err) {
      throw refused(
        message,
        name,
        "is not a legal HTTP header name (a token: letters, digits and !#$%&'*+-.^_`|~); rename it",
        err,
      );
    }
    if (FRAMING_HEADERS.has(lower) || lower.startsWith('webhook-')) {
      throw refused(message, name, 'HTTP or the webhook signature sets itself; rename it');
    }
    if (fixedNames.has(lower)) {
      throw refused(message, name, "the transport's headers option sets for every POST; rename it");
    }
    const earlier = seen.get(lower);
    if (earlier !== undefined) {
      throw refused(
        message,
        name,
        `differs from header ${showValue(earlier)} only in case; HTTP header names ignore case, so one would be lost`,
      );
    }
    seen.set(lower, name);
    names.push(name);
    if (PLAIN_VALUE.test(value)) {
      headers[lower] = value;
    } else {
      headers[lower] = encodeField(message, name, value);
      encoded.push(lower);
    }
  }
  if (names.length > 0) headers[HEADER_NAMES_HEADER] = names.join(',');
  if (encoded.length > 0) headers[ENCODED_HEADERS_HEADER] = encoded.join(',');
  return headers;
}

/** One message in a batch's JSON array. */
export interface BatchEntry {
  id: string;
  topic: string;
  key: string | null;
  type: string | null;
  contentType: string;
  headers: Record<string, string>;
  attempt: number;
  /** ISO 8601. */
  createdAt: string;
  /** The payload bytes: as text when they are valid UTF-8, else base64 (`payloadEncoding`). */
  payload: string;
  payloadEncoding: 'utf8' | 'base64';
}

export const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** A message as one entry of a batch's JSON array, serialised. */
export function batchEntry(message: OutboxMessage): string {
  let payload: string;
  let payloadEncoding: BatchEntry['payloadEncoding'] = 'utf8';
  try {
    payload = strictUtf8.decode(message.payload);
  } catch {
    payload = message.payload.toString('base64');
    payloadEncoding = 'base64';
  }
  const entry: BatchEntry = {
    id: message.id,
    topic: message.topic,
    key: message.key,
    type: message.type,
    contentType: message.contentType,
    headers: message.headers,
    attempt: message.attempts,
    createdAt: message.createdAt.toISOString(),
    payload,
    payloadEncoding,
  };
  // Lone surrogates (which JSON.stringify escapes) never get here: enqueue refuses them.
  return JSON.stringify(entry);
}
