// The STOMP transport against both brokers it is tested with: RabbitMQ's STOMP plugin (61613) and
// ActiveMQ (61623), started by .ci/run. Every destination carries a random suffix; the queues made
// on RabbitMQ are deleted afterwards (ActiveMQ drops inactive ones itself).
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';

import { isConfigError } from '../../src/core/errors/config-error.js';
import { isPermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import type { PublishOutcome } from '../../src/core/ports.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import {
  runTransportConformance,
  testMessage,
  uniqueTopics,
} from '../../src/testkit/transport-conformance.js';
import {
  encodeFrame,
  FrameDecoder,
  escapeHeader,
  unescapeHeader,
} from '../../src/transports/stomp/stomp-frame.js';
import { StompTransport, type StompTransportOptions } from '../../src/transports/stomp/index.js';
import { BROKERS, deleteRabbitQueues, subscribe, uniqueName, type TestBroker } from './stomp-helpers.js';

/** Queue names used on RabbitMQ, deleted after the file. */
const rabbitQueues = new Set<string>();

after(async () => {
  await deleteRabbitQueues(rabbitQueues);
});

/** Subscribes to the `/queue/…` destinations of `topics` (remembering them for cleanup). */
function subscribeTopics(broker: TestBroker, topics: readonly string[]) {
  if (broker.name === 'rabbitmq') for (const topic of topics) rabbitQueues.add(topic);
  return subscribe(
    broker.url,
    topics.map((topic) => `/queue/${topic}`),
  );
}

function statuses(outcomes: PublishOutcome[]): string[] {
  return outcomes.map((o) => o.status);
}

function codeOf(outcome: PublishOutcome | undefined): string | undefined {
  if (outcome === undefined || outcome.status === 'ok') return undefined;
  return isTransportError(outcome.error) ? outcome.error.code : outcome.error.name;
}

/** The payload limit the conformance suite checks: the transport's own `maxMessageBytes`. */
const CONFORMANCE_MAX_BYTES = 512 * 1024;

/** A broker URL with another host and port: the conformance suite's proxy, or a closed port. */
function urlThrough(brokerUrl: string, host: string, port: number): string {
  const url = new URL(brokerUrl);
  url.hostname = host;
  url.port = String(port);
  return url.toString();
}

