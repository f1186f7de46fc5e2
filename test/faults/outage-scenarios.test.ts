/**
 * The fault scenarios of relay hardening, each with `mailroom relay` (or a relay process) at its
 * default settings against the real PostgreSQL and RabbitMQ, the broker reached through a TCP
 * proxy that refuses or black-holes it:
 *
 * - a broker outage longer than the retry budget: no attempt spent, no dead letter, nothing lost;
 * - a hung broker: the publish deadline releases the batch and another relay takes it over;
 * - a message that kills the relay: dead-lettered after maxAttempts, its key flows on.
 *
 *   FAULT_OUTAGE_S=3900 npm run test:faults   an outage of 65 minutes (default 40 s)
 *   FAULT_WAKEUP=replication node scripts/run-tests.mjs --faults test/faults/outage-scenarios.test.ts
 *                                            the same with relays tailing the log (one slot)
 *   FAULT_WAKEUP=replication FAULT_TABLELESS=1 node scripts/run-tests.mjs --faults test/faults/outage-scenarios.test.ts
 *                                            the outage with table-less writers (the other two
 *                                            scenarios are about rows and leases: see below)
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Outbox } from '../../src/core/index.js';
import { PostgresStore } from '../../src/stores/postgres/index.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import { bindConsumer, type Received } from '../helpers/amqp.js';
import { spawnCli } from '../helpers/cli.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';

const OUTAGE_S = Number(process.env.FAULT_OUTAGE_S ?? 40);
/** How the relays learn of new messages: notify (the default), poll or replication. */
const WAKEUP = process.env.FAULT_WAKEUP ?? 'notify';
/** The slot relays share with --wakeup replication (one reads the log, the others stand by). */
const SLOT = `mr_outage_${randomBytes(3).toString('hex')}`;
/** Writers enqueue table-less (needs FAULT_WAKEUP=replication). */
const TABLELESS = process.env.FAULT_TABLELESS === '1';
if (TABLELESS && WAKEUP !== 'replication')
  throw new Error('FAULT_TABLELESS=1 needs FAULT_WAKEUP=replication');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The distinct message ids a consumer received. */
const receivedIds = (consumer: { received: readonly Received[] }) =>
  new Set(consumer.received.map((r) => r.id));

/** Per key, the ids in the order they were first delivered. */
function firstOrder(seen: readonly Received[]): Map<string, string[]> {
  const done = new Set<string>();
  const byKey = new Map<string, string[]>();
  for (const s of seen) {
    if (done.has(s.id) || s.key === null) continue;
    done.add(s.id);
    byKey.set(s.key, [...(byKey.get(s.key) ?? []), s.id]);
  }
  return byKey;
}

function relayArgs(db: TestDb, amqpPort: number, exchange: string): string[] {
  // Every setting at its default: retries, attempts, lease, publish deadline, probes.
  return [
    'relay',
    '--database-url',
    DATABASE_URL,
    '--schema',
    db.schema,
    '--transport',
    `amqp://guest:guest@127.0.0.1:${amqpPort}`,
    '--exchange',
    exchange,
    '--wakeup',
    WAKEUP,
    ...(WAKEUP === 'replication' ? ['--slot', SLOT] : []),
    '--log-level',
    'info',
  ];
}

function output(child: ChildProcess): { text: () => string } {
  let text = '';
  child.stderr?.on('data', (d: Buffer) => (text += d.toString()));
  child.stdout?.on('data', (d: Buffer) => (text += d.toString()));
  return { text: () => text };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(20_000)]);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

