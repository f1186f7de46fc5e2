import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import { Outbox, Relay } from '../src/core/index.js';
import { PGliteStore, pglitePool } from '../src/stores/pglite/index.js';
import { runReceivingConformance } from '../src/testkit/receiving-conformance.js';
import { runStoreConformance, type StoreHarness } from '../src/testkit/store-conformance.js';
import { MemoryTransport } from '../src/transports/memory/index.js';

// Starting PGlite compiles PostgreSQL's WebAssembly, seconds on a slow machine: one instance
// for the file, a schema per test.
let shared: PGlite | undefined;
async function sharedDb(): Promise<PGlite> {
  shared ??= await PGlite.create();
  return shared;
}
after(async () => {
  await shared?.close();
});

const harness = async (): Promise<StoreHarness> => {
  const db = await sharedDb();
  const store = new PGliteStore({ db, schema: `conf_${randomBytes(4).toString('hex')}` });
  await store.migrate();
  return {
    store,
    transaction: (fn) => db.transaction((tx) => fn(tx)),
    close: async () => {
      await store.close();
      await db.query(`DROP SCHEMA IF EXISTS "${store.schema}" CASCADE`);
    },
  };
};
runStoreConformance('PGlite store', { create: harness });
runReceivingConformance('PGlite store', { create: harness });

describe('PGlite store', () => {
  let db: PGlite;
  before(async () => {
    db = await sharedDb();
  });

  it('is the PostgreSQL store on one connection: one relay, wake-ups through listen()', () => {
    const store = new PGliteStore({ db });
    assert.equal(store.name, 'pglite');
    assert.deepEqual(store.capabilities, { notify: true });
    assert.equal(store.schema, 'mailroom');
    assert.equal(store.db, db);
  });

  it('has no wake gate (one session): every enqueue notifies, the SQL API too, so a relay wakes at commit', async () => {
    const schema = `gate_${randomBytes(4).toString('hex')}`;
    const store = new PGliteStore({ db, schema, notify: 'idle' });
    assert.equal(store.wakeGate(), undefined);
    assert.equal(store.notify, true, "'idle' notifies at every commit on PGlite");
    await store.migrate();
    const transport = new MemoryTransport();
    // A poll far longer than the test: only a wake-up at commit delivers.
    const relay = new Relay({ store, transport, pollIntervalMs: 3_600_000 });
    await relay.start();
    try {
      await db.query(`SELECT "${schema}".enqueue('sql.api', '1'::jsonb)`);
      await transport.waitFor(1, 15_000);
      await db.transaction((tx) => new Outbox({ store }).enqueue(tx, { topic: 'library', payload: 2 }));
      await transport.waitFor(2, 15_000);
    } finally {
      await relay.stop();
      await store.close();
      await db.query(`RESET mailroom.notify`);
      await db.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });

  it('rejects unknown options, db with dataDir, and SQL-looking schema names', () => {
    assert.throws(() => new PGliteStore({ db, pool: {} } as never), /unknown PGliteStore option "pool"/);
    assert.throws(() => new PGliteStore({ db, dataDir: '/tmp/x' }), /a db or a dataDir, not both/);
    assert.throws(() => new PGliteStore({ db, schema: 'a"; DROP TABLE x; --' }), { name: 'ConfigError' });
  });

  it('rejects schema names over 43 bytes and system schemas, before opening an instance', () => {
    const long = 'y'.repeat(44);
    for (const options of [{ db }, {}]) {
      assert.throws(() => new PGliteStore({ ...options, schema: long }), {
        name: 'ConfigError',
        message: new RegExp(`schema "${long}" is 44 bytes, over the limit of 43`),
      });
      assert.throws(() => new PGliteStore({ ...options, schema: 'pg_catalog' }), {
        name: 'ConfigError',
        message: /schema "pg_catalog" is a PostgreSQL system schema name/,
      });
    }
  });

  it('reports a missing schema with the call that creates it', async () => {
    const store = new PGliteStore({ db, schema: 'not_migrated_here' });
    await assert.rejects(store.check(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'schema_missing');
      assert.match(err.message, /schema "not_migrated_here" is missing/);
      assert.match(err.message, /run `await store\.migrate\(\)`/);
      return true;
    });
  });

  it('hands out its one connection to one client at a time; pool queries wait for release', async () => {
    const schema = `mutex_${randomBytes(4).toString('hex')}`;
    await db.query(`CREATE SCHEMA "${schema}"`);
    await db.query(`CREATE TABLE "${schema}".t (n int)`);
    const pool = pglitePool(db);
    const events: string[] = [];
    const client = await pool.connect();
    await client.query('BEGIN');
    await client.query(`INSERT INTO "${schema}".t VALUES (1)`);
    const poolRead = pool.query(`SELECT count(*)::int AS n FROM "${schema}".t`).then((r) => {
      events.push(`pool saw ${String(r.rows[0]?.n)}`);
    });
    const appRead = db.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${schema}".t`).then((r) => {
      events.push(`app saw ${String(r.rows[0]?.n)}`);
    });
    const second = pool.connect().then((c) => {
      events.push('second client');
      c.release();
    });
    await new Promise((r) => setTimeout(r, 100));
    await client.query(`INSERT INTO "${schema}".t VALUES (2)`);
    await client.query('ROLLBACK');
    events.push('released');
    client.release();
    await Promise.all([poolRead, appRead, second]);
    assert.equal(events[0], 'released', `nothing ran inside the held connection: ${events.join(', ')}`);
    assert.deepEqual(events.slice(1).sort(), ['app saw 0', 'pool saw 0', 'second client']);
    await assert.rejects(client.query('SELECT 1'), /released/);
    await db.query(`DROP SCHEMA "${schema}" CASCADE`);
  });

  it('opens its own database in a directory, keeps messages across restarts, closes it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mailroom-pglite-'));
    try {
      const first = await PGliteStore.connect({ dataDir: dir });
      await first.migrate();
      const outbox = new Outbox({ store: first });
      const id = await first.db.transaction((tx) => outbox.enqueue(tx, { topic: 'kept', payload: 1 }));
      await first.close();
      assert.equal(first.db.closed, true, 'the store closes the instance it made');

      const second = await PGliteStore.connect({ dataDir: dir });
      try {
        await second.check();
        const { messages } = await second.claim({ owner: 't', limit: 10, leaseMs: 5000 });
        assert.deepEqual(
          messages.map((m) => m.id),
          [id],
        );
      } finally {
        await second.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('leaves a PGlite instance it was given open', async () => {
    const store = new PGliteStore({ db });
    await store.close();
    assert.notEqual(db.closed, true);
    assert.equal((await db.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one, 1);
  });
});
