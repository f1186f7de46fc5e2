import type { Clock } from '../core/clock.js';

interface Sleeper {
  at: number;
  resolve: (full: boolean) => void;
}

interface Repeater {
  next: number;
  every: number;
  fn: () => void;
}

/**
 * A {@link Clock} that only moves when a test calls {@link ManualClock.advance}. It records every
 * delay asked of it, so a test can assert on a backoff schedule without waiting for it.
 *
 * @example
 * ```ts
 * const clock = new ManualClock();
 * const relay = new Relay({ store, transport, clock });
 * await clock.advance(30_000); // thirty seconds pass at once
 * assert.deepEqual(clock.sleeps.slice(0, 3), [500, 1000, 2000]);
 * ```
 */
export class ManualClock implements Clock {
  #now = 0;
  #sleepers = new Set<Sleeper>();
  #repeaters = new Set<Repeater>();
  /** Every `sleep` duration asked for, in order. */
  readonly sleeps: number[] = [];

  now(): number {
    return this.#now;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
    this.sleeps.push(ms);
    if (signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const sleeper: Sleeper = {
        at: this.#now + Math.max(0, ms),
        resolve: (full) => {
          this.#sleepers.delete(sleeper);
          signal?.removeEventListener('abort', cut);
          resolve(full);
        },
      };
      const cut = (): void => sleeper.resolve(false);
      signal?.addEventListener('abort', cut, { once: true });
      this.#sleepers.add(sleeper);
    });
  }

  every(ms: number, fn: () => void): () => void {
    const repeater: Repeater = { next: this.#now + ms, every: Math.max(1, ms), fn };
    this.#repeaters.add(repeater);
    return () => this.#repeaters.delete(repeater);
  }

  /** Sleeps that have not ended yet. */
  get pending(): number {
    return this.#sleepers.size;
  }

  /**
   * Moves time forward by `ms` in steps of at most `stepMs`, waking sleepers and repeaters that
   * fall due and letting the promises they resolve run (real I/O started by them gets
   * `settleMs` of real time per step to answer).
   */
  async advance(ms: number, { stepMs = 50, settleMs = 0 } = {}): Promise<void> {
    const end = this.#now + ms;
    while (this.#now < end) {
      this.#now = Math.min(end, this.#now + stepMs);
      for (const repeater of [...this.#repeaters]) {
        while (repeater.next <= this.#now && this.#repeaters.has(repeater)) {
          repeater.next += repeater.every;
          repeater.fn();
        }
      }
      for (const sleeper of [...this.#sleepers]) if (sleeper.at <= this.#now) sleeper.resolve(true);
      await flush(settleMs);
    }
  }
}

async function flush(settleMs: number): Promise<void> {
  if (settleMs > 0) await new Promise((r) => setTimeout(r, settleMs));
  // Let chains of resolved promises run to their next wait.
  for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r));
}
