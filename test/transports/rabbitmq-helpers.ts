// Test helpers for the RabbitMQ transport: a consumer connection of the test's own, unique names
// so test files running in parallel never share exchanges or queues, and a way to make the broker
// drop one specific connection.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

import * as amqplib from 'amqplib';
import type { ConsumeMessage } from 'amqplib';

import type { ConformanceConsumer, ReceivedMessage } from '../../src/testkit/transport-conformance.js';
import type { AmqpConnect, AmqpConnection } from '../../src/transports/rabbitmq/index.js';

const run = promisify(execFile);

export const RABBITMQ_URL = process.env['MAILROOM_TEST_AMQP_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';

/** A name no other test file or run uses: `prefix-<pid>-<random>`. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** A consumer on a queue of its own (exclusive, server-named) bound to the given topics. */
export interface TestConsumer extends ConformanceConsumer {
  queue: string;
  /** Raw messages received so far, to inspect AMQP properties. */
  raw: ConsumeMessage[];
  /** Resolves once every id has been received at least once. */
  waitForIds(ids: Iterable<string>, timeoutMs: number): Promise<void>;
}

export function toReceived(message: ConsumeMessage): ReceivedMessage {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.properties.headers ?? {})) headers[name] = String(value);
  return {
    id: String(message.properties.messageId),
    topic: message.fields.routingKey,
    key: headers['mailroom-key'] ?? null,
    headers,
    payload: message.content,
    type: (message.properties.type as string | undefined) ?? null,
    contentType: message.properties.contentType as string,
  };
}

/** The test's own connection to the broker, for consuming and for setting up and removing things. */
export class TestBroker {
  private constructor(readonly connection: amqplib.ChannelModel) {}

  static async open(): Promise<TestBroker> {
    const connection = await amqplib.connect(RABBITMQ_URL, {
      clientProperties: { connection_name: uniqueName('mailroom-test-consumer') },
    });
    connection.on('error', () => {}); // surfaced through failing assertions instead
    return new TestBroker(connection);
  }

  /** Runs `fn` on a short-lived channel (a failed operation closes its channel, not ours). */
  async withChannel<T>(fn: (channel: amqplib.Channel) => Promise<T>): Promise<T> {
    const channel = await this.connection.createChannel();
    channel.on('error', () => {});
    try {
      return await fn(channel);
    } finally {
      await channel.close().catch(() => {});
    }
  }

  async deleteExchange(exchange: string): Promise<void> {
    await this.withChannel((ch) => ch.deleteExchange(exchange));
  }

  async consume(
    exchange: string,
    topics: readonly string[],
    queueArguments: Record<string, unknown> = {},
  ): Promise<TestConsumer> {
    const channel = await this.connection.createChannel();
    channel.on('error', () => {});
    const { queue } = await channel.assertQueue('', {
      exclusive: true,
      autoDelete: true,
      arguments: queueArguments,
    });
    for (const topic of topics) await channel.bindQueue(queue, exchange, topic);

    const raw: ConsumeMessage[] = [];
    const listeners = new Set<() => void>();
    await channel.consume(
      queue,
      (message) => {
        if (message === null) return;
        raw.push(message);
        for (const listener of listeners) listener();
      },
      { noAck: true },
    );

    /** Resolves when `done()` holds, checked after every delivery; rejects after timeoutMs. */
    function until(done: () => boolean, timeoutMs: number, describe: () => string): Promise<void> {
      if (done()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const listener = (): void => {
          if (!done()) return;
          listeners.delete(listener);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          listeners.delete(listener);
          reject(new Error(`timed out after ${timeoutMs} ms: ${describe()}`));
        }, timeoutMs);
        listeners.add(listener);
      });
    }

    return {
      queue,
      raw,
      async take(count, timeoutMs) {
        await until(
          () => raw.length >= count,
          timeoutMs,
          () => `expected ${count} messages on ${queue}, got ${raw.length}`,
        );
        return raw.slice(0, count).map(toReceived);
      },
      async waitForIds(ids, timeoutMs) {
        const missing = new Set(ids);
        let seen = 0;
        await until(
          () => {
            for (; seen < raw.length; seen++) missing.delete(String(raw[seen]?.properties.messageId));
            return missing.size === 0;
          },
          timeoutMs,
          () =>
            `${missing.size} messages never arrived on ${queue}, e.g. ${[...missing].slice(0, 3).join(', ')}`,
        );
      },
      async close() {
        await channel.deleteQueue(queue).catch(() => {});
        await channel.close().catch(() => {});
      },
    };
  }

  async close(): Promise<void> {
    await this.connection.close().catch(() => {});
  }
}

/**
 * A connect function that records every connection and confirm channel it opens, so tests can
 * count reconnects, listen to the channel's confirms and reach the socket underneath, and counts
 * the messages handed to the client (`published.count`).
 */
export function recordingConnect(): {
  connect: AmqpConnect;
  connections: amqplib.ChannelModel[];
  channels: amqplib.ConfirmChannel[];
  published: { count: number };
} {
  const connections: amqplib.ChannelModel[] = [];
  const channels: amqplib.ConfirmChannel[] = [];
  const published = { count: 0 };
  const connect: AmqpConnect = async (url, socketOptions) => {
    const model = await amqplib.connect(url, socketOptions);
    connections.push(model);
    const createConfirmChannel = model.createConfirmChannel.bind(model);
    model.createConfirmChannel = async (options) => {
      const channel = await createConfirmChannel(options);
      channels.push(channel);
      const publish = channel.publish.bind(channel);
      channel.publish = (...args: Parameters<typeof publish>) => {
        const writable = publish(...args);
        published.count++;
        return writable;
      };
      return channel;
    };
    return model satisfies AmqpConnection;
  };
  return { connect, connections, channels, published };
}

/** Resolves once `done()` holds, checking every few milliseconds; rejects after `timeoutMs`. */
export async function until(done: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!done()) {
    if (Date.now() - start > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Simulates a network fault: the socket under the connection fails with ECONNRESET-like error. */
export function breakSocket(model: amqplib.ChannelModel): void {
  // amqplib keeps the socket on the connection object; a bare destroy() emits no 'error' or
  // 'end', so pass an error as a reset would.
  const stream = (model.connection as unknown as { stream: { destroy(err: Error): void } }).stream;
  stream.destroy(new Error('test: connection reset'));
}

/** Asks the broker to close the connection whose client-provided name is `name` (rabbitmqctl). */
export async function closeConnectionNamed(name: string): Promise<void> {
  const { stdout } = await run('rabbitmqctl', [
    '-q',
    'list_connections',
    '--no-table-headers',
    'pid',
    'client_properties',
  ]);
  const line = stdout.split('\n').find((l) => l.includes(`"${name}"`));
  if (!line) throw new Error(`no broker connection named ${name}; rabbitmqctl listed:\n${stdout}`);
  const pid = line.split('\t')[0] as string;
  await run('rabbitmqctl', ['-q', 'close_connection', pid, 'closed by a Mailroom test']);
}
