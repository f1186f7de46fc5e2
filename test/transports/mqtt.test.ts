// The MQTT transport against the local Mosquitto (127.0.0.1:1883, MQTT 5), and against private
// Mosquitto instances this file starts with configurations of their own (an ACL, a packet size
// limit, a small Receive Maximum, no anonymous logins) for what the shared broker never does.
// Every topic carries a random suffix; subscribers use clean sessions, so nothing stays behind.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

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
  classifyReasonCode,
  decodeMqttMessage,
  MqttTransport,
  publicationOf,
  PUBLISH_REASON_CODES,
  topicNameFor,
  type MqttTransportOptions,
} from '../../src/transports/mqtt/index.js';
import { mapped, MQTT_URL, startMosquitto, subscribe, type PrivateBroker } from './mqtt-helpers.js';

const transport = (options: Partial<MqttTransportOptions> = {}) =>
  new MqttTransport({ url: MQTT_URL, ...options });

function statuses(outcomes: PublishOutcome[]): string[] {
  return outcomes.map((o) => o.status);
}

function codeOf(outcome: PublishOutcome | undefined): string | undefined {
  if (outcome === undefined || outcome.status === 'ok') return undefined;
  return isTransportError(outcome.error) ? outcome.error.code : outcome.error.name;
}

async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function errorOf(outcome: PublishOutcome | undefined): Error {
  assert.ok(outcome && outcome.status !== 'ok', 'expected a failed outcome');
  return outcome.error;
}

const BROKER_PORT = Number(new URL(MQTT_URL).port || 1883);
const CONFORMANCE_PAYLOAD_LIMIT = 256 * 1024;

for (const qos of [1, 2] as const) {
  runTransportConformance(`mqtt (QoS ${qos})`, {
    create: async () => transport({ qos, maxPayloadBytes: CONFORMANCE_PAYLOAD_LIMIT }),
    consume: (_transport, topics) =>
      subscribe(
        MQTT_URL,
        topics.map((t) => mapped(t)),
      ),
    proxy: {
      broker: { host: new URL(MQTT_URL).hostname, port: BROKER_PORT },
      createThrough: async (address) =>
        new MqttTransport({
          url: `mqtt://${address.host}:${address.port}`,
          qos,
          maxPayloadBytes: CONFORMANCE_PAYLOAD_LIMIT,
        }),
    },
    // A header that is not UTF-8 at all: the transport refuses it for the broker, alone in its batch.
    refusedMessage: (topic) => testMessage({ topic, headers: { 'x-broken': 'a\ud800b' } }),
    maxPayloadBytes: CONFORMANCE_PAYLOAD_LIMIT,
  });
}