for (const broker of BROKERS) {
  const transport = (options: Partial<StompTransportOptions> = {}) =>
    new StompTransport({ url: broker.url, ...options });

  runTransportConformance(`stomp (${broker.name})`, {
    create: async () => transport({ maxMessageBytes: CONFORMANCE_MAX_BYTES }),
    consume: (_transport, topics) => subscribeTopics(broker, topics),
    proxy: {
      broker: () => {
        const url = new URL(broker.url);
        return { host: url.hostname, port: Number(url.port) };
      },
      createThrough: async ({ host, port }) =>
        transport({ url: urlThrough(broker.url, host, port), maxMessageBytes: CONFORMANCE_MAX_BYTES }),
    },
    maxPayloadBytes: CONFORMANCE_MAX_BYTES,
    // A header STOMP or the broker reads itself: refused (permanent) before sending.
    refusedMessage: (topic) => testMessage({ topic, headers: { priority: '9' } }),
  });

  describe(`stomp transport on ${broker.name}`, () => {
    it('sends persistent SENDs carrying the mailroom-* headers, the content type and the user headers', async () => {
      const [topic] = uniqueTopics(1) as [string];
      const t = transport();
      await t.start();
      const subscriber = await subscribeTopics(broker, [topic]);
      try {
        const createdAt = new Date('2024-05-06T07:08:09.500Z');
        const keyed = testMessage({
          topic,
          key: 'order-42',
          type: 'order.created',
          headers: { traceparent: '00-abc-def-01', 'x-lines': 'a\nb:c\\d' },
          createdAt,
          attempts: 3,
        });
        const keyless = testMessage({
          topic,
          headers: { 'mailroom-key': 'forged' },
          contentType: 'text/plain',
        });
        assert.deepEqual(statuses(await t.publish([keyed, keyless])), ['ok', 'ok']);
        const [first, second] = await subscriber.waitFor(2, 10_000);
        assert.ok(first && second);
        const h = first.headers;
        assert.equal(h['destination'], `/queue/${topic}`);
        assert.equal(h['persistent'], 'true');
        assert.equal(h['content-type'], 'application/json');
        assert.equal(h['mailroom-id'], keyed.id);
        assert.equal(h['mailroom-topic'], topic);
        assert.equal(h['mailroom-key'], 'order-42');
        assert.equal(h['mailroom-type'], 'order.created');
        assert.equal(h['mailroom-attempt'], '3');
        assert.equal(h['mailroom-created-at'], '2024-05-06T07:08:09.500Z');
        assert.equal(h['traceparent'], '00-abc-def-01');
        assert.equal(h['x-lines'], 'a\nb:c\\d', 'escaped and unescaped per STOMP 1.2');
        assert.ok(first.body.equals(keyed.payload));
        assert.equal(second.headers['mailroom-id'], keyless.id);
        assert.equal(
          second.headers['mailroom-key'],
          undefined,
          'a keyless message never carries mailroom-key',
        );
        assert.equal(second.headers['mailroom-type'], undefined);
        assert.equal(second.headers['content-type'], 'text/plain');
      } finally {
        await subscriber.close();
        await t.close();
      }
    });

    it('reports unavailable for the messages without a RECEIPT when the connection is cut mid-batch, and reconnects', async () => {
      const [topic] = uniqueTopics(1) as [string];
      const proxy = await TcpProxy.start({ targetPort: Number(new URL(broker.url).port) });
      const url = new URL(broker.url);
      url.port = String(proxy.port);
      const t = new StompTransport({ url: url.toString() });
      const subscriber = await subscribeTopics(broker, [topic]);
      try {
        await t.start();
        const batch = Array.from({ length: 3000 }, () => testMessage({ topic }));
        const publishing = t.publish(batch);
        setTimeout(() => proxy.cut(), 20);
        const outcomes = await publishing;
        const counts = new Map<string, number>();
        for (const o of outcomes) counts.set(o.status, (counts.get(o.status) ?? 0) + 1);
        assert.ok(
          (counts.get('unavailable') ?? 0) > 0,
          `some messages must be unavailable: ${JSON.stringify([...counts])}`,
        );
        assert.equal((counts.get('ok') ?? 0) + (counts.get('unavailable') ?? 0), batch.length);
        for (const o of outcomes) {
          if (o.status === 'unavailable')
            assert.match(codeOf(o) ?? '', /^(receipt_lost|not_sent|connection_lost)$/);
        }
        // Every message reported ok is at the broker.
        const okIds = batch.filter((_, i) => outcomes[i]?.status === 'ok').map((m) => m.id);
        if (okIds.length > 0) {
          await subscriber.waitFor(okIds.length, 10_000);
          const seen = new Set(subscriber.frames.map((f) => f.headers['mailroom-id']));
          for (const id of okIds)
            assert.ok(seen.has(id), `message ${id} was reported ok but is not at the broker`);
        }
        // The next publish reconnects.
        assert.deepEqual(statuses(await t.publish([testMessage({ topic })])), ['ok']);
      } finally {
        await subscriber.close();
        await t.close();
        await proxy.close();
      }
    });

    it('reports unavailable at once when the signal aborts on a broker that does not answer', async () => {
      const proxy = await TcpProxy.start({ targetPort: Number(new URL(broker.url).port) });
      const url = new URL(broker.url);
      url.port = String(proxy.port);
      const t = new StompTransport({ url: url.toString() });
      try {
        await t.start();
        proxy.blackhole();
        const controller = new AbortController();
        setTimeout(() => controller.abort(new Error('publish deadline')), 200);
        const started = Date.now();
        const outcomes = await t.publish([testMessage(), testMessage()], { signal: controller.signal });
        // Far below the receipt timeout (30 s), which is what an ignored signal would wait for;
        // with room for a loaded CI machine (it took 2.2 s once, in a fresh-clone run).
        const tookMs = Date.now() - started;
        assert.ok(tookMs < 5000, `the publish answered ${tookMs} ms after it began, the abort at 200 ms`);
        assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
        assert.equal(codeOf(outcomes[0]), 'publish_timeout');
        assert.equal(t.connected, false, 'the silent connection is dropped');
      } finally {
        proxy.heal();
        await t.close();
        await proxy.close();
      }
    });
  });
}

