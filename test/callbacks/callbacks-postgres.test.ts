import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  CallbackDispatcher,
  createAckHandler,
  generateWebhookSecret,
  sendHttpAck,
  type CallbackPayload,
} from '../../src/callbacks/index.js';
import { Outbox, Relay, type MessageInput } from '../../src/core/index.js';
import { MemoryTransport } from '../../src/transports/memory/index.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';
import { answer, startReceiver, type Receiver } from './receiver.js';

const CALLBACK_SECRET = generateWebhookSecret();
const ACK_SECRET = generateWebhookSecret();

interface CallbackRow {
  id: string;
  message_id: string;
  event: string;
  attempts: number;
  last_error: string | null;
  dead_at: Date | null;
}

describe('Callbacks and HTTP acknowledgements on PostgreSQL', () => {
  let db: TestDb;
  let outbox: Outbox;
  let relay: Relay | undefined;
  const dispatchers: CallbackDispatcher[] = [];
  const closers: Array<() => Promise<void>> = [];

  before(async () => {
    db = await createTestDb('cbk');
    outbox = new Outbox({ store: db.store });
  });
  afterEach(async () => {
    await Promise.all(dispatchers.splice(0).map((d) => d.stop()));
    await relay?.stop();
    relay = undefined;
    await Promise.all(closers.splice(0).map((close) => close()));
    await db.pool.query(`DELETE FROM "${db.schema}".callback`);
  });
  after(async () => {
    await db.drop();
  });

  async function startRelay(): Promise<MemoryTransport> {
    const transport = new MemoryTransport();
    relay = new Relay({ store: db.store, transport, pollIntervalMs: 50 });
    await relay.start();
    return transport;
  }

  function startDispatcher(options: { maxAttempts?: number } = {}): CallbackDispatcher {
    const dispatcher = new CallbackDispatcher({
      store: db.store,
      secret: CALLBACK_SECRET,
      pollIntervalMs: 50,
      retry: { baseDelayMs: 10, maxDelayMs: 40 },
      ...options,
    });
    dispatcher.start();
    dispatchers.push(dispatcher);
    return dispatcher;
  }

  async function receiver(respond: Parameters<typeof startReceiver>[1]): Promise<Receiver> {
    const r = await startReceiver(CALLBACK_SECRET, respond);
    closers.push(() => r.close());
    return r;
  }

  const enqueue = (message: MessageInput) =>
    inTransaction(db.pool, (client) => outbox.enqueue(client, message));

  async function callbacks(): Promise<CallbackRow[]> {
    const res = await db.pool.query<CallbackRow>(
      `SELECT id::text, message_id::text, event, attempts, last_error, dead_at
       FROM "${db.schema}".callback ORDER BY occurred_at, id`,
    );
    return res.rows;
  }

  it('tells the callback URL delivered, then acknowledged after an HTTP ack, each verified', async () => {
    const hooks = await receiver((_n, _req, res) => answer(res, 200));
    const acks = createServer(createAckHandler({ store: db.store, secret: ACK_SECRET }));
    await new Promise<void>((resolve) => acks.listen(0, '127.0.0.1', resolve));
    closers.push(async () => {
      acks.closeAllConnections();
      await new Promise<void>((resolve) => acks.close(() => resolve()));
    });
    const ackUrl = `http://127.0.0.1:${(acks.address() as AddressInfo).port}/anything`;

    await startRelay();
    startDispatcher();
    const id = await enqueue({
      topic: 'payment.requested',
      payload: { amount: 5 },
      ack: { timeoutMs: 60_000 },
      callback: { url: hooks.url },
    });
    await waitUntil(() => hooks.received.length === 1, 'the delivered callback');
    assert.equal((await outbox.status(id)).state, 'awaiting-ack');

    // A receiver that does not run Mailroom acknowledges over HTTP.
    assert.equal(
      await sendHttpAck({
        url: ackUrl,
        secret: ACK_SECRET,
        id,
        consumer: 'payments',
        result: { receipt: 'r-9' },
      }),
      'acknowledged',
    );
    await waitUntil(() => hooks.received.length === 2, 'the acknowledged callback');
    await waitUntil(async () => (await callbacks()).length === 0, 'delivered callbacks deleted');

    assert.ok(hooks.received.every((r) => r.verified === true));
    const payloads = hooks.received.map((r) => JSON.parse(r.body) as CallbackPayload);
    assert.deepEqual(
      payloads.map((p) => [p.type, p.data.id, p.data.topic]),
      [
        ['message.delivered', id, 'payment.requested'],
        ['message.acknowledged', id, 'payment.requested'],
      ],
    );
    assert.equal(payloads[1]?.data.consumer, 'payments');
    assert.deepEqual(payloads[1]?.data.result, { receipt: 'r-9' });
    const webhookIds = hooks.received.map((r) => r.headers['webhook-id']);
    assert.notEqual(webhookIds[0], webhookIds[1], 'each outcome is a webhook of its own');
    const status = await outbox.status(id);
    assert.equal(status.state, 'acknowledged');
    assert.deepEqual(status.result, { receipt: 'r-9' });

    // An acknowledgement of an id this outbox has not delivered yet is recorded as early.
    assert.equal(
      await sendHttpAck({ url: ackUrl, secret: ACK_SECRET, id: randomUUID(), consumer: 'payments' }),
      'early',
    );
  });

  it('retries a 500 with the same webhook-id, and keeps a 404 dead in the table with why', async () => {
    const hooks = await receiver((n, request, res) => {
      if (request.path === '/gone') answer(res, 404, 'unknown hook');
      else answer(res, n === 1 ? 500 : 200);
    });
    await startRelay();
    const retried = await enqueue({ topic: 'order.placed', payload: 1, callback: { url: hooks.url } });
    await waitUntil(async () => (await callbacks()).length === 1, 'the first callback queued');
    const gone = hooks.url.replace('/hooks', '/gone');
    const refused = await enqueue({ topic: 'order.placed', payload: 2, callback: { url: gone } });
    await waitUntil(async () => (await callbacks()).length === 2, 'both callbacks queued');
    startDispatcher();
    await waitUntil(async () => {
      const rows = await callbacks();
      return rows.length === 1 && rows[0]?.dead_at !== null;
    }, 'one delivered, one dead');

    const [dead] = await callbacks();
    assert.equal(dead?.message_id, refused);
    assert.equal(dead?.attempts, 1);
    assert.match(
      dead?.last_error ?? '',
      new RegExp(`POST ${gone.replace(/\./g, '\\.')} answered 404 Not Found: unknown hook`),
    );
    const toHooks = hooks.received.filter((r) => r.path === '/hooks');
    assert.equal(toHooks.length, 2);
    assert.equal(toHooks[0]?.headers['webhook-id'], toHooks[1]?.headers['webhook-id']);
    assert.equal((JSON.parse(toHooks[0]?.body ?? '{}') as CallbackPayload).data.id, retried);
    const counts = await db.store.ackCounts();
    assert.deepEqual([counts.callbacksPending, counts.callbacksDead], [0, 1]);
  });

  it('two dispatchers on one table POST each callback once', async () => {
    const hooks = await receiver((_n, _req, res) => setTimeout(() => answer(res, 200), 5));
    await startRelay();
    const ids = await inTransaction(db.pool, (client) =>
      outbox.enqueue(
        client,
        Array.from({ length: 30 }, (_, i) => ({
          topic: 'order.placed',
          payload: i,
          callback: { url: hooks.url },
        })),
      ),
    );
    await waitUntil(async () => (await callbacks()).length === 30, 'thirty callbacks queued');
    startDispatcher();
    startDispatcher();
    await waitUntil(() => hooks.received.length >= 30, 'thirty callbacks POSTed');
    await waitUntil(async () => (await callbacks()).length === 0, 'every callback settled');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const webhookIds = hooks.received.map((r) => r.headers['webhook-id']);
    assert.equal(new Set(webhookIds).size, 30);
    assert.equal(webhookIds.length, 30);
    const messageIds = hooks.received.map((r) => (JSON.parse(r.body) as CallbackPayload).data.id).sort();
    assert.deepEqual(messageIds, [...ids].sort());
  });
});
