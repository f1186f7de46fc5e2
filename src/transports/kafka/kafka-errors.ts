/**
 * Every error the Kafka transport reports, and the table that sorts kafkajs errors into outage
 * (`unavailable`), message failure that will not pass (`permanent`) and transient failure
 * (`retry`). URLs passed in are the redacted ones.
 *
 * @module
 */
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { OutboxMessage } from '../../core/types.js';

/** What a kafkajs error means for the messages of the request that failed. */
export type KafkaErrorClass = 'unavailable' | 'permanent' | 'retry';

/**
 * kafkajs error classes (by `name`, which survives module copies) that mean the brokers cannot
 * be reached or did not answer: every message of the call is `unavailable`, and the producer is
 * disconnected so that the next call (or the relay's probe) connects afresh.
 */
const UNAVAILABLE_NAMES: ReadonlySet<string> = new Set([
  'KafkaJSConnectionError',
  'KafkaJSConnectionClosedError',
  'KafkaJSRequestTimeoutError',
  'KafkaJSBrokerNotFound',
  'KafkaJSNoBrokerAvailableError',
  'KafkaJSMetadataNotLoaded',
  'KafkaJSTopicMetadataNotLoaded',
  'KafkaJSTimeout',
  'KafkaJSLockTimeout',
  // Credentials the cluster refuses: nothing can be published until an operator fixes them.
  'KafkaJSSASLAuthenticationError',
]);

/**
 * Broker error codes (kafkajs `KafkaJSProtocolError.type`) that are about the brokers, not the
 * message: leaders moving, brokers down, requests timing out.
 */
const UNAVAILABLE_TYPES: ReadonlySet<string> = new Set([
  'LEADER_NOT_AVAILABLE',
  'NOT_LEADER_FOR_PARTITION',
  'NOT_LEADER_OR_FOLLOWER',
  'REQUEST_TIMED_OUT',
  'BROKER_NOT_AVAILABLE',
  'NETWORK_EXCEPTION',
  'NOT_CONTROLLER',
  'SASL_AUTHENTICATION_FAILED',
  'ILLEGAL_SASL_STATE',
  'UNSUPPORTED_SASL_MECHANISM',
  // The producer as configured may write nothing (no IdempotentWrite on the cluster): not the
  // message's fault, so not a dead letter for every message.
  'CLUSTER_AUTHORIZATION_FAILED',
]);

/** Broker error codes that refuse the message itself: sending it again cannot succeed. */
const PERMANENT_TYPES: ReadonlySet<string> = new Set([
  'MESSAGE_TOO_LARGE',
  'RECORD_LIST_TOO_LARGE',
  'INVALID_TOPIC_EXCEPTION',
  'TOPIC_AUTHORIZATION_FAILED',
  'INVALID_RECORD',
  'INVALID_TIMESTAMP',
  'POLICY_VIOLATION',
  'UNSUPPORTED_FOR_MESSAGE_FORMAT',
  'INVALID_REQUIRED_ACKS',
]);

interface KafkaJsErrorShape {
  name?: unknown;
  type?: unknown;
  retriable?: unknown;
  cause?: unknown;
  originalError?: unknown;
  errors?: unknown;
}

/**
 * The innermost error kafkajs wrapped: `KafkaJSNumberOfRetriesExceeded` and
 * `KafkaJSNonRetriableError` carry the error that stopped the retries as `cause` (kafkajs 2) or
 * `originalError`; `KafkaJSAggregateError` carries several, of which the first decides.
 */
export function innermostKafkaError(err: unknown): unknown {
  let current = err;
  for (let depth = 0; depth < 10; depth++) {
    const shape = current as KafkaJsErrorShape | null;
    if (typeof shape !== 'object' || shape === null) return current;
    if (shape.name === 'KafkaJSAggregateError' && Array.isArray(shape.errors) && shape.errors.length > 0) {
      current = shape.errors[0];
      continue;
    }
    const inner = shape.cause ?? shape.originalError;
    if (
      (shape.name === 'KafkaJSNumberOfRetriesExceeded' || shape.name === 'KafkaJSNonRetriableError') &&
      inner !== undefined &&
      inner !== current
    ) {
      current = inner;
      continue;
    }
    return current;
  }
  return current;
}

/**
 * Sorts an error of `producer.sendBatch` (or `connect`): connection and broker errors are
 * `unavailable`; a refusal of the records (too large, an invalid topic, no write permission on
 * the topic) is `permanent`; anything else, retriable or not known, is `retry`.
 */
export function classifyKafkaError(err: unknown): KafkaErrorClass {
  const inner = innermostKafkaError(err) as KafkaJsErrorShape | null;
  const name = typeof inner?.name === 'string' ? inner.name : '';
  const type = typeof inner?.type === 'string' ? inner.type : '';
  if (UNAVAILABLE_NAMES.has(name)) return 'unavailable';
  if (type !== '' && UNAVAILABLE_TYPES.has(type)) return 'unavailable';
  if (type !== '' && PERMANENT_TYPES.has(type)) return 'permanent';
  // A socket error that escaped kafkajs's wrapping.
  const code = (inner as { code?: unknown } | null)?.code;
  if (
    typeof code === 'string' &&
    /^(ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EPIPE|EHOSTUNREACH)$/.test(code)
  ) {
    return 'unavailable';
  }
  return 'retry';
}

