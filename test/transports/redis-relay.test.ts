// End to end: messages written in PostgreSQL transactions, delivered by a Relay through the Redis
// Streams transport, read back from the streams with XREAD. Per-key order, nothing lost, nothing
// invented; a topic whose key holds a string ends as a dead letter naming the key, without
// holding up other keys; an outage of the server (a proxy that stops answering) spends no attempt.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Outbox, Relay } from '../../src/core/index.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import { RedisStreamsTransport } from '../../src/transports/redis/index.js';
import { decodeStreamEntry } from '../../src/transports/redis/redis-wire.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';
import {
  deleteKeys,
  readStreams,
  REDIS_HOST,
  REDIS_PORT,
  REDIS_URL,
  testClient,
  uniquePrefix,
} from './redis-helpers.js';

const prefix = uniquePrefix();
let db: TestDb;
let outbox: Outbox;

before(async () => {
  db = await createTestDb('redis_relay');
  outbox = new Outbox({ store: db.store });
});

after(async () => {
  await db.drop();
  await deleteKeys(prefix);
});

/** Writes `perKey` messages for each key, one transaction per round, keys interleaved. */
async function writeMessages(topic: string, keys: string[], perKey: number): Promise<Map<string, string[]>> {
  const written = new Map<string, string[]>(keys.map((k) => [k, []]));
  for (let n = 0; n < perKey; n++) {
    await inTransaction(db.pool, async (client) => {
      for (const key of keys) {
        const id = await outbox.enqueue(client, { topic, key, type: 'test.step', payload: { key, n } });
        written.get(key)?.push(id);
      }
    });
  }
  return written;
}

describe('relay from PostgreSQL to Redis Streams', () => {
  it('delivers every committed message once, each key in commit order, and drains the outbox', async () => {
    const topic = 'orders';
    const stream = `${prefix}${topic}`;
    const keys = ['a', 'b', 'c', 'd', 'e'];
    const written = await writeMessages(topic, keys, 40);
    const keyless = await inTransaction(db.pool, (client) =>
      outbox.enqueue(client, { topic, payload: { keyless: true } }),
    );
    const transport = new RedisStreamsTransport({ url: REDIS_URL, stream: `${prefix}{topic}` });
    const reader = await readStreams([stream]);
    const relay = new Relay({ store: db.store, transport, batchSize: 64, pollIntervalMs: 50 });
    await relay.start();
    try {
      const entries = await reader.take(keys.length * 40 + 1, 30_000);
      await waitUntil(async () => (await db.count()) === 0, 'the outbox to drain', 20_000);
      const byKey = new Map<string, string[]>();
      for (const entry of entries)
        byKey.set(entry.key ?? '', [...(byKey.get(entry.key ?? '') ?? []), entry.id]);
      for (const key of keys)
        assert.deepEqual(byKey.get(key), written.get(key), `key ${key} in commit order`);
      assert.deepEqual(byKey.get(''), [keyless]);
      const decoded = decodeStreamEntry(reader.entries[0]?.fields ?? [], stream);
      assert.ok(decoded.ok);
      assert.equal(decoded.message.type, 'test.step');
      assert.equal(decoded.message.attempt, 1);
    } finally {
      await relay.stop();
      await reader.close();
      await transport.close();
    }
    assert.equal(await db.count('dead_letter'), 0);
  });

  it('dead-letters a message whose stream key holds a string, naming the key, while other keys go on', async () => {
    const good = 'shipments';
    const bad = 'blocked';
    const client = await testClient();
    try {
      await client.set(`${prefix}${bad}`, 'not a stream');
    } finally {
      await client.quit();
    }
    const written = await writeMessages(good, ['x', 'y'], 10);
    const badId = await inTransaction(db.pool, (c) =>
      outbox.enqueue(c, { topic: bad, key: 'x', payload: {} }),
    );
    const transport = new RedisStreamsTransport({ url: REDIS_URL, stream: `${prefix}{topic}` });
    const reader = await readStreams([`${prefix}${good}`]);
    const relay = new Relay({ store: db.store, transport, pollIntervalMs: 50 });
    await relay.start();
    try {
      const entries = await reader.take(20, 20_000);
      assert.deepEqual(
        entries.filter((e) => e.key === 'y').map((e) => e.id),
        written.get('y'),
      );
      await waitUntil(async () => (await db.count('dead_letter')) === 1, 'the dead letter', 20_000);
      const [dead] = await db.store.listDeadLetters({ ids: [badId] });
      assert.ok(dead, 'the refused message is a dead letter');
      assert.equal(dead.attempts, 1, 'permanent at the first attempt');
      assert.match(dead.lastError ?? '', new RegExp(`key "${prefix}${bad}" exists and is not a stream`));
    } finally {
      await relay.stop();
      await reader.close();
      await transport.close();
    }
  });

  it('spends no attempt while the server does not answer, and delivers once it does', async () => {
    const topic = 'payments';
    const proxy = await TcpProxy.start({ targetHost: REDIS_HOST, targetPort: REDIS_PORT });
    const transport = new RedisStreamsTransport({
      url: `redis://127.0.0.1:${proxy.port}`,
      stream: `${prefix}{topic}`,
      connectTimeoutMs: 500,
      replyTimeoutMs: 500,
    });
    const reader = await readStreams([`${prefix}${topic}`]);
    const relay = new Relay({
      store: db.store,
      transport,
      pollIntervalMs: 50,
      publishTimeoutMs: 500,
      probeMinDelayMs: 50,
      probeMaxDelayMs: 200,
    });
    let paused = 0;
    relay.on('relay:transport:unavailable', () => paused++);
    await transport.start();
    proxy.blackhole();
    await relay.start();
    try {
      const written = await writeMessages(topic, ['p', 'q'], 5);
      await waitUntil(() => paused > 0, 'the relay to see the outage', 10_000);
      await new Promise((r) => setTimeout(r, 1000));
      const { rows } = await db.pool.query<{ attempts: number }>(`SELECT attempts FROM ${db.schema}.outbox`);
      assert.equal(rows.length, 10, 'nothing delivered during the outage');
      assert.ok(
        rows.every((r) => r.attempts === 0),
        `no attempt spent: ${rows.map((r) => r.attempts).join(',')}`,
      );
      proxy.heal();
      const entries = await reader.take(10, 20_000);
      for (const key of ['p', 'q']) {
        assert.deepEqual(
          entries.filter((e) => e.key === key).map((e) => e.id),
          written.get(key),
        );
      }
      await waitUntil(async () => (await db.count()) === 0, 'the outbox to drain', 20_000);
    } finally {
      proxy.heal();
      await relay.stop();
      await reader.close();
      await transport.close();
      await proxy.close();
    }
  });
});
