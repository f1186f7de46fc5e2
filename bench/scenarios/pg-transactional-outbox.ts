/**
 * A peer for the drain and latency scenarios: the npm package pg-transactional-outbox (0.5.7),
 * with its polling listener and with its logical-replication listener.
 *
 * Fair comparison rules (what both sides get):
 * - Messages: 256-byte JSON payloads (payload256(i)), `keys` distinct keys `k<i % keys>`; the
 *   key is the package's `segment` (and `aggregateId`), concurrency 'sequential', so per-key
 *   order is kept as Mailroom keeps it.
 * - Broker: the same RabbitMQ setup as Mailroom's scenarios (brokerSink(): a durable topic
 *   exchange and a durable queue bound to `#`). The handler publishes each message persistent
 *   on a ConfirmChannel with a callback per publish and resolves only after the confirm; the
 *   handlers in flight share one confirm channel.
 * - Schema: a schema of its own per run (randomName('pto')) in the test database, made with the
 *   package's DatabaseSetup SQL helpers: the table, and for polling the next-messages function
 *   and its indexes, for replication the publication and a logical replication slot with unique
 *   names (slot names are server-wide). Everything is dropped at the end, also on failure.
 * - Drain: the backlog is prefilled (not timed; for replication after the slot is created, so
 *   the inserts are in the stream) and VACUUM ANALYZEd, as Mailroom's is, before the listener
 *   starts. The rate is over the first to the last message processed (min to max
 *   processed_at). The listener runs as its own process, like Mailroom's relay, and its CPU
 *   seconds and peak RSS are read with procStats. That process is plain node running
 *   bench/peers/pto-listener.ts with its types stripped, as Mailroom's relay is plain node: the
 *   tsx loader adds about 0.3 s CPU and 30 MiB RSS at start-up alone, more under load
 *   (childLoader: 'tsx' shows it).
 * - Latency: 8 writers at a fixed offered rate as in latency.ts; each writer transaction stores
 *   one message through the package's initializeMessageStorage; the commit time is taken after
 *   COMMIT returns, the broker time in the confirm callback (the listener runs in-process, as
 *   Mailroom's relay does in latency.ts), the consumer time by a consumer on the real queue.
 * - Settings: the peer's best reasonable settings rather than its defaults (each row says
 *   which): polling every 10 ms instead of 500; batch 100 (drain) or 25 (latency) instead of 5;
 *   a handler pool of 25 connections instead of 10 (trials: see PTO_SETTINGS); message cleanup
 *   off during the run; max-attempts and poisonous-message protection at the package's outbox
 *   defaults (both "off"; note that 0.5.7 never reads enableMaxAttemptsProtection: its default
 *   retry strategy abandons a message after maxAttempts, 5, failed attempts either way).
 *   Replication uses the segment-mutex concurrency controller (per-key order). The
 *   full-concurrency controller (concurrency: 'full') starts every streamed message at once:
 *   on a 20k backlog they queue for the handler pool past the 15 s processing timeout, so it
 *   retries, abandons some and holds ~1 GiB; it is not the better setting.
 * - A run that does not finish in `maxSeconds` (default 60; the polling listener's
 *   next-messages function sorts every unprocessed row on each call, ~150 ms at 100k rows here)
 *   stops there: the rate is over what was done, and the 'done' column says how much that was.
 * - 'warn/err' counts what the package logged: for polling these are mostly lock conflicts
 *   between its next-messages function and running handlers (the message is retried when its
 *   lock expires); 'in queue' shows whether anything was published twice. In the latency run
 *   'left unprocessed' counts committed messages never published: the replication listener
 *   reads each streamed row back by id, and a row streamed before its transaction is visible
 *   to other sessions is "MESSAGE_NOT_FOUND", logged and acknowledged, so it is never sent.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { DatabaseSetup, getDisabledLogger, initializeMessageStorage } from 'pg-transactional-outbox';
import {
  ptoBaseSettings,
  startPtoListener,
  type PtoListener,
  type PtoListenerConfig,
} from '../peers/pto-listener.js';
import {
  AMQP_URL,
  DATABASE_URL,
  brokerSink,
  latencyColumns,
  pacedWriters,
  payload256,
  procStats,
  randomName,
  round,
  sleep,
  stopProcess,
  timedConsumer,
  type Row,
} from '../lib.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const LISTENER_FILE = fileURLToPath(new URL('../peers/pto-listener.ts', import.meta.url));

export type PtoListenerKind = 'polling' | 'replication';

interface Settings {
  batchSize: number;
  poolMax: number;
  pollingIntervalMs: number;
  lockMs: number;
  concurrency: 'segment-mutex' | 'full';
}

/**
 * The drain's settings unless a call overrides them, chosen by trial (polling: the first 20-30 s
 * of 20k-message drains, 1000 keys): batch 10 → ~140 msg/s, 50 → ~500-530, 100 → ~630-730,
 * 200 → ~320 (lock conflicts). The handler pool (10/20/25/50) made little difference to either
 * listener. The polling interval is 10 ms (the package's default is 500); the lock stays at the
 * package's 5000 ms, as 1000 ms did not help.
 */