/** The message of an error, or the value itself as text. */
export function describe(err: unknown): string {
  const inner = innermostKafkaError(err);
  const outer = err instanceof Error ? err.message : String(err);
  const innerText = inner instanceof Error ? inner.message : String(inner);
  return inner === err || innerText === outer ? outer : `${outer} (${innerText})`;
}

function messageDetails(message: OutboxMessage): Record<string, unknown> {
  return { messageId: message.id, topic: message.topic };
}

/** The brokers could not be reached (connect failed). */
export function unreachableError(where: string, err: unknown): TransportError {
  return new TransportError(
    'unreachable',
    `cannot connect to Kafka at ${where}: ${describe(err)}; check the broker list, TLS (kafkas://) and credentials`,
    { cause: err, details: { url: where } },
  );
}

/** The outcome error of a message whose request failed, by class. */
export function sendFailedError(
  where: string,
  message: OutboxMessage,
  kafkaTopic: string,
  err: unknown,
  kind: KafkaErrorClass,
): Error {
  const inner = innermostKafkaError(err) as KafkaJsErrorShape | null;
  const type = typeof inner?.type === 'string' ? inner.type : undefined;
  const details = {
    ...messageDetails(message),
    kafkaTopic,
    url: where,
    ...(type ? { kafkaError: type } : {}),
  };
  if (kind === 'permanent') {
    const hint =
      type === 'MESSAGE_TOO_LARGE' || type === 'RECORD_LIST_TOO_LARGE'
        ? "; raise the topic's max.message.bytes or lower maxMessageBytes so it is caught before sending"
        : type === 'TOPIC_AUTHORIZATION_FAILED'
          ? '; grant the relay Write on the topic, then replay the dead letter'
          : '';
    return new PermanentDeliveryError(
      `Kafka refused message ${message.id} for topic ${kafkaTopic}: ${describe(err)}${hint}`,
      { cause: err, details },
    );
  }
  if (kind === 'unavailable') {
    return new TransportError(
      'unavailable',
      `Kafka at ${where} did not take message ${message.id} (topic ${kafkaTopic}): ${describe(err)}`,
      { cause: err, details },
    );
  }
  const hint =
    type === 'UNKNOWN_TOPIC_OR_PARTITION'
      ? '; create the topic (or enable auto.create.topics.enable on the brokers)'
      : '';
  return new TransportError(
    'send_failed',
    `Kafka did not take message ${message.id} for topic ${kafkaTopic}: ${describe(err)}${hint}`,
    { cause: err, details },
  );
}

/** The message's Kafka topic is not a legal topic name. */
export function invalidTopicError(
  message: OutboxMessage,
  kafkaTopic: string,
  problem: string,
): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} cannot go to Kafka: topic ${JSON.stringify(kafkaTopic)} ${problem}; ` +
      'rename the topic, or change topicPrefix',
    { details: { ...messageDetails(message), kafkaTopic } },
  );
}

/** The payload is over `maxMessageBytes`. */
export function messageTooLargeError(message: OutboxMessage, limit: number): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} (topic ${message.topic}) has a payload of ${message.payload.length} bytes, ` +
      `over the Kafka transport's maxMessageBytes of ${limit}; store large data elsewhere and send a ` +
      "reference, or raise maxMessageBytes (and the topic's max.message.bytes)",
    { details: { ...messageDetails(message), size: message.payload.length, limit } },
  );
}

/** A header (or the key) is not well-formed Unicode. */
export function invalidHeaderError(message: OutboxMessage, name: string): PermanentDeliveryError {
  return new PermanentDeliveryError(
    `message ${message.id} has header ${JSON.stringify(name)} with a lone UTF-16 surrogate, which ` +
      'cannot be encoded as UTF-8 for Kafka without changing it',
    { details: { ...messageDetails(message), header: name } },
  );
}

/** Publish after `close()`. */
export function closedError(where: string): TransportError {
  return new TransportError(
    'closed',
    `the Kafka transport for ${where} is closed; call start() to open it again`,
    { details: { url: where } },
  );
}

/** The caller's signal aborted, or `publishTimeoutMs` passed, before the brokers answered. */
export function publishTimeoutError(
  where: string,
  message: OutboxMessage,
  reason: 'aborted' | 'timeout',
  timeoutMs: number,
): TransportError {
  return new TransportError(
    'publish_timeout',
    reason === 'aborted'
      ? `publish of message ${message.id} to Kafka at ${where} was aborted before the brokers acknowledged it; it may still be written`
      : `Kafka at ${where} did not acknowledge message ${message.id} within publishTimeoutMs (${timeoutMs} ms); it may still be written`,
    { details: { ...messageDetails(message), url: where } },
  );
}

/** `probe()` gave up because its signal aborted. */
export function probeAbortedError(where: string): TransportError {
  return new TransportError('probe_aborted', `probe of Kafka at ${where} was aborted before it connected`, {
    details: { url: where },
  });
}

/** A message held back because an earlier message of its key in the same call failed. */
export function heldBackError(message: OutboxMessage, earlier: OutboxMessage): TransportError {
  return new TransportError(
    'held_back',
    `message ${message.id} was not sent: message ${earlier.id} of the same key (${JSON.stringify(message.key)}) ` +
      'before it in the batch failed, and sending this one would put it ahead',
    { details: { ...messageDetails(message), earlierId: earlier.id } },
  );
}
