// End to end: a PostgreSQL outbox, the Relay with the WebhookTransport, and a receiver made with
// createWebhookReceiver that hands each message to an Inbox. Per-key order, a handler failure
// retried, and an endpoint outage that spends no attempt.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, it } from 'node:test';

import { generateWebhookSecret } from '../../src/callbacks/index.js';
import { Outbox, Relay, type MessageInput } from '../../src/core/index.js';
import { Inbox } from '../../src/inbox/index.js';
import { createWebhookReceiver, WebhookTransport } from '../../src/transports/webhook/index.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';
import { listen, type TestServer } from './webhook-helpers.js';

const SECRET = generateWebhookSecret();

describe('relay to a webhook receiver, end to end', () => {
  let db: TestDb;
  let outbox: Outbox;
  let inbox: Inbox;
  before(async () => {
    db = await createTestDb('wh_relay');
    outbox = new Outbox({ store: db.store });
    inbox = new Inbox({ store: db.store, consumer: 'webhook-e2e' });
  });
  after(async () => {
    await db.drop();
  });

  function enqueue(messages: MessageInput[]): Promise<string[]> {
    return inTransaction(db.pool, async (client) => {
      const ids = await outbox.enqueue(client, messages);
      return Array.isArray(ids) ? ids : [ids];
    });
  }

  async function outboxRows(): Promise<Array<{ id: string; attempts: number }>> {
    const { rows } = await db.pool.query<{ id: string; attempts: number }>(
      `SELECT id::text, attempts FROM "${db.schema}".outbox`,
    );
    return rows;
  }

  for (const batch of [false, true]) {
    it(`${batch ? 'batch mode: ' : ''}delivers every message once per key order, retries a handler failure, and spends no attempt in an outage`, async () => {
      const processed: Array<{ id: string; key: string | null; n: number; attempt: number }> = [];
      let duplicates = 0;
      let failOnce: string | undefined;
      // The receiver hands each message to the inbox, as a real one would; the effect is recorded
      // in memory here. A handler that throws is answered 500.
      const receive = createWebhookReceiver({
        secret: SECRET,
        handler: async (m) => {
          if (m.id === failOnce) {
            failOnce = undefined;
            throw new Error('the handler fails once');
          }
          const result = await inbox.handle(m, async () => {
            processed.push({ id: m.id, key: m.key, n: (m.payload as { n: number }).n, attempt: m.attempt });
          });
          if (result.status === 'duplicate') duplicates++;
        },
      });
      let receiver: TestServer | undefined = await listen(createServer(receive));
      const port = receiver.port;
      const transport = new WebhookTransport({ url: `${receiver.url}/hooks/{topic}`, secret: SECRET, batch });
      const relay = new Relay({
        store: db.store,
        transport,
        pollIntervalMs: 50,
        probeMinDelayMs: 50,
        probeMaxDelayMs: 200,
        retry: { baseDelayMs: 50, maxDelayMs: 200 },
      });
      try {
        await relay.start();
        const keys = ['a', 'b', 'c', 'd'];
        const batch: MessageInput[] = Array.from({ length: 40 }, (_, n) => ({
          topic: 'order.events',
          key: keys[n % keys.length] as string,
          payload: { n },
        }));
        const ids = await enqueue(batch);
        failOnce = ids[5];
        await waitUntil(() => processed.length >= 40, 'the first 40 messages');
        for (const key of keys) {
          const ns = processed.filter((p) => p.key === key).map((p) => p.n);
          assert.deepEqual(
            ns,
            [...ns].sort((x, y) => x - y),
            `key ${key} delivered in order`,
          );
        }
        const retried = processed.find((p) => p.id === ids[5]);
        assert.equal(retried?.attempt, 2, 'the message whose handler failed was sent again, attempt 2');
        assert.equal(new Set(processed.map((p) => p.id)).size, 40);
        // The receiver has them all; the relay settles (deletes) them once it has the answers.
        await waitUntil(async () => (await outboxRows()).length === 0, 'all settled');

        // The endpoint goes away: messages written now wait without spending attempts.
        await receiver.close();
        receiver = undefined;
        const later = await enqueue(
          Array.from({ length: 10 }, (_, i) => ({
            topic: 'order.events',
            key: `late-${i % 3}`,
            payload: { n: 100 + i },
          })),
        );
        await new Promise((r) => setTimeout(r, 1000));
        const waiting = await outboxRows();
        assert.equal(waiting.length, 10, 'nothing delivered while the endpoint is down');
        assert.ok(
          waiting.every((row) => row.attempts === 0),
          `an outage spends no attempt: ${JSON.stringify(waiting.map((r) => r.attempts))}`,
        );
        receiver = await listen(createServer(receive), port);
        await waitUntil(
          () => later.every((id) => processed.some((p) => p.id === id)),
          'the messages after the outage',
        );
        for (const id of later) assert.equal(processed.find((p) => p.id === id)?.attempt, 1);
        await waitUntil(async () => (await outboxRows()).length === 0, 'settled after the outage');
        assert.equal(duplicates, 0);
      } finally {
        await relay.stop();
        await transport.close();
        await receiver?.close();
      }
    });
  }
});
