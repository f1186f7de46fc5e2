import type { Clock } from './clock.js';

/** What one source got from a {@link BatchBudget} so far. */
export interface BudgetUsage {
  /** Slots granted (claims made) since the start. */
  granted: number;
  /** Slots held now: batches between claim and settle, or a claim under way. */
  held: number;
  /** True while the source waits for a slot. */
  waiting: boolean;
  /** Total time spent waiting for slots, in milliseconds. */
  waitedMs: number;
  /** The longest single wait for a slot, in milliseconds. */
  longestWaitMs: number;
}

interface Waiter {
  since: number;
  grant: (granted: boolean) => void;
}

/**
 * The batches in flight that a {@link RelayGroup}'s sources share: `limit` slots, handed out
 * round-robin over the sources that wait for one. A slot is taken before a claim and given back
 * when the claim finds nothing, fails, or its batch is settled.
 *
 * Why round-robin over sources rather than first come, first served: a busy source asks again
 * the moment each of its batches settles, so under FIFO its claims would queue up ahead of a
 * quiet source as often as they like. Round-robin gives each waiting source one slot per turn,
 * so a quiet source waits for at most one slot to free up per busy source before its turn —
 * however deep the busy sources' backlogs are.
 */
export class BatchBudget {
  readonly limit: number;
  readonly #clock: Clock;
  /** Waiters per source, in arrival order; sources in the order they were first seen. */
  readonly #queues = new Map<string, Waiter[]>();
  readonly #usage = new Map<string, BudgetUsage>();
  /** Index into the sources (insertion order of #queues) where the next turn starts. */
  #turn = 0;
  #held = 0;
  #closed = false;

  constructor(limit: number, clock: Clock, sources: readonly string[]) {
    this.limit = limit;
    this.#clock = clock;
    for (const name of sources) {
      this.#queues.set(name, []);
      this.#usage.set(name, { granted: 0, held: 0, waiting: false, waitedMs: 0, longestWaitMs: 0 });
    }
  }

  /** Slots held by all sources now. */
  get held(): number {
    return this.#held;
  }

  /** What `source` got so far (a copy). */
  usage(source: string): BudgetUsage {
    return { ...(this.#usage.get(source) as BudgetUsage) };
  }

  /**
   * Waits for a slot for `source`. Resolves true with the slot taken, or false when the budget
   * was closed (the group is stopping; no slot is held then).
   */
  acquire(source: string): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    const queue = this.#queues.get(source) as Waiter[];
    const usage = this.#usage.get(source) as BudgetUsage;
    if (this.#held < this.limit && this.#nobodyWaits()) {
      this.#take(source, 0);
      return Promise.resolve(true);
    }
    usage.waiting = true;
    return new Promise<boolean>((resolve) => {
      queue.push({ since: this.#clock.now(), grant: resolve });
    });
  }

  /** Gives back a slot of `source` and hands the free slot to the next source in turn. */
  release(source: string): void {
    const usage = this.#usage.get(source) as BudgetUsage;
    if (usage.held === 0) return;
    usage.held--;
    this.#held--;
    this.#dispatch();
  }

  /** Ends every wait with false and refuses new ones: the group is stopping. */
  close(): void {
    this.#closed = true;
    for (const [source, queue] of this.#queues) {
      (this.#usage.get(source) as BudgetUsage).waiting = false;
      for (const waiter of queue.splice(0)) waiter.grant(false);
    }
  }

  #nobodyWaits(): boolean {
    for (const queue of this.#queues.values()) if (queue.length > 0) return false;
    return true;
  }

  #take(source: string, waitedMs: number): void {
    const usage = this.#usage.get(source) as BudgetUsage;
    usage.held++;
    usage.granted++;
    usage.waitedMs += waitedMs;
    usage.longestWaitMs = Math.max(usage.longestWaitMs, waitedMs);
    this.#held++;
  }

  /** Free slots go to waiting sources one at a time, each source's turn after the last one served. */
  #dispatch(): void {
    const names = [...this.#queues.keys()];
    while (this.#held < this.limit && !this.#closed) {
      let served = false;
      for (let i = 0; i < names.length; i++) {
        const index = (this.#turn + i) % names.length;
        const source = names[index] as string;
        const queue = this.#queues.get(source) as Waiter[];
        const waiter = queue.shift();
        if (!waiter) continue;
        this.#turn = (index + 1) % names.length;
        const usage = this.#usage.get(source) as BudgetUsage;
        usage.waiting = queue.length > 0;
        this.#take(source, Math.max(0, this.#clock.now() - waiter.since));
        waiter.grant(true);
        served = true;
        break;
      }
      if (!served) return;
    }
  }
}
