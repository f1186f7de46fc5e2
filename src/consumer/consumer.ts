/**
 * The shape every Mailroom consumer shares, whatever the broker: a handler run once per message
 * id through an {@link ConsumerInbox} (the `Inbox` from `mailroom`), acknowledged to the broker
 * only after the inbox transaction committed, retried with backoff and then dead-lettered, serial
 * per key on request, started and stopped (draining) the same way.
 *
 * A transport's consumer (`RabbitMqConsumer`, `StompConsumer`, and those of issue 17) does not
 * write that again: it extends `CoreDrivenConsumer` (consumer-base.ts), builds a `ConsumerCore`
 * (consumer-core.ts) with a `ConsumerBroker` that says how its broker opens a session, decodes,
 * acknowledges and dead-letters a delivery, declares its options with the shared fields of
 * consumer-options.ts, and its events as `ConsumerEvents` (consumer-events.ts).
 *
 * @module
 */
import type { JsonValue, MessageInput, OutboxMessage, ReceivedMessage } from '../core/types.js';

/**
 * What a handler can do besides its effects: the same shape as the `InboxContext` that
 * `Inbox.handle` passes on.
 */
export interface ConsumerContext {
  readonly message: ReceivedMessage;
  /**
   * Acknowledges the message to its sender (with an optional small result), enqueued in the
   * inbox transaction. Without an inbox it throws a ConfigError: an acknowledgement must commit
   * with the effects it reports.
   */
  ack(result?: JsonValue): void;
  /**
   * Transacted receive, on consumers made with `transacted: true` (undefined on others):
   * publishes messages in the broker transaction that also acknowledges the message being
   * handled. The consumer commits that transaction after the handler (and its inbox transaction)
   * succeeded, and rolls it back when the handler throws, so a crash never loses the input and
   * never leaves its outputs at the broker with the input still to be handled again. With an
   * inbox the database and the broker commit one after the other: `RabbitMqConsumer` allows it
   * (a crash between the two loses that run's outputs), `StompConsumer` refuses it with a
   * ConfigError. docs/mq-transactions.md.
   */
  publish?(messages: ReadonlyArray<OutboxMessage | MessageInput>): Promise<void>;
}

/**
 * The part of an `Inbox` the consumer calls (`Inbox` from `mailroom` satisfies it): records the
 * message id in the handler's transaction, or reports a copy already processed as a duplicate.
 */
export interface ConsumerInbox<Tx> {
  readonly consumer: string;
  handle<T>(
    message: ReceivedMessage,
    handler: (tx: Tx, context: ConsumerContext) => Promise<T>,
  ): Promise<{ status: 'processed'; value: T } | { status: 'duplicate' }>;
  /**
   * Deletes records past the inbox's retention, in bounded batches; returns how many. The
   * consumer calls it every `pruneIntervalMs` when present.
   */
  prune?(): Promise<number>;
}

/**
 * Handles one message. With an inbox, `tx` is the inbox transaction: write the effects with it
 * (they commit with the inbox record, once). Without one, `tx` is `undefined`, and the handler
 * must be idempotent itself. Throwing (or rejecting) retries the message; throwing a
 * `PermanentDeliveryError` dead-letters it at once.
 */
export type ConsumerHandler<Tx> = (
  message: ReceivedMessage,
  tx: Tx,
  context: ConsumerContext,
) => Promise<unknown>;

/** How a failing handler is retried before its message is dead-lettered. */
export interface ConsumerRetryOptions {
  /**
   * Handler runs before the message is dead-lettered, the first included. Counted per message
   * id in this process, across redeliveries, and seeded from a quorum queue's
   * `x-delivery-count`.
   *
   * @default 8
   */
  maxAttempts?: number;
  /** Ceiling of the first retry delay, in ms; each later one doubles it. @default 500 */
  baseDelayMs?: number;
  /**
   * Largest delay between two runs, in ms. The message (and, with `serialByKey`, its key) waits
   * in this process meanwhile, holding a prefetch slot.
   *
   * @default 30000
   */
  maxDelayMs?: number;
  /** `full`: a random delay up to the ceiling; `none`: the ceiling itself. @default 'full' */
  jitter?: 'full' | 'none';
  /** Source of randomness in [0, 1), for tests. @default Math.random */
  random?: () => number;
}

/**
 * What a transport's consumer offers (`RabbitMqConsumer` and those to come): options
 * `{ inbox?, handler, concurrency, serialByKey, retry, pruneIntervalMs, … }` plus the broker's
 * own, and this lifecycle.
 */
export interface MessageConsumer {
  /** Connects, declares what it consumes from and starts handling. Idempotent. */
  start(): Promise<void>;
  /**
   * Stops taking deliveries, waits up to `timeoutMs` for handlers running, and disconnects.
   * Deliveries not handled are left to the broker to redeliver. Never rejects.
   */
  stop(options?: { timeoutMs?: number }): Promise<void>;
  /** True between start() and stop(), also while reconnecting. */
  readonly running: boolean;
  /** True while connected and consuming. */
  readonly connected: boolean;
}
