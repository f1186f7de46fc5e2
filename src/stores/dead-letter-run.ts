/**
 * The batching every store's `replayDeadLetters` / `purgeDeadLetters` shares: the batch size
 * checked, a long id list worked through a slice at a time, a `limit` counted down, a cursor
 * carried from batch to batch, `onBatch` told of each batch. The store supplies one batch: find
 * up to `size` dead letters after the cursor and replay or purge them, in its own SQL.
 *
 * @module
 */
import { ConfigError } from '../core/errors/config-error.js';
import type { DeadLetterBatchOptions, DeadLetterFilter, DeadLetterOpResult } from '../core/ports.js';

/** Dead letters per statement of a replay or purge run, unless `batchSize` says otherwise. */
export const DEFAULT_DEAD_LETTER_BATCH = 1000;
/** The largest `batchSize` a run takes. */
export const MAX_DEAD_LETTER_BATCH = 10_000;

/**
 * The run's batch size: `options.batchSize` or the default; a ConfigError naming it when it is
 * not a whole number from 1 to {@link MAX_DEAD_LETTER_BATCH}. Stores call it before their own
 * checks, so a bad batch size is the error reported first.
 */
export function deadLetterBatchSize(options: DeadLetterBatchOptions): number {
  const batchSize = options.batchSize ?? DEFAULT_DEAD_LETTER_BATCH;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > MAX_DEAD_LETTER_BATCH) {
    throw new ConfigError(
      'batchSize',
      `batchSize must be a whole number from 1 to ${MAX_DEAD_LETTER_BATCH}, got ${String(batchSize)}`,
      { value: batchSize },
    );
  }
  return batchSize;
}

/** What one batch of a run is asked to do. */
export interface DeadLetterPage<Cursor> {
  /** The ids to look among: a slice of a long `filter.ids`, or `filter.ids` itself. */
  ids: string[] | undefined;
  /** Where the previous batch of this slice ended; undefined for its first batch. */
  cursor: Cursor | undefined;
  /** Most dead letters to take. */
  size: number;
}

/** What one batch did. */
export interface DeadLetterBatchResult<Cursor> {
  /** Dead letters it found, replayed or purged or not: fewer than `size` ends the slice. */
  found: number;
  /** Where it ended (the last one found), for the next batch. */
  cursor: Cursor | undefined;
  /** Ids it replayed or purged. */
  done: string[];
}

/**
 * Runs a replay or purge as batches of `batch` until the filter's dead letters (up to its
 * `limit`) are done. `sliceIds: false`: the store looks among all of `filter.ids` itself.
 */
export async function runDeadLetterBatches<Cursor>(
  action: 'replay' | 'purge',
  filter: DeadLetterFilter,
  options: DeadLetterBatchOptions,
  batch: (page: DeadLetterPage<Cursor>) => Promise<DeadLetterBatchResult<Cursor>>,
  { sliceIds = true }: { sliceIds?: boolean } = {},
): Promise<DeadLetterOpResult[]> {
  const batchSize = deadLetterBatchSize(options);
  const status = action === 'replay' ? ('replayed' as const) : ('purged' as const);
  // A long id list is worked through a slice at a time; with a limit the oldest matching must
  // be found among all of them, so the whole list goes with every batch.
  const ids = filter.ids;
  const slices =
    sliceIds && ids !== undefined && filter.limit === undefined
      ? Array.from({ length: Math.ceil(ids.length / batchSize) }, (_, n) =>
          ids.slice(n * batchSize, (n + 1) * batchSize),
        )
      : [ids];
  const results: DeadLetterOpResult[] = [];
  let left = filter.limit ?? Infinity;
  for (const slice of slices) {
    if (slice !== undefined && slice.length === 0) continue;
    let cursor: Cursor | undefined;
    while (left > 0) {
      const size = Math.min(batchSize, left);
      const result = await batch({ ids: slice, cursor, size });
      cursor = result.cursor ?? cursor;
      left -= result.found;
      const done = result.done.map((id) => ({ id, status }));
      results.push(...done);
      if (done.length > 0) options.onBatch?.(done);
      if (result.found < size) break;
    }
  }
  return results;
}
