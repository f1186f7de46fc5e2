/**
 * Mailroom's wire format on MQTT 5: the PUBLISH properties of an outbox message (the content type
 * as the `contentType` property, the message's id, topic, key, type, attempt and creation time as
 * `mailroom-*` user properties, named as the RabbitMQ and STOMP transports name their headers,
 * then the user's headers as user properties), the size of the PUBLISH packet, and a received
 * PUBLISH decoded back into a {@link ReceivedMessage}.
 *
 * @module
 */
import { groupOf } from '../../core/atomic-group.js';
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { ACK_TO_HEADER } from '../../core/message.js';
import { MAILROOM_HEADER_PREFIX } from '../../core/received-message.js';
import type { OutboxMessage, ReceivedMessage } from '../../core/types.js';
import { isUuid } from '../../core/uuid.js';
import type { MqttPublishProperties } from './mqtt-client.js';
import { invalidHeaderError, invalidTopicError, topicMapperError } from './mqtt-errors.js';
import type { MqttTopicMapper } from './mqtt-options.js';
import {
  escapeMqttString,
  mqttStringProblem,
  topicNameFor,
  topicNameProblem,
  unescapeMqttString,
} from './mqtt-topic.js';

/** The message id (UUIDv7, the same on every copy: consumers dedupe on it). */
export const ID_HEADER = 'mailroom-id';
/** The Mailroom topic (the MQTT topic name is a mapping of it, which may not map back). */
export const TOPIC_HEADER = 'mailroom-topic';
/** The message key; absent for keyless messages. */
export const KEY_HEADER = 'mailroom-key';
/** The message type; absent when null. */
export const TYPE_HEADER = 'mailroom-type';
/** The delivery attempt, `'1'` for the first. */
export const ATTEMPT_HEADER = 'mailroom-attempt';
/** When the message was enqueued, ISO 8601 with milliseconds. */
export const CREATED_AT_HEADER = 'mailroom-created-at';
/**
 * The (escaped) names of the user properties whose name and value were percent-escaped because
 * they hold characters brokers refuse (a tab, a control character): a JSON array, present only
 * when needed. {@link userPropertiesOf} undoes the escaping.
 */
export const ESCAPED_HEADER = 'mailroom-escaped';

/** The content type of a message that came without one: bytes, handed over as they are. */
export const DEFAULT_CONTENT_TYPE = 'application/octet-stream';

/** The user properties the transport sets; a user header of the same name is dropped (the transport's wins). */
const TRANSPORT_HEADERS: ReadonlySet<string> = new Set([
  ID_HEADER,
  TOPIC_HEADER,
  KEY_HEADER,
  TYPE_HEADER,
  ATTEMPT_HEADER,
  CREATED_AT_HEADER,
  ESCAPED_HEADER,
]);

/** A message ready to send: its MQTT topic name, its properties and its packet size. */
export interface MqttPublication {
  topicName: string;
  properties: MqttPublishProperties & { userProperties: Record<string, string> };
  /** Bytes of the whole PUBLISH packet (QoS 1 or 2), for the Maximum Packet Size check. */
  packetBytes: number;
}

/**
 * The PUBLISH of `message`. Throws a `PermanentDeliveryError` for a topic name, key, type or
 * header MQTT cannot carry (the error names it).
 */
export function publicationOf(
  message: OutboxMessage,
  template: string | MqttTopicMapper,
  prefix: string,
): MqttPublication {
  let topicName: string;
  try {
    topicName = topicNameFor(template, prefix, message.topic);
  } catch (err) {
    throw topicMapperError(message, err);
  }
  const topicProblem = topicNameProblem(topicName);
  if (topicProblem) throw invalidTopicError(message, topicName, topicProblem);

  // A prototype-less object: a header named `__proto__` is a header like any other.
  const user = Object.create(null) as Record<string, string>;
  user[ID_HEADER] = message.id;
  user[TOPIC_HEADER] = message.topic;
  if (message.key !== null) user[KEY_HEADER] = message.key;
  if (message.type !== null) user[TYPE_HEADER] = message.type;
  user[ATTEMPT_HEADER] = String(message.attempts);
  user[CREATED_AT_HEADER] = message.createdAt.toISOString();
  for (const [name, value] of Object.entries(message.headers)) {
    if (TRANSPORT_HEADERS.has(name)) continue;
    user[name] = value;
  }
  const escaped: string[] = [];
  for (const [name, value] of Object.entries(user)) {
    if (!name.isWellFormed() || !value.isWellFormed()) {
      throw invalidHeaderError(message, name, 'contains a lone surrogate, which is not UTF-8');
    }
    if (mqttStringProblem(name) === undefined && mqttStringProblem(value) === undefined) continue;
    // A character MQTT brokers refuse (a tab…): sent percent-escaped, restored by the decoder.
    const escapedName = escapeMqttString(name);
    delete user[name];
    user[escapedName] = escapeMqttString(value);
    escaped.push(escapedName);
    const problem = mqttStringProblem(escapedName) ?? mqttStringProblem(user[escapedName]);
    if (problem) throw invalidHeaderError(message, name, problem);
  }
  if (escaped.length > 0) user[ESCAPED_HEADER] = JSON.stringify(escaped);
  const contentTypeProblem = mqttStringProblem(message.contentType);
  if (contentTypeProblem) throw invalidHeaderError(message, 'content-type', contentTypeProblem);

  const properties = { contentType: message.contentType, userProperties: user };
  return {
    topicName,
    properties,
    packetBytes: publishPacketBytes(topicName, message.payload.length, properties),
  };
}

/** Bytes of an MQTT Variable Byte Integer. */
function varintBytes(n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4;
}

