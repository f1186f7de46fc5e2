import { ConfigError } from './errors/config-error.js';
import { InvalidMessageError } from './errors/invalid-message-error.js';
import { NotATransactionError } from './errors/not-a-transaction-error.js';
import { ambientGetter, type AmbientTransaction } from './transaction-context.js';
import { isUuid } from './uuid.js';
import { encodeGroup } from './atomic-group.js';
import { encodeMessage, MAX_TOPIC_BYTES, type MessageLimits } from './message.js';
import { boolean, custom, hasMethods, integer, optionsSchema, string } from './options-schema.js';
import type { AckPort, MessageStatus, OutboxStore, SqlExecutor } from './ports.js';
import type { EncodedMessage, MessageInput } from './types.js';
import { waitForState, type WaitForOptions } from './wait-for.js';
import { withTraceContext } from '../tracing/enqueue-context.js';

/** Options of {@link Outbox}. */
export interface OutboxOptions<Tx = unknown> extends MessageLimits {
  store: OutboxStore<Tx>;
  /**
   * Before each `enqueue`, make sure `tx` is inside a transaction block, and throw a
   * `NotATransactionError` (writing nothing) when it is not: a client in autocommit would commit
   * the message on its own, so it would outlive a rollback of your business transaction.
   *
   * Without it, `enqueue` still refuses pools and, for free, node-postgres clients that the server
   * last reported idle; this adds an exact check for every other handle (postgres.js, ORM
   * executors), at the cost of one round trip per `enqueue` for those (PostgreSQL: a `LOCK TABLE`
   * on the outbox in the mode the INSERT takes anyway; MySQL: the session's transaction flag). Needs
   * a store that can check (PostgreSQL, PGlite, MySQL/MariaDB); other stores refuse the option
   * (SQLite checks a Database handle exactly on every enqueue anyway).
   *
   * @default false
   * @example new Outbox({ store, requireTransaction: true })
   */
  requireTransaction?: boolean;
  /**
   * Where `enqueue(message)` (called without a transaction) finds the current one: a
   * {@link TransactionContext}, or a function returning the transaction your app keeps in
   * `AsyncLocalStorage` (NestJS CLS: `() => txHost.tx`). When it returns nothing, that
   * `enqueue` throws a `NotATransactionError`: never an autocommit write. `enqueue(tx, message)`
   * ignores it.
   *
   * @example new Outbox({ store, ambientTransaction: () => cls.get('tx') })
   */
  ambientTransaction?: AmbientTransaction<Tx>;
  /**
   * Copy the active OpenTelemetry trace context into each message's headers at `enqueue`
   * (`traceparent`, `tracestate`, through the registered propagator), so the relay's publish
   * span and the consumer's span continue the trace (docs/tracing.md). A message that sets its
   * own `traceparent` keeps it. Does nothing when `@opentelemetry/api` is not installed or no
   * span is active. The SQL API (`<schema>.enqueue(…)`) has no such context: pass the headers
   * yourself there.
   *
   * @default true
   * @example new Outbox({ store, traceContext: false })
   */
  traceContext?: boolean;
}

const outboxOptionsSchema = optionsSchema<OutboxOptions>()('Outbox', {
  store: custom(
    'an outbox store (PostgresStore, PGliteStore, MySqlStore, SqliteStore…)',
    hasMethods<OutboxStore>('executor', 'enqueueStatement'),
    { required: true },
  ),
  // Left out, encodeMessage applies DEFAULT_MAX_PAYLOAD_BYTES.
  maxPayloadBytes: integer({ min: 1 }),
  requireTransaction: boolean({ default: false }),
  ambientTransaction: custom(
    'a function returning the current transaction, or an object with current() (a TransactionContext)',
    (v): v is AmbientTransaction<unknown> =>
      typeof v === 'function' ||
      (typeof v === 'object' && v !== null && typeof (v as { current?: unknown }).current === 'function'),
  ),
  // Left out, encodeMessage applies DEFAULT_ACK_TOPIC; checked as a topic there too.
  ackTopic: string({ expected: `a topic of 1 to ${MAX_TOPIC_BYTES} bytes` }),
  traceContext: boolean({ default: true }),
});

/** Most messages one INSERT carries; larger arrays are split into several statements. */
const CHUNK = 1000;

/** Options of one `outbox.enqueue` call. */
export interface EnqueueOptions {
  /**
   * Deliver these messages all or none: the relay publishes them in one broker transaction
   * (transports with transactions: RabbitMQ, STOMP), so a consumer never sees part of the group,
   * even when the relay dies halfway. The messages must share one key (or all have none): the
   * group is claimed, retried and ordered as one message. Each member carries the headers
   * `mailroom-group` (the first member's id), `mailroom-group-size` and `mailroom-group-index`.
   * `outbox.status()` follows the group by its first member's id. A relay whose transport has no
   * transactions dead-letters the group, saying so. No `delayMs`, `ack` or `callback` in a group.
   *
   * @default false
   * @example await outbox.enqueue(client, [orderConfirmed, stockReserved], { atomic: true });
   */
  atomic?: boolean;
}

