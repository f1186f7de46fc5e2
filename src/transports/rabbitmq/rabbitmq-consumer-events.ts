import type { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import type { OutboxMessage } from '../../core/types.js';
import type { ConsumerEvents } from '../../consumer/consumer-events.js';

/**
 * Events a {@link RabbitMqConsumer} emits: every consumer's ({@link ConsumerEvents}), naming the
 * queue consumed and the dead-letter queue, plus `consumer:output:returned`. Dead letters are
 * published to the dead-letter queue (confirmed), then acknowledged. After a `commit_unknown`
 * error on `consumer:ack:lost`, the commit may have happened, and then there is no redelivery.
 * Listeners that throw are logged and ignored.
 */
export interface RabbitMqConsumerEvents extends ConsumerEvents<
  { queue: string },
  { deadLetterQueue: string }
> {
  /**
   * Transacted receive: the broker returned an output of message `id` as unroutable (no queue
   * bound for its topic) at the commit, which committed the acknowledgement and the other
   * outputs: this output is not anywhere. Bind a queue for its topic; `error` says which.
   */
  'consumer:output:returned': { id: string; output: OutboxMessage; error: PermanentDeliveryError };
}
