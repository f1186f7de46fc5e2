// The Redis Streams transport against the real server (Redis at 6379, started by .ci/run), plus
// redis-server processes of the test's own for what cannot be done to the shared server (a
// replica, a server out of memory). Every key this file makes on the shared server starts with
// a prefix of its own, deleted afterwards.
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
  decodeStreamEntry,
  RedisStreamsTransport,
  type RedisStreamsTransportOptions,
} from '../../src/transports/redis/index.js';
import { replyOutcome } from '../../src/transports/redis/redis-publish.js';
import {
  consumeFor,
  deleteKeys,
  fieldMap,
  readStreams,
  REDIS_HOST,
  REDIS_PORT,
  REDIS_URL,
  testClient,
  uniquePrefix,
} from './redis-helpers.js';

/** Every key of this file: streams are `<prefix>{topic}`. */
const prefix = uniquePrefix();
const template = `${prefix}{topic}`;
/** A string key: XADD to it fails with WRONGTYPE. */
const wrongTypeTopic = 'wrongtype';
/** Topics published with the default template (stream = topic), deleted afterwards. */
const bareTopics = new Set<string>();
const MAX_PAYLOAD_BYTES = 256 * 1024;

before(async () => {
  const client = await testClient();
  try {
    await client.set(`${prefix}${wrongTypeTopic}`, 'not a stream');
  } finally {
    await client.quit();
  }
});

after(async () => {
  await deleteKeys(prefix);
  if (bareTopics.size > 0) {
    const client = await testClient();
    try {
      await client.del(...bareTopics);
    } finally {
      await client.quit();
    }
  }
});

function transport(options: Partial<RedisStreamsTransportOptions> = {}): RedisStreamsTransport {
  return new RedisStreamsTransport({ url: REDIS_URL, stream: template, ...options });
}

function statuses(outcomes: PublishOutcome[]): string[] {
  return outcomes.map((o) => o.status);
}

function codeOf(outcome: PublishOutcome | undefined): string | undefined {
  if (outcome === undefined || outcome.status === 'ok') return undefined;
  return isTransportError(outcome.error) ? outcome.error.code : outcome.error.name;
}

function errorOf(outcome: PublishOutcome | undefined): Error {
  assert.ok(outcome && outcome.status !== 'ok', `expected a failed outcome, got ${outcome?.status}`);
  return outcome.error;
}

runTransportConformance('redis', {
  create: async () => transport({ maxPayloadBytes: MAX_PAYLOAD_BYTES }),
  consume: consumeFor,
  proxy: {
    broker: { host: REDIS_HOST, port: REDIS_PORT },
    createThrough: async ({ host, port }) =>
      transport({ url: `redis://${host}:${port}`, maxPayloadBytes: MAX_PAYLOAD_BYTES }),
  },
  refusedMessage: () => testMessage({ topic: wrongTypeTopic }),
  maxPayloadBytes: MAX_PAYLOAD_BYTES,
  dedupes: false,
});

