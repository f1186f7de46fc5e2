/**
 * Broker transactions on RabbitMQ (issue 15): `RabbitMqTransport.begin()` opens a channel of its
 * own in transaction mode (AMQP `tx.select`) on the transport's transaction connection, which is
 * not the connection the relay's confirm channel uses. docs/mq-transactions.md says what
 * RabbitMQ promises of such a transaction and what it does not.
 *
 * @module
 */
import type { BrokerTransaction } from '../../core/broker-transaction.js';
import { toOutboxMessages } from '../../core/broker-transaction.js';
import type { MessageInput, OutboxMessage } from '../../core/types.js';
import { txMethods, type AmqpReturnedMessage } from './amqp-client.js';
import { blockedError, closedError } from './rabbitmq-errors.js';
import type { ResolvedRabbitMqTransportOptions } from './rabbitmq-options.js';
import { refuseBeforeSending } from './rabbitmq-publish.js';
import { ABORTED, noop, untilAborted, type Session, type SessionManager } from './rabbitmq-session.js';
import {
  beginAbortedError,
  beginFailedError,
  noPlainChannelError,
  returnedInTransactionError,
  transactionClosedError,
} from './rabbitmq-transaction-errors.js';
import { TxChannel } from './rabbitmq-tx-channel.js';

/** The broker did not answer within the deadline of {@link withDeadline}. */
class Deadline extends Error {}

