import type { OutboxStats } from '../core/ports.js';
import type { HistoryPoint } from './api-types.js';

/** Most latencies kept per source and interval: percentiles of a bounded sample. */
const MAX_LATENCIES = 2048;

/** What a source counted since its last point. */
interface Interval {
  delivered: number;
  retried: number;
  dead: number;
  /** Commit → confirm of delivered messages, in ms; a uniform sample once it is full. */
  latencies: number[];
  /** Latencies offered in the interval (for the reservoir sample). */
  seen: number;
}

function emptyInterval(): Interval {
  return { delivered: 0, retried: 0, dead: 0, latencies: [], seen: 0 };
}

/** The `p`-th percentile (0..1) of sorted values, nearest rank. */
function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[rank] as number;
}

/**
 * The samples behind `GET /api/history`: per source, a ring buffer of at most `capacity` points,
 * one per interval. Relay events add to the current interval's counts (delivered, retried, dead,
 * and commit → confirm latencies); {@link HistoryBuffer.record} closes the interval with the
 * source's counts from the store. Memory stays bounded: `capacity` points and at most
 * {@link MAX_LATENCIES} latencies per source.
 */
export class HistoryBuffer {
  readonly capacity: number;
  readonly #points = new Map<string, HistoryPoint[]>();
  readonly #current = new Map<string, Interval>();

  constructor(sources: readonly string[], capacity: number) {
    this.capacity = capacity;
    for (const name of sources) {
      this.#points.set(name, []);
      this.#current.set(name, emptyInterval());
    }
  }

  /** Counts a settled batch of `source`: `latenciesMs` are its delivered messages' commit → confirm. */
  settled(
    source: string,
    counts: { delivered: number; retried: number; dead: number },
    latenciesMs: Iterable<number>,
  ): void {
    const at = this.#current.get(source);
    if (!at) return;
    at.delivered += counts.delivered;
    at.retried += counts.retried;
    at.dead += counts.dead;
    for (const ms of latenciesMs) {
      at.seen++;
      if (at.latencies.length < MAX_LATENCIES) at.latencies.push(ms);
      else {
        // Reservoir sampling: every latency of the interval is kept with the same probability.
        const slot = Math.floor(Math.random() * at.seen);
        if (slot < MAX_LATENCIES) at.latencies[slot] = ms;
      }
    }
  }

  /** Closes `source`'s interval at `time` with its store counts (null: the store did not answer). */
  record(source: string, time: Date, stats: OutboxStats | null): void {
    const points = this.#points.get(source);
    const at = this.#current.get(source);
    if (!points || !at) return;
    this.#current.set(source, emptyInterval());
    const previous = points[points.length - 1];
    const sorted = at.latencies.sort((a, b) => a - b);
    points.push({
      t: time.toISOString(),
      source,
      // A store that did not answer repeats its last counts, so charts do not drop to zero.
      backlog: stats?.backlog ?? previous?.backlog ?? 0,
      inFlight: stats?.inFlight ?? previous?.inFlight ?? 0,
      scheduled: stats?.scheduled ?? previous?.scheduled ?? 0,
      deadLetters: stats?.deadLetters ?? previous?.deadLetters ?? 0,
      oldestAgeMs: stats ? stats.oldestAgeMs : (previous?.oldestAgeMs ?? null),
      delivered: at.delivered,
      retried: at.retried,
      dead: at.dead,
      latencyP50Ms: percentile(sorted, 0.5),
      latencyP95Ms: percentile(sorted, 0.95),
    });
    if (points.length > this.capacity) points.splice(0, points.length - this.capacity);
  }

  /** Every source's points, oldest first (one source's, when named). */
  points(source?: string): HistoryPoint[] {
    if (source !== undefined) return [...(this.#points.get(source) ?? [])];
    return [...this.#points.values()].flat().sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0));
  }
}
