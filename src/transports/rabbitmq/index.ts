export { RabbitMqTransport, KEY_HEADER, ATTEMPT_HEADER } from './rabbitmq-transport.js';
export { RabbitMqTransaction } from './rabbitmq-transaction.js';
export {
  resolveRabbitMqOptions,
  type RabbitMqTransportOptions,
  type ResolvedRabbitMqTransportOptions,
} from './rabbitmq-options.js';
export type {
  AmqpChannel,
  AmqpConnect,
  AmqpConnection,
  AmqpConfirmChannel,
  AmqpPublishOptions,
  AmqpReturnedMessage,
  AmqpSocketOptions,
  AmqpTxMethods,
} from './amqp-client.js';
export { RabbitMqConsumer } from './rabbitmq-consumer.js';
export {
  resolveRabbitMqConsumerOptions,
  type RabbitMqConsumerOptions,
  type RabbitMqConsumerBaseOptions,
  type ResolvedRabbitMqConsumerOptions,
  type ConsumerRetryOptions,
  type ConsumerHandler,
  type ConsumerInbox,
  type ConsumerContext,
} from './rabbitmq-consumer-options.js';
export type { RabbitMqConsumerEvents } from './rabbitmq-consumer-events.js';
export {
  decodeDelivery,
  brokerDeliveryCount,
  isJsonContentType,
  MAILROOM_HEADER_PREFIX,
  type DecodedDelivery,
} from './rabbitmq-decode.js';
export {
  ERROR_HEADER,
  FAILED_ATTEMPTS_HEADER,
  DEAD_AT_HEADER,
  DEAD_REASON_HEADER,
  DEAD_QUEUE_HEADER,
  DEAD_TOPIC_HEADER,
  MAX_ERROR_HEADER_CHARS,
} from './rabbitmq-dead-letter.js';
export type {
  AmqpConsumerConnect,
  AmqpConsumerConnection,
  AmqpConsumeChannel,
  AmqpDeadLetterChannel,
  AmqpDeadLetterProperties,
  AmqpDelivery,
  AmqpReturn,
} from './amqp-consumer-client.js';
