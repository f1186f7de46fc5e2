/**
 * Conformance checks about faults between a transport and its broker: a connection dropped in the
 * middle of a batch (standing in for a broker restart), the publish deadline against a broker that
 * stopped answering, an unreachable broker, and `close()` while a batch is in flight. The network
 * faults are made with a {@link TcpProxy} in front of the real broker (`options.proxy`).
 * Registered by `runTransportConformance`; see `TransportConformanceOptions.proxy`.
 *
 * @module
 */
import assert from 'node:assert/strict';
import { it, type TestContext } from 'node:test';

import { isTransportError } from '../core/errors/transport-error.js';
import type { PublishOutcome, Transport } from '../core/ports.js';
import type { OutboxMessage } from '../core/types.js';
import {
  assertAllOk,
  assertOkOrUnavailable,
  closedPort,
  describeOutcome,
  probeUntilReady,
  receiveAll,
  sleep,
  testMessage,
  uniqueTopics,
  within,
} from './conformance-support.js';
import { TcpProxy } from './tcp-proxy.js';
import type { ConformanceConsumer, ConformanceContext } from './transport-conformance.js';

/**
 * How long a publish may take to resolve once its signal aborted. The relay aborts at its publish
 * deadline and cannot move on before the call returns; a transport that waited for its own
 * (longer) timeouts instead would stretch every outage by them. Generous for a loaded machine;
 * the transports here resolve within milliseconds.
 */
const ABORT_ANSWER_MS = 2000;

/** Delay per forwarded chunk while a batch is in flight, so a fault lands in the middle of it. */
const SLOW_CHUNK_MS = 5;

/** Messages in the batches the faults interrupt, and the size of each payload. */
const BATCH = 400;
const PAYLOAD_BYTES = 1024;

function batchOn(topic: string, count = BATCH): OutboxMessage[] {
  return Array.from({ length: count }, (_, i) =>
    testMessage({ topic, key: `k${i % 7}`, payload: Buffer.alloc(PAYLOAD_BYTES, i % 251) }),
  );
}

function counts(outcomes: PublishOutcome[]): string {
  const by = new Map<string, number>();
  for (const o of outcomes) by.set(o.status, (by.get(o.status) ?? 0) + 1);
  return [...by].map(([status, n]) => `${n} ${status}`).join(', ');
}

/**
 * Resolves once the broker has part of the batch (the consumer saw `count` messages), or
 * after `fallbackMs` without a consumer; or when `publishing` settles first. Returns whether the
 * publish was still in flight.
 */
async function partWayThrough(
  consumer: ConformanceConsumer | undefined,
  count: number,
  publishing: Promise<unknown>,
  timeoutMs: number,
  fallbackMs = 30,
): Promise<boolean> {
  let done = false;
  const settled = publishing.then(
    () => (done = true),
    () => (done = true),
  );
  const arrived = consumer
    ? consumer.take(count, timeoutMs).then(
        () => undefined,
        () => undefined,
      )
    : sleep(fallbackMs);
  await Promise.race([arrived, settled]);
  return !done;
}