describe('mqtt transport on Mosquitto', () => {
  it('publishes with QoS 1, not retained, the content type as property and id, topic, key, type, attempt and headers as user properties', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const t = transport();
    const subscriber = await subscribe(MQTT_URL, [mapped(topic)]);
    try {
      await t.start();
      const createdAt = new Date('2024-05-06T07:08:09.500Z');
      const keyed = testMessage({
        topic,
        key: 'order-42',
        type: 'order.created',
        headers: { traceparent: '00-abc-def-01', 'x-tenant': 'äöü', 'mailroom-key': 'forged' },
        createdAt,
        attempts: 3,
      });
      const keyless = testMessage({
        topic,
        contentType: 'text/plain; charset=utf-8',
        payload: Buffer.from('hi'),
      });
      assert.deepEqual(statuses(await t.publish([keyed, keyless])), ['ok', 'ok']);
      const [a, b] = await subscriber.take(2, 5000);
      assert.ok(a && b);
      assert.equal(a.topicName, topic.replaceAll('.', '/'), 'dots become slashes');
      assert.equal(a.qos, 1);
      assert.equal(a.retain, false);
      assert.equal(a.contentType, 'application/json');
      assert.deepEqual(a.userProperties, {
        'mailroom-id': keyed.id,
        'mailroom-topic': topic,
        'mailroom-key': 'order-42',
        'mailroom-type': 'order.created',
        'mailroom-attempt': '3',
        'mailroom-created-at': '2024-05-06T07:08:09.500Z',
        traceparent: '00-abc-def-01',
        'x-tenant': 'äöü',
      });
      assert.equal(b.contentType, 'text/plain; charset=utf-8');
      assert.equal(b.userProperties['mailroom-key'], undefined, 'a keyless message has no key property');
      assert.equal(b.userProperties['mailroom-type'], undefined);
      assert.equal(b.payload.toString(), 'hi');
    } finally {
      await subscriber.close();
      await t.close();
    }
  });

  it('delivers with QoS 2 and reports ok only after the exchange completed', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const t = transport({ qos: 2 });
    const subscriber = await subscribe(MQTT_URL, [mapped(topic)]);
    try {
      await t.start();
      const batch = Array.from({ length: 50 }, () => testMessage({ topic }));
      assert.deepEqual(new Set(statuses(await t.publish(batch))), new Set(['ok']));
      const received = await subscriber.take(50, 5000);
      assert.deepEqual(
        received.map((m) => m.id),
        batch.map((m) => m.id),
      );
    } finally {
      await subscriber.close();
      await t.close();
    }
  });

  it('maps topics by template, function and prefix', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const byTemplate = transport({ topic: 'shop/{topic}/events', prefix: 'tenant-a/' });
    const byFunction = transport({ topic: (name) => `fn/${name.toUpperCase()}`, prefix: 'tenant-b/' });
    const subscriber = await subscribe(MQTT_URL, [
      `tenant-a/shop/${mapped(topic)}/events`,
      `tenant-b/fn/${topic.toUpperCase()}`,
    ]);
    try {
      assert.deepEqual(statuses(await byTemplate.publish([testMessage({ topic })])), ['ok']);
      assert.deepEqual(statuses(await byFunction.publish([testMessage({ topic })])), ['ok']);
      const received = await subscriber.take(2, 5000);
      assert.deepEqual(received.map((m) => m.topicName).sort(), [
        `tenant-a/shop/${mapped(topic)}/events`,
        `tenant-b/fn/${topic.toUpperCase()}`,
      ]);
      assert.ok(
        received.every((m) => m.topic === topic),
        'mailroom-topic carries the topic unmapped',
      );
    } finally {
      await subscriber.close();
      await byTemplate.close();
      await byFunction.close();
    }
  });

  it('refuses a topic name or header MQTT cannot carry as permanent, naming it, and publishes the rest of the batch', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const t = transport({
      topic: (name) => (name === 'fails' ? (undefined as unknown as string) : mapped(name)),
    });
    // `a/#` matches `a` too.
    const subscriber = await subscribe(MQTT_URL, [`${mapped(topic)}/#`]);
    try {
      await t.start();
      const good = (n: number) => testMessage({ topic, payload: Buffer.from(String(n)) });
      const batch = [
        good(0),
        testMessage({ topic: `${topic}.+` }),
        testMessage({ topic: `${topic}.#` }),
        testMessage({ topic: `${topic}.nul\u0000` }),
        testMessage({ topic: '$SYS.broker' }),
        testMessage({ topic: `${topic}.${'x'.repeat(70_000)}` }),
        testMessage({ topic, headers: { 'x-surrogate': 'a\ud800b' } }),
        testMessage({ topic: 'fails' }),
        testMessage({ topic, headers: { 'x-long': 'v'.repeat(70_000) } }),
        good(1),
      ];
      const outcomes = await t.publish(batch);
      assert.deepEqual(statuses(outcomes), ['ok', ...Array<string>(8).fill('permanent'), 'ok']);
      for (const outcome of outcomes.slice(1, 9)) assert.ok(isPermanentDeliveryError(errorOf(outcome)));
      assert.match(errorOf(outcomes[1]).message, /conformance\/.*\/\+".*wildcard/);
      assert.match(errorOf(outcomes[2]).message, /wildcard/);
      assert.match(errorOf(outcomes[3]).message, /U\+0000/);
      assert.match(errorOf(outcomes[4]).message, /"\$SYS\/broker".*starts with '\$'/);
      assert.match(errorOf(outcomes[5]).message, /bytes of UTF-8, over MQTT's 65535/);
      assert.match(errorOf(outcomes[6]).message, /header "x-surrogate".*lone surrogate/);
      assert.match(errorOf(outcomes[7]).message, /topic option's function failed.*undefined, not a string/);
      assert.match(errorOf(outcomes[8]).message, /header "x-long".*70000 bytes/);
      const received = await subscriber.take(2, 5000);
      assert.deepEqual(
        received.map((m) => m.payload.toString()),
        ['0', '1'],
      );
      assert.equal(t.connected, true, 'the connection survived: nothing invalid was sent');
    } finally {
      await subscriber.close();
      await t.close();
    }
  });

  it('carries header names and values with characters brokers refuse (tab, newline, C1) percent-escaped, and restores them', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const t = transport();
    const raw: Array<Record<string, string | string[]>> = [];
    const mqtt = (await import('mqtt')).default;
    const client = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, reconnectPeriod: 0 });
    client.on('message', (_t, _p, packet) => raw.push(packet.properties?.userProperties ?? {}));
    await client.subscribeAsync(mapped(topic), { qos: 1 });
    const subscriber = await subscribe(MQTT_URL, [mapped(topic)]);
    try {
      const headers = { 'x-lines': 'a\nb\tc 100%', 'x-bad\u0001name': 'v\u0085', 'x-plain': '50%' };
      const message = testMessage({ topic, key: 'k\tk', headers });
      assert.deepEqual(statuses(await t.publish([message])), ['ok']);
      const [got] = await subscriber.take(1, 5000);
      assert.ok(got);
      assert.equal(got.key, 'k\tk');
      for (const [name, value] of Object.entries(headers)) assert.equal(got.headers[name], value, name);
      assert.equal(got.headers['mailroom-escaped'], undefined, 'the list itself is not a header');
      await waitFor(() => raw.length === 1);
      const wire = raw[0] as Record<string, string>;
      assert.equal(wire['x-lines'], 'a%0Ab%09c 100%25');
      assert.equal(wire['x-bad%01name'], 'v%C2%85');
      assert.equal(wire['x-plain'], '50%', 'a header without refused characters goes as it is');
      assert.deepEqual(JSON.parse(wire['mailroom-escaped'] ?? '[]'), [
        'mailroom-key',
        'x-lines',
        'x-bad%01name',
      ]);
      assert.equal(t.connected, true);
    } finally {
      await subscriber.close();
      await client.endAsync(true);
      await t.close();
    }
  });

  it('reports unavailable for the messages without an acknowledgement when the connection is cut mid-batch, and reconnects', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const proxy = await TcpProxy.start({ targetPort: Number(new URL(MQTT_URL).port) });
    const t = new MqttTransport({ url: `mqtt://127.0.0.1:${proxy.port}` });
    const subscriber = await subscribe(MQTT_URL, [mapped(topic)]);
    try {
      await t.start();
      const batch = Array.from({ length: 3000 }, () => testMessage({ topic }));
      const publishing = t.publish(batch);
      setTimeout(() => proxy.cut(), 20);
      const started = Date.now();
      const outcomes = await publishing;
      assert.ok(Date.now() - started < 5000, 'the loss is reported promptly');
      const counts = new Map<string, number>();
      for (const o of outcomes) counts.set(o.status, (counts.get(o.status) ?? 0) + 1);
      assert.ok(
        (counts.get('unavailable') ?? 0) > 0,
        `some messages must be unavailable: ${JSON.stringify([...counts])}`,
      );
      assert.equal((counts.get('ok') ?? 0) + (counts.get('unavailable') ?? 0), batch.length);
      for (const o of outcomes) {
        if (o.status === 'unavailable')
          assert.match(codeOf(o) ?? '', /^(ack_lost|not_sent|connection_lost)$/);
      }
      const okIds = batch.filter((_, i) => outcomes[i]?.status === 'ok').map((m) => m.id);
      if (okIds.length > 0) {
        await subscriber.take(okIds.length, 10_000);
        const seen = new Set(subscriber.received.map((m) => m.id));
        for (const id of okIds)
          assert.ok(seen.has(id), `message ${id} was reported ok but is not at the broker`);
      }
      // Every unavailable message after the first one not acknowledged: the ok ones form a prefix.
      const firstFailed = outcomes.findIndex((o) => o.status !== 'ok');
      assert.ok(
        outcomes.slice(firstFailed).every((o) => o.status !== 'ok'),
        'ok only for a prefix of the batch',
      );
      assert.deepEqual(
        statuses(await t.publish([testMessage({ topic })])),
        ['ok'],
        'the next publish reconnects',
      );
    } finally {
      await subscriber.close();
      await t.close();
      await proxy.close();
    }
  });

  it('reports unavailable at once when the signal aborts, and sends nothing of the batch afterwards', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const proxy = await TcpProxy.start({ targetPort: Number(new URL(MQTT_URL).port) });
    // One message in flight at a time, each round trip slowed down: most of the batch is still
    // waiting for a slot when the signal aborts.
    const t = new MqttTransport({ url: `mqtt://127.0.0.1:${proxy.port}`, maxInflight: 1 });
    const subscriber = await subscribe(MQTT_URL, [mapped(topic)]);
    try {
      await t.start();
      proxy.delay(50);
      const batch = Array.from({ length: 40 }, () => testMessage({ topic }));
      const controller = new AbortController();
      setTimeout(() => controller.abort(new Error('publish deadline')), 300);
      const started = Date.now();
      const outcomes = await t.publish(batch, { signal: controller.signal });
      assert.ok(Date.now() - started < 1500, `resolved ${Date.now() - started} ms after the start`);
      const ok = outcomes.filter((o) => o.status === 'ok').length;
      assert.ok(ok < batch.length, 'the deadline came first');
      for (const o of outcomes.slice(ok)) {
        assert.equal(o.status, 'unavailable');
        assert.equal(codeOf(o), 'publish_timeout');
      }
      assert.equal(t.connected, false, 'the connection is dropped');
      proxy.delay(0);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const unacknowledged = new Set(batch.slice(ok + 1).map((m) => m.id));
      const late = subscriber.received.filter((m) => unacknowledged.has(m.id));
      assert.deepEqual(late, [], 'messages reported unavailable and never written must not arrive later');
      assert.deepEqual(statuses(await t.publish([testMessage({ topic })])), ['ok']);
    } finally {
      await subscriber.close();
      await t.close();
      await proxy.close();
    }
  });

  it('reports unavailable promptly when the broker does not answer, within ackTimeoutMs', async () => {
    const proxy = await TcpProxy.start({ targetPort: Number(new URL(MQTT_URL).port) });
    const t = new MqttTransport({ url: `mqtt://127.0.0.1:${proxy.port}`, ackTimeoutMs: 300 });
    try {
      await t.start();
      proxy.blackhole();
      const outcomes = await t.publish([testMessage(), testMessage()]);
      assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
      assert.equal(codeOf(outcomes[0]), 'ack_timeout');
      assert.match(errorOf(outcomes[0]).message, /within 300 ms \(ackTimeoutMs\)/);
      assert.equal(t.connected, false);
    } finally {
      proxy.heal();
      await t.close();
      await proxy.close();
    }
  });
});

