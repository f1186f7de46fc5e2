import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { isConfigError } from '../../src/core/errors/config-error.js';
import {
  isPermanentDeliveryError,
  PermanentDeliveryError,
} from '../../src/core/errors/permanent-delivery-error.js';
import { isTransportError } from '../../src/core/errors/transport-error.js';
import type { PublishOutcome, Transport } from '../../src/core/ports.js';
import {
  runTransportConformance,
  testMessage,
  type ConformanceConsumer,
  type ReceivedMessage,
} from '../../src/testkit/transport-conformance.js';
import { MemoryTransport } from '../../src/transports/memory/index.js';

/** Reads back what the memory transport recorded on the given topics. */
async function memoryConsumer(transport: Transport, topics: readonly string[]): Promise<ConformanceConsumer> {
  const memory = transport as MemoryTransport;
  const wanted = new Set(topics);
  const skip = memory.messages.length;
  return {
    async take(count, timeoutMs) {
      // Each conformance test has its own transport, so every message after `skip` is its own.
      const all = await memory.waitFor(skip + count, timeoutMs);
      return all
        .slice(skip)
        .filter((m) => wanted.has(m.topic))
        .slice(0, count)
        .map((m): ReceivedMessage => ({
          id: m.id,
          topic: m.topic,
          key: m.key,
          headers: m.headers,
          payload: m.payload,
          type: m.type,
          contentType: m.contentType,
        }));
    },
    async close() {},
  };
}

runTransportConformance('memory', {
  // The refused message of the per-message failure check: the "broker" refuses it for good.
  create: async () =>
    new MemoryTransport({ failWith: (m) => (m.headers['x-refuse'] === 'yes' ? 'permanent' : undefined) }),
  consume: memoryConsumer,
  createUnreachable: async () => new MemoryTransport({ unavailable: true }),
  refusedMessage: (topic) => testMessage({ topic, headers: { 'x-refuse': 'yes' } }),
  // No proxy (nothing goes over TCP), no payload limit, no dedupe: those checks are skipped.
});

function statuses(outcomes: PublishOutcome[]): string[] {
  return outcomes.map((o) => o.status);
}

