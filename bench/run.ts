/**
 * Benchmarks. `npm run bench -- <scenario>`, scenario one of:
 *   ceiling   raw limits: broker clients publishing with confirms, PostgreSQL claim-and-delete
 *   drain     100k-message backlog (1k keys) relayed by 1, 2, 4 relay processes, per wake-up mode:
 *             prefilled before the relays start (notify, poll), and written live while they run
 *             (notify, poll, replication, and tableless: replication relays, writers emitting
 *             logical messages instead of rows), modes alternating run by run; replication ÷
 *             notify and tableless ÷ notify. BENCH_DRAIN_RUNS=live-notify,live-tableless,… runs
 *             only the named ones (<prefilled|live>-<mode>)
 *   latency   commit→broker and commit→consumer latency at 100, 1000, 5000 msg/s, notify,
 *             replication and tableless alternating at each rate; poll at 1000
 *   writer    application tx/s with 8 and 32 writers, with and without Mailroom, with a row or
 *             table-less (a Node client, then pgbench for the database's own cost)
 *   peers     the same drain and latency by other designs, side by side: pg-transactional-outbox
 *             (polling and logical-replication listeners) and a naive one-at-a-time poller
 *   keys      one in-process relay (each claim timed) draining 40k messages over 1k keys (the base),
 *             100k over 100k distinct keys, 100k over 1k keys, and 150k distinct keys behind a
 *             3k-message hot key; rate, ratio to the base, per-claim p50/p99/max
 *   hotkey    20k messages on a single key beside the base, at default settings (and with
 *             --max-per-key 1 when the relay has that option)
 *   ack       acknowledged delivery: drains of plain, ack and ack+callback messages side by side
 *             (alternating, two rounds), applyAck and sweep rates
 *   logtail   where a log-tailing relay's time goes: one in-process relay drains a backlog written
 *             while it runs, notify and replication alternating, every claim and claimIds timed,
 *             walsender and PostgreSQL CPU per 10k messages; and the stages of the latency at
 *             1,000 msg/s (commit → claim/claimIds start → its end → broker confirm)
 *   rss       peak relay memory while draining 1M messages
 *   soak      SOAK_MINUTES (30) at SOAK_RATE (2000) msg/s with autovacuum on: table and index
 *             size, dead tuples, rates and commit→confirm p50/p99 every minute
 *   all       ceiling, drain, latency, writer, peers, keys, hotkey (not rss, not soak)
 * BENCH_QUICK=1 makes every scenario smaller. BENCH_ROUNDS=n repeats drain, latency and the Node
 * part of writer n times (even rounds run the modes in reverse order, so a drift in the machine
 * hits them alike; writer gives medians).
 * Drains that outlast their cap (keys, hotkey) stop there and report the rate over what they
 * delivered. Replication and table-less runs use a slot of their own (`mr_bench_…`), dropped
 * with its publication afterwards, also on failure and on SIGINT/SIGTERM; slots an interrupted
 * run left behind (not read by anyone) are dropped at the next start.
 * Prints a table per scenario and writes bench/results/<scenario>-<time>.json with machine info.
 * Figures from a 2-core shared machine are noisy: compare ratios from one run, not absolutes.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ackScenario } from './scenarios/ack.js';
import { ceiling } from './scenarios/ceiling.js';
import { drainOnce } from './scenarios/drain.js';
import { hotkeyScenario } from './scenarios/hotkey.js';
import { keysScenario } from './scenarios/keys.js';
import { latencyOnce } from './scenarios/latency.js';
import { logtailScenario, logtailStages } from './scenarios/logtail.js';
import { naivePollerDrain } from './scenarios/naive-poller.js';
import { ptoDrain, ptoLatency } from './scenarios/pg-transactional-outbox.js';
import { soak } from './scenarios/soak.js';
import { writerImpact } from './scenarios/writer-impact.js';
import { writerPgbench } from './scenarios/writer-pgbench.js';
import {
  DATABASE_URL,
  dropLeftoverBenchSlots,
  machineInfo,
  round,
  runInterruptCleanups,
  type Mode,
  type Row,
} from './lib.js';

const SCENARIOS = [
  'ceiling',
  'drain',
  'latency',
  'writer',
  'peers',
  'keys',
  'hotkey',
  'ack',
  'logtail',
  'rss',
  'soak',
  'all',
] as const;
type Scenario = (typeof SCENARIOS)[number];

function table(rows: Row[]): string {
  if (rows.length === 0) return '(no rows)';
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(width[i] as number)).join('  ');
  return [
    line(cols),
    line(width.map((w) => '-'.repeat(w))),
    ...rows.map((r) => line(cols.map((c) => String(r[c] ?? '')))),
  ].join('\n');
}

async function versions() {
  const info = machineInfo();
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
  info.postgres = String((await pool.query('SHOW server_version')).rows[0].server_version);
  await pool.end();
  try {
    info.rabbitmq = execFileSync('rabbitmqctl', ['-q', 'version'], { encoding: 'utf8' }).trim();
  } catch {
    info.rabbitmq = 'unknown';
  }
  return info;
}

/**
 * Lets the previous scenario's aftermath settle before the next one starts: flush PostgreSQL's
 * dirty pages now rather than in a checkpoint mid-measurement, and give RabbitMQ a moment to
 * finish deleting the last run's queue.
 */
