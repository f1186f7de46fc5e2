/**
 * Soak: a steady offered load for a long time with autovacuum on (issue 12 part 7). A paced
 * writer commits a batch every 10 ms, one in-process relay drains to RabbitMQ, a consumer empties
 * the queue. Every minute: the outbox's table and index size, live and dead tuples, the last
 * autovacuum, the write and drain rates, commit→confirm p50/p99 and per-claim p50/p99 of that
 * minute. At the end: did sizes plateau over the last 2/3 of the run, and did throughput and p99
 * hold.
 *
 * This machine's server runs with autovacuum off. Per-table settings cannot turn it on then, so
 * the scenario sets it server-wide for the run (`ALTER SYSTEM` + reload, no restart) and puts
 * the previous setting back afterwards, also on SIGINT/SIGTERM.
 */
import amqp from 'amqplib';
import type pg from 'pg';
import {
  AMQP_URL,
  benchDb,
  brokerSink,
  payload256,
  percentile,
  round,
  sleep,
  startTimedRelay,
  type Row,
} from '../lib.js';

const MiB = 2 ** 20;

/**
 * Turns autovacuum on server-wide unless it is on already, and on for every table of `schema`.
 * Resolves to the function that restores the server setting.
 */
async function autovacuumOn(pool: pg.Pool, schema: string): Promise<() => Promise<void>> {
  const tables = await pool.query<{ t: string }>(
    `SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables WHERE schemaname = $1`,
    [schema],
  );
  for (const { t } of tables.rows) await pool.query(`ALTER TABLE ${t} SET (autovacuum_enabled = on)`);
  const setting = await pool.query<{ setting: string; sourcefile: string | null }>(
    `SELECT setting, sourcefile FROM pg_settings WHERE name = 'autovacuum'`,
  );
  const before = setting.rows[0];
  if (before?.setting === 'on') return async () => undefined;
  const wasAltered = before?.sourcefile?.endsWith('postgresql.auto.conf') ?? false;
  await pool.query('ALTER SYSTEM SET autovacuum = on');
  await pool.query('SELECT pg_reload_conf()');
  const restore = async () => {
    await pool.query(wasAltered ? `ALTER SYSTEM SET autovacuum = off` : 'ALTER SYSTEM RESET autovacuum');
    await pool.query('SELECT pg_reload_conf()');
    console.log('autovacuum: server setting restored');
  };
  // The reload is asynchronous: wait until new sessions see it.
  for (let i = 0; ; i++) {
    const now = await pool.query<{ autovacuum: string }>('SHOW autovacuum');
    if (now.rows[0]?.autovacuum === 'on') break;
    if (i === 50) {
      await restore();
      throw new Error(
        'autovacuum is still off 5 s after ALTER SYSTEM SET autovacuum = on and pg_reload_conf(); ' +
          'it is probably set on the server command line: turn it on there to run the soak',
      );
    }
    await sleep(100);
  }
  console.log('autovacuum: on server-wide for this run (was off)');
  return restore;
}

interface Minute {
  written: number;
  delivered: number;
  latencies: number[];
}

