/**
 * Where the consumer's handlers wait: a fixed number of slots (`concurrency`), and a lane per key
 * (`serialByKey`), so that a key's messages run one after the other in arrival order while other
 * keys use the free slots.
 *
 * A task holds a slot only while its handler runs; it keeps its place in its lane while it
 * waits to be retried, so the key's next message cannot overtake it, but other keys can run.
 *
 * @module
 */

export class HandlerLanes {
  readonly #limit: number;
  #busy = 0;
  readonly #waiting: Array<() => void> = [];
  /** The last task of each key that has one queued or running; removed once it is done. */
  readonly #tails = new Map<string, Promise<void>>();

  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Handlers running now. */
  get busy(): number {
    return this.#busy;
  }

  /** Keys with a task queued or running. */
  get keys(): number {
    return this.#tails.size;
  }

  /**
   * Runs `task` once every task queued before it for the same `key` has finished; at once when
   * `key` is null. The returned promise never rejects (a task reports its own failures).
   */
  run(key: string | null, task: () => Promise<void>): Promise<void> {
    if (key === null) return task().catch(() => {});
    const previous = this.#tails.get(key);
    const tail = (previous ? previous.then(task) : task()).catch(() => {});
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return tail;
  }

  /** Resolves when a slot is free, first come first served; pair with {@link release}. */
  acquire(): Promise<void> {
    if (this.#busy < this.#limit) {
      this.#busy++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  /** Gives the slot to the next waiting task, or frees it. */
  release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#busy--;
  }
}
