/**
 * Keys: the drain rate and the time of one claim by the shape of the backlog. One relay, in this
 * process so each claim can be timed (see `startTimedRelay`), drains a pre-filled backlog of
 * 256-byte messages: over 1k keys (the base), over as many distinct keys as messages, and a
 * backlog of many distinct keys behind a hot key whose rows are the oldest. Issue 12 part 1: the
 * cost of a claim must not grow with the number of distinct keys.
 */
import {
  benchDb,
  brokerSink,
  claimColumns,
  prefillWith,
  round,
  sleep,
  startTimedRelay,
  type Row,
} from '../lib.js';

export interface KeyedDrainOptions {
  /** The row's name. */
  backlog: string;
  messages: number;
  /** Key of message `i`, in seq order. */
  keyOf: (i: number) => string | null;
  /** Distinct keys, for the row. */
  keys: number;
  /** A drain still running after this long is stopped; its rate is over what it delivered. */
  maxSeconds: number;
  /** Relay options beyond the defaults. */
  relay?: Record<string, unknown>;
}

/** One backlog drained by one in-process relay: rate, per-claim time, and CPU of this process. */
export async function keyedDrain(o: KeyedDrainOptions): Promise<Row> {
  const db = await benchDb();
  const sink = await brokerSink();
  try {
    await prefillWith(db, o.messages, o.keyOf);
    await db.pool.query(`VACUUM ANALYZE "${db.schema}".outbox`);
    const cpu0 = process.cpuUsage();
    const started = await startTimedRelay({
      schema: db.schema,
      exchange: sink.exchange,
      ...(o.relay ? { relay: o.relay } : {}),
    });
    const t = started.timings;
    const deadline = performance.now() + o.maxSeconds * 1000;
    try {
      while (t.delivered < o.messages && performance.now() < deadline) await sleep(20);
    } finally {
      await started.stop();
    }
    const end = t.delivered >= o.messages ? t.lastDeliveredAt : deadline;
    const cpu = process.cpuUsage(cpu0);
    return {
      backlog: o.backlog,
      messages: o.messages,
      keys: o.keys,
      delivered: t.delivered >= o.messages ? 'all' : `${t.delivered} (stopped at ${o.maxSeconds} s)`,
      'msg/s': round(t.delivered / ((end - t.firstClaimAt) / 1000), 0),
      ...claimColumns(t),
      'process CPU s / 10k': round(((cpu.user + cpu.system) / 1e6 / Math.max(1, t.delivered)) * 10_000, 2),
      'in queue': await sink.depth(),
    };
  } finally {
    await sink.close();
    await db.drop();
  }
}

/** The base drain every ratio of `keys` and `hotkey` is against: 1k keys. */
export function baseDrain(quick: boolean): KeyedDrainOptions {
  const keys = 1000;
  return {
    backlog: 'base: 1k keys',
    messages: quick ? 10_000 : 40_000,
    keyOf: (i) => `k${i % keys}`,
    keys,
    maxSeconds: quick ? 30 : 120,
  };
}

/**
 * The base drain, measured after an untimed small one: the first drain of a process also pays
 * for compiling the relay's code, which would lower the base and flatter every ratio.
 */
export async function measureBase(quick: boolean): Promise<Row> {
  await keyedDrain({ ...baseDrain(quick), messages: 2_000 });
  return keyedDrain(baseDrain(quick));
}

/** Adds the `of base` column: each row's rate over the base row's. */
export function ofBase(rows: Row[], base: Row): Row[] {
  const rate = base['msg/s'] as number;
  return rows.map((r) => ({ ...r, 'of base': round((r['msg/s'] as number) / rate, 2) }));
}

/**
 * The `keys` scenario: base, all-distinct keys, many messages per key, and a hot key at the head
 * of a many-key backlog, each drained in turn. Resolves to the rows, the base first.
 */
export async function keysScenario(quick: boolean): Promise<Row[]> {
  const many = quick ? 20_000 : 100_000;
  const behindHot = quick ? 30_000 : 150_000;
  const hot = quick ? 1_000 : 3_000;
  const maxSeconds = quick ? 30 : 90;
  const shapes: KeyedDrainOptions[] = [
    { backlog: 'one message per key', messages: many, keyOf: (i) => `d${i}`, keys: many, maxSeconds },
    { backlog: 'many per key', messages: many, keyOf: (i) => `k${i % 1000}`, keys: 1000, maxSeconds },
    {
      backlog: `hot key (${hot}) ahead of distinct keys`,
      messages: hot + behindHot,
      keyOf: (i) => (i < hot ? 'hot' : `d${i - hot}`),
      keys: behindHot + 1,
      maxSeconds,
    },
  ];
  const rows = [await measureBase(quick)];
  for (const shape of shapes) rows.push(await keyedDrain(shape));
  return ofBase(rows, rows[0] as Row);
}
