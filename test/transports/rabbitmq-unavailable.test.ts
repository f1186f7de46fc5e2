// The RabbitMQ transport when the real broker cannot be reached or stops answering. A TcpProxy
// between the transport and the broker refuses, black-holes or heals the traffic; the broker
// itself is never touched.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { isTransportError } from '../../src/core/errors/transport-error.js';
import type { PublishOutcome } from '../../src/core/ports.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import { testMessage } from '../../src/testkit/transport-conformance.js';
import { RabbitMqTransport, type RabbitMqTransportOptions } from '../../src/transports/rabbitmq/index.js';
import {
  recordingConnect,
  RABBITMQ_URL,
  TestBroker,
  uniqueName,
  until,
  type TestConsumer,
} from './rabbitmq-helpers.js';

const exchange = uniqueName('mailroom-test-unavailable');
let broker: TestBroker;
let routed: TestConsumer;

before(async () => {
  broker = await TestBroker.open();
  // The messages these tests publish are routed to a queue: the transport publishes with
  // `mandatory` by default, so an unroutable one would be a permanent outcome, and these tests
  // are about the connection, not routing.
  await broker.withChannel((ch) => ch.assertExchange(exchange, 'topic', { durable: true }));
  routed = await broker.consume(exchange, [testMessage().topic]);
});

after(async () => {
  await routed.close();
  await broker.deleteExchange(exchange).catch(() => {});
  await broker.close();
});

/** A proxy to the test broker and the broker URL through it, with the same credentials. */
async function proxied(): Promise<{ proxy: TcpProxy; url: string }> {
  const target = new URL(RABBITMQ_URL);
  const proxy = await TcpProxy.start({
    targetHost: target.hostname,
    targetPort: Number(target.port || 5672),
  });
  const url = new URL(RABBITMQ_URL);
  url.hostname = '127.0.0.1';
  url.port = String(proxy.port);
  return { proxy, url: url.toString() };
}

function transport(url: string, options: Partial<RabbitMqTransportOptions> = {}): RabbitMqTransport {
  return new RabbitMqTransport({ url, exchange, ...options });
}

function statuses(outcomes: PublishOutcome[]): string[] {
  return outcomes.map((o) => o.status);
}

function codes(outcomes: PublishOutcome[]): Array<string | undefined> {
  return outcomes.map((o) => (o.status !== 'ok' && isTransportError(o.error) ? o.error.code : undefined));
}

describe('rabbitmq transport, broker unreachable or silent', () => {
  it('resolves at once with unavailable (publish_timeout) when the signal aborts while the broker is silent, destroys the unanswered connection, ignores what comes after, and publishes through a new connection once the network heals', async () => {
    const { proxy, url } = await proxied();
    const { connect, connections, published } = recordingConnect();
    const t = transport(url, { connect });
    try {
      await t.start();
      proxy.blackhole();
      const controller = new AbortController();
      const batch = [testMessage(), testMessage(), testMessage()];
      const publishing = t.publish(batch, { signal: controller.signal });
      await until(() => published.count === batch.length, 'the batch to be handed to the client');
      controller.abort();
      const outcomes = await publishing;
      assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable', 'unavailable']);
      assert.deepEqual(codes(outcomes), ['publish_timeout', 'publish_timeout', 'publish_timeout']);
      const error = outcomes[0]?.status === 'unavailable' ? outcomes[0].error : undefined;
      assert.match(error?.message ?? '', new RegExp(`127\\.0\\.0\\.1:${proxy.port}`));
      assert.match(error?.message ?? '', /guest:\*\*\*@/);
      assert.equal(t.connected, false);

      // The close goes unanswered through the black hole: the socket is destroyed instead of
      // being left open (it would keep the process alive).
      await until(() => proxy.openConnections === 0, 'the dropped connection to be closed');
      assert.deepEqual(
        codes(outcomes),
        ['publish_timeout', 'publish_timeout', 'publish_timeout'],
        'the channel closing later changed nothing',
      );

      proxy.heal();
      assert.deepEqual(statuses(await t.publish([testMessage()])), ['ok']);
      assert.equal(connections.length, 2);
    } finally {
      await t.close();
      await proxy.close();
    }
  });

  it('reports unavailable (confirm_timeout) when the broker does not confirm within confirmTimeoutMs, and drops the connection', async () => {
    const { proxy, url } = await proxied();
    const { connect, connections } = recordingConnect();
    const t = transport(url, { connect, confirmTimeoutMs: 300 });
    try {
      await t.start();
      proxy.blackhole();
      const outcomes = await t.publish([testMessage(), testMessage()]);
      assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
      assert.deepEqual(codes(outcomes), ['confirm_timeout', 'confirm_timeout']);
      await until(() => proxy.openConnections === 0, 'the silent connection to be dropped');

      proxy.heal();
      assert.deepEqual(statuses(await t.publish([testMessage()])), ['ok']);
      assert.equal(connections.length, 2);
    } finally {
      await t.close();
      await proxy.close();
    }
  });

  it('reports unavailable (unreachable) for a batch while connections are refused', async () => {
    const { proxy, url } = await proxied();
    const t = transport(url);
    try {
      proxy.refuse();
      const outcomes = await t.publish([testMessage(), testMessage()]);
      assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
      assert.deepEqual(codes(outcomes), ['unreachable', 'unreachable']);
    } finally {
      await t.close();
      await proxy.close();
    }
  });

  it('probe throws while connections are refused, throws probe_aborted when its signal aborts a connect that gets no answer, and resolves once the broker is reachable', async () => {
    const { proxy, url } = await proxied();
    const t = transport(url, { connectTimeoutMs: 1000 });
    try {
      proxy.refuse();
      await assert.rejects(t.probe(), (err: unknown) => {
        assert.ok(isTransportError(err));
        assert.equal(err.code, 'unreachable');
        assert.match(err.message, /check that the broker is running/);
        return true;
      });

      proxy.heal();
      proxy.blackhole();
      await assert.rejects(
        t.probe({ signal: AbortSignal.timeout(100) }),
        (err: unknown) => isTransportError(err) && err.code === 'probe_aborted',
      );

      // The black-holed connect ends by its own connectTimeoutMs; probing again, as the relay
      // does, succeeds once the network is back.
      proxy.heal();
      await until(() => !proxy.openConnections, 'the black-holed connect to give up');
      await t.probe();
      assert.equal(t.connected, true);
    } finally {
      await t.close();
      await proxy.close();
    }
  });

  it('closes without waiting forever on a silent broker, destroying the socket whose close went unanswered', async () => {
    const { proxy, url } = await proxied();
    const t = transport(url, { closeTimeoutMs: 100, confirmTimeoutMs: 60_000 });
    try {
      await t.start();
      proxy.blackhole();
      const publishing = t.publish([testMessage()]);
      await t.close();
      assert.deepEqual(statuses(await publishing), ['unavailable']);
      await until(() => proxy.openConnections === 0, 'the connection to be gone');
    } finally {
      await proxy.close();
    }
  });
});
