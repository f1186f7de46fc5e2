/**
 * The Amazon SQS and SNS transports (`mailroom/aws`): batch APIs with per-entry outcomes, FIFO
 * groups by key and deduplication by id; and the SQS consumer. docs/transports/sns-sqs.md.
 *
 * @module
 */
export { SqsTransport } from './sqs-transport.js';
export { SqsConsumer, decodeSqsMessage } from './sqs-consumer.js';
export type { SqsConsumerEvents } from './sqs-consumer-events.js';
export {
  resolveSqsConsumerOptions,
  type SqsConsumerOptions,
  type SqsConsumerBaseOptions,
  type ResolvedSqsConsumerOptions,
  type QueueRef,
  type ConsumerContext,
  type ConsumerHandler,
  type ConsumerInbox,
  type ConsumerRetryOptions,
} from './sqs-consumer-options.js';
export {
  DEAD_ATTRIBUTE,
  deadLetterInput,
  type SqsDelivery,
  type SqsMessage,
} from './sqs-consumer-session.js';
export { SnsTransport, partitionOf } from './sns-transport.js';
export { AwsTransport, entryId } from './aws-transport.js';
export {
  resolveAwsOptions,
  resolveAwsUrl,
  awsNameFor,
  awsNameProblem,
  type AwsTransportOptions,
  type SqsTransportOptions,
  type SnsTransportOptions,
  type ResolvedAwsTransportOptions,
  type AwsDestination,
} from './aws-options.js';
export type { AwsClientLike, AwsBatchAnswer } from './aws-client.js';
export { classifyAwsError, classifyFailedEntry, awsErrorCode, type AwsErrorClass } from './aws-errors.js';
export {
  bodyOf,
  payloadOf,
  groupIdOf,
  entryOf,
  chunkEntries,
  ID_ATTRIBUTE,
  TOPIC_ATTRIBUTE,
  KEY_ATTRIBUTE,
  TYPE_ATTRIBUTE,
  ATTEMPT_ATTRIBUTE,
  CREATED_AT_ATTRIBUTE,
  CONTENT_TYPE_ATTRIBUTE,
  HEADERS_ATTRIBUTE,
  BODY_ENCODING_ATTRIBUTE,
  type AwsEntry,
  type StringAttribute,
} from './aws-wire.js';
