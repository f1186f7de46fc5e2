/**
 * Measures the duplicates table-less mode delivers after relay kills and stream cuts (not a test:
 * a measurement). Writers commit table-less messages straight to PostgreSQL; relay processes
 * (test/fixtures/killer-log-relay.ts, which print what they publish) reach it through a TcpProxy.
 * FAULT_EVERY_MS after the relays are up, every relay is killed (SIGKILL) or every relay connection
 * is cut, by turns (FAULTS=kill|cut|both), for DURATION_S or FAULT_COUNT faults. At each fault it
 * records the slot's confirmed position, the read mark, and how many messages already published
 * from the log lie after the confirmed position (what a new reader reads again); after the run,
 * lost messages, duplicates per fault, and each copy's path (`log->table`: published from the log,
 * then again from the table; `same process` when one relay sent both).
 *
 *   npx esbuild test/fixtures/killer-log-relay.ts --bundle --platform=node --format=esm \
 *     --packages=external --outfile=.bench/a/b/relay.mjs   # three levels deep: it finds sql/
 *   FAULT_COUNT=8 WRITERS=4 RELAY_BUNDLE=$PWD/.bench/a/b/relay.mjs node --import tsx test/replication/tableless-duplicates.ts
 *
 * Without RELAY_BUNDLE each relay compiles the sources under tsx, seconds on a loaded machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Outbox } from '../../src/core/index.js';
import { PostgresLogSource } from '../../src/replication/postgres-log-source.js';
import { Relay } from '../../src/core/index.js';
import { PostgresStore } from '../../src/stores/postgres/index.js';
import { MemoryTransport } from '../../src/transports/memory/index.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import { createTestDb, DATABASE_URL } from '../helpers/postgres.js';
import { dropSlot } from '../helpers/slots.js';
import { waitUntil } from '../helpers/wait.js';

const DURATION_S = Number(process.env.DURATION_S ?? 30);
const FAULTS = process.env.FAULTS ?? 'both';
const FAULT_EVERY_MS = Number(process.env.FAULT_EVERY_MS ?? 3000);
const RELAYS = Number(process.env.RELAYS ?? 2);
const WRITERS = Number(process.env.WRITERS ?? 3);
const KEYS = 40;

const db = await createTestDb('tldup');
const slot = `mr_dup_${randomBytes(4).toString('hex')}`;
const proxy = await TcpProxy.start({ targetPort: Number(new URL(DATABASE_URL).port || 5432) });
const proxied = new URL(DATABASE_URL);
proxied.port = String(proxy.port);

// The slot first (a table-less enqueue refuses without it).
{
  const r = new Relay({
    store: db.store,
    transport: new MemoryTransport(),
    source: new PostgresLogSource({
      connectionString: DATABASE_URL,
      schema: db.schema,
      slot,
      store: db.store,
    }),
  });
  await r.start();
  await r.stop();
}

const lsnOf = (seq: string): bigint | null => (BigInt(seq) > 1n << 24n ? BigInt(seq) : null);
const parseLsn = (text: string | null | undefined): bigint => {
  if (!text) return 0n;
  const [hi, lo] = text.split('/') as [string, string];
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
};

/** Every delivery in arrival order: id, its log position when it came from the log, when. */
const deliveries: Array<{ id: string; lsn: bigint | null; at: number; pid: number }> = [];
const firstLsn = new Map<string, bigint>();
// RELAY_BUNDLE: the fixture bundled once (esbuild), so a relay starts in a fraction of a second
// on a loaded machine, as the CLI's would, instead of compiling the sources under tsx each time.
const fixture =
  process.env.RELAY_BUNDLE ?? fileURLToPath(new URL('../fixtures/killer-log-relay.ts', import.meta.url));
const nodeArgs = process.env.RELAY_BUNDLE ? [fixture] : ['--import', 'tsx', fixture];
const relays = new Set<ChildProcess>();
const started = new Set<ChildProcess>();
const allStarted = () =>
  waitUntil(
    () => relays.size === RELAYS && [...relays].every((r) => started.has(r)),
    'relays to start',
    60_000,
    20,
  );
