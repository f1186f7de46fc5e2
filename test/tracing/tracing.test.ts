// Trace context through the outbox with an SDK registered (in-memory exporter, AsyncLocalStorage,
// W3C propagator): what enqueue captures, the publish spans of tracedTransport (also through a
// relay that retries, and in broker transactions) and the process spans of consumers and the
// inbox. PostgreSQL for the outbox and inbox, the memory transport as the broker.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import { context, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { TraceState } from '@opentelemetry/core';

import { handlerRunner } from '../../src/consumer/consumer-core.js';
import { Outbox, Relay, toReceivedMessage, type OutboxMessage } from '../../src/core/index.js';
import { Inbox } from '../../src/inbox/inbox.js';
import { testMessage } from '../../src/testkit/conformance-support.js';
import { isTracedTransport, tracedTransport } from '../../src/tracing/index.js';
import { MemoryTransport } from '../../src/transports/memory/index.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';
import { registerTestSdk, traceparentOf, type TestSdk } from './otel-sdk.js';

const tracer = trace.getTracer('mailroom-test');
let sdk: TestSdk;
let db: TestDb;

before(async () => {
  sdk = registerTestSdk();
  db = await createTestDb('mrtrace');
});

after(async () => {
  await db.drop();
  await sdk.shutdown();
});

afterEach(() => sdk.exporter.reset());

async function storedHeaders(id: string): Promise<Record<string, string>> {
  const res = await db.pool.query(`SELECT headers FROM "${db.schema}".outbox WHERE id = $1`, [id]);
  assert.equal(res.rows.length, 1, `message ${id} in the outbox`);
  return res.rows[0].headers as Record<string, string>;
}

async function clearOutbox(): Promise<void> {
  await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
}

describe('enqueue', () => {
  it('captures the active span as traceparent, with its tracestate', async () => {
    const outbox = new Outbox({ store: db.store });
    // A remote parent with vendor state, as an incoming request would bring.
    const remote = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      traceFlags: 1,
      traceState: new TraceState('vendor=abc'),
      isRemote: true,
    });
    const { id, span } = await context.with(remote, () =>
      tracer.startActiveSpan('create order', async (span) => {
        const id = await inTransaction(db.pool, (c) =>
          outbox.enqueue(c, { topic: 'order.created', payload: {} }),
        );
        span.end();
        return { id, span };
      }),
    );
    const headers = await storedHeaders(id);
    assert.equal(headers['traceparent'], traceparentOf(span));
    assert.equal(headers['tracestate'], 'vendor=abc');
    await clearOutbox();
  });

  it('adds no trace headers when no span is active', async () => {
    const outbox = new Outbox({ store: db.store });
    const id = await inTransaction(db.pool, (c) =>
      outbox.enqueue(c, { topic: 'order.created', payload: {}, headers: { a: '1' } }),
    );
    assert.deepEqual(await storedHeaders(id), { a: '1' });
    await clearOutbox();
  });

  it("keeps a traceparent the caller set, in any case, and the caller's other headers", async () => {
    const outbox = new Outbox({ store: db.store });
    const own = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const ids = await tracer.startActiveSpan('create order', async (span) => {
      const ids = await inTransaction(db.pool, (c) =>
        outbox.enqueue(c, [
          { topic: 'order.created', payload: {}, headers: { traceparent: own, tracestate: 'mine=1' } },
          { topic: 'order.created', payload: {}, headers: { Traceparent: own } },
          { topic: 'order.created', payload: {}, headers: { x: 'y' } },
        ]),
      );
      span.end();
      return ids;
    });
    assert.deepEqual(await storedHeaders(ids[0] as string), { traceparent: own, tracestate: 'mine=1' });
    assert.deepEqual(await storedHeaders(ids[1] as string), { Traceparent: own });
    const third = await storedHeaders(ids[2] as string);
    assert.equal(third['x'], 'y');
    assert.match(third['traceparent'] ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    await clearOutbox();
  });

  it('captures nothing with traceContext: false', async () => {
    const outbox = new Outbox({ store: db.store, traceContext: false });
    const id = await tracer.startActiveSpan('create order', async (span) => {
      const id = await inTransaction(db.pool, (c) =>
        outbox.enqueue(c, { topic: 'order.created', payload: {} }),
      );
      span.end();
      return id;
    });
    assert.deepEqual(await storedHeaders(id), {});
    await clearOutbox();
  });

  it('refuses a traceContext that is not a boolean, naming it', () => {
    assert.throws(
      () => new Outbox({ store: db.store, traceContext: 'yes' as unknown as boolean }),
      (err: Error) => err.name === 'ConfigError' && /traceContext/.test(err.message),
    );
  });
});

