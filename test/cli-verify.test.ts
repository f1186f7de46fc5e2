import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import amqp from 'amqplib';
import { Outbox, Relay, uuidv7 } from '../src/core/index.js';
import { RabbitMqTransport } from '../src/transports/rabbitmq/index.js';
import { RabbitMqCollector } from '../src/verify/index.js';
import { AMQP_URL } from './helpers/amqp.js';
import { runCli } from './helpers/cli.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

describe('mailroom verify', () => {
  let db: TestDb;
  const exchange = `mr_verify_${randomBytes(3).toString('hex')}`;
  const queue = `${exchange}.verify`;
  const common = () => [
    '--database-url',
    DATABASE_URL,
    '--schema',
    db.schema,
    '--transport',
    AMQP_URL,
    '--exchange',
    exchange,
    '--queue',
    queue,
  ];

  before(async () => {
    db = await createTestDb('verify');
  });
  after(async () => {
    await runCli(['verify', 'stop', ...common()]);
    const conn = await amqp.connect(AMQP_URL);
    const ch = await conn.createChannel();
    await ch.deleteExchange(exchange).catch(() => undefined);
    await conn.close();
    await db.drop();
  });

  it('passes when everything committed was delivered, and catches a lost and a phantom message', async () => {
    const outbox = new Outbox({ store: db.store });
    // Already in the outbox before verification starts: checked for loss, not order.
    await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 'early', payload: 0 }));
    const start = await runCli(['verify', 'start', ...common()]);
    assert.equal(start.code, 0, start.stderr);
    assert.match(start.stdout, /1 message\(s\) already in the outbox/);

    const transport = new RabbitMqTransport({ url: AMQP_URL, exchange });
    const relay = new Relay({ store: db.store, transport, pollIntervalMs: 50 });
    await relay.start();
    try {
      for (let i = 0; i < 20; i++) {
        await inTransaction(db.pool, (c) =>
          outbox.enqueue(c, [
            { topic: 'v.a', key: `k${i % 3}`, payload: i },
            { topic: 'v.b', payload: i },
          ]),
        );
      }
      await assert.rejects(
        inTransaction(db.pool, async (c) => {
          await outbox.enqueue(c, { topic: 'v.rolled', payload: 'no' });
          throw new Error('rollback');
        }),
      );
      await waitUntil(async () => (await db.count()) === 0, 'the relay to drain the outbox');
    } finally {
      await relay.stop();
      await transport.close();
    }
    const ok = await runCli(['verify', 'check', '--idle-ms', '500', ...common()]);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /committed +41/);
    assert.match(ok.stdout, /lost +0/);
    assert.match(ok.stdout, /phantom +0/);
    assert.match(ok.stdout, /verify: OK/);
    // Progress goes to stderr, one line per phase with the counts so far.
    assert.match(ok.stderr, /^verify check: reading queue \S+ until nothing arrives for 500ms \(\d/m);
    assert.match(ok.stderr, /^verify check: 41 deliveries read; saving them and reading the ledger \(/m);
    assert.match(
      ok.stderr,
      /^verify check: comparing 41 ledger entries with 41 deliveries recorded since start \(/m,
    );
    assert.doesNotMatch(ok.stdout, /verify check:/);

    // A message "settled" without being delivered (the bug this command exists to catch) …
    const lostId = await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 'v.lost', payload: 1 }));
    await db.pool.query(`DELETE FROM "${db.schema}".outbox WHERE id = $1`, [lostId]);
    // … and one delivered that no transaction committed.
    const phantomId = uuidv7();
    const conn = await amqp.connect(AMQP_URL);
    const ch = await conn.createConfirmChannel();
    ch.publish(exchange, 'v.phantom', Buffer.from('{}'), { messageId: phantomId, persistent: true });
    await ch.waitForConfirms();
    await conn.close();

    const bad = await runCli(['verify', 'check', '--idle-ms', '500', '--json', ...common()]);
    assert.equal(bad.code, 1, bad.stderr);
    const report = JSON.parse(bad.stdout);
    assert.deepEqual(report.lost, [lostId]);
    assert.deepEqual(report.phantom, [phantomId]);
    assert.equal(report.delivered, 42, 'deliveries from the first check are remembered');
    assert.match(bad.stderr, /comparing 42 ledger entries with 42 deliveries recorded since start/);
  });

  it('says on stderr how many messages it waits for, and stops waiting at --wait-ms', async () => {
    const outbox = new Outbox({ store: db.store });
    // No relay runs: the message stays in the outbox for the whole wait.
    const id = await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 'v.stuck', payload: 1 }));
    try {
      const r = await runCli([
        'verify',
        'check',
        '--wait-ms',
        '300',
        '--idle-ms',
        '200',
        '--json',
        ...common(),
      ]);
      const report = JSON.parse(r.stdout);
      assert.deepEqual(report.pending, [id]);
      assert.match(
        r.stderr,
        /^verify check: waiting up to 300ms for the outbox to empty: 1 message left \(/m,
      );
      assert.match(r.stderr, /^verify check: 1 message still in the outbox; reported as pending \(/m);
    } finally {
      await db.pool.query(`DELETE FROM "${db.schema}".outbox WHERE id = $1`, [id]);
    }
  });

  it('reports the deliveries read so far after every progressEvery of them', async () => {
    const progressQueue = `${exchange}.progress`;
    const seen: number[] = [];
    const collector = new RabbitMqCollector({
      url: AMQP_URL,
      exchange,
      queue: progressQueue,
      binding: 'v.progress',
      progressEvery: 3,
      onProgress: (n) => seen.push(n),
    });
    try {
      await collector.attach();
      const conn = await amqp.connect(AMQP_URL);
      const ch = await conn.createConfirmChannel();
      for (let i = 0; i < 7; i++)
        ch.publish(exchange, 'v.progress', Buffer.from('{}'), { messageId: uuidv7() });
      await ch.waitForConfirms();
      await conn.close();
      await collector.start();
      await waitUntil(() => collector.ids.length === 7, 'the collector to read 7 deliveries');
      assert.deepEqual(seen, [3, 6]);
    } finally {
      await collector.close({ deleteQueue: true });
    }
    assert.throws(() => new RabbitMqCollector({ url: AMQP_URL, progressEvery: 0 }), {
      name: 'ConfigError',
      message: /progressEvery must be a whole number of deliveries, at least 1, got 0/,
    });
  });

  it('gives up on a broker that never answers the AMQP handshake after connectTimeoutMs', async () => {
    // Accepts connections and says nothing: a black-holed link, or a server that is not RabbitMQ.
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    const collector = new RabbitMqCollector({
      url: `amqp://guest:s3cret@127.0.0.1:${port}`,
      queue: `${exchange}.never`,
      connectTimeoutMs: 300,
    });
    try {
      await assert.rejects(collector.attach(), (err: Error & { code?: string }) => {
        assert.equal(err.name, 'TransportError');
        assert.equal(err.code, 'unreachable');
        assert.match(
          err.message,
          new RegExp(`127\\.0\\.0\\.1:${port} did not answer as RabbitMQ within 300 ms`),
        );
        assert.doesNotMatch(err.message, /s3cret/);
        return true;
      });
    } finally {
      await collector.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('says what to do when the action is missing or the ledger is off', async () => {
    const none = await runCli(['verify', ...common()]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /verify needs an action: start, check or stop/);
    const other = await createTestDb('verify_off');
    try {
      const off = await runCli([
        'verify',
        'check',
        '--database-url',
        DATABASE_URL,
        '--schema',
        other.schema,
        '--transport',
        AMQP_URL,
      ]);
      assert.equal(off.code, 2);
      assert.match(off.stderr, /the ledger is off .* run `mailroom verify start` first/);
    } finally {
      await other.drop();
    }
  });
});
