/**
 * Mailroom's wire format on SNS and SQS. A message is a body and at most 10 message attributes
 * (AWS's limit), so Mailroom's fields take one attribute each (`mailroom-id`, `mailroom-topic`,
 * `mailroom-key`, `mailroom-type`, `mailroom-attempt`, `mailroom-created-at`, `content-type`) and
 * the user's headers travel together as one JSON attribute, `mailroom-headers`: any number of
 * headers fits, and no header is dropped or renamed. At most 9 attributes are used.
 *
 * The body is text: the payload as it is when it is UTF-8 made of the characters AWS accepts
 * (JSON, XML, plain text), else its base64 with `mailroom-body-encoding: base64`. An empty payload
 * (AWS wants at least one character) is the body `-` with `mailroom-body-encoding: empty`.
 *
 * @module
 */
import { createHash } from 'node:crypto';

import type { OutboxMessage } from '../../core/types.js';
import { attributeNotCarriedError, messageTooLargeError } from './aws-errors.js';

export const ID_ATTRIBUTE = 'mailroom-id';
export const TOPIC_ATTRIBUTE = 'mailroom-topic';
export const KEY_ATTRIBUTE = 'mailroom-key';
export const TYPE_ATTRIBUTE = 'mailroom-type';
export const ATTEMPT_ATTRIBUTE = 'mailroom-attempt';
export const CREATED_AT_ATTRIBUTE = 'mailroom-created-at';
export const CONTENT_TYPE_ATTRIBUTE = 'content-type';
/** The user's headers as one JSON object of strings; absent when there are none. */
export const HEADERS_ATTRIBUTE = 'mailroom-headers';
/** `base64` or `empty`; absent when the body is the payload as text. */
export const BODY_ENCODING_ATTRIBUTE = 'mailroom-body-encoding';

/** A message attribute as both SDKs take it. */
export interface StringAttribute {
  DataType: 'String';
  StringValue: string;
}

/** One message ready for a batch entry, whichever the service. */
export interface AwsEntry {
  body: string;
  attributes: Record<string, StringAttribute>;
  /** FIFO only. */
  groupId?: string;
  /** FIFO only: the message id, so that AWS drops a copy sent within its 5-minute window. */
  deduplicationId?: string;
  /** As AWS counts it: body + every attribute's name, type and value, in UTF-8 bytes. */
  size: number;
}

/** Characters AWS accepts in bodies and attribute values (XML 1.0's). */
// eslint-disable-next-line no-control-regex
const NOT_XML_CHAR = /[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\u{10000}-\u{10ffff}]/u;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The body of `payload`, and its encoding when not plain text. */
export function bodyOf(payload: Buffer): { body: string; encoding?: 'base64' | 'empty' } {
  if (payload.length === 0) return { body: '-', encoding: 'empty' };
  let text: string | undefined;
  try {
    text = utf8.decode(payload);
  } catch {
    text = undefined;
  }
  if (text !== undefined && !NOT_XML_CHAR.test(text) && text.isWellFormed()) return { body: text };
  return { body: payload.toString('base64'), encoding: 'base64' };
}

/** The payload a consumer gets back from a body and its `mailroom-body-encoding`. */
export function payloadOf(body: string, encoding: string | undefined): Buffer {
  if (encoding === 'empty') return Buffer.alloc(0);
  if (encoding === 'base64') return Buffer.from(body, 'base64');
  return Buffer.from(body, 'utf8');
}

/**
 * The FIFO group of a key: the key itself when AWS takes it (1 to 128 printable ASCII
 * characters), else `sha256:` and its hash, which is as stable as the key, so the key's messages
 * still share a group.
 */
export function groupIdOf(key: string): string {
  if (/^[!-~]{1,128}$/.test(key)) return key;
  return `sha256:${createHash('sha256').update(key, 'utf8').digest('hex')}`;
}

/**
 * The entry of `message`, or the error that makes it `permanent` without being sent: a field
 * AWS cannot carry, or over `maxMessageBytes`.
 */
export function entryOf(
  message: OutboxMessage,
  options: { fifo: boolean; keylessGroupId: string | undefined; maxMessageBytes: number },
): { entry: AwsEntry } | { error: Error } {
  const { body, encoding } = bodyOf(message.payload);
  const attributes: Record<string, StringAttribute> = {};
  const fields: Array<[string, string | null]> = [
    [ID_ATTRIBUTE, message.id],
    [TOPIC_ATTRIBUTE, message.topic],
    [KEY_ATTRIBUTE, message.key],
    [TYPE_ATTRIBUTE, message.type],
    [ATTEMPT_ATTRIBUTE, String(message.attempts)],
    [CREATED_AT_ATTRIBUTE, message.createdAt.toISOString()],
    [CONTENT_TYPE_ATTRIBUTE, message.contentType],
    // JSON escapes control characters and lone surrogates, so this value is always acceptable.
    [HEADERS_ATTRIBUTE, Object.keys(message.headers).length === 0 ? null : JSON.stringify(message.headers)],
    [BODY_ENCODING_ATTRIBUTE, encoding ?? null],
  ];
  let size = Buffer.byteLength(body, 'utf8');
  for (const [name, value] of fields) {
    if (value === null) continue;
    // AWS refuses empty attribute values: an empty key or type cannot be told from a missing one.
    if (value === '' || NOT_XML_CHAR.test(value) || !value.isWellFormed()) {
      return { error: attributeNotCarriedError(message, name, value) };
    }
    attributes[name] = { DataType: 'String', StringValue: value };
    size += Buffer.byteLength(name) + 'String'.length + Buffer.byteLength(value, 'utf8');
  }
  if (size > options.maxMessageBytes) {
    return { error: messageTooLargeError(message, size, options.maxMessageBytes, encoding === 'base64') };
  }
  const entry: AwsEntry = { body, attributes, size };
  if (options.fifo) {
    entry.groupId = message.key === null ? (options.keylessGroupId ?? message.id) : groupIdOf(message.key);
    entry.deduplicationId = message.id;
  }
  return { entry };
}

/**
 * Splits entries (by index) into batches of at most 10 and at most `maxBytes` in total, in
 * order: AWS refuses a bigger batch whole.
 */
export function chunkEntries(sizes: readonly number[], maxBytes: number, maxCount = 10): number[][] {
  const chunks: number[][] = [];
  let current: number[] = [];
  let bytes = 0;
  sizes.forEach((size, index) => {
    if (current.length > 0 && (current.length === maxCount || bytes + size > maxBytes)) {
      chunks.push(current);
      current = [];
      bytes = 0;
    }
    current.push(index);
    bytes += size;
  });
  if (current.length > 0) chunks.push(current);
  return chunks;
}