const startRelay = () => {
  const child = spawn(process.execPath, nodeArgs, {
    env: {
      ...process.env,
      DATABASE_URL: proxied.toString(),
      SCHEMA: db.schema,
      SLOT: slot,
      LEASE_MS: '2000',
      BATCH_SIZE: '100',
      PUBLISH_DELAY_MS: process.env.PUBLISH_DELAY_MS ?? '5',
      // The CLI's default: a standby tries to take the log over once a second.
      STANDBY_RETRY_MS: '1000',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    if (process.env.RELAY_STDERR === '1') process.stderr.write(chunk);
  });
  child.stdout?.setEncoding('utf8');
  let buffered = '';
  child.stdout?.on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    const at = Date.now();
    for (const line of lines) {
      if (line === 'started') started.add(child);
      if (!line.startsWith('delivered ')) continue;
      const [, id, seq] = line.split(' ') as [string, string, string];
      const lsn = lsnOf(seq);
      if (lsn !== null && !firstLsn.has(id)) firstLsn.set(id, lsn);
      deliveries.push({ id, lsn, at, pid: child.pid ?? 0 });
    }
  });
  relays.add(child);
  child.on('exit', () => relays.delete(child));
  return child;
};
const cleanup = async () => {
  for (const r of relays) r.kill('SIGKILL');
  await waitUntil(() => relays.size === 0, 'relays to exit', 20_000, 50).catch(() => undefined);
  await proxy.close();
  await dropSlot(db.pool, slot).catch((err: unknown) => console.error(String(err)));
  await db.pool.query(`DROP PUBLICATION IF EXISTS "${db.schema}_outbox"`);
  await db.drop();
};
process.on('uncaughtException', (err) => {
  console.error(err);
  void cleanup().finally(() => process.exit(2));
});
process.on('unhandledRejection', (err) => {
  console.error(err);
  void cleanup().finally(() => process.exit(2));
});

for (let i = 0; i < RELAYS; i++) startRelay();
await allStarted();

const tableless = new PostgresStore({ pool: db.pool, schema: db.schema, tableless: true, slot });
const outbox = new Outbox({ store: tableless });
const committed: string[] = [];
let writing = true;
const writer = async () => {
  while (writing) {
    const client = await db.pool.connect();
    try {
      await client.query('BEGIN');
      const n = 1 + Math.floor(Math.random() * 4);
      const ids = await outbox.enqueue(
        client,
        Array.from({ length: n }, () => ({
          topic: 'orders',
          key: `k${Math.floor(Math.random() * KEYS)}`,
          payload: { at: Date.now() },
        })),
      );
      await client.query('COMMIT');
      committed.push(...ids);
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      console.error('writer:', String(err));
    } finally {
      client.release();
    }
    await new Promise((r) => setTimeout(r, Math.random() * 10));
  }
};
const writers = Array.from({ length: WRITERS }, writer);

const position = async () => {
  const res = await db.pool.query(
    `SELECT s.confirmed_flush_lsn::text AS confirmed, m.read_lsn::text AS mark, s.active_pid AS pid
     FROM pg_replication_slots s LEFT JOIN "${db.schema}".log_mark m ON m.slot = s.slot_name
     WHERE s.slot_name = $1`,
    [slot],
  );
  const row = res.rows[0] as { confirmed: string; mark: string | null; pid: number | null };
  return { confirmed: parseLsn(row.confirmed), mark: parseLsn(row.mark), pid: row.pid };
};
/** Messages published once already whose log position is after `lsn` (read again from there). */
const publishedAfter = (lsn: bigint, upTo = 1n << 64n) => {
  let n = 0;
  for (const p of firstLsn.values()) if (p > lsn && p <= upTo) n++;
  return n;
};

// How far confirmation lags under load, sampled: published messages after the confirmed position.
const lags: number[] = [];
const sampler = setInterval(() => {
  void position().then(
    (p) => lags.push(publishedAfter(p.confirmed)),
    () => undefined,
  );
}, 250);

