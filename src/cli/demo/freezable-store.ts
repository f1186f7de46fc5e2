import type {
  AckPort,
  ClaimRequest,
  ClaimedBatch,
  DeadLetterBatchOptions,
  DeadLetterFilter,
  DeadLetterOpResult,
  OutboxStats,
  OutboxStore,
  Settlement,
  SqlExecutor,
  SqlStatement,
  StoreCapabilities,
  Unsubscribe,
} from '../../core/ports.js';
import type { DeadLetter, EncodedMessage } from '../../core/types.js';

/**
 * A store as one relay process sees it, for simulating that process's crash: after
 * `freeze()`, none of its calls return — not the ones in progress, not new ones — and its
 * wake-up subscriptions end, as a dead process's connections do. Rows it had leased stay
 * leased until their lease runs out. Calls already running in the database finish there (a
 * statement the crash interrupts either committed or not), so no database lock is left held.
 */
export class FreezableStore implements OutboxStore {
  readonly #inner: OutboxStore;
  readonly #subscriptions = new Set<Unsubscribe>();
  #frozen = false;

  constructor(inner: OutboxStore) {
    this.#inner = inner;
  }

  get name(): string {
    return this.#inner.name;
  }

  get capabilities(): StoreCapabilities {
    return this.#inner.capabilities;
  }

  get frozen(): boolean {
    return this.#frozen;
  }

  /** From now on, nothing this store was asked returns. */
  async freeze(): Promise<void> {
    this.#frozen = true;
    for (const unsubscribe of [...this.#subscriptions]) await unsubscribe().catch(() => undefined);
    this.#subscriptions.clear();
  }

  async #call<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#frozen) return new Promise<T>(() => undefined);
    const result = await fn();
    if (this.#frozen) return new Promise<T>(() => undefined);
    return result;
  }

  enqueueStatement(messages: readonly EncodedMessage[]): SqlStatement {
    return this.#inner.enqueueStatement(messages);
  }

  executor(tx: unknown): SqlExecutor {
    return this.#inner.executor(tx);
  }

  claim(request: ClaimRequest): Promise<ClaimedBatch> {
    return this.#call(() => this.#inner.claim(request));
  }

  extendLease(leaseToken: string, leaseMs: number): Promise<void> {
    return this.#call(() => this.#inner.extendLease(leaseToken, leaseMs));
  }

  settle(settlement: Settlement): Promise<void> {
    return this.#call(() => this.#inner.settle(settlement));
  }

  nextDueInMs(): Promise<number | null> {
    return this.#call(() => this.#inner.nextDueInMs());
  }

  async subscribe(onWake: () => void, onError: (err: unknown) => void): Promise<Unsubscribe> {
    const subscribe = this.#inner.subscribe?.bind(this.#inner);
    if (!subscribe) throw new Error(`the ${this.name} store cannot notify`);
    const unsubscribe = await this.#call(() =>
      subscribe(() => {
        if (!this.#frozen) onWake();
      }, onError),
    );
    this.#subscriptions.add(unsubscribe);
    return async () => {
      this.#subscriptions.delete(unsubscribe);
      await unsubscribe();
    };
  }

  /** The relay's acknowledgement sweep (resends and expiries) runs through here too. */
  sweepAcks(limit: number): Promise<{ resent: number; expired: number }> {
    return this.#call(() => this.#ackPort().sweepAcks(limit));
  }

  pruneAcks(olderThanMs: number, limit: number): Promise<number> {
    return this.#call(() => this.#ackPort().pruneAcks(olderThanMs, limit));
  }

  #ackPort(): Pick<AckPort, 'sweepAcks' | 'pruneAcks'> {
    const { sweepAcks, pruneAcks } = this.#inner;
    if (!sweepAcks || !pruneAcks) throw new Error(`the ${this.name} store does not track acknowledgements`);
    return { sweepAcks: sweepAcks.bind(this.#inner), pruneAcks: pruneAcks.bind(this.#inner) };
  }

  check(): Promise<void> {
    return this.#call(() => this.#inner.check());
  }

  stats(): Promise<OutboxStats> {
    return this.#call(() => this.#inner.stats());
  }

  listDeadLetters(filter?: DeadLetterFilter): Promise<DeadLetter[]> {
    return this.#call(() => this.#inner.listDeadLetters(filter));
  }

  countDeadLetters(filter?: DeadLetterFilter): Promise<{ count: number; asOf: Date }> {
    return this.#call(() => this.#inner.countDeadLetters(filter));
  }

  replayDeadLetters(
    filter?: DeadLetterFilter,
    options?: DeadLetterBatchOptions,
  ): Promise<DeadLetterOpResult[]> {
    return this.#call(() => this.#inner.replayDeadLetters(filter, options));
  }

  purgeDeadLetters(
    filter?: DeadLetterFilter,
    options?: DeadLetterBatchOptions,
  ): Promise<DeadLetterOpResult[]> {
    return this.#call(() => this.#inner.purgeDeadLetters(filter, options));
  }

  /** The process's connections close; the shared database stays open. */
  async close(): Promise<void> {
    await this.freeze();
  }
}