describe('mqtt transport without a broker', () => {
  it('fails to start and to probe with a TransportError on a port where nothing listens, and reports unavailable at once', async () => {
    const t = new MqttTransport({ url: 'mqtt://127.0.0.1:1', connectTimeoutMs: 2000 });
    try {
      await assert.rejects(t.start(), (err: unknown) => {
        assert.ok(isTransportError(err));
        assert.equal(err.code, 'unreachable');
        assert.match(err.message, /cannot connect to the MQTT broker at mqtt:\/\/127\.0\.0\.1:1/);
        return true;
      });
      await assert.rejects(t.probe(), (err: unknown) => isTransportError(err) && err.code === 'unreachable');
      const started = Date.now();
      const outcomes = await t.publish([testMessage(), testMessage()]);
      assert.ok(Date.now() - started < 2000);
      assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
      await t.close();
      await assert.rejects(t.probe(), (err: unknown) => isTransportError(err) && err.code === 'closed');
    } finally {
      await t.close();
    }
  });

  it('says which server answered when it is not an MQTT broker, and never prints the password', async () => {
    const t = new MqttTransport({ url: 'mqtt://relay:s3cret@127.0.0.1:5432', connectTimeoutMs: 2000 });
    try {
      await assert.rejects(t.start(), (err: unknown) => {
        assert.ok(isTransportError(err));
        assert.equal(err.code, 'unreachable');
        assert.match(err.message, /is 127\.0\.0\.1:5432 an MQTT 5 broker\? PostgreSQL listens/);
        assert.doesNotMatch(err.message, /s3cret/);
        return true;
      });
    } finally {
      await t.close();
    }
  });

  it('rejects bad URLs and options with a ConfigError naming the option and the value', () => {
    const bad: Array<[Partial<MqttTransportOptions> & { url: string }, string, RegExp]> = [
      [
        { url: 'http://127.0.0.1:1883' },
        'url',
        /scheme "http"; use mqtt:\/\/ \(plain\) or mqtts:\/\/ \(TLS\)/,
      ],
      [{ url: 'not a url' }, 'url', /is not a valid URL/],
      [{ url: 'mqtt://u:secret@host:1883/topic' }, 'url', /"mqtt:\/\/u:\*\*\*@host:1883\/topic" has a path/],
      [{ url: 'mqtt://host:1883?qos=2' }, 'url', /has a query/],
      [{ url: MQTT_URL, qos: 0 as 1 }, 'qos', /qos must be 1 or 2, got 0/],
      [
        { url: MQTT_URL, topic: 'shop/events' },
        'topic',
        /"shop\/events" must contain '\{topic\}' exactly once/,
      ],
      [{ url: MQTT_URL, topic: 'shop/+/{topic}' }, 'topic', /wildcard/],
      [{ url: MQTT_URL, prefix: 'a/#/' }, 'prefix', /prefix "a\/#\/".*wildcard/],
      [{ url: MQTT_URL, prefix: '$SYS/' }, 'prefix', /starts with '\$'/],
      [{ url: MQTT_URL, maxInflight: 0 }, 'maxInflight', /maxInflight must be an integer from 1 to 65535/],
      [{ url: MQTT_URL, clientId: '' }, 'clientId', /clientId/],
      [
        { url: MQTT_URL, reconnectDelayMs: 500, maxReconnectDelayMs: 100 },
        'maxReconnectDelayMs',
        /must not exceed/,
      ],
      [{ url: MQTT_URL, retain: true } as never, 'retain', /unknown MqttTransport option "retain"/],
    ];
    for (const [options, key, message] of bad) {
      assert.throws(
        () => new MqttTransport(options),
        (err: unknown) => {
          assert.ok(isConfigError(err), `${JSON.stringify(options)}: ${String(err)}`);
          assert.equal(err.key, key);
          assert.match(err.message, message);
          assert.doesNotMatch(err.message, /secret/);
          return true;
        },
      );
    }
  });
});

