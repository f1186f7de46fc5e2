/**
 * The Redis Streams transport (`mailroom/redis`): `XADD` to a stream per topic, pipelined
 * batches, optional `MAXLEN ~` trimming and `WAIT` for replicas; and `RedisConsumer`, a consumer
 * group reading those streams into a handler and an inbox. docs/transports/redis.md.
 *
 * @module
 */
export { RedisStreamsTransport } from './redis-transport.js';
export {
  resolveRedisStreamsOptions,
  resolveRedisUrl,
  checkStreamTemplate,
  streamFor,
  PROTO_MAX_BULK_LEN,
  MAX_STREAM_KEY_BYTES,
  type RedisStreamsTransportOptions,
  type ResolvedRedisStreamsTransportOptions,
  type RedisWaitReplicas,
  type RedisEndpoint,
} from './redis-options.js';
export {
  loadIoredis,
  type RedisClient,
  type RedisClientFactory,
  type RedisConnectionOptions,
  type RedisPipeline,
  type PipelineReply,
  type RedisArgument,
} from './redis-client.js';
export {
  decodeStreamEntry,
  entryFields,
  ID_FIELD,
  TOPIC_FIELD,
  KEY_FIELD,
  TYPE_FIELD,
  ATTEMPT_FIELD,
  CREATED_AT_FIELD,
  CONTENT_TYPE_FIELD,
  HEADERS_FIELD,
  PAYLOAD_FIELD,
  type DecodedEntry,
} from './redis-wire.js';
export { OUTAGE_REPLIES, isReplyError } from './redis-errors.js';
export { RedisConsumer } from './redis-consumer.js';
export {
  resolveRedisConsumerOptions,
  type RedisConsumerOptions,
  type RedisConsumerBaseOptions,
  type ResolvedRedisConsumerOptions,
  type RedisStartFrom,
  type ConsumerContext,
  type ConsumerHandler,
  type ConsumerInbox,
  type ConsumerRetryOptions,
} from './redis-consumer-options.js';
export type { RedisConsumerEvents, RedisConsumerSource } from './redis-consumer-events.js';
export {
  deadLetterFields,
  ERROR_FIELD,
  FAILED_ATTEMPTS_FIELD,
  DEAD_AT_FIELD,
  DEAD_REASON_FIELD,
  DEAD_STREAM_FIELD,
  DEAD_GROUP_FIELD,
  DEAD_ENTRY_FIELD,
  DEAD_TOPIC_FIELD,
} from './redis-consumer-session.js';
