import {
  runInTransaction,
  type BrokerTransaction,
  type TransactionalTransport,
} from '../../core/broker-transaction.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { PublishOptions, PublishOutcome } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import { blockedError, closedError, probeAbortedError, publishAbortedError } from './rabbitmq-errors.js';
import {
  resolveRabbitMqOptions,
  type RabbitMqTransportOptions,
  type ResolvedRabbitMqTransportOptions,
} from './rabbitmq-options.js';
import { publishBatch } from './rabbitmq-publish.js';
import {
  ABORTED,
  noop,
  SessionManager,
  untilAborted,
  withTimeout,
  type Session,
} from './rabbitmq-session.js';
import { RabbitMqTransaction } from './rabbitmq-transaction.js';

export { ATTEMPT_HEADER, KEY_HEADER } from './rabbitmq-publish.js';

/**
 * Publishes outbox messages to a RabbitMQ exchange over a confirm channel, with the topic as
 * routing key and the message id as AMQP `message-id`. A message is reported `ok` only after the
 * broker's publisher confirm (`basic.ack`).
 *
 * Reconnects lazily: when the connection is lost, in-flight messages report `unavailable` and
 * the next `publish` opens a new connection (with backoff after failed attempts). A broker that
 * blocks publishers or does not answer is `unavailable` too; a channel the broker closes over
 * what was published is `retry` (docs/transports/rabbitmq.md has the whole table, and why).
 *
 * Broker transactions (`begin()`, `transaction(fn)`) run on a second connection, opened on the
 * first `begin()`, one channel in transaction mode per transaction (docs/mq-transactions.md).
 *
 * @example
 * ```ts
 * const transport = new RabbitMqTransport({ url: 'amqp://guest:guest@localhost:5672', mandatory: true });
 * await transport.start();
 * const outcomes = await transport.publish(messages);
 * await transport.close();
 * ```
 */
export class RabbitMqTransport implements TransactionalTransport {
  readonly name = 'rabbitmq';
  /**
   * One confirm channel: a batch reaches the broker in order, so the relay batches runs of a
   * key's messages (see docs/design.md, "Runs").
   */
  readonly ordering = true;
  // Private: the resolved URL holds the password, and public fields end up in logs.
  readonly #options: Readonly<ResolvedRabbitMqTransportOptions>;
  readonly #sessions: SessionManager;
  /**
   * The connection broker transactions open their channels on, apart from the confirm channel's:
   * a channel or connection error a transaction causes (or a commit the broker does not answer,
   * after which that connection is dropped) never fails the batches in flight on the confirm
   * channel, and dropping the confirm connection after a confirm timeout never ends a
   * transaction. Opened on the first `begin()`.
   */
  readonly #txSessions: SessionManager;
  #closing: Promise<void> | undefined;
  readonly #inFlight = new Set<Promise<PublishOutcome[]>>();
  /** Transactions begun and not yet ended (their channel still open or closing). */
  readonly #transactions = new Set<RabbitMqTransaction>();

  /**
   * Always true: `begin()` and `transaction(fn)` run AMQP transactions (`tx.select`,
   * `tx.commit`, `tx.rollback`). The relay publishes atomic groups with them.
   */
  readonly transactions = true;

  constructor(options: RabbitMqTransportOptions) {
    this.#options = Object.freeze(resolveRabbitMqOptions(options));
    this.#sessions = new SessionManager(this.#options);
    this.#txSessions = new SessionManager(transactionConnectionOptions(this.#options));
  }

  /** True while a connection and confirm channel are open. */
  get connected(): boolean {
    return this.#sessions.current !== undefined;
  }

  /**
   * Connects, opens a confirm channel and declares the exchange. Idempotent. Reopens a closed
   * transport. Throws a {@link TransportError} (`unreachable`, `auth_failed`, `vhost_refused`,
   * `declare_failed`) or a {@link ConfigError} when amqplib is missing.
   */
  async start(): Promise<void> {
    if (this.#closing) {
      await this.#closing;
      this.#closing = undefined;
      this.#sessions.reopen();
      this.#txSessions.reopen();
    }
    // An explicit start always tries now, whatever the backoff says.
    await this.#sessions.open(true);
  }

