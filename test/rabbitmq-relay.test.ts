import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import amqp from 'amqplib';
import { Outbox, Relay } from '../src/core/index.js';
import { RabbitMqTransport } from '../src/transports/rabbitmq/index.js';
import { AMQP_URL, bindConsumer } from './helpers/amqp.js';
import { spawnCli } from './helpers/cli.js';
import { closeConnectionNamed } from './transports/rabbitmq-helpers.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';
import { audit, runWriters } from './helpers/writers.js';

describe('relay to RabbitMQ, end to end', () => {
  let db: TestDb;
  before(async () => {
    db = await createTestDb('e2e');
  });
  after(async () => db.drop());

  it('loses nothing and invents nothing when relay processes are SIGKILLed mid-batch', async (t) => {
    const exchange = `mr_kill_${randomBytes(3).toString('hex')}`;
    const consumer = await bindConsumer(exchange);
    t.after(() => consumer.close());
    const outbox = new Outbox({ store: db.store });
    const args = [
      'relay',
      '--database-url',
      DATABASE_URL,
      '--schema',
      db.schema,
      '--transport',
      AMQP_URL,
      '--exchange',
      exchange,
      '--lease-ms',
      '1000',
      '--batch-size',
      '40',
      '--poll-interval-ms',
      '100',
      '--log-level',
      'warn',
    ];
    let writing = true;
    const writers = runWriters({
      pool: db.pool,
      outbox,
      writers: 4,
      keys: 12,
      topic: 'orders.created',
      until: () => !writing,
      pauseMs: 4,
    });
    let kills = 0;
    try {
      // Relays come and go: one or two at a time, each SIGKILLed after a random moment.
      for (let round = 0; round < 10; round++) {
        const relays = Array.from({ length: 1 + (round % 2) }, () => spawnCli(args));
        await new Promise((r) => setTimeout(r, 250 + Math.random() * 500));
        for (const relay of relays) {
          relay.kill('SIGKILL');
          kills++;
        }
        await Promise.all(
          relays.map((r) => new Promise((res) => (r.exitCode !== null ? res(null) : r.on('exit', res)))),
        );
      }
    } finally {
      writing = false;
    }
    const written = await writers;
    assert.ok(written.committed.length > 200, `enough traffic (${written.committed.length} committed)`);
    const last = spawnCli(args);
    let stderr = '';
    last.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      const committed = new Set(written.committed.map((w) => w.id));
      await waitUntil(
        () => [...committed].every((id) => consumer.received.some((r) => r.id === id)) && true,
        'every committed message to arrive',
        60_000,
        100,
      );
      await waitUntil(async () => (await db.count()) === 0, 'the outbox to drain', 20_000);
    } finally {
      last.kill('SIGTERM');
      const code = await new Promise((res) =>
        last.exitCode !== null ? res(last.exitCode) : last.on('exit', res),
      );
      assert.equal(code, 0, `graceful exit on SIGTERM\n${stderr}`);
    }
    // Every relay has published all it will. A message published now, after all of them, reaches
    // the queue behind them: once the consumer has it, it has had everything before it too.
    const sentinel = `sentinel-${randomBytes(4).toString('hex')}`;
    const conn = await amqp.connect(AMQP_URL);
    try {
      const ch = await conn.createConfirmChannel();
      ch.publish(exchange, 'sentinel', Buffer.from('{}'), { messageId: sentinel });
      await ch.waitForConfirms();
    } finally {
      await conn.close();
    }
    await waitUntil(() => consumer.received.some((r) => r.id === sentinel), 'the sentinel message');
    const result = audit(
      written,
      consumer.received.map((r) => r.id).filter((id) => id !== sentinel),
    );
    console.log(
      `# kills=${kills} committed=${result.committed} rolledBack=${written.rolledBack.length} received=${result.received} ` +
        `duplicates=${result.duplicates} lost=${result.lost.length} phantom=${result.phantom.length} orderViolations=${result.orderViolations.length}`,
    );
    assert.deepEqual(result.lost, [], 'no committed message lost');
    assert.deepEqual(result.phantom, [], 'no rolled-back message delivered');
    assert.deepEqual(result.orderViolations, [], 'per-key order kept');
    assert.equal(await db.count('dead_letter'), 0);
  });

  it('keeps delivering, without loss, when the broker drops the relay connection mid-stream', async () => {
    const exchange = `mr_drop_${randomBytes(3).toString('hex')}`;
    const consumer = await bindConsumer(exchange);
    const connectionName = `mailroom-test-${randomBytes(3).toString('hex')}`;
    const transport = new RabbitMqTransport({
      url: AMQP_URL,
      exchange,
      socketOptions: { clientProperties: { connection_name: connectionName } },
    });
    const relay = new Relay({
      store: db.store,
      transport,
      batchSize: 50,
      pollIntervalMs: 50,
      retry: { baseDelayMs: 50, maxDelayMs: 200 },
    });
    await relay.start();
    const outbox = new Outbox({ store: db.store });
    const ids: string[] = [];
    try {
      for (let i = 0; i < 30; i++) {
        const batch = Array.from({ length: 40 }, (_, j) => ({
          topic: 'drop.test',
          key: `k${j % 5}`,
          payload: { i, j },
        }));
        ids.push(...(await inTransaction(db.pool, (c) => outbox.enqueue(c, batch))));
        if (i === 10 || i === 20) {
          // Close the relay's connection from the broker side, as an operator or a failover would.
          await closeConnectionNamed(connectionName);
        }
      }
      await waitUntil(
        () => {
          const got = new Set(consumer.received.map((r) => r.id));
          return ids.every((id) => got.has(id));
        },
        'every message after the connection drops',
        30_000,
      );
    } finally {
      await relay.stop();
      await transport.close();
      await consumer.close().catch(() => undefined);
    }
    const result = audit(
      { committed: ids.map((id) => ({ id, key: null, writeStart: 0, committedAt: 0 })), rolledBack: [] },
      consumer.received.map((r) => r.id),
    );
    assert.deepEqual(result.lost, []);
  });
});