export const PTO_SETTINGS: Settings = {
  batchSize: 100,
  poolMax: 25,
  pollingIntervalMs: 10,
  lockMs: 5000,
  concurrency: 'segment-mutex',
};

/**
 * The latency run's: at 1000 msg/s a batch of 25 let the writers reach the offered rate with the
 * shortest tail; 100 and 50 cost the writers (lock conflicts, retries), 10 was slower.
 */
export const PTO_LATENCY_SETTINGS: Settings = { ...PTO_SETTINGS, batchSize: 25 };

type Tuning = Partial<Settings>;

/** A schema, table and (per listener) function + indexes or publication + slot, from the package's SQL. */
async function peerDb(listener: PtoListenerKind) {
  const schema = randomName('pto');
  const names = {
    schema,
    table: 'outbox',
    fn: 'next_outbox_messages',
    publication: `${schema}_pub`,
    slot: `${schema}_slot`,
  };
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 16 });
  pool.on('error', () => undefined);
  const drop = async () => {
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        console.error(`pg-transactional-outbox teardown: ${what}: ${(err as Error).message}`);
      }
    };
    if (listener === 'replication') {
      await step('drop slot', async () => {
        // The listener is stopped by now; a walsender still ending is given a moment, then ended.
        for (let i = 0; i < 50; i++) {
          const r = await pool.query(
            'SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1',
            [names.slot],
          );
          if (r.rowCount === 0) return;
          if (r.rows[0].active) {
            if (i >= 10) await pool.query('SELECT pg_terminate_backend($1)', [r.rows[0].active_pid]);
            await sleep(100);
            continue;
          }
          await pool.query('SELECT pg_drop_replication_slot($1)', [names.slot]);
          return;
        }
        throw new Error(`slot ${names.slot} still active`);
      });
      await step('drop publication', () => pool.query(`DROP PUBLICATION IF EXISTS ${names.publication}`));
    }
    await step('drop schema', () => pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
    await pool.end().catch(() => undefined);
  };
  try {
    const role = String((await pool.query('SELECT current_user AS u')).rows[0].u);
    const base = {
      outboxOrInbox: 'outbox' as const,
      database: new URL(DATABASE_URL).pathname.slice(1),
      schema,
      table: names.table,
      listenerRole: role,
    };
    const client = await pool.connect();
    try {
      // setupPollingIndexes drops its indexes by unqualified name: keep that inside this schema.
      await client.query(`SET search_path TO ${schema}`);
      await client.query(DatabaseSetup.dropAndCreateTable(base));
      if (listener === 'polling') {
        await client.query(DatabaseSetup.createPollingFunction({ ...base, nextMessagesName: names.fn }));
        await client.query(DatabaseSetup.setupPollingIndexes({ ...base, nextMessagesName: names.fn }));
      } else {
        const config = { ...base, publication: names.publication, replicationSlot: names.slot };
        // Without its ALTER ROLE ... WITH REPLICATION: the superuser has it, and roles are not ours to change.
        const core = DatabaseSetup.setupReplicationCore(config)
          .split('\n')
          .filter((line) => !/^\s*ALTER ROLE/i.test(line))
          .join('\n');
        await client.query(core);
        // The slot must be created in a transaction of its own: one statement at a time.
        for (const statement of DatabaseSetup.setupReplicationSlot(config).split(';')) {
          const sql = statement.replace(/--.*$/gm, '').trim();
          if (sql) await client.query(sql);
        }
      }
      await client.query('RESET search_path');
    } finally {
      client.release();
    }
  } catch (err) {
    await drop();
    throw err;
  }
  return { ...names, pool, drop };
}

type PeerDb = Awaited<ReturnType<typeof peerDb>>;

function listenerConfig(
  db: PeerDb,
  listener: PtoListenerKind,
  exchange: string,
  tuning: Tuning,
  defaults: Settings,
): PtoListenerConfig {
  return {
    listener,
    databaseUrl: DATABASE_URL,
    amqpUrl: AMQP_URL,
    exchange,
    schema: db.schema,
    table: db.table,
    poolMax: tuning.poolMax ?? defaults.poolMax,
    nextMessagesFunctionName: db.fn,
    batchSize: tuning.batchSize ?? defaults.batchSize,
    pollingIntervalMs: tuning.pollingIntervalMs ?? defaults.pollingIntervalMs,
    lockMs: tuning.lockMs ?? defaults.lockMs,
    publication: db.publication,
    slot: db.slot,
    concurrency: tuning.concurrency ?? defaults.concurrency,
  };
}

