/**
 * Mailroom's wire format over HTTP: the request headers of a message POSTed on its own, the JSON
 * body of a batch, and a request decoded back into {@link ReceivedMessage}s. The header names are
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

import { readHeader, type HeaderSource } from '../../callbacks/webhook-signature.js';
import { groupOf } from '../../core/atomic-group.js';
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { ACK_TO_HEADER } from '../../core/message.js';
import { MAILROOM_HEADER_PREFIX } from '../../core/received-message.js';
import { showValue } from '../../core/show-value.js';
import type { OutboxMessage, ReceivedMessage } from '../../core/types.js';
import { isUuid } from '../../core/uuid.js';
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

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

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

function malformed(
  text: string,
  field: string,
  id: string | null = null,
  cause?: unknown,
): PermanentDeliveryError {
  return new PermanentDeliveryError(text, {
    ...(cause === undefined ? {} : { cause }),
    details: { reason: 'malformed', field, messageId: id },
  });
}

/** `application/json`, `application/cloudevents+json; charset=utf-8`… */
const JSON_CONTENT_TYPE = /^application\/(?:[\w.-]+\+)?json\s*(?:;|$)/i;

/**
 * Parses a JSON payload on first read: a body that is not JSON fails the handler that reads it
 * (a `PermanentDeliveryError`, which the receiver answers 422, so the sender dead-letters it), not
 * the decoding, so a handler that wants only the bytes (`body`) still gets them.
 */
function definePayload(message: ReceivedMessage, contentType: string, body: Buffer): void {
  if (!JSON_CONTENT_TYPE.test(contentType)) {
    message.payload = body;
    return;
  }
  let parsed: { value: unknown } | undefined;
  Object.defineProperty(message, 'payload', {
    enumerable: true,
    configurable: true,
    get() {
      if (parsed === undefined) {
        try {
          parsed = { value: JSON.parse(body.toString('utf8')) };
        } catch (err) {
          throw malformed(
            `message ${message.id} has content type ${JSON.stringify(contentType)} but its body is not JSON ` +
              `(${err instanceof Error ? err.message : String(err)})`,
            'body',
            message.id,
            err,
          );
        }
      }
      return parsed.value;
    },
    set(value: unknown) {
      parsed = { value };
    },
  });
}

/** A ReceivedMessage from fields, splitting off Mailroom's own headers. */
function received(
  fields: Omit<ReceivedMessage, 'headers' | 'payload' | 'ackTo' | 'group'>,
  all: Record<string, string>,
): ReceivedMessage {
  const headers: Record<string, string> = {};
  const mailroom: Record<string, string> = {};
  for (const [name, value] of Object.entries(all)) {
    if (name.toLowerCase().startsWith(MAILROOM_HEADER_PREFIX)) mailroom[name.toLowerCase()] = value;
    else headers[name] = value;
  }
  const message: ReceivedMessage = {
    ...fields,
    headers,
    payload: undefined,
    ackTo: mailroom[ACK_TO_HEADER] || null,
    group: groupOf(mailroom),
  };
  definePayload(message, fields.contentType, fields.body);
  return message;
}

function decodeText(value: string, field: string, id: string | null): string {
  try {
    return decodeURIComponent(value);
  } catch (err) {
    throw malformed(`${field} ${showValue(value)} is not valid percent-encoding`, field, id, err);
  }
}

function parseAttempt(text: string | undefined): number {
  return text !== undefined && /^[1-9]\d{0,8}$/.test(text) ? Number(text) : 1;
}

function parseDate(text: string | undefined | null): Date | null {
  if (text === undefined || text === null) return null;
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? null : date;
}

