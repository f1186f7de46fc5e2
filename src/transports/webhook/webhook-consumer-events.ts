/**
 * Events a {@link WebhookConsumer} emits: the names every Mailroom consumer uses where they mean
 * the same thing, and the HTTP-shaped ones of a consumer that is sent to rather than reading.
 *
 * @module
 */
import type { ConsumerEvents, DeadLetterEvent } from '../../consumer/consumer-events.js';
import type { ReceivedMessage } from '../../core/types.js';

type Shared = ConsumerEvents<{ url: string | null }, { status: number }>;

/**
 * Events of a {@link WebhookConsumer}. "Acknowledged" here means answered 2xx; there is no broker
 * holding messages, so retries, their backoff and the dead letters are the sender's (the relay's
 * retry policy and its dead-letter table): this consumer says, by its status, which one to do.
 * Listeners that throw are logged and ignored.
 */
export interface WebhookConsumerEvents {
  /** Started; `url` is its own server's address (`listen`), null when mounted in yours. */
  'consumer:started': Shared['consumer:started'];
  /** The handler ran and its inbox transaction committed; the request is answered 2xx. */
  'consumer:message:handled': Shared['consumer:message:handled'];
  /** The inbox had processed this id already: answered 2xx without running the handler. */
  'consumer:message:duplicate': Shared['consumer:message:duplicate'];
  /**
   * The handler failed and the request was answered `status` (500, or what a
   * `WebhookStatusError` asked for): the sender sends the message again, after its backoff.
   * `attempt` is the sender's (`mailroom-attempt`).
   */
  'consumer:message:failed': { message: ReceivedMessage; error: Error; attempt: number; status: number };
  /**
   * Answered with a 4xx that makes the sender dead-letter the message at once: 422 for a
   * `PermanentDeliveryError`, 400 for a request whose message cannot be decoded (`message` null,
   * `reason: 'malformed'`), or the 4xx a `WebhookStatusError` asked for. `failedAttempts` is the
   * sender's attempt.
   */
  'consumer:message:dead': DeadLetterEvent & { status: number };
  /**
   * A request was answered without running a handler, and not because of its message: 401 (bad
   * signature or timestamp), 405, 413, or 503 (`busy`, `key_busy`, `stopping`, `not_started`;
   * with `Retry-After`).
   */
  'consumer:request:refused': { status: number; code: string; webhookId: string | null };
  /** Inbox records past their retention were deleted (`inbox.prune()`, every `pruneIntervalMs`). */
  'consumer:inbox:pruned': Shared['consumer:inbox:pruned'];
  /** `prune`: pruning the inbox failed; it is tried again at the next interval. */
  'consumer:error': { phase: 'prune'; id: null; error: Error };
  /**
   * Stopped. `abandoned`: requests still being handled at the stop deadline, answered 503 then
   * (the sender sends them again; a handler that committed after all makes that copy a duplicate).
   */
  'consumer:stopped': Shared['consumer:stopped'];
}