function settingsText(cfg: PtoListenerConfig): string {
  const common = `pool ${cfg.poolMax}, cleanup off, outbox-default protections (max attempts 5, no poison check)`;
  return cfg.listener === 'polling'
    ? `batch ${cfg.batchSize}, poll ${cfg.pollingIntervalMs} ms, lock ${cfg.lockMs} ms, ${common}`
    : `${cfg.concurrency}, ${common}`;
}

/** The same rows as the package's storage writes, many per statement (the prefill is not timed). */
async function prefill(db: PeerDb, n: number, keys: number): Promise<void> {
  const client = await db.pool.connect();
  try {
    for (let i = 0; i < n; i += 4000) {
      const count = Math.min(4000, n - i);
      const ids: string[] = [];
      const ks: string[] = [];
      const payloads: string[] = [];
      for (let j = 0; j < count; j++) {
        ids.push(randomUUID());
        ks.push(`k${(i + j) % keys}`);
        payloads.push(JSON.stringify(payload256(i + j)));
      }
      // created_at defaults to clock_timestamp(), so it increases row by row in this order.
      await client.query(
        `INSERT INTO ${db.schema}.${db.table}
           (id, aggregate_type, aggregate_id, message_type, segment, concurrency, payload)
         SELECT id, 'bench', k, 'bench.drain', k, 'sequential', p::jsonb
           FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS t(id, k, p, n)
          ORDER BY n`,
        [ids, ks, payloads],
      );
    }
  } finally {
    client.release();
  }
}

let strippedListener: string | undefined;

/** The listener file with its types stripped, to run with plain node (no loader in the process). */
async function listenerJs(): Promise<string> {
  if (strippedListener === undefined) {
    const ts = (await import('typescript')).default;
    strippedListener = ts.transpileModule(readFileSync(LISTENER_FILE, 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    }).outputText;
  }
  return strippedListener;
}