describe('mqtt transport on brokers of its own', () => {
  let acl: PrivateBroker;
  before(async () => {
    acl = await startMosquitto(
      ['allow_anonymous true', 'acl_file {dir}/acl', 'max_packet_size 2000', 'max_inflight_messages 3'],
      { acl: 'topic readwrite allowed/#\ntopic read denied/#\n' },
    );
  });
  after(async () => {
    await acl?.stop();
  });

  it('reports a PUBACK refusal (0x87 not authorized) as retry naming the reason code, and the rest of the batch ok', async () => {
    for (const qos of [1, 2] as const) {
      const t = new MqttTransport({ url: acl.url, qos });
      try {
        const outcomes = await t.publish([
          testMessage({ topic: 'allowed.a' }),
          testMessage({ topic: 'denied.a' }),
          testMessage({ topic: 'allowed.b' }),
        ]);
        assert.deepEqual(statuses(outcomes), ['ok', 'retry', 'ok'], `QoS ${qos}`);
        const error = errorOf(outcomes[1]);
        assert.ok(isTransportError(error));
        assert.equal(error.code, 'refused');
        assert.equal(error.details['reasonCode'], 0x87);
        assert.match(error.message, /MQTT topic "denied\/a" with reason code 0x87 \(Not authorized\)/);
        assert.equal(t.connected, true, 'a refusal leaves the connection open');
      } finally {
        await t.close();
      }
    }
  });

  it("takes the broker's Maximum Packet Size from the CONNACK: a larger message is permanent and not sent", async () => {
    const t = new MqttTransport({ url: acl.url });
    try {
      await t.start();
      assert.equal(t.maxPacketBytes, 2000);
      const outcomes = await t.publish([
        testMessage({ topic: 'allowed.small', payload: Buffer.alloc(1000) }),
        testMessage({ topic: 'allowed.big', payload: Buffer.alloc(2000) }),
        testMessage({ topic: 'allowed.small', payload: Buffer.alloc(1000) }),
      ]);
      assert.deepEqual(statuses(outcomes), ['ok', 'permanent', 'ok']);
      const error = errorOf(outcomes[1]);
      assert.ok(isPermanentDeliveryError(error));
      assert.match(
        error.message,
        /PUBLISH packet of \d+ bytes \(payload 2000\), over the broker's Maximum Packet Size/,
      );
      assert.equal(t.connected, true, 'the connection survived: the big packet was never sent');
    } finally {
      await t.close();
    }
  });

  it('checks maxPacketBytes when the broker announces no limit', async () => {
    const t = transport({ maxPacketBytes: 500 });
    try {
      const [topic] = uniqueTopics(1) as [string];
      const outcomes = await t.publish([testMessage({ topic, payload: Buffer.alloc(600) })]);
      assert.deepEqual(statuses(outcomes), ['permanent']);
      assert.match(
        errorOf(outcomes[0]).message,
        /over maxPacketBytes \(the broker announced no limit\), 500 bytes/,
      );
    } finally {
      await t.close();
    }
  });

  it("keeps within the broker's Receive Maximum (3 here) with many messages and calls in flight", async () => {
    const t = new MqttTransport({ url: acl.url, maxInflight: 100 });
    const subscriber = await subscribe(acl.url, ['allowed/window/#']);
    try {
      const a = Array.from({ length: 200 }, (_, i) =>
        testMessage({ topic: 'allowed.window.a', key: 'k', payload: Buffer.from(String(i)) }),
      );
      const b = Array.from({ length: 100 }, () => testMessage({ topic: 'allowed.window.b' }));
      const [outA, outB] = await Promise.all([t.publish(a), t.publish(b)]);
      assert.ok(
        [...outA, ...outB].every((o) => o.status === 'ok'),
        'the broker disconnects a client over its Receive Maximum',
      );
      const received = await subscriber.take(300, 10_000);
      assert.deepEqual(
        received.filter((m) => m.topicName === 'allowed/window/a').map((m) => m.payload.toString()),
        a.map((m) => m.payload.toString()),
      );
    } finally {
      await subscriber.close();
      await t.close();
    }
  });

  it('says auth_failed when the broker refuses the login', async () => {
    const closed = await startMosquitto(['allow_anonymous false']);
    const t = new MqttTransport({ url: closed.url.replace('mqtt://', 'mqtt://someone:s3cret@') });
    try {
      await assert.rejects(t.start(), (err: unknown) => {
        assert.ok(isTransportError(err));
        assert.equal(err.code, 'auth_failed');
        assert.match(err.message, /refused the login \(0x8[67]/);
        assert.doesNotMatch(err.message, /s3cret/);
        return true;
      });
      await assert.rejects(t.probe(), (err: unknown) => isTransportError(err) && err.code === 'auth_failed');
    } finally {
      await t.close();
      await closed.stop();
    }
  });
});

describe('mqtt reason codes and wire format', () => {
  it('classifies PUBACK/PUBREC reason codes as the documented table says', () => {
    const table = Object.fromEntries([...PUBLISH_REASON_CODES].map(([code, info]) => [code, info.class]));
    assert.deepEqual(table, {
      0x80: 'retry',
      0x83: 'retry',
      0x87: 'retry',
      0x90: 'permanent',
      0x91: 'retry',
      0x95: 'permanent',
      0x97: 'retry',
      0x99: 'permanent',
    });
    assert.equal(classifyReasonCode(0x99).name, 'Payload format invalid');
    assert.equal(classifyReasonCode(0xa5).class, 'retry', 'an unknown code is retry');
  });

  it('computes the PUBLISH packet size MQTT.js encodes', async () => {
    const { default: mqttPacket } = (await import('mqtt-packet')) as unknown as {
      default: { generate(packet: unknown, opts: { protocolVersion: number }): Buffer };
    };
    for (const size of [0, 100, 200, 20_000, 3_000_000]) {
      const message = testMessage({
        topic: 'a.b',
        key: 'k',
        headers: { h: 'v'.repeat(size % 300) },
        payload: Buffer.alloc(size),
      });
      const publication = publicationOf(message, '{topic}', 'p/');
      const encoded = mqttPacket.generate(
        {
          cmd: 'publish',
          topic: publication.topicName,
          payload: message.payload,
          qos: 1,
          messageId: 1,
          retain: false,
          dup: false,
          properties: publication.properties,
        },
        { protocolVersion: 5 },
      );
      assert.equal(publication.packetBytes, encoded.length, `payload ${size}`);
    }
  });

  it('decodes what it publishes back into a received message', () => {
    const message = testMessage({
      topic: 'order.created',
      key: 'o-1',
      type: 't',
      headers: { a: 'b', 'mailroom-group-id': 'g' },
    });
    const publication = publicationOf(message, '{topic}', '');
    assert.equal(topicNameFor('{topic}', '', 'order.created'), 'order/created');
    const decoded = decodeMqttMessage(publication.topicName, message.payload, publication.properties);
    assert.ok(decoded.ok);
    assert.equal(decoded.message.id, message.id);
    assert.equal(decoded.message.topic, 'order.created');
    assert.equal(decoded.message.key, 'o-1');
    assert.deepEqual(decoded.message.headers, { a: 'b' });
    assert.deepEqual(decoded.message.payload, JSON.parse(message.payload.toString()));
    const missing = decodeMqttMessage('x', Buffer.from('{}'), { userProperties: {} });
    assert.ok(!missing.ok);
    assert.match(missing.error.message, /no mailroom-id/);
  });
});