/**
 * Writes messages into the outbox inside the caller's own transaction. The messages become
 * visible to relays when that transaction commits, and vanish with it on rollback.
 *
 * @example
 * ```ts
 * const outbox = new Outbox({ store });
 * const client = await pool.connect(); // the connection your transaction runs on, not the pool
 * await client.query('BEGIN');
 * await client.query('UPDATE accounts SET balance = balance - $1 WHERE id = $2', [amount, id]);
 * const messageId = await outbox.enqueue(client, { topic: 'account.debited', key: id, payload: { amount } });
 * await client.query('COMMIT');
 * client.release();
 * ```
 */
export class Outbox<Tx = unknown> {
  readonly store: OutboxStore<Tx>;
  readonly #limits: MessageLimits;
  readonly #requireTransaction: ((executor: SqlExecutor) => Promise<void>) | undefined;
  readonly #ambient: (() => Tx | undefined) | undefined;
  readonly #traceContext: boolean;

  constructor(options: OutboxOptions<Tx>) {
    const { requireTransaction, maxPayloadBytes, ackTopic, traceContext } =
      outboxOptionsSchema.resolve(options);
    this.#traceContext = traceContext;
    this.#ambient = options.ambientTransaction ? ambientGetter(options.ambientTransaction) : undefined;
    const store = options.store;
    const check = store.requireTransaction;
    if (requireTransaction && typeof check !== 'function') {
      throw new ConfigError(
        'requireTransaction',
        `Outbox option requireTransaction: the ${store.name} store cannot check that a handle is inside a transaction: ` +
          'remove requireTransaction, or use a store that can (PostgresStore, PGliteStore, MySqlStore)',
      );
    }
    this.#requireTransaction =
      requireTransaction && check ? (executor) => check.call(store, executor) : undefined;
    this.store = store;
    this.#limits = {
      ...(maxPayloadBytes === undefined ? {} : { maxPayloadBytes }),
      ...(ackTopic === undefined ? {} : { ackTopic }),
    };
  }

  /** Validates messages without writing them; returns them encoded. Throws on the first bad one. */
  encode(messages: readonly MessageInput[]): EncodedMessage[] {
    return messages.map((m) => encodeMessage(m, this.#limits));
  }

  /**
   * Enqueues one message (returns its id) or several (returns their ids, in order) in the
   * caller's transaction `tx`: the handle the store takes for its open transaction (PostgreSQL: a
   * `pg` client after `BEGIN`, the `tx` of postgres.js `sql.begin` or of PGlite
   * `db.transaction`, an ORM adapter with `execute(sql, params)`). Every message is validated
   * before anything is written, so a bad message leaves no row behind.
   *
   * @throws NotATransactionError (writing nothing) when `tx` is not a transaction: a pool (its
   *   statements would commit on their own, so the message would outlive your rollback), or a
   *   client known to be outside `BEGIN` (see {@link OutboxOptions.requireTransaction}).
   */
  enqueue(tx: Tx, message: MessageInput): Promise<string>;
  enqueue(tx: Tx, messages: readonly MessageInput[], options?: EnqueueOptions): Promise<string[]>;
  /**
   * The same, in the ambient transaction (see {@link OutboxOptions.ambientTransaction}).
   *
   * @throws NotATransactionError (writing nothing) when the Outbox has no `ambientTransaction`,
   *   or it returns none here (the call is outside your transaction's scope).
   */
  enqueue(message: MessageInput): Promise<string>;
  enqueue(messages: readonly MessageInput[], options?: EnqueueOptions): Promise<string[]>;
  async enqueue(
    first: Tx | MessageInput | readonly MessageInput[],
    second?: MessageInput | readonly MessageInput[] | EnqueueOptions,
    third?: EnqueueOptions,
  ): Promise<string | string[]> {
    // A transaction handle is never an array nor has a topic; a message always has one.
    if (isMessageInput(second)) return this.#enqueue(first as Tx, second, third);
    if (!Array.isArray(first) && !isMessageInput(first)) {
      // enqueue(tx) or enqueue(tx, somethingElse): a message is missing.
      return this.#enqueue(first as Tx, second as MessageInput, third);
    }
    return this.#enqueue(this.#ambientTransaction(), first as MessageInput, second as EnqueueOptions);
  }

  /** The ambient transaction, or the error that says how to give one. */
  #ambientTransaction(): Tx {
    if (!this.#ambient) {
      throw new NotATransactionError(
        'no transaction',
        'enqueue(message) was called without a transaction, and this Outbox has no ambientTransaction: pass ' +
          'your transaction first, outbox.enqueue(tx, message), or create the Outbox with ' +
          '{ ambientTransaction } (a TransactionContext, or a function returning the transaction your app keeps ' +
          'in AsyncLocalStorage). Nothing was written.',
      );
    }
    const tx = this.#ambient();
    if (tx === undefined || tx === null) {
      throw new NotATransactionError(
        'no ambient transaction',
        'enqueue(message) found no ambient transaction here: call it inside your transaction scope ' +
          "(TransactionContext.run(tx, fn), or your framework's transactional method), or pass the transaction " +
          'first, outbox.enqueue(tx, message). Nothing was written: Mailroom never enqueues in autocommit.',
      );
    }
    return tx;
  }

  async #enqueue(
    tx: Tx,
    input: MessageInput | readonly MessageInput[],
    options: EnqueueOptions = {},
  ): Promise<string | string[]> {
    const given = Array.isArray(input) ? (input as readonly MessageInput[]) : [input as MessageInput];
    const list = this.#traceContext ? withTraceContext(given) : given;
    const members = this.encode(list);
    const atomic = options.atomic ?? false;
    if (typeof atomic !== 'boolean') {
      throw new ConfigError(
        'atomic',
        `enqueue option atomic must be true or false, got ${JSON.stringify(atomic)}`,
      );
    }
    // An atomic group is stored as one message (docs/design.md, "Atomic groups").
    const encoded = atomic ? [encodeGroup(members)] : members;
    const executor = this.store.executor(tx);
    if (this.#requireTransaction) await this.#requireTransaction(executor);
    for (let i = 0; i < encoded.length; i += CHUNK) {
      const { sql, params, name } = this.store.enqueueStatement(encoded.slice(i, i + CHUNK));
      await executor.execute(sql, params, name);
    }
    const ids = members.map((m) => m.id);
    return Array.isArray(input) ? ids : (ids[0] as string);
  }

  /**
   * Where a message is now: `pending`, `in-flight`, `awaiting-ack`, `acknowledged`, `expired`,
   * `dead` or `unknown` (delivered and deleted, pruned, or never committed), with what the store
   * knows (attempts, resends, the acknowledgement's consumer and result…).
   *
   * @example
   * ```ts
   * const { state, result } = await outbox.status(paymentId);
   * ```
   */
  async status(id: string): Promise<MessageStatus> {
    checkId(id, 'status');
    const [status] = await this.#ackPort('status').status([id]);
    return status ?? { id, state: 'unknown' };
  }

  /**
   * Resolves when message `id` was delivered (`until: 'delivered'`, the default) or
   * acknowledged (`until: 'acknowledged'`, for messages sent with `ack`), with its status.
   * Rejects with a {@link WaitError} when the message ends otherwise (`expired`, `dead`), when
   * `timeoutMs` passes or `signal` aborts. Works from any process: it reads the database, and
   * wakes at once on the store's notifications where it has them (PostgreSQL), else polls.
   *
   * A message without `ack` is deleted once delivered, so for it `delivered` means gone from the
   * outbox and not a dead letter: the status then says `unknown`. Call it once the enqueueing
   * transaction committed: the database cannot tell an id delivered and deleted from one never
   * committed, and resolves both.
   *
   * @example
   * ```ts
   * const status = await outbox.waitFor(id, { until: 'acknowledged', timeoutMs: 60_000 });
   * console.log(status.consumer, status.result);
   * ```
   */
  async waitFor(id: string, options: WaitForOptions = {}): Promise<MessageStatus> {
    checkId(id, 'waitFor');
    return waitForState(this.#ackPort('waitFor'), id, options);
  }

  #ackPort(method: string): AckPort & Pick<OutboxStore, 'subscribeState'> {
    const store = this.store;
    if (typeof store.status !== 'function') {
      throw new ConfigError(
        method,
        `outbox.${method}() needs a store that tracks message states; the ${store.name} store does not ` +
          '(PostgresStore and PGliteStore do)',
      );
    }
    return store as unknown as AckPort & Pick<OutboxStore, 'subscribeState'>;
  }
}

/** A message or a list of them, as `enqueue` takes them (a transaction handle is neither). */
function isMessageInput(v: unknown): v is MessageInput | readonly MessageInput[] {
  return Array.isArray(v) || (typeof v === 'object' && v !== null && 'topic' in v);
}

function checkId(id: unknown, method: string): void {
  if (typeof id !== 'string' || !isUuid(id)) {
    throw new InvalidMessageError(
      'id',
      `outbox.${method}(id): id must be a message id (a UUID, as enqueue returned it), got ${JSON.stringify(id ?? null)}`,
    );
  }
}
