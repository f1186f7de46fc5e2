import type { ReceivedMessage } from '../../core/types.js';

/**
 * Events a {@link StompConsumer} emits: the same as `RabbitMqConsumer`'s, with destinations for
 * queues. Listeners that throw are logged and ignored.
 */
export interface StompConsumerEvents {
  /** Connected, subscribed. */
  'consumer:started': { destination: string };
  /**
   * The handler ran and committed (with an inbox; with `transacted`, the broker transaction
   * holding its outputs and the acknowledgement did) and the message was acknowledged.
   */
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
  /** Sent to the dead-letter destination (with a RECEIPT), then acknowledged. */
  'consumer:message:dead': {
    id: string | null;
    topic: string;
    message: ReceivedMessage | null;
    reason: 'handler_failed' | 'malformed';
    error: Error;
    failedAttempts: number;
    deadLetterDestination: string;
  };
  /** A handled message could not be acknowledged: its connection had ended. The broker redelivers it. */
  'consumer:ack:lost': { id: string | null; error: Error };
  /** The connection ended; reconnecting starts. */
  'consumer:connection:lost': { error: Error };
  /** A reconnect attempt is about to start after `delayMs` (0 for the first). */
  'consumer:reconnecting': { attempt: number; delayMs: number; error: Error };
  /** Consuming again after a loss. */
  'consumer:reconnected': { downMs: number; attempts: number };
  /** Inbox records past their retention were deleted. */
  'consumer:inbox:pruned': { deleted: number; durationMs: number };
  /** `dead-letter`: a dead letter could not be sent, tried again after a pause. `prune`: pruning failed. */
  'consumer:error': { phase: 'dead-letter' | 'prune'; id: string | null; error: Error };
  /** Stopped; `abandoned`: deliveries left unacknowledged for the broker to redeliver. */
  'consumer:stopped': { abandoned: number };
}
