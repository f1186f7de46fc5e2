// `mailroom relay --transport stomp://…` as an operator runs it (the built command in a process
// of its own), delivering from PostgreSQL to RabbitMQ's STOMP plugin and to ActiveMQ, atomic
// groups included (published in one broker transaction).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Outbox } from '../../src/core/index.js';
import { uniqueTopics } from '../../src/testkit/transport-conformance.js';
import { spawnCli, stopCli } from '../helpers/cli.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from '../helpers/postgres.js';
import { BROKERS, deleteRabbitQueues, subscribe } from './stomp-helpers.js';

const rabbitQueues = new Set<string>();
let db: TestDb;
let outbox: Outbox;

before(async () => {
  db = await createTestDb('stompcli');
  outbox = new Outbox({ store: db.store });
});

after(async () => {
  await db.drop();
  await deleteRabbitQueues(rabbitQueues);
});

describe('mailroom relay --transport stomp://', () => {
  for (const broker of BROKERS) {
    it(`delivers outbox messages and an atomic group to ${broker.name}`, async () => {
      const [topic] = uniqueTopics(1) as [string];
      if (broker.name === 'rabbitmq') rabbitQueues.add(topic);
      const subscriber = await subscribe(broker.url, [`/queue/${topic}`]);
      const ids = await inTransaction(db.pool, async (client) => [
        await outbox.enqueue(client, { topic, key: 'k', payload: { n: 0 } }),
        ...(await outbox.enqueue(
          client,
          [1, 2, 3].map((n) => ({ topic, key: 'k', payload: { n } })),
          { atomic: true },
        )),
      ]);
      const relay = spawnCli([
        'relay',
        '--database-url',
        DATABASE_URL,
        '--schema',
        db.schema,
        '--transport',
        broker.url,
        '--poll-interval-ms',
        '50',
      ]);
      let output = '';
      relay.stderr?.on('data', (d: Buffer) => (output += d.toString()));
      relay.stdout?.on('data', (d: Buffer) => (output += d.toString()));
      try {
        const frames = await subscriber.waitFor(4, 20_000).catch((err: Error) => {
          throw new Error(`${err.message}\n${output}`);
        });
        assert.deepEqual(
          frames.map((f) => (JSON.parse(f.body.toString()) as { n: number }).n),
          [0, 1, 2, 3],
          'the key keeps its order, the group whole',
        );
        assert.deepEqual(
          frames.map((f) => f.headers['mailroom-id']),
          ids,
        );
        const group = frames.slice(1).map((f) => f.headers['mailroom-group-size']);
        assert.deepEqual(group, ['3', '3', '3'], 'the members carry their group');
      } finally {
        const code = await stopCli(relay);
        await subscriber.close();
        assert.equal(code, 0, `the relay exits 0 on SIGTERM\n${output}`);
      }
    });
  }
});
