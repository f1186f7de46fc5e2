// `mailroom relay --transport http://…` as an operator runs it: the built command in a process of
// its own, delivering from PostgreSQL to a receiver that verifies every signature.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';

import { generateWebhookSecret } from '../../src/callbacks/index.js';
import { Outbox } from '../../src/core/index.js';
import type { ReceivedMessage } from '../../src/core/types.js';
import { createWebhookReceiver } from '../../src/transports/webhook/index.js';
import { runCli, spawnCli, stopCli } from '../helpers/cli.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';

let db: TestDb;
let outbox: Outbox;
let server: Server;
let port = 0;
const secret = generateWebhookSecret();
const received: Array<{ path: string; message: ReceivedMessage }> = [];
let path = '';

before(async () => {
  db = await createTestDb('webhookcli');
  outbox = new Outbox({ store: db.store });
  const receiver = createWebhookReceiver({
    secret,
    handler: (message) => {
      received.push({ path, message });
    },
  });
  server = createServer((req, res) => {
    path = req.url ?? '';
    receiver(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
after(async () => {
  await new Promise((r) => server.close(r));
  await db?.drop();
});

describe('mailroom relay --transport http://', () => {
  it('POSTs signed outbox messages to the URL template, the key in order, and exits 0 on SIGTERM', async () => {
    const ids = await inTransaction(db.pool, async (client) =>
      outbox.enqueue(
        client,
        [0, 1, 2, 3].map((n) => ({ topic: 'order.created', key: 'k', payload: { n } })),
      ),
    );
    const relay = spawnCli(
      [
        'relay',
        '--database-url',
        DATABASE_URL,
        '--schema',
        db.schema,
        '--transport',
        `http://127.0.0.1:${port}/hooks/{topic}`,
        '--poll-interval-ms',
        '50',
      ],
      { MAILROOM_WEBHOOK_SECRET: secret },
    );
    let output = '';
    relay.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    relay.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    try {
      await waitUntil(() => received.length >= 4, `4 deliveries\n${output}`, 20_000);
      assert.deepEqual(
        received.map((r) => r.message.id),
        ids,
      );
      assert.deepEqual(
        received.map((r) => (r.message.payload as { n: number }).n),
        [0, 1, 2, 3],
      );
      assert.ok(
        received.every((r) => r.path === '/hooks/order.created'),
        JSON.stringify(received.map((r) => r.path)),
      );
      assert.ok(!output.includes(secret), 'the secret is never printed');
    } finally {
      const code = await stopCli(relay);
      assert.equal(code, 0, `the relay exits 0 on SIGTERM\n${output}`);
    }
  });

  it('refuses an http:// transport without a secret, in one line, before connecting', async () => {
    const r = await runCli([
      'relay',
      '--database-url',
      DATABASE_URL,
      '--schema',
      db.schema,
      '--transport',
      `http://127.0.0.1:${port}/hooks/{topic}`,
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /give the secret with --webhook-secret or MAILROOM_WEBHOOK_SECRET/);
  });
});
