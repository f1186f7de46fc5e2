import type { Clock } from './clock.js';
import type { OutboxStore } from './ports.js';

/**
 * Keeps a claim's lease alive from the claim until its batch is settled: every `leaseMs / 3` it
 * pushes the lease out again. Stopping it (settled, or abandoned by `stop()`) lets the lease run
 * out, after which another relay takes the messages.
 *
 * It also knows, on the local clock, until when the lease is surely held: the send time of the
 * last extension that succeeded plus `leaseMs` (the database may have stamped a later expiry,
 * never an earlier one).
 */
export class LeaseHeartbeat {
  readonly #store: OutboxStore;
  readonly #leaseToken: string;
  readonly #leaseMs: number;
  readonly #clock: Clock;
  readonly #onError: (err: unknown) => void;
  #cancel: (() => void) | undefined;
  #extending = false;
  #heldUntil: number;

  constructor(
    store: OutboxStore,
    leaseToken: string,
    options: { leaseMs: number; clock: Clock; claimedAt: number; onError: (err: unknown) => void },
  ) {
    this.#store = store;
    this.#leaseToken = leaseToken;
    this.#leaseMs = options.leaseMs;
    this.#clock = options.clock;
    this.#onError = options.onError;
    this.#heldUntil = options.claimedAt + options.leaseMs;
  }

  /** Local-clock time until which the lease is surely still ours. */
  get heldUntil(): number {
    return this.#heldUntil;
  }

  get running(): boolean {
    return this.#cancel !== undefined;
  }

  start(): void {
    if (this.#cancel) return;
    this.#cancel = this.#clock.every(Math.max(250, Math.floor(this.#leaseMs / 3)), () => this.#beat());
  }

  /** Idempotent. An extension already on its way may still land; it only moves the expiry out. */
  stop(): void {
    this.#cancel?.();
    this.#cancel = undefined;
  }

  #beat(): void {
    // One extension at a time: when the database is slow, piling them up helps nobody.
    if (this.#extending) return;
    this.#extending = true;
    const sentAt = this.#clock.now();
    this.#store.extendLease(this.#leaseToken, this.#leaseMs).then(
      () => {
        this.#extending = false;
        this.#heldUntil = Math.max(this.#heldUntil, sentAt + this.#leaseMs);
      },
      (err: unknown) => {
        this.#extending = false;
        this.#onError(err);
      },
    );
  }
}
