// Mailroom without tracing set up: @opentelemetry/api installed but no SDK registered (the global
// no-op provider and propagator), and as if the package were not installed at all. Nothing here
// registers anything with the OpenTelemetry API.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, describe, it } from 'node:test';

import { trace } from '@opentelemetry/api';

import { Outbox, toReceivedMessage } from '../../src/core/index.js';
import { Inbox } from '../../src/inbox/inbox.js';
import { testMessage } from '../../src/testkit/conformance-support.js';
import { loadOtelApi, otelApi, setOtelApiForTests } from '../../src/tracing/otel-api.js';
import { activeTraceHeaders, tracedTransport, withProcessSpan } from '../../src/tracing/index.js';
import { MemoryTransport } from '../../src/transports/memory/index.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';

let db: TestDb;

before(async () => {
  db = await createTestDb('mrtrnosdk');
});

after(async () => {
  await db.drop();
});

async function storedHeaders(id: string): Promise<Record<string, string>> {
  const res = await db.pool.query(`SELECT headers FROM "${db.schema}".outbox WHERE id = $1`, [id]);
  return res.rows[0].headers as Record<string, string>;
}

/** Enqueue, publish through the traced transport, handle in the inbox: the whole path. */
async function roundTrip(headers: Record<string, string>) {
  const outbox = new Outbox({ store: db.store });
  const id = await inTransaction(db.pool, (c) =>
    outbox.enqueue(c, { topic: 'order.created', payload: {}, headers }),
  );
  const stored = await storedHeaders(id);
  const memory = new MemoryTransport();
  const transport = tracedTransport(memory);
  const outcomes = await transport.publish([testMessage({ id, topic: 'order.created', headers: stored })]);
  const received = toReceivedMessage(memory.messages[0] as never);
  const inbox = new Inbox({ store: db.store, consumer: `nosdk-${id}` });
  const result = await inbox.handle(received, async () => 'done');
  return { stored, transport, memory, outcomes, received, result };
}

describe('with @opentelemetry/api but no SDK registered', () => {
  it('loads the API and finds no span to capture', () => {
    assert.ok(otelApi(), 'the package is installed in this repository');
    // A tracer of the no-op provider: its spans have no valid context.
    trace.getTracer('x').startActiveSpan('nothing', (span) => {
      assert.equal(activeTraceHeaders(), undefined);
      span.end();
    });
  });

  it('enqueues, publishes and handles as without tracing, headers unchanged', async () => {
    const { stored, outcomes, received, result, memory } = await roundTrip({ a: '1' });
    assert.deepEqual(stored, { a: '1' });
    assert.deepEqual(outcomes, [{ status: 'ok' }]);
    assert.deepEqual(memory.messages[0]?.headers, { a: '1' });
    assert.deepEqual(received.headers, { a: '1' });
    assert.deepEqual(result, { status: 'processed', value: 'done' });
  });

  it('passes a traceparent the sender set through untouched (no propagator to rewrite it)', async () => {
    const own = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const { memory, received } = await roundTrip({ traceparent: own });
    assert.equal(memory.messages[0]?.headers['traceparent'], own);
    assert.equal(received.headers['traceparent'], own);
  });
});

describe('as if @opentelemetry/api were not installed', () => {
  before(() => setOtelApiForTests(null));
  after(() => setOtelApiForTests(undefined));

  it('does without it when require cannot find it, or finds something else', () => {
    const missing = Object.assign(new Error("Cannot find package '@opentelemetry/api'"), {
      code: 'MODULE_NOT_FOUND',
    });
    assert.equal(
      loadOtelApi(() => {
        throw missing;
      }),
      null,
    );
    assert.equal(
      loadOtelApi(() => ({ trace: {} })),
      null,
    );
    assert.ok(loadOtelApi(createRequire(import.meta.url)), 'the real package loads');
  });

  it('returns the transport itself and runs handlers without spans', async () => {
    const memory = new MemoryTransport();
    assert.equal(tracedTransport(memory), memory);
    assert.equal(await withProcessSpan(toReceivedMessage(testMessage()), {}, async () => 42), 42);
    assert.equal(activeTraceHeaders(), undefined);
  });

  it('enqueues, publishes and handles, headers as given', async () => {
    const { stored, outcomes, result } = await roundTrip({ b: '2' });
    assert.deepEqual(stored, { b: '2' });
    assert.deepEqual(outcomes, [{ status: 'ok' }]);
    assert.equal(result.status, 'processed');
  });
});
