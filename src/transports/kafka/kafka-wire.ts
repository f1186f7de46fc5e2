/**
 * Mailroom's wire format on Kafka: the record of an outbox message. The record key is the
 * message key (Kafka keeps the order of one key's records within its partition), the value the
 * payload bytes, and the id, topic, type, content type, attempt and creation time travel as
 * headers named as in the other transports (`mailroom-id`, `mailroom-attempt`…).
 *
 * @module
 */
import type { OutboxMessage } from '../../core/types.js';
import { invalidHeaderError, invalidTopicError, messageTooLargeError } from './kafka-errors.js';
import { kafkaTopicProblem } from './kafka-options.js';
import type { KafkaRecord } from './kafka-producer.js';

/** The message id (UUIDv7, the same on every copy: consumers dedupe on it). */
export const ID_HEADER = 'mailroom-id';
/** The message topic as enqueued (the Kafka topic may carry a prefix). */
export const TOPIC_HEADER = 'mailroom-topic';
/** The message type; absent when null. */
export const TYPE_HEADER = 'mailroom-type';
/** The delivery attempt, `'1'` for the first. */
export const ATTEMPT_HEADER = 'mailroom-attempt';
/** When the message was enqueued, ISO 8601 with milliseconds. */
export const CREATED_AT_HEADER = 'mailroom-created-at';
/** The payload's media type. */
export const CONTENT_TYPE_HEADER = 'content-type';

/** The headers the transport sets; a user header of the same name is dropped (the transport's wins). */
export const TRANSPORT_HEADERS: ReadonlySet<string> = new Set([
  ID_HEADER,
  TOPIC_HEADER,
  TYPE_HEADER,
  ATTEMPT_HEADER,
  CREATED_AT_HEADER,
  CONTENT_TYPE_HEADER,
]);

/** The Kafka topic of a message topic under a prefix. */
export function kafkaTopicOf(prefix: string, topic: string): string {
  return `${prefix}${topic}`;
}

/**
 * The record of `message`, or the error that makes it `permanent` without being sent: a Kafka
 * topic name that is not legal, a payload over `maxMessageBytes`, a header that is not
 * well-formed Unicode (kafkajs would replace lone surrogates, changing the value silently).
 */
export function recordOf(
  message: OutboxMessage,
  topicPrefix: string,
  maxMessageBytes: number,
): { topic: string; record: KafkaRecord } | { error: Error } {
  const topic = kafkaTopicOf(topicPrefix, message.topic);
  const problem = kafkaTopicProblem(topic);
  if (problem !== undefined) return { error: invalidTopicError(message, topic, problem) };
  if (message.payload.length > maxMessageBytes) {
    return { error: messageTooLargeError(message, maxMessageBytes) };
  }
  const headers: Record<string, string> = {
    [ID_HEADER]: message.id,
    [TOPIC_HEADER]: message.topic,
    [CONTENT_TYPE_HEADER]: message.contentType,
    [ATTEMPT_HEADER]: String(message.attempts),
    [CREATED_AT_HEADER]: message.createdAt.toISOString(),
  };
  if (message.type !== null) headers[TYPE_HEADER] = message.type;
  for (const [name, value] of Object.entries(message.headers)) {
    if (TRANSPORT_HEADERS.has(name)) continue;
    if (!name.isWellFormed() || !value.isWellFormed()) return { error: invalidHeaderError(message, name) };
    headers[name] = value;
  }
  if (message.key !== null && !message.key.isWellFormed()) {
    return { error: invalidHeaderError(message, '(record key)') };
  }
  return { topic, record: { key: message.key, value: message.payload, headers } };
}