describe('redis streams transport', () => {
  it('adds one entry per message with the mailroom-* fields, the headers as JSON and the payload bytes', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const t = transport();
    await t.start();
    try {
      const createdAt = new Date('2024-05-06T07:08:09.500Z');
      const keyed = testMessage({
        topic,
        key: 'order-42',
        type: 'order.created',
        headers: { traceparent: '00-abc-def-01', 'mailroom-group': 'g', 'x-lines': 'a\nb' },
        createdAt,
        attempts: 3,
      });
      const keyless = testMessage({
        topic,
        payload: Buffer.from([0, 255, 13, 10, 0]),
        contentType: 'application/octet-stream',
      });
      assert.deepEqual(statuses(await t.publish([keyed, keyless])), ['ok', 'ok']);
      const client = await testClient();
      try {
        const entries = await client.xrangeBuffer(`${prefix}${topic}`, '-', '+');
        assert.equal(entries.length, 2);
        const first = fieldMap(entries[0]?.[1] ?? []);
        const text = (name: string) => first.get(name)?.toString('utf8');
        assert.deepEqual(
          [...first.keys()],
          [
            'mailroom-id',
            'mailroom-topic',
            'mailroom-key',
            'mailroom-type',
            'mailroom-attempt',
            'mailroom-created-at',
            'content-type',
            'headers',
            'payload',
          ],
        );
        assert.equal(text('mailroom-id'), keyed.id);
        assert.equal(text('mailroom-topic'), topic);
        assert.equal(text('mailroom-key'), 'order-42');
        assert.equal(text('mailroom-type'), 'order.created');
        assert.equal(text('mailroom-attempt'), '3');
        assert.equal(text('mailroom-created-at'), '2024-05-06T07:08:09.500Z');
        assert.equal(text('content-type'), 'application/json');
        assert.deepEqual(JSON.parse(text('headers') ?? ''), keyed.headers);
        assert.ok(first.get('payload')?.equals(keyed.payload));
        const second = fieldMap(entries[1]?.[1] ?? []);
        assert.equal(second.has('mailroom-key'), false, 'a keyless message has no mailroom-key field');
        assert.equal(second.has('mailroom-type'), false);
        assert.ok(second.get('payload')?.equals(keyless.payload), 'binary payload unchanged');

        const decoded = decodeStreamEntry(entries[0]?.[1] ?? [], `${prefix}${topic}`);
        assert.ok(decoded.ok);
        assert.equal(decoded.message.id, keyed.id);
        assert.equal(decoded.message.key, 'order-42');
        assert.equal(decoded.message.attempt, 3);
        assert.deepEqual(decoded.message.createdAt, createdAt);
        assert.deepEqual(decoded.message.payload, JSON.parse(keyed.payload.toString()));
        assert.deepEqual(
          decoded.message.headers,
          { traceparent: '00-abc-def-01', 'x-lines': 'a\nb' },
          'mailroom-* headers are left out of what a handler gets',
        );
      } finally {
        await client.quit();
      }
    } finally {
      await t.close();
    }
  });

  it("adds to the stream named as the topic by default, and to the template's otherwise", async () => {
    const [topic] = uniqueTopics(1) as [string];
    bareTopics.add(topic);
    const plain = new RedisStreamsTransport({ url: REDIS_URL });
    try {
      assert.equal(plain.streamFor(topic), topic);
      assert.equal(transport().streamFor('a.b'), `${prefix}a.b`);
      assert.equal(transport({ stream: 'x:{topic}:y' }).streamFor('$&$1'), 'x:$&$1:y', 'no $-patterns');
      assert.deepEqual(statuses(await plain.publish([testMessage({ topic })])), ['ok']);
      const client = await testClient();
      try {
        assert.equal(await client.xlen(topic), 1);
      } finally {
        await client.quit();
      }
    } finally {
      await plain.close();
    }
  });

  it('reports a key that holds another type permanent, naming the key, and adds the rest of the batch', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const t = transport();
    const reader = await readStreams([`${prefix}${topic}`]);
    try {
      const batch = [
        testMessage({ topic, key: 'k' }),
        testMessage({ topic: wrongTypeTopic, key: 'k' }),
        testMessage({ topic, key: 'k' }),
      ];
      const outcomes = await t.publish(batch);
      assert.deepEqual(statuses(outcomes), ['ok', 'permanent', 'ok']);
      const error = errorOf(outcomes[1]);
      assert.ok(isPermanentDeliveryError(error));
      assert.match(error.message, new RegExp(`key "${prefix}${wrongTypeTopic}" exists and is not a stream`));
      assert.match(error.message, /WRONGTYPE/);
      const received = await reader.take(2, 5000);
      assert.deepEqual(
        received.map((m) => m.id),
        [batch[0]?.id, batch[2]?.id],
      );
    } finally {
      await reader.close();
      await t.close();
    }
  });

  it('trims each stream to about maxLen entries with MAXLEN ~, and not at all without it', async () => {
    const [trimmed, kept] = uniqueTopics(2) as [string, string];
    const withMax = transport({ maxLen: 100 });
    const without = transport();
    const client = await testClient();
    try {
      for (let round = 0; round < 10; round++) {
        const batch = Array.from({ length: 100 }, () => testMessage({ topic: trimmed }));
        assert.ok((await withMax.publish(batch)).every((o) => o.status === 'ok'));
        assert.ok(
          (await without.publish(batch.map((m) => ({ ...m, topic: kept })))).every((o) => o.status === 'ok'),
        );
      }
      const length = await client.xlen(`${prefix}${trimmed}`);
      // Approximate trimming removes whole nodes (stream-node-max-entries, 100 by default): at
      // least maxLen entries stay, and at most about a node more.
      assert.ok(length >= 100 && length <= 300, `stream trimmed to about 100 entries, has ${length}`);
      assert.equal(await client.xlen(`${prefix}${kept}`), 1000, 'no trimming without maxLen');
    } finally {
      await client.quit();
      await withMax.close();
      await without.close();
    }
  });

  it('reports unavailable at once when the signal aborts while connecting to a server that does not answer', async () => {
    const proxy = await TcpProxy.start({ targetHost: REDIS_HOST, targetPort: REDIS_PORT });
    proxy.blackhole();
    const t = transport({ url: `redis://127.0.0.1:${proxy.port}` });
    try {
      const controller = new AbortController();
      setTimeout(() => controller.abort(new Error('publish deadline')), 200);
      const started = performance.now();
      const outcomes = await t.publish([testMessage(), testMessage()], { signal: controller.signal });
      assert.ok(performance.now() - started < 2000, 'the signal bounds the wait');
      assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
      assert.equal(codeOf(outcomes[0]), 'publish_timeout');
      assert.match(errorOf(outcomes[0]).message, /while connecting, so nothing was sent/);
      const probing = new AbortController();
      setTimeout(() => probing.abort(new Error('probe deadline')), 200);
      await assert.rejects(
        t.probe({ signal: probing.signal }),
        (err: unknown) => isTransportError(err) && err.code === 'probe_aborted',
      );
    } finally {
      proxy.heal();
      await t.close();
      await proxy.close();
    }
  });

  it('fails to start on a port where nothing listens, reports unavailable, and probes closed after close()', async () => {
    const t = new RedisStreamsTransport({ url: 'redis://127.0.0.1:1', connectTimeoutMs: 2000 });
    await assert.rejects(
      t.start(),
      (err: unknown) =>
        isTransportError(err) &&
        err.code === 'unreachable' &&
        /cannot connect to the Redis server at redis:\/\/127\.0\.0\.1:1.*ECONNREFUSED/.test(err.message),
    );
    const outcomes = await t.publish([testMessage(), testMessage()]);
    assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
    assert.equal(codeOf(outcomes[0]), 'unreachable');
    await assert.rejects(t.probe(), (err: unknown) => isTransportError(err) && err.code === 'unreachable');
    await t.close();
    await assert.rejects(t.probe(), (err: unknown) => isTransportError(err) && err.code === 'closed');
  });

  it('says which server listens on a well-known port of another, and refuses a wrong password without showing it', async () => {
    const pg = new RedisStreamsTransport({ url: 'redis://127.0.0.1:5432', connectTimeoutMs: 2000 });
    await assert.rejects(
      pg.start(),
      (err: unknown) =>
        isTransportError(err) && err.code === 'unreachable' && /PostgreSQL listens on 5432/.test(err.message),
    );
    await pg.close();
    const wrong = new RedisStreamsTransport({ url: `redis://nobody:s3cret-pw@${REDIS_HOST}:${REDIS_PORT}` });
    await assert.rejects(
      wrong.start(),
      (err: unknown) =>
        isTransportError(err) &&
        err.code === 'auth_failed' &&
        /WRONGPASS/.test(err.message) &&
        !err.message.includes('s3cret-pw'),
    );
    await wrong.close();
  });

  it('rejects bad URLs, templates and options with a ConfigError naming the option, without the password', () => {
    const cases: Array<[Partial<RedisStreamsTransportOptions>, RegExp]> = [
      [
        { url: 'amqp://guest:secret@localhost' },
        /scheme "amqp"; use redis:\/\/ \(plain\) or rediss:\/\/ \(TLS\)/,
      ],
      [{ url: 'redis://:secret@localhost?enableOfflineQueue=true' }, /query/],
      [{ url: 'redis://:secret@localhost/orders' }, /database number/],
      [{ url: 'not a url' }, /not a valid URL/],
      [{ url: 'redis://' }, /no host/],
      [{ stream: 'orders' }, /must contain '\{topic\}' exactly once/],
      [{ stream: '{topic}.{topic}' }, /exactly once/],
      [{ stream: '{topic}.{key}' }, /brace outside/],
      [{ stream: 'a\n{topic}' }, /control character/],
      [{ maxLen: 0 }, /maxLen must be an integer from 1/],
      [{ maxPayloadBytes: 600 * 1024 * 1024 }, /maxPayloadBytes must be an integer from 1 to 536870912/],
      [{ waitReplicas: { count: 1 } as never }, /waitReplicas\.timeoutMs is missing/],
      [{ waitReplicas: { count: 0, timeoutMs: 100 } }, /waitReplicas\.count must be an integer from 1/],
      [{ waitReplicas: { count: 1, timeoutMs: 0 } }, /waitReplicas\.timeoutMs must be an integer from 1/],
      [{ waitReplicas: 1 as never }, /waitReplicas must be an object/],
      [
        { maxlen: 10 } as Partial<RedisStreamsTransportOptions>,
        /unknown RedisStreamsTransport option "maxlen" \(did you mean maxLen\?\)/,
      ],
    ];
    for (const [options, message] of cases) {
      assert.throws(
        () => new RedisStreamsTransport({ url: 'redis://:secret@localhost', ...options }),
        (err: unknown) =>
          isConfigError(err) &&
          message.test(err.message) &&
          !err.message.includes('secret') &&
          !JSON.stringify(err.details).includes('secret'),
        `expected ${String(message)}`,
      );
    }
  });

  it('refuses a topic that makes a bad stream key as permanent, without sending it', async () => {
    const t = transport();
    try {
      const [good] = uniqueTopics(1) as [string];
      const outcomes = await t.publish([
        testMessage({ topic: 'bad\u0001topic' }),
        testMessage({ topic: 'x'.repeat(1100) }),
        testMessage({ topic: good }),
      ]);
      assert.deepEqual(statuses(outcomes), ['permanent', 'permanent', 'ok']);
      assert.match(errorOf(outcomes[0]).message, /control character/);
      assert.match(errorOf(outcomes[1]).message, /longer than 1024 bytes/);
    } finally {
      await t.close();
    }
  });
});