describe('tracedTransport', () => {
  /** A message as the producer's span would have left it in the outbox. */
  function fromProducer(overrides: Partial<OutboxMessage> = {}) {
    const producer = tracer.startSpan('producer');
    producer.end();
    const message = testMessage({
      topic: 'order.created',
      headers: { traceparent: traceparentOf(producer), other: 'kept' },
      attempts: 2,
      ...overrides,
    });
    return { producer, message };
  }

  it('keeps the transport as it is: name, ordering, transactions, instanceof, its own methods', async () => {
    const memory = new MemoryTransport();
    const traced = tracedTransport(memory);
    assert.notEqual(traced, memory);
    assert.ok(isTracedTransport(traced));
    assert.equal(tracedTransport(traced), traced, 'wrapping twice gives the same wrapper');
    assert.equal(traced.name, 'memory');
    assert.equal(traced.ordering, true);
    assert.equal(traced.transactions, true);
    assert.ok(traced instanceof MemoryTransport);
    await traced.start();
    await traced.probe();
    assert.equal(traced.probeCalls, 1, 'probe reached the memory transport');
    assert.equal(typeof traced.messagesFor, 'function');
    await traced.close();
  });

  it('publishes each message in a PRODUCER span, child of and linked to the producer, and hands its context on', async () => {
    const memory = new MemoryTransport();
    const traced = tracedTransport(memory);
    const { producer, message } = fromProducer();
    const second = fromProducer({ topic: 'stock.reserved', key: 'k' });
    const original = structuredClone(message.headers);
    const outcomes = await traced.publish([message, second.message]);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['ok', 'ok'],
    );
    assert.deepEqual(message.headers, original, "the relay's message is not changed");

    const span = sdk.span('publish order.created');
    assert.equal(span.kind, SpanKind.PRODUCER);
    assert.equal(span.spanContext().traceId, producer.spanContext().traceId);
    assert.equal(span.parentSpanContext?.spanId, producer.spanContext().spanId);
    assert.deepEqual(
      span.links.map((l) => l.context.spanId),
      [producer.spanContext().spanId],
    );
    assert.equal(span.status.code, SpanStatusCode.UNSET);
    assert.deepEqual(span.attributes, {
      'messaging.system': 'memory',
      'messaging.operation.type': 'send',
      'messaging.operation.name': 'publish',
      'messaging.destination.name': 'order.created',
      'messaging.message.id': message.id,
      'messaging.message.body.size': message.payload.length,
      'mailroom.attempt': 2,
      'mailroom.publish.outcome': 'ok',
    });
    assert.equal(span.instrumentationScope.name, 'mailroom');

    const delivered = memory.messages;
    assert.deepEqual(
      delivered.map((m) => m.id),
      [message.id, second.message.id],
      'same ids, same order',
    );
    assert.equal(
      delivered[0]?.headers['traceparent'],
      traceparentOf(span),
      'the broker gets the publish span',
    );
    assert.equal(delivered[0]?.headers['other'], 'kept');
    assert.equal(
      sdk.span('publish stock.reserved').parentSpanContext?.spanId,
      second.producer.spanContext().spanId,
    );
  });

  it('ends the span of a failed message with an error status, its outcome and error type', async () => {
    const memory = new MemoryTransport({ failWith: (m) => (m.topic === 'bad' ? 'permanent' : 'retry') });
    const traced = tracedTransport(memory);
    await traced.publish([fromProducer({ topic: 'bad' }).message, fromProducer({ topic: 'later' }).message]);
    for (const [name, outcome] of [
      ['publish bad', 'permanent'],
      ['publish later', 'retry'],
    ] as const) {
      const span = sdk.span(name);
      assert.equal(span.status.code, SpanStatusCode.ERROR, name);
      assert.equal(span.attributes['mailroom.publish.outcome'], outcome);
      assert.equal(typeof span.attributes['error.type'], 'string');
      assert.equal(span.events[0]?.name, 'exception');
    }
  });

  it('starts a root span linked to the producer with relation: link', async () => {
    const traced = tracedTransport(new MemoryTransport(), { relation: 'link' });
    const { producer, message } = fromProducer();
    await traced.publish([message]);
    const span = sdk.span('publish order.created');
    assert.notEqual(span.spanContext().traceId, producer.spanContext().traceId);
    assert.equal(span.parentSpanContext, undefined);
    assert.equal(span.links[0]?.context.spanId, producer.spanContext().spanId);
  });

  it('traces the messages of a broker transaction, ended when it commits or rolls back', async () => {
    const memory = new MemoryTransport();
    const traced = tracedTransport(memory);
    await traced.transaction(async (tx) => {
      await tx.publish([fromProducer({ topic: 'a' }).message, { topic: 'b', payload: { n: 1 } }]);
    });
    assert.equal(sdk.span('publish a').attributes['mailroom.transaction'], true);
    assert.equal(sdk.span('publish b').status.code, SpanStatusCode.UNSET);
    assert.equal(memory.messages.length, 2);
    assert.equal(memory.messages[0]?.headers['traceparent'], traceparentOf(sdk.span('publish a')));

    const tx = await traced.begin();
    await tx.publish([fromProducer({ topic: 'c' }).message]);
    assert.equal(sdk.spans('publish c').length, 0, 'open until the transaction ends');
    await tx.rollback();
    assert.equal(sdk.span('publish c').status.code, SpanStatusCode.ERROR);
    assert.equal(memory.messages.length, 2);
  });

  it('makes a second publish span, a sibling under the producer, when the relay retries', async () => {
    let calls = 0;
    const memory = new MemoryTransport({ failWith: () => (calls++ === 0 ? 'retry' : undefined) });
    const relay = new Relay({
      store: db.store,
      transport: tracedTransport(memory),
      pollIntervalMs: 20,
      retry: { baseDelayMs: 10, maxDelayMs: 20 },
    });
    const outbox = new Outbox({ store: db.store });
    const producer = tracer.startSpan('producer');
    await context.with(trace.setSpan(context.active(), producer), () =>
      inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 'order.retried', payload: {} })),
    );
    producer.end();
    await relay.start();
    try {
      await memory.waitFor(1, 15_000);
    } finally {
      await relay.stop();
    }
    const spans = sdk.spans('publish order.retried');
    assert.equal(spans.length, 2);
    assert.deepEqual(
      spans.map((s) => s.attributes['mailroom.publish.outcome']),
      ['retry', 'ok'],
    );
    assert.deepEqual(
      spans.map((s) => s.attributes['mailroom.attempt']),
      [1, 2],
    );
    for (const s of spans) assert.equal(s.parentSpanContext?.spanId, producer.spanContext().spanId);
    assert.equal(memory.messages[0]?.headers['traceparent'], traceparentOf(spans[1] as never));
  });
});

