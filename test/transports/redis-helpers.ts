// Test helpers for the Redis Streams transport: the server the tests use (Redis at 6379, started
// by .ci/run), a reader of the test's own (XREAD on a connection independent of the transport's,
// never through a test proxy), a per-file key prefix with its cleanup, and Redis servers of a
// test's own (a primary with a replica, a server out of memory) for what cannot be done to the
// shared server.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';

import { Redis } from 'ioredis';

import type { Transport } from '../../src/core/ports.js';
import type { ConformanceConsumer, ReceivedMessage } from '../../src/testkit/transport-conformance.js';
import type { RedisStreamsTransport } from '../../src/transports/redis/index.js';
import {
  CONTENT_TYPE_FIELD,
  HEADERS_FIELD,
  ID_FIELD,
  KEY_FIELD,
  PAYLOAD_FIELD,
  TOPIC_FIELD,
  TYPE_FIELD,
} from '../../src/transports/redis/redis-wire.js';

export const REDIS_URL = process.env['MAILROOM_TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

const parsed = new URL(REDIS_URL);
export const REDIS_HOST = parsed.hostname;
export const REDIS_PORT = Number(parsed.port || 6379);

/** A key prefix no other test file or run uses: `mrtest:<pid>.<random>:`. */
export function uniquePrefix(): string {
  return `mrtest:${process.pid}.${randomBytes(4).toString('hex')}:`;
}

/** A plain client of the test's own. */
export async function testClient(url = REDIS_URL): Promise<Redis> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  client.on('error', () => {});
  await client.connect();
  return client;
}

/** Deletes every key that starts with `prefix` (SCAN, then DEL in bunches). */
export async function deleteKeys(prefix: string, url = REDIS_URL): Promise<number> {
  const client = await testClient(url);
  let deleted = 0;
  try {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) deleted += await client.del(...keys);
    } while (cursor !== '0');
  } finally {
    await client.quit().catch(() => client.disconnect());
  }
  return deleted;
}

/** Fields of an entry as a map of name to bytes. */
export function fieldMap(fields: Buffer[]): Map<string, Buffer> {
  const map = new Map<string, Buffer>();
  for (let i = 0; i + 1 < fields.length; i += 2) map.set(String(fields[i]), fields[i + 1] as Buffer);
  return map;
}

/** An entry in the conformance suite's terms: every header of the JSON, Mailroom's too. */
export function toReceived(fields: Buffer[]): ReceivedMessage {
  const f = fieldMap(fields);
  const text = (name: string) => f.get(name)?.toString('utf8');
  return {
    id: text(ID_FIELD) ?? '',
    topic: text(TOPIC_FIELD) ?? '',
    key: text(KEY_FIELD) ?? null,
    headers: JSON.parse(text(HEADERS_FIELD) ?? '{}') as Record<string, string>,
    payload: f.get(PAYLOAD_FIELD) ?? Buffer.alloc(0),
    type: text(TYPE_FIELD) ?? null,
    contentType: text(CONTENT_TYPE_FIELD) ?? 'application/octet-stream',
  };
}

/** `a-b` entry ids compared as numbers: the order Redis added them in. */
function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split('-').map(BigInt) as [bigint, bigint];
  return am === bm ? Number(as - bs) : am < bm ? -1 : 1;
}

/** A reader of some streams: everything added since it was created, in entry id order. */
export interface StreamReader extends ConformanceConsumer {
  entries: Array<{ stream: string; id: string; fields: Buffer[] }>;
  /** Reads what is new; resolves once done. */
  poll(): Promise<void>;
}

/**
 * Reads `streams` with XREAD (no BLOCK: polled while a `take` waits), from the last entry each
 * had when the reader was created, on a connection of its own.
 */
export async function readStreams(streams: readonly string[], url = REDIS_URL): Promise<StreamReader> {
  const client = await testClient(url);
  const last = new Map<string, string>();
  for (const stream of streams) {
    const top = await client.xrevrange(stream, '+', '-', 'COUNT', 1);
    last.set(stream, top[0]?.[0] ?? '0-0');
  }
  const entries: StreamReader['entries'] = [];
  const poll = async (): Promise<void> => {
    if (streams.length === 0) return;
    for (;;) {
      const reply = await client.xreadBuffer(
        'COUNT',
        5000,
        'STREAMS',
        ...streams,
        ...streams.map((s) => last.get(s) as string),
      );
      if (reply === null) return;
      const fresh: StreamReader['entries'] = [];
      for (const [streamBuf, items] of reply) {
        const stream = String(streamBuf);
        for (const [idBuf, fields] of items) {
          const id = String(idBuf);
          fresh.push({ stream, id, fields });
          last.set(stream, id);
        }
      }
      fresh.sort((a, b) => compareIds(a.id, b.id));
      entries.push(...fresh);
      if (fresh.length === 0) return;
    }
  };
  return {
    entries,
    poll,
    async take(count, timeoutMs) {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        await poll();
        if (entries.length >= count) return entries.slice(0, count).map((e) => toReceived(e.fields));
        if (performance.now() > deadline) {
          throw new Error(`expected ${count} entries within ${timeoutMs} ms, got ${entries.length}`);
        }
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    close: async () => {
      await client.quit().catch(() => client.disconnect());
    },
  };
}

/** Reads the streams of `topics` as `transport` names them. */
export function consumeFor(transport: Transport, topics: readonly string[]): Promise<StreamReader> {
  const redis = transport as RedisStreamsTransport;
  return readStreams(topics.map((t) => redis.streamFor(t)));
}

/** A port nothing listens on right now. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A redis-server process of the test's own, without persistence. */
export interface OwnServer {
  port: number;
  url: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** Starts `redis-server` on a free port with `args`, and waits until it answers PING. */
export async function startOwnServer(args: string[] = []): Promise<OwnServer> {
  const port = await freePort();
  const child = spawn(
    'redis-server',
    // --dir: a replica's full sync writes an RDB file even with --save '', in the server's working
    // directory unless told otherwise (it left dump.rdb in the repository).
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      tmpdir(),
      ...args,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `redis://127.0.0.1:${port}`;
  const deadline = performance.now() + 10_000;
  for (;;) {
    const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.ping();
      await client.quit();
      break;
    } catch {
      client.disconnect();
      if (child.exitCode !== null || performance.now() > deadline) {
        child.kill('SIGKILL');
        await exited;
        throw new Error(`redis-server on ${port} did not start: ${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    port,
    url,
    process: child,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}
