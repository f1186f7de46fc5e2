// The Kafka transport. No Kafka broker runs on this machine (nor in this project's CI): the
// mapping, the error classification and the lifecycle are tested with a recording producer and
// kafkajs's own error classes; the real kafkajs client is tested against a port nobody listens
// on. The conformance suite runs only when KAFKA_BROKERS names a broker.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, describe, it } from 'node:test';

import { isConfigError } from '../../src/core/errors/config-error.js';
import { isPermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import type { PublishOutcome } from '../../src/core/ports.js';
import {
  runTransportConformance,
  testMessage,
  type ConformanceConsumer,
  type ReceivedMessage,
} from '../../src/testkit/transport-conformance.js';
import {
  classifyKafkaError,
  KafkaTransport,
  kafkaTopicProblem,
  resolveKafkaUrl,
  type KafkaProducerLike,
  type KafkaSendBatch,
  type KafkaTransportOptions,
} from '../../src/transports/kafka/index.js';

// kafkajs's error classes, as kafkajs throws them (it has no exports map, so its files load directly).
const require = createRequire(import.meta.url);
const kafkaErrors = require('kafkajs/src/errors') as Record<string, new (...args: unknown[]) => Error>;
const { createErrorFromCode } = require('kafkajs/src/protocol/error') as {
  createErrorFromCode(code: number): Error;
};
const KafkaJSConnectionError = kafkaErrors['KafkaJSConnectionError'] as new (m: string) => Error;
const KafkaJSNumberOfRetriesExceeded = kafkaErrors['KafkaJSNumberOfRetriesExceeded'] as new (
  e: Error,
  o: { retryCount: number; retryTime: number },
) => Error;
const KafkaJSProtocolError = kafkaErrors['KafkaJSProtocolError'] as new (e: Error) => Error;
const KafkaJSRequestTimeoutError = kafkaErrors['KafkaJSRequestTimeoutError'] as new (m: string) => Error;
const KafkaJSNonRetriableError = kafkaErrors['KafkaJSNonRetriableError'] as new (
  e: Error,
  o: { cause: Error },
) => Error;

/** A protocol error as a broker's error code makes it (code 10 = MESSAGE_TOO_LARGE…). */
const protocolError = (code: number): Error => new KafkaJSProtocolError(createErrorFromCode(code));
/** What kafkajs throws after its retries: the last error wrapped. */
const afterRetries = (err: Error): Error =>
  new KafkaJSNumberOfRetriesExceeded(err, { retryCount: 5, retryTime: 100 });

/** What kafkajs's retrier throws for an error it does not retry. */
const nonRetriable = (err: Error): Error => new KafkaJSNonRetriableError(err, { cause: err });

/** A producer that records calls and answers each sendBatch with the next scripted result. */
class FakeProducer implements KafkaProducerLike {
  connects = 0;
  disconnects = 0;
  batches: KafkaSendBatch[] = [];
  connectError: Error | undefined;
  /** Per sendBatch call, in order: an error to throw, 'hang' to never answer, or undefined for ok. */
  script: Array<Error | 'hang' | ((batch: KafkaSendBatch) => Error | undefined) | undefined> = [];

  async connect(): Promise<void> {
    this.connects++;
    await new Promise((resolve) => setImmediate(resolve));
    if (this.connectError) throw this.connectError;
  }

  async disconnect(): Promise<void> {
    this.disconnects++;
  }

  sendBatch(batch: KafkaSendBatch): Promise<unknown> {
    this.batches.push(batch);
    const step = this.script.shift();
    if (step === 'hang') return new Promise(() => {});
    const error = typeof step === 'function' ? step(batch) : step;
    return error ? Promise.reject(error) : Promise.resolve([]);
  }

  /** The records sent, flattened, with their topics, in call order. */
  get records() {
    return this.batches.flatMap((b) =>
      b.topicMessages.flatMap((t) => t.messages.map((m) => ({ topic: t.topic, ...m }))),
    );
  }
}

function transportWith(producer: FakeProducer, options: Partial<KafkaTransportOptions> = {}): KafkaTransport {
  return new KafkaTransport({ producer, ...options });
}

function statuses(outcomes: PublishOutcome[]): string[] {
  return outcomes.map((o) => o.status);
}

describe('kafka:// URLs and options', () => {
  it('reads a broker list, defaulting the port to 9092', () => {
    const endpoint = resolveKafkaUrl('kafka://b1.internal:9093,b2.internal,[::1]:9094');
    assert.deepEqual(endpoint.brokers, ['b1.internal:9093', 'b2.internal:9092', '[::1]:9094']);
    assert.equal(endpoint.tls, false);
    assert.equal(endpoint.sasl, undefined);
  });

  it('reads TLS from kafkas://, SASL credentials from the user part and the query', () => {
    const endpoint = resolveKafkaUrl(
      'kafkas://relay:s%40cret@b1:9093?sasl=scram-sha-512&clientId=shop&topicPrefix=prod.',
    );
    assert.equal(endpoint.tls, true);
    assert.deepEqual(endpoint.sasl, { mechanism: 'scram-sha-512', username: 'relay', password: 's@cret' });
    assert.equal(endpoint.clientId, 'shop');
    assert.equal(endpoint.topicPrefix, 'prod.');
    assert.ok(!endpoint.safeUrl.includes('s%40cret'), `password shown in ${endpoint.safeUrl}`);
  });

  it('refuses URLs it cannot use, naming the problem and never the password', () => {
    const cases: Array<[string, RegExp]> = [
      ['http://b1:9092', /has scheme "http"; use kafka:\/\//],
      ['kafka://', /names no broker/],
      ['kafka://b1:9092,,b2:9092', /names no broker \(or an empty one/],
      ['kafka://b1:99999', /broker "b1:99999", which is not host or host:port/],
      ['kafka://b1:9092/path', /has a path or fragment/],
      ['kafka://b1:9092?acks=1', /query parameter "acks"; allowed: sasl, clientId, topicPrefix/],
      ['kafka://b1:9092?sasl=gssapi', /sasl="gssapi"; use one of plain, scram-sha-256, scram-sha-512/],
      ['kafka://b1:9092?sasl=plain', /sasl=plain but no credentials/],
      ['kafka://u:topsecret@b1:9092?clientId=a%20b', /clientId="a b"/],
    ];
    for (const [url, pattern] of cases) {
      assert.throws(
        () => new KafkaTransport({ url }),
        (err: unknown) =>
          isConfigError(err) && pattern.test(err.message) && !err.message.includes('topsecret'),
        url,
      );
    }
  });

  it('refuses bad options with the key, the value and what is allowed', () => {
    assert.throws(() => new KafkaTransport({} as KafkaTransportOptions), /option url is missing/);
    assert.throws(
      () => new KafkaTransport({ url: 'kafka://b1', maxMessageBytes: 0 }),
      /KafkaTransport option maxMessageBytes must be an integer from 1 to 2147483647, got 0/,
    );
    assert.throws(
      () => new KafkaTransport({ url: 'kafka://b1', acks: 1 } as unknown as KafkaTransportOptions),
      /unknown KafkaTransport option "acks"/,
    );
    assert.throws(
      () => new KafkaTransport({ url: 'kafka://b1', topicPrefix: 'shop/' }),
      /topicPrefix "shop\/" contains "\/"/,
    );
    assert.throws(
      () => new KafkaTransport({ url: 'kafka://b1', producer: {} as KafkaProducerLike }),
      /option producer must be a function that builds a kafkajs Producer, or a Producer/,
    );
  });

  it('checks Kafka topic names: [a-zA-Z0-9._-], at most 249 characters, not "." or ".."', () => {
    assert.equal(kafkaTopicProblem('orders.created_v1-eu'), undefined);
    assert.equal(kafkaTopicProblem('a'.repeat(249)), undefined);
    assert.match(kafkaTopicProblem('a'.repeat(250)) ?? '', /250 characters long; Kafka allows at most 249/);
    assert.match(kafkaTopicProblem('.') ?? '', /"\." or "\.\."/);
    assert.match(kafkaTopicProblem('..') ?? '', /"\." or "\.\."/);
    assert.match(kafkaTopicProblem('orders/created') ?? '', /contains "\/"/);
    assert.match(kafkaTopicProblem('ordres créés') ?? '', /contains " "/);
    assert.match(kafkaTopicProblem('') ?? '', /is empty/);
  });
});

describe('KafkaTransport mapping', () => {
  it('sends one batch, acks -1, records grouped by topic in order, key as record key, fields as headers', async () => {
    const producer = new FakeProducer();
    const transport = transportWith(producer, { topicPrefix: 'shop.' });
    const a1 = testMessage({
      topic: 'orders',
      key: 'o-1',
      type: 'order.created',
      headers: { traceparent: 't-1' },
    });
    const b1 = testMessage({
      topic: 'stock',
      key: null,
      contentType: 'text/plain',
      payload: Buffer.from('x'),
    });
    const a2 = testMessage({ topic: 'orders', key: 'o-1', attempts: 3 });
    const outcomes = await transport.publish([a1, b1, a2]);
    assert.deepEqual(statuses(outcomes), ['ok', 'ok', 'ok']);
    assert.equal(producer.batches.length, 1);
    const batch = producer.batches[0] as KafkaSendBatch;
    assert.equal(batch.acks, -1);
    assert.deepEqual(
      batch.topicMessages.map((t) => [t.topic, t.messages.map((m) => m.headers['mailroom-id'])]),
      [
        ['shop.orders', [a1.id, a2.id]],
        ['shop.stock', [b1.id]],
      ],
    );
    const [r1, r2, r3] = batch.topicMessages.flatMap((t) => t.messages);
    assert.equal(r1?.key, 'o-1');
    assert.ok(r1?.value.equals(a1.payload));
    assert.deepEqual(r1?.headers, {
      'mailroom-id': a1.id,
      'mailroom-topic': 'orders',
      'content-type': 'application/json',
      'mailroom-attempt': '1',
      'mailroom-created-at': a1.createdAt.toISOString(),
      'mailroom-type': 'order.created',
      traceparent: 't-1',
    });
    assert.equal(r2?.headers['mailroom-attempt'], '3');
    assert.equal(r2?.headers['mailroom-type'], undefined, 'no type header for a null type');
    assert.equal(r3?.key, null, 'a keyless message has a null record key (the partitioner spreads them)');
    assert.equal(r3?.headers['content-type'], 'text/plain');
    await transport.close();
  });

  it("keeps the transport's headers when a user header has the same name", async () => {
    const producer = new FakeProducer();
    const transport = transportWith(producer);
    const message = testMessage({
      headers: { 'mailroom-id': 'forged', 'mailroom-attempt': '99', 'x-ok': '1' },
    });
    await transport.publish([message]);
    const record = producer.records[0];
    assert.equal(record?.headers['mailroom-id'], message.id);
    assert.equal(record?.headers['mailroom-attempt'], '1');
    assert.equal(record?.headers['x-ok'], '1');
    await transport.close();
  });

  it('refuses, without sending, a message with an illegal topic, an oversized payload or an unencodable header', async () => {
    const producer = new FakeProducer();
    const transport = transportWith(producer, { maxMessageBytes: 100 });
    const good = testMessage({ topic: 'orders' });
    const batch = [
      testMessage({ topic: 'orders/eu' }),
      good,
      testMessage({ topic: 'orders', payload: Buffer.alloc(101) }),
      testMessage({ topic: 'orders', headers: { 'x-bad': 'a\ud800b' } }),
      testMessage({ topic: 'x'.repeat(250) }),
    ];
    const outcomes = await transport.publish(batch);
    assert.deepEqual(statuses(outcomes), ['permanent', 'ok', 'permanent', 'permanent', 'permanent']);
    assert.match((outcomes[0] as { error: Error }).error.message, /topic "orders\/eu" contains "\/"/);
    assert.match(
      (outcomes[2] as { error: Error }).error.message,
      /101 bytes, over the Kafka transport's maxMessageBytes of 100/,
    );
    assert.match(
      (outcomes[3] as { error: Error }).error.message,
      /header "x-bad" with a lone UTF-16 surrogate/,
    );
    assert.ok(outcomes.every((o) => o.status === 'ok' || isPermanentDeliveryError(o.error)));
    assert.deepEqual(
      producer.records.map((r) => r.headers['mailroom-id']),
      [good.id],
    );
    await transport.close();
  });
});

describe('kafkajs error classification', () => {
  const cases: Array<[string, Error, 'unavailable' | 'permanent' | 'retry']> = [
    [
      'connection refused',
      new KafkaJSConnectionError('Connection error: connect ECONNREFUSED'),
      'unavailable',
    ],
    ['connection error after retries', afterRetries(new KafkaJSConnectionError('closed')), 'unavailable'],
    ['request timeout', new KafkaJSRequestTimeoutError('Request Produce(key: 0) timed out'), 'unavailable'],
    [
      'no broker',
      new (kafkaErrors['KafkaJSBrokerNotFound'] as new (m: string) => Error)('Broker not found'),
      'unavailable',
    ],
    [
      'SASL refused',
      new (kafkaErrors['KafkaJSSASLAuthenticationError'] as new (m: string) => Error)('SASL PLAIN failed'),
      'unavailable',
    ],
    ['NOT_LEADER_FOR_PARTITION after retries', afterRetries(protocolError(6)), 'unavailable'],
    ['LEADER_NOT_AVAILABLE', protocolError(5), 'unavailable'],
    ['REQUEST_TIMED_OUT', protocolError(7), 'unavailable'],
    ['CLUSTER_AUTHORIZATION_FAILED (no IdempotentWrite)', protocolError(31), 'unavailable'],
    ['MESSAGE_TOO_LARGE', protocolError(10), 'permanent'],
    ['MESSAGE_TOO_LARGE wrapped as non-retriable', nonRetriable(protocolError(10)), 'permanent'],
    ['RECORD_LIST_TOO_LARGE', protocolError(18), 'permanent'],
    ['INVALID_TOPIC_EXCEPTION', protocolError(17), 'permanent'],
    ['TOPIC_AUTHORIZATION_FAILED', protocolError(29), 'permanent'],
    ['INVALID_RECORD', protocolError(87), 'permanent'],
    ['UNKNOWN_TOPIC_OR_PARTITION after retries', afterRetries(protocolError(3)), 'retry'],
    ['NOT_ENOUGH_REPLICAS', protocolError(19), 'retry'],
    ['CORRUPT_MESSAGE', protocolError(2), 'retry'],
    ['OUT_OF_ORDER_SEQUENCE_NUMBER', protocolError(45), 'retry'],
    ['an unknown error', new Error('something odd'), 'retry'],
    ['a raw socket error', Object.assign(new Error('reset'), { code: 'ECONNRESET' }), 'unavailable'],
  ];
  for (const [label, err, expected] of cases) {
    it(`${label} → ${expected}`, () => {
      assert.equal(classifyKafkaError(err), expected);
    });
  }
});

describe('KafkaTransport failures', () => {
  it('reports unavailable for the whole call on a connection error, disconnects, and reconnects on the next call', async () => {
    const producer = new FakeProducer();
    const transport = transportWith(producer);
    await transport.start();
    producer.script = [afterRetries(new KafkaJSConnectionError('Connection error: read ECONNRESET'))];
    const outcomes = await transport.publish([testMessage(), testMessage()]);
    assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
    assert.ok(outcomes.every((o) => o.status !== 'ok' && isTransportError(o.error)));
    assert.match((outcomes[0] as { error: Error }).error.message, /did not take message .*ECONNRESET/);
    assert.equal(transport.connected, false);
    assert.equal(producer.disconnects, 1);
    assert.deepEqual(statuses(await transport.publish([testMessage()])), ['ok']);
    assert.equal(producer.connects, 2, 'the next call connected again');
    await transport.close();
  });

  it('on a refusal of a multi-message call, sends one by one so that only the culprit is permanent', async () => {
    const producer = new FakeProducer();
    const transport = transportWith(producer);
    const big = testMessage({ topic: 'orders', key: 'k1', payload: Buffer.alloc(900) });
    const batch = [
      testMessage({ topic: 'orders', key: 'k1' }),
      big,
      testMessage({ topic: 'orders', key: 'k1' }),
    ];
    const tooLarge = (b: KafkaSendBatch) =>
      b.topicMessages.some((t) => t.messages.some((m) => m.value.length >= 900))
        ? protocolError(10)
        : undefined;
    producer.script = [tooLarge, tooLarge, tooLarge, tooLarge];
    const outcomes = await transport.publish(batch);
    assert.deepEqual(statuses(outcomes), ['ok', 'permanent', 'ok']);
    assert.match(
      (outcomes[1] as { error: Error }).error.message,
      /Kafka refused message .* max\.message\.bytes/,
    );
    assert.equal(producer.batches.length, 4, 'the whole call, then each of the three alone');
    await transport.close();
  });

  it('in one-by-one sending, holds back the later messages of a key whose message failed', async () => {
    const producer = new FakeProducer();
    const transport = transportWith(producer);
    const batch = [
      testMessage({ topic: 'a', key: 'k1' }),
      testMessage({ topic: 'a', key: 'k2' }),
      testMessage({ topic: 'a', key: 'k1' }),
      testMessage({ topic: 'a', key: 'k2' }),
    ];
    producer.script = [protocolError(17), afterRetries(protocolError(19)), protocolError(10), undefined];
    const outcomes = await transport.publish(batch);
    // k1's first fails transiently (NOT_ENOUGH_REPLICAS): its second is held back, not sent.
    assert.deepEqual(statuses(outcomes), ['retry', 'permanent', 'retry', 'ok']);
    assert.match(
      (outcomes[2] as { error: Error }).error.message,
      /was not sent: message .* of the same key \("k1"\)/,
    );
    assert.equal(producer.batches.length, 4);
    await transport.close();
  });

  it('reports retry for every message on a transient broker error', async () => {
    const producer = new FakeProducer();
    const transport = transportWith(producer);
    producer.script = [afterRetries(protocolError(3))];
    const outcomes = await transport.publish([testMessage(), testMessage()]);
    assert.deepEqual(statuses(outcomes), ['retry', 'retry']);
    assert.match((outcomes[0] as { error: Error }).error.message, /create the topic/);
    await transport.close();
  });

  it('gives up the producer after a failed send and builds a new one (a new producer id) for the next', async () => {
    const built: FakeProducer[] = [];
    const transport = new KafkaTransport({
      producer: () => {
        const producer = new FakeProducer();
        if (built.length === 0) producer.script = [afterRetries(protocolError(19))];
        built.push(producer);
        return producer;
      },
    });
    await transport.start();
    assert.deepEqual(statuses(await transport.publish([testMessage()])), ['retry']);
    assert.equal(transport.connected, false);
    assert.deepEqual(statuses(await transport.publish([testMessage()])), ['ok']);
    assert.equal(built.length, 2, 'a second producer was built');
    assert.equal(built[0]?.disconnects, 1, 'the first was disconnected');
    assert.equal(built[1]?.batches.length, 1, 'the next call went through the new one');
    await transport.close();
    assert.equal(built[1]?.disconnects, 1);
  });

  it('reports unavailable at once when the signal aborts, and drops the connection', async () => {
    const producer = new FakeProducer();
    const transport = transportWith(producer);
    await transport.start();
    producer.script = ['hang'];
    const controller = new AbortController();
    const publishing = transport.publish([testMessage(), testMessage()], { signal: controller.signal });
    setTimeout(() => controller.abort(), 20);
    const outcomes = await publishing;
    assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
    assert.match(
      (outcomes[0] as { error: Error }).error.message,
      /aborted before the brokers acknowledged it/,
    );
    assert.equal(producer.disconnects, 1);
    await transport.close();
  });

  it('reports unavailable when the brokers do not answer within publishTimeoutMs', async () => {
    const producer = new FakeProducer();
    const transport = transportWith(producer, { publishTimeoutMs: 30 });
    producer.script = ['hang'];
    const outcomes = await transport.publish([testMessage()]);
    assert.equal(outcomes[0]?.status, 'unavailable');
    assert.match((outcomes[0] as { error: Error }).error.message, /within publishTimeoutMs \(30 ms\)/);
    await transport.close();
  });

  it('connects once for concurrent starts; close is idempotent; publish after close is unavailable; start reopens', async () => {
    const producer = new FakeProducer();
    const transport = transportWith(producer);
    await Promise.all([transport.start(), transport.start(), transport.probe()]);
    assert.equal(producer.connects, 1);
    await Promise.all([transport.close(), transport.close()]);
    const outcomes = await transport.publish([testMessage()]);
    assert.equal(outcomes[0]?.status, 'unavailable');
    assert.match((outcomes[0] as { error: Error }).error.message, /is closed; call start\(\)/);
    assert.equal(producer.batches.length, 0, 'nothing sent after close');
    await assert.rejects(transport.probe(), (err: unknown) => isTransportError(err) && err.code === 'closed');
    await transport.start();
    assert.equal(producer.connects, 2);
    assert.deepEqual(statuses(await transport.publish([testMessage()])), ['ok']);
    await transport.close();
  });

  it('close waits for a publish in flight', async () => {
    const producer = new FakeProducer();
    let release: () => void = () => {};
    producer.sendBatch = (batch) => {
      producer.batches.push(batch);
      return new Promise<unknown>((resolve) => (release = () => resolve([])));
    };
    const transport = transportWith(producer);
    const publishing = transport.publish([testMessage()]);
    await new Promise((resolve) => setTimeout(resolve, 10));
    const closing = transport.close();
    setTimeout(() => release(), 10);
    await closing;
    assert.deepEqual(statuses(await publishing), ['ok']);
    assert.equal(producer.disconnects, 1);
  });

  it('start and probe throw a TransportError naming the brokers when connecting fails', async () => {
    const producer = new FakeProducer();
    producer.connectError = afterRetries(
      new KafkaJSConnectionError('Connection error: connect ECONNREFUSED 10.0.0.1:9092'),
    );
    const transport = new KafkaTransport({ url: 'kafka://relay:hunter2@10.0.0.1:9092?sasl=plain', producer });
    await assert.rejects(
      transport.start(),
      (err: unknown) =>
        isTransportError(err) &&
        err.code === 'unreachable' &&
        /cannot connect to Kafka at kafka:\/\/relay:\*\*\*@10\.0\.0\.1:9092/.test(err.message) &&
        !err.message.includes('hunter2'),
    );
    await assert.rejects(transport.probe(), /ECONNREFUSED/);
    const outcomes = await transport.publish([testMessage()]);
    assert.equal(outcomes[0]?.status, 'unavailable');
    await transport.close();
  });
});

describe('KafkaTransport with the real kafkajs client, no broker', () => {
  it('start fails with unreachable and publish reports unavailable, against a port nobody listens on', async () => {
    const transport = new KafkaTransport({
      url: 'kafka://127.0.0.1:1',
      connectTimeoutMs: 500,
      retries: 0,
      publishTimeoutMs: 5000,
    });
    try {
      await assert.rejects(
        transport.start(),
        (err: unknown) =>
          isTransportError(err) && err.code === 'unreachable' && /127\.0\.0\.1:1/.test(err.message),
      );
      const outcomes = await transport.publish([testMessage(), testMessage()]);
      assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
    } finally {
      await transport.close();
    }
  });
});

// Against a real broker, when one is named. Not run in this project's CI: no Kafka runs there.
const brokers = process.env['KAFKA_BROKERS'];
if (brokers === undefined || brokers === '') {
  it(
    'kafka transport conformance',
    { skip: 'set KAFKA_BROKERS=host:port to run against a broker (none here)' },
    () => {},
  );
} else {
  const url = `kafka://${brokers}`;
  const { Kafka, logLevel } = await import('kafkajs');
  const admin = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).admin();
  const created = new Set<string>();
  after(async () => {
    if (created.size > 0) await admin.deleteTopics({ topics: [...created] }).catch(() => {});
    await admin.disconnect();
  });

  runTransportConformance('kafka', {
    create: async () => new KafkaTransport({ url, publishTimeoutMs: 20_000, maxMessageBytes: 256 * 1024 }),
    maxPayloadBytes: 256 * 1024,
    // Kafka's clients connect to the addresses the brokers advertise, which would go around a
    // proxy: the network fault checks are skipped; the outage check uses a closed port.
    createUnreachable: async () =>
      new KafkaTransport({ url: 'kafka://127.0.0.1:1', connectTimeoutMs: 500, retries: 0 }),
    // A header kafkajs would have to change to encode: refused by the transport, alone.
    refusedMessage: (topic) => testMessage({ topic, headers: { 'x-broken': 'a\ud800b' } }),
    dedupes: false,
    consume: async (_transport, topics): Promise<ConformanceConsumer> => {
      await admin.connect();
      if (topics.length > 0) {
        await admin.createTopics({
          topics: topics.map((topic) => ({ topic, numPartitions: 1 })),
          waitForLeaders: true,
        });
        for (const topic of topics) created.add(topic);
      }
      const consumer = new Kafka({ brokers: brokers.split(','), logLevel: logLevel.NOTHING }).consumer({
        groupId: `mailroom-conformance-${Math.random().toString(36).slice(2)}`,
      });
      const received: ReceivedMessage[] = [];
      await consumer.connect();
      if (topics.length > 0) {
        await consumer.subscribe({ topics: [...topics], fromBeginning: true });
        await consumer.run({
          eachMessage: async ({ topic, message }) => {
            const headers: Record<string, string> = {};
            for (const [name, value] of Object.entries(message.headers ?? {})) {
              if (value !== undefined)
                headers[name] = Buffer.isBuffer(value) ? value.toString('utf8') : String(value);
            }
            received.push({
              id: headers['mailroom-id'] ?? '',
              topic: headers['mailroom-topic'] ?? topic,
              key: message.key === null ? null : message.key.toString('utf8'),
              headers,
              payload: message.value ?? Buffer.alloc(0),
              type: headers['mailroom-type'] ?? null,
              contentType: headers['content-type'] ?? '',
            });
          },
        });
      }
      return {
        async take(count, timeoutMs) {
          const until = Date.now() + timeoutMs;
          while (received.length < count) {
            if (Date.now() > until) throw new Error(`received ${received.length} of ${count} messages`);
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
          return received.slice(0, count);
        },
        close: () => consumer.disconnect(),
      };
    },
    timeoutMs: 30_000,
  });
}
