/**
 * The fault-injection suite: writers commit and roll back while relay processes are killed,
 * connections are cut, delayed and black-holed, the database and the broker restart, leases
 * expire under the relays' feet, poison messages die and the broker rejects messages. The run
 * ends with the verifier: lost 0, phantom 0, per-key order violations 0.
 *
 *   npm run test:faults                      short run (CI), FAULT_DURATION_S=60 by default
 *   FAULT_DURATION_S=1800 npm run test:faults  the soak
 *   FAULT_WAKEUP=replication node scripts/run-tests.mjs --faults test/faults/fault-suite.test.ts
 *                                            the same with relays tailing the log (one slot: one
 *                                            relay reads it, the others are hot standbys)
 *   FAULT_ATOMIC=1 node scripts/run-tests.mjs --faults test/faults/fault-suite.test.ts
 *                                            half the writers' transactions enqueue an atomic
 *                                            group (one key per group); the consumer checks every
 *                                            group arrived whole, and in order
 *   FAULT_WAKEUP=replication FAULT_TABLELESS=1 node scripts/run-tests.mjs --faults test/faults/fault-suite.test.ts
 *                                            the same with table-less writers: messages only in
 *                                            the log, the table only for retries
 */
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import amqp from 'amqplib';
import pg from 'pg';
import { Outbox } from '../../src/core/index.js';
import { PostgresStore } from '../../src/stores/postgres/index.js';
import { PostgresLedger } from '../../src/stores/postgres/ledger.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import { RabbitMqCollector } from '../../src/verify/rabbitmq-collector.js';
import { checkGroups } from '../../src/verify/group-check.js';
import { verifyDeliveries } from '../../src/verify/verify-report.js';
import { AMQP_URL } from '../helpers/amqp.js';
import { spawnCli } from '../helpers/cli.js';
import { createTestDb, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';

const run = promisify(execFile);
const DURATION_S = Number(process.env.FAULT_DURATION_S ?? 60);
const RELAYS = 3;
/** How the relays learn of new messages: notify (the default), poll or replication. */
const WAKEUP = process.env.FAULT_WAKEUP ?? 'notify';
/** Writers enqueue table-less (logical messages; needs FAULT_WAKEUP=replication). */
const TABLELESS = process.env.FAULT_TABLELESS === '1';
/** Half the writers' transactions enqueue their messages as an atomic group (one key per group). */
const ATOMIC = process.env.FAULT_ATOMIC === '1';
if (TABLELESS && WAKEUP !== 'replication')
  throw new Error('FAULT_TABLELESS=1 needs FAULT_WAKEUP=replication');
const KEYS = 200;

function pgVersion(): string {
  return readdirSync('/etc/postgresql').sort().at(-1) as string;
}

async function sh(cmd: string, args: string[], timeout = 120_000): Promise<void> {
  await run(cmd, args, { timeout });
}

/** Retries an operation that may meet a connection the last restart killed. */
async function retrying<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= 10) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

async function waitForPostgres(): Promise<void> {
  await waitUntil(
    async () => {
      const c = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/test' });
      c.on('error', () => undefined);
      try {
        await c.connect();
        await c.query('SELECT 1');
        return true;
      } catch {
        return false;
      } finally {
        await c.end().catch(() => undefined);
      }
    },
    'PostgreSQL to accept connections',
    60_000,
    250,
  );
}

