/**
 * One channel in AMQP transaction mode (`tx.select`), shared by the transport's broker
 * transactions and the consumer's transacted receive: sends messages with backpressure, commits
 * or rolls back under a deadline, and reads what the broker said (channel exception, lost
 * connection, `basic.return`) as "nothing committed", "committed" or "maybe committed".
 *
 * @module
 */
import type { OutboxMessage } from '../../core/types.js';
import type { AmqpChannel, AmqpReturnedMessage, AmqpTxMethods } from './amqp-client.js';
import { unencodableError } from './rabbitmq-errors.js';
import { messageProperties } from './rabbitmq-publish.js';
import { CHANNEL_EXCEPTION_CODES, type ChannelException } from './rabbitmq-session.js';
import {
  commitUnknownError,
  drainTimeoutError,
  transactionLostError,
  transactionRefusedError,
} from './rabbitmq-transaction-errors.js';

/** The broker did not answer in time, or the caller's signal aborted the wait. */
class NoAnswer {
  constructor(readonly why: { timeoutMs: number } | { aborted: AbortSignal }) {}
}

/** `promise`'s value; rejects with {@link NoAnswer} after `timeoutMs` or when `signal` aborts. */
function answer<T>(promise: Promise<T>, timeoutMs: number, signal: AbortSignal | undefined): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const onAbort = (): void => {
      done();
      reject(new NoAnswer({ aborted: signal as AbortSignal }));
    };
    const timer = setTimeout(() => {
      done();
      reject(new NoAnswer({ timeoutMs }));
    }, timeoutMs);
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        done();
        resolve(value);
      },
      (err: unknown) => {
        done();
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/** How long closing a transaction's channel may wait for close-ok. */
const CHANNEL_CLOSE_MS = 2000;

/** What a {@link TxChannel} needs to know besides its channel. */
export interface TxChannelSetup {
  readonly channel: AmqpChannel;
  readonly methods: AmqpTxMethods;
  /** The redacted URL, for messages. */
  readonly safeUrl: string;
  /** Where messages are published, the topic as routing key. */
  readonly exchange: string;
  /** True once the channel's connection has closed (not only the channel). */
  readonly connectionClosed: () => boolean;
  /** The error the connection ended with, when known. */
  readonly connectionLost: () => Error | undefined;
}

/**
 * A channel already in transaction mode. Everything published (and acknowledged) on it since
 * the last commit or rollback is one transaction at the broker.
 */
export class TxChannel {
  readonly #setup: TxChannelSetup;
  /** The channel-level exception the broker closed the channel with, while the connection stayed up. */
  #exception: ChannelException | undefined;
  #lostReason: Error | undefined;
  #closed = false;
  #returned: AmqpReturnedMessage[] = [];
  #published = 0;
  readonly #onClose = new Set<() => void>();
  /**
   * True after the broker did not answer in time (a commit, a rollback, a full write buffer):
   * the owner should drop the connection, which also makes sure the transaction is gone.
   */
  stalled = false;

  constructor(setup: TxChannelSetup) {
    this.#setup = setup;
    const { channel } = setup;
    channel.on('error', (err) => {
      // amqplib emits the broker's channel.close as an 'error' with the reply code before the
      // channel's 'close' and before it fails the RPC waiting for an answer, so commit() can tell
      // "the broker refused this" from "the connection went away".
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'number' && CHANNEL_EXCEPTION_CODES.has(code) && !setup.connectionClosed()) {
        this.#exception ??= { code, error: err };
      } else {
        this.#lostReason ??= err;
      }
    });
    channel.on('close', () => {
      this.#closed = true;
      for (const wake of this.#onClose) wake();
    });
    // RabbitMQ sends the returns of a transaction at commit, before tx.commit-ok: commit() finds
    // them here when its answer comes.
    channel.on('return', (returned) => this.#returned.push(returned));
  }

  /** Messages handed to the client since the last commit or rollback. */
  get published(): number {
    return this.#published;
  }

  /** False once the channel closed, for whatever reason. */
  get open(): boolean {
    return !this.#closed && !this.#setup.connectionClosed();
  }

  /** `tx.select`: puts the channel in transaction mode. */
  select(): Promise<void> {
    return this.#setup.methods.select();
  }

  /**
   * Sends `messages` in the transaction, in order, waiting for the write buffer to drain when the
   * client says it is full (at most `timeoutMs` each time, and until `signal` aborts). Throws:
   * a `PermanentDeliveryError` for a message the client cannot encode; a `TransportError`
   * (`transaction_lost`) or `MailroomError` (`transaction_refused`) when the channel is gone; a
   * `TransportError` (`publish_timeout`) when the buffer does not drain ({@link stalled} set).
   * The transaction is unusable after any of them: roll it back.
   */
  async publish(
    messages: readonly OutboxMessage[],
    mandatory: boolean,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const { channel, exchange } = this.#setup;
    for (const message of messages) {
      if (!this.open) throw this.notCommitted('while publishing in the transaction');
      let writable: boolean;
      try {
        writable = channel.publish(
          exchange,
          message.topic,
          message.payload,
          messageProperties(message, mandatory),
        );
      } catch (err) {
        // A RangeError or TypeError: this message can never be encoded (headers over the 64 KiB
        // table limit…). Anything else: the channel is closing or closed.
        if (err instanceof RangeError || err instanceof TypeError) throw unencodableError(message, err);
        throw this.notCommitted('while publishing in the transaction');
      }
      this.#published++;
      if (!writable) await this.#drained(timeoutMs, signal);
    }
  }

  /**
   * `tx.commit`, waiting at most `timeoutMs` and until `signal` aborts. Resolves with the
   * messages the broker returned as unroutable (committed without them). Throws a
   * `TransportError` `commit_unknown` when the answer did not come (connection lost after the
   * commit was sent, no answer in time: {@link stalled} set), or what {@link notCommitted} says
   * when the commit could not be sent or the broker refused it.
   */
  async commit(timeoutMs: number, signal: AbortSignal | undefined): Promise<AmqpReturnedMessage[]> {
    const published = this.#published;
    this.#returned = [];
    if (!this.open) throw this.notCommitted('before the commit was sent');
    try {
      await answer(this.#setup.methods.commit(), timeoutMs, signal);
    } catch (err) {
      if (err instanceof NoAnswer) {
        this.stalled = true;
        throw commitUnknownError(this.#setup.safeUrl, err.why, published);
      }
      // amqplib refuses to write on a channel it knows is closed (IllegalOperationError): the
      // commit never left. A channel exception in answer to tx.commit means it failed (AMQP),
      // and one caused by an earlier publish closed the channel before the broker saw the commit.
      if ((err as { name?: unknown }).name === 'IllegalOperationError' || this.#exception !== undefined) {
        throw this.notCommitted('before the commit was sent');
      }
      throw commitUnknownError(
        this.#setup.safeUrl,
        { lost: this.#lostReason ?? this.#setup.connectionLost() ?? (err as Error) },
        published,
      );
    } finally {
      this.#published = 0;
    }
    return this.#returned.splice(0);
  }

  /**
   * `tx.rollback`, at most `timeoutMs`. Never throws: a channel or connection that is gone has
   * discarded the transaction already; no answer in time sets {@link stalled}.
   */
  async rollback(timeoutMs: number): Promise<void> {
    this.#published = 0;
    if (!this.open) return;
    try {
      await answer(this.#setup.methods.rollback(), timeoutMs, undefined);
    } catch (err) {
      if (err instanceof NoAnswer) this.stalled = true;
      // Otherwise the channel closed meanwhile: that discards the transaction too.
    }
  }

  /** Closes the channel (an open transaction on it is discarded), at most two seconds. Never rejects. */
  async close(): Promise<void> {
    if (!this.open) return;
    await answer(this.#setup.channel.close(), CHANNEL_CLOSE_MS, undefined).catch(() => {});
  }

  /**
   * Why nothing was committed: the broker's channel exception (a `MailroomError`
   * `transaction_refused`: caused by what was published), or the loss of the channel or
   * connection (a `TransportError` `transaction_lost`).
   */
  notCommitted(stage: string): Error {
    const { safeUrl, exchange } = this.#setup;
    if (this.#exception !== undefined) return transactionRefusedError(safeUrl, exchange, this.#exception);
    return transactionLostError(safeUrl, this.#lostReason ?? this.#setup.connectionLost(), stage);
  }

  #drained(timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
    const { channel, safeUrl } = this.#setup;
    return new Promise<void>((resolve, reject) => {
      const finish = (error?: Error): void => {
        channel.removeListener('drain', onDrain);
        this.#onClose.delete(onDrain);
        signal?.removeEventListener('abort', onAbort);
        clearTimeout(timer);
        if (error) reject(error);
        else resolve();
      };
      // A closed channel ends the wait too; the next publish (or commit) says why.
      const onDrain = (): void => finish();
      const onAbort = (): void => finish(drainTimeoutError(safeUrl, signal as AbortSignal));
      const timer = setTimeout(() => {
        this.stalled = true;
        finish(drainTimeoutError(safeUrl, timeoutMs));
      }, timeoutMs);
      channel.on('drain', onDrain);
      this.#onClose.add(onDrain);
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
