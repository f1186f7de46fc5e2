import { ConfigError } from '../core/errors/config-error.js';
import { InvalidMessageError } from '../core/errors/invalid-message-error.js';
import { silentLogger, type Logger } from '../core/logger.js';
import { ACK_TO_HEADER } from '../core/message.js';
import { boolean, custom, hasMethods, integer, optionsSchema, string } from '../core/options-schema.js';
import { Outbox } from '../core/outbox.js';
import type { InboxPort, OutboxStore } from '../core/ports.js';
import type { JsonValue, ReceivedMessage } from '../core/types.js';
import { isUuid } from '../core/uuid.js';
import { withProcessSpan } from '../tracing/process-span.js';

/** The message type of acknowledgements; their payload is an `AckReceipt`. */
export const ACK_MESSAGE_TYPE = 'mailroom.ack';
/** Header of an acknowledgement naming the message it acknowledges. */
export const ACK_OF_HEADER = 'mailroom-ack-of';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Options of {@link Inbox}. */
export interface InboxOptions<Tx = unknown> {
  /** The receiving service's database: where its records, effects and acknowledgements commit. */
  store: OutboxStore<Tx>;
  /**
   * Names the receiving service. Records are per consumer, so two services sharing a database
   * (or one service with two queues of separate concerns) each process every message once.
   * 1–255 bytes.
   *
   * @example 'billing'
   */
  consumer: string;
  /**
   * The outbox acknowledgements are enqueued through (they travel back like any message, from
   * the same transaction). @default `new Outbox({ store })`
   */
  outbox?: Outbox<Tx>;
  /**
   * Acknowledge every processed message that asks for it (has the `mailroom-ack-to` header)
   * when the handler returns; `context.ack(result)` adds a result. With `false`, only handlers
   * that call `context.ack()` acknowledge.
   *
   * @default true
   */
  autoAck?: boolean;
  /**
   * How long records are kept. Must be at least `maxRedeliveryMs`: a copy that arrives after its
   * record is gone is processed again.
   *
   * @default 1209600000 (14 days)
   */
  retentionMs?: number;
  /**
   * The longest time after a first delivery that a copy of the message can still arrive: the
   * sender's retry schedule, its acknowledgement timeouts × (maxResends + 1), and how long your
   * queue holds messages while this consumer is down. Retention shorter than this is refused.
   *
   * @default 86400000 (24 hours)
   */
  maxRedeliveryMs?: number;
  /** Records deleted per statement by {@link Inbox.prune}. @default 1000 */
  pruneBatchSize?: number;
  logger?: Logger;
}

const inboxSchema = optionsSchema<InboxOptions>()('Inbox', {
  store: custom(
    'a store with an inbox (PostgresStore, PGliteStore…)',
    hasMethods<OutboxStore>('executor', 'enqueueStatement'),
    { required: true },
  ),
  consumer: string({ expected: 'the receiving service, 1 to 255 bytes', required: true }),
  outbox: custom('an Outbox', (v): v is Outbox => v instanceof Outbox),
  autoAck: boolean({ default: true }),
  retentionMs: integer({ min: 1, default: 14 * DAY }),
  maxRedeliveryMs: integer({ min: 0, default: DAY }),
  pruneBatchSize: integer({ min: 1, max: 100_000, default: 1000 }),
  logger: custom('a logger', hasMethods<Logger>('info', 'warn', 'error')),
});

/** What a handler can do besides its effects. */
export interface InboxContext {
  /** The message being handled. */
  readonly message: ReceivedMessage;
  /**
   * Acknowledges the message to its sender, with an optional small result the sender reads with
   * `outbox.status(id)`. The acknowledgement is enqueued in this handler's transaction when it
   * returns, so it is sent only if the effects commit. Does nothing for a message that asked
   * for no acknowledgement (no `ackTo`). With `autoAck` (the default) calling it is needed only
   * to add a result.
   */
  ack(result?: JsonValue): void;
}

/** What {@link Inbox.handle} did. */
export type InboxResult<T> = { status: 'processed'; value: T } | { status: 'duplicate' };

/**
 * Exactly-once effects on the receiving side: records each processed message id in the same
 * transaction as the handler's effects, so a redelivered copy (the relay and brokers deliver at
 * least once) is recognised and skipped. Acknowledgements the sender asked for are enqueued in
 * that transaction too.
 *
 * @example
 * ```ts
 * const inbox = new Inbox({ store, consumer: 'billing' });
 * const result = await inbox.handle(message, async (tx) => {
 *   await tx.query('INSERT INTO invoices (order_id, total) VALUES ($1, $2)', [order.id, order.total]);
 * });
 * // result.status: 'processed', or 'duplicate' (handler not run)
 * ```
 */
export class Inbox<Tx = unknown> {
  readonly consumer: string;
  readonly store: OutboxStore<Tx>;
  readonly retentionMs: number;
  readonly #port: InboxPort<Tx>;
  readonly #outbox: Outbox<Tx>;
  readonly #autoAck: boolean;
  readonly #pruneBatchSize: number;
  readonly #logger: Logger;

