/**
 * The bar every transport must pass, as a `node:test` suite. Each adapter's test file calls
 * {@link runTransportConformance} with a factory and, when the broker can be read back, a
 * consumer; the suite then checks the {@link Transport} contract the relay relies on.
 *
 * Decided here for every transport: after `close()`, `publish` does not reconnect; it reports
 * `unavailable` for each message (a closed transport that reopened itself would leak a connection no
 * one closes). `start()` opens it again.
 *
 * Besides the contract on a healthy broker, the suite checks the failure modes the relay depends
 * on (issue 17): a connection dropped in the middle of a batch, the publish deadline, an outage
 * told apart from a per-message failure, a republished id, `close()` while publishing, payloads at
 * the size limit and unusual header names and values. The checks that need something only the
 * adapter's test file can give (a proxy in front of the broker, a message the broker refuses, the
 * size limit) are optional: without it they are skipped, and the skip says what to pass.
 *
 * @module
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';

import type { Transport } from '../core/ports.js';
import type { OutboxMessage } from '../core/types.js';
import {
  assertAllOk,
  describeOutcome,
  assertSameMessage,
  testMessage,
  uniqueTopics,
} from './conformance-support.js';
import { registerFaultChecks } from './transport-fault-checks.js';
import { registerMessageChecks } from './transport-message-checks.js';

export { testMessage, uniqueTopics } from './conformance-support.js';
export { UNUSUAL_HEADERS } from './transport-message-checks.js';

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
   * arrival order, copies included; rejects when `timeoutMs` passes first. It does not consume:
   * a later call with a larger `count` returns the same first messages and more (the failure
   * checks call it repeatedly, with a growing count, until every message they look for arrived).
   */
  take(count: number, timeoutMs: number): Promise<ReceivedMessage[]>;
  close(): Promise<void>;
}

/** A TCP address: a broker's, or the address of the proxy the suite puts in front of it. */
export interface ConformanceAddress {
  host: string;
  port: number;
}

/**
 * What the suite needs to put a `TcpProxy` (from this module) between a transport and its real broker, so it can
 * cut, black-hole and refuse the transport's connections while it publishes.
 *
 * @example
 * ```ts
 * proxy: {
 *   broker: { host: '127.0.0.1', port: 5672 },
 *   createThrough: async ({ host, port }) =>
 *     new RabbitMqTransport({ url: `amqp://guest:guest@${host}:${port}`, exchange }),
 * },
 * ```
 */
export interface ConformanceProxy {
  /**
   * Where the real broker listens (the proxy forwards there). A function when the address is
   * known only once the test file runs (a receiver the file starts in `before()`).
   */
  broker: { host?: string; port: number } | (() => { host?: string; port: number });
  /**
   * Returns a new, not yet started transport configured like {@link TransportConformanceOptions.create}'s,
   * except that it connects to `proxy` instead of the broker: every connection it opens must go
   * through that address (the suite checks that the proxy saw one). Also called with the address
   * of a closed port, for the outage check.
   *
   * Keep the transport's own defaults where you can: the checks are meant to pass with them. They
   * wait at most `reconnectTimeoutMs` for the transport to publish again after a fault; a transport
   * whose connect timeout or reconnect backoff is longer by default may shorten it here.
   */
  createThrough: (proxy: ConformanceAddress) => Promise<Transport>;
}