async function quiet(): Promise<void> {
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
  try {
    await pool.query('CHECKPOINT');
  } catch {
    // CHECKPOINT needs superuser or pg_checkpoint; without it, only the pause below
  } finally {
    await pool.end();
  }
  await new Promise((r) => setTimeout(r, 3000));
}

/**
 * Refuses to measure while another session holds back PostgreSQL's xmin horizon (an open
 * transaction, or a statement running for minutes): then no dead row version can be removed or
 * skipped, every claim reads through all the dead versions since, and every figure is wrong.
 * Found the hard way: a forgotten `psql` holding a lock for an hour made a 2,000 msg/s soak fall
 * behind within two minutes (claim p50 68 ms; 2 ms without it). BENCH_ALLOW_OLD_XMIN=1 runs anyway.
 */
async function checkHorizon(): Promise<void> {
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
  try {
    const res = await pool.query<{ pid: number; age: number; state: string; query: string }>(
      `SELECT pid, extract(epoch FROM now() - coalesce(xact_start, query_start))::int AS age, state,
              left(regexp_replace(query, '\\s+', ' ', 'g'), 100) AS query
       FROM pg_stat_activity
       WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid()
         AND coalesce(xact_start, query_start) < now() - interval '60 seconds'`,
    );
    if (res.rows.length === 0) return;
    const list = res.rows.map((r) => `  pid ${r.pid}, ${r.age} s, ${r.state}: ${r.query}`).join('\n');
    const msg =
      `these sessions hold back PostgreSQL's xmin horizon (a transaction or statement older than 60 s), ` +
      `so dead rows pile up and every claim slows down:\n${list}\nend them (SELECT pg_terminate_backend(pid)) ` +
      'or set BENCH_ALLOW_OLD_XMIN=1 to measure anyway';
    if (process.env.BENCH_ALLOW_OLD_XMIN === '1') console.warn(`warning: ${msg}\n`);
    else throw new Error(msg);
  } finally {
    await pool.end();
  }
}