export async function ptoDrain(
  o: {
    messages: number;
    keys: number;
    listener: PtoListenerKind;
    /** Stop after this many seconds of listening and report the rate over what was done. */
    maxSeconds?: number;
    /** 'tsx' runs the listener file under the tsx loader instead (to see the loader's cost). */
    childLoader?: 'node' | 'tsx';
  } & Tuning,
): Promise<Row> {
  if (o.keys < 1) throw new Error('ptoDrain needs keys >= 1 (the key is the segment)');
  const maxSeconds = o.maxSeconds ?? 60;
  const db = await peerDb(o.listener);
  let sink: Awaited<ReturnType<typeof brokerSink>> | undefined;
  let child: ReturnType<typeof spawn> | undefined;
  try {
    sink = await brokerSink();
    await prefill(db, o.messages, o.keys);
    await db.pool.query(`VACUUM ANALYZE ${db.schema}.${db.table}`);
    const cfg = listenerConfig(db, o.listener, sink.exchange, o, PTO_SETTINGS);
    const args =
      o.childLoader === 'tsx'
        ? ['--import', 'tsx', LISTENER_FILE]
        : ['--input-type=module', '--eval', await listenerJs()];
    const proc = spawn(process.execPath, args, {
      cwd: ROOT,
      env: { ...process.env, PTO_LISTENER_CONFIG: JSON.stringify(cfg) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    child = proc;
    let out = '';
    proc.stdout?.setEncoding('utf8');
    proc.stdout?.on('data', (chunk: string) => (out += chunk));
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    let peak = { cpuSeconds: 0, peakRssMiB: 0 };
    const sample = () => {
      if (proc.pid === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
      try {
        peak = procStats(proc.pid);
      } catch {
        // exited between the check and the read
      }
    };
    const started = performance.now();
    let capped = false;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(
          `pg-transactional-outbox listener exited early (${proc.exitCode ?? proc.signalCode})`,
        );
      }
      sample();
      // Abandoned rows (the package gives up after maxAttempts, 5) will not be processed.
      const r = await db.pool.query(
        `SELECT count(*)::int AS n FROM ${db.schema}.${db.table}
          WHERE processed_at IS NULL AND abandoned_at IS NULL`,
      );
      if (r.rows[0].n === 0) break;
      if (performance.now() - started > maxSeconds * 1000) {
        capped = true;
        break;
      }
      await sleep(100);
    }
    sample();
    proc.kill('SIGTERM');
    const killer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
    const s = await db.pool.query(
      `SELECT count(*) FILTER (WHERE processed_at IS NOT NULL)::int AS done,
              count(*) FILTER (WHERE abandoned_at IS NOT NULL)::int AS abandoned,
              extract(epoch FROM max(processed_at) - min(processed_at))::float8 AS span
         FROM ${db.schema}.${db.table}`,
    );
    const done = s.rows[0].done as number;
    const abandoned = s.rows[0].abandoned as number;
    const span = Number(s.rows[0].span);
    const problems = /^problems (.*)$/m.exec(out);
    const p = problems
      ? (JSON.parse(problems[1] as string) as { warn: number; error: number; first: string[] })
      : { warn: NaN, error: NaN, first: [] };
    if (p.first.length > 0)
      console.error(`pg-transactional-outbox (${o.listener}) logged: ${p.first.join(' | ')}`);
    return {
      peer: `pg-transactional-outbox (${o.listener})`,
      messages: o.messages,
      keys: o.keys,
      'msg/s': round(done / span, 0),
      'relay CPU s / 10k': round((peak.cpuSeconds / done) * 10_000, 2),
      'peak RSS MiB (max)': round(peak.peakRssMiB, 0),
      'in queue': await sink.depth(),
      done:
        `${done}/${o.messages}` +
        (abandoned > 0 ? `, ${abandoned} abandoned` : '') +
        (capped ? ` (${maxSeconds} s cap)` : ''),
      'warn/err': `${p.warn}/${p.error}`,
      settings: settingsText(cfg) + (o.childLoader === 'tsx' ? ', under tsx' : ''),
    };
  } finally {
    if (child) await stopProcess(child, 'SIGKILL');
    await sink?.close();
    await db.drop();
  }
}

/** Waits until the replication listener holds its slot (Mailroom's latency awaits relay.start()). */
async function waitUntilListening(db: PeerDb, listener: PtoListenerKind): Promise<void> {
  if (listener === 'polling') {
    await sleep(200);
    return;
  }
  const deadline = performance.now() + 15_000;
  while (performance.now() < deadline) {
    const r = await db.pool.query('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [db.slot]);
    if (r.rows[0]?.active) return;
    await sleep(20);
  }
  throw new Error(`replication slot ${db.slot} never became active`);
}

export async function ptoLatency(
  o: { rate: number; seconds: number; listener: PtoListenerKind } & Tuning,
): Promise<Row> {
  const db = await peerDb(o.listener);
  let sink: Awaited<ReturnType<typeof brokerSink>> | undefined;
  let consumer: Awaited<ReturnType<typeof timedConsumer>> | undefined;
  let listener: PtoListener | undefined;
  try {
    sink = await brokerSink();
    const committedAt = new Map<string, number>();
    const confirmedAt = new Map<string, number>();
    consumer = await timedConsumer(sink.queue);
    const cfg = listenerConfig(db, o.listener, sink.exchange, o, PTO_LATENCY_SETTINGS);
    listener = await startPtoListener(cfg, (id) => {
      if (!confirmedAt.has(id)) confirmedAt.set(id, performance.now());
    });
    await waitUntilListening(db, o.listener);
    const store = initializeMessageStorage(
      { outboxOrInbox: 'outbox', settings: ptoBaseSettings(db.schema, db.table) },
      getDisabledLogger(),
    );
    const achieved = await pacedWriters(
      db.pool,
      o,
      async (client, i) => {
        const key = `k${i % 1000}`;
        const id = randomUUID();
        await store(
          {
            id,
            aggregateType: 'bench',
            aggregateId: key,
            messageType: 'bench.latency',
            segment: key,
            concurrency: 'sequential',
            payload: payload256(i),
          },
          client,
        );
        return id;
      },
      committedAt,
    );
    const columns = await latencyColumns(committedAt, confirmedAt, consumer.receivedAt);
    const left = await db.pool.query(
      `SELECT array_agg(id::text) AS ids FROM ${db.schema}.${db.table} WHERE processed_at IS NULL`,
    );
    const unprocessed = (left.rows[0].ids ?? []) as string[];
    if (unprocessed.length > 0) {
      console.error(
        `pg-transactional-outbox (${o.listener}) left unprocessed: ${unprocessed.slice(0, 5).join(', ')}`,
      );
    }
    const p = listener.problems();
    if (p.first.length > 0)
      console.error(`pg-transactional-outbox (${o.listener}) logged: ${p.first.join(' | ')}`);
    return {
      peer: `pg-transactional-outbox (${o.listener})`,
      'offered msg/s': o.rate,
      'achieved msg/s': round(achieved, 0),
      ...columns,
      'left unprocessed': unprocessed.length,
      'warn/err': `${p.warn}/${p.error}`,
      settings: settingsText(cfg),
    };
  } finally {
    await listener?.stop();
    await consumer?.close();
    await sink?.close();
    await db.drop();
  }
}
