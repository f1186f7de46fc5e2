import type { ConsumerEvents } from '../../consumer/consumer-events.js';

/** What a {@link RedisConsumer} consumes: the stream, its consumer group and this instance's name. */
export interface RedisConsumerSource {
  stream: string;
  group: string;
  consumerName: string;
}

/**
 * Events a {@link RedisConsumer} emits: every consumer's ({@link ConsumerEvents}), naming the
 * stream, group and consumer name consumed and the dead-letter stream (a dead letter is added and
 * the original acknowledged in one MULTI/EXEC), plus `consumer:entries:claimed`. Listeners that
 * throw are logged and ignored.
 */
export type RedisConsumerEvents = ConsumerEvents<RedisConsumerSource, { deadLetterStream: string }> & {
  /**
   * Entries another consumer of the group had left pending longer than `claimIdleMs` (a crashed
   * or cut-off instance) were taken over with XAUTOCLAIM and are handled here now.
   */
  'consumer:entries:claimed': { ids: string[] };
};