describe('process spans', () => {
  it('runs an inbox handler in a CONSUMER span, child of the publish span, its own spans nested', async () => {
    const memory = new MemoryTransport();
    await tracedTransport(memory).publish([testMessage({ topic: 'order.created' })]);
    const publish = sdk.span('publish order.created');
    const received = toReceivedMessage(memory.messages[0] as OutboxMessage);
    const inbox = new Inbox({ store: db.store, consumer: 'billing' });
    const first = await inbox.handle(received, async () => {
      tracer.startSpan('charge card').end();
      return 'done';
    });
    assert.deepEqual(first, { status: 'processed', value: 'done' });
    const process = sdk.span('process order.created');
    assert.equal(process.kind, SpanKind.CONSUMER);
    assert.equal(process.spanContext().traceId, publish.spanContext().traceId);
    assert.equal(process.parentSpanContext?.spanId, publish.spanContext().spanId);
    assert.equal(process.links[0]?.context.spanId, publish.spanContext().spanId);
    assert.equal(process.attributes['messaging.operation.type'], 'process');
    assert.equal(process.attributes['messaging.consumer.group.name'], 'billing');
    assert.equal(process.attributes['messaging.message.id'], received.id);
    assert.equal(process.attributes['mailroom.inbox.status'], 'processed');
    assert.equal(sdk.span('charge card').parentSpanContext?.spanId, process.spanContext().spanId);

    sdk.exporter.reset();
    assert.deepEqual(await inbox.handle(received, async () => 'again'), { status: 'duplicate' });
    assert.equal(sdk.span('process order.created').attributes['mailroom.inbox.status'], 'duplicate');
  });

  it("records a handler's error on the span and rethrows it", async () => {
    const inbox = new Inbox({ store: db.store, consumer: 'billing' });
    const received = toReceivedMessage(testMessage({ topic: 'order.failed' }));
    await assert.rejects(
      inbox.handle(received, async () => {
        throw new Error('card declined');
      }),
      /card declined/,
    );
    const span = sdk.span('process order.failed');
    assert.equal(span.status.code, SpanStatusCode.ERROR);
    assert.equal(span.status.message, 'card declined');
    assert.equal(span.attributes['error.type'], 'Error');
  });

  it("gives a consumer's run one span, also when it goes through the inbox", async () => {
    const inbox = new Inbox({ store: db.store, consumer: 'shipping' });
    let inside: string | undefined;
    const runner = handlerRunner<unknown>(
      {
        inbox,
        handler: async () => {
          inside = trace.getActiveSpan()?.spanContext().spanId;
        },
      },
      () => new Error('no inbox'),
      'rabbitmq',
    );
    const received = toReceivedMessage(testMessage({ topic: 'order.shipped' }));
    assert.equal(await runner.run(received), 'processed');
    const span = sdk.span('process order.shipped');
    assert.equal(span.attributes['messaging.system'], 'rabbitmq');
    assert.equal(span.attributes['messaging.consumer.group.name'], 'shipping');
    assert.equal(inside, span.spanContext().spanId, 'the handler runs inside the span');
  });
});
