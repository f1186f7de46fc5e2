import {
  isPermanentDeliveryError,
  PermanentDeliveryError,
} from '../../core/errors/permanent-delivery-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import { boolean, custom, func, MAX_TIMER_MS, number, optionsSchema } from '../../core/options-schema.js';
import type { PublishOptions, PublishOutcome, Transport } from '../../core/ports.js';
import { runInTransaction, toOutboxMessages, type BrokerTransaction } from '../../core/broker-transaction.js';
import { ConfigError } from '../../core/errors/config-error.js';
import type { OutboxMessage } from '../../core/types.js';

/**
 * Decides the fate of one message, for tests that need the broker to fail: `undefined` lets it
 * through, `'retry'`, `'permanent'` and `'unavailable'` fail it with a generated error of that
 * kind, an `Error` fails it with that error (`permanent` when it is a
 * {@link PermanentDeliveryError}, `retry` otherwise).
 */
export type MemoryFailure = (
  message: OutboxMessage,
) => undefined | 'retry' | 'permanent' | 'unavailable' | Error;

/** Options of {@link MemoryTransport}; all can also be changed later through the same-named properties. */
export interface MemoryTransportOptions {
  /**
   * Injects failures per message. Failed messages are not recorded.
   *
   * @default undefined (every message succeeds)
   * @example { failWith: (m) => (m.topic === 'audit' ? 'permanent' : undefined) }
   */
  failWith?: MemoryFailure;
  /**
   * Simulates a lost publisher confirm: the message is recorded (the broker has it) but the
   * outcome is `retry`, so the relay publishes it again and a duplicate with the same id appears.
   * `true` applies to every message; a function picks messages.
   *
   * @default false
   */
  loseConfirm?: boolean | ((message: OutboxMessage) => boolean);
  /**
   * Delay before a batch is recorded and confirmed, as one broker round trip (batches are
   * pipelined, so the delay is per batch, not per message). Lets tests observe in-flight work.
   *
   * @default 0
   */
  latencyMs?: number;
  /**
   * How long `close()` waits for batches in flight (see `latencyMs`) before cutting them short;
   * their messages are then not recorded and report `unavailable`, as with a broker connection closed
   * before its confirms arrived.
   *
   * @default 1000
   */
  closeTimeoutMs?: number;
  /**
   * Simulates a broker outage: while true, every publish reports `unavailable` and `probe()`
   * throws a {@link TransportError} with code `unreachable`.
   *
   * @default false
   */
  unavailable?: boolean;
  /**
   * Simulates a broker that takes the connection but never answers: while true, publishes wait
   * until their `signal` aborts (then report `unavailable`) or `close()` cuts them short, and
   * `probe()` waits the same way.
   *
   * @default false
   */
  hang?: boolean;
  /**
   * Broker transactions (`begin()`, `transaction(fn)`): messages published in one are recorded
   * together at commit, or not at all; `failWith` is asked at commit. False makes the transport
   * one without transactions (a relay then dead-letters atomic groups).
   *
   * @default true
   */
  transactions?: boolean;
}

const memoryTransportSchema = optionsSchema<MemoryTransportOptions>()('MemoryTransport', {
  failWith: func<MemoryFailure>('a function (message) => undefined, a failure kind or an Error'),
  loseConfirm: custom(
    'true, false or a function (message) => boolean',
    (v): v is boolean | ((message: OutboxMessage) => boolean) =>
      typeof v === 'boolean' || typeof v === 'function',
    { default: false },
  ),
  latencyMs: number({ min: 0, max: MAX_TIMER_MS, default: 0 }),
  closeTimeoutMs: number({ min: 0, max: MAX_TIMER_MS, default: 1000 }),
  unavailable: boolean({ default: false }),
  hang: boolean({ default: false }),
  transactions: boolean({ default: true }),
});

interface Waiter {
  count: number;
  resolve: (messages: OutboxMessage[]) => void;
}

function copy(message: OutboxMessage): OutboxMessage {
  // Recorded messages must not change when the caller reuses its objects or buffers.
  return {
    ...message,
    payload: Buffer.from(message.payload),
    headers: { ...message.headers },
    createdAt: new Date(message.createdAt.getTime()),
  };
}

