import type { AckCounts, OutboxStats, OutboxStore } from '../core/ports.js';
import type { SlotLag, SlotLagReader } from './slot-lag.js';

/** The part of a store the gauges read: `stats()`, and `ackCounts()` when it keeps acks. */
export type StatsStore = Pick<OutboxStore, 'stats'> & { ackCounts?: () => Promise<AckCounts> };

/** Which read failed, the `query` label of `mailroom_stats_errors_total`. */
export type StatsQuery = 'stats' | 'acks' | 'slot';

/** The last values read for one source; the gauges show them at each scrape. */
export interface StatsSnapshot {
  stats: OutboxStats | null;
  acks: AckCounts | null;
  slot: SlotLag | null;
  /** When the last refresh finished (ms since the epoch), or null before the first. */
  refreshedAt: number | null;
  /** How long the last refresh took, in milliseconds. */
  refreshMs: number | null;
}

export interface StatsPollerOptions {
  source: string;
  store: StatsStore;
  slotLag: SlotLagReader | undefined;
  intervalMs: number;
  /** A read failed: counted, never thrown. The snapshot keeps the last good values. */
  onError(query: StatsQuery, error: unknown): void;
}

/** Acknowledgement counts are a count over the ack table: read every this many refreshes. */
export const ACK_COUNTS_EVERY = 4;

/**
 * Refreshes one source's snapshot on a fixed schedule, one refresh at a time: the next starts
 * `intervalMs` after the previous one started, or as soon as it ended when it took longer. A
 * scrape only reads the snapshot, so scrapes never reach the database.
 */
export class StatsPoller {
  readonly snapshot: StatsSnapshot = {
    stats: null,
    acks: null,
    slot: null,
    refreshedAt: null,
    refreshMs: null,
  };
  readonly #options: StatsPollerOptions;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;
  #refreshes = 0;

  constructor(options: StatsPollerOptions) {
    this.#options = options;
  }

  /** Refreshes now, then on the schedule. */
  start(): void {
    this.#schedule(0);
  }

  /** No refresh starts after this; one under way finishes and changes nothing visible. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => void this.#refresh(), delayMs);
    // Metrics never keep a process alive.
    this.#timer.unref();
  }

  async #refresh(): Promise<void> {
    this.#timer = undefined;
    const { store, slotLag, source, onError, intervalMs } = this.#options;
    const started = performance.now();
    const snapshot = this.snapshot;
    const readAcks = typeof store.ackCounts === 'function' && this.#refreshes % ACK_COUNTS_EVERY === 0;
    this.#refreshes++;
    await Promise.all([
      store.stats().then(
        (stats) => {
          snapshot.stats = stats;
        },
        (err: unknown) => onError('stats', err),
      ),
      readAcks
        ? (store.ackCounts as () => Promise<AckCounts>).call(store).then(
            (acks) => {
              snapshot.acks = acks;
            },
            (err: unknown) => onError('acks', err),
          )
        : undefined,
      slotLag
        ? Promise.resolve()
            .then(() => slotLag(source))
            .then(
              (slot) => {
                snapshot.slot = slot;
              },
              (err: unknown) => onError('slot', err),
            )
        : undefined,
    ]);
    const elapsed = performance.now() - started;
    snapshot.refreshMs = elapsed;
    snapshot.refreshedAt = Date.now();
    this.#schedule(Math.max(0, intervalMs - elapsed));
  }
}
