// Test helpers for the STOMP transport: the two brokers the tests run against, a subscriber of
// the test's own (a raw STOMP connection, independent of the transport's publishing path), and
// removal of the queues a test made on RabbitMQ (ActiveMQ drops inactive ones itself, see .ci/run).
import { randomBytes } from 'node:crypto';

import * as amqplib from 'amqplib';

import type { ConformanceConsumer, ReceivedMessage } from '../../src/testkit/transport-conformance.js';
import { StompConnection } from '../../src/transports/stomp/stomp-connection.js';
import type { StompFrame } from '../../src/transports/stomp/stomp-frame.js';
import { resolveStompUrl } from '../../src/transports/stomp/stomp-options.js';
import { ID_HEADER, KEY_HEADER, TOPIC_HEADER, TYPE_HEADER } from '../../src/transports/stomp/stomp-wire.js';

export interface TestBroker {
  name: 'rabbitmq' | 'activemq';
  url: string;
}

export const BROKERS: readonly TestBroker[] = [
  { name: 'rabbitmq', url: process.env['MAILROOM_TEST_STOMP_URL'] ?? 'stomp://guest:guest@127.0.0.1:61613' },
  {
    name: 'activemq',
    url: process.env['MAILROOM_TEST_ACTIVEMQ_URL'] ?? 'stomp://admin:admin@127.0.0.1:61623',
  },
];

const AMQP_URL = process.env['MAILROOM_TEST_AMQP_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';

/** A name no other test file or run uses. */
export function uniqueName(prefix: string): string {
  return `${prefix}.${process.pid}.${randomBytes(4).toString('hex')}`;
}

/** Opens a plain connection of the test's own to `url`. */
export function connectTo(url: string, onMessage?: (frame: StompFrame) => void): Promise<StompConnection> {
  return StompConnection.open({
    endpoint: resolveStompUrl(url, 'test'),
    tls: {},
    connectTimeoutMs: 5000,
    heartbeatMs: 0,
    maxFrameBytes: 64 * 1024 * 1024,
    ...(onMessage ? { onMessage } : {}),
  });
}

/** What a MESSAGE frame says, in the conformance suite's terms. */
export function toReceived(frame: StompFrame): ReceivedMessage {
  const h = frame.headers;
  return {
    id: h[ID_HEADER] ?? '',
    topic: h[TOPIC_HEADER] ?? '',
    key: h[KEY_HEADER] ?? null,
    headers: { ...h },
    payload: frame.body,
    type: h[TYPE_HEADER] ?? null,
    contentType: h['content-type'] ?? 'application/octet-stream',
  };
}

/** A subscriber on some destinations, acknowledging automatically. */
export interface TestSubscriber extends ConformanceConsumer {
  frames: StompFrame[];
  /** Resolves once `count` frames arrived, or rejects after `timeoutMs`. */
  waitFor(count: number, timeoutMs: number): Promise<StompFrame[]>;
}

export async function subscribe(url: string, destinations: readonly string[]): Promise<TestSubscriber> {
  const frames: StompFrame[] = [];
  let wake = (): void => {};
  const connection = await connectTo(url, (frame) => {
    frames.push(frame);
    wake();
  });
  for (const [i, destination] of destinations.entries()) {
    await connection.request('SUBSCRIBE', [
      ['id', `s${i}`],
      ['destination', destination],
      ['ack', 'auto'],
    ]).answered;
  }
  const waitFor = (count: number, timeoutMs: number): Promise<StompFrame[]> =>
    new Promise((resolve, reject) => {
      const check = () => {
        if (frames.length < count) return false;
        clearTimeout(timer);
        resolve(frames.slice(0, count));
        return true;
      };
      const timer = setTimeout(
        () => reject(new Error(`expected ${count} messages within ${timeoutMs} ms, got ${frames.length}`)),
        timeoutMs,
      );
      if (check()) return;
      const previous = wake;
      wake = () => {
        previous();
        check();
      };
    });
  return {
    frames,
    waitFor,
    take: async (count, timeoutMs) => (await waitFor(count, timeoutMs)).map(toReceived),
    close: () => connection.close(new Error('test subscriber closed')),
  };
}

/**
 * Queues a test made on RabbitMQ through `/queue/…` destinations (durable, never deleted by the
 * broker): deleted through AMQP. Names are queue names (the part after `/queue/`).
 */
export async function deleteRabbitQueues(names: Iterable<string>): Promise<void> {
  const list = [...names];
  if (list.length === 0) return;
  const connection = await amqplib.connect(AMQP_URL);
  connection.on('error', () => {});
  try {
    for (const name of list) {
      const channel = await connection.createChannel();
      channel.on('error', () => {});
      await channel.deleteQueue(name).catch(() => {});
      await channel.close().catch(() => {});
    }
  } finally {
    await connection.close().catch(() => {});
  }
}