/** The `soak` scenario: one row per minute and a summary row. */
export async function soak(quick: boolean): Promise<Row[]> {
  const minutes = Number(process.env.SOAK_MINUTES ?? (quick ? 2 : 30));
  const rate = Number(process.env.SOAK_RATE ?? 2000);
  if (!(minutes >= 1) || !(rate > 0)) {
    throw new Error(`SOAK_MINUTES (${minutes}) must be ≥ 1 and SOAK_RATE (${rate}) > 0`);
  }
  console.log(`soak: ${minutes} min at ${rate} msg/s, 1 relay (defaults), autovacuum on`);
  const db = await benchDb({ poolMax: 4 });
  const sink = await brokerSink();
  const restore = await autovacuumOn(db.pool, db.schema).catch(async (err: unknown) => {
    await sink.close();
    await db.drop();
    throw err;
  });
  const onSignal = (signal: NodeJS.Signals) => {
    void restore().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  // An id's commit time, until its confirm arrives (or its confirm time, if that came first).
  const committedAt = new Map<string, number>();
  const confirmedFirst = new Map<string, number>();
  let minute: Minute = { written: 0, delivered: 0, latencies: [] };
  const consumerConn = await amqp.connect(AMQP_URL);
  const rows: Row[] = [];
  let relay: Awaited<ReturnType<typeof startTimedRelay>> | undefined;
  try {
    const consumer = await consumerConn.createChannel();
    await consumer.consume(sink.queue, () => undefined, { noAck: true });
    relay = await startTimedRelay({
      schema: db.schema,
      exchange: sink.exchange,
      onConfirmed(messages, at) {
        for (const m of messages) {
          const c = committedAt.get(m.id);
          if (c === undefined) {
            confirmedFirst.set(m.id, at);
            continue;
          }
          committedAt.delete(m.id);
          minute.latencies.push(at - c);
          minute.delivered++;
        }
      },
    });

    const t0 = performance.now();
    const end = t0 + minutes * 60_000;
    let written = 0;
    const writer = async () => {
      const client = await db.pool.connect();
      try {
        for (let tick = 1; ; tick++) {
          const now = performance.now();
          if (now >= end) return;
          const n = Math.floor((rate * (now - t0)) / 1000) - written;
          if (n > 0) {
            await client.query('BEGIN');
            const ids = await db.outbox.enqueue(
              client,
              Array.from({ length: n }, (_, j) => ({
                topic: 'bench.soak',
                key: `k${(written + j) % 1000}`,
                payload: payload256(written + j),
              })),
            );
            await client.query('COMMIT');
            const at = performance.now();
            for (const id of ids) {
              const confirmed = confirmedFirst.get(id);
              if (confirmed === undefined) committedAt.set(id, at);
              else {
                confirmedFirst.delete(id);
                minute.latencies.push(confirmed - at);
                minute.delivered++;
              }
            }
            written += n;
            minute.written += n;
          }
          const wait = t0 + tick * 10 - performance.now();
          if (wait > 0) await sleep(wait);
        }
      } finally {
        client.release();
      }
    };
    const writing = writer();

    for (let m = 1; m <= minutes; m++) {
      const due = t0 + m * 60_000;
      // The writer ends a few ms before the last minute does; wait for it rather than the clock.
      await Promise.race([sleep(Math.max(0, due - performance.now())), m === minutes ? writing : never]);
      const done = minute;
      minute = { written: 0, delivered: 0, latencies: [] };
      const claims = relay.timings.claimMs.splice(0).sort((a, b) => a - b);
      const row: Row = {
        minute: m,
        ...rates(done, 60),
        'claim p50 ms': round(percentile(claims, 50)),
        'claim p99 ms': round(percentile(claims, 99)),
        ...(await tableStats(db.pool, db.schema)),
        backlog: committedAt.size,
      };
      console.log(`soak ${JSON.stringify(row)}`);
      rows.push(row);
    }
    await writing;
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await relay?.stop();
    await consumerConn.close().catch(() => undefined);
    await restore();
    await sink.close();
    await db.drop();
  }
  return [...rows, verdict(rows, rate)];
}

const never = new Promise<never>(() => undefined);

function rates(m: Minute, seconds: number): Row {
  const sorted = m.latencies.sort((a, b) => a - b);
  return {
    'write msg/s': round(m.written / seconds, 0),
    'drain msg/s': round(m.delivered / seconds, 0),
    'confirm p50 ms': round(percentile(sorted, 50)),
    'p99 ms': round(percentile(sorted, 99)),
    'max ms': round(sorted.at(-1) ?? NaN),
  };
}

async function tableStats(pool: pg.Pool, schema: string): Promise<Row> {
  const r = await pool.query(
    `SELECT pg_table_size(s.relid) AS table_bytes, pg_indexes_size(s.relid) AS index_bytes,
            s.n_live_tup, s.n_dead_tup, s.autovacuum_count, s.last_autovacuum
       FROM pg_stat_user_tables s WHERE s.schemaname = $1 AND s.relname = 'outbox'`,
    [schema],
  );
  const s = r.rows[0];
  return {
    'table MiB': round(Number(s.table_bytes) / MiB, 2),
    'index MiB': round(Number(s.index_bytes) / MiB, 2),
    live: Number(s.n_live_tup),
    dead: Number(s.n_dead_tup),
    autovacuums: Number(s.autovacuum_count),
    'last autovacuum': s.last_autovacuum ? (s.last_autovacuum as Date).toISOString().slice(11, 19) : '-',
  };
}

/**
 * Over the last 2/3 of the run: sizes plateaued when neither the table nor the indexes grew
 * past the size at its start by more than 10% (and 1 MiB); throughput held when every minute
 * drained at least 95% of the offered rate; p99 held when no minute's p99 exceeded twice the
 * median of the per-minute p99s.
 */
function verdict(rows: Row[], rate: number): Row {
  const from = Math.floor(rows.length / 3);
  const late = rows.slice(from);
  const first = rows[from] as Row;
  const grew = (col: string) => {
    const start = first[col] as number;
    const max = Math.max(...late.map((r) => r[col] as number));
    return max > start * 1.1 && max > start + 1 ? `grew ${start} → ${max}` : 'plateau';
  };
  const p99s = rows.map((r) => r['p99 ms'] as number).sort((a, b) => a - b);
  const median = percentile(p99s, 50);
  const slowest = Math.min(...late.map((r) => r['drain msg/s'] as number));
  const worstP99 = Math.max(...late.map((r) => r['p99 ms'] as number));
  return {
    minute: `${from + 1}–${rows.length}`,
    'drain msg/s': slowest >= rate * 0.95 ? `held (min ${slowest})` : `fell to ${slowest}`,
    'p99 ms': worstP99 <= 2 * median ? `held (max ${worstP99})` : `rose to ${worstP99} (median ${median})`,
    'table MiB': grew('table MiB'),
    'index MiB': grew('index MiB'),
  };
}
