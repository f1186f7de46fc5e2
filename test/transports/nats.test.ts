// The NATS JetStream transport against the local nats-server (-js, 127.0.0.1:4222, started by
// .ci/run). Every subject carries a random prefix and every stream a random name; the streams
// are deleted after each test.
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';

import { isConfigError } from '../../src/core/errors/config-error.js';
import { isPermanentDeliveryError } from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import type { PublishOutcome } from '../../src/core/ports.js';
import {
  runTransportConformance,
  testMessage,
  uniqueTopics,
} from '../../src/testkit/transport-conformance.js';
import {
  decodeNatsMessage,
  natsOptionsFromUrl,
  NatsTransport,
  readMessageHeaders,
  type NatsTransportOptions,
} from '../../src/transports/nats/index.js';
import {
  admin,
  createStream,
  deleteStream,
  NATS_PORT,
  NATS_URL,
  storedMessages,
  streamConsumer,
  uniquePrefix,
  uniqueStreamName,
} from './nats-helpers.js';
import { waitUntil } from '../helpers/wait.js';

const PREFIX = uniquePrefix();
const MAX_PAYLOAD_BYTES = 512 * 1024;

const transport = (options: Partial<NatsTransportOptions> = {}) =>
  new NatsTransport({ url: NATS_URL, subjectPrefix: PREFIX, maxMessageBytes: MAX_PAYLOAD_BYTES, ...options });

function statuses(outcomes: PublishOutcome[]): string[] {
  return outcomes.map((o) => o.status);
}

function errorOf(outcome: PublishOutcome | undefined): Error {
  assert.ok(outcome && outcome.status !== 'ok', `expected a failed outcome, got ${outcome?.status}`);
  return outcome.error;
}

runTransportConformance('nats', {
  create: async () => transport(),
  consume: (_transport, topics) => streamConsumer(PREFIX, topics),
  proxy: {
    broker: { host: '127.0.0.1', port: NATS_PORT },
    createThrough: async ({ host, port }) =>
      new NatsTransport({
        url: `nats://${host}:${port}`,
        subjectPrefix: PREFIX,
        maxMessageBytes: MAX_PAYLOAD_BYTES,
        connectTimeoutMs: 3000,
        ackTimeoutMs: 5000,
      }),
  },
  // A header the server reads itself: the transport refuses it before sending.
  refusedMessage: (topic) => testMessage({ topic, headers: { 'Nats-Rollup': 'all' } }),
  maxPayloadBytes: MAX_PAYLOAD_BYTES,
  dedupes: true,
});