describe('memory transport', () => {
  it('fails messages as failWith decides and records only the delivered ones', async () => {
    const plain = new Error('broker on fire');
    const dead = new PermanentDeliveryError('no such route');
    const transport = new MemoryTransport({
      failWith: (m) => {
        if (m.topic === 'retry') return 'retry';
        if (m.topic === 'permanent') return 'permanent';
        if (m.topic === 'plain-error') return plain;
        if (m.topic === 'permanent-error') return dead;
        return undefined;
      },
    });
    const batch = ['ok', 'retry', 'permanent', 'plain-error', 'permanent-error', 'ok'].map((topic) =>
      testMessage({ topic }),
    );
    const outcomes = await transport.publish(batch);

    assert.deepEqual(statuses(outcomes), ['ok', 'retry', 'permanent', 'retry', 'permanent', 'ok']);
    assert.ok(outcomes[1]?.status === 'retry' && isTransportError(outcomes[1].error));
    assert.ok(outcomes[2]?.status === 'permanent' && isPermanentDeliveryError(outcomes[2].error));
    assert.ok(outcomes[3]?.status === 'retry' && outcomes[3].error === plain);
    assert.ok(outcomes[4]?.status === 'permanent' && outcomes[4].error === dead);
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      [batch[0]?.id, batch[5]?.id],
    );
    assert.equal(transport.messagesFor('ok').length, 2);
    assert.equal(transport.messagesFor('retry').length, 0);
  });

  it('lets failures be switched on and off between batches', async () => {
    const transport = new MemoryTransport();
    transport.failWith = () => 'retry';
    assert.deepEqual(statuses(await transport.publish([testMessage()])), ['retry']);
    transport.failWith = undefined;
    assert.deepEqual(statuses(await transport.publish([testMessage()])), ['ok']);
    assert.equal(transport.messages.length, 1);
  });

  it('treats a throwing failWith as a retry instead of throwing from publish', async () => {
    const transport = new MemoryTransport({
      failWith: () => {
        throw new Error('bug in the test double');
      },
    });
    const [outcome] = await transport.publish([testMessage()]);
    assert.ok(outcome?.status === 'retry');
    assert.equal(outcome.error.message, 'bug in the test double');
  });

  it('records a message whose confirm was lost and reports retry, so a republish duplicates it with the same id', async () => {
    const transport = new MemoryTransport({ loseConfirm: true });
    const message = testMessage({ topic: 'orders' });
    const [first] = await transport.publish([message]);
    assert.ok(first?.status === 'retry');
    assert.ok(isTransportError(first.error) && first.error.code === 'confirm_lost');

    transport.loseConfirm = false;
    const [second] = await transport.publish([{ ...message, attempts: 2 }]);
    assert.equal(second?.status, 'ok');
    assert.deepEqual(
      transport.messagesFor('orders').map((m) => [m.id, m.attempts]),
      [
        [message.id, 1],
        [message.id, 2],
      ],
    );
  });

  it('loses confirms only for the messages the loseConfirm function picks', async () => {
    const transport = new MemoryTransport({ loseConfirm: (m) => m.key === 'unlucky' });
    const outcomes = await transport.publish([
      testMessage({ key: 'lucky' }),
      testMessage({ key: 'unlucky' }),
    ]);
    assert.deepEqual(statuses(outcomes), ['ok', 'retry']);
    assert.equal(transport.messages.length, 2);
  });

  it('holds a batch in flight for latencyMs, and close waits for it', async () => {
    const transport = new MemoryTransport({ latencyMs: 30 });
    const publishing = transport.publish([testMessage(), testMessage()]);
    assert.equal(transport.messages.length, 0, 'recorded before the latency passed');
    await transport.close();
    assert.equal(transport.messages.length, 2, 'close returned before the batch in flight finished');
    assert.deepEqual(statuses(await publishing), ['ok', 'ok']);
  });

  it('cuts a batch in flight short at the close deadline and reports it as unavailable, not recorded', async () => {
    const transport = new MemoryTransport({ latencyMs: 60_000, closeTimeoutMs: 10 });
    const publishing = transport.publish([testMessage(), testMessage()]);
    await transport.close();
    const outcomes = await publishing;
    assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
    assert.ok(outcomes[0]?.status === 'unavailable' && isTransportError(outcomes[0].error));
    assert.equal(outcomes[0].error.code, 'confirm_lost');
    assert.equal(transport.messages.length, 0);
  });

  it('resolves waitFor once enough messages arrived, and rejects with the count on timeout', async () => {
    const transport = new MemoryTransport();
    const waiting = transport.waitFor(3, 5000);
    await transport.publish([testMessage(), testMessage()]);
    await transport.publish([testMessage()]);
    assert.equal((await waiting).length, 3);

    await assert.rejects(transport.waitFor(10, 20), /expected 10 messages within 20 ms, got 3/);
  });

  it('keeps what it recorded when the caller changes its message objects afterwards', async () => {
    const transport = new MemoryTransport();
    const message = testMessage({ payload: Buffer.from('abc'), headers: { a: '1' } });
    await transport.publish([message]);
    message.payload[0] = 0x7a;
    message.headers['a'] = '2';
    assert.equal(transport.messages[0]?.payload.toString(), 'abc');
    assert.equal(transport.messages[0]?.headers['a'], '1');
  });

  it('reports unavailable for every message during an injected outage, and its probe fails until it ends', async () => {
    const transport = new MemoryTransport({ unavailable: true });
    const outcomes = await transport.publish([testMessage(), testMessage()]);
    assert.deepEqual(statuses(outcomes), ['unavailable', 'unavailable']);
    assert.ok(outcomes[0]?.status === 'unavailable' && isTransportError(outcomes[0].error));
    assert.equal(outcomes[0].error.code, 'unreachable');
    await assert.rejects(
      transport.probe(),
      (err: unknown) => isTransportError(err) && err.code === 'unreachable',
    );
    assert.equal(transport.messages.length, 0);
    transport.unavailable = false;
    await transport.probe();
    assert.deepEqual(statuses(await transport.publish([testMessage()])), ['ok']);
    assert.equal(transport.probeCalls, 2);
  });

  it('holds publishes and probes while hung until their signal aborts, then reports unavailable', async () => {
    const transport = new MemoryTransport({ hang: true });
    const abort = new AbortController();
    const publishing = transport.publish([testMessage()], { signal: abort.signal });
    const probing = transport.probe({ signal: abort.signal });
    let settled = false;
    void publishing.then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(settled, false, 'a hung broker does not answer');
    abort.abort();
    const outcomes = await publishing;
    assert.deepEqual(statuses(outcomes), ['unavailable']);
    assert.ok(outcomes[0]?.status === 'unavailable' && isTransportError(outcomes[0].error));
    assert.equal(outcomes[0].error.code, 'publish_timeout');
    await assert.rejects(probing, (err: unknown) => isTransportError(err) && err.code === 'publish_timeout');
    assert.equal(transport.messages.length, 0, 'nothing recorded');
  });

  it('fails one message as unavailable when failWith says so', async () => {
    const transport = new MemoryTransport({
      failWith: (m) => (m.key === 'down' ? 'unavailable' : undefined),
    });
    const outcomes = await transport.publish([testMessage({ key: 'down' }), testMessage({ key: 'up' })]);
    assert.deepEqual(statuses(outcomes), ['unavailable', 'ok']);
  });

  it('rejects unknown options and a negative latency with ConfigError', () => {
    assert.throws(
      () => new MemoryTransport({ failwith: () => undefined } as never),
      (err: unknown) =>
        isConfigError(err) &&
        err.key === 'failwith' &&
        /failWith, loseConfirm, latencyMs, closeTimeoutMs, unavailable, hang/.test(err.message),
    );
    assert.throws(
      () => new MemoryTransport({ latencyMs: -1 }),
      (err: unknown) => isConfigError(err) && err.key === 'latencyMs',
    );
  });
});