export interface TransportConformanceOptions {
  /** Returns a new, not yet started transport. Each test creates its own and closes it. */
  create: () => Promise<Transport>;
  /**
   * Subscribes to `topics` on the broker behind `transport`, which is already started. Omit it
   * for transports that cannot be read back; the delivery checks are then skipped.
   *
   * The failure checks call it with a transport made by {@link ConformanceProxy.createThrough} too:
   * the consumer must read from the broker on a connection of its own (not through the
   * transport's, nor through the proxy), so that cutting the proxy does not cut the consumer.
   */
  consume?: (transport: Transport, topics: readonly string[]) => Promise<ConformanceConsumer>;
  /**
   * Upper bound for waiting on deliveries, and on a publish or probe that should answer.
   *
   * @default 10000
   */
  timeoutMs?: number;
  /**
   * Enables the network failure checks, which stand in for a broker restart and a network fault:
   *
   * - **connection dropped mid-batch**: the proxy resets the transport's connections while a
   *   batch is in flight (the way a broker restart or a failover drops them). Every outcome must
   *   be `ok` or `unavailable`; every message reported `ok` must reach the consumer; `probe()` must
   *   succeed again within `reconnectTimeoutMs` and the next publish be `ok` (reconnect).
   *   Restarting the broker service itself is not done: the test brokers are shared by every test
   *   file running at the same time, and a reset connection is what a transport sees of a restart.
   * - **publish deadline**: the proxy stops forwarding (a black hole: connections stay up, nothing
   *   answers) and the publish's `signal` aborts. The publish must resolve within 2 s of the abort,
   *   every message `unavailable` (none had an answer); the connection it used must be closed
   *   within `timeoutMs` (the proxy sees it go); `probe()` with a signal must reject with a
   *   TransportError while the black hole lasts, and the transport must publish again once it ends.
   * - **outage**: a transport pointed at a closed port, and at a proxy that closes every
   *   connection at once. `start()` either rejects with a TransportError or resolves (transports
   *   that connect lazily); `publish` resolves with `unavailable` for every message (never `retry`
   *   or `permanent`: an outage says nothing about the messages); `probe()` rejects with a
   *   TransportError.
   * - **close() while publishing** also runs through the proxy (slowed down, so the close lands
   *   while the batch is in flight) when this is given.
   *
   * Omit it for transports without a TCP connection to a broker (memory), and for clients that
   * connect to addresses the broker hands out (Kafka's advertised listeners, Redis Cluster
   * redirects), which would go around the proxy; those checks are then skipped, with the reason
   * printed.
   */
  proxy?: ConformanceProxy;
  /**
   * How long, after a fault ends, the transport may take to publish again (`probe()` resolving).
   *
   * @default 15000
   */
  reconnectTimeoutMs?: number;
  /**
   * For transports without {@link proxy}: returns a new, not yet started transport whose broker
   * cannot be reached, for the outage check (see {@link proxy}). With `proxy`, the suite makes its
   * own (a closed port) and also calls this when given.
   *
   * @example create an in-memory transport with an injected outage: `async () => new MemoryTransport({ unavailable: true })`
   */
  createUnreachable?: () => Promise<Transport>;
  /**
   * Returns a message on `topic` that the broker (or the transport, on the broker's behalf) will
   * never take, for the per-message failure check: published in the middle of a batch, it must
   * report `permanent` (with a `PermanentDeliveryError`) or `retry`, and only it: the messages
   * before and after it report `ok` and arrive. Use what fails your broker for one message only:
   * RabbitMQ with `mandatory`: a topic no queue is bound to; STOMP: a reserved header; HTTP: a
   * URL the receiver answers 4xx for. Omit it when no such message exists; the check is skipped.
   *
   * @example refusedMessage: (topic) => testMessage({ topic, headers: { priority: '9' } })
   */
  refusedMessage?: (topic: string) => OutboxMessage;
  /**
   * The largest payload, in bytes, the transport made by `create` publishes (its own limit
   * option, set to what the broker accepts). The check publishes one payload of exactly this
   * size, which must arrive intact, and one of a byte more, which must report `permanent` with a
   * `PermanentDeliveryError` while the rest of its batch is `ok`.
   *
   * Decided for every transport: a payload over the transport's limit is a per-message failure,
   * so it is an outcome, never an exception from `publish` (the Transport contract: `publish`
   * does not throw for per-message failures), and the transport reports it without sending it
   * when it knows the limit (a broker that closes the connection over an oversized frame would
   * fail every message in flight with it). The Outbox's own `maxPayloadBytes` (`MessageLimits`)
   * is a different, earlier bound: it refuses a message at enqueue with a `PayloadTooLargeError`,
   * so such a message never reaches a transport; set it at or below the transport's limit.
   *
   * Keep it small enough to publish in a test (a few hundred KiB to a few MiB): pass the same
   * value to the transport's limit option in `create`. Omit it for transports without a limit;
   * the check is skipped.
   */
  maxPayloadBytes?: number;
  /**
   * True when the broker drops a second message with an id it has seen (NATS JetStream's
   * `Nats-Msg-Id` window, SQS FIFO's deduplication id). The duplicate check then expects the
   * consumer to see one copy of a republished message; otherwise it expects both copies. Both
   * publishes must report `ok` either way (a republish after a lost confirm must not fail).
   *
   * @default false
   */
  dedupes?: boolean;
}

/** What the check registrations share. */
export interface ConformanceContext {
  name: string;
  options: TransportConformanceOptions;
  timeoutMs: number;
  reconnectTimeoutMs: number;
  /** Runs `body` with a started transport (and a consumer on `topics` when available), then closes both. */
  withTransport(
    topics: readonly string[],
    body: (transport: Transport, consumer: ConformanceConsumer | undefined) => Promise<void>,
  ): Promise<void>;
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

  const context: ConformanceContext = {
    name,
    options,
    timeoutMs,
    reconnectTimeoutMs: options.reconnectTimeoutMs ?? 15_000,
    withTransport,
  };

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
          // Arrival order is promised only by a transport that declares `ordering`; any other
          // must deliver the same messages, in any order (parallel POSTs, partitions, SQS).
          const got = received.map((m) => m.id);
          const sent = batch.map((m) => m.id);
          if (transport.ordering === true) assert.deepEqual(got, sent);
          else assert.deepEqual([...got].sort(), [...sent].sort());
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

    registerMessageChecks(context);
    registerFaultChecks(context);
  });
}