/**
 * An in-process transport for unit tests and demos. It records what it "delivers", in publish
 * order, and can be told to fail, be slow or lose confirms.
 *
 * @example
 * ```ts
 * const transport = new MemoryTransport();
 * // … run the relay …
 * const [message] = await transport.waitFor(1);
 * transport.unavailable = true; // the broker is down from now on
 * ```
 */
export class MemoryTransport implements Transport {
  readonly name = 'memory';
  /**
   * Keeps one call's order, and stops a key within a call at its first failed message, as an
   * ordered broker connection does: the relay batches runs of a key's messages.
   */
  readonly ordering = true;

  /** See {@link MemoryTransportOptions.failWith}. */
  failWith: MemoryFailure | undefined;
  /** See {@link MemoryTransportOptions.loseConfirm}. */
  loseConfirm: boolean | ((message: OutboxMessage) => boolean);
  /** See {@link MemoryTransportOptions.latencyMs}. */
  latencyMs: number;
  /** See {@link MemoryTransportOptions.closeTimeoutMs}. */
  closeTimeoutMs: number;
  /** See {@link MemoryTransportOptions.unavailable}. */
  unavailable: boolean;
  /** See {@link MemoryTransportOptions.hang}. */
  hang: boolean;
  /** See {@link MemoryTransportOptions.transactions}. */
  readonly transactions: boolean;
  #commits = 0;

  #recorded: OutboxMessage[] = [];
  #byTopic = new Map<string, OutboxMessage[]>();
  #waiters = new Set<Waiter>();
  #inFlight = new Set<Promise<PublishOutcome[]>>();
  /** Cut short the latency wait of batches in flight (used by close after its deadline). */
  #aborts = new Set<() => void>();
  #closed = false;
  #publishCalls = 0;
  #probeCalls = 0;

  constructor(options: MemoryTransportOptions = {}) {
    const resolved = memoryTransportSchema.resolve(options);
    this.failWith = resolved.failWith;
    this.loseConfirm = resolved.loseConfirm;
    this.latencyMs = resolved.latencyMs;
    this.closeTimeoutMs = resolved.closeTimeoutMs;
    this.unavailable = resolved.unavailable;
    this.hang = resolved.hang;
    this.transactions = resolved.transactions;
  }

  /** Number of transactions committed so far. */
  get commits(): number {
    return this.#commits;
  }

  /**
   * Starts a broker transaction (see {@link MemoryTransportOptions.transactions}). Throws a
   * `TransportError` while the transport is closed or `unavailable`.
   */
  async begin(options: PublishOptions = {}): Promise<BrokerTransaction> {
    if (!this.transactions) {
      throw new ConfigError('transactions', 'this MemoryTransport was made with transactions: false');
    }
    this.#checkOpen();
    const held: OutboxMessage[] = [];
    let state: 'open' | 'committed' | 'rolled back' = 'open';
    const ensureOpen = (what: string) => {
      if (state !== 'open')
        throw new TransportError(
          'transaction_closed',
          `MemoryTransport: ${what} on a transaction already ${state}`,
        );
    };
    return {
      publish: async (messages) => {
        ensureOpen('publish');
        const list = toOutboxMessages(messages);
        this.#checkOpen();
        held.push(...list.map(copy));
      },
      commit: async () => {
        ensureOpen('commit');
        if (this.hang && !(await this.#wait(Infinity, options.signal))) {
          state = 'rolled back';
          throw new TransportError(
            'publish_timeout',
            'MemoryTransport: the commit was abandoned (hang is set); nothing was committed',
          );
        }
        if (this.latencyMs > 0) await this.#wait(this.latencyMs, options.signal);
        this.#checkOpen();
        for (const message of held) {
          const outcome = this.#decide(message);
          if (outcome === undefined) continue;
          state = 'rolled back';
          throw outcome;
        }
        state = 'committed';
        for (const message of held) this.#record(message);
        this.#commits++;
        this.#wake();
      },
      rollback: async () => {
        if (state === 'open') state = 'rolled back';
        held.length = 0;
      },
    };
  }

  /** Runs `fn` in a transaction: commits when it resolves, rolls back and rethrows when it throws. */
  transaction<T>(fn: (tx: BrokerTransaction) => Promise<T>, options: PublishOptions = {}): Promise<T> {
    return runInTransaction(() => this.begin(options), fn);
  }

  #checkOpen(): void {
    if (this.#closed)
      throw new TransportError('closed', 'MemoryTransport is closed; call start() to open it again');
    if (this.unavailable)
      throw new TransportError('unreachable', 'MemoryTransport: unavailable (injected outage)');
  }

  /** What `failWith` says of a message at a commit, as the error the commit throws (or none). */
  #decide(message: OutboxMessage): Error | undefined {
    let failure: ReturnType<MemoryFailure>;
    try {
      failure = this.failWith?.(message);
    } catch (err) {
      failure = err instanceof Error ? err : new Error(String(err));
    }
    if (failure === undefined) return undefined;
    if (failure === 'permanent') {
      return new PermanentDeliveryError(
        `MemoryTransport: injected permanent failure for message ${message.id}`,
      );
    }
    if (failure === 'unavailable') {
      return new TransportError('unreachable', 'MemoryTransport: unavailable (injected outage)');
    }
    if (failure === 'retry') return new Error(`MemoryTransport: injected failure for message ${message.id}`);
    return failure;
  }

