// The poll backs off while claims find nothing (idlePollMaxMs), for stores polling is the only
// trigger of (MySQL, SQLite): an idle relay claims rarely, a busy one often, and a wake-up or a
// claim that finds work brings the full rate back. On the real PostgreSQL in `poll` mode.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';

import { Outbox, resolveRelayOptions } from '../src/core/index.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import { inTransaction } from './helpers/postgres.js';
import { relayTestBed } from './helpers/relay-bed.js';
import { wrapStore } from './helpers/store-wrapper.js';
import { waitUntil } from './helpers/wait.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('idle poll backoff', () => {
  const bed = relayTestBed('mridle', { wakeup: 'poll' });
  afterEach(() => bed.clean());

  /** The store, recording when each claim ran. */
  function timedStore() {
    const claims: number[] = [];
    const store = wrapStore(bed.db.store, {
      claim: (request) => {
        claims.push(performance.now());
        return bed.db.store.claim(request);
      },
    });
    const gaps = (from = 0) => claims.slice(from + 1).map((t, i) => t - (claims[from + i] as number));
    return { store, claims, gaps };
  }

  it('doubles the wait after each empty claim up to idlePollMaxMs, and polls at the full rate again once a claim finds work', async () => {
    const { store, claims, gaps } = timedStore();
    const transport = new MemoryTransport();
    await bed.start({ store, transport, pollIntervalMs: 20, idlePollMaxMs: 160 });
    await sleep(1200);
    const idle = gaps();
    // 20, 40, 80, 160, 160…: about ten claims in 1.2 s, where a fixed 20 ms poll makes sixty.
    assert.ok(
      claims.length <= 16,
      `${claims.length} claims while idle for 1.2 s: ${idle.map(Math.round).join(', ')}`,
    );
    assert.ok(Math.max(...idle) >= 140, `the wait never grew: ${idle.map(Math.round).join(', ')}`);
    assert.ok(Math.max(...idle) <= 400, `a wait went past idlePollMaxMs: ${idle.map(Math.round).join(', ')}`);

    const outbox = new Outbox({ store: bed.db.store });
    const before = claims.length;
    await inTransaction(bed.db.pool, (c) => outbox.enqueue(c, { topic: 'backoff', payload: 1 }));
    await waitUntil(() => transport.messagesFor('backoff').length === 1, 'the message, found by the poll');
    const found = claims.length;
    await sleep(150);
    // Right after the claim that found work: 20 ms, 20 ms (an empty claim), 40 ms…
    assert.ok(
      claims.length - found >= 3,
      `polls after work was found: ${gaps(before).map(Math.round).join(', ')}`,
    );
  });

  it('comes back to the full rate at relay.wake(), which claims at once', async () => {
    const { store, claims } = timedStore();
    const transport = new MemoryTransport();
    const relay = await bed.start({ store, transport, pollIntervalMs: 20, idlePollMaxMs: 5000 });
    await sleep(600); // backed off to waits of seconds
    const outbox = new Outbox({ store: bed.db.store });
    await inTransaction(bed.db.pool, (c) => outbox.enqueue(c, { topic: 'woken', payload: 1 }));
    const woken = performance.now();
    relay.wake();
    await waitUntil(() => transport.messagesFor('woken').length === 1, 'the woken claim');
    assert.ok(performance.now() - woken < 1000, 'relay.wake() did not claim at once');
    assert.ok(claims.length > 0);
  });

  it('defaults to 2000 ms in poll mode and to the poll interval otherwise, and must not be below it', () => {
    const transport = new MemoryTransport();
    const store = bed.db.store;
    assert.equal(resolveRelayOptions({ store, transport, wakeup: 'poll' }).idlePollMaxMs, 2000);
    assert.equal(
      resolveRelayOptions({ store, transport, wakeup: 'poll', pollIntervalMs: 3000 }).idlePollMaxMs,
      3000,
    );
    assert.equal(resolveRelayOptions({ store, transport, wakeup: 'notify' }).idlePollMaxMs, 1000);
    assert.throws(
      () => resolveRelayOptions({ store, transport, pollIntervalMs: 500, idlePollMaxMs: 100 }),
      /pollIntervalMs \(500\) must not exceed idlePollMaxMs \(100\)/,
    );
  });
});
