import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, totalmem, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import amqp from 'amqplib';
import pg from 'pg';
import {
  Outbox,
  Relay,
  type ClaimedBatch,
  type ClaimIdsRequest,
  type ClaimRequest,
  type OutboxMessage,
  type RelayOptions,
  type Transport,
} from '../src/core/index.js';
import { relayOptionsSchema } from '../src/core/relay-options.js';
import { PostgresLogSource } from '../src/replication/postgres-log-source.js';
import { PostgresStore } from '../src/stores/postgres/index.js';
import { RabbitMqTransport } from '../src/transports/rabbitmq/index.js';

export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

/** One row of a result table. */
export type Row = Record<string, string | number>;

export interface ScenarioResult {
  scenario: string;
  rows: Row[];
  notes?: string[];
}

export function machineInfo() {
  const c = cpus();
  return {
    cpus: c.length,
    cpuModel: c[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    loadavg: loadavg().map((x) => Number(x.toFixed(2))),
    postgres: undefined as string | undefined,
    rabbitmq: undefined as string | undefined,
    date: new Date().toISOString(),
  };
}

export function randomName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

/** A 256-byte JSON payload (the message size), with an index. */
export function payload256(i: number): Record<string, unknown> {
  const base = { i, at: 0, pad: '' };
  const size = Buffer.byteLength(JSON.stringify(base));
  return { ...base, pad: 'x'.repeat(256 - size) };
}

/**
 * A migrated schema of its own, dropped by `drop()`. `store` is the table store (what a relay
 * uses); `outbox` writes through it, or with `tableless` through a second, table-less store on
 * the same pool and schema (`PostgresStore({ tableless: true, slot })`): its enqueue emits
 * logical messages and fails while `tableless.slot` does not exist, so create the slot (or start
 * the relay that creates it) before writing.
 */
export async function benchDb(
  options: { notify?: boolean | 'idle'; poolMax?: number; tableless?: { slot: string } } = {},
) {
  const schema = randomName('bench');
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: options.poolMax ?? 8 });
  pool.on('error', () => undefined);
  const store = new PostgresStore({
    pool,
    schema,
    ...(options.notify === undefined ? {} : { notify: options.notify }),
  });
  await store.migrate();
  const writerStore =
    options.tableless === undefined
      ? store
      : new PostgresStore({ pool, schema, tableless: true, slot: options.tableless.slot, notify: false });
  return {
    schema,
    pool,
    store,
    outbox: new Outbox({ store: writerStore }),
    async count(): Promise<number> {
      const r = await pool.query(`SELECT count(*)::int AS n FROM "${schema}".outbox`);
      return r.rows[0].n as number;
    },
    async drop() {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    },
  };
}

/** Fills the outbox with `n` 256-byte messages over `keys` keys (0: keyless), in big transactions. */
export async function prefill(
  db: Awaited<ReturnType<typeof benchDb>>,
  n: number,
  keys: number,
): Promise<void> {
  await prefillWith(db, n, (i) => (keys > 0 ? `k${i % keys}` : null));
}

/**
 * Fills the outbox with `n` 256-byte messages, message `i` (in enqueue order, so in seq order)
 * on key `keyOf(i)`, in big transactions.
 */
export async function prefillWith(
  db: Awaited<ReturnType<typeof benchDb>>,
  n: number,
  keyOf: (i: number) => string | null,
): Promise<void> {
  const client = await db.pool.connect();
  try {
    for (let i = 0; i < n; i += 4000) {
      await client.query('BEGIN');
      const count = Math.min(4000, n - i);
      await db.outbox.enqueue(
        client,
        Array.from({ length: count }, (_, j) => ({
          topic: 'bench.drain',
          key: keyOf(i + j),
          payload: payload256(i + j),
        })),
      );
      await client.query('COMMIT');
    }
  } finally {
    client.release();
  }
}

