// `mailroom relay --transport 'nats://…?prefix=…&stream=…'` as an operator runs it (the built
// command in a process of its own), delivering from PostgreSQL to a JetStream stream the relay
// creates (`stream=`), each key's messages in enqueue order. It runs once src/cli/connect.ts has the
// nats:// case (skipped, saying so, until then).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Outbox } from '../../src/core/index.js';
import { isConfigError } from '../../src/core/errors/config-error.js';
import { openTransport } from '../../src/cli/connect.js';
import type { ResolvedConfig } from '../../src/cli/options.js';
import { spawnCli, stopCli } from '../helpers/cli.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';
import {
  admin,
  deleteStream,
  NATS_URL,
  storedMessages,
  uniquePrefix,
  uniqueStreamName,
} from './nats-helpers.js';

/** Whether src/cli/connect.ts knows nats:// yet (its `case` is added by the CLI's owner). */
async function cliSupportsNats(): Promise<boolean> {
  try {
    const transport = await openTransport({ transport: NATS_URL } as unknown as ResolvedConfig);
    await transport.close();
    return true;
  } catch (err) {
    if (isConfigError(err) && /no transport for scheme/.test(err.message)) return false;
    throw err;
  }
}

const supported = await cliSupportsNats();
const streamName = uniqueStreamName();
let db: TestDb;

before(async () => {
  db = await createTestDb('natscli');
});

after(async () => {
  await db.drop();
  await deleteStream(streamName);
});

describe('mailroom relay --transport nats://', () => {
  it(
    'delivers outbox messages to the stream named in the URL, in key order',
    {
      skip: supported
        ? false
        : 'src/cli/connect.ts has no nats:// case yet (openTransport rejects the scheme)',
    },
    async () => {
      const prefix = uniquePrefix();
      const outbox = new Outbox({ store: db.store });
      const ids = await inTransaction(db.pool, (client) =>
        outbox.enqueue(
          client,
          Array.from({ length: 20 }, (_, n) => ({
            topic: 'orders.created',
            key: `k${n % 2}`,
            payload: { n },
          })),
        ),
      );
      const relay = spawnCli([
        'relay',
        '--database-url',
        DATABASE_URL,
        '--schema',
        db.schema,
        '--transport',
        `${NATS_URL}?prefix=${prefix}&stream=${streamName}`,
        '--poll-interval-ms',
        '50',
      ]);
      let output = '';
      relay.stderr?.on('data', (d: Buffer) => (output += d.toString()));
      relay.stdout?.on('data', (d: Buffer) => (output += d.toString()));
      try {
        await waitUntil(
          async () => {
            const a = await admin();
            try {
              return (await a.jsm.streams.info(streamName)).state.messages >= ids.length;
            } catch {
              return false;
            } finally {
              await a.close();
            }
          },
          `${ids.length} messages in stream ${streamName}`,
          20_000,
        ).catch((err: Error) => {
          throw new Error(`${err.message}\n${output}`);
        });
      } finally {
        const code = await stopCli(relay);
        assert.equal(code, 0, `the relay exits 0 on SIGTERM\n${output}`);
      }
      const stored = await storedMessages(streamName);
      const storedIds = stored.map((m) => m.headers?.get('mailroom-id'));
      assert.equal(storedIds.length, ids.length, 'each message stored once');
      assert.deepEqual(new Set(storedIds), new Set(ids));
      for (const key of ['k0', 'k1']) {
        const ofKey = (list: Array<string | undefined>) =>
          list.filter(
            (id) =>
              stored.find((m) => m.headers?.get('mailroom-id') === id)?.headers?.get('mailroom-key') === key,
          );
        assert.deepEqual(ofKey(storedIds), ofKey(ids), `key ${key} in enqueue order`);
      }
      assert.ok(stored.every((m) => m.subject === `${prefix}.orders.created`));
    },
  );
});
