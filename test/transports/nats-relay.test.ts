// End to end: PostgreSQL outbox → Relay → NatsTransport → a JetStream stream, with the
// connection cut twice while the relay delivers. Every committed message ends up in the stream
// exactly once (republished copies are dropped by Nats-Msg-Id), each key's messages in enqueue
// order; a message for a subject no stream captures is dead-lettered with the subject named.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Outbox, Relay } from '../../src/core/index.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import { NatsTransport } from '../../src/transports/nats/index.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';
import {
  admin,
  deleteStream,
  NATS_PORT,
  storedMessages,
  uniquePrefix,
  uniqueStreamName,
} from './nats-helpers.js';

let db: TestDb;
const streamName = uniqueStreamName();
const prefix = uniquePrefix();

before(async () => {
  db = await createTestDb('nats_relay');
});

after(async () => {
  await db.drop();
  await deleteStream(streamName);
});

async function streamCount(): Promise<number> {
  const a = await admin();
  try {
    return (await a.jsm.streams.info(streamName)).state.messages;
  } catch {
    return 0;
  } finally {
    await a.close();
  }
}

describe('Relay with NatsTransport', () => {
  it('delivers a PostgreSQL outbox to a JetStream stream once per message, in key order, across connection cuts', async () => {
    const proxy = await TcpProxy.start({ targetPort: NATS_PORT });
    const transport = new NatsTransport({
      url: `nats://127.0.0.1:${proxy.port}`,
      subjectPrefix: prefix,
      // The relay's stream, created at start: it captures the orders topics only.
      ensureStream: { name: streamName, subjects: [`${prefix}.orders.>`] },
      ackTimeoutMs: 3000,
    });
    const relay = new Relay({
      store: db.store,
      transport,
      batchSize: 50,
      pollIntervalMs: 20,
      retry: { baseDelayMs: 20, maxDelayMs: 200 },
    });
    let outages = 0;
    const deadErrors: string[] = [];
    relay.on('relay:transport:unavailable', () => outages++);
    relay.on('relay:message:dead', ({ error }) => deadErrors.push(error.message));
    const outbox = new Outbox({ store: db.store });
    const keys = Array.from({ length: 8 }, (_, k) => `order-${k}`);
    const ids: string[] = [];
    // A little latency, so that the cuts below tend to land while a batch waits for its PubAcks.
    proxy.delay(3);
    await relay.start();
    try {
      let strayId = '';
      for (let round = 0; round < 30; round++) {
        const batch = keys.flatMap((key) =>
          [0, 1].map((j) => ({
            topic: `orders.${key.endsWith('1') ? 'paid' : 'created'}`,
            key,
            payload: { key, n: round * 2 + j },
          })),
        );
        ids.push(...(await inTransaction(db.pool, (c) => outbox.enqueue(c, batch))));
        if (round === 5) {
          // No stream captures this subject: dead-lettered, the rest flows on.
          const stray = await inTransaction(db.pool, (c) =>
            outbox.enqueue(c, [{ topic: 'audit.stray', key: 'stray', payload: { stray: true } }]),
          );
          strayId = stray[0] ?? '';
        }
        if (round === 10 || round === 20) proxy.cut();
        await new Promise((r) => setTimeout(r, 10));
      }
      await waitUntil(async () => (await streamCount()) >= ids.length, 'every message in the stream', 60_000);
      await waitUntil(
        async () => (await db.count('dead_letter')) === 1,
        'the stray message dead-lettered',
        30_000,
      );
      const dead = await db.pool.query<{ id: string }>(`SELECT id FROM "${db.schema}".dead_letter`);
      assert.equal(dead.rows[0]?.id, strayId);
      assert.equal(deadErrors.length, 1);
      assert.match(
        deadErrors[0] ?? '',
        new RegExp(`subject "${prefix}\\.audit\\.stray"`),
        'the error names the subject',
      );
      assert.match(deadErrors[0] ?? '', /create a stream/);
    } finally {
      await relay.stop();
      await transport.close();
      await proxy.close();
    }

    const stored = await storedMessages(streamName);
    const storedIds = stored.map((m) => m.headers?.get('mailroom-id'));
    assert.equal(new Set(storedIds).size, storedIds.length, 'no message stored twice');
    assert.deepEqual(new Set(storedIds), new Set(ids), 'every committed message stored');
    const seen = new Map<string, number>();
    for (const m of stored) {
      const { key, n } = JSON.parse(Buffer.from(m.data).toString()) as { key: string; n: number };
      assert.equal(m.headers?.get('mailroom-key'), key);
      const last = seen.get(key) ?? -1;
      assert.equal(n, last + 1, `key ${key}: message ${n} stored after ${last}`);
      seen.set(key, n);
    }
    assert.deepEqual(
      [...seen.values()],
      keys.map(() => 59),
    );
    assert.equal(await db.count('outbox'), 0);
    console.log(`# stored=${stored.length} keys=${keys.length} outages seen by the relay=${outages}`);
  });
});
