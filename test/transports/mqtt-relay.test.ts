// PostgreSQL outbox → Relay → MqttTransport → Mosquitto, end to end in one process: messages of a
// key arrive in the order they were written, also across a connection cut while the relay runs
// (the messages without a PUBACK are `unavailable`, spend no attempt, and are published again on
// a new connection); a message whose topic MQTT cannot carry is dead-lettered without holding up
// other keys.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { Outbox, Relay } from '../../src/core/index.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import { MqttTransport } from '../../src/transports/mqtt/index.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';
import { MQTT_URL, subscribe } from './mqtt-helpers.js';

describe('relay to Mosquitto over MQTT, end to end', () => {
  let db: TestDb;
  before(async () => {
    db = await createTestDb('mqttrelay');
  });
  after(async () => db.drop());

  it('delivers every outbox message, each key in order, across a dropped connection; a bad topic is dead-lettered', async () => {
    const run = randomBytes(4).toString('hex');
    const topic = `relaytest.${run}.orders`;
    const subscriber = await subscribe(MQTT_URL, [`relaytest/${run}/#`]);
    const proxy = await TcpProxy.start({ targetPort: Number(new URL(MQTT_URL).port || 1883) });
    const transport = new MqttTransport({ url: `mqtt://127.0.0.1:${proxy.port}` });
    const relay = new Relay({
      store: db.store,
      transport,
      batchSize: 50,
      pollIntervalMs: 50,
      retry: { baseDelayMs: 50, maxDelayMs: 200 },
    });
    const outbox = new Outbox({ store: db.store });
    const keys = ['k0', 'k1', 'k2', 'k3', 'k4'];
    const perKey = 60;
    const ids: string[] = [];
    await relay.start();
    try {
      for (let n = 0; n < perKey; n += 10) {
        const batch = keys.flatMap((key) =>
          Array.from({ length: 10 }, (_, i) => ({ topic, key, payload: { key, n: n + i } })),
        );
        ids.push(...(await inTransaction(db.pool, (c) => outbox.enqueue(c, batch))));
        if (n === 20) proxy.cut(); // as a broker restart drops the relay's connection
      }
      const [bad] = await inTransaction(db.pool, (c) =>
        outbox.enqueue(c, [{ topic: `relaytest.${run}.+`, key: 'bad', payload: { bad: true } }]),
      );
      await waitUntil(
        () => new Set(subscriber.received.map((m) => m.id)).size >= ids.length,
        `all ${ids.length} messages at the subscriber`,
        30_000,
      );
      await waitUntil(async () => (await db.count('outbox')) === 0, 'the outbox drained', 15_000);
      assert.equal(
        await db.count('dead_letter'),
        1,
        'only the message with a wildcard topic is a dead letter',
      );
      const dead = await db.pool.query<{ id: string; last_error: string | null }>(
        `SELECT * FROM "${db.schema}".dead_letter`,
      );
      assert.equal(dead.rows[0]?.id, bad);

      const received = new Set(subscriber.received.map((m) => m.id));
      for (const id of ids) assert.ok(received.has(id), `message ${id} was not delivered`);
      // First deliveries of each key in write order (a copy after a lost PUBACK may repeat one).
      for (const key of keys) {
        const seen = new Set<string>();
        const order: number[] = [];
        for (const m of subscriber.received) {
          if (m.key !== key || seen.has(m.id)) continue;
          seen.add(m.id);
          order.push((JSON.parse(m.payload.toString()) as { n: number }).n);
        }
        assert.deepEqual(
          order,
          Array.from({ length: perKey }, (_, i) => i),
          `key ${key} in order`,
        );
      }
      assert.ok(
        subscriber.received.every((m) => m.topicName === `relaytest/${run}/orders`),
        'dots become slashes',
      );
    } finally {
      await relay.stop();
      await transport.close();
      await proxy.close();
      await subscriber.close();
    }
  });
});
