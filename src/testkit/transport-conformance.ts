/**
 * The bar every transport must pass, as a `node:test` suite. Each adapter's test file calls
 * {@link runTransportConformance} with a factory and, when the broker can be read back, a
 * consumer; the suite then checks the {@link Transport} contract the relay relies on.
 *
 * Decided here for every transport: after `close()`, `publish` does not reconnect; it reports
 * `unavailable` for each message (a closed transport that reopened itself would leak a connection no
 * one closes). `start()` opens it again.
 *
 * @module
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';

import type { PublishOutcome, Transport } from '../core/ports.js';
import type { OutboxMessage } from '../core/types.js';
import { uuidv7 } from '../core/uuid.js';

/** A message as the consumer side saw it, mapped back to Mailroom's fields by the caller. */
export interface ReceivedMessage {
  id: string;
  topic: string;
  key: string | null;
  /** Headers as received; may contain transport headers (`mailroom-…`) besides the user's. */
  headers: Record<string, string>;
  payload: Buffer;
  /** Checked when given. */
  type?: string | null;
  /** Checked when given. */
  contentType?: string;
}

/** Reads back what a transport published; one per test, subscribed before publishing. */
export interface ConformanceConsumer {
  /**
   * Resolves with the first `count` messages received since the consumer was created, in
   * arrival order; rejects when `timeoutMs` passes first.
   */
  take(count: number, timeoutMs: number): Promise<ReceivedMessage[]>;
  close(): Promise<void>;
}

export interface TransportConformanceOptions {
  /** Returns a new, not yet started transport. Each test creates its own and closes it. */
  create: () => Promise<Transport>;
  /**
   * Subscribes to `topics` on the broker behind `transport`, which is already started. Omit it
   * for transports that cannot be read back; the delivery checks are then skipped.
   */
  consume?: (transport: Transport, topics: readonly string[]) => Promise<ConformanceConsumer>;
  /**
   * Upper bound for waiting on deliveries.
   *
   * @default 10000
   */
  timeoutMs?: number;
}

let seq = 0;

/** An {@link OutboxMessage} as a store would hand it to a transport, with overridable fields. */
export function testMessage(overrides: Partial<OutboxMessage> = {}): OutboxMessage {
  seq++;
  return {
    seq: String(seq),
    id: uuidv7(),
    topic: 'mailroom.test',
    key: null,
    type: null,
    payload: Buffer.from(JSON.stringify({ n: seq })),
    contentType: 'application/json',
    headers: {},
    createdAt: new Date(),
    attempts: 1,
    ...overrides,
  };
}

/** Topic names unique to one test, so parallel test files and reruns never see each other's messages. */
export function uniqueTopics(count: number): string[] {
  const run = randomBytes(4).toString('hex');
  return Array.from({ length: count }, (_, i) => `conformance.${run}.t${i}`);
}

function describeOutcome(outcome: PublishOutcome | undefined): string {
  if (outcome === undefined) return 'no outcome';
  return outcome.status === 'ok' ? 'ok' : `${outcome.status} (${outcome.error.message})`;
}

function assertAllOk(outcomes: PublishOutcome[], count: number): void {
  assert.equal(outcomes.length, count, `expected ${count} outcomes, got ${outcomes.length}`);
  outcomes.forEach((outcome, i) => {
    assert.equal(outcome.status, 'ok', `message ${i} was not confirmed: ${describeOutcome(outcome)}`);
  });
}

function assertSameMessage(received: ReceivedMessage, sent: OutboxMessage): void {
  assert.equal(received.id, sent.id);
  assert.equal(received.topic, sent.topic, `topic of ${sent.id}`);
  assert.equal(received.key, sent.key, `key of ${sent.id}`);
  assert.ok(
    Buffer.from(received.payload).equals(sent.payload),
    `payload of ${sent.id} differs: sent ${sent.payload.toString('hex')}, got ${Buffer.from(received.payload).toString('hex')}`,
  );
  for (const [name, value] of Object.entries(sent.headers)) {
    assert.equal(received.headers[name], value, `header ${name} of ${sent.id}`);
  }
  if (received.type !== undefined) assert.equal(received.type, sent.type, `type of ${sent.id}`);
  if (received.contentType !== undefined) {
    assert.equal(received.contentType, sent.contentType, `content type of ${sent.id}`);
  }
}

/**
 * Registers the conformance suite for one transport under `describe(name)`.
 *
 * @example
 * ```ts
 * runTransportConformance('memory', { create: async () => new MemoryTransport(), consume: memoryConsumer });
 * ```
 */
