import type { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import type { OutboxMessage, ReceivedMessage } from '../../core/types.js';

/** Events a {@link RabbitMqConsumer} emits. Listeners that throw are logged and ignored. */
export interface RabbitMqConsumerEvents {
  /** Connected, declared, consuming. */
  'consumer:started': { queue: string };
  /** The handler ran and committed (with an inbox) and the delivery was acknowledged. */
  'consumer:message:handled': { message: ReceivedMessage; attempt: number; durationMs: number };
  /** The inbox had processed this id already: acknowledged without running the handler. */
  'consumer:message:duplicate': { message: ReceivedMessage };
  /** The handler failed; the message runs again after `delayMs` (its key waits meanwhile). */
  'consumer:message:retry': {
    message: ReceivedMessage;
    error: Error;
    failedAttempts: number;
    delayMs: number;
  };
  /** Published to the dead-letter queue (confirmed), then acknowledged. */
  'consumer:message:dead': {
    /** The message-id, when the delivery had one. */
    id: string | null;
    topic: string;
    /** The decoded message; null when it could not be decoded. */
    message: ReceivedMessage | null;
    reason: 'handler_failed' | 'malformed';
    error: Error;
    failedAttempts: number;
    deadLetterQueue: string;
  };
  /**
   * A handled (or dead-lettered) message could not be acknowledged: its channel had closed, or
   * (transacted receive) the commit failed, its outputs discarded with the acknowledgement. The
   * broker redelivers it; with an inbox, the copy is a duplicate. After a `commit_unknown` error
   * the commit may have happened, and then there is no redelivery.
   */
  'consumer:ack:lost': { id: string | null; error: Error };
  /**
   * Transacted receive: the broker returned an output of message `id` as unroutable (no queue
   * bound for its topic) at the commit, which committed the acknowledgement and the other
   * outputs: this output is not anywhere. Bind a queue for its topic; `error` says which.
   */
  'consumer:output:returned': { id: string; output: OutboxMessage; error: PermanentDeliveryError };
  /** The connection or a channel died; reconnecting starts. */
  'consumer:connection:lost': { error: Error };
  /** A reconnect attempt is about to start after `delayMs` (0 for the first). */
  'consumer:reconnecting': { attempt: number; delayMs: number; error: Error };
  /** Consuming again after a loss. */
  'consumer:reconnected': { downMs: number; attempts: number };
  /** Inbox records past their retention were deleted (`inbox.prune()`, every `pruneIntervalMs`). */
  'consumer:inbox:pruned': { deleted: number; durationMs: number };
  /**
   * `dead-letter`: a dead letter could not be published, and is tried again after a pause.
   * `prune`: pruning the inbox failed; it is tried again at the next interval.
   */
  'consumer:error': { phase: 'dead-letter' | 'prune'; id: string | null; error: Error };
  /**
   * Stopped. `abandoned`: deliveries left unacknowledged for the broker to redeliver (not yet
   * started, waiting to be retried, or still running when the stop deadline passed).
   */
  'consumer:stopped': { abandoned: number };
}