  /**
   * Resolves when a connection is open and the broker does not block publishers; connects when
   * needed, at once whatever the reconnect backoff says (the relay paces its probes itself).
   * Throws a {@link TransportError}: the connect error (`unreachable`, `auth_failed`…), `blocked`
   * naming the broker's alarm, `closed`, or `probe_aborted` when `signal` aborts first.
   */
  async probe(options: PublishOptions = {}): Promise<void> {
    const { signal } = options;
    const { safeUrl } = this.#options;
    if (this.#sessions.closed) throw closedError(safeUrl);
    if (signal?.aborted) throw probeAbortedError(safeUrl, signal);
    const session = await untilAborted(this.#sessions.open(true), signal);
    if (session === ABORTED) throw probeAbortedError(safeUrl, signal as AbortSignal);
    if (session.state.blockedReason !== undefined) {
      throw blockedError(safeUrl, session.state.blockedReason);
    }
  }

  /**
   * Publishes the batch pipelined on the confirm channel and waits for the broker's confirms.
   * Never throws; returns one outcome per message, in order. When `signal` aborts first, resolves
   * at once: messages without an answer report `unavailable` (`publish_timeout`), the connection
   * is dropped (unless the broker said it is blocking publishers), and late confirms are ignored.
   */
  publish(messages: readonly OutboxMessage[], options: PublishOptions = {}): Promise<PublishOutcome[]> {
    if (messages.length === 0) return Promise.resolve([]);
    const call = this.#publish(messages, options.signal);
    this.#inFlight.add(call);
    void call.finally(() => this.#inFlight.delete(call));
    return call;
  }

  /**
   * Starts a broker transaction on a channel of its own, in transaction mode (AMQP `tx.select`),
   * on the transport's transaction connection (opened on first use, with the reconnect backoff).
   * Publish in it, then `commit()` or `rollback()`; see {@link RabbitMqTransaction} for what each
   * failure says about the messages. `options.signal` aborts waiting for the connection, a full
   * write buffer and the commit's answer (a commit then reports `commit_unknown`).
   *
   * Throws a {@link TransportError} when the broker cannot be used now (the connect error,
   * `blocked`, `closed`, `begin_failed`, `publish_timeout`), a {@link ConfigError} when a custom
   * client has no plain channels.
   *
   * @example
   * ```ts
   * const tx = await transport.begin();
   * try {
   *   await tx.publish([{ topic: 'order.created', key: id, payload: order }]);
   *   await tx.publish([{ topic: 'invoice.requested', key: id, payload: invoice }]);
   *   await tx.commit();
   * } catch (err) {
   *   await tx.rollback();
   *   throw err;
   * }
   * ```
   */
  async begin(options: PublishOptions = {}): Promise<BrokerTransaction> {
    const tx = await RabbitMqTransaction.begin({
      options: this.#options,
      sessions: this.#txSessions,
      signal: options.signal,
      onEnd: (ended) => this.#transactions.delete(ended),
    });
    if (this.#txSessions.closed) {
      // close() ran while this one began: do not hand out a transaction nobody will close.
      await tx.rollback();
      throw closedError(this.#options.safeUrl);
    }
    this.#transactions.add(tx);
    return tx;
  }

  /**
   * Runs `fn` in a new transaction: commits when it resolves and returns its value; rolls back
   * and rethrows when it throws. A failed commit rejects as `commit()` does.
   *
   * @example
   * ```ts
   * await transport.transaction(async (tx) => {
   *   await tx.publish([{ topic: 'order.created', key: id, payload: order }, { topic: 'stock.reserved', key: id, payload: items }]);
   * });
   * ```
   */
  transaction<T>(fn: (tx: BrokerTransaction) => Promise<T>, options: PublishOptions = {}): Promise<T> {
    return runInTransaction(() => this.begin(options), fn);
  }

  /**
   * Waits up to `closeTimeoutMs` for batches in flight and commits under way, then closes the
   * channels and the connections. Idempotent. Messages still unconfirmed then report
   * `unavailable`; transactions still open are discarded by the broker with their channel.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #publish(
    messages: readonly OutboxMessage[],
    signal: AbortSignal | undefined,
  ): Promise<PublishOutcome[]> {
    const { safeUrl } = this.#options;
    if (this.#sessions.closed) {
      const error = closedError(safeUrl);
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    let session: Session | typeof ABORTED;
    try {
      session = signal?.aborted ? ABORTED : await untilAborted(this.#sessions.open(false), signal);
    } catch (err) {
      const error = err instanceof Error ? err : new TransportError('unreachable', String(err));
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    if (session === ABORTED) {
      const aborted = signal as AbortSignal;
      return messages.map((message) => ({
        status: 'unavailable',
        error: publishAbortedError(safeUrl, message, aborted, 'connecting', undefined),
      }));
    }
    const blocked = session.state.blockedReason;
    if (blocked !== undefined) {
      // Writing into a blocked connection only fills buffers the broker does not read; the
      // relay probes until the alarm clears instead.
      const error = blockedError(this.#options.safeUrl, blocked);
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    const result = await publishBatch(session, messages, this.#options, signal);
    // A broker that did not answer in time (confirm timeout, or the caller gave up) is not worth
    // waiting on again: the next publish reconnects, and a socket nobody reads from would keep
    // the process alive. A blocked one did say why it is silent; keeping its connection lets probe()
    // report the alarm until it clears, and the confirms still come once it does.
    if (result.unanswered && session.state.blockedReason === undefined) {
      void this.#sessions.drop(session);
    }
    return result.outcomes;
  }

  async #shutdown(): Promise<void> {
    // From here on, publish reports 'closed' and a connect still running disposes of its session.
    const batches = this.#sessions.close(async () => {
      if (this.#inFlight.size === 0) return;
      await withTimeout(Promise.allSettled([...this.#inFlight]), this.#options.closeTimeoutMs).catch(noop);
    });
    // Commits under way get the same time; open transactions end with the connection.
    const transactions = this.#txSessions.close(async () => {
      const committing = [...this.#transactions].flatMap((tx) =>
        tx.state === 'committing' && tx.committed ? [tx.committed] : [],
      );
      if (committing.length === 0) return;
      await withTimeout(Promise.all(committing), this.#options.closeTimeoutMs).catch(noop);
    });
    await Promise.all([batches, transactions]);
    this.#transactions.clear();
    // Batches cut short by the channel closing settle as unavailable right away.
    await Promise.allSettled([...this.#inFlight]);
  }
}

/**
 * The transport's options for its transaction connection: the same, with a connection name of
 * its own in the management UI (`<name> transactions`).
 */
function transactionConnectionOptions(
  options: Readonly<ResolvedRabbitMqTransportOptions>,
): Readonly<ResolvedRabbitMqTransportOptions> {
  const clientProperties = (options.socketOptions['clientProperties'] ?? {}) as Record<string, unknown>;
  const name =
    typeof clientProperties['connection_name'] === 'string'
      ? clientProperties['connection_name']
      : 'mailroom';
  return Object.freeze({
    ...options,
    socketOptions: {
      ...options.socketOptions,
      clientProperties: { ...clientProperties, connection_name: `${name} transactions` },
    },
  });
}
