/**
 * A request the webhook transport sent, decoded back into {@link ReceivedMessage}s: the headers
 * of a single POST (see webhook-wire.ts for the format), or a batch's JSON array.
 *
 * @module
 */
import { readHeader, type HeaderSource } from '../../callbacks/webhook-signature.js';
import { groupOf } from '../../core/atomic-group.js';
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { ACK_TO_HEADER } from '../../core/message.js';
import { MAILROOM_HEADER_PREFIX } from '../../core/received-message.js';
import { showValue } from '../../core/show-value.js';
import type { ReceivedMessage } from '../../core/types.js';
import { isUuid } from '../../core/uuid.js';
import {
  ATTEMPT_HEADER,
  BATCH_HEADER,
  CREATED_AT_HEADER,
  ENCODED_HEADERS_HEADER,
  HEADER_NAMES_HEADER,
  ID_HEADER,
  KEY_HEADER,
  strictUtf8,
  TOPIC_HEADER,
  TYPE_HEADER,
} from './webhook-wire.js';

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