async function main() {
  const arg = (process.argv[2] ?? 'all') as Scenario;
  if (!SCENARIOS.includes(arg)) {
    console.error(`unknown scenario ${JSON.stringify(arg)}; one of ${SCENARIOS.join(', ')}`);
    process.exit(2);
  }
  const quick = process.env.BENCH_QUICK === '1';
  // An interrupted run still stops its relays and drops its replication slots and publications:
  // a slot left behind keeps WAL on the server forever.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      console.error(`\n${signal}: stopping relays, dropping bench slots`);
      void runInterruptCleanups().finally(() => process.exit(130));
    });
  }
  await checkHorizon();
  const leftover = await dropLeftoverBenchSlots();
  if (leftover.length > 0) {
    console.warn(`dropped replication slots an interrupted bench left behind: ${leftover.join(', ')}\n`);
  }
  const machine = await versions();
  console.log(
    `machine: ${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, Node ${machine.node}, PostgreSQL ${machine.postgres}, RabbitMQ ${machine.rabbitmq}`,
  );
  console.log('(2 shared cores: noisy; compare the ratios measured in this run)\n');
  const results: Record<string, unknown> = { machine };
  const run = async (name: string, fn: () => Promise<Row[]>) => {
    await quiet();
    const t0 = performance.now();
    const rows = await fn();
    console.log(`== ${name} (${round((performance.now() - t0) / 1000, 0)} s)\n${table(rows)}\n`);
    results[name] = rows;
    return rows;
  };
  let ceilingRate = NaN;
  if (arg === 'ceiling' || arg === 'all' || arg === 'drain') {
    await run('ceiling', async () => {
      const c = await ceiling();
      ceilingRate = Math.min(c.ceilings.rabbitmq, c.ceilings.postgres);
      results.ceilings = c.ceilings;
      return c.rows;
    });
  }
  const drainMessages = quick ? 20_000 : 100_000;
  const rounds = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 1));
  /** `items` in order on odd rounds, reversed on even ones. */
  const inTurn = <T>(items: readonly T[], r: number): T[] =>
    r % 2 === 1 ? [...items] : [...items].reverse();
  /** Beside a replication or table-less row: its ratio to the notify row of the same round. */
  const ratio = (a: Row | undefined, b: Row | undefined, column: string) =>
    a && b ? round((a[column] as number) / (b[column] as number), 2) : '';
  let ourDrain: Row | undefined;
  if (arg === 'drain' || arg === 'all') {
    const rows = await run('drain', async () => {
      const rows: Row[] = [];
      const all: Array<{ variant: 'prefilled' | 'live'; wakeup: Mode }> = [
        { variant: 'prefilled', wakeup: 'notify' },
        { variant: 'prefilled', wakeup: 'poll' },
        { variant: 'live', wakeup: 'notify' },
        { variant: 'live', wakeup: 'poll' },
        { variant: 'live', wakeup: 'replication' },
        { variant: 'live', wakeup: 'tableless' },
      ];
      // BENCH_DRAIN_RUNS=live-notify,live-tableless: fewer drains per round, for more rounds.
      const only = process.env.BENCH_DRAIN_RUNS?.split(',').map((x) => x.trim());
      const runs = only ? all.filter((x) => only.includes(`${x.variant}-${x.wakeup}`)) : all;
      if (runs.length === 0) {
        throw new Error(
          `BENCH_DRAIN_RUNS names none of ${all.map((x) => `${x.variant}-${x.wakeup}`).join(', ')}`,
        );
      }
      for (let r = 1; r <= rounds; r++) {
        for (const instances of [1, 2, 4]) {
          // Modes alternate run by run, so a drift in this shared machine hits all of them.
          for (const { variant, wakeup } of inTurn(runs, r)) {
            const row = await drainOnce({ messages: drainMessages, keys: 1000, instances, wakeup, variant });
            row['of ceiling'] = `${round(((row['msg/s'] as number) / ceilingRate) * 100, 0)}%`;
            if (instances === 1 && wakeup === 'notify' && variant === 'prefilled') ourDrain ??= row;
            rows.push({ round: r, ...row });
          }
        }
      }
      return rows;
    });
    const find = (r: number, instances: number, live: boolean, wakeup: Mode) =>
      rows.find(
        (x) =>
          x.round === r &&
          x.relays === instances &&
          x.wakeup === wakeup &&
          String(x.variant).startsWith('live') === live,
      );
    const ratios: Row[] = [];
    for (let r = 1; r <= rounds; r++) {
      for (const instances of [1, 2, 4]) {
        const liveNotify = find(r, instances, true, 'notify');
        const replication = find(r, instances, true, 'replication');
        const tableless = find(r, instances, true, 'tableless');
        ratios.push({
          round: r,
          relays: instances,
          'live: replication ÷ notify': ratio(replication, liveNotify, 'msg/s'),
          'live: tableless ÷ notify': ratio(tableless, liveNotify, 'msg/s'),
          'tableless ÷ replication': ratio(tableless, replication, 'msg/s'),
          'live: poll ÷ notify': ratio(find(r, instances, true, 'poll'), liveNotify, 'msg/s'),
          'notify: live ÷ prefilled': ratio(liveNotify, find(r, instances, false, 'notify'), 'msg/s'),
          'relay CPU: replication ÷ notify': ratio(replication, liveNotify, 'relay CPU s / 10k'),
          'relay CPU: tableless ÷ notify': ratio(tableless, liveNotify, 'relay CPU s / 10k'),
          'PostgreSQL CPU: replication ÷ notify': ratio(replication, liveNotify, 'PostgreSQL CPU s / 10k'),
          'PostgreSQL CPU: tableless ÷ notify': ratio(tableless, liveNotify, 'PostgreSQL CPU s / 10k'),
        });
      }
    }
    console.log(`== drain: ratios within a round (same round, same relays)\n${table(ratios)}\n`);
    results['drain ratios'] = ratios;
  }
  let ourLatency: Row | undefined;
  if (arg === 'latency' || arg === 'all') {
    const seconds = quick ? 3 : 10;
    const rows = await run('latency', async () => {
      const rows: Row[] = [];
      for (let r = 1; r <= rounds; r++) {
        for (const rate of [100, 1000, 5000]) {
          // Notify, replication and table-less alternate at each rate, so a drift hits all three.
          for (const wakeup of inTurn(['notify', 'replication', 'tableless'] as const, r)) {
            const row = await latencyOnce({ rate, seconds, wakeup });
            if (rate === 1000 && wakeup === 'notify') ourLatency ??= row;
            rows.push({ round: r, ...row });
          }
        }
        // The wake-up before the wake gate (every writer notifies), beside the default at 1,000.
        rows.push({
          round: r,
          ...(await latencyOnce({ rate: 1000, seconds, wakeup: 'notify', notify: true })),
        });
        rows.push({ round: r, ...(await latencyOnce({ rate: 1000, seconds, wakeup: 'poll' })) });
      }
      return rows;
    });
    const ratios: Row[] = [];
    for (let r = 1; r <= rounds; r++) {
      for (const rate of [100, 1000, 5000]) {
        const at = (wakeup: string) =>
          rows.find((x) => x.round === r && x['offered msg/s'] === rate && x.wakeup === wakeup);
        const not = at('notify');
        for (const mode of ['replication', 'tableless']) {
          const m = at(mode);
          ratios.push({
            round: r,
            'offered msg/s': rate,
            '÷ notify': mode,
            'commit→broker p50': ratio(m, not, 'commit→broker p50 ms'),
            p99: ratio(m, not, 'p99 ms'),
            'commit→consumer p50': ratio(m, not, 'commit→consumer p50 ms'),
            'c p99': ratio(m, not, 'c p99 ms'),
            'achieved msg/s': ratio(m, not, 'achieved msg/s'),
          });
        }
      }
    }
    console.log(`== latency: replication and tableless ÷ notify within a round\n${table(ratios)}\n`);
    results['latency ratios'] = ratios;
  }
  if (arg === 'writer' || arg === 'all') {
    await run('writer impact', () => writerImpact(quick ? 2 : 5, rounds));
    await run('writer impact, database side (pgbench)', () => writerPgbench(quick ? 2 : 3, quick ? 1 : 3));
  }
  if (arg === 'peers' || arg === 'all') {
    // The same drain (backlog, keys, broker, confirms) and the same latency run for each peer.
    // Mailroom's rows are the ones measured above in this run, or measured here for `peers`.
    await run('peers: drain', async () => {
      const keys = 1000;
      const ours =
        ourDrain ?? (await drainOnce({ messages: drainMessages, keys, instances: 1, wakeup: 'notify' }));
      const peers: Row[] = [
        { ...(await ptoDrain({ messages: drainMessages, keys, listener: 'polling', maxSeconds: 60 })) },
        { ...(await ptoDrain({ messages: drainMessages, keys, listener: 'replication', maxSeconds: 60 })) },
        // One at a time is slow: a smaller backlog keeps the run short; its rate does not depend on it.
        await naivePollerDrain(quick ? 2_000 : 10_000, keys),
      ];
      const ourRate = ours['msg/s'] as number;
      const best = Math.max(...peers.map((p) => p['msg/s'] as number));
      return [
        {
          peer: 'mailroom relay (1 process, notify)',
          messages: drainMessages,
          keys,
          'msg/s': ourRate,
          'relay CPU s / 10k': ours['relay CPU s / 10k'] as number,
          'peak RSS MiB (max)': ours['peak RSS MiB (max)'] as number,
          'mailroom ×': 1,
        },
        ...peers.map((p) => ({ ...p, 'mailroom ×': round(ourRate / (p['msg/s'] as number), 1) })),
        { peer: 'mailroom over the best peer', 'mailroom ×': round(ourRate / best, 1) },
      ];
    });
    await run('peers: latency at 1,000 msg/s', async () => {
      const seconds = quick ? 3 : 10;
      const ours = ourLatency ?? (await latencyOnce({ rate: 1000, seconds, wakeup: 'notify' }));
      return [
        { peer: 'mailroom relay (notify)', ...ours },
        await ptoLatency({ rate: 1000, seconds, listener: 'polling' }),
        await ptoLatency({ rate: 1000, seconds, listener: 'replication' }),
      ];
    });
  }
  let keysBase: Row | undefined;
  if (arg === 'keys' || arg === 'all') {
    await run('keys', async () => {
      const rows = await keysScenario(quick);
      keysBase = rows[0];
      return rows;
    });
  }
  if (arg === 'hotkey' || arg === 'all') {
    await run('hotkey', () => hotkeyScenario(quick, keysBase));
  }
  if (arg === 'ack') {
    await run('ack', () => ackScenario(quick));
  }
  if (arg === 'logtail') {
    await run('logtail: live drains', () => logtailScenario(quick));
    await run('logtail: latency stages at 1,000 msg/s', () => logtailStages(quick));
  }
  if (arg === 'soak') {
    await run('soak', () => soak(quick));
  }
  if (arg === 'rss') {
    await run('rss', async () => [
      await drainOnce({ messages: quick ? 200_000 : 1_000_000, keys: 1000, instances: 1, wakeup: 'notify' }),
    ]);
  }
  const dir = fileURLToPath(new URL('./results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  const file = `${dir}${arg}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`results written to ${file}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
