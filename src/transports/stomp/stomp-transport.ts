import {
  runInTransaction,
  type BrokerTransaction,
  type TransactionalTransport,
} from '../../core/broker-transaction.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { PublishOptions, PublishOutcome } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import type { StompConnection } from './stomp-connection.js';
import { closedError, connectionLostError, probeAbortedError, publishAbortedError } from './stomp-errors.js';
import {
  resolveStompOptions,
  type ResolvedStompTransportOptions,
  type StompTransportOptions,
} from './stomp-options.js';
import { publishBatch, settledBefore } from './stomp-publish.js';
import { noop, StompSessions } from './stomp-session.js';
import { StompBrokerTransaction } from './stomp-transaction.js';

/**
 * Publishes outbox messages to a STOMP 1.2 broker (RabbitMQ's STOMP plugin, ActiveMQ): each
 * message a SEND to the destination its topic names (`/queue/{topic}` by default), persistent,
 * with a `receipt`; reported `ok` only once the broker's RECEIPT for it arrived. The message id,
 * topic, key, type, attempt and creation time travel as `mailroom-*` headers beside the user's.
 *
 * Reconnects lazily: when the connection is lost, messages without a RECEIPT report
 * `unavailable` and the next `publish` opens a new connection (with backoff after failed
 * attempts). An ERROR frame answering a SEND is a refusal of that message (`retry`, or
 * `permanent` when it is about its size); every other message in flight on the connection is
 * `unavailable`. Broker transactions (`begin()`, `transaction(fn)`) run on connections of their
 * own. docs/transports/stomp.md has the whole story.
 *
 * @example
 * ```ts
 * const transport = new StompTransport({ url: 'stomp://guest:guest@localhost:61613' });
 * await transport.start();
 * const outcomes = await transport.publish(messages);
 * await transport.transaction(async (tx) => {
 *   await tx.publish([{ topic: 'order.created', key: orderId, payload: order }]);
 *   await tx.publish([{ topic: 'stock.reserved', key: orderId, payload: items }]);
 * }); // committed: both delivered, or neither
 * await transport.close();
 * ```
 */
export class StompTransport implements TransactionalTransport {
  readonly name = 'stomp';
  /**
   * One connection, whose frames the broker processes in order: a batch reaches the broker in
   * order, so the relay batches runs of a key's messages (docs/design.md, "Runs").
   */
  readonly ordering = true;
  /** BEGIN / COMMIT / ABORT (see {@link begin}). */
  readonly transactions = true;
  // Private: the endpoint holds the password, and public fields end up in logs.
  readonly #options: Readonly<ResolvedStompTransportOptions>;
  readonly #sessions: StompSessions;
  #closing: Promise<void> | undefined;
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(options: StompTransportOptions) {
    this.#options = Object.freeze(resolveStompOptions(options));
    this.#sessions = new StompSessions(this.#options);
  }

  /** True while the publishing connection is open. */
  get connected(): boolean {
    return this.#sessions.current !== undefined;
  }

  /**
   * Connects and logs in. Idempotent; reopens a closed transport. Throws a {@link TransportError}:
   * `unreachable`, `not_stomp`, `auth_failed`, `vhost_refused`.
   */
  async start(): Promise<void> {
    if (this.#closing) {
      await this.#closing;
      this.#closing = undefined;
      this.#sessions.reopen();
    }
    await this.#sessions.open(true);
  }

  /**
   * Resolves when the publishing connection is open, connecting at once when needed (whatever the
   * reconnect backoff says: the relay paces its probes). Throws a {@link TransportError}: the
   * connect error, `closed`, or `probe_aborted` when `signal` aborts first.
   */
  async probe(options: PublishOptions = {}): Promise<void> {
    const { signal } = options;
    const { safeUrl } = this.#options.endpoint;
    if (this.#sessions.closed) throw closedError(safeUrl);
    if (signal?.aborted) throw probeAbortedError(safeUrl, signal);
    const opening = this.#sessions.open(true);
    opening.catch(noop);
    if (signal && !(await settledBefore(opening, signal))) throw probeAbortedError(safeUrl, signal);
    await opening;
  }

  /**
   * Sends the batch, each message with a receipt, and waits for the RECEIPTs. Never throws; one
   * outcome per message, in order. When `signal` aborts first, resolves at once: messages without
   * a RECEIPT report `unavailable` (`publish_timeout`) and the connection is dropped.
   */
  publish(messages: readonly OutboxMessage[], options: PublishOptions = {}): Promise<PublishOutcome[]> {
    if (messages.length === 0) return Promise.resolve([]);
    const call = this.#publish(messages, options.signal);
    this.#track(call);
    return call;
  }

  /**
   * Starts a broker transaction on a connection of its own (BEGIN). Messages published in it
   * reach consumers at `commit()` (COMMIT with a receipt), or never after `rollback()` (ABORT) or
   * a connection lost before the commit. Throws a {@link TransportError} when the broker cannot
   * be reached or the transport is closed.
   */
  async begin(options: PublishOptions = {}): Promise<BrokerTransaction> {
    const connection = await this.#sessions.take();
    const release = (c: StompConnection) => this.#sessions.release(c);
    const tx = StompBrokerTransaction.begin(connection, this.#options, options.signal, release);
    this.#track(tx);
    return tx;
  }

  /** Runs `fn` in a transaction: commits when it resolves, rolls back and rethrows when it throws. */
  transaction<T>(fn: (tx: BrokerTransaction) => Promise<T>, options: PublishOptions = {}): Promise<T> {
    const call = runInTransaction(() => this.begin(options), fn);
    this.#track(call);
    return call;
  }

  /**
   * Waits up to `closeTimeoutMs` for batches and transactions in flight, then closes every
   * connection (DISCONNECT with a receipt, at most 2 s, then the socket is destroyed). Idempotent.
   * Messages still without a RECEIPT then report `unavailable`.
   */
  close(): Promise<void> {
    this.#closing ??= this.#sessions.close(async () => {
      if (this.#inFlight.size === 0) return;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled([...this.#inFlight]),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#options.closeTimeoutMs))),
      ]);
      clearTimeout(timer);
    });
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #track(call: Promise<unknown>): void {
    this.#inFlight.add(call);
    void call.then(
      () => this.#inFlight.delete(call),
      () => this.#inFlight.delete(call),
    );
  }

  async #publish(
    messages: readonly OutboxMessage[],
    signal: AbortSignal | undefined,
  ): Promise<PublishOutcome[]> {
    const { safeUrl } = this.#options.endpoint;
    if (this.#sessions.closed) {
      const error = closedError(safeUrl);
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    const opening = this.#sessions.open(false);
    opening.catch(noop);
    if (signal && !(await settledBefore(opening, signal))) {
      return messages.map((message) => ({
        status: 'unavailable',
        error: publishAbortedError(safeUrl, message, signal, 'connecting'),
      }));
    }
    let connection: StompConnection;
    try {
      connection = await opening;
    } catch (err) {
      const error = err instanceof Error ? err : new TransportError('unreachable', String(err));
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    const result = await publishBatch(connection, messages, this.#options, signal);
    // A broker that did not answer in time is not worth waiting on again: the next publish
    // reconnects, and a socket nobody reads from would keep the process alive.
    if (result.unanswered && connection.open) {
      this.#sessions.drop(connection, connectionLostError(safeUrl, 'RECEIPTs did not come in time; dropped'));
    }
    return result.outcomes;
  }
}
