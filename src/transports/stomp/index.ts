/**
 * The STOMP transport and consumer (`mailroom/stomp`): RabbitMQ's STOMP plugin, ActiveMQ and other
 * STOMP 1.2 brokers, with broker transactions. docs/transports/stomp.md.
 *
 * @module
 */
export { StompTransport } from './stomp-transport.js';
export {
  resolveStompOptions,
  resolveStompUrl,
  destinationFor,
  type StompTransportOptions,
  type ResolvedStompTransportOptions,
} from './stomp-options.js';
export { StompBrokerTransaction } from './stomp-transaction.js';
export { StompConnection, type StompEndpoint, type StompConnectionOptions } from './stomp-connection.js';
export {
  encodeFrame,
  escapeHeader,
  unescapeHeader,
  FrameDecoder,
  StompProtocolError,
  type StompFrame,
} from './stomp-frame.js';
export {
  decodeMessage,
  sendHeaders,
  ID_HEADER,
  TOPIC_HEADER,
  KEY_HEADER,
  TYPE_HEADER,
  ATTEMPT_HEADER,
  CREATED_AT_HEADER,
  RESERVED_HEADERS,
  type DecodedMessage,
} from './stomp-wire.js';
export { StompRefusal, isStompRefusal } from './stomp-errors.js';
export { StompConsumer } from './stomp-consumer.js';
export {
  resolveStompConsumerOptions,
  type StompConsumerOptions,
  type StompConsumerBaseOptions,
  type ResolvedStompConsumerOptions,
  type ConsumerContext,
  type ConsumerHandler,
  type ConsumerInbox,
  type ConsumerRetryOptions,
} from './stomp-consumer-options.js';
export type { StompConsumerEvents } from './stomp-consumer-events.js';
export {
  ERROR_HEADER,
  FAILED_ATTEMPTS_HEADER,
  DEAD_AT_HEADER,
  DEAD_REASON_HEADER,
  DEAD_QUEUE_HEADER,
  DEAD_TOPIC_HEADER,
  MAX_ERROR_HEADER_CHARS,
} from './stomp-consumer-session.js';
