/**
 * The Kafka transport (`mailroom/kafka`): kafkajs, an idempotent producer, `acks: -1`, the
 * message key as the record key. docs/transports/kafka.md.
 *
 * @module
 */
export { KafkaTransport } from './kafka-transport.js';
export {
  resolveKafkaOptions,
  resolveKafkaUrl,
  kafkaTopicProblem,
  SASL_MECHANISMS,
  type KafkaSaslMechanism,
  type KafkaTransportOptions,
  type ResolvedKafkaTransportOptions,
  type KafkaEndpoint,
} from './kafka-options.js';
export type { KafkaProducerLike, KafkaRecord, KafkaSendBatch } from './kafka-producer.js';
export { classifyKafkaError, innermostKafkaError, type KafkaErrorClass } from './kafka-errors.js';
export {
  recordOf,
  kafkaTopicOf,
  ID_HEADER,
  TOPIC_HEADER,
  TYPE_HEADER,
  ATTEMPT_HEADER,
  CREATED_AT_HEADER,
  CONTENT_TYPE_HEADER,
  TRANSPORT_HEADERS,
} from './kafka-wire.js';