describe('nats transport', () => {
  /** Streams made by a test, deleted after it. */
  const streams: string[] = [];
  const stream = async (subjects: string[], extra: Parameters<typeof createStream>[2] = {}) => {
    const s = await createStream(subjects, undefined, extra);
    streams.push(s.name);
    return s.name;
  };
  after(async () => {
    for (const name of streams) await deleteStream(name);
  });

  it('publishes to prefix.topic with Nats-Msg-Id and the mailroom-* headers beside the user headers', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const name = await stream([`${PREFIX}.${topic}`]);
    const t = transport();
    await t.start();
    try {
      const createdAt = new Date('2024-05-06T07:08:09.500Z');
      const keyed = testMessage({
        topic,
        key: 'order-42',
        type: 'order.created',
        headers: { traceparent: '00-abc-def-01', 'x-lines': 'a\r\nb', 'mailroom-ack-to': 'acks' },
        createdAt,
        attempts: 3,
      });
      const keyless = testMessage({
        topic,
        headers: { 'mailroom-key': 'forged' },
        contentType: 'text/plain',
      });
      assert.deepEqual(statuses(await t.publish([keyed, keyless])), ['ok', 'ok']);
      const [first, second] = await storedMessages(name);
      assert.ok(first && second);
      assert.equal(first.subject, `${PREFIX}.${topic}`);
      const h = first.headers;
      assert.ok(h);
      assert.equal(h.get('Nats-Msg-Id'), keyed.id, 'JetStream dedupes on the message id');
      assert.equal(h.get('mailroom-id'), keyed.id);
      assert.equal(h.get('mailroom-topic'), topic);
      assert.equal(h.get('mailroom-key'), 'order-42');
      assert.equal(h.get('mailroom-type'), 'order.created');
      assert.equal(h.get('mailroom-content-type'), 'application/json');
      assert.equal(h.get('mailroom-attempt'), '3');
      assert.equal(h.get('mailroom-created-at'), '2024-05-06T07:08:09.500Z');
      assert.equal(h.get('traceparent'), '00-abc-def-01');
      assert.equal(h.get('mailroom-ack-to'), 'acks', "Mailroom's own user headers pass through");
      assert.match(h.get('x-lines'), /^=\?utf-8\?b\?/, 'a value with CR LF travels encoded');
      const fields = readMessageHeaders(h);
      assert.equal(fields.headers['x-lines'], 'a\r\nb', 'and reads back as sent');
      assert.equal(fields.attempt, 3);
      assert.equal(fields.createdAt?.toISOString(), createdAt.toISOString());
      assert.ok(Buffer.from(first.data).equals(keyed.payload));
      assert.equal(second.headers?.get('mailroom-id'), keyless.id);
      assert.equal(
        second.headers?.has('mailroom-key'),
        false,
        'a keyless message never carries mailroom-key',
      );
      assert.equal(second.headers?.has('mailroom-type'), false);
      assert.equal(second.headers?.get('mailroom-content-type'), 'text/plain');

      // What a consumer hands its Inbox.
      const received = decodeNatsMessage(first);
      assert.equal(received.id, keyed.id);
      assert.equal(received.topic, topic);
      assert.equal(received.key, 'order-42');
      assert.equal(received.type, 'order.created');
      assert.equal(received.attempt, 3);
      assert.equal(received.ackTo, 'acks');
      assert.deepEqual(received.headers, { traceparent: '00-abc-def-01', 'x-lines': 'a\r\nb' });
      assert.deepEqual(received.payload, JSON.parse(keyed.payload.toString()));
      assert.throws(
        () => decodeNatsMessage({ subject: 'x.y', data: new Uint8Array() }),
        (err: Error) => isPermanentDeliveryError(err) && /no UUID mailroom-id/.test(err.message),
      );
    } finally {
      await t.close();
    }
  });

  it('stores one copy of a message published twice (same Nats-Msg-Id), reporting ok for both', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const name = await stream([`${PREFIX}.${topic}`]);
    const a = transport();
    const b = transport();
    await a.start();
    await b.start();
    try {
      const message = testMessage({ topic, key: 'k' });
      const other = testMessage({ topic, key: 'k' });
      assert.deepEqual(statuses(await a.publish([message, other])), ['ok', 'ok']);
      // Again on the same connection, in one batch with itself, and from another connection (a relay
      // that lost the PubAck, or a second relay): all ok, none stored again.
      assert.deepEqual(statuses(await a.publish([message])), ['ok']);
      assert.deepEqual(statuses(await a.publish([message, { ...message, attempts: 2 }])), ['ok', 'ok']);
      assert.deepEqual(statuses(await b.publish([{ ...message, attempts: 3 }])), ['ok']);
      const stored = await storedMessages(name);
      assert.deepEqual(
        stored.map((m) => m.headers?.get('mailroom-id')),
        [message.id, other.id],
      );
      assert.equal(stored[0]?.headers?.get('mailroom-attempt'), '1', 'the first copy is the one kept');
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('reports permanent for a subject no stream captures, naming the subject and what to do, and ok for the rest', async () => {
    const [covered, missing] = uniqueTopics(2) as [string, string];
    await stream([`${PREFIX}.${covered}`]);
    const t = transport();
    await t.start();
    try {
      const batch = [
        testMessage({ topic: covered }),
        testMessage({ topic: missing }),
        testMessage({ topic: covered }),
      ];
      const outcomes = await t.publish(batch);
      assert.deepEqual(statuses(outcomes), ['ok', 'permanent', 'ok']);
      const error = errorOf(outcomes[1]);
      assert.ok(isPermanentDeliveryError(error));
      assert.match(error.message, new RegExp(`subject "${PREFIX}\\.${missing.replace(/\./g, '\\.')}"`));
      assert.match(error.message, /no JetStream stream/);
      assert.match(error.message, /create a stream/);
      assert.match(error.message, /ensureStream/);
      assert.ok(t.connected, 'a missing stream is not an outage: the connection stays');
    } finally {
      await t.close();
    }
  });

  it('creates the ensureStream stream at start, and adds missing subjects to an existing one', async () => {
    const [topic, later] = uniqueTopics(2) as [string, string];
    const name = uniqueStreamName();
    streams.push(name);
    const t = transport({ ensureStream: { name, subjects: [`${PREFIX}.${topic}`] } });
    await t.start();
    try {
      assert.deepEqual(statuses(await t.publish([testMessage({ topic })])), ['ok']);
    } finally {
      await t.close();
    }
    const t2 = transport({ ensureStream: { name, subjects: [`${PREFIX}.${later}`] } });
    await t2.start();
    try {
      assert.deepEqual(statuses(await t2.publish([testMessage({ topic: later })])), ['ok']);
      const a = await admin();
      try {
        const info = await a.jsm.streams.info(name);
        assert.deepEqual(
          new Set(info.config.subjects),
          new Set([`${PREFIX}.${topic}`, `${PREFIX}.${later}`]),
        );
        assert.equal(info.state.messages, 2);
      } finally {
        await a.close();
      }
    } finally {
      await t2.close();
    }
  });

  it('fails start with stream_setup_failed when ensureStream overlaps another stream', async () => {
    const [topic] = uniqueTopics(1) as [string];
    await stream([`${PREFIX}.${topic}`]);
    const name = uniqueStreamName();
    const t = transport({ ensureStream: { name, subjects: [`${PREFIX}.${topic}`] } });
    try {
      await assert.rejects(t.start(), (err: Error) => {
        assert.ok(isTransportError(err));
        assert.equal(err.code, 'stream_setup_failed');
        assert.match(err.message, new RegExp(name));
        return true;
      });
    } finally {
      await t.close();
      await deleteStream(name);
    }
  });

  it('reports permanent, without sending, for a topic that is not a publishable subject, naming it', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const prefix = uniquePrefix();
    const name = await stream([`${prefix}.>`]);
    const t = transport({ subjectPrefix: prefix });
    await t.start();
    try {
      const bad = ['has space', 'wild.*', 'tail.>', 'double..dot', 'trailing.', 'tab\tx'];
      const outcomes = await t.publish([
        ...bad.map((b) => testMessage({ topic: b })),
        testMessage({ topic }),
      ]);
      assert.deepEqual(statuses(outcomes), [...bad.map(() => 'permanent'), 'ok']);
      for (const [i, b] of bad.entries()) {
        const error = errorOf(outcomes[i]);
        assert.ok(isPermanentDeliveryError(error));
        assert.ok(error.message.includes(JSON.stringify(`${prefix}.${b}`)), error.message);
      }
      assert.equal((await storedMessages(name)).length, 1);
    } finally {
      await t.close();
    }
  });

  it("reports permanent, without sending, for a message over the server's max_payload, and ok for the rest", async () => {
    const [topic] = uniqueTopics(1) as [string];
    const name = await stream([`${PREFIX}.${topic}`]);
    const t2 = new NatsTransport({ url: NATS_URL, subjectPrefix: PREFIX });
    await t2.start();
    try {
      const a = await admin();
      const maxPayload = a.nc.info?.max_payload ?? 0;
      await a.close();
      assert.ok(maxPayload > 0);
      const big = testMessage({ topic, payload: Buffer.alloc(maxPayload) });
      const outcomes = await t2.publish([testMessage({ topic }), big, testMessage({ topic })]);
      assert.deepEqual(statuses(outcomes), ['ok', 'permanent', 'ok']);
      const error = errorOf(outcomes[1]);
      assert.ok(isPermanentDeliveryError(error));
      assert.match(error.message, new RegExp(`max_payload of ${maxPayload} bytes`));
      assert.ok(t2.connected, 'the connection survives: the message was never sent');
      assert.equal((await storedMessages(name)).length, 2);
    } finally {
      await t2.close();
    }
  });

  it("reports permanent for a message over the stream's max_msg_size, and retry while the stream is full (discard new)", async () => {
    const [small, full] = uniqueTopics(2) as [string, string];
    await stream([`${PREFIX}.${small}`], { max_msg_size: 100 });
    const fullName = await stream([`${PREFIX}.${full}`]);
    const a = await admin();
    try {
      await a.jsm.streams.update(fullName, {
        subjects: [`${PREFIX}.${full}`],
        max_msgs: 1,
        discard: 'new' as never,
      });
    } finally {
      await a.close();
    }
    const t = transport();
    await t.start();
    try {
      const tooBig = await t.publish([testMessage({ topic: small, payload: Buffer.alloc(200) })]);
      assert.deepEqual(statuses(tooBig), ['permanent']);
      assert.match(errorOf(tooBig[0]).message, /max_msg_size/);
      const outcomes = await t.publish([testMessage({ topic: full }), testMessage({ topic: full })]);
      assert.deepEqual(statuses(outcomes), ['ok', 'retry']);
      const error = errorOf(outcomes[1]);
      assert.ok(isTransportError(error));
      assert.match(error.message, /maximum messages exceeded/);
    } finally {
      await t.close();
    }
  });

  it('reports permanent for a header name NATS cannot carry or one the server reads itself', async () => {
    const [topic] = uniqueTopics(1) as [string];
    await stream([`${PREFIX}.${topic}`]);
    const t = transport();
    await t.start();
    try {
      const outcomes = await t.publish([
        testMessage({ topic, headers: { 'has space': 'x' } }),
        testMessage({ topic, headers: { 'a:b': 'x' } }),
        testMessage({ topic, headers: { 'nats-expected-stream': 'OTHER' } }),
        testMessage({ topic, headers: { 'x-ok': ' padded ' } }),
      ]);
      assert.deepEqual(statuses(outcomes), ['permanent', 'permanent', 'permanent', 'ok']);
      assert.match(errorOf(outcomes[0]).message, /header "has space"/);
      assert.match(errorOf(outcomes[2]).message, /header "nats-expected-stream".*Nats-/);
    } finally {
      await t.close();
    }
  });

  it('reports unavailable when nothing listens, with a probe and start that throw a TransportError saying so', async () => {
    const t = new NatsTransport({ url: 'nats://127.0.0.1:1', connectTimeoutMs: 2000 });
    try {
      await assert.rejects(t.start(), (err: Error) => {
        assert.ok(isTransportError(err));
        assert.equal(err.code, 'unreachable');
        assert.match(err.message, /cannot connect to the NATS server at nats:\/\/127\.0\.0\.1:1/);
        return true;
      });
      const outcomes = await t.publish([testMessage(), testMessage()]);
      assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
      await assert.rejects(t.probe(), (err: Error) => isTransportError(err) && err.code === 'unreachable');
    } finally {
      await t.close();
    }
  });

  it('fails with not_nats, leaving no connection open, against a port that accepts but sends no INFO', async () => {
    const open = new Set<Socket>();
    const silent = createServer((socket) => {
      open.add(socket);
      socket.on('close', () => open.delete(socket));
    });
    const chatty = createServer((socket) => socket.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
    await Promise.all([
      new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve)),
      new Promise<void>((resolve) => chatty.listen(0, '127.0.0.1', resolve)),
    ]);
    const portOf = (server: Server) => (server.address() as AddressInfo).port;
    const t = new NatsTransport({ url: `nats://127.0.0.1:${portOf(silent)}`, connectTimeoutMs: 300 });
    const http = new NatsTransport({ url: `nats://127.0.0.1:${portOf(chatty)}` });
    try {
      await assert.rejects(t.start(), (err: Error) => {
        assert.ok(isTransportError(err));
        assert.equal(err.code, 'not_nats');
        assert.match(err.message, /sent nothing within connectTimeoutMs \(300 ms\)/);
        return true;
      });
      assert.deepEqual(statuses(await t.publish([testMessage()])), ['unavailable']);
      await assert.rejects(t.probe(), (err: Error) => isTransportError(err) && err.code === 'not_nats');
      // Every connection the attempts opened is closed again (the NATS client alone would leak them).
      await waitUntil(() => open.size === 0, 'the silent server to see its connections closed', 5000);
      await assert.rejects(http.start(), (err: Error) => {
        assert.ok(isTransportError(err));
        assert.match(err.message, /answered "HTTP\/1\.1 400/);
        return true;
      });
    } finally {
      await t.close();
      await http.close();
      for (const socket of open) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
      await new Promise((resolve) => chatty.close(resolve));
    }
  });

  it('reports unavailable for a publish whose signal has already aborted', async () => {
    const t = transport();
    await t.start();
    try {
      const outcomes = await t.publish([testMessage()], { signal: AbortSignal.abort() });
      assert.deepEqual(statuses(outcomes), ['unavailable']);
      assert.ok(isTransportError(errorOf(outcomes[0])));
      await assert.rejects(t.probe({ signal: AbortSignal.abort() }), (err: Error) => {
        return isTransportError(err) && err.code === 'probe_aborted';
      });
    } finally {
      await t.close();
    }
  });

  it('refuses bad URLs and options with a ConfigError naming the value, never the password or token', () => {
    const cases: Array<[NatsTransportOptions, RegExp]> = [
      [{ url: 'not a url' }, /url "not a url" is not a valid URL/],
      [{ url: 'http://127.0.0.1:4222' }, /scheme "http"; use nats:\/\//],
      [{ url: 'nats://127.0.0.1:4222/x' }, /has a path/],
      [{ url: 'nats://127.0.0.1:4222?prefix=a' }, /query.*natsOptionsFromUrl/],
      [{ url: 'nats://relay:s3cret@127.0.0.1:4222/x' }, /relay:\*\*\*@/],
      [{ url: 'nats://t0ken@127.0.0.1:4222/x' }, /\*\*\*@/],
      [{ url: NATS_URL, subjectPrefix: 'has space' }, /subjectPrefix/],
      [{ url: NATS_URL, subjectPrefix: 'wild.*' }, /subjectPrefix/],
      [{ url: NATS_URL, subjectPrefix: 'trailing.' }, /subjectPrefix/],
      [{ url: NATS_URL, ensureStream: { name: 'bad name', subjects: ['a.>'] } }, /ensureStream/],
      [{ url: NATS_URL, ensureStream: { name: 'OK', subjects: [] } }, /ensureStream/],
      [{ url: NATS_URL, ackTimeoutMs: 0 }, /ackTimeoutMs/],
      [{ url: NATS_URL, tls: { caFle: 'x' } as never }, /tls.*caFile/],
      [
        { url: NATS_URL, subjectprefix: 'x' } as unknown as NatsTransportOptions,
        /did you mean subjectPrefix/,
      ],
    ];
    for (const [options, pattern] of cases) {
      assert.throws(
        () => new NatsTransport(options),
        (err: Error) => {
          assert.ok(isConfigError(err), `${JSON.stringify(options)}: ${err.name}`);
          assert.match(err.message, pattern);
          assert.doesNotMatch(err.message, /s3cret|t0ken/);
          return true;
        },
      );
    }
  });

  it('publishes through a transport made from a command-line URL, as the CLI makes it', async () => {
    const [topic] = uniqueTopics(1) as [string];
    const prefix = uniquePrefix();
    const name = uniqueStreamName();
    streams.push(name);
    const t = new NatsTransport(natsOptionsFromUrl(`${NATS_URL}?prefix=${prefix}&stream=${name}`));
    await t.start();
    try {
      assert.deepEqual(statuses(await t.publish([testMessage({ topic })])), ['ok']);
      const [stored] = await storedMessages(name);
      assert.equal(stored?.subject, `${prefix}.${topic}`);
    } finally {
      await t.close();
    }
  });

  it('reads prefix, stream and subjects from a command-line URL', () => {
    assert.deepEqual(natsOptionsFromUrl('nats://127.0.0.1:4222'), { url: 'nats://127.0.0.1:4222' });
    assert.deepEqual(natsOptionsFromUrl('nats://u:p@h:4222?prefix=events&stream=EVENTS'), {
      url: 'nats://u:p@h:4222',
      subjectPrefix: 'events',
      ensureStream: { name: 'EVENTS', subjects: ['events.>'] },
    });
    assert.deepEqual(natsOptionsFromUrl('nats://h?stream=ALL&subjects=a.>,b.*'), {
      url: 'nats://h',
      ensureStream: { name: 'ALL', subjects: ['a.>', 'b.*'] },
    });
    assert.throws(() => natsOptionsFromUrl('nats://h?prefx=a'), /unknown query parameter "prefx"/);
    assert.throws(() => natsOptionsFromUrl('nats://h?subjects=a.>'), /subjects= without stream=/);
  });
});