/** `promise`'s value; rejects with a {@link Deadline} after `ms`. */
function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Deadline(`no answer within ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

type State = 'open' | 'committing' | 'committed' | 'rolled back' | 'failed';

/** What a transaction is begun with. */
export interface TransactionSetup {
  readonly options: Readonly<ResolvedRabbitMqTransportOptions>;
  /** The transport's transaction connection. */
  readonly sessions: SessionManager;
  /** Aborts waiting for the connection, a full write buffer and the commit's answer. */
  readonly signal: AbortSignal | undefined;
  /** Told once the transaction has ended and its channel is closed (or closing). */
  readonly onEnd: (tx: RabbitMqTransaction) => void;
}

/**
 * A broker transaction on its own channel (see {@link BrokerTransaction}): messages published in
 * it wait at the broker until {@link commit}; {@link rollback}, a lost connection or a failed
 * commit discards them. The channel is closed once the transaction ends. One caller at a time.
 *
 * Failures, and what they say about the messages:
 * - `publish`: an `InvalidMessageError` (bad input, `delayMs`, `ack`, `callback`) or a
 *   `PermanentDeliveryError` (over `maxMessageBytes`, a `CC`/`BCC` header) before anything of
 *   that call is sent (the transaction stays usable); a `TransportError` when the connection is
 *   gone; the transaction is then unusable, roll it back.
 * - `commit`: a `TransportError` `transaction_lost` when the connection was lost before the commit
 *   was sent (nothing committed); `commit_unknown` when it was lost, or no answer came within
 *   `confirmTimeoutMs`, after it was sent (maybe committed); a `MailroomError`
 *   `transaction_refused` when the broker closed the channel for what was published (nothing
 *   committed); a `PermanentDeliveryError` when the commit succeeded but messages no queue is
 *   bound for came back (`basic.return`, with `mandatory`): the others were committed.
 */
export class RabbitMqTransaction implements BrokerTransaction {
  readonly #options: Readonly<ResolvedRabbitMqTransportOptions>;
  readonly #sessions: SessionManager;
  readonly #session: Session;
  readonly #channel: TxChannel;
  readonly #signal: AbortSignal | undefined;
  readonly #onEnd: (tx: RabbitMqTransaction) => void;
  #state: State = 'open';
  /** Messages sent in the transaction, for the errors. */
  #sent = 0;
  #committing: Promise<void> | undefined;
  /** What made the transaction unusable; `commit` throws it again. */
  #failure: Error | undefined;

  private constructor(setup: TransactionSetup, session: Session, channel: TxChannel) {
    this.#options = setup.options;
    this.#sessions = setup.sessions;
    this.#signal = setup.signal;
    this.#onEnd = setup.onEnd;
    this.#session = session;
    this.#channel = channel;
  }

  /**
   * Opens a channel on the transaction connection (connecting when needed, with the transport's
   * reconnect backoff) and puts it in transaction mode. Throws a `TransportError` when the broker
   * cannot be used (the connect error, `blocked`, `closed`, `begin_failed`, or `publish_timeout`
   * when `signal` aborts or the broker does not answer within `confirmTimeoutMs`), a
   * `ConfigError` when the client has no plain channels or no way to send `tx.select`.
   */
  static async begin(setup: TransactionSetup): Promise<RabbitMqTransaction> {
    const { options, sessions, signal } = setup;
    const { safeUrl, confirmTimeoutMs } = options;
    if (sessions.closed) throw closedError(safeUrl);
    if (signal?.aborted) throw beginAbortedError(safeUrl, signal);
    const session = await untilAborted(sessions.open(false), signal);
    if (session === ABORTED) throw beginAbortedError(safeUrl, signal as AbortSignal);
    if (session.state.blockedReason !== undefined) {
      // Writing into a blocked connection only fills buffers the broker does not read.
      throw blockedError(safeUrl, session.state.blockedReason);
    }
    const { connection } = session;
    if (typeof connection.createChannel !== 'function') throw noPlainChannelError(safeUrl);

    const opening = connection.createChannel();
    const raw = await untilAborted(withDeadline(opening, confirmTimeoutMs), signal).catch((err: unknown) => {
      if (err instanceof Deadline) {
        void sessions.drop(session);
        throw beginAbortedError(safeUrl, confirmTimeoutMs);
      }
      throw beginFailedError(safeUrl, 'channel.open', err);
    });
    if (raw === ABORTED) {
      // The channel may still open: close it then, so it does not linger on the connection.
      void opening
        .then((ch) => {
          ch.on('error', noop);
          return ch.close();
        })
        .catch(noop);
      throw beginAbortedError(safeUrl, signal as AbortSignal);
    }
    let methods;
    try {
      methods = txMethods(raw);
    } catch (err) {
      raw.on('error', noop);
      void raw.close().catch(noop);
      throw err;
    }
    const channel = new TxChannel({
      channel: raw,
      methods,
      safeUrl,
      exchange: options.exchange,
      connectionClosed: () => session.state.closed,
      connectionLost: () => session.state.lostReason,
    });
    const selected = await untilAborted(withDeadline(channel.select(), confirmTimeoutMs), signal).catch(
      (err: unknown) => {
        void channel.close();
        if (err instanceof Deadline) {
          void sessions.drop(session);
          throw beginAbortedError(safeUrl, confirmTimeoutMs);
        }
        throw beginFailedError(safeUrl, 'tx.select', err);
      },
    );
    if (selected === ABORTED) {
      void channel.close();
      throw beginAbortedError(safeUrl, signal as AbortSignal);
    }
    return new RabbitMqTransaction(setup, session, channel);
  }

  /** `open` until committed, rolled back, or failed (a commit that did not succeed). */
  get state(): State {
    return this.#state;
  }

  /** Settles once the commit under way has its answer (or gave up); undefined before a commit. */
  get committed(): Promise<void> | undefined {
    return this.#committing;
  }

  /**
   * Sends messages in the transaction; consumers see none of them before the commit. Messages
   * given as `MessageInput` are validated and encoded as `enqueue` does. Throws before sending
   * anything of this call for bad input (`InvalidMessageError`, also for `delayMs`, `ack` and
   * `callback`) or a message the broker is sure to refuse (`PermanentDeliveryError`); throws a
   * `TransportError` when the connection is gone (roll back then).
   */
  async publish(messages: ReadonlyArray<OutboxMessage | MessageInput>): Promise<void> {
    this.#ensureOpen('publish');
    const list = toOutboxMessages(messages);
    for (const message of list) {
      const refused = refuseBeforeSending(message, this.#options.maxMessageBytes);
      if (refused) throw refused.error;
    }
    const { mandatory, confirmTimeoutMs } = this.#options;
    try {
      await this.#channel.publish(list, mandatory, confirmTimeoutMs, this.#signal);
      this.#sent += list.length;
    } catch (err) {
      this.#sent += list.length;
      this.#failure = err instanceof Error ? err : new Error(String(err));
      this.#fail();
      throw err;
    }
  }

  /**
   * `tx.commit`: resolves once the broker answered commit-ok, after which every message published
   * in the transaction has been routed to its queues and the broker has taken responsibility for
   * it (RabbitMQ: "effect visibility, responsibility transfer, durability on commit"). Waits at
   * most `confirmTimeoutMs`. The failures, and what each says about the messages, are listed on
   * the class; after a failed `publish`, it throws that failure again.
   */
  async commit(): Promise<void> {
    if (this.#state === 'failed' && this.#failure !== undefined) throw this.#failure;
    this.#ensureOpen('commit');
    this.#state = 'committing';
    const committing = this.#channel.commit(this.#options.confirmTimeoutMs, this.#signal);
    this.#committing = committing.then(noop, noop);
    let returned: AmqpReturnedMessage[];
    try {
      returned = await committing;
    } catch (err) {
      this.#fail();
      throw err;
    }
    this.#state = 'committed';
    this.#end();
    if (returned.length > 0) throw returnedInTransactionError(this.#options.exchange, returned, this.#sent);
  }

  /**
   * `tx.rollback`, then closes the channel. Resolves also when the connection is gone (the broker
   * discards an open transaction with its channel) or after `confirmTimeoutMs` without an answer
   * (the connection is then dropped, which discards it too). Idempotent; does nothing after a
   * commit.
   */
  async rollback(): Promise<void> {
    if (this.#state !== 'open') return;
    this.#state = 'rolled back';
    await this.#channel.rollback(this.#options.confirmTimeoutMs);
    if (this.#channel.stalled) {
      await this.#sessions.drop(this.#session);
      this.#onEnd(this);
      return;
    }
    await this.#channel.close();
    this.#onEnd(this);
  }

  #ensureOpen(what: string): void {
    if (this.#state !== 'open') throw transactionClosedError(what, this.#state);
  }

  /** The transaction cannot go on: its channel goes (or the connection, when the broker was silent). */
  #fail(): void {
    this.#state = 'failed';
    this.#end();
  }

  /** Closes the channel without waiting (the caller has its answer); drops a silent connection. */
  #end(): void {
    const closing = this.#channel.stalled ? this.#sessions.drop(this.#session) : this.#channel.close();
    void closing.finally(() => this.#onEnd(this));
  }
}
