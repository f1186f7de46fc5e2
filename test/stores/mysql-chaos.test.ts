// The chaos test on MariaDB (issue 18): writers commit and roll back business transactions with
// messages on a few keys while two relay processes on the MySQL store deliver to RabbitMQ and
// are SIGKILLed at random moments and started again. The audit: every committed message
// arrives (none lost), no rolled-back one does (no phantom), and per key, a message whose
// transaction committed before another was written arrives first.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import amqplib from 'amqplib';
import mysql from 'mysql2/promise';

import { Outbox } from '../../src/core/index.js';
import { MySqlStore } from '../../src/stores/mysql/index.js';
import { audit, type Written, type WriterResult } from '../helpers/writers.js';
import { RABBITMQ_URL } from '../transports/rabbitmq-helpers.js';

const SERVER_URL = process.env['MYSQL_URL'] ?? 'mysql://root@127.0.0.1:3306';
const DATABASE = `mailroom_chaos_${randomBytes(4).toString('hex')}`;
const DATABASE_URL = `${SERVER_URL}/${DATABASE}`;
const TABLE_PREFIX = 'chaos_';
const EXCHANGE = `mr-mysql-chaos-${randomBytes(4).toString('hex')}`;
const QUEUE = `${EXCHANGE}.q`;
const TOPIC = 'chaos.order';
const LEASE_MS = 2000;
const WRITE_MS = Number(process.env['CHAOS_WRITE_MS'] ?? 8000);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let admin: mysql.Connection;
let pool: mysql.Pool;
let store: MySqlStore;
let amqp: amqplib.ChannelModel;

before(async () => {
  admin = await mysql.createConnection(SERVER_URL);
  await admin.query(`CREATE DATABASE \`${DATABASE}\``);
  pool = mysql.createPool({ uri: DATABASE_URL, connectionLimit: 8 });
  store = await MySqlStore.connect({ connectionString: DATABASE_URL, tablePrefix: TABLE_PREFIX });
  await store.migrate();
  amqp = await amqplib.connect(RABBITMQ_URL);
  const ch = await amqp.createChannel();
  await ch.assertExchange(EXCHANGE, 'topic', { durable: true });
  await ch.assertQueue(QUEUE, { durable: true });
  await ch.bindQueue(QUEUE, EXCHANGE, '#');
  await ch.close();
});

after(async () => {
  const ch = await amqp.createChannel();
  await ch.deleteQueue(QUEUE).catch(() => {});
  await ch.deleteExchange(EXCHANGE).catch(() => {});
  await ch.close().catch(() => {});
  await amqp.close();
  await store.close();
  await pool.end();
  await admin.query(`DROP DATABASE IF EXISTS \`${DATABASE}\``);
  await admin.end();
});

/** Starts a relay process; resolves once it printed `started`. */
function startRelay(): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/mysql-relay-process.ts'], {
    env: {
      ...process.env,
      MYSQL_URL: DATABASE_URL,
      TABLE_PREFIX,
      AMQP_URL: RABBITMQ_URL,
      EXCHANGE,
      LEASE_MS: String(LEASE_MS),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('started')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`relay exited (${code}) before starting: ${err}`)));
  });
}

function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** Writers: transactions of 1–4 messages on eight keys (and some keyless), a fifth rolled back. */
async function write(outbox: Outbox, until: () => boolean): Promise<WriterResult> {
  const result: WriterResult = { committed: [], rolledBack: [] };
  const loop = async () => {
    while (!until()) {
      const conn = await pool.getConnection();
      try {
        const writeStart = performance.now();
        await conn.beginTransaction();
        const msgs = Array.from({ length: 1 + Math.floor(Math.random() * 4) }, () => {
          const r = Math.floor(Math.random() * 10);
          return { topic: TOPIC, key: r < 8 ? `k${r}` : null, payload: { at: Date.now() } };
        });
        const ids = await outbox.enqueue(conn, msgs);
        if (Math.random() < 0.2) {
          await conn.rollback();
          result.rolledBack.push(...ids);
        } else {
          await conn.commit();
          const committedAt = performance.now();
          ids.forEach((id, i) =>
            result.committed.push({
              id,
              key: msgs[i]?.key ?? null,
              writeStart,
              committedAt,
            } satisfies Written),
          );
        }
      } finally {
        conn.release();
      }
      await sleep(Math.random() * 10);
    }
  };
  await Promise.all(Array.from({ length: 4 }, loop));
  return result;
}

describe('chaos on MariaDB: writers, two relays SIGKILLed at random, RabbitMQ', () => {
  it(
    'loses nothing, delivers no rolled-back message, and keeps each key in commit order',
    { timeout: 180_000 },
    async () => {
      const received: string[] = [];
      const ch = await amqp.createChannel();
      await ch.consume(QUEUE, (m) => {
        if (!m) return;
        received.push(String(m.properties.messageId));
        ch.ack(m);
      });
      const relays = [await startRelay(), await startRelay()];
      const outbox = new Outbox({ store });
      const deadline = Date.now() + WRITE_MS;
      let kills = 0;
      const chaos = (async () => {
        while (Date.now() < deadline) {
          await sleep(200 + Math.random() * 800);
          const i = Math.floor(Math.random() * relays.length);
          await kill(relays[i] as ChildProcess);
          kills++;
          relays[i] = await startRelay();
        }
      })();
      const written = await write(outbox, () => Date.now() > deadline);
      await chaos;
      const committed = new Set(written.committed.map((w) => w.id));
      const waitUntil = Date.now() + 60_000;
      while (Date.now() < waitUntil && ![...committed].every((id) => received.includes(id))) await sleep(200);
      for (const r of relays) await kill(r);
      await ch.close();

      const result = audit(written, received);
      const summary =
        `${result.committed} committed, ${written.rolledBack.length} rolled back, ${kills} kills, ` +
        `${result.received} received (${result.duplicates} duplicates)`;
      assert.ok(kills >= 2, `only ${kills} kills: ${summary}`);
      assert.ok(result.committed > 100, `too few messages for a chaos test: ${summary}`);
      assert.deepEqual(result.lost, [], `lost: ${summary}`);
      assert.deepEqual(result.phantom, [], `phantom: ${summary}`);
      assert.deepEqual(result.orderViolations, [], `per-key order: ${summary}`);
      // What the test printed, for the notes.
      process.stdout.write(`# ${summary}\n`);
    },
  );
});