describe('redis streams transport: replies sorted into outcomes', () => {
  const message = testMessage();
  const reply = (text: string): Error => {
    const err = new Error(text);
    Object.defineProperty(err, 'name', { value: 'ReplyError' });
    return err;
  };
  const cases: Array<[Error | null, string, string | undefined]> = [
    [null, 'ok', undefined],
    [
      reply('WRONGTYPE Operation against a key holding the wrong kind of value'),
      'permanent',
      'PermanentDeliveryError',
    ],
    [reply("OOM command not allowed when used memory > 'maxmemory'."), 'unavailable', 'server_refusing'],
    [reply("READONLY You can't write against a read only replica."), 'unavailable', 'server_refusing'],
    [reply('LOADING Redis is loading the dataset in memory'), 'unavailable', 'server_refusing'],
    [reply('MISCONF Redis is configured to save RDB snapshots, but …'), 'unavailable', 'server_refusing'],
    [reply('NOREPLICAS Not enough good replicas to write.'), 'unavailable', 'server_refusing'],
    [reply("NOPERM User relay has no permissions to access the 'orders' key"), 'retry', 'refused'],
    [reply('ERR something else'), 'retry', 'refused'],
    [new Error('Connection is closed.'), 'unavailable', 'reply_lost'],
    [
      new Error("Stream isn't writeable and enableOfflineQueue options is false"),
      'unavailable',
      'reply_lost',
    ],
  ];
  for (const [error, status, code] of cases) {
    it(`reads ${error === null ? 'a reply' : JSON.stringify(error.message.slice(0, 40))} as ${status}`, () => {
      const outcome = replyOutcome('redis://h:6379', message, 'orders', [error, error ? null : '1-0']);
      assert.equal(outcome.status, status);
      assert.equal(codeOf(outcome), code);
    });
  }
});