export function registerFaultChecks(context: ConformanceContext): void {
  const { options, timeoutMs, reconnectTimeoutMs } = context;
  const consume = options.consume;
  const proxyOptions = options.proxy;
  const noProxy = 'no proxy given: the transport has no TCP connection the suite can put a TcpProxy on';

  /**
   * Runs `body` with a proxy in front of the broker and a started transport made to connect
   * through it (and a consumer of its own on `topics`), then closes everything.
   */
  async function withProxy(
    t: TestContext,
    topics: readonly string[],
    body: (proxy: TcpProxy, transport: Transport, consumer: ConformanceConsumer | undefined) => Promise<void>,
  ): Promise<void> {
    if (!proxyOptions) throw new Error('unreachable: checked by the caller');
    const broker = typeof proxyOptions.broker === 'function' ? proxyOptions.broker() : proxyOptions.broker;
    const proxy = await TcpProxy.start({ targetHost: broker.host ?? '127.0.0.1', targetPort: broker.port });
    let transport: Transport | undefined;
    let consumer: ConformanceConsumer | undefined;
    try {
      transport = await proxyOptions.createThrough({ host: '127.0.0.1', port: proxy.port });
      await transport.start();
      if (consume) consumer = await consume(transport, topics);
      await body(proxy, transport, consumer);
    } finally {
      // Back to normal first, so closing is not held up by a fault still in place.
      proxy.heal();
      await consumer?.close();
      await transport?.close();
      await proxy.close();
      t.diagnostic(`connections through the proxy: ${proxy.connections}`);
    }
  }

  /** Publishes one message and checks that it went through the proxy (`createThrough` honoured). */
  async function warmUp(proxy: TcpProxy, transport: Transport, topic: string): Promise<OutboxMessage> {
    const warm = testMessage({ topic });
    assertAllOk(await within(transport.publish([warm]), timeoutMs, 'publish through the proxy'), 1);
    assert.ok(
      proxy.connections > 0,
      'the transport made by createThrough published without connecting to the proxy address it was given',
    );
    return warm;
  }

  it('keeps every message it reported ok when its connection drops mid-batch (as in a broker restart), then reconnects and publishes again', async (t) => {
    if (!proxyOptions) {
      t.skip(noProxy);
      return;
    }
    const topics = uniqueTopics(1);
    const topic = topics[0] as string;
    await withProxy(t, topics, async (proxy, transport, consumer) => {
      const warm = await warmUp(proxy, transport, topic);
      const batch = batchOn(topic);
      proxy.delay(SLOW_CHUNK_MS);
      const publishing = transport.publish(batch);
      // Half the batch at the broker: confirms of some messages are on their way back, others not sent.
      const inFlight = await partWayThrough(consumer, 1 + BATCH / 2, publishing, timeoutMs);
      proxy.cut();
      proxy.heal();
      const outcomes = await within(publishing, timeoutMs, 'publish whose connection was reset');
      assertOkOrUnavailable(outcomes, batch.length, 'in flight when the connection was reset');
      t.diagnostic(
        `cut ${inFlight ? 'while the batch was in flight' : 'after the batch was answered (the check then proves less)'}: ${counts(outcomes)}`,
      );
      const tries = await probeUntilReady(transport, reconnectTimeoutMs, 'after the connection was reset');
      t.diagnostic(`probe succeeded after ${tries} tries`);
      const later = testMessage({ topic });
      const laterOutcomes = await within(transport.publish([later]), timeoutMs, 'publish after reconnecting');
      assertAllOk(laterOutcomes, 1);
      if (consumer) {
        const confirmed = batch.filter((_, i) => outcomes[i]?.status === 'ok');
        await receiveAll(consumer, [warm, ...confirmed, later], timeoutMs, 'reported ok around the reset');
      }
    });
  });

  it('answers a publish promptly with unavailable when its signal aborts while the broker does not answer, drops that connection, and publishes again once the broker answers', async (t) => {
    if (!proxyOptions) {
      t.skip(noProxy);
      return;
    }
    const topics = uniqueTopics(1);
    const topic = topics[0] as string;
    await withProxy(t, topics, async (proxy, transport, consumer) => {
      const warm = await warmUp(proxy, transport, topic);
      const connectionsBefore = proxy.connections;
      proxy.blackhole();
      const abort = new AbortController();
      const batch = batchOn(topic, 20);
      const publishing = transport.publish(batch, { signal: abort.signal });
      let early: PublishOutcome[] | undefined;
      void publishing.then((o) => (early = o));
      await sleep(200);
      assert.ok(
        !early?.some((o) => o.status === 'ok'),
        `the publish reported ok although the broker answered nothing: ${early?.map((o) => describeOutcome(o)).join('; ')}`,
      );
      const abortedAt = Date.now();
      abort.abort(new Error('conformance: publish deadline'));
      const outcomes = await within(publishing, ABORT_ANSWER_MS, 'publish after its signal aborted');
      t.diagnostic(`publish answered ${Date.now() - abortedAt} ms after the abort: ${counts(outcomes)}`);
      assert.equal(outcomes.length, batch.length);
      outcomes.forEach((outcome, i) => {
        assert.equal(
          outcome.status,
          'unavailable',
          `message ${i}: nothing was answered, so unavailable: ${describeOutcome(outcome)}`,
        );
      });

      // The connection that did not answer is closed: the proxy sees it go.
      const deadline = Date.now() + timeoutMs;
      const oldOpen = () => proxy.openConnections - (proxy.connections - connectionsBefore);
      while (oldOpen() > 0 && Date.now() < deadline) await sleep(20);
      assert.ok(
        oldOpen() <= 0,
        `the connection the aborted publish used is still open ${timeoutMs} ms later (drop it: a connection that does not answer is not worth keeping)`,
      );

      const probeAbort = new AbortController();
      const timer = setTimeout(() => probeAbort.abort(new Error('conformance: probe deadline')), 300);
      try {
        await within(
          assert.rejects(transport.probe({ signal: probeAbort.signal }), (err: unknown) => {
            assert.ok(isTransportError(err), `probe must reject with a TransportError, got ${String(err)}`);
            return true;
          }),
          300 + ABORT_ANSWER_MS,
          'probe while the broker does not answer',
        );
      } finally {
        clearTimeout(timer);
      }

      proxy.heal();
      const tries = await probeUntilReady(transport, reconnectTimeoutMs, 'after the broker answered again');
      t.diagnostic(`probe succeeded after ${tries} tries`);
      const later = testMessage({ topic });
      assertAllOk(await within(transport.publish([later]), timeoutMs, 'publish after the black hole'), 1);
      if (consumer) await receiveAll(consumer, [warm, later], timeoutMs, 'reported ok');
    });
  });

  it('reports unavailable (not retry or permanent) for every message while the broker cannot be reached, and its probe throws a TransportError', async (t) => {
    const cases: Array<{
      what: string;
      make: () => Promise<{ transport: Transport; cleanup?: () => Promise<void> }>;
    }> = [];
    if (options.createUnreachable) {
      const createUnreachable = options.createUnreachable;
      cases.push({
        what: 'createUnreachable()',
        make: async () => ({ transport: await createUnreachable() }),
      });
    }
    if (proxyOptions) {
      cases.push({
        what: 'a closed port',
        make: async () => ({
          transport: await proxyOptions.createThrough({ host: '127.0.0.1', port: await closedPort() }),
        }),
      });
      cases.push({
        what: 'a proxy closing every connection at once',
        make: async () => {
          const broker =
            typeof proxyOptions.broker === 'function' ? proxyOptions.broker() : proxyOptions.broker;
          const proxy = await TcpProxy.start({
            targetHost: broker.host ?? '127.0.0.1',
            targetPort: broker.port,
          });
          proxy.refuse();
          return {
            transport: await proxyOptions.createThrough({ host: '127.0.0.1', port: proxy.port }),
            cleanup: () => proxy.close(),
          };
        },
      });
    }
    if (cases.length === 0) {
      t.skip(`${noProxy}, and no createUnreachable given`);
      return;
    }
    for (const { what, make } of cases) {
      const { transport, cleanup } = await make();
      try {
        const started = await within(
          transport.start().then(
            () => undefined,
            (err: unknown) => ({ err }),
          ),
          timeoutMs,
          `start() against ${what}`,
        );
        if (started !== undefined) {
          assert.ok(
            isTransportError(started.err),
            `start() against ${what} must reject with a TransportError, got ${String(started.err)}`,
          );
        }
        const batch = [testMessage(), testMessage({ key: 'k' }), testMessage()];
        const outcomes = await within(transport.publish(batch), timeoutMs, `publish against ${what}`);
        assert.equal(outcomes.length, batch.length);
        outcomes.forEach((outcome, i) => {
          assert.equal(
            outcome.status,
            'unavailable',
            `message ${i} against ${what}: ${describeOutcome(outcome)}`,
          );
          assert.ok(outcome.status === 'unavailable' && outcome.error instanceof Error);
        });
        await within(
          assert.rejects(transport.probe(), (err: unknown) => {
            assert.ok(
              isTransportError(err),
              `probe() against ${what} must throw a TransportError, got ${String(err)}`,
            );
            return true;
          }),
          timeoutMs,
          `probe against ${what}`,
        );
        t.diagnostic(`${what}: ${describeOutcome(outcomes[0])}`);
      } finally {
        await transport.close();
        await cleanup?.();
      }
    }
  });

  it('survives close() while a batch is in flight: close does not throw, each message is ok or unavailable, and every ok one arrives', async (t) => {
    const run = async (
      transport: Transport,
      consumer: ConformanceConsumer | undefined,
      when: 'same tick' | 'part-way',
      topic: string,
    ): Promise<void> => {
      const batch = batchOn(topic);
      const publishing = transport.publish(batch);
      let inFlight = true;
      if (when === 'part-way') inFlight = await partWayThrough(consumer, BATCH / 4, publishing, timeoutMs);
      await within(transport.close(), timeoutMs + 10_000, `close() while publishing (${when})`);
      const outcomes = await within(publishing, timeoutMs, `publish cut short by close() (${when})`);
      assertOkOrUnavailable(outcomes, batch.length, `when close() was called (${when})`);
      t.diagnostic(`close ${when}${inFlight ? '' : ' (batch already answered)'}: ${counts(outcomes)}`);
      const afterClose = await transport.publish([testMessage({ topic })]);
      assert.equal(
        afterClose[0]?.status,
        'unavailable',
        `publish after close: ${describeOutcome(afterClose[0])}`,
      );
      if (consumer) {
        const confirmed = batch.filter((_, i) => outcomes[i]?.status === 'ok');
        await receiveAll(consumer, confirmed, timeoutMs, `reported ok before close() (${when})`);
      }
    };
    for (const when of ['same tick', 'part-way'] as const) {
      const topics = uniqueTopics(1);
      const topic = topics[0] as string;
      if (proxyOptions) {
        await withProxy(t, topics, async (proxy, transport, consumer) => {
          proxy.delay(SLOW_CHUNK_MS);
          await run(transport, consumer, when, topic);
        });
      } else {
        await context.withTransport(topics, (transport, consumer) => run(transport, consumer, when, topic));
      }
    }
  });
}
