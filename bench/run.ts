/**
 * Benchmarks. `npm run bench -- <scenario>`, scenario one of:
 *   ceiling   raw limits: broker clients publishing with confirms, PostgreSQL claim-and-delete
 *   drain     100k-message backlog (1k keys) relayed by 1, 2, 4 relay processes, per wake-up mode
 *   latency   commit→broker and commit→consumer latency at 100, 1000, 5000 msg/s
 *   writer    application tx/s with 8 and 32 writers, with and without Mailroom
 *   peers     the same drain by other designs (a naive one-at-a-time poller), side by side
 *   rss       peak relay memory while draining 1M messages
 *   all       ceiling, drain, latency, writer, peers (not rss)
 * Prints a table per scenario and writes bench/results/<scenario>-<time>.json with machine info.
 * Figures from a 2-core shared machine are noisy: compare ratios from one run, not absolutes.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ceiling } from './scenarios/ceiling.js';
import { drainOnce } from './scenarios/drain.js';
import { latencyOnce } from './scenarios/latency.js';
import { naivePollerDrain } from './scenarios/naive-poller.js';
import { writerImpact } from './scenarios/writer-impact.js';
import { DATABASE_URL, machineInfo, round, type Row } from './lib.js';

const SCENARIOS = ['ceiling', 'drain', 'latency', 'writer', 'peers', 'rss', 'all'] as const;
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

async function main() {
  const arg = (process.argv[2] ?? 'all') as Scenario;
  if (!SCENARIOS.includes(arg)) {
    console.error(`unknown scenario ${JSON.stringify(arg)}; one of ${SCENARIOS.join(', ')}`);
    process.exit(2);
  }
  const quick = process.env.BENCH_QUICK === '1';
  const machine = await versions();
  console.log(
    `machine: ${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, Node ${machine.node}, PostgreSQL ${machine.postgres}, RabbitMQ ${machine.rabbitmq}`,
  );
  console.log('(2 shared cores: noisy; compare the ratios measured in this run)\n');
  const results: Record<string, unknown> = { machine };
  const run = async (name: string, fn: () => Promise<Row[]>) => {
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
  if (arg === 'drain' || arg === 'all') {
    await run('drain', async () => {
      const rows: Row[] = [];
      const messages = quick ? 20_000 : 100_000;
      for (const wakeup of ['notify', 'poll'] as const) {
        for (const instances of [1, 2, 4]) {
          const row = await drainOnce({ messages, keys: 1000, instances, wakeup });
          row['of ceiling'] = `${round(((row['msg/s'] as number) / ceilingRate) * 100, 0)}%`;
          rows.push(row);
        }
      }
      return rows;
    });
  }
  if (arg === 'latency' || arg === 'all') {
    await run('latency', async () => {
      const rows: Row[] = [];
      for (const rate of [100, 1000, 5000]) {
        rows.push(await latencyOnce({ rate, seconds: quick ? 3 : 10, wakeup: 'notify' }));
      }
      rows.push(await latencyOnce({ rate: 1000, seconds: quick ? 3 : 10, wakeup: 'poll' }));
      return rows;
    });
  }
  if (arg === 'writer' || arg === 'all') {
    await run('writer impact', () => writerImpact(quick ? 2 : 5));
  }
  if (arg === 'peers' || arg === 'all') {
    await run('peers', async () => {
      const messages = quick ? 2_000 : 20_000;
      const ours = await drainOnce({ messages, keys: 1000, instances: 1, wakeup: 'notify' });
      const naive = await naivePollerDrain(messages, 1000);
      const ratio = (ours['msg/s'] as number) / (naive['msg/s'] as number);
      return [
        {
          peer: 'mailroom relay (1 process)',
          messages,
          keys: 1000,
          'msg/s': ours['msg/s'] as number,
          'mailroom ×': 1,
        },
        { ...naive, 'mailroom ×': round(ratio, 1) },
      ];
    });
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
