// `mailroom relay --transport redis://…` as an operator runs it: the built command in a process of
// its own, delivering from PostgreSQL to a Redis stream per topic.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Outbox } from '../../src/core/index.js';
import { spawnCli, stopCli } from '../helpers/cli.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from '../helpers/postgres.js';
import { deleteKeys, readStreams, REDIS_URL, uniquePrefix } from './redis-helpers.js';

let db: TestDb;
let outbox: Outbox;
const prefix = uniquePrefix();
before(async () => {
  db = await createTestDb('rediscli');
  outbox = new Outbox({ store: db.store });
});
after(async () => {
  await deleteKeys(prefix);
  await db?.drop();
});

describe('mailroom relay --transport redis://', () => {
  it('adds outbox messages to the topic stream, the key in order, and exits 0 on SIGTERM', async () => {
    const topic = `${prefix}orders`;
    const reader = await readStreams([topic]);
    const ids = await inTransaction(db.pool, async (client) =>
      outbox.enqueue(
        client,
        [0, 1, 2, 3].map((n) => ({ topic, key: 'k', payload: { n } })),
      ),
    );
    const relay = spawnCli([
      'relay',
      '--database-url',
      DATABASE_URL,
      '--schema',
      db.schema,
      '--transport',
      REDIS_URL,
      '--poll-interval-ms',
      '50',
    ]);
    let output = '';
    relay.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    relay.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    try {
      const got = await reader.take(4, 20_000).catch((err: Error) => {
        throw new Error(`${err.message}\n${output}`);
      });
      assert.deepEqual(
        got.map((m) => m.id),
        ids,
      );
      assert.deepEqual(
        got.map((m) => (JSON.parse(m.payload.toString()) as { n: number }).n),
        [0, 1, 2, 3],
      );
    } finally {
      const code = await stopCli(relay);
      await reader.close();
      assert.equal(code, 0, `the relay exits 0 on SIGTERM\n${output}`);
    }
  });
});
