import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  AckReceiver,
  Inbox,
  InvalidMessageError,
  Outbox,
  PermanentDeliveryError,
  Relay,
  toReceivedMessage,
  WaitError,
  type MessageInput,
  type OutboxStore,
} from '../src/index.js';
import { generateWebhookSecret, verifyWebhook } from '../src/callbacks/index.js';
import { ConfigError } from '../src/core/errors/config-error.js';
import { PGliteStore } from '../src/stores/pglite/index.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

describe('Acknowledged delivery on PostgreSQL', () => {
  let db: TestDb;
  let outbox: Outbox;
  let memory: MemoryTransport;
  let relay: Relay;

  before(async () => {
    db = await createTestDb('ack');
    outbox = new Outbox({ store: db.store });
  });
  afterEach(async () => {
    await relay?.stop();
  });
  after(async () => {
    await db.drop();
  });

  function startRelay(store: OutboxStore = db.store): Promise<void> {
    memory = new MemoryTransport();
    relay = new Relay({ store, transport: memory, pollIntervalMs: 50, ackSweepIntervalMs: 100 });
    return relay.start();
  }

  const enqueue = (message: MessageInput) =>
    inTransaction(db.pool, (client) => outbox.enqueue(client, message));

  it('keeps a delivered message awaiting its acknowledgement, then marks it acknowledged with the result', async () => {
    await startRelay();
    const id = await enqueue({
      topic: 'payment.requested',
      payload: { amount: 5 },
      ack: { timeoutMs: 60_000 },
    });
    const acknowledged = outbox.waitFor(id, { until: 'acknowledged', timeoutMs: 20_000 });
    const [sent] = await memory.waitFor(1);
    assert.equal(sent?.id, id);
    assert.equal(sent?.headers['mailroom-ack-to'], 'mailroom.ack');
    await waitUntil(async () => (await outbox.status(id)).state === 'awaiting-ack', 'awaiting-ack');

    // The receiver: processes it in its inbox; the acknowledgement goes out through its outbox.
    const inbox = new Inbox({ store: db.store, consumer: 'payments' });
    await inbox.handle(toReceivedMessage(sent!), async (_tx, ctx) => ctx.ack({ receipt: 'r-1' }));
    await waitUntil(() => memory.messagesFor('mailroom.ack').length > 0, 'the ack message');
    const [ackMessage] = memory.messagesFor('mailroom.ack');
    // The sender's end applies it.
    const receiver = new AckReceiver({ store: db.store });
    assert.equal(await receiver.receive(toReceivedMessage(ackMessage!)), 'acknowledged');
    const status = await acknowledged;
    assert.equal(status.state, 'acknowledged');
    assert.equal(status.consumer, 'payments');
    assert.deepEqual(status.result, { receipt: 'r-1' });
    assert.equal(await receiver.receive(toReceivedMessage(ackMessage!)), 'duplicate');
    assert.equal(memory.messagesFor('payment.requested').length, 1, 'acknowledged in time: never resent');
  });

  it('resends with the same id maxResends times, then expires it and delivers the cancellation; a late ack does not revive it', async () => {
    await startRelay();
    const id = await enqueue({
      topic: 'stock.reserve',
      key: 'sku-1',
      payload: { qty: 1 },
      ack: { timeoutMs: 1000, maxResends: 2, onExpire: 'stock.reserve.cancelled' },
    });
    const waiting = outbox.waitFor(id, { until: 'acknowledged', timeoutMs: 20_000 });
    await assert.rejects(waiting, (err: unknown) => err instanceof WaitError && err.code === 'expired');
    const copies = memory.messagesFor('stock.reserve');
    assert.equal(copies.length, 3, 'first delivery and two resends');
    assert.ok(
      copies.every((c) => c.id === id),
      'every copy has the same id',
    );
    await waitUntil(() => memory.messagesFor('stock.reserve.cancelled').length > 0, 'the cancellation');
    const [cancel] = memory.messagesFor('stock.reserve.cancelled');
    const payload = JSON.parse(cancel!.payload.toString('utf8'));
    assert.equal(payload.id, id);
    assert.equal(payload.topic, 'stock.reserve');
    assert.match(payload.reason, /no acknowledgement within 1000 ms of each of 3 deliveries/);
    assert.equal(cancel!.key, 'sku-1', 'the cancellation keeps the key, so it follows the key order');
    const expired = await outbox.status(id);
    assert.equal(expired.state, 'expired');
    assert.equal(expired.resends, 2);

    const receiver = new AckReceiver({ store: db.store });
    assert.equal(await receiver.receive({ id: 'x', payload: { id, consumer: 'slow' } }), 'late');
    const after = await outbox.status(id);
    assert.equal(after.state, 'expired', 'a late acknowledgement is recorded, the message stays expired');
    assert.equal(after.consumer, 'slow');
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(memory.messagesFor('stock.reserve').length, 3, 'no resend after expiry');
  });

  it('keeps an acknowledgement that arrives before the relay settled the delivery', async () => {
    const id = await enqueue({ topic: 'early.bird', payload: {}, ack: { timeoutMs: 1000, maxResends: 1 } });
    const receiver = new AckReceiver({ store: db.store });
    assert.equal(await receiver.receive({ id: 'x', payload: { id, consumer: 'quick' } }), 'early');
    await startRelay();
    await memory.waitFor(1);
    await new Promise((r) => setTimeout(r, 1500));
    const status = await outbox.status(id);
    assert.equal(status.state, 'acknowledged');
    assert.equal(status.topic, 'early.bird', 'the settle filled in the message');
    assert.equal(memory.messagesFor('early.bird').length, 1, 'never resent');
  });

  it('tells dead from awaiting: a message that dies is dead, waitFor rejects, and its callback is queued', async () => {
    memory = new MemoryTransport({
      failWith: () => new PermanentDeliveryError('rejected by the test'),
    });
    relay = new Relay({ store: db.store, transport: memory, pollIntervalMs: 50 });
    await relay.start();
    const id = await enqueue({
      topic: 'doomed',
      payload: {},
      ack: { timeoutMs: 60_000 },
      callback: { url: 'http://127.0.0.1:9/hook' },
    });
    await assert.rejects(
      outbox.waitFor(id, { until: 'delivered', timeoutMs: 10_000 }),
      (err: unknown) => err instanceof WaitError && err.code === 'dead',
    );
    assert.equal((await outbox.status(id)).state, 'dead');
    const cb = await db.pool.query(`SELECT event, url FROM "${db.schema}".callback WHERE message_id = $1`, [
      id,
    ]);
    assert.deepEqual(cb.rows, [{ event: 'dead', url: 'http://127.0.0.1:9/hook' }]);
  });

  it('queues delivered and acknowledged callbacks, and resolves waitFor delivered for a plain message', async () => {
    await startRelay();
    const plain = await enqueue({ topic: 'plain', payload: {} });
    const delivered = await outbox.waitFor(plain, { timeoutMs: 10_000 });
    assert.equal(delivered.state, 'unknown', 'a plain message is deleted once delivered');
    // Already delivered when the wait begins: resolves at once rather than waiting out the timeout.
    const started = performance.now();
    assert.equal((await outbox.waitFor(plain, { timeoutMs: 10_000 })).state, 'unknown');
    assert.ok(performance.now() - started < 5_000);
    const id = await enqueue({
      topic: 'with.callback',
      payload: {},
      ack: { timeoutMs: 60_000 },
      callback: { url: 'https://example.test/hook' },
    });
    await outbox.waitFor(id, { timeoutMs: 10_000 });
    await new AckReceiver({ store: db.store }).receive({
      id: 'x',
      payload: { id, consumer: 'c', result: 7 },
    });
    const cb = await db.pool.query(
      `SELECT event, detail FROM "${db.schema}".callback WHERE message_id = $1 ORDER BY occurred_at, event`,
      [id],
    );
    assert.deepEqual(
      cb.rows.map((r) => r.event),
      ['delivered', 'acknowledged'],
    );
    assert.deepEqual(cb.rows[1].detail, { consumer: 'c', result: 7 });
    const counts = await db.store.ackCounts();
    assert.ok(counts.callbacksPending >= 2);
  });

  it('resolves waitFor in another process, woken by the database', async () => {
    await startRelay();
    const id = await enqueue({ topic: 'cross.process', payload: {}, ack: { timeoutMs: 60_000 } });
    const code = `
      import { Outbox } from ${JSON.stringify(new URL('../src/index.ts', import.meta.url).href)};
      import { PostgresStore } from ${JSON.stringify(new URL('../src/stores/postgres/index.ts', import.meta.url).href)};
      const store = await PostgresStore.connect({ connectionString: ${JSON.stringify(DATABASE_URL)}, schema: ${JSON.stringify(db.schema)} });
      const outbox = new Outbox({ store });
      process.stdout.write('waiting\\n');
      try {
        const s = await outbox.waitFor(${JSON.stringify(id)}, { until: 'acknowledged', timeoutMs: 20000 });
        process.stdout.write(JSON.stringify(s) + '\\n');
      } finally { await store.close(); }
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += String(d)));
    const exited = new Promise<number | null>((r) => child.on('exit', r));
    await waitUntil(() => out.includes('waiting'), 'the child to start waiting', 20_000);
    await memory.waitFor(1);
    await new AckReceiver({ store: db.store }).receive({
      id: 'x',
      payload: { id, consumer: 'far', result: 'ok' },
    });
    assert.equal(await exited, 0);
    const status = JSON.parse(out.trim().split('\n').pop()!);
    assert.equal(status.state, 'acknowledged');
    assert.equal(status.consumer, 'far');
  });

  it('applies the effect once when a lost confirm makes the relay publish a message again (same id)', async () => {
    let lost = 0;
    memory = new MemoryTransport({ loseConfirm: (m) => m.topic === 'twice' && lost++ < 2 });
    relay = new Relay({ store: db.store, transport: memory, pollIntervalMs: 50, retry: { baseDelayMs: 10 } });
    await relay.start();
    const id = await enqueue({ topic: 'twice', payload: {} });
    await outbox.waitFor(id, { timeoutMs: 10_000 });
    const copies = memory.messagesFor('twice');
    assert.equal(copies.length, 3, 'the broker got the message three times');
    assert.ok(copies.every((c) => c.id === id));
    const inbox = new Inbox({ store: db.store, consumer: 'dedupe' });
    let effects = 0;
    const outcomes = [];
    for (const copy of copies) {
      outcomes.push(
        (
          await inbox.handle(toReceivedMessage(copy), async () => {
            effects++;
          })
        ).status,
      );
    }
    assert.deepEqual(outcomes, ['processed', 'duplicate', 'duplicate']);
    assert.equal(effects, 1);
  });

  it('POSTs signed delivered and acknowledged callbacks from a relay given a secret', async () => {
    const secret = generateWebhookSecret();
    const received: Array<{ type: string; data: Record<string, unknown>; webhookId: string }> = [];
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        try {
          const verified = verifyWebhook({ secret, headers: req.headers, body });
          const event = JSON.parse(body.toString('utf8'));
          received.push({ type: event.type, data: event.data, webhookId: verified.id });
          res.writeHead(204).end();
        } catch {
          res.writeHead(401).end();
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/mailroom`;
    try {
      memory = new MemoryTransport();
      relay = new Relay({
        store: db.store,
        transport: memory,
        pollIntervalMs: 50,
        callbacks: { secret, pollIntervalMs: 50 },
      });
      await relay.start();
      const id = await enqueue({
        topic: 'billed',
        payload: {},
        ack: { timeoutMs: 60_000 },
        callback: { url },
      });
      await outbox.waitFor(id, { timeoutMs: 10_000 });
      await new AckReceiver({ store: db.store }).receive({
        id: 'x',
        payload: { id, consumer: 'billing', result: 3 },
      });
      await waitUntil(() => received.length >= 2, 'two callbacks');
      assert.deepEqual(
        received.map((r) => r.type),
        ['message.delivered', 'message.acknowledged'],
      );
      assert.equal(received[1]?.data.id, id);
      assert.equal(received[1]?.data.consumer, 'billing');
      assert.equal(received[1]?.data.result, 3);
      await waitUntil(
        async () =>
          (await db.pool.query(`SELECT 1 FROM "${db.schema}".callback WHERE message_id = $1`, [id]))
            .rowCount === 0,
        'both callbacks settled as delivered (deleted)',
      );
    } finally {
      await relay.stop();
      await new Promise((r) => server.close(r));
    }
    assert.throws(
      () => new Relay({ store: db.store, transport: new MemoryTransport(), callbacks: { secret: 'short' } }),
      ConfigError,
    );
  });

  it('refuses bad ack and callback requests at enqueue, writing nothing', async () => {
    const before = await db.count();
    const bad: Array<[MessageInput, RegExp]> = [
      [
        { topic: 't', payload: {}, ack: { timeoutMs: 10 } },
        /ack\.timeoutMs must be a number of milliseconds from 1000/,
      ],
      [{ topic: 't', payload: {}, ack: { timeoutMs: 5000, maxResends: -1 } }, /ack\.maxResends/],
      [
        { topic: 't', payload: {}, ack: { timeoutMs: 5000, retries: 2 } as never },
        /unknown ack field "retries"/,
      ],
      [{ topic: 't', payload: {}, callback: { url: 'ftp://x' } }, /http:\/\/ or https:\/\//],
      [{ topic: 't', payload: {}, headers: { 'mailroom-ack-to': 'x' } }, /Mailroom's own/],
    ];
    for (const [message, re] of bad) {
      await assert.rejects(
        enqueue(message),
        (err: unknown) => err instanceof InvalidMessageError && re.test(err.message),
      );
    }
    assert.equal(await db.count(), before);
    await assert.rejects(
      new AckReceiver({ store: db.store }).receive({ id: 'x', payload: { id: 'nope', consumer: 'c' } }),
      InvalidMessageError,
    );
    await assert.rejects(
      outbox.status('42'),
      (err: unknown) => err instanceof InvalidMessageError && /"42"/.test(err.message),
    );
    await assert.rejects(outbox.waitFor('42'), InvalidMessageError);
    await assert.rejects(
      outbox.waitFor(await enqueue({ topic: 'x', payload: 1 }), { until: 'soon' as never }),
      ConfigError,
    );
  });
});

describe('Acknowledged delivery on PGlite', () => {
  it('acknowledges, and resends then expires without an acknowledgement', async () => {
    const store = await PGliteStore.connect();
    await store.migrate();
    const memory = new MemoryTransport();
    const relay = new Relay({ store, transport: memory, pollIntervalMs: 50, ackSweepIntervalMs: 100 });
    try {
      await relay.start();
      const outbox = new Outbox({ store });
      const [acked, ignored] = await store.db.transaction((tx) =>
        outbox.enqueue(tx, [
          { topic: 'a', payload: {}, ack: { timeoutMs: 60_000 } },
          { topic: 'b', payload: {}, ack: { timeoutMs: 1000, maxResends: 1, onExpire: 'b.cancelled' } },
        ]),
      );
      await outbox.waitFor(acked!, { timeoutMs: 10_000 });
      await new AckReceiver({ store }).receive({ id: 'x', payload: { id: acked, consumer: 'edge' } });
      assert.equal(
        (await outbox.waitFor(acked!, { until: 'acknowledged', timeoutMs: 5000 })).consumer,
        'edge',
      );
      await assert.rejects(
        outbox.waitFor(ignored!, { until: 'acknowledged', timeoutMs: 15_000 }),
        (err: unknown) => err instanceof WaitError && err.code === 'expired',
      );
      assert.equal(memory.messagesFor('b').length, 2);
      await waitUntil(() => memory.messagesFor('b.cancelled').length === 1, 'the cancellation');
    } finally {
      await relay.stop();
      await store.close();
    }
  });
});