describe('stomp transport without a broker', () => {
  it('refuses a message with a reserved header or over maxMessageBytes as permanent, without sending it', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const broker = BROKERS[1] as TestBroker;
    const t = new StompTransport({ url: broker.url, maxMessageBytes: 10 });
    try {
      await t.start();
      const outcomes = await t.publish([
        testMessage({ topic, headers: { destination: '/queue/elsewhere' }, payload: Buffer.from('{}') }),
        testMessage({ topic, payload: Buffer.from('x'.repeat(11)) }),
      ]);
      assert.deepEqual(statuses(outcomes), ['permanent', 'permanent']);
      assert.ok(outcomes[0]?.status === 'permanent' && isPermanentDeliveryError(outcomes[0].error));
      assert.match(outcomes[0].error.message, /header named "destination"/);
      assert.match(
        outcomes[1]?.status === 'permanent' ? outcomes[1].error.message : '',
        /maxMessageBytes \(10\)/,
      );
    } finally {
      await t.close();
    }
  });

  it('reports a SEND the broker refuses with an ERROR frame as retry, and publishes again after', async () => {
    // RabbitMQ refuses a SEND to an exchange that does not exist (its ERROR names no receipt: the
    // oldest SEND waiting for one is taken as the cause).
    const broker = BROKERS[0] as TestBroker;
    const t = new StompTransport({
      url: broker.url,
      destination: `/exchange/${uniqueName('missing')}/{topic}`,
    });
    try {
      await t.start();
      const [first] = await t.publish([testMessage()]);
      assert.equal(first?.status, 'retry', `got ${first?.status}`);
      assert.match(
        first.status === 'retry' ? first.error.message : '',
        /refused message .* with an ERROR frame/,
      );
      // The refusal ended the connection; the next publish opens a new one (and is refused again).
      const [again] = await t.publish([testMessage()]);
      assert.equal(again?.status, 'retry');
    } finally {
      await t.close();
    }
  });

  it('fails to start on a port where nothing listens, and probes closed after close()', async () => {
    const t = new StompTransport({ url: 'stomp://guest:guest@127.0.0.1:1', connectTimeoutMs: 2000 });
    await assert.rejects(t.start(), (err: unknown) => isTransportError(err) && err.code === 'unreachable');
    await t.close();
    await assert.rejects(t.probe(), (err: unknown) => isTransportError(err) && err.code === 'closed');
  });

  it('says not_stomp for a server of another kind, and auth_failed for a wrong password', async () => {
    const amqp = new StompTransport({ url: 'stomp://guest:guest@127.0.0.1:5672', connectTimeoutMs: 3000 });
    await assert.rejects(
      amqp.start(),
      (err: unknown) => isTransportError(err) && /not_stomp|unreachable/.test(err.code),
    );
    await amqp.close();
    const wrong = new StompTransport({ url: 'stomp://guest:wrong@127.0.0.1:61613' });
    await assert.rejects(
      wrong.start(),
      (err: unknown) => isTransportError(err) && err.code === 'auth_failed',
    );
    await wrong.close();
  });

  it('rejects bad URLs and destination templates with a ConfigError naming the option', () => {
    const cases: Array<[Partial<StompTransportOptions>, RegExp]> = [
      [{ url: 'amqp://guest:guest@localhost' }, /scheme "amqp"/],
      [{ url: 'stomp://guest:secret@localhost?heartbeat=1' }, /query/],
      [{ url: 'not a url' }, /not a valid URL/],
      [{ destination: '/queue/orders' }, /\{topic\}/],
      [{ destination: 'orders.{topic}' }, /must start with/],
      [{ destination: '/queue/{topic}.{x}' }, /brace/],
      [{ heartbeatMs: -1 }, /heartbeatMs/],
      [{ bogus: 1 } as Partial<StompTransportOptions>, /unknown StompTransport option "bogus"/],
    ];
    for (const [options, message] of cases) {
      assert.throws(
        () => new StompTransport({ url: 'stomp://guest:secret@localhost', ...options }),
        (err: unknown) => isConfigError(err) && message.test(err.message) && !err.message.includes('secret'),
      );
    }
  });
});

describe('stomp frames', () => {
  it('escapes and unescapes header names and values as STOMP 1.2 says', () => {
    const text = 'a:b\nc\rd\\e';
    assert.equal(escapeHeader(text), 'a\\cb\\nc\\rd\\\\e');
    assert.equal(unescapeHeader(escapeHeader(text)), text);
    assert.throws(() => unescapeHeader('bad\\t'), /undefined escape/);
  });

  it('decodes frames split anywhere, skips heart-beats, and keeps NULs in a body with content-length', () => {
    const body = Buffer.from([1, 0, 2, 0, 10, 13]);
    const bytes = Buffer.concat([
      Buffer.from('\n\r\n'),
      encodeFrame(
        'MESSAGE',
        [
          ['x-a', 'v:1'],
          ['x-a', 'second'],
        ],
        body,
      ),
      Buffer.from('\n'),
      Buffer.from('RECEIPT\nreceipt-id:r1\n\n\0'),
      encodeFrame('CONNECTED', [['server', 'a:b']], undefined, false),
    ]);
    for (const step of [1, 3, 7, bytes.length]) {
      const decoder = new FrameDecoder(1024);
      const frames = [];
      for (let i = 0; i < bytes.length; i += step) frames.push(...decoder.push(bytes.subarray(i, i + step)));
      assert.deepEqual(
        frames.map((f) => f.command),
        ['MESSAGE', 'RECEIPT', 'CONNECTED'],
      );
      assert.equal(frames[0]?.headers['x-a'], 'v:1', 'the first of a repeated header wins');
      assert.ok(frames[0]?.body.equals(body));
      assert.equal(frames[1]?.headers['receipt-id'], 'r1');
      assert.equal(frames[2]?.headers['server'], 'a:b', 'CONNECTED is not unescaped');
    }
  });

  it('refuses a frame over the limit and bytes that are not STOMP', () => {
    assert.throws(
      () => new FrameDecoder(4).push(encodeFrame('MESSAGE', [], Buffer.alloc(5))),
      /over the limit/,
    );
    assert.throws(
      () => new FrameDecoder(1024).push(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n')),
      /STOMP command/,
    );
  });
});