export function runTransportConformance(name: string, options: TransportConformanceOptions): void {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const consume = options.consume;

  /** Runs `body` with a started transport (and a consumer on `topics` when available), then closes both. */
  async function withTransport(
    topics: readonly string[],
    body: (transport: Transport, consumer: ConformanceConsumer | undefined) => Promise<void>,
  ): Promise<void> {
    const transport = await options.create();
    let consumer: ConformanceConsumer | undefined;
    try {
      await transport.start();
      if (consume) consumer = await consume(transport, topics);
      await body(transport, consumer);
    } finally {
      await consumer?.close();
      await transport.close();
    }
  }

  describe(`${name} transport conformance`, () => {
    it('declares its name and answers a probe once started', async () => {
      const transport = await options.create();
      try {
        assert.equal(typeof transport.name, 'string');
        assert.ok(transport.name.length > 0, 'name must not be empty');
        await transport.probe();
      } finally {
        await transport.close();
      }
    });

    it('can be started twice, also concurrently', async () => {
      await withTransport([], async (transport) => {
        await Promise.all([transport.start(), transport.start()]);
        await transport.start();
      });
    });

    it('publishes a batch and reports ok for each message, in order', async () => {
      const topics = uniqueTopics(1);
      await withTransport(topics, async (transport, consumer) => {
        const batch = Array.from({ length: 20 }, () => testMessage({ topic: topics[0] as string }));
        const outcomes = await transport.publish(batch);
        assertAllOk(outcomes, batch.length);
        if (consumer) {
          const received = await consumer.take(batch.length, timeoutMs);
          assert.deepEqual(
            received.map((m) => m.id),
            batch.map((m) => m.id),
          );
        }
      });
    });

    it('reports an empty outcome list for an empty batch', async () => {
      await withTransport([], async (transport) => {
        assert.deepEqual(await transport.publish([]), []);
      });
    });

    it(
      'delivers each message with the same id, topic, key, type, headers and payload bytes',
      { skip: consume ? false : 'no consumer given' },
      async () => {
        const topics = uniqueTopics(2);
        const [first, second] = topics as [string, string];
        await withTransport(topics, async (transport, consumer) => {
          const batch = [
            testMessage({
              topic: first,
              key: 'order-1',
              type: 'order.created',
              payload: Buffer.from(JSON.stringify({ total: 12.5, note: 'naïve café ✓' })),
              headers: {
                traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
                'x-tenant': 'äöü',
              },
            }),
            testMessage({
              topic: second,
              key: null,
              payload: Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
              contentType: 'application/octet-stream',
              headers: { 'x-empty': '', 'x-colon': 'a: b; c=d' },
            }),
            testMessage({
              topic: first,
              key: 'ключ 🔑',
              payload: Buffer.alloc(0),
              contentType: 'text/plain',
            }),
            testMessage({ topic: second, key: 'order-1', payload: randomBytes(64 * 1024) }),
          ];
          assertAllOk(await transport.publish(batch), batch.length);
          const received = await (consumer as ConformanceConsumer).take(batch.length, timeoutMs);
          const byId = new Map(received.map((m) => [m.id, m]));
          for (const sent of batch) {
            const got = byId.get(sent.id);
            assert.ok(got, `message ${sent.id} (topic ${sent.topic}) was not received`);
            assertSameMessage(got, sent);
          }
        });
      },
    );

    it(
      'delivers messages of one key in publish order',
      { skip: consume ? false : 'no consumer given' },
      async () => {
        const topics = uniqueTopics(1);
        await withTransport(topics, async (transport, consumer) => {
          const batch = Array.from({ length: 300 }, (_, i) =>
            testMessage({ topic: topics[0] as string, key: 'same-key', payload: Buffer.from(String(i)) }),
          );
          assertAllOk(await transport.publish(batch), batch.length);
          const received = await (consumer as ConformanceConsumer).take(batch.length, timeoutMs);
          assert.deepEqual(
            received.map((m) => m.payload.toString()),
            batch.map((m) => m.payload.toString()),
          );
        });
      },
    );

    it('accepts two publish calls in flight at once and answers each with its own outcomes', async () => {
      const topics = uniqueTopics(2);
      await withTransport(topics, async (transport, consumer) => {
        const a = Array.from({ length: 50 }, () => testMessage({ topic: topics[0] as string }));
        const b = Array.from({ length: 30 }, () => testMessage({ topic: topics[1] as string }));
        const [outA, outB] = await Promise.all([transport.publish(a), transport.publish(b)]);
        assertAllOk(outA, a.length);
        assertAllOk(outB, b.length);
        if (consumer) {
          const received = await consumer.take(a.length + b.length, timeoutMs);
          assert.deepEqual(new Set(received.map((m) => m.id)), new Set([...a, ...b].map((m) => m.id)));
        }
      });
    });

    it('can be closed twice, also concurrently, and without having been started', async () => {
      const unstarted = await options.create();
      await unstarted.close();
      await unstarted.close();

      const transport = await options.create();
      await transport.start();
      await transport.publish([testMessage({ topic: uniqueTopics(1)[0] as string })]);
      await Promise.all([transport.close(), transport.close()]);
      await transport.close();
    });

    it('reports unavailable for every message published after close, without throwing', async () => {
      const transport = await options.create();
      await transport.start();
      await transport.close();
      const batch = [testMessage(), testMessage(), testMessage()];
      const outcomes = await transport.publish(batch);
      assert.equal(outcomes.length, batch.length);
      for (const outcome of outcomes) {
        assert.equal(
          outcome.status,
          'unavailable',
          `expected unavailable after close, got ${describeOutcome(outcome)}`,
        );
        assert.ok(outcome.status === 'unavailable' && outcome.error instanceof Error);
      }
      // The transport must not have reopened itself behind the caller's back.
      await transport.close();
    });

    it('publishes again after close when started again', async () => {
      const topics = uniqueTopics(1);
      const transport = await options.create();
      let consumer: ConformanceConsumer | undefined;
      try {
        await transport.start();
        await transport.close();
        await transport.start();
        // A consumer makes the topic routable: a transport may refuse a message nobody receives.
        consumer = consume ? await consume(transport, topics) : undefined;
        const outcomes = await transport.publish([testMessage({ topic: topics[0] as string })]);
        assertAllOk(outcomes, 1);
      } finally {
        await consumer?.close();
        await transport.close();
      }
    });
  });
}