/**
 * Size of a QoS 1/2 PUBLISH packet as MQTT 5 encodes it: fixed header, topic name, packet
 * identifier, properties (content type, user properties) and payload.
 */
export function publishPacketBytes(
  topicName: string,
  payloadBytes: number,
  properties: { contentType?: string; userProperties: Record<string, string> },
): number {
  let props = 0;
  if (properties.contentType !== undefined) props += 1 + 2 + Buffer.byteLength(properties.contentType);
  for (const [name, value] of Object.entries(properties.userProperties)) {
    props += 1 + 2 + Buffer.byteLength(name) + 2 + Buffer.byteLength(value);
  }
  const remaining = 2 + Buffer.byteLength(topicName) + 2 + varintBytes(props) + props + payloadBytes;
  return 1 + varintBytes(remaining) + remaining;
}

/** A received PUBLISH decoded, or why it cannot be. */
export type DecodedMqttMessage =
  { ok: true; message: ReceivedMessage } | { ok: false; error: PermanentDeliveryError; id: string | null };

const JSON_CONTENT_TYPE = /^application\/(?:[\w.-]+\+)?json\s*(?:;|$)/i;

/**
 * The user properties of a received PUBLISH (MQTT.js: `packet.properties.userProperties`) as one
 * string per name (the first, when a name came more than once), with the percent-escaping of
 * {@link ESCAPED_HEADER} undone and that property itself left out.
 */
export function userPropertiesOf(
  userProperties: Record<string, string | string[]> | undefined,
): Record<string, string> {
  const props = Object.create(null) as Record<string, string>;
  for (const [name, value] of Object.entries(userProperties ?? {})) {
    const v = Array.isArray(value) ? value[0] : value;
    if (v !== undefined) props[name] = v;
  }
  const list = props[ESCAPED_HEADER];
  delete props[ESCAPED_HEADER];
  if (list === undefined) return props;
  let names: unknown;
  try {
    names = JSON.parse(list);
  } catch {
    return props;
  }
  if (!Array.isArray(names)) return props;
  for (const name of names) {
    if (typeof name !== 'string' || props[name] === undefined) continue;
    const value = props[name];
    delete props[name];
    try {
      props[unescapeMqttString(name)] = unescapeMqttString(value);
    } catch {
      props[name] = value; // not valid escaping: kept as it came
    }
  }
  return props;
}

/**
 * Decodes a PUBLISH received by a subscriber (MQTT.js `message` event: topic, payload,
 * `packet.properties`) into what an {@link Inbox} handler gets. A message without a UUID
 * `mailroom-id`, or with a JSON content type and a payload that does not parse, comes back as
 * `{ ok: false }`. The topic is `mailroom-topic`, else the MQTT topic name.
 *
 * @example
 * ```ts
 * client.on('message', (topicName, payload, packet) => {
 *   const decoded = decodeMqttMessage(topicName, payload, packet.properties);
 *   if (decoded.ok) void inbox.handle(decoded.message, handler);
 * });
 * ```
 */
export function decodeMqttMessage(
  topicName: string,
  payload: Buffer,
  properties: { contentType?: string; userProperties?: Record<string, string | string[]> } | undefined,
): DecodedMqttMessage {
  const props = userPropertiesOf(properties?.userProperties);
  const id = props[ID_HEADER] ?? null;
  if (id === null || !isUuid(id)) {
    return malformed(
      id,
      `a message on MQTT topic ${JSON.stringify(topicName)} has ${id === null ? 'no' : `a non-UUID (${JSON.stringify(id)})`} ` +
        `${ID_HEADER} user property, so its copies cannot be recognised as one message; the publisher must set ` +
        `${ID_HEADER} to the message's UUID (MqttTransport does)`,
      ID_HEADER,
    );
  }
  const contentType = properties?.contentType ?? DEFAULT_CONTENT_TYPE;
  let value: unknown = payload;
  if (JSON_CONTENT_TYPE.test(contentType)) {
    try {
      value = JSON.parse(payload.toString('utf8'));
    } catch (err) {
      return malformed(
        id,
        `message ${id} (MQTT topic ${JSON.stringify(topicName)}) has content type ${JSON.stringify(contentType)} ` +
          `but its payload is not JSON (${err instanceof Error ? err.message : String(err)})`,
        'payload',
        err,
      );
    }
  }
  const headers: Record<string, string> = {};
  const mailroom: Record<string, string> = {};
  for (const [name, v] of Object.entries(props)) {
    if (name.startsWith(MAILROOM_HEADER_PREFIX)) mailroom[name] = v;
    else headers[name] = v;
  }
  const created = props[CREATED_AT_HEADER] === undefined ? null : new Date(props[CREATED_AT_HEADER]);
  const attemptText = props[ATTEMPT_HEADER] ?? '';
  return {
    ok: true,
    message: {
      id,
      topic: props[TOPIC_HEADER] ?? topicName,
      key: props[KEY_HEADER] ?? null,
      type: props[TYPE_HEADER] ?? null,
      headers,
      contentType,
      body: payload,
      payload: value,
      ackTo: props[ACK_TO_HEADER] || null,
      attempt: /^[1-9]\d{0,8}$/.test(attemptText) ? Number(attemptText) : 1,
      createdAt: created !== null && !Number.isNaN(created.getTime()) ? created : null,
      group: groupOf(mailroom),
    },
  };
}

function malformed(id: string | null, text: string, field: string, cause?: unknown): DecodedMqttMessage {
  const error = new PermanentDeliveryError(text, {
    ...(cause === undefined ? {} : { cause }),
    details: { reason: 'malformed', field, messageId: id },
  });
  return { ok: false, error, id };
}