/** A durable topic exchange with one durable queue bound to `#`, as production would have. */
export async function brokerSink(exchange = randomName('bench_x')) {
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createChannel();
  await ch.assertExchange(exchange, 'topic', { durable: true });
  const queue = `${exchange}.q`;
  await ch.assertQueue(queue, { durable: true });
  await ch.bindQueue(queue, exchange, '#');
  return {
    exchange,
    queue,
    channel: ch,
    async depth(): Promise<number> {
      return (await ch.checkQueue(queue)).messageCount;
    },
    async close() {
      await ch.deleteQueue(queue).catch(() => undefined);
      await ch.deleteExchange(exchange).catch(() => undefined);
      await conn.close().catch(() => undefined);
    },
  };
}

/** CPU seconds and peak RSS of a process, from /proc (Linux). */
export function procStats(pid: number): { cpuSeconds: number; peakRssMiB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
  return { cpuSeconds: ticks / 100, peakRssMiB: hwm ? Number(hwm[1]) / 1024 : 0 };
}

/**
 * CPU seconds used so far by every process of the database server and of the broker, from
 * `/proc` (a backend that exits in between takes its share with it: a slight undercount). With
 * the relays' own CPU this shows where a drain's work goes, and whether more relays make the
 * servers work more per message — what decides how relays on other machines would scale.
 */
export function serverCpuSeconds(): { postgres: number; rabbitmq: number } {
  const total = { postgres: 0, rabbitmq: 0 };
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const side = comm === 'postgres' ? 'postgres' : comm === 'beam.smp' ? 'rabbitmq' : undefined;
      if (side === undefined) continue;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total[side] += (Number(fields[11]) + Number(fields[12])) / 100;
    } catch {
      // exited while we read
    }
  }
  return total;
}

/**
 * Commits `n` messages over `keys` keys from `writers` concurrent connections, `perTx` messages
 * per transaction (message i on key `k<i % keys>`, as the prefill). Resolves to when the first
 * COMMIT returned and when the last did.
 */
