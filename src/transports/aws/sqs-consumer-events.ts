import type { ConsumerEvents } from '../../consumer/consumer-events.js';

/**
 * Events a {@link SqsConsumer} emits: every consumer's ({@link ConsumerEvents}), naming the queue
 * consumed (`queue`, its name) and where dead letters go (`deadLetterQueue`: the dead-letter
 * queue's redacted URL, or, with the queue's redrive policy, its `deadLetterTargetArn`), plus:
 *
 * - `consumer:visibility:lost`: the visibility of a message held could not be extended (held past
 *   SQS's 12-hour limit, or its receipt no longer valid): SQS may hand it to another consumer
 *   while its handler runs here; with an inbox, one of the two runs is a duplicate.
 * - `consumer:release:failed`: messages not started when the consumer stopped could not be made
 *   visible again at once; they come back after the visibility timeout.
 *
 * `consumer:ack:lost` reports a failed `DeleteMessage`: the message comes back after the
 * visibility timeout, and the inbox makes that copy a duplicate. Listeners that throw are logged
 * and ignored.
 */
export type SqsConsumerEvents = ConsumerEvents<{ queue: string }, { deadLetterQueue: string }> & {
  'consumer:visibility:lost': { id: string | null; error: Error };
  'consumer:release:failed': { count: number; error: Error };
};
