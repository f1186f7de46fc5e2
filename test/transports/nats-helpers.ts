// Shared by the NATS test files: the server address, streams with a random name made and
// deleted per test, and a consumer that reads a stream back through a JetStream ordered consumer
// on a connection of its own.
import { randomBytes } from 'node:crypto';

import { jetstreamManager, jetstream, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';

import type { ConformanceConsumer, ReceivedMessage } from '../../src/testkit/transport-conformance.js';
import { decodeHeaderValue, readMessageHeaders } from '../../src/transports/nats/index.js';

export const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
export const NATS_PORT = Number(new URL(NATS_URL).port || 4222);

/** A subject prefix no other run uses: `mrt<hex>`. */
export function uniquePrefix(): string {
  return `mrt${randomBytes(4).toString('hex')}`;
}

/** A stream name no other run uses. */
export function uniqueStreamName(): string {
  return `MRT_${randomBytes(4).toString('hex').toUpperCase()}`;
}

export interface Admin {
  nc: NatsConnection;
  jsm: JetStreamManager;
  close(): Promise<void>;
}

export async function admin(): Promise<Admin> {
  const nc = await connect({ servers: new URL(NATS_URL).host || '127.0.0.1:4222' });
  const jsm = await jetstreamManager(nc);
  return { nc, jsm, close: () => nc.close() };
}

/** Creates a stream capturing `subjects`; `drop()` deletes it. */
export async function createStream(
  subjects: string[],
  name = uniqueStreamName(),
  extra: { duplicate_window?: number; max_msg_size?: number } = {},
): Promise<{ name: string; drop(): Promise<void> }> {
  const a = await admin();
  try {
    await a.jsm.streams.add({ name, subjects, ...extra });
  } finally {
    await a.close();
  }
  return { name, drop: () => deleteStream(name) };
}

export async function deleteStream(name: string): Promise<void> {
  const a = await admin();
  try {
    await a.jsm.streams.delete(name).catch(() => false);
  } finally {
    await a.close();
  }
}

/** Every message stored in `stream`, oldest first. */
export async function storedMessages(stream: string): Promise<JsMsg[]> {
  const a = await admin();
  try {
    const info = await a.jsm.streams.info(stream);
    const count = info.state.messages;
    if (count === 0) return [];
    const consumer = await jetstream(a.nc).consumers.get(stream);
    const out: JsMsg[] = [];
    const batch = await consumer.fetch({ max_messages: count, expires: 5000 });
    for await (const m of batch) {
      out.push(m);
      if (out.length === count) break;
    }
    return out;
  } finally {
    await a.close();
  }
}

export function toReceived(m: JsMsg): ReceivedMessage {
  const fields = readMessageHeaders(m.headers);
  const headers: Record<string, string> = {};
  for (const [name, values] of m.headers ?? []) headers[name] = decodeHeaderValue(values[0] ?? '');
  return {
    id: fields.id ?? '',
    topic: fields.topic ?? m.subject,
    key: fields.key,
    type: fields.type,
    ...(fields.contentType === null ? {} : { contentType: fields.contentType }),
    headers,
    payload: Buffer.from(m.data),
  };
}

/**
 * A stream of its own capturing `prefix.<topic>` for each topic, read by an ordered consumer from
 * its first message; `close()` stops it and deletes the stream.
 */
export async function streamConsumer(
  prefix: string,
  topics: readonly string[],
): Promise<ConformanceConsumer> {
  const name = uniqueStreamName();
  const nc = await connect({ servers: new URL(NATS_URL).host || '127.0.0.1:4222' });
  const jsm = await jetstreamManager(nc);
  const subjects =
    topics.length === 0
      ? [`${prefix}.${randomBytes(4).toString('hex')}`]
      : topics.map((t) => `${prefix}.${t}`);
  await jsm.streams.add({ name, subjects });
  const consumer = await jetstream(nc).consumers.get(name);
  const messages = await consumer.consume();
  const received: ReceivedMessage[] = [];
  const waiters = new Set<() => void>();
  void (async () => {
    for await (const m of messages) {
      received.push(toReceived(m));
      for (const wake of waiters) wake();
    }
  })().catch(() => undefined);
  return {
    async take(count, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (received.length < count) {
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new Error(`stream ${name}: ${received.length} of ${count} messages within ${timeoutMs} ms`);
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, Math.min(left, 200));
          function done() {
            clearTimeout(timer);
            waiters.delete(done);
            resolve();
          }
          waiters.add(done);
        });
      }
      return received.slice(0, count);
    },
    async close() {
      await messages.close().catch(() => undefined);
      await jsm.streams.delete(name).catch(() => false);
      await nc.close();
    },
  };
}
