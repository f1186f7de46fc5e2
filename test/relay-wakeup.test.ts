import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Outbox, Relay } from '../src/core/index.js';
import { PGliteStore } from '../src/stores/pglite/index.js';
import { MemoryTransport } from '../src/transports/memory/index.js';

describe('relay wake-ups (PGlite, no server needed)', () => {
  it('sleeps only until a delayed message is due, not until the next poll', async () => {
    const store = await PGliteStore.connect({});
    await store.migrate();
    const transport = new MemoryTransport();
    const relay = new Relay({ store, transport, pollIntervalMs: 10_000 });
    const sources: string[] = [];
    relay.on('relay:wakeup', (e) => sources.push(e.source));
    await relay.start();
    try {
      const outbox = new Outbox({ store });
      const t0 = Date.now();
      await store.db.transaction((tx) => outbox.enqueue(tx, { topic: 'later', payload: 1, delayMs: 400 }));
      await transport.waitFor(1, 5000);
      const took = Date.now() - t0;
      assert.ok(took >= 350, `not before it was due (${took} ms)`);
      assert.ok(took < 3000, `soon after it was due, not at the 10 s poll (${took} ms)`);
      assert.ok(sources.includes('due'), `woken because it was due (${sources.join(', ')})`);
    } finally {
      await relay.stop();
      await store.close();
    }
  });
});
