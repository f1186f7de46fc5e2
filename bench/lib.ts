import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cpus, totalmem, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import amqp from 'amqplib';
import pg from 'pg';
import {
  Outbox,
  Relay,
  type ClaimedBatch,
  type ClaimRequest,
  type OutboxMessage,
  type RelayOptions,
  type Transport,
} from '../src/core/index.js';
import { relayOptionsSchema } from '../src/core/relay-options.js';
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

/** A migrated schema of its own, dropped by `drop()`. */
export async function benchDb(options: { notify?: boolean | 'idle'; poolMax?: number } = {}) {
  const schema = randomName('bench');
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: options.poolMax ?? 8 });
  pool.on('error', () => undefined);
  const store = new PostgresStore({
    pool,
    schema,
    ...(options.notify === undefined ? {} : { notify: options.notify }),
  });
  await store.migrate();
  return {
    schema,
    pool,
    store,
    outbox: new Outbox({ store }),
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

/**
 * A `mailroom relay` process (built `dist/`) on a bench schema, delivering to RabbitMQ. Batch size
 * and concurrency left unset are the relay's own defaults, which is what the figures are about.
 */
export function spawnRelay(o: {
  schema: string;
  exchange: string;
  wakeup: 'notify' | 'poll';
  batchSize?: number;
  concurrency?: number;
  logLevel: 'error' | 'info';
  stdio: StdioOptions;
}): ChildProcess {
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
}

/**
 * A relay in this process (the same `Relay`, `PostgresStore` and `RabbitMqTransport` that
 * `mailroom relay` builds, with the CLI's pool size), whose store is wrapped to time every
 * claim: the relay's own code is untouched, and the time is the claim as the relay sees it
 * (round trip included). Relay options left unset are the relay's defaults.
 */
export async function startTimedRelay(o: {
  schema: string;
  exchange: string;
  relay?: Omit<Partial<RelayOptions>, 'store' | 'transport'> & Record<string, unknown>;
  /** Called with the messages the broker confirmed, at `performance.now()` of the confirm. */
  onConfirmed?: (messages: readonly OutboxMessage[], at: number) => void;
}) {
  const concurrency = o.relay?.concurrency ?? Number(relayOptionsSchema.fields.concurrency.default);
  const store = await PostgresStore.connect({
    connectionString: DATABASE_URL,
    schema: o.schema,
    poolSize: concurrency * 2 + 2,
  });
  const timings: RelayTimings = {
    claimMs: [],
    emptyClaims: 0,
    claimed: 0,
    delivered: 0,
    firstClaimAt: NaN,
    lastDeliveredAt: NaN,
  };
  const timedStore = overriding(store, {
    async claim(request: ClaimRequest): Promise<ClaimedBatch> {
      const t0 = performance.now();
      if (Number.isNaN(timings.firstClaimAt)) timings.firstClaimAt = t0;
      const batch = await store.claim(request);
      if (batch.messages.length === 0) timings.emptyClaims++;
      else timings.claimMs.push(performance.now() - t0);
      timings.claimed += batch.messages.length;
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
  const relay = new Relay({ ...o.relay, store: timedStore, transport });
  relay.on('relay:batch:settled', (e) => {
    timings.delivered += e.delivered;
    timings.lastDeliveredAt = performance.now();
  });
  await relay.start();
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
