import type { OutboxStats, StatsCount } from '../../core/ports.js';
import type { PgQueryResult } from './postgres-driver.js';
import type { PostgresSql } from './postgres-sql.js';

/**
 * Up to this many rows a count is exact. Beyond, counting costs a read of every row, and
 * `stats()` runs every few seconds (metrics scrapes, `status`): the store reports an estimate
 * instead, and says so.
 */
export const EXACT_COUNT_LIMIT = 100_000;

/** Rows a per-topic estimate reads, about: the block sample is sized to this. */
export const TOPIC_SAMPLE_ROWS = 20_000;

/** Topics listed, the busiest first. */
export const MAX_TOPICS = 50;

export type { StatsCount };

/**
 * {@link OutboxStats} as the PostgreSQL store reports them: exact while the tables are small,
 * estimated when they are big, and saying which.
 */
export interface PostgresStats extends OutboxStats {
  /** True when any count is an estimate: `estimated` says which. */
  approximate: boolean;
  /**
   * The counts that are estimates. `backlog` and `deadLetters`: from PostgreSQL's statistics
   * (live rows, or the planner's rows per page times the pages). `inFlight` and `scheduled`:
   * at least this many (counting stopped at {@link EXACT_COUNT_LIMIT}). `topics`: scaled up
   * from a block sample, so a rare topic can be missing.
   */
  estimated: StatsCount[];
  /** True when more topics exist than the {@link MAX_TOPICS} busiest listed. */
  topicsTruncated: boolean;
}

type Query = (sql: string, params?: unknown[]) => Promise<PgQueryResult>;

interface TableSize {
  /** Best estimate of the rows in the table. */
  estimate: number;
  /** True when the estimate is small enough that counting is worth it (and bounded anyway). */
  count: boolean;
}

function tableSize(row: Record<string, unknown> | undefined): TableSize {
  const live = Number(row?.live ?? 0);
  const reltuples = Number(row?.reltuples ?? -1);
  const relpages = Number(row?.relpages ?? 0);
  const pages = Number(row?.pages ?? 0);
  // The planner's own estimate: density from the last VACUUM/ANALYZE, times today's pages. It
  // survives a crash, which resets the live-row count to 0.
  const planner = reltuples >= 0 && relpages > 0 ? (reltuples / relpages) * pages : 0;
  // The live-row count follows every commit; a small one is checked by a (bounded) count, so
  // neither a crash's reset nor a stale plan estimate can pass a big table off as small.
  return { estimate: Math.max(live, planner), count: live < EXACT_COUNT_LIMIT };
}

/** Runs the statements of {@link PostgresStore.stats}: a catalog read, bounded counts, topics. */
export async function readStats(query: Query, sql: PostgresSql): Promise<PostgresStats> {
  const sizes = await query(sql.statsEstimates);
  const byTable = new Map(sizes.rows.map((r) => [String(r.table), r]));
  const outbox = tableSize(byTable.get('outbox'));
  const dead = tableSize(byTable.get('dead_letter'));
  const res = await query(sql.statsCounts(outbox.count, dead.count), [EXACT_COUNT_LIMIT + 1]);
  const row = res.rows[0] ?? {};
  const estimated = new Set<StatsCount>();

  /** A bounded count, or the estimate when there was none or it reached the bound. */
  const sized = (field: StatsCount, counted: unknown, size: TableSize): number => {
    if (counted !== null && counted !== undefined && Number(counted) <= EXACT_COUNT_LIMIT) {
      return Number(counted);
    }
    estimated.add(field);
    return Math.round(Math.max(size.estimate, counted === null ? 0 : Number(counted)));
  };
  /** A bounded count over an index: exact, or a lower bound. */
  const atLeast = (field: StatsCount, counted: unknown): number => {
    const n = Number(counted ?? 0);
    if (n > EXACT_COUNT_LIMIT) estimated.add(field);
    return Math.min(n, EXACT_COUNT_LIMIT);
  };

  const oldest = row.oldest_age_ms;
  // No head row means no row at all: exact, whatever the statistics still say.
  const backlog = oldest === null || oldest === undefined ? 0 : sized('backlog', row.backlog, outbox);
  const deadLetters = sized('deadLetters', row.dead_letters, dead);
  const inFlight = atLeast('inFlight', row.in_flight);
  const scheduled = atLeast('scheduled', row.scheduled);

  // Per topic: exact for a table that was counted exactly, else from a sample of about
  // TOPIC_SAMPLE_ROWS rows, scaled to the table's count.
  const sampleOutbox = estimated.has('backlog');
  const sampleDead = estimated.has('deadLetters');
  const percent = (rows: number) => Math.min(100, (100 * TOPIC_SAMPLE_ROWS) / Math.max(rows, 1));
  const params = [...(sampleOutbox ? [percent(backlog)] : []), ...(sampleDead ? [percent(deadLetters)] : [])];
  const topicRows = (await query(sql.statsTopics(sampleOutbox, sampleDead), params)).rows;
  if (sampleOutbox || sampleDead) estimated.add('topics');
  const sampled = { o: 0, d: 0 };
  for (const r of topicRows) sampled[r.side === 'o' ? 'o' : 'd'] += Number(r.n);
  const scale = {
    o: sampleOutbox && sampled.o > 0 ? backlog / sampled.o : 1,
    d: sampleDead && sampled.d > 0 ? deadLetters / sampled.d : 1,
  };
  const topics = new Map<string, { topic: string; backlog: number; deadLetters: number }>();
  for (const r of topicRows) {
    const topic = String(r.topic);
    const entry = topics.get(topic) ?? { topic, backlog: 0, deadLetters: 0 };
    if (r.side === 'o') entry.backlog += Math.round(Number(r.n) * scale.o);
    else entry.deadLetters += Math.round(Number(r.n) * scale.d);
    topics.set(topic, entry);
  }
  const ranked = [...topics.values()].sort(
    (a, b) =>
      b.backlog - a.backlog ||
      b.deadLetters - a.deadLetters ||
      (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0),
  );

  return {
    backlog,
    inFlight,
    scheduled,
    oldestAgeMs: oldest === null || oldest === undefined ? null : Math.max(0, Number(oldest)),
    deadLetters,
    topics: ranked.slice(0, MAX_TOPICS),
    approximate: estimated.size > 0,
    estimated: (['backlog', 'inFlight', 'scheduled', 'deadLetters', 'topics'] as const).filter((f) =>
      estimated.has(f),
    ),
    topicsTruncated: ranked.length > MAX_TOPICS,
  };
}