const faults: Array<{ kind: string; at: number; index: number; unconfirmed: number; belowMark: number }> = [];
const t0 = Date.now();
let turn = 0;
const FAULT_COUNT = Number(process.env.FAULT_COUNT ?? 0);
while (FAULT_COUNT > 0 ? faults.length < FAULT_COUNT : Date.now() - t0 < DURATION_S * 1000) {
  await new Promise((r) => setTimeout(r, FAULT_EVERY_MS));
  const kind = FAULTS === 'both' ? (turn++ % 2 === 0 ? 'kill' : 'cut') : FAULTS;
  const p = await position();
  const unconfirmed = publishedAfter(p.confirmed);
  const belowMark = publishedAfter(p.confirmed, p.mark);
  faults.push({ kind, at: Date.now(), index: deliveries.length, unconfirmed, belowMark });
  if (process.env.RELAY_STDERR === '1')
    console.error(
      `FAULT ${kind} relays=${[...relays].map((r) => r.pid).join(',')} deliveries=${deliveries.length} committed=${committed.length}`,
    );
  if (kind === 'kill') {
    // The reader: the process whose pid holds the slot is not ours to see; kill every relay
    // but one at random would miss it. Kill all, start again.
    for (const r of relays) r.kill('SIGKILL');
    await waitUntil(() => relays.size === 0, 'killed relays to exit', 10_000, 20);
    for (let i = 0; i < RELAYS; i++) startRelay();
    await allStarted();
  } else {
    proxy.cut();
  }
}
writing = false;
await Promise.all(writers);
const end = (await db.pool.query(`SELECT pg_current_wal_lsn()::text AS lsn`)).rows[0].lsn as string;
await waitUntil(
  async () => (await position()).confirmed >= parseLsn(end),
  'the slot to confirm the end',
  120_000,
  200,
);
await waitUntil(async () => (await db.count('outbox')) === 0, 'the table to drain', 120_000, 200).catch(
  async (err: unknown) => {
    console.error(
      String(err),
      JSON.stringify(
        (
          await db.pool.query(
            `SELECT count(*)::int AS n, min(attempts) AS a, max(lease_until)::text AS l, min(available_at)::text AS av FROM "${db.schema}".outbox`,
          )
        ).rows[0],
      ),
    );
    throw err;
  },
);
await new Promise((r) => setTimeout(r, 500));
clearInterval(sampler);

const seen = new Set<string>();
const dupAfter: number[] = faults.map(() => 0);
let dupBefore = 0;
for (let i = 0, f = -1; i < deliveries.length; i++) {
  while (f + 1 < faults.length && (faults[f + 1] as { index: number }).index <= i) f++;
  const d = deliveries[i] as { id: string };
  if (seen.has(d.id)) {
    if (f < 0) dupBefore++;
    else dupAfter[f] = (dupAfter[f] ?? 0) + 1;
  }
  seen.add(d.id);
}
// Each copy: from the log or the table, by the same process as the first copy or another.
const firstOf = new Map<string, { lsn: bigint | null; pid: number }>();
const kinds = new Map<string, number>();
for (const d of deliveries) {
  const first = firstOf.get(d.id);
  if (!first) {
    firstOf.set(d.id, d);
    continue;
  }
  const kind = `${first.lsn === null ? 'table' : 'log'}->${d.lsn === null ? 'table' : 'log'}${first.pid === d.pid ? ' same process' : ''}`;
  kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
}
console.log(`copies: ${JSON.stringify(Object.fromEntries(kinds))}`);
const lost = committed.filter((id) => !seen.has(id)).length;
const duplicates = deliveries.length - seen.size;
lags.sort((a, b) => a - b);
const q = (p: number) => lags[Math.min(lags.length - 1, Math.floor(p * lags.length))] ?? 0;
for (const [i, f] of faults.entries()) {
  console.log(
    `fault ${i + 1} ${f.kind}: published-after-confirmed ${f.unconfirmed}, of them at or before the mark ${f.belowMark}, duplicates after ${dupAfter[i]}`,
  );
}
const byKind = (kind: string) => {
  const idx = faults.flatMap((f, i) => (f.kind === kind ? [i] : []));
  const sum = idx.reduce((a, i) => a + (dupAfter[i] ?? 0), 0);
  return idx.length
    ? `${kind}: ${idx.length} faults, ${(sum / idx.length).toFixed(0)} duplicates per fault`
    : '';
};
console.log(
  `RESULT committed=${committed.length} delivered=${seen.size} lost=${lost} duplicates=${duplicates} (before first fault ${dupBefore}) ` +
    `faults=${faults.length} ${byKind('kill')} ${byKind('cut')} ` +
    `published-but-unconfirmed p50=${q(0.5)} p90=${q(0.9)} max=${q(1)}`,
);

await cleanup();
process.exit(lost > 0 ? 1 : 0);
