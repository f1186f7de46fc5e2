// RedisConsumer with a PostgreSQL Inbox under SIGKILL (test/fixtures/redis-inbox-consumer.ts):
// two consumer processes killed right after an inbox commit, before the XACK, each one replaced by a
// process under a new consumer name, which takes the dead one's pending entries over with
// XAUTOCLAIM. Every message has its effect exactly once, and nothing is left pending.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, it } from 'node:test';

import type { Redis } from 'ioredis';

import { testMessage } from '../../src/testkit/transport-conformance.js';
import { RedisStreamsTransport } from '../../src/transports/redis/index.js';
import { createTestDb, DATABASE_URL, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';
import { deleteKeys, REDIS_URL, testClient, uniquePrefix } from './redis-helpers.js';

let db: TestDb;
let redis: Redis;
const prefix = uniquePrefix();

before(async () => {
  db = await createTestDb('mrrkill');
  await db.pool.query(`CREATE TABLE "${db.schema}".effects (id uuid NOT NULL, pid int NOT NULL)`);
  redis = await testClient();
});

after(async () => {
  await redis.quit();
  await deleteKeys(prefix);
  await db.drop();
});

interface Child {
  process: ChildProcess;
  lines: string[];
}

async function startConsumer(env: NodeJS.ProcessEnv): Promise<Child> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/redis-inbox-consumer.ts'], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  await new Promise<void>((resolve, reject) => {
    let buffered = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const parts = buffered.split('\n');
      buffered = parts.pop() ?? '';
      for (const part of parts) {
        lines.push(part);
        if (part === 'started') resolve();
      }
    });
    child.once('exit', (code, signal) => reject(new Error(`the consumer exited early (${code ?? signal})`)));
  });
  return { process: child, lines };
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

it('consumers killed between the inbox commit and XACK lose nothing and duplicate no effect', async () => {
  const topic = 'order.created';
  const stream = `${prefix}{topic}`;
  const group = 'billing';
  const count = 150;
  const transport = new RedisStreamsTransport({ url: REDIS_URL, stream });
  const env = {
    ...process.env,
    DATABASE_URL,
    SCHEMA: db.schema,
    REDIS_URL,
    STREAM: stream,
    TOPIC: topic,
    GROUP: group,
  };
  const all: string[] = [];
  let child: Child | undefined;
  try {
    // The group exists before anything is published (a consumer creates it at the stream's end).
    await redis.call('XGROUP', 'CREATE', `${prefix}${topic}`, group, '$', 'MKSTREAM');
    const messages = Array.from({ length: count }, (_, i) => testMessage({ topic, key: `k${i % 10}` }));
    const outcomes = await transport.publish(messages);
    assert.ok(outcomes.every((o) => o.status === 'ok'));
    let kills = 0;
    const deadline = performance.now() + 60_000;
    for (let run = 0; ; run++) {
      const last = kills >= 2 || run >= 6;
      child = await startConsumer({
        ...env,
        CONSUMER_NAME: `worker-${run}`,
        DIE_AFTER_COMMIT: last ? '0' : '0.04',
      });
      // Until it kills itself; or, once every message had its effect, until nothing is pending
      // (the last one's entries, and any a dead one left, taken over), then it is stopped.
      let done = false;
      while (child.process.exitCode === null && child.process.signalCode === null) {
        if ((await effects()).total === count) {
          done = true;
          break;
        }
        if (performance.now() > deadline) throw new Error(`no progress: ${(await effects()).total} effects`);
        await new Promise((r) => setTimeout(r, 50));
      }
      if (done) {
        await waitUntil(async () => (await pending()) === 0, 'nothing pending');
        child.process.kill('SIGTERM');
      }
      await exited(child.process);
      all.push(...child.lines);
      child = undefined;
      if (done) break;
      kills++;
    }
    const { total, distinct } = await effects();
    assert.equal(total, count, 'one effect per message');
    assert.equal(distinct, count);
    const died = all.filter((l) => l.startsWith('die-after-commit ')).map((l) => l.split(' ')[1]);
    assert.ok(died.length >= 1, 'a consumer died between commit and XACK');
    const duplicates = new Set(all.filter((l) => l.startsWith('duplicate ')).map((l) => l.split(' ')[1]));
    for (const id of died) assert.ok(duplicates.has(id), `the entry of ${id} came back as a duplicate`);
    assert.ok(
      all.some((l) => l.startsWith('claimed ')),
      "a later consumer took the dead one's entries over",
    );
  } finally {
    if (child) {
      child.process.kill('SIGKILL');
      await exited(child.process);
    }
    await transport.close();
  }
});

async function pending(): Promise<number> {
  const summary = (await redis.call('XPENDING', `${prefix}order.created`, 'billing')) as unknown[];
  return Number(summary[0]);
}

async function effects(): Promise<{ total: number; distinct: number }> {
  const res = await db.pool.query(
    `SELECT count(*)::int AS total, count(DISTINCT id)::int AS distinct FROM "${db.schema}".effects`,
  );
  return res.rows[0] as { total: number; distinct: number };
}
