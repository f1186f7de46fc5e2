export { RabbitMqTransport, KEY_HEADER, ATTEMPT_HEADER } from './rabbitmq-transport.js';
export {
  resolveRabbitMqOptions,
  type RabbitMqTransportOptions,
  type ResolvedRabbitMqTransportOptions,
} from './rabbitmq-options.js';
export type {
  AmqpConnect,
  AmqpConnection,
  AmqpConfirmChannel,
  AmqpPublishOptions,
  AmqpReturnedMessage,
  AmqpSocketOptions,
} from './amqp-client.js';