  constructor(options: InboxOptions<Tx>) {
    const resolved = inboxSchema.resolve(options as InboxOptions);
    const store = options.store;
    const consumer = resolved.consumer;
    const bytes = Buffer.byteLength(consumer);
    if (bytes === 0 || bytes > 255) {
      throw new ConfigError(
        'consumer',
        `Inbox option consumer must be 1 to 255 bytes, got ${bytes}: name the receiving service, e.g. 'billing'`,
        { value: consumer },
      );
    }
    for (const method of ['transaction', 'inboxRecordStatement', 'pruneInbox'] as const) {
      if (typeof store[method] !== 'function') {
        throw new ConfigError(
          'store',
          `the ${store.name} store has no inbox (it lacks ${method}()); use a store that has one ` +
            '(PostgresStore, PGliteStore) and run its migrations',
        );
      }
    }
    if (resolved.retentionMs < resolved.maxRedeliveryMs) {
      throw new ConfigError(
        'retentionMs',
        `Inbox option retentionMs (${resolved.retentionMs} ms) is shorter than maxRedeliveryMs ` +
          `(${resolved.maxRedeliveryMs} ms): a copy of a message redelivered after its record was pruned ` +
          'would be processed a second time. Keep records at least as long as the longest redelivery ' +
          "(the sender's retries, its ack timeouts × (maxResends + 1), and how long your queue holds " +
          'messages while this consumer is down), or lower maxRedeliveryMs if you know it is shorter',
        { details: { retentionMs: resolved.retentionMs, maxRedeliveryMs: resolved.maxRedeliveryMs } },
      );
    }
    this.store = store;
    this.consumer = consumer;
    this.retentionMs = resolved.retentionMs;
    this.#port = store as unknown as InboxPort<Tx>;
    this.#outbox = options.outbox ?? new Outbox<Tx>({ store });
    this.#autoAck = resolved.autoAck;
    this.#pruneBatchSize = resolved.pruneBatchSize;
    this.#logger = options.logger ?? silentLogger;
  }

  /**
   * Runs `handler` for `message` once per consumer, however many copies arrive. Opens a
   * transaction on the store, records `(consumer, message.id)`, runs the handler with the
   * transaction handle (`tx`: run your effects on it, and `outbox.enqueue(tx, …)` follow-up
   * messages), enqueues the acknowledgement the sender asked for, and commits all of it
   * together. A copy of a message already processed returns `{ status: 'duplicate' }` without
   * running the handler; a copy arriving while another is being handled waits for that one's
   * outcome. A handler that throws rolls back the record and its effects and rethrows, so the
   * message can be retried. With `@opentelemetry/api` installed, it runs in a CONSUMER span
   * `process <topic>` that continues the message's trace (`traceparent`), unless a consumer's
   * span for this message is active already (docs/tracing.md).
   */
  async handle<T>(
    message: ReceivedMessage,
    handler: (tx: Tx, context: InboxContext) => Promise<T>,
  ): Promise<InboxResult<T>> {
    if (typeof message !== 'object' || message === null || !isUuid(message.id)) {
      throw new InvalidMessageError(
        'id',
        `inbox.handle needs a message with a UUID id (the sender's message id), got ${JSON.stringify(
          (message as { id?: unknown } | null)?.id ?? null,
        )}`,
      );
    }
    if (typeof handler !== 'function') {
      throw new ConfigError(
        'handler',
        'inbox.handle(message, handler): handler must be an async function (tx) => …',
      );
    }
    const ackTo = message.ackTo ?? message.headers?.[ACK_TO_HEADER] ?? null;
    // A consumer's run has its process span already; called on its own, the inbox starts one.
    return withProcessSpan(
      message,
      { consumer: this.consumer },
      () => this.#handle(message, handler, ackTo),
      (result) => result.status,
    );
  }

  #handle<T>(
    message: ReceivedMessage,
    handler: (tx: Tx, context: InboxContext) => Promise<T>,
    ackTo: string | null,
  ): Promise<InboxResult<T>> {
    const port = this.#port;
    return port.transaction(async (tx) => {
      const executor = this.store.executor(tx);
      const record = port.inboxRecordStatement(this.consumer, message.id);
      const res = await executor.execute(record.sql, record.params, record.name);
      if (res.rows.length === 0) return { status: 'duplicate' as const };
      let acked = this.#autoAck;
      let result: JsonValue | undefined;
      const context: InboxContext = {
        message,
        ack: (value?: JsonValue) => {
          acked = true;
          result = value;
        },
      };
      const value = await handler(tx, context);
      if (acked && ackTo !== null) {
        await this.#outbox.enqueue(tx, {
          topic: ackTo,
          type: ACK_MESSAGE_TYPE,
          headers: { [ACK_OF_HEADER]: message.id },
          payload: { id: message.id, consumer: this.consumer, ...(result === undefined ? {} : { result }) },
        });
      }
      return { status: 'processed' as const, value };
    });
  }

  /**
   * Deletes this consumer's records older than `retentionMs`, a batch of `pruneBatchSize` per
   * statement, until none is left; returns how many. Run it now and then (consumers do, hourly).
   */
  async prune(): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.#port.pruneInbox(this.consumer, this.retentionMs, this.#pruneBatchSize);
      total += n;
      if (n < this.#pruneBatchSize) break;
    }
    if (total > 0)
      this.#logger.info('inbox pruned', { event: 'inbox_pruned', consumer: this.consumer, count: total });
    return total;
  }
}