  /** Every recorded message, in the order the "broker" accepted them, duplicates included. */
  get messages(): readonly OutboxMessage[] {
    return [...this.#recorded];
  }

  /** Number of `publish` calls so far, empty and closed ones included. */
  get publishCalls(): number {
    return this.#publishCalls;
  }

  /** Number of `probe` calls so far. */
  get probeCalls(): number {
    return this.#probeCalls;
  }

  /** Recorded messages of one topic, in order. */
  messagesFor(topic: string): readonly OutboxMessage[] {
    return [...(this.#byTopic.get(topic) ?? [])];
  }

  /**
   * Resolves with the recorded messages once there are at least `count`; rejects with a
   * message saying how many arrived when `timeoutMs` passes first.
   */
  waitFor(count: number, timeoutMs = 5000): Promise<OutboxMessage[]> {
    if (this.#recorded.length >= count) return Promise.resolve([...this.#recorded]);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        count,
        resolve: (messages) => {
          clearTimeout(timer);
          resolve(messages);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(
          new Error(
            `MemoryTransport.waitFor: expected ${count} messages within ${timeoutMs} ms, got ${this.#recorded.length}`,
          ),
        );
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }

  /** Forgets the recorded messages (not the injected failures). */
  clear(): void {
    this.#recorded = [];
    this.#byTopic.clear();
  }

  /** Idempotent; reopens a closed transport. */
  async start(): Promise<void> {
    this.#closed = false;
  }

  publish(messages: readonly OutboxMessage[], options: PublishOptions = {}): Promise<PublishOutcome[]> {
    this.#publishCalls++;
    const call = this.#publish(messages, options.signal);
    this.#inFlight.add(call);
    void call.finally(() => this.#inFlight.delete(call));
    return call;
  }

  /**
   * Throws while the transport is closed or `unavailable`; waits for `signal` while `hang` is
   * set; resolves otherwise.
   */
  async probe(options: PublishOptions = {}): Promise<void> {
    this.#probeCalls++;
    if (this.#closed) {
      throw new TransportError('closed', 'MemoryTransport is closed; call start() to open it again');
    }
    if (this.hang && !(await this.#wait(Infinity, options.signal))) {
      throw new TransportError('publish_timeout', 'MemoryTransport: no answer (hang is set)');
    }
    if (this.unavailable) {
      throw new TransportError('unreachable', 'MemoryTransport: unavailable (injected outage)');
    }
  }

  /**
   * Refuses new batches (they report `unavailable`), waits up to `closeTimeoutMs` for batches in
   * flight, then cuts the rest short. Idempotent.
   */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#inFlight.size === 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.closeTimeoutMs)));
    await Promise.race([Promise.allSettled([...this.#inFlight]), deadline]);
    clearTimeout(timer);
    for (const abort of this.#aborts) abort();
    await Promise.allSettled([...this.#inFlight]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #publish(messages: readonly OutboxMessage[], signal?: AbortSignal): Promise<PublishOutcome[]> {
    if (messages.length === 0) return [];
    if (this.#closed) {
      // Same contract as the network transports: a closed transport does not resurrect itself.
      const error = new TransportError('closed', 'MemoryTransport is closed; call start() to open it again');
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    if (this.unavailable) {
      const error = new TransportError('unreachable', 'MemoryTransport: unavailable (injected outage)');
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    // Copy before the latency wait, as a broker has the bytes once they are sent.
    const batch = messages.map(copy);
    const wait = this.hang ? Infinity : this.latencyMs;
    if (wait > 0 && !(await this.#wait(wait, signal))) {
      const error = new TransportError(
        signal?.aborted ? 'publish_timeout' : 'confirm_lost',
        signal?.aborted
          ? 'MemoryTransport: the publish was abandoned before the batch was confirmed; it was not delivered'
          : 'MemoryTransport was closed before the batch was confirmed; it was not delivered',
      );
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    // Like a broker that keeps a connection's order (`ordering`): once a message of a key fails
    // (not permanently) in this call, the key's later messages in it are not taken either.
    const stopped = new Map<string, string>();
    const outcomes = batch.map((message): PublishOutcome => {
      const failed = message.key === null ? undefined : stopped.get(message.key);
      if (failed !== undefined) {
        return {
          status: 'retry',
          error: new TransportError(
            'key_stopped',
            `MemoryTransport: message ${message.id} not taken: the earlier message ${failed} of its key failed in the same publish`,
          ),
        };
      }
      const outcome = this.#deliver(message);
      if ((outcome.status === 'retry' || outcome.status === 'unavailable') && message.key !== null) {
        stopped.set(message.key, message.id);
      }
      return outcome;
    });
    this.#wake();
    return outcomes;
  }

  /**
   * Resolves true after `ms` (never, for Infinity), or false when `close` or `signal` cuts the
   * wait short.
   */
  #wait(ms: number, signal?: AbortSignal): Promise<boolean> {
    if (signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const finish = (value: boolean): void => {
        clearTimeout(timer);
        this.#aborts.delete(abort);
        signal?.removeEventListener('abort', abort);
        resolve(value);
      };
      const abort = (): void => finish(false);
      const timer = Number.isFinite(ms) ? setTimeout(() => finish(true), ms) : undefined;
      this.#aborts.add(abort);
      signal?.addEventListener('abort', abort, { once: true });
    });
  }

  #record(message: OutboxMessage): void {
    this.#recorded.push(message);
    const list = this.#byTopic.get(message.topic);
    if (list) list.push(message);
    else this.#byTopic.set(message.topic, [message]);
  }

  #deliver(message: OutboxMessage): PublishOutcome {
    let failure: ReturnType<MemoryFailure>;
    try {
      failure = this.failWith?.(message);
    } catch (err) {
      // A throwing failWith counts as the failure it throws; publish itself must never throw.
      failure = err instanceof Error ? err : new Error(String(err));
    }
    if (failure === 'retry') {
      return {
        status: 'retry',
        error: new TransportError(
          'injected',
          `MemoryTransport: injected retryable failure for message ${message.id}`,
        ),
      };
    }
    if (failure === 'unavailable') {
      return {
        status: 'unavailable',
        error: new TransportError(
          'unreachable',
          `MemoryTransport: injected outage while publishing message ${message.id}`,
        ),
      };
    }
    if (failure === 'permanent') {
      return {
        status: 'permanent',
        error: new PermanentDeliveryError(
          `MemoryTransport: injected permanent failure for message ${message.id}`,
        ),
      };
    }
    if (failure instanceof Error) {
      return isPermanentDeliveryError(failure)
        ? { status: 'permanent', error: failure }
        : { status: 'retry', error: failure };
    }

    this.#record(message);

    const lose = typeof this.loseConfirm === 'function' ? this.loseConfirm(message) : this.loseConfirm;
    if (lose) {
      return {
        status: 'retry',
        error: new TransportError(
          'confirm_lost',
          `MemoryTransport: confirm of message ${message.id} lost (injected); the message was delivered`,
        ),
      };
    }
    return { status: 'ok' };
  }

  #wake(): void {
    for (const waiter of this.#waiters) {
      if (this.#recorded.length >= waiter.count) {
        this.#waiters.delete(waiter);
        waiter.resolve([...this.#recorded]);
      }
    }
  }
}
