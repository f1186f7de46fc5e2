/**
 * The events every Mailroom consumer emits, whatever the broker. A transport's consumer names
 * what it consumes in `consumer:started` and where dead letters go in `consumer:message:dead`
 * (`{ queue }` and `{ deadLetterQueue }` for RabbitMQ), and may add events of its own.
 *
 * @module
 */
import type { ReceivedMessage } from '../core/types.js';

/** Why a message is dead-lettered. */
export interface DeadLetterReason {
  reason: 'handler_failed' | 'malformed';
  error: Error;
  failedAttempts: number;
}

/** `consumer:message:dead` without the broker's name of where it went. */
export interface DeadLetterEvent extends DeadLetterReason {
  /** The message id, when the delivery had one. */
  id: string | null;
  topic: string;
  /** The decoded message; null when it could not be decoded. */
  message: ReceivedMessage | null;
}

/**
 * Events of a consumer. `Started`: the payload of `consumer:started` (what is consumed);
 * `DeadLetterTo`: what `consumer:message:dead` adds (where dead letters go). Listeners that throw
 * are logged and ignored.
 */
export interface ConsumerEvents<Started, DeadLetterTo> {
  /** Connected, consuming. */
  'consumer:started': Started;
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
  /** Sent to the dead letters (confirmed by the broker), then acknowledged. */
  'consumer:message:dead': DeadLetterEvent & DeadLetterTo;
  /**
   * A handled (or dead-lettered) message could not be acknowledged: its connection had ended (or
   * a broker transaction holding the acknowledgement failed). The broker redelivers it; with an
   * inbox, the copy is a duplicate.
   */
  'consumer:ack:lost': { id: string | null; error: Error };
  /** The connection ended; reconnecting starts. */
  'consumer:connection:lost': { error: Error };
  /** A reconnect attempt is about to start after `delayMs` (0 for the first). */
  'consumer:reconnecting': { attempt: number; delayMs: number; error: Error };
  /** Consuming again after a loss. */
  'consumer:reconnected': { downMs: number; attempts: number };
  /** Inbox records past their retention were deleted (`inbox.prune()`, every `pruneIntervalMs`). */
  'consumer:inbox:pruned': { deleted: number; durationMs: number };
  /**
   * `dead-letter`: a dead letter could not be sent, and is tried again after a pause.
   * `prune`: pruning the inbox failed; it is tried again at the next interval.
   */
  'consumer:error': { phase: 'dead-letter' | 'prune'; id: string | null; error: Error };
  /**
   * Stopped. `abandoned`: deliveries left unacknowledged for the broker to redeliver (not yet
   * started, waiting to be retried, or still running when the stop deadline passed).
   */
  'consumer:stopped': { abandoned: number };
}
