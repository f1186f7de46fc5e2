import type { Clock } from './clock.js';
import type { Logger } from './logger.js';
import type { AckPort } from './ports.js';
import type { RelayEmit } from './relay-events.js';

/** How often acknowledged and expired records older than the retention are deleted. */
const PRUNE_EVERY_MS = 10 * 60_000;
const PRUNE_BATCH = 1000;

/**
 * The relay's part of acknowledged delivery: every `intervalMs`, resends or expires the messages
 * whose acknowledgement deadline passed (`store.sweepAcks`, which skips rows another relay is
 * sweeping, so every relay can run one), and now and then deletes finished records past their
 * retention. Failures are reported and retried at the next tick; they never stop the relay.
 */
export class AckSweeper {
  readonly #store: AckPort;
  readonly #clock: Clock;
  readonly #emit: RelayEmit;
  readonly #logger: Logger;
  readonly #intervalMs: number;
  readonly #batchSize: number;
  readonly #retentionMs: number;
  readonly #abort = new AbortController();
  #loop: Promise<void> | undefined;
  #lastPrune = -Infinity;

  constructor(options: {
    store: AckPort;
    clock: Clock;
    emit: RelayEmit;
    logger: Logger;
    intervalMs: number;
    batchSize: number;
    retentionMs: number;
  }) {
    this.#store = options.store;
    this.#clock = options.clock;
    this.#emit = options.emit;
    this.#logger = options.logger;
    this.#intervalMs = options.intervalMs;
    this.#batchSize = options.batchSize;
    this.#retentionMs = options.retentionMs;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** Stops after the sweep in progress, if any. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    while (!signal.aborted) {
      await this.sweepOnce();
      await this.#clock.sleep(this.#intervalMs, signal);
    }
  }

  /** One sweep: every passed deadline, a batch at a time, then pruning when it is due. */
  async sweepOnce(): Promise<void> {
    try {
      for (;;) {
        const { resent, expired } = await this.#store.sweepAcks(this.#batchSize);
        if (resent + expired > 0) {
          this.#emit('relay:acks:swept', { resent, expired });
          if (expired > 0)
            this.#logger.warn('messages expired without acknowledgement', {
              event: 'ack_expired',
              count: expired,
            });
        }
        if (resent + expired < this.#batchSize || this.#abort.signal.aborted) break;
      }
      const now = this.#clock.now();
      if (now - this.#lastPrune >= PRUNE_EVERY_MS) {
        this.#lastPrune = now;
        let pruned = 0;
        for (;;) {
          const n = await this.#store.pruneAcks(this.#retentionMs, PRUNE_BATCH);
          pruned += n;
          if (n < PRUNE_BATCH || this.#abort.signal.aborted) break;
        }
        if (pruned > 0)
          this.#logger.info('acknowledgement records pruned', { event: 'ack_pruned', count: pruned });
      }
    } catch (err) {
      this.#emit('relay:error', { phase: 'ack', error: err });
      this.#logger.warn('acknowledgement sweep failed; retrying at the next tick', {
        event: 'ack_sweep_failed',
        error: err,
      });
    }
  }
}