describe('decodeStreamEntry', () => {
  const id = testMessage().id;
  it('refuses an entry without a UUID id, with headers that are not a JSON object of strings, or JSON that does not parse', () => {
    const cases: Array<[Array<string | Buffer>, RegExp]> = [
      [['payload', '{}'], /has no mailroom-id field/],
      [['mailroom-id', 'nope'], /is not a UUID/],
      [['mailroom-id', id, 'headers', '[1]'], /not a JSON object of strings/],
      [['mailroom-id', id, 'headers', '{"a":1}'], /not a JSON object of strings/],
      [['mailroom-id', id, 'content-type', 'application/json', 'payload', '{'], /payload is not JSON/],
    ];
    for (const [fields, message] of cases) {
      const decoded = decodeStreamEntry(fields, 'orders');
      assert.ok(!decoded.ok, `expected ${String(message)} to be refused`);
      assert.ok(isPermanentDeliveryError(decoded.error));
      assert.match(decoded.error.message, message);
    }
  });

  it('takes the stream as the topic when the entry has none, bytes as bytes, and the group from the headers', () => {
    const headers = JSON.stringify({
      'mailroom-group': id,
      'mailroom-group-size': '2',
      'mailroom-group-index': '1',
    });
    const decoded = decodeStreamEntry(
      ['mailroom-id', id, 'headers', headers, 'payload', Buffer.from([1, 2])],
      'orders',
    );
    assert.ok(decoded.ok);
    assert.equal(decoded.message.topic, 'orders');
    assert.equal(decoded.message.contentType, 'application/octet-stream');
    assert.deepEqual(decoded.message.payload, Buffer.from([1, 2]));
    assert.deepEqual(decoded.message.group, { id, size: 2, index: 1 });
    assert.equal(decoded.message.attempt, 1);
  });
});
