// `mailroom relay --transport mqtt://…` as an operator runs it: the built command in a process of
// its own, delivering from PostgreSQL to Mosquitto. Needs the `mqtt:` case in openTransport
// (src/cli/connect.ts) and a build (`npm run build`); skipped, saying so, until that case exists.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { Outbox } from '../../src/core/index.js';
import { spawnCli, stopCli } from '../helpers/cli.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from '../helpers/postgres.js';
import { MQTT_URL, subscribe } from './mqtt-helpers.js';

const CONNECT_TS = new URL('../../src/cli/connect.ts', import.meta.url);
const skip = readFileSync(CONNECT_TS, 'utf8').includes("case 'mqtt:'")
  ? false
  : "src/cli/connect.ts has no mqtt:// case in openTransport yet (the MQTT transport's report gives it)";

let db: TestDb;
let outbox: Outbox;
before(async () => {
  if (skip) return;
  db = await createTestDb('mqttcli');
  outbox = new Outbox({ store: db.store });
});
after(async () => db?.drop());

describe('mailroom relay --transport mqtt://', { skip }, () => {
  it('delivers outbox messages to Mosquitto, the key in order, and exits 0 on SIGTERM', async () => {
    const run = randomBytes(4).toString('hex');
    const topic = `clitest.${run}.orders`;
    const subscriber = await subscribe(MQTT_URL, [`clitest/${run}/orders`]);
    const ids = await inTransaction(db.pool, async (client) => [
      await outbox.enqueue(client, { topic, key: 'k', payload: { n: 0 } }),
      ...(await outbox.enqueue(
        client,
        [1, 2, 3].map((n) => ({ topic, key: 'k', payload: { n } })),
        {},
      )),
    ]);
    const relay = spawnCli([
      'relay',
      '--database-url',
      DATABASE_URL,
      '--schema',
      db.schema,
      '--transport',
      MQTT_URL,
      '--poll-interval-ms',
      '50',
    ]);
    let output = '';
    relay.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    relay.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    try {
      const got = await subscriber.take(4, 20_000).catch((err: Error) => {
        throw new Error(`${err.message}\n${output}`);
      });
      assert.deepEqual(
        got.map((m) => (JSON.parse(m.payload.toString()) as { n: number }).n),
        [0, 1, 2, 3],
      );
      assert.deepEqual(
        got.map((m) => m.id),
        ids,
      );
    } finally {
      const code = await stopCli(relay);
      await subscriber.close();
      assert.equal(code, 0, `the relay exits 0 on SIGTERM\n${output}`);
    }
  });
});
