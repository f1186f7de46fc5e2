/**
 * Failed handler runs per message id, kept by the consumer across the broker's redeliveries of
 * the message within the process (a redelivery after a lost connection starts where the last
 * copy stopped, instead of granting a poison message a fresh set of attempts).
 *
 * @module
 */

/** What is known of a message's failures. */
export interface AttemptRecord {
  failures: number;
  lastError: Error | undefined;
}

/**
 * Entries kept at most; the oldest go first. Bounded so that a stream of failures that are
 * never resolved (messages taken by another consumer instance) cannot grow memory for ever.
 */
const MAX_ENTRIES = 10_000;

export class AttemptLedger {
  readonly #records = new Map<string, AttemptRecord>();

  /** What is known of `id`: no failures when nothing is. */
  get(id: string): AttemptRecord {
    return this.#records.get(id) ?? { failures: 0, lastError: undefined };
  }

  /**
   * Raises the count of `id` to `failures` when the broker knows of more (a quorum queue's
   * `x-delivery-count`: deliveries of it that ended without an ack, here or in another process).
   */
  seed(id: string, failures: number): void {
    if (failures <= this.get(id).failures) return;
    this.#set(id, { failures, lastError: this.#records.get(id)?.lastError });
  }

  /** Records one more failure of `id`; returns the failures so far. */
  fail(id: string, error: Error): number {
    const failures = this.get(id).failures + 1;
    this.#set(id, { failures, lastError: error });
    return failures;
  }

  /** `id` was handled, found a duplicate or dead-lettered: nothing more to count. */
  forget(id: string): void {
    this.#records.delete(id);
  }

  #set(id: string, record: AttemptRecord): void {
    this.#records.delete(id); // re-inserted last: the Map's order is the age order
    this.#records.set(id, record);
    if (this.#records.size > MAX_ENTRIES) {
      const oldest = this.#records.keys().next().value;
      if (oldest !== undefined) this.#records.delete(oldest);
    }
  }
}
