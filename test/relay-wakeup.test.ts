import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Outbox, Relay, systemClock, type Clock, type Transport } from '../src/core/index.js';
import { PGliteStore } from '../src/stores/pglite/index.js';
import { MemoryTransport } from '../src/transports/memory/index.js';

describe('relay wake-ups (PGlite, no server needed)', () => {
  it('sleeps only until a delayed message is due, not until the next poll', async () => {
    const store = await PGliteStore.connect({});
    await store.migrate();
    // Real time, with every sleep the relay asks for written down.
    const sleeps: number[] = [];
    const clock: Clock = {
      now: () => systemClock.now(),
      sleep: (ms, signal) => {
        sleeps.push(ms);
        return systemClock.sleep(ms, signal);
      },
      every: (ms, fn) => systemClock.every(ms, fn),
    };
    // The database's clock when each message was handed to the transport, in microseconds.
    const memory = new MemoryTransport();
    const publishedAt = new Map<string, bigint>();
    const transport: Transport = {
      name: memory.name,
      start: () => memory.start(),
      probe: (options) => memory.probe(options),
      close: () => memory.close(),
      async publish(messages, options) {
        const res = await store.db.query(
          'SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text AS now',
        );
        for (const m of messages) publishedAt.set(m.id, BigInt(String(res.rows[0]?.now)));
        return memory.publish(messages, options);
      },
    };
    // An hour: within this test the message can only be found by waking when it is due.
    const pollIntervalMs = 3_600_000;
    const delayMs = 400;
    const relay = new Relay({ store, transport, pollIntervalMs, clock });
    const events: string[] = [];
    relay.on('relay:wakeup', (e) => events.push(`wakeup:${e.source}`));
    relay.on('relay:batch:claimed', () => events.push('claimed'));
    await relay.start();
    try {
      const outbox = new Outbox({ store });
      // When it is due, read in the enqueueing transaction: the row is gone once delivered.
      const { id, availableAt } = await store.db.transaction(async (tx) => {
        const enqueued = await outbox.enqueue(tx, { topic: 'later', payload: 1, delayMs });
        const res = await tx.query(
          `SELECT (extract(epoch FROM available_at) * 1000000)::bigint::text AS at
             FROM "${store.schema}".outbox WHERE id = $1`,
          [enqueued],
        );
        return { id: enqueued, availableAt: BigInt(String(res.rows[0]?.at)) };
      });
      await memory.waitFor(1, 30_000);
      const at = publishedAt.get(id);
      assert.ok(at !== undefined && at >= availableAt, `published at ${at} µs, due at ${availableAt} µs`);
      const claimed = events.indexOf('claimed');
      assert.ok(
        events.slice(0, claimed).includes('wakeup:due'),
        `woken because it was due, before the claim (${events.join(', ')})`,
      );
      assert.ok(
        sleeps.some((ms) => ms > 0 && ms <= delayMs),
        `asked to sleep no longer than the delay, once (${sleeps.join(', ')})`,
      );
    } finally {
      await relay.stop();
      await store.close();
    }
  });
});