describe('relay hardening fault scenarios', () => {
  let db: TestDb;
  let proxy: TcpProxy;
  const children = new Set<ChildProcess>();

  before(async () => {
    db = await createTestDb('outage');
    proxy = await TcpProxy.start({ targetPort: 5672 });
  });
  after(async () => {
    await Promise.all([...children].map(stopChild));
    await proxy.close();
    if (WAKEUP === 'replication') {
      // A slot left behind keeps WAL on this machine for ever.
      await waitUntil(async () => {
        const res = await db.pool.query(
          `SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = $1 AND active`,
          [SLOT],
        );
        return res.rows[0].n === 0;
      }, 'the slot released').catch(() => undefined);
      await db.pool.query(`SELECT pg_drop_replication_slot($1)`, [SLOT]).catch(() => undefined);
      await db.pool.query(`DROP PUBLICATION IF EXISTS "${db.schema}_outbox"`).catch(() => undefined);
    }
    await db.drop();
  });

  async function clean() {
    await db.pool.query(`TRUNCATE "${db.schema}".outbox, "${db.schema}".dead_letter`);
  }

  async function counts() {
    const res = await db.pool.query(
      `SELECT count(*)::int AS n, coalesce(max(attempts), 0)::int AS max_attempts,
              count(*) FILTER (WHERE lease_token IS NOT NULL)::int AS leased,
              (SELECT count(*)::int FROM "${db.schema}".dead_letter) AS dead
       FROM "${db.schema}".outbox`,
    );
    return res.rows[0] as { n: number; max_attempts: number; leased: number; dead: number };
  }

  it(
    `delivers everything and dead-letters nothing after a ${OUTAGE_S} s broker outage, at default retry settings`,
    { timeout: (OUTAGE_S + 300) * 1000 },
    async () => {
      await clean();
      proxy.heal();
      const exchange = `mr_outage_${randomBytes(3).toString('hex')}`;
      const consumer = await bindConsumer(exchange);
      const relay = spawnCli(relayArgs(db, proxy.port, exchange));
      children.add(relay);
      const log = output(relay);
      if (TABLELESS) {
        // A table-less enqueue needs the slot: the relay creates it as it starts.
        await waitUntil(
          async () =>
            (await db.pool.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [SLOT]))
              .rowCount === 1,
          'the relay to create its slot',
          30_000,
        );
      }
      const outbox = new Outbox({
        store: TABLELESS
          ? new PostgresStore({ pool: db.pool, schema: db.schema, tableless: true, slot: SLOT })
          : db.store,
      });
      // One writer, transactions one after another: per key, commit order is enqueue order.
      const committed: string[] = [];
      const expected = new Map<string, string[]>();
      let writing = true;
      const writer = (async () => {
        let n = 0;
        while (writing) {
          const batch = Array.from({ length: 2 }, () => ({
            topic: 'orders.outage',
            key: `k${n++ % 200}`,
            payload: { n },
          }));
          const ids = await inTransaction(db.pool, (c) => outbox.enqueue(c, batch));
          batch.forEach((m, i) => expected.set(m.key, [...(expected.get(m.key) ?? []), ids[i] as string]));
          committed.push(...ids);
          await sleep(100);
        }
      })();
      await waitUntil(() => consumer.received.length >= 20, 'the first deliveries', 30_000);

      // The outage: every connection reset, every new one refused.
      proxy.refuse();
      proxy.cut();
      const outageStart = Date.now();
      let sampled: Awaited<ReturnType<typeof counts>> | undefined;
      while (Date.now() - outageStart < OUTAGE_S * 1000) {
        await sleep(1000);
        // Three quarters in: the relay has found the outage long ago.
        if (!sampled && Date.now() - outageStart > OUTAGE_S * 750) sampled = await counts();
      }
      const backlogAtEnd = (await counts()).n;
      proxy.heal();
      writing = false;
      await writer;

      // After the next probe (at most probeMaxDelayMs, 30 s, away) the backlog drains one message
      // per key per round trip: a deep per-key backlog (an hour of outage) drains at a few
      // hundred messages a second on this machine (issue 12's hot-key limit), so the deadline
      // grows with the backlog.
      const drainStart = Date.now();
      try {
        await waitUntil(
          () => committed.every((id) => receivedIds(consumer).has(id)),
          'every committed message at the broker',
          Math.max(120_000, backlogAtEnd * 20),
          250,
        );
      } catch (err) {
        console.log(`# relay log (last 20 lines):\n${log.text().split('\n').slice(-20).join('\n')}`);
        throw err;
      }
      const drainMs = Date.now() - drainStart;
      const final = await counts();
      console.log(
        `# outage ${OUTAGE_S}s: committed=${committed.length} backlogAtEnd=${backlogAtEnd} ` +
          `received=${consumer.received.length} dead=${final.dead} drainMs=${drainMs} sampled=${JSON.stringify(sampled)}`,
      );
      await stopChild(relay);
      await consumer.close();

      if (TABLELESS) {
        // Table-less messages wait in the log (the slot keeps the WAL): nothing spilled.
        assert.equal(sampled?.n, 0, 'nothing written into the table during the outage');
      } else {
        assert.ok(sampled && sampled.n > 0, 'messages waited out the outage in the outbox');
      }
      assert.equal(sampled?.max_attempts, 0, 'no message spent an attempt during the outage');
      assert.equal(sampled?.leased, 0, 'no row stayed leased during the outage');
      assert.equal(final.dead, 0, 'no dead letters');
      const order = firstOrder(consumer.received);
      for (const [key, ids] of expected) assert.deepEqual(order.get(key), ids, `key ${key} in commit order`);
      const unavailableLines = log
        .text()
        .split('\n')
        .filter((l) => l.includes('transport unavailable')).length;
      assert.equal(unavailableLines, 1, 'one log line for the outage, not one per message');
    },
  );

  it(
    'releases a batch a hung broker never confirms at the publish deadline, and another relay takes it over',
    {
      timeout: 180_000,
      // Table-less messages have no lease to take over: they stay with the relay that reads the
      // slot until it publishes them (the outage scenario above covers a silent broker there).
      skip: TABLELESS ? 'table-less messages are not leased; see the outage scenario' : false,
    },
    async () => {
      await clean();
      proxy.heal();
      const exchange = `mr_hung_${randomBytes(3).toString('hex')}`;
      const consumer = await bindConsumer(exchange);
      const a = spawnCli(relayArgs(db, proxy.port, exchange));
      children.add(a);
      const logA = output(a);
      const outbox = new Outbox({ store: db.store });
      const first = await inTransaction(db.pool, (c) =>
        outbox.enqueue(
          c,
          Array.from({ length: 20 }, (_, i) => ({ topic: 'orders.hung', key: `k${i % 5}`, payload: i })),
        ),
      );
      await waitUntil(() => first.every((id) => receivedIds(consumer).has(id)), 'relay A to deliver', 30_000);

      // The broker link goes silent: A's next batch is published into the void.
      proxy.blackhole();
      const claimedByA = new Promise<void>((resolve) => {
        const check = setInterval(async () => {
          if ((await counts()).leased > 0) {
            clearInterval(check);
            resolve();
          }
        }, 100);
      });
      const second = await inTransaction(db.pool, (c) =>
        outbox.enqueue(
          c,
          Array.from({ length: 20 }, (_, i) => ({
            topic: 'orders.hung',
            key: `k${i % 5}`,
            payload: 100 + i,
          })),
        ),
      );
      await claimedByA;
      // Relay B reaches the broker directly. It cannot take A's leased batch until A lets go.
      const b = spawnCli(relayArgs(db, 5672, exchange));
      children.add(b);
      await waitUntil(
        () => second.every((id) => receivedIds(consumer).has(id)),
        'relay B to deliver the batch A gave up on',
        120_000,
        250,
      );
      const final = await counts();
      await stopChild(b);
      proxy.heal();
      await stopChild(a);
      await consumer.close();

      assert.match(
        logA.text(),
        /transport unavailable[^\n]*(publish_timeout|confirm_timeout)/,
        'A gave up on the silent broker at a deadline',
      );
      assert.equal(final.dead, 0);
      const attempts = consumer.received.filter((s) => second.includes(s.id)).map((s) => s.attempt);
      assert.deepEqual(
        [...new Set(attempts)],
        ['1'],
        "B published each on its first counted attempt: A's abandoned publish spent none",
      );
    },
  );

  it(
    'dead-letters a message that kills the relay after maxAttempts, and its key flows on',
    {
      timeout: 300_000,
      // Table-less: test/replication/tableless.test.ts runs the same killer through the read mark.
      skip: TABLELESS ? 'covered for table-less messages by test/replication/tableless.test.ts' : false,
    },
    async () => {
      await clean();
      proxy.heal();
      const exchange = `mr_killer_${randomBytes(3).toString('hex')}`;
      const consumer = await bindConsumer(exchange);
      const outbox = new Outbox({ store: db.store });
      const [good, poison, after1, after2] = await inTransaction(db.pool, (c) =>
        outbox.enqueue(c, [
          { topic: 'orders.killer', key: 'victim', payload: 'fine' },
          { topic: 'orders.killer', key: 'victim', payload: 'kill-me' },
          { topic: 'orders.killer', key: 'victim', payload: 'after 1' },
          { topic: 'orders.killer', key: 'victim', payload: 'after 2' },
        ]),
      );
      const fixture = fileURLToPath(new URL('../fixtures/killer-relay.ts', import.meta.url));
      let kills = 0;
      // A supervisor: restart the relay whenever it dies, until the key has flowed past the poison.
      const deadline = Date.now() + 280_000;
      while (!receivedIds(consumer).has(after2 as string) && Date.now() < deadline) {
        const child = spawn(process.execPath, ['--import', 'tsx', fixture], {
          env: {
            ...process.env,
            DATABASE_URL,
            SCHEMA: db.schema,
            AMQP_URL: `amqp://guest:guest@127.0.0.1:${proxy.port}`,
            EXCHANGE: exchange,
            LEASE_MS: '1000',
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        children.add(child);
        const exited = new Promise<NodeJS.Signals | null>((r) =>
          child.once('exit', (_code, signal) => r(signal)),
        );
        const done = waitUntil(
          () => receivedIds(consumer).has(after2 as string),
          'the key to flow',
          280_000,
          100,
        ).then(() => 'done' as const);
        const result = await Promise.race([exited, done.catch(() => 'timeout' as const)]);
        if (result === 'SIGKILL') kills++;
        await stopChild(child);
        children.delete(child);
        if (Date.now() > deadline) break;
      }
      const letters = await db.store.listDeadLetters();
      console.log(`# killer: kills=${kills} dead=${letters.length} delivered=${consumer.received.length}`);
      await consumer.close();

      assert.equal(kills, 12, 'killed once per attempt, at the default maxAttempts of 12');
      assert.deepEqual(
        letters.map((l) => l.id),
        [poison],
      );
      assert.match(letters[0]?.lastError ?? '', /claimed 12 times/);
      assert.deepEqual(
        [...new Set(consumer.received.map((s) => s.id))],
        [good, after1, after2],
        'the key went on in order past the poison',
      );
    },
  );
});
