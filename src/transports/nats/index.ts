/**
 * The NATS JetStream transport (`mailroom/nats`): publishes with `Nats-Msg-Id` for the stream's
 * duplicate window and waits for each PubAck. docs/transports/nats.md.
 *
 * @module
 */
export { NatsTransport } from './nats-transport.js';
export {
  resolveNatsOptions,
  resolveNatsUrl,
  redactNatsUrl,
  natsOptionsFromUrl,
  subjectFor,
  isValidSubject,
  type NatsTransportOptions,
  type NatsEnsureStream,
  type NatsTlsOptions,
  type ResolvedNatsTransportOptions,
  type NatsEndpoint,
} from './nats-options.js';
export {
  messageHeaders,
  readMessageHeaders,
  MSG_ID_HEADER,
  ID_HEADER,
  TOPIC_HEADER,
  KEY_HEADER,
  TYPE_HEADER,
  CONTENT_TYPE_HEADER,
  ATTEMPT_HEADER,
  CREATED_AT_HEADER,
  encodeHeaderValue,
  decodeHeaderValue,
  decodeNatsMessage,
  type NatsMessageFields,
  type NatsWireMessage,
} from './nats-wire.js';
export { NatsConsumer } from './nats-consumer.js';
export {
  resolveNatsConsumerOptions,
  defaultDurable,
  type NatsConsumerOptions,
  type NatsConsumerBaseOptions,
  type ResolvedNatsConsumerOptions,
  type ConsumerContext,
  type ConsumerHandler,
  type ConsumerInbox,
  type ConsumerRetryOptions,
} from './nats-consumer-options.js';
export type { NatsConsumerEvents } from './nats-consumer-events.js';
export {
  ERROR_HEADER,
  FAILED_ATTEMPTS_HEADER,
  DEAD_AT_HEADER,
  DEAD_REASON_HEADER,
  DEAD_QUEUE_HEADER,
  DEAD_TOPIC_HEADER,
  DEAD_STREAM_HEADER,
  DEAD_SEQ_HEADER,
  DEAD_CONSUMER_HEADER,
  MAX_ERROR_HEADER_CHARS,
} from './nats-consumer-session.js';