export async function liveWriters(
  db: Awaited<ReturnType<typeof benchDb>>,
  o: { messages: number; keys: number; writers: number; perTx: number },
): Promise<{ firstCommitAt: number; lastCommitAt: number }> {
  let next = 0;
  let firstCommitAt = NaN;
  let lastCommitAt = NaN;
  const writer = async () => {
    const client = await db.pool.connect();
    try {
      for (;;) {
        const from = next;
        if (from >= o.messages) return;
        const count = Math.min(o.perTx, o.messages - from);
        next += count;
        await client.query('BEGIN');
        await db.outbox.enqueue(
          client,
          Array.from({ length: count }, (_, j) => ({
            topic: 'bench.drain',
            key: o.keys > 0 ? `k${(from + j) % o.keys}` : null,
            payload: payload256(from + j),
          })),
        );
        await client.query('COMMIT');
        const now = performance.now();
        if (Number.isNaN(firstCommitAt)) firstCommitAt = now;
        lastCommitAt = now;
      }
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  };
  await Promise.all(Array.from({ length: o.writers }, writer));
  return { firstCommitAt, lastCommitAt };
}

/**
 * CPU seconds used so far by the walsender reading `slot` (the PostgreSQL process that decodes
 * the log for the relay), from `/proc`; NaN when no connection reads the slot.
 */
export async function walsenderCpuSeconds(pool: pg.Pool, slot: string): Promise<number> {
  const res = await pool.query<{ pid: number | null }>(
    'SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = $1',
    [slot],
  );
  const pid = res.rows[0]?.pid;
  if (pid === undefined || pid === null) return NaN;
  try {
    return procStats(pid).cpuSeconds;
  } catch {
    return NaN;
  }
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/**
 * A consumer on the real queue that records when each message arrives, by its AMQP message id:
 * the commit→consumer end of the latency runs.
 */
export async function timedConsumer(queue: string) {
  const receivedAt = new Map<string, number>();
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createChannel();
  await ch.prefetch(2000);
  await ch.consume(queue, (m) => {
    if (!m) return;
    receivedAt.set(String(m.properties.messageId), performance.now());
    ch.ack(m);
  });
  return {
    receivedAt,
    async close() {
      await conn.close().catch(() => undefined);
    },
  };
}

/**
 * Writers committing one message per transaction at a steady offered rate: message i is due at
 * t0 + i / rate, and each writer takes the next due one and waits for its time. `write` runs
 * inside the transaction and returns the message id; the time COMMIT returned is recorded in
 * `committedAt`. Resolves to the rate achieved, in messages per second.
 */
export async function pacedWriters(
  pool: pg.Pool,
  o: { rate: number; seconds: number; writers?: number },
  write: (client: pg.PoolClient, i: number) => Promise<string>,
  committedAt: Map<string, number>,
): Promise<number> {
  const total = Math.round(o.rate * o.seconds);
  let next = 0;
  const t0 = performance.now();
  const writer = async () => {
    const client = await pool.connect();
    try {
      for (;;) {
        const i = next++;
        if (i >= total) return;
        const wait = t0 + (i * 1000) / o.rate - performance.now();
        if (wait > 1) await sleep(wait);
        await client.query('BEGIN');
        const id = await write(client, i);
        await client.query('COMMIT');
        committedAt.set(id, performance.now());
      }
    } finally {
      client.release();
    }
  };
  await Promise.all(Array.from({ length: o.writers ?? 8 }, writer));
  return total / ((performance.now() - t0) / 1000);
}

/**
 * Waits (up to 30 s) for the consumer to receive every committed message, then gives the
 * commit→broker and commit→consumer percentiles and how many arrived.
 */
export async function latencyColumns(
  committedAt: ReadonlyMap<string, number>,
  confirmedAt: ReadonlyMap<string, number>,
  receivedAt: ReadonlyMap<string, number>,
): Promise<Row> {
  const deadline = performance.now() + 30_000;
  while (receivedAt.size < committedAt.size && performance.now() < deadline) await sleep(20);
  const toBroker: number[] = [];
  const toConsumer: number[] = [];
  for (const [id, c] of committedAt) {
    const b = confirmedAt.get(id);
    const r = receivedAt.get(id);
    if (b !== undefined) toBroker.push(b - c);
    if (r !== undefined) toConsumer.push(r - c);
  }
  toBroker.sort((a, b) => a - b);
  toConsumer.sort((a, b) => a - b);
  return {
    'commit→broker p50 ms': round(percentile(toBroker, 50)),
    'p95 ms': round(percentile(toBroker, 95)),
    'p99 ms': round(percentile(toBroker, 99)),
    'commit→consumer p50 ms': round(percentile(toConsumer, 50)),
    'c p95 ms': round(percentile(toConsumer, 95)),
    'c p99 ms': round(percentile(toConsumer, 99)),
    received: `${receivedAt.size}/${committedAt.size}`,
  };
}

const MAILROOM_BIN = fileURLToPath(new URL('../bin/mailroom.js', import.meta.url));

/** How a relay learns about new messages: `mailroom relay --wakeup`. */
export type Wakeup = 'notify' | 'poll' | 'replication';

/**
 * What a drain or latency run measures: a relay wake-up with writers inserting outbox rows, or
 * `tableless`: the same replication relays, with writers emitting logical messages
 * (`PostgresStore({ tableless: true })`) instead of rows.
 */
export type Mode = Wakeup | 'tableless';

/** The wake-up the relays of `mode` run with: `replication` for table-less messages. */
export function relayWakeup(mode: Mode): Wakeup {
  return mode === 'tableless' ? 'replication' : mode;
}

/**
 * Creates the logical replication slot `slot` (pgoutput, in the bench database) for a table-less
 * run, before any writer enqueues: a table-less enqueue refuses to write while its slot does not
 * exist. Drop it with {@link dropReplication}: a slot keeps WAL from its position on, read or not.
 */
export async function createBenchSlot(slot: string): Promise<void> {
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    await client.query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", [slot]);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * A `mailroom relay` process (built `dist/`) on a bench schema, delivering to RabbitMQ. Batch size
 * and concurrency left unset are the relay's own defaults, which is what the figures are about.
 * With `wakeup: 'replication'` give `slot` (see {@link benchSlot}); relays given the same slot
 * share it, one reading the log and the others hot standbys, as in production.
 */
export function spawnRelay(o: {
  schema: string;
  exchange: string;
  wakeup: Wakeup;
  slot?: string;
  batchSize?: number;
  concurrency?: number;
  logLevel: 'error' | 'info';
  stdio: StdioOptions;
}): ChildProcess {
  if ((o.wakeup === 'replication') !== (o.slot !== undefined)) {
    throw new Error(
      `spawnRelay: a slot goes with wakeup 'replication' and only with it (wakeup ${o.wakeup})`,
    );
  }
  return spawn(
    process.execPath,
    [
      MAILROOM_BIN,
      'relay',
      '--database-url',
      DATABASE_URL,
      '--schema',
      o.schema,
      '--transport',
      AMQP_URL,
      '--exchange',
      o.exchange,
      '--wakeup',
      o.wakeup,
      ...(o.slot === undefined ? [] : ['--slot', o.slot]),
      ...(o.batchSize === undefined ? [] : ['--batch-size', String(o.batchSize)]),
      ...(o.concurrency === undefined ? [] : ['--concurrency', String(o.concurrency)]),
      '--log-level',
      o.logLevel,
    ],
    { stdio: o.stdio },
  );
}

/** Signals a child process (unless it has already exited) and waits for it to exit. */
export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  await exited;
}

/**
 * Stops a child with SIGTERM and, if it has not exited after `graceMs`, SIGKILL: for cleanup
 * after a failed run, where a relay must be gone before its slot can be dropped.
 */
export async function stopProcessSurely(child: ChildProcess, graceMs = 20_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * Resolves once a `mailroom relay` child spawned with `logLevel: 'info'` and stderr piped has
 * logged `relay started` (its source, LISTEN or slot, is open); rejects if it exits first or
 * after `timeoutMs` (creating a slot waits for every open transaction on the server). Keeps
 * reading its stderr afterwards (a full pipe would block the relay) and passes its error lines on.
 */
export function relayStarted(child: ChildProcess, timeoutMs = 120_000): Promise<void> {
  const stderr = child.stderr;
  if (!stderr) throw new Error('relayStarted: spawn the relay with stderr piped');
  return new Promise<void>((resolve, reject) => {
    let buffered = '';
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(
      () => finish(new Error(`relay pid ${child.pid} did not log "relay started" within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onExit = (code: number | null, signal: string | null) =>
      finish(new Error(`relay pid ${child.pid} exited (${code ?? signal}) before it started`));
    child.once('exit', onExit);
    stderr.setEncoding('utf8');
    stderr.on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        let entry: { level?: string; msg?: string } | undefined;
        try {
          entry = JSON.parse(line) as { level?: string; msg?: string };
        } catch {
          entry = undefined;
        }
        if (entry?.msg === 'relay started') finish();
        else if (entry === undefined || entry.level === 'error') process.stderr.write(`relay: ${line}\n`);
      }
    });
  });
}

/**
 * Cleanups that must run even when the bench is interrupted (a replication slot left behind
 * keeps WAL on the server forever). `run.ts` runs the registered ones on SIGINT/SIGTERM.
 */
const cleanups = new Set<() => Promise<void>>();

/**
 * Registers a cleanup to run if the bench is interrupted, and returns it made idempotent (run it
 * in the scenario's `finally`: it runs once, whichever comes first, and unregisters itself).
 */
export function onInterrupt(fn: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  const once = () => {
    running ??= fn().finally(() => cleanups.delete(once));
    return running;
  };
  cleanups.add(once);
  return once;
}

/** Runs every registered cleanup (on SIGINT/SIGTERM), reporting failures instead of throwing. */
export async function runInterruptCleanups(): Promise<void> {
  for (const fn of [...cleanups]) {
    try {
      await fn();
    } catch (err) {
      console.error(`cleanup failed: ${String(err)}`);
    }
  }
}

/** Bench slots are named `mr_bench_<8 hex>`: unique per run, and recognisable as ours. */
export const BENCH_SLOT_PREFIX = 'mr_bench_';

/** A fresh slot name for one replication run. */
export function benchSlot(): string {
  return randomName(BENCH_SLOT_PREFIX.slice(0, -1));
}

/**
 * Drops what a replication run created: the slot `slot` (once no relay reads it any more:
 * `pg_replication_slots.active` false) and the publication `<schema>_outbox` (the relay's
 * default name). Call it after the relays exited. A slot still read after `waitMs` has its
 * reading connection (our own relay's walsender, the slot name is unique to the run) ended
 * first. Throws, naming the slot and what to run, when it cannot drop it: a slot left behind
 * keeps WAL on the server forever.
 */
export async function dropReplication(o: { slot: string; schema: string; waitMs?: number }): Promise<void> {
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    const state = async () =>
      (
        await client.query<{ active: boolean; active_pid: number | null }>(
          'SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1',
          [o.slot],
        )
      ).rows[0];
    const waitInactive = async (ms: number) => {
      const deadline = performance.now() + ms;
      for (;;) {
        const s = await state();
        if (s === undefined || !s.active) return s;
        if (performance.now() > deadline) return s;
        await sleep(100);
      }
    };
    let s = await waitInactive(o.waitMs ?? 30_000);
    if (s?.active) {
      console.error(
        `slot ${o.slot} still read by pid ${s.active_pid} after its relays stopped: ending that connection`,
      );
      await client.query('SELECT pg_terminate_backend($1)', [s.active_pid]);
      s = await waitInactive(10_000);
    }
    if (s !== undefined) {
      try {
        await client.query('SELECT pg_drop_replication_slot($1)', [o.slot]);
      } catch (err) {
        // Dropped meanwhile (42704: undefined_object) is what we wanted.
        if ((err as { code?: string }).code !== '42704') {
          throw new Error(
            `could not drop the bench's replication slot ${o.slot}; drop it by hand ` +
              `(SELECT pg_drop_replication_slot('${o.slot}')) or it keeps WAL forever: ${String(err)}`,
            { cause: err },
          );
        }
      }
    }
    await client.query(`DROP PUBLICATION IF EXISTS "${o.schema}_outbox"`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Drops bench slots (`mr_bench_…`) that no relay reads: left by a bench run that was killed
 * before its cleanup ran. Returns their names.
 */
export async function dropLeftoverBenchSlots(): Promise<string[]> {
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    const res = await client.query<{ slot_name: string }>(
      `SELECT slot_name FROM pg_replication_slots WHERE NOT active AND starts_with(slot_name, $1)`,
      [BENCH_SLOT_PREFIX],
    );
    const dropped: string[] = [];
    for (const { slot_name } of res.rows) {
      try {
        await client.query('SELECT pg_drop_replication_slot($1)', [slot_name]);
        dropped.push(slot_name);
      } catch {
        // taken or dropped meanwhile by the run it belongs to
      }
    }
    return dropped;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** `target` with some members replaced; every other method runs on `target` itself. */
function overriding<T extends object>(target: T, overrides: Partial<T>): T {
  return new Proxy(target, {
    get(t, prop) {
      if (Object.hasOwn(overrides, prop)) return overrides[prop as keyof T];
      const value: unknown = Reflect.get(t, prop, t);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(t) : value;
    },
  });
}

/** What a {@link startTimedRelay} relay has done so far. */
export interface RelayTimings {
  /** Duration in ms of each claim that returned messages, in the order they returned. */
  claimMs: number[];
  /** Claims that found nothing due. */
  emptyClaims: number;
  /** Messages claimed, over all claims. */
  claimed: number;
  /** Messages settled as delivered. */
  delivered: number;
  /** `performance.now()` when the first claim started, and when the last delivery settled. */
  firstClaimAt: number;
  lastDeliveredAt: number;
  /**
   * With a log source: duration in ms of each `claimIds` (the source leasing the rows of the
   * transactions it read), how many ids they named and how many rows they leased.
   */
  claimIdsMs: number[];
  idsNamed: number;
  idsLeased: number;
}

/**
 * A relay in this process (the same `Relay`, `PostgresStore` and `RabbitMqTransport` that
 * `mailroom relay` builds, with the CLI's pool size), whose store is wrapped to time every
 * claim: the relay's own code is untouched, and the time is the claim as the relay sees it
 * (round trip included). Relay options left unset are the relay's defaults. With `slot` the
 * relay tails the log (`PostgresLogSource` on that slot, as `--wakeup replication` builds it),
 * and the source's `claimIds` calls are timed too; drop the slot with {@link dropReplication}
 * after `stop()`.
 */
export async function startTimedRelay(o: {
  schema: string;
  exchange: string;
  relay?: Omit<Partial<RelayOptions>, 'store' | 'transport' | 'source'> & Record<string, unknown>;
  /** Log tailing through this slot (created when missing). */
  slot?: string;
  /** Called with the messages the broker confirmed, at `performance.now()` of the confirm. */
  onConfirmed?: (messages: readonly OutboxMessage[], at: number) => void;
  /**
   * Called with the messages each claim or claimIds leased, when that call started and ended
   * (`performance.now()`), and which of the two it was.
   */
  onClaimed?: (
    messages: readonly OutboxMessage[],
    startedAt: number,
    endedAt: number,
    by: 'claim' | 'claimIds',
  ) => void;
}) {
  const onClaimed = o.onClaimed;
  const concurrency = o.relay?.concurrency ?? Number(relayOptionsSchema.fields.concurrency.default);
  const store = await PostgresStore.connect({
    connectionString: DATABASE_URL,
    schema: o.schema,
    // The CLI's: two per batch in flight, a claim, LISTEN and the wake gate; one more for the
    // log source's claimIds in replication mode.
    poolSize: concurrency * 2 + (o.slot === undefined ? 2 : 3),
  });
  const timings: RelayTimings = {
    claimMs: [],
    emptyClaims: 0,
    claimed: 0,
    delivered: 0,
    firstClaimAt: NaN,
    lastDeliveredAt: NaN,
    claimIdsMs: [],
    idsNamed: 0,
    idsLeased: 0,
  };
  const timedStore = overriding(store, {
    async claim(request: ClaimRequest): Promise<ClaimedBatch> {
      const t0 = performance.now();
      if (Number.isNaN(timings.firstClaimAt)) timings.firstClaimAt = t0;
      const batch = await store.claim(request);
      const t1 = performance.now();
      if (batch.messages.length === 0) timings.emptyClaims++;
      else timings.claimMs.push(t1 - t0);
      onClaimed?.(batch.messages, t0, t1, 'claim');
      timings.claimed += batch.messages.length;
      return batch;
    },
    async claimIds(request: ClaimIdsRequest): Promise<ClaimedBatch> {
      const t0 = performance.now();
      if (Number.isNaN(timings.firstClaimAt)) timings.firstClaimAt = t0;
      const batch = await store.claimIds(request);
      const t1 = performance.now();
      timings.claimIdsMs.push(t1 - t0);
      onClaimed?.(batch.messages, t0, t1, 'claimIds');
      timings.idsNamed += Math.min(request.ids.length, request.limit);
      timings.idsLeased += batch.messages.length;
      return batch;
    },
  });
  const inner = new RabbitMqTransport({ url: AMQP_URL, exchange: o.exchange });
  const onConfirmed = o.onConfirmed;
  const transport = onConfirmed
    ? overriding<Transport>(inner, {
        async publish(messages, options) {
          const outcomes = await inner.publish(messages, options);
          const at = performance.now();
          onConfirmed(
            messages.filter((_, i) => outcomes[i]?.status === 'ok'),
            at,
          );
          return outcomes;
        },
      })
    : inner;
  const relay = new Relay({
    ...o.relay,
    store: timedStore,
    transport,
    ...(o.slot === undefined
      ? {}
      : {
          wakeup: 'replication' as const,
          source: new PostgresLogSource({
            connectionString: DATABASE_URL,
            schema: o.schema,
            slot: o.slot,
            store: timedStore,
          }),
        }),
  });
  relay.on('relay:batch:settled', (e) => {
    timings.delivered += e.delivered;
    timings.lastDeliveredAt = performance.now();
  });
  try {
    await relay.start();
  } catch (err) {
    await transport.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    throw err;
  }
  return {
    relay,
    timings,
    /** Stops the relay and closes what it opened. */
    async stop() {
      await relay.stop();
      await transport.close();
      await store.close();
    },
  };
}

/** Per-claim time columns: p50, p99 and max of the claims that returned messages. */
export function claimColumns(t: RelayTimings): Row {
  const sorted = [...t.claimMs].sort((a, b) => a - b);
  return {
    claims: sorted.length,
    'msgs/claim': round(t.claimed / Math.max(1, sorted.length), 1),
    'claim p50 ms': round(percentile(sorted, 50)),
    'claim p99 ms': round(percentile(sorted, 99)),
    'claim max ms': round(sorted.at(-1) ?? NaN),
  };
}