describe('fault injection', () => {
  let db: TestDb;
  let pgProxy: TcpProxy;
  let amqpProxy: TcpProxy;
  const exchange = `mr_faults_${randomBytes(3).toString('hex')}`;
  const appName = `mailroom_fault_${randomBytes(3).toString('hex')}`;
  const slot = `mr_faults_${randomBytes(3).toString('hex')}`;

  before(async () => {
    db = await createTestDb('faults');
    pgProxy = await TcpProxy.start({ targetPort: 5432 });
    amqpProxy = await TcpProxy.start({ targetPort: 5672 });
  });
  after(async () => {
    await pgProxy.close();
    await amqpProxy.close();
    await waitForPostgres();
    if (WAKEUP === 'replication') {
      // The relays are gone (their walsenders with them, soon): drop the slot, or it would keep
      // WAL on this machine for ever.
      await waitUntil(async () => {
        const res = await db.pool.query(
          `SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = $1 AND active`,
          [slot],
        );
        return res.rows[0].n === 0;
      }, 'the slot released').catch(() => undefined);
      await db.pool.query(`SELECT pg_drop_replication_slot($1)`, [slot]).catch(() => undefined);
      await db.pool.query(`DROP PUBLICATION IF EXISTS "${db.schema}_outbox"`).catch(() => undefined);
    }
    await db.drop().catch(() => undefined);
  });

  it(
    `loses nothing, invents nothing and keeps per-key order under ${DURATION_S}s of faults (wakeup ${WAKEUP}${TABLELESS ? ', table-less' : ''}${ATOMIC ? ', atomic groups' : ''})`,
    { timeout: (DURATION_S + 1800) * 1000 },
    async () => {
      const ledger = new PostgresLedger(db.pool, db.schema);
      await ledger.setEnabled(true);
      // The verifier's queue only takes `orders.#`: `poison.*` messages are unroutable, and with
      // mandatory publishing (the default) the relay dead-letters them (a poison message per key).
      const collector = new RabbitMqCollector({
        url: AMQP_URL,
        exchange,
        queue: `${exchange}.verify`,
        binding: 'orders.#',
      });
      await collector.attach();
      await collector.start();
      // A full queue with reject-publish: while it is bound to the exchange, the broker nacks
      // every publish routed to it. The fault binds it for a second: a broker that rejects some
      // messages, then takes them again.
      let admin = await amqp.connect(AMQP_URL);
      admin.on('error', () => undefined);
      let adminCh = await admin.createChannel();
      const rejectQueue = `${exchange}.full`;
      const fillRejectQueue = async () => {
        await adminCh.assertQueue(rejectQueue, {
          durable: true,
          arguments: { 'x-max-length': 10, 'x-overflow': 'reject-publish' },
        });
        for (let i = 0; i < 10; i++) adminCh.sendToQueue(rejectQueue, Buffer.from('filler'));
      };
      await fillRejectQueue();

      const relayArgs = [
        'relay',
        '--database-url',
        `postgres://postgres@127.0.0.1:${pgProxy.port}/test`,
        '--schema',
        db.schema,
        '--transport',
        `amqp://guest:guest@127.0.0.1:${amqpProxy.port}`,
        '--exchange',
        exchange,
        // Retries, attempts and deadlines at their defaults: a setting that hides a defect (an
        // outage spending attempts hid behind --max-attempts 1000) must not be set here. The
        // short lease only compresses the wait for a killed relay's messages.
        '--lease-ms',
        '2000',
        '--batch-size',
        '100',
        '--wakeup',
        WAKEUP,
        ...(WAKEUP === 'replication' ? ['--slot', slot] : []),
        '--log-level',
        'error',
      ];
      const relays = new Set<ChildProcess>();
      const startRelay = () => {
        const child = spawnCli(relayArgs, { PGAPPNAME: appName });
        relays.add(child);
        child.on('exit', () => relays.delete(child));
        return child;
      };
      for (let i = 0; i < RELAYS; i++) startRelay();

      // Writers: business transactions with 1–4 messages on 40 keys, a fifth rolled back, one in
      // fifty messages poison. Errors (database restarting, connection cut) are part of the game:
      // the ledger, not the writer, says what committed.
      const outbox = new Outbox({
        store: TABLELESS
          ? new PostgresStore({ pool: db.pool, schema: db.schema, tableless: true, slot })
          : db.store,
      });
      const writerPool = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:5432/test', max: 6 });
      writerPool.on('error', () => undefined);
      let writing = true;
      let rolledBack = 0;
      let writeErrors = 0;
      const writer = async () => {
        while (writing) {
          let client: pg.PoolClient | undefined;
          try {
            client = await writerPool.connect();
            client.on('error', () => undefined);
            await client.query('BEGIN');
            const n = 1 + Math.floor(Math.random() * 4);
            // An atomic group shares one key and is poison as a whole (it is dead-lettered whole).
            const atomic = ATOMIC && Math.random() < 0.5;
            const groupKey = `k${Math.floor(Math.random() * KEYS)}`;
            const groupPoison = Math.random() < 0.02;
            const msgs = Array.from({ length: n }, () => {
              const key = atomic ? groupKey : `k${Math.floor(Math.random() * KEYS)}`;
              const poison = atomic ? groupPoison : Math.random() < 0.02;
              return { topic: poison ? `poison.${key}` : `orders.${key}`, key, payload: { at: Date.now() } };
            });
            await outbox.enqueue(client, msgs, { atomic });
            if (Math.random() < 0.2) {
              await client.query('ROLLBACK');
              rolledBack += n;
            } else {
              await client.query('COMMIT');
            }
            client.removeAllListeners('error');
            client.release();
          } catch {
            writeErrors++;
            client?.release(true);
            await new Promise((r) => setTimeout(r, 200));
          }
          await new Promise((r) => setTimeout(r, Math.random() * 15));
        }
      };
      const writers = Array.from({ length: 4 }, writer);

      // The faults, one every 0.5–2.5 s, each kind at least once when time allows.
      const counts: Record<string, number> = {};
      const faults: Array<[string, () => Promise<void>]> = [
        [
          'relay SIGKILL',
          async () => {
            const victims = [...relays].slice(0, 1 + Math.floor(Math.random() * 2));
            for (const v of victims) v.kill('SIGKILL');
            while (relays.size < RELAYS) startRelay();
          },
        ],
        ['broker link cut', async () => amqpProxy.cut()],
        ['database link cut', async () => pgProxy.cut()],
        [
          'broker link black-holed 3s',
          async () => {
            amqpProxy.blackhole();
            await new Promise((r) => setTimeout(r, 3000));
            amqpProxy.heal();
            amqpProxy.cut();
          },
        ],
        [
          'database link delayed 300ms for 2s',
          async () => {
            pgProxy.delay(300);
            await new Promise((r) => setTimeout(r, 2000));
            pgProxy.heal();
          },
        ],
        [
          'pg_terminate_backend',
          async () => {
            await db.pool
              .query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [
                appName,
              ])
              .catch(() => undefined);
          },
        ],
        [
          'lease clock jump',
          async () => {
            // As if the database clock jumped past every lease: other relays take the messages
            // while their holders are still publishing.
            await db.pool
              .query(
                `UPDATE "${db.schema}".outbox SET lease_until = now() - interval '1 second' WHERE lease_until IS NOT NULL`,
              )
              .catch(() => undefined);
          },
        ],
        [
          'broker rejects for 1s (full queue bound) then accepts',
          async () => {
            await fillRejectQueue().catch(() => undefined);
            await adminCh.bindQueue(rejectQueue, exchange, 'orders.#').catch(() => undefined);
            await new Promise((r) => setTimeout(r, 1000));
            await adminCh.unbindQueue(rejectQueue, exchange, 'orders.#').catch(() => undefined);
          },
        ],
        [
          'PostgreSQL restart',
          async () => {
            await sh('pg_ctlcluster', [
              '--skip-systemctl-redirect',
              pgVersion(),
              'main',
              'restart',
              '-m',
              'fast',
            ]);
            await waitForPostgres();
          },
        ],
        [
          'RabbitMQ restart',
          async () => {
            await sh('rabbitmqctl', ['-q', 'stop_app']);
            await sh('rabbitmqctl', ['-q', 'start_app']);
            await sh('rabbitmqctl', ['-q', 'await_startup']);
            // Our admin connection died with the broker.
            await admin.close().catch(() => undefined);
            admin = await amqp.connect(AMQP_URL);
            admin.on('error', () => undefined);
            adminCh = await admin.createChannel();
          },
        ],
      ];
      const rare = new Set(['PostgreSQL restart', 'RabbitMQ restart']);
      const deadline = Date.now() + DURATION_S * 1000;
      let i = 0;
      while (Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 500 + Math.random() * 2000));
        // First pass through every kind in order, then random picks (restarts about 1 in 15).
        let pick = faults[i % faults.length] as [string, () => Promise<void>];
        if (i >= faults.length) {
          do pick = faults[Math.floor(Math.random() * faults.length)] as [string, () => Promise<void>];
          while (rare.has(pick[0]) && Math.random() > 0.15);
        }
        i++;
        await pick[1]();
        counts[pick[0]] = (counts[pick[0]] ?? 0) + 1;
        while (relays.size < RELAYS) startRelay();
      }

      // Calm: heal everything, stop writing, let the relays drain, then verify.
      pgProxy.heal();
      amqpProxy.heal();
      writing = false;
      await Promise.all(writers);
      await adminCh.purgeQueue(rejectQueue).catch(() => undefined);
      await adminCh.deleteQueue(rejectQueue).catch(() => undefined);
      // A backlog built up under faults drains at a few thousand messages a second: give it time.
      const backlog = Number(
        (await retrying(() => db.pool.query(`SELECT count(*) AS n FROM "${db.schema}".outbox`))).rows[0].n,
      );
      const drainTimeoutMs = Math.max(180_000, backlog * 2);
      const outboxDrained = () =>
        waitUntil(
          async () =>
            Number(
              (
                await db.pool
                  .query(`SELECT count(*) AS n FROM "${db.schema}".outbox`)
                  .catch(() => ({ rows: [{ n: -1 }] }))
              ).rows[0].n,
            ) === 0,
          'the outbox to drain',
          drainTimeoutMs,
          500,
        );
      await outboxDrained();
      if (TABLELESS) {
        // Messages in the log are in no table: drained once the slot confirmed past the last write.
        const end = String(
          (await retrying(() => db.pool.query(`SELECT pg_current_wal_lsn()::text AS lsn`))).rows[0].lsn,
        );
        await waitUntil(
          async () =>
            (
              await db.pool
                .query(
                  `SELECT confirmed_flush_lsn >= $2::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $1`,
                  [slot, end],
                )
                .catch(() => ({ rows: [{ ok: false }] }))
            ).rows[0]?.ok === true,
          'the slot to confirm the last write',
          drainTimeoutMs,
          500,
        );
        // Read-again messages of killed relays went through the table: drained again.
        await outboxDrained();
      }
      await collector.settle(2000);
      for (const r of relays) r.kill('SIGTERM');
      await Promise.all(
        [...relays].map((r) => new Promise((res) => (r.exitCode !== null ? res(null) : r.on('exit', res)))),
      );

      const report = verifyDeliveries(
        await retrying(() => ledger.entries()),
        collector.ids,
        await retrying(() => ledger.state()),
      );
      const faultTotal = Object.values(counts).reduce((a, b) => a + b, 0);
      console.log(
        `# fault run (wakeup ${WAKEUP}${TABLELESS ? ', table-less' : ''}): ${DURATION_S}s, messages committed=${report.committed} delivered=${report.delivered} ` +
          `received=${report.received} rolledBack=${rolledBack} writeErrors=${writeErrors} faults=${faultTotal} ` +
          `lost=${report.lost.length} phantom=${report.phantom.length} orderViolations=${report.orderViolations.length} ` +
          `duplicates=${report.duplicates} deadLettered=${report.deadLettered.length} pending=${report.pending.length} ` +
          `collectorReconnects=${collector.reconnects}`,
      );
      console.log(`# faults injected: ${JSON.stringify(counts)}`);
      const groupCheck = checkGroups(collector.deliveries);
      if (report.orderViolations.length > 0) {
        // What the first violations were: positions of first arrival and the groups they came in.
        const at = (id: string) => {
          const i = collector.deliveries.findIndex((d) => d.id === id);
          const d = collector.deliveries[i];
          return `${id}@${i}${d?.group ? `(group ${d.group.id} ${d.group.index}/${d.group.size})` : ''}${d?.redelivered ? ' redelivered' : ''}`;
        };
        for (const v of report.orderViolations.slice(0, 5)) {
          console.log(
            `# order violation on key ${v.key}: ${at(v.late)} committed first, arrived after ${at(v.overtaken)}`,
          );
        }
      }
      if (ATOMIC) {
        console.log(
          `# atomic groups: seen=${groupCheck.groups} incomplete=${groupCheck.incomplete.length} broken=${groupCheck.broken.length}`,
        );
      }
      await collector.close({ deleteQueue: true });
      await writerPool.end();
      await admin.close().catch(() => undefined);

      assert.ok(report.committed > 100, 'enough traffic to mean something');
      assert.deepEqual(report.lost, [], 'lost');
      assert.deepEqual(report.phantom, [], 'phantom');
      assert.deepEqual(groupCheck.incomplete.slice(0, 10), [], 'atomic groups seen in part');
      assert.deepEqual(groupCheck.broken.slice(0, 10), [], 'atomic groups arriving out of order');
      if (ATOMIC) assert.ok(groupCheck.groups > 100, 'enough groups to mean something');
      assert.deepEqual(report.orderViolations.slice(0, 10), [], 'per-key order violations');
      assert.equal(report.pending.length, 0);
      // Every dead letter is a poison message, never a good one.
      const dead = await retrying(() => db.store.listDeadLetters());
      assert.ok(
        dead.every((d) => d.topic.startsWith('poison.')),
        'only poison messages die',
      );
      assert.ok(report.deadLettered.length > 0, 'poison messages were dead-lettered');
    },
  );
});
