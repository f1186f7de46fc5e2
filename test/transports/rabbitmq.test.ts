// Against the real broker on 127.0.0.1:5672 (override with MAILROOM_TEST_AMQP_URL). Every name
// carries a random suffix, and the exchanges are deleted afterwards.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import type * as amqplib from 'amqplib';

import { isConfigError } from '../../src/core/errors/config-error.js';
import { isPermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import type { PublishOutcome } from '../../src/core/ports.js';
import {
  runTransportConformance,
  testMessage,
  uniqueTopics,
} from '../../src/testkit/transport-conformance.js';
import { RabbitMqTransport, type RabbitMqTransportOptions } from '../../src/transports/rabbitmq/index.js';
import {
  breakSocket,
  closeConnectionNamed,
  recordingConnect,
  RABBITMQ_URL,
  TestBroker,
  uniqueName,
  type TestConsumer,
} from './rabbitmq-helpers.js';

const exchange = uniqueName('mailroom-test');
let broker: TestBroker;
let routed: TestConsumer;
const extraExchanges: string[] = [];

before(async () => {
  broker = await TestBroker.open();
  // testMessage()'s topic is routed to a queue: the transport publishes with `mandatory` by
  // default, so tests about connections and confirms that publish it expect `ok`, not the
  // permanent outcome of an unroutable message (tested on topics of their own below).
  await broker.withChannel((ch) => ch.assertExchange(exchange, 'topic', { durable: true }));
  routed = await broker.consume(exchange, [testMessage().topic]);
});

after(async () => {
  await routed.close();
  for (const name of [exchange, ...extraExchanges]) await broker.deleteExchange(name).catch(() => {});
  await broker.close();
});

function transport(options: Partial<RabbitMqTransportOptions> = {}): RabbitMqTransport {
  return new RabbitMqTransport({ url: RABBITMQ_URL, exchange, ...options });
}

function statuses(outcomes: PublishOutcome[]): string[] {
  return outcomes.map((o) => o.status);
}

function errorOf(outcome: PublishOutcome | undefined): Error {
  assert.ok(
    outcome !== undefined && outcome.status !== 'ok',
    `expected a failed outcome, got ${outcome?.status}`,
  );
  return outcome.error;
}

function codeOf(outcome: PublishOutcome | undefined): string | undefined {
  if (outcome === undefined || outcome.status === 'ok') return undefined;
  return isTransportError(outcome.error) ? outcome.error.code : outcome.error.name;
}

/** The payload limit the conformance suite checks: the transport's own (RabbitMQ's default is 128 MiB). */
const CONFORMANCE_MAX_BYTES = 512 * 1024;

/** RABBITMQ_URL with another host and port: the conformance suite's proxy, or a closed port. */
function urlThrough(host: string, port: number): string {
  const url = new URL(RABBITMQ_URL);
  url.hostname = host;
  url.port = String(port);
  return url.toString();
}

runTransportConformance('rabbitmq', {
  create: async () => transport({ maxMessageBytes: CONFORMANCE_MAX_BYTES }),
  consume: (_transport, topics) => broker.consume(exchange, topics),
  proxy: {
    broker: () => {
      const url = new URL(RABBITMQ_URL);
      return { host: url.hostname, port: Number(url.port || 5672) };
    },
    createThrough: async ({ host, port }) =>
      transport({ url: urlThrough(host, port), maxMessageBytes: CONFORMANCE_MAX_BYTES }),
  },
  maxPayloadBytes: CONFORMANCE_MAX_BYTES,
  // With `mandatory` (the default), a topic no queue is bound to is returned by the broker: permanent.
  refusedMessage: (topic) => testMessage({ topic }),
});

describe('rabbitmq transport', () => {
  it('sets message-id, type, content type, timestamp, persistent delivery and the mailroom headers', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const t = transport();
    const consumer = await (async () => {
      await t.start();
      return broker.consume(exchange, [topic]);
    })();
    try {
      const createdAt = new Date('2024-05-06T07:08:09.500Z');
      const keyed = testMessage({
        topic,
        key: 'order-42',
        type: 'order.created',
        contentType: 'application/json',
        headers: { traceparent: '00-abc-def-01', 'x-tenant': 'acme' },
        createdAt,
        attempts: 3,
      });
      // A keyless message whose user header pretends to be the key: the transport drops it.
      const keyless = testMessage({ topic, headers: { 'mailroom-key': 'forged' } });
      assert.deepEqual(statuses(await t.publish([keyed, keyless])), ['ok', 'ok']);

      await consumer.take(2, 10_000);
      const [first, second] = consumer.raw as [(typeof consumer.raw)[0], (typeof consumer.raw)[0]];
      assert.equal(first.fields.exchange, exchange);
      assert.equal(first.fields.routingKey, topic);
      assert.equal(first.properties.messageId, keyed.id);
      assert.equal(first.properties.type, 'order.created');
      assert.equal(first.properties.contentType, 'application/json');
      assert.equal(first.properties.deliveryMode, 2);
      assert.equal(first.properties.timestamp, Math.floor(createdAt.getTime() / 1000));
      assert.deepEqual(first.properties.headers, {
        traceparent: '00-abc-def-01',
        'x-tenant': 'acme',
        'mailroom-key': 'order-42',
        'mailroom-attempt': '3',
      });
      assert.ok(first.content.equals(keyed.payload));

      assert.equal(second.properties.messageId, keyless.id);
      assert.equal(second.properties.type, undefined);
      assert.equal(second.properties.headers?.['mailroom-key'], undefined);
      assert.equal(second.properties.headers?.['mailroom-attempt'], '1');
    } finally {
      await consumer.close();
      await t.close();
    }
  });

  it('reports an unroutable message as permanent when mandatory is true, naming the topic and exchange', async () => {
    const [routed, unrouted] = uniqueTopics(2) as [string, string];
    const t = transport({ mandatory: true });
    await t.start();
    const consumer = await broker.consume(exchange, [routed]);
    try {
      const outcomes = await t.publish([
        testMessage({ topic: routed }),
        testMessage({ topic: unrouted }),
        testMessage({ topic: routed }),
      ]);
      assert.deepEqual(statuses(outcomes), ['ok', 'permanent', 'ok']);
      const failed = outcomes[1];
      assert.ok(failed?.status === 'permanent' && isPermanentDeliveryError(failed.error));
      assert.match(failed.error.message, new RegExp(`topic "${unrouted.replaceAll('.', '\\.')}"`));
      assert.match(failed.error.message, new RegExp(`exchange "${exchange}"`));
      assert.match(failed.error.message, /NO_ROUTE/);
      await consumer.take(2, 10_000);
    } finally {
      await consumer.close();
      await t.close();
    }
  });

  it('reports an unroutable message as permanent by default, so it becomes a dead letter instead of vanishing', async () => {
    const [unrouted] = uniqueTopics(1) as [string];
    const t = transport();
    try {
      const [outcome] = await t.publish([testMessage({ topic: unrouted })]);
      assert.equal(outcome?.status, 'permanent');
      assert.match(errorOf(outcome).message, /unroutable \(312 NO_ROUTE\)/);
    } finally {
      await t.close();
    }
  });

  it('reports an unroutable message as ok when mandatory is false', async () => {
    const [unrouted] = uniqueTopics(1) as [string];
    const t = transport({ mandatory: false });
    try {
      assert.deepEqual(statuses(await t.publish([testMessage({ topic: unrouted })])), ['ok']);
    } finally {
      await t.close();
    }
  });

  it('reports retry when the broker nacks a message, here because the queue is full', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const t = transport();
    await t.start();
    const consumer = await broker.consume(exchange, [topic], {
      'x-max-length': 0,
      'x-overflow': 'reject-publish',
    });
    try {
      const [outcome] = await t.publish([testMessage({ topic })]);
      assert.equal(codeOf(outcome), 'nacked');
      assert.match(outcome?.status === 'retry' ? outcome.error.message : '', /nacked/);
    } finally {
      await consumer.close();
      await t.close();
    }
  });

  it('reports in-flight messages as unavailable when the connection drops, loses none that got ok, and reconnects on the next publish', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const { connect, connections, channels } = recordingConnect();
    const t = transport({ connect });
    await t.start();
    const consumer = await broker.consume(exchange, [topic]);
    try {
      const [model] = connections as [amqplib.ChannelModel];
      const [channel] = channels as [amqplib.ConfirmChannel];
      // Not events.once: it would reject on the 'error' event that precedes 'close'.
      const closed = new Promise((resolve) => model.once('close', resolve));
      // Break the socket as soon as the broker confirms the first messages: some are confirmed
      // by then, the rest are on the wire or not sent yet.
      channel.once('ack', () => breakSocket(model));
      const batch = Array.from({ length: 5000 }, () => testMessage({ topic, payload: Buffer.alloc(200, 1) }));
      const outcomes = await t.publish(batch);
      await closed;

      const ok = batch.filter((_, i) => outcomes[i]?.status === 'ok');
      const unavailable = outcomes.filter((o) => o.status === 'unavailable');
      assert.equal(outcomes.length, batch.length);
      assert.equal(ok.length + unavailable.length, batch.length, 'no other outcome than ok and unavailable');
      assert.ok(ok.length > 0, 'the socket broke on the first confirm, so some messages are ok');
      assert.ok(unavailable.length > 0, 'expected some messages to be unconfirmed when the socket broke');
      for (const outcome of unavailable)
        assert.ok(['confirm_lost', 'channel_closed'].includes(codeOf(outcome) ?? ''));
      assert.ok(
        unavailable.some((o) => o.status === 'unavailable' && /test: connection reset/.test(o.error.message)),
        'the error explains why the connection was lost',
      );
      assert.equal(t.connected, false);

      // Every message reported ok is in the queue.
      await consumer.waitForIds(
        ok.map((m) => m.id),
        15_000,
      );

      // The next publish opens a new connection and succeeds.
      const again = await t.publish([testMessage({ topic })]);
      assert.deepEqual(statuses(again), ['ok']);
      assert.equal(connections.length, 2);
    } finally {
      await consumer.close();
      await t.close();
    }
  });

  it('reopens the connection on the next publish after the broker closed it', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const name = uniqueName('mailroom-test-forced');
    const { connect, connections } = recordingConnect();
    const t = transport({ connect, socketOptions: { clientProperties: { connection_name: name } } });
    await t.start();
    try {
      const closed = new Promise((resolve) =>
        (connections[0] as amqplib.ChannelModel).once('close', resolve),
      );
      await closeConnectionNamed(name);
      await closed;
      assert.equal(t.connected, false);

      const consumer = await broker.consume(exchange, [topic]);
      assert.deepEqual(statuses(await t.publish([testMessage({ topic })])), ['ok']);
      await consumer.close();
      assert.equal(connections.length, 2);
      assert.equal(t.connected, true);
    } finally {
      await t.close();
    }
  });

  it('connects on the first publish when start was not called', async () => {
    const t = transport();
    try {
      assert.deepEqual(statuses(await t.publish([testMessage()])), ['ok']);
      assert.equal(t.connected, true);
    } finally {
      await t.close();
    }
  });

  it('waits in close for the confirms of a batch in flight', async () => {
    const t = transport();
    await t.start();
    const publishing = t.publish(Array.from({ length: 500 }, () => testMessage()));
    await t.close();
    assert.deepEqual(new Set(statuses(await publishing)), new Set(['ok']));
    assert.equal(t.connected, false);
  });

  it('fails to start with code unreachable when nothing listens, without showing the password', async () => {
    const t = new RabbitMqTransport({ url: 'amqp://relay:s3cret-pass@127.0.0.1:1/', connectTimeoutMs: 5000 });
    try {
      await assert.rejects(t.start(), (err: unknown) => {
        assert.ok(isTransportError(err));
        assert.equal(err.code, 'unreachable');
        assert.match(err.message, /127\.0\.0\.1:1/);
        assert.match(err.message, /relay:\*\*\*@/);
        assert.doesNotMatch(err.message, /s3cret-pass/);
        assert.match(err.message, /check that the broker is running/);
        return true;
      });
    } finally {
      await t.close();
    }
  });

  it('reports unavailable for a whole batch when it cannot connect, and waits out the backoff before trying again', async () => {
    let attempts = 0;
    const { connect: realConnect } = recordingConnect();
    const t = new RabbitMqTransport({
      url: 'amqp://relay:s3cret-pass@127.0.0.1:1',
      reconnectDelayMs: 60_000,
      maxReconnectDelayMs: 60_000,
      connect: (url, options) => {
        attempts++;
        return realConnect(url, options);
      },
    });
    try {
      const first = await t.publish([testMessage(), testMessage()]);
      assert.deepEqual(statuses(first), ['unavailable', 'unavailable']);
      assert.equal(codeOf(first[0]), 'unreachable');
      assert.equal(attempts, 1);

      const second = await t.publish([testMessage()]);
      assert.deepEqual(statuses(second), ['unavailable']);
      assert.equal(codeOf(second[0]), 'unreachable');
      assert.match(errorOf(second[0]).message, /next reconnect attempt in \d+ ms/);
      assert.doesNotMatch(errorOf(second[0]).message, /s3cret-pass/);
      assert.equal(attempts, 1, 'publish must not reconnect during the backoff');

      // An explicit start tries at once.
      await assert.rejects(t.start());
      assert.equal(attempts, 2);
    } finally {
      await t.close();
    }
  });

  it('fails to start with code auth_failed for a wrong password, without showing it', async () => {
    const url = new URL(RABBITMQ_URL);
    url.password = 'wrong-secret';
    const t = new RabbitMqTransport({ url: url.toString(), exchange });
    try {
      await assert.rejects(t.start(), (err: unknown) => {
        assert.ok(isTransportError(err));
        assert.equal(err.code, 'auth_failed');
        assert.doesNotMatch(err.message, /wrong-secret/);
        assert.match(err.message, /\*\*\*/);
        return true;
      });
    } finally {
      await t.close();
    }
  });

  it('fails to start with code vhost_refused for a virtual host that does not exist', async () => {
    const url = new URL(RABBITMQ_URL);
    url.pathname = `/${uniqueName('no-such-vhost')}`;
    const t = new RabbitMqTransport({ url: url.toString(), exchange });
    try {
      await assert.rejects(
        t.start(),
        (err: unknown) => isTransportError(err) && err.code === 'vhost_refused',
      );
    } finally {
      await t.close();
    }
  });

  it('fails to start with code declare_failed when the exchange exists with another type', async () => {
    const fanout = uniqueName('mailroom-test-fanout');
    extraExchanges.push(fanout);
    await broker.withChannel((ch) => ch.assertExchange(fanout, 'fanout', { durable: false }));
    const t = transport({ exchange: fanout, exchangeType: 'topic' });
    try {
      await assert.rejects(t.start(), (err: unknown) => {
        assert.ok(isTransportError(err));
        assert.equal(err.code, 'declare_failed');
        assert.match(err.message, new RegExp(`exchange "${fanout}"`));
        assert.match(err.message, /PRECONDITION_FAILED/);
        return true;
      });
      assert.equal(t.connected, false);
    } finally {
      await t.close();
    }
  });

  it('reports retry (channel_exception) naming the exchange when declareExchange is off and the exchange is missing, on every publish, so the messages spend their attempts', async () => {
    const missing = uniqueName('mailroom-test-missing');
    const { connect, connections } = recordingConnect();
    const t = transport({ exchange: missing, declareExchange: false, connect });
    try {
      await t.start();
      // The broker closes the channel (404 NOT_FOUND) and keeps the connection: not an outage,
      // which would spend no attempt and stall the relay; again after reconnecting.
      for (const round of [1, 2]) {
        const outcomes = await t.publish([testMessage(), testMessage()]);
        assert.deepEqual(statuses(outcomes), ['retry', 'retry'], `round ${round}`);
        assert.deepEqual(outcomes.map(codeOf), ['channel_exception', 'channel_exception']);
        assert.match(errorOf(outcomes[0]).message, new RegExp(`no exchange '${missing}'`));
        assert.match(errorOf(outcomes[0]).message, /NOT_FOUND/);
        await t.probe(); // the broker is reachable: a probe says so
      }
      assert.ok(connections.length >= 2, 'each round ran on a fresh connection');
    } finally {
      await t.close();
    }
  });

  it('reports a message with a CC header as permanent without sending it, so the broker does not close the channel on the rest of the batch', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const t = transport();
    await t.start();
    const consumer = await broker.consume(exchange, [topic]);
    try {
      const batch = [
        testMessage({ topic }),
        testMessage({ topic, headers: { CC: 'audit' } }),
        testMessage({ topic }),
      ];
      const outcomes = await t.publish(batch);
      assert.deepEqual(statuses(outcomes), ['ok', 'permanent', 'ok']);
      assert.ok(isPermanentDeliveryError(errorOf(outcomes[1])));
      assert.match(errorOf(outcomes[1]).message, /header named CC/);
      const received = await consumer.take(2, 10_000);
      assert.deepEqual(
        received.map((m) => m.id),
        [batch[0]?.id, batch[2]?.id],
      );
      assert.equal(t.connected, true, 'the channel stayed open');
    } finally {
      await consumer.close();
      await t.close();
    }
  });

  it('reports a message over maxMessageBytes as permanent without sending it', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const t = transport({ maxMessageBytes: 1000 });
    await t.start();
    const consumer = await broker.consume(exchange, [topic]);
    try {
      const fits = testMessage({ topic, payload: Buffer.alloc(1000, 1) });
      const tooBig = testMessage({ topic, payload: Buffer.alloc(1001, 1) });
      const outcomes = await t.publish([tooBig, fits]);
      assert.deepEqual(statuses(outcomes), ['permanent', 'ok']);
      assert.match(errorOf(outcomes[0]).message, /1001 bytes, over maxMessageBytes \(1000\)/);
      // Had the big message been sent, it would have arrived first: one channel, one queue.
      const [received] = await consumer.take(1, 10_000);
      assert.equal(received?.id, fits.id, 'the big message never reached the queue');
    } finally {
      await consumer.close();
      await t.close();
    }
  });

  it('rejects a malformed URL, a wrong scheme and a missing host with ConfigError, password redacted', () => {
    assert.throws(
      () => new RabbitMqTransport({ url: 'not a url' }),
      (err: unknown) =>
        isConfigError(err) && err.key === 'url' && /"not a url" is not a valid URL/.test(err.message),
    );
    assert.throws(
      () => new RabbitMqTransport({ url: 'http://user:topsecret@rabbit:5672' }),
      (err: unknown) =>
        isConfigError(err) &&
        err.key === 'url' &&
        /scheme "http"/.test(err.message) &&
        /user:\*\*\*@/.test(err.message) &&
        !err.message.includes('topsecret'),
    );
    assert.throws(
      () => new RabbitMqTransport({ url: 'amqp://user:topsecret@:5672' }),
      (err: unknown) => isConfigError(err) && err.key === 'url' && !err.message.includes('topsecret'),
    );
    assert.throws(
      () => new RabbitMqTransport({ url: 42 } as never),
      (err: unknown) => isConfigError(err) && err.key === 'url',
    );
  });

  it('rejects unknown and ill-typed options with ConfigError naming the key and the allowed ones', () => {
    assert.throws(
      () => new RabbitMqTransport({ url: RABBITMQ_URL, exchnage: 'orders' } as never),
      (err: unknown) =>
        isConfigError(err) &&
        err.key === 'exchnage' &&
        /unknown RabbitMqTransport option "exchnage"/.test(err.message) &&
        /exchange, exchangeType, declareExchange, mandatory/.test(err.message),
    );
    assert.throws(
      () => new RabbitMqTransport({ url: RABBITMQ_URL, confirmTimeoutMs: -5 }),
      (err: unknown) => isConfigError(err) && err.key === 'confirmTimeoutMs',
    );
    assert.throws(
      () => new RabbitMqTransport({ url: RABBITMQ_URL, exchangeType: 'topics' }),
      (err: unknown) => isConfigError(err) && err.key === 'exchangeType',
    );
    assert.throws(
      () => new RabbitMqTransport({ url: RABBITMQ_URL, exchange: 'bad name!' }),
      (err: unknown) => isConfigError(err) && err.key === 'exchange',
    );
    assert.throws(
      () => new RabbitMqTransport({ url: RABBITMQ_URL, maxMessageBytes: 0 }),
      (err: unknown) => isConfigError(err) && err.key === 'maxMessageBytes',
    );
  });
});