function splitList(value: string | undefined): string[] {
  if (value === undefined) return [];
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** One message POSTed on its own, from its request headers and body. */
function decodeSingle(headers: HeaderSource, body: Buffer): ReceivedMessage {
  const id = readHeader(headers, ID_HEADER)?.trim();
  if (!id) {
    throw malformed(
      `the request has no ${ID_HEADER} header, so its copies cannot be recognised as one message; ` +
        'the sender must be a Mailroom WebhookTransport (or set it to the message UUID)',
      ID_HEADER,
    );
  }
  if (!isUuid(id)) throw malformed(`${ID_HEADER} ${showValue(id)} is not a UUID`, ID_HEADER);
  const topicText = readHeader(headers, TOPIC_HEADER);
  if (topicText === undefined || topicText === '') {
    throw malformed(`message ${id} has no ${TOPIC_HEADER} header`, TOPIC_HEADER, id);
  }
  const keyText = readHeader(headers, KEY_HEADER);
  const typeText = readHeader(headers, TYPE_HEADER);
  const encoded = new Set(splitList(readHeader(headers, ENCODED_HEADERS_HEADER)).map((n) => n.toLowerCase()));
  const all: Record<string, string> = {};
  for (const name of splitList(readHeader(headers, HEADER_NAMES_HEADER))) {
    const value = readHeader(headers, name.toLowerCase());
    if (value === undefined) {
      throw malformed(
        `message ${id} lists header ${showValue(name)} in ${HEADER_NAMES_HEADER} but the request has none ` +
          '(a proxy on the way dropped it?)',
        name,
        id,
      );
    }
    all[name] = encoded.has(name.toLowerCase()) ? decodeText(value, name, id) : value;
  }
  return received(
    {
      id: id.toLowerCase(),
      topic: decodeText(topicText, TOPIC_HEADER, id),
      key: keyText === undefined ? null : decodeText(keyText, KEY_HEADER, id),
      type: typeText === undefined ? null : decodeText(typeText, TYPE_HEADER, id),
      contentType: readHeader(headers, 'content-type') ?? 'application/octet-stream',
      body,
      attempt: parseAttempt(readHeader(headers, ATTEMPT_HEADER)),
      createdAt: parseDate(readHeader(headers, CREATED_AT_HEADER)),
    },
    all,
  );
}

function isStringRecord(value: unknown): value is Record<string, string> {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    Object.values(value).every((v) => typeof v === 'string')
  );
}

function decodeEntry(entry: unknown, index: number): ReceivedMessage {
  const at = `batch entry ${index}`;
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
    throw malformed(`${at} is not an object: ${showValue(entry)}`, `[${index}]`);
  }
  const e = entry as Record<string, unknown>;
  const id = e.id;
  if (!isUuid(id)) throw malformed(`${at}: id ${showValue(id)} is not a UUID`, `[${index}].id`);
  const text = (name: string, nullable: boolean): string | null => {
    const value = e[name];
    if (typeof value === 'string' || (nullable && value === null)) return value;
    throw malformed(
      `${at} (message ${id}): ${name} must be a string, got ${showValue(value)}`,
      `[${index}].${name}`,
      id,
    );
  };
  const headers = e.headers;
  if (!isStringRecord(headers)) {
    throw malformed(`${at} (message ${id}): headers must be an object of strings`, `[${index}].headers`, id);
  }
  const encoding = e.payloadEncoding;
  if (encoding !== 'utf8' && encoding !== 'base64') {
    throw malformed(
      `${at} (message ${id}): payloadEncoding must be 'utf8' or 'base64', got ${showValue(encoding)}`,
      `[${index}].payloadEncoding`,
      id,
    );
  }
  const attempt = e.attempt;
  return received(
    {
      id: id.toLowerCase(),
      topic: text('topic', false) as string,
      key: text('key', true),
      type: text('type', true),
      contentType: text('contentType', false) as string,
      body: Buffer.from(text('payload', false) as string, encoding),
      attempt: typeof attempt === 'number' && Number.isInteger(attempt) && attempt > 0 ? attempt : 1,
      createdAt: parseDate(typeof e.createdAt === 'string' ? e.createdAt : null),
    },
    headers,
  );
}

/** The messages of a batch POST: its body is a JSON array of {@link BatchEntry}. */
function decodeBatch(body: Buffer): ReceivedMessage[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(strictUtf8.decode(body));
  } catch (err) {
    throw malformed(`the batch body is not JSON (${(err as Error).message})`, 'body', null, err);
  }
  if (!Array.isArray(parsed))
    throw malformed(`the batch body must be a JSON array, got ${showValue(parsed)}`, 'body');
  return parsed.map((entry, i) => decodeEntry(entry, i));
}

/**
 * The messages a verified request carries: one for a single POST (from its headers and body),
 * the array's for a batch POST (`mailroom-batch` header). Throws a `PermanentDeliveryError`
 * (`details.reason: 'malformed'`, `details.field`) for a request Mailroom's transport would not
 * have sent: answer it 400.
 */
export function decodeWebhookRequest(headers: HeaderSource, body: Buffer): ReceivedMessage[] {
  return readHeader(headers, BATCH_HEADER) === undefined ? [decodeSingle(headers, body)] : decodeBatch(body);
}
