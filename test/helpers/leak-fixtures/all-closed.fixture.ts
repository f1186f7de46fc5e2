/**
 * A test file that closes everything it opens, some of it only as its last hook runs, for
 * test/leak-guard.test.ts: the guard must pass it.
 */
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { Relay } from '../../../src/core/index.js';
import { PostgresStore } from '../../../src/stores/postgres/index.js';
import { MemoryTransport } from '../../../src/transports/memory/index.js';
import { DATABASE_URL } from '../postgres.js';

const pool = new pg.Pool({ connectionString: DATABASE_URL });
let timer: ReturnType<typeof setInterval> | undefined;

// A top-level hook, as files with a module-level connection have: the guard must look only
// after it ran, although the guard's own hook was registered first.
after(async () => {
  clearInterval(timer);
  await pool.end();
});

describe('a file that cleans up', () => {
  let relay: Relay | undefined;
  after(async () => {
    await relay?.stop();
  });

  it('runs a relay, stopped in an after() hook', async () => {
    const store = new PostgresStore({ pool, schema: process.env.LEAK_FIXTURE_SCHEMA ?? 'missing' });
    relay = new Relay({ store, transport: new MemoryTransport() });
    await relay.start();
  });

  it('starts an interval, cleared in the top-level after() hook', () => {
    timer = setInterval(() => undefined, 60_000);
  });

  it('closes a connection without waiting for it to be closed', async () => {
    const client = new pg.Client({ connectionString: DATABASE_URL });
    await client.connect();
    // Still open for a moment when the tests end: the guard gives it time to go.
    void client.end();
  });
});
