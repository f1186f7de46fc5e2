/**
 * Relay presence (schema version 13, src/core/relay-presence.ts): a relay's row appears with its
 * state, heartbeats, shows a transport outage, goes away at stop, and a relay killed without a
 * stop stays listed with alive = false.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { Outbox, Relay } from '../src/core/index.js';
import type { RelayInfo } from '../src/core/ports.js';
import { RelayPresence } from '../src/core/relay-presence.js';
import { latestVersion } from '../src/stores/postgres/migrate.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

describe('relay presence (PostgreSQL)', () => {
  let db: TestDb;
  before(async () => {
    db = await createTestDb('mrpres');
  });
  after(async () => {
    await db.drop();
  });

  const relays = async (): Promise<RelayInfo[]> => db.store.listRelays();
  const find = async (owner: string): Promise<RelayInfo | undefined> =>
    (await relays()).find((r) => r.owner === owner);

  it('the schema is at version 13 or later, with the relay table', async () => {
    assert.ok(latestVersion() >= 13, `latest version ${latestVersion()}`);
    const res = await db.pool.query(`SELECT max(version)::int AS v FROM "${db.schema}".migrations`);
    assert.equal(res.rows[0].v, latestVersion());
    assert.deepEqual(await relays(), []);
  });

  it('records a running relay, heartbeats it, shows a transport outage, and removes it at stop', async () => {
    const transport = new MemoryTransport();
    const owner = `presence-test-${process.pid}`;
    const relay = new Relay({ store: db.store, transport, owner, wakeup: 'poll', pollIntervalMs: 50 });
    const errors: unknown[] = [];
    const presence = new RelayPresence({
      store: db.store,
      transport: transport.name,
      intervalMs: 200,
      onError: (e) => errors.push(e),
    });
    presence.attach(relay);
    await relay.start();
    try {
      const first = (await waitUntil(() => find(owner), 'the presence row')) as RelayInfo;
      assert.equal(first.state, 'running');
      assert.equal(first.alive, true);
      assert.equal(first.wakeup, 'poll');
      assert.equal(first.transport, transport.name);
      assert.equal(first.pid, process.pid);
      // 200 from this presence; 10 s when the relay also keeps its own (the same owner's row).
      assert.ok([200, 10_000].includes(first.heartbeatIntervalMs), String(first.heartbeatIntervalMs));
      assert.equal(first.inFlight.messages, 0);

      // The heartbeat moves heartbeat_at on (database clock), started_at stays.
      const later = await waitUntil(async () => {
        const r = await find(owner);
        return r && r.heartbeatAt.getTime() > first.heartbeatAt.getTime() ? r : undefined;
      }, 'a heartbeat after the first record');
      assert.ok(later);
      assert.equal(later.startedAt.getTime(), first.startedAt.getTime());

      // A broker outage: the relay's first publish fails, and the row says so until it is back.
      transport.unavailable = true;
      const outbox = new Outbox({ store: db.store });
      await inTransaction(db.pool, (c) => outbox.enqueue(c, [{ topic: 'presence.t', payload: { n: 1 } }]));
      await waitUntil(async () => (await find(owner))?.state === 'unavailable', 'state unavailable');
      transport.unavailable = false;
      await waitUntil(async () => (await find(owner))?.state === 'running', 'state running again');
      await waitUntil(() => transport.messages.length === 1, 'the message delivered');
    } finally {
      await relay.stop();
    }
    await waitUntil(async () => (await find(owner)) === undefined, 'the row removed at stop');
    assert.deepEqual(errors, []);
  });

  it('lists the leases a relay holds (in flight, oldest lease expiry)', async () => {
    const owner = `leaser-${process.pid}`;
    await db.store.recordRelay({
      owner,
      host: 'h',
      pid: 1,
      version: 'test',
      wakeup: 'notify',
      transport: 'memory',
      state: 'running',
      heartbeatIntervalMs: 10_000,
    });
    const outbox = new Outbox({ store: db.store });
    await inTransaction(db.pool, (c) =>
      outbox.enqueue(c, [
        { topic: 'lease.t', payload: 1 },
        { topic: 'lease.t', payload: 2 },
      ]),
    );
    const batch = await db.store.claim({ owner, limit: 10, leaseMs: 60_000 });
    assert.equal(batch.messages.length, 2);
    const row = await find(owner);
    assert.ok(row);
    assert.equal(row.inFlight.messages, 2);
    assert.ok(row.inFlight.oldestLeaseUntil !== null);
    assert.ok(row.inFlight.oldestLeaseUntil.getTime() > row.heartbeatAt.getTime());
    await db.store.settle({
      leaseToken: batch.leaseToken,
      delivered: batch.messages,
      released: [],
      retry: [],
      dead: [],
    });
    assert.equal((await find(owner))?.inFlight.messages, 0);
    await db.store.removeRelay(owner);
    assert.equal(await find(owner), undefined);
  });

  it('keeps the row of a relay killed without a stop, with alive = false after three intervals', async () => {
    const owner = `killed-${process.pid}`;
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/presence-process.ts'], {
      env: { ...process.env, DATABASE_URL, SCHEMA: db.schema, OWNER: owner, INTERVAL_MS: '200' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      const alive = await waitUntil(
        async () => {
          const r = await find(owner);
          return r?.alive ? r : undefined;
        },
        'the child process recording itself',
        30_000,
      );
      assert.ok(alive);
      assert.equal(alive.pid, child.pid);
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    const dead = await waitUntil(async () => {
      const r = await find(owner);
      return r && !r.alive ? r : undefined;
    }, 'the killed relay turning dead');
    assert.ok(dead);
    assert.ok(dead.heartbeatAgeMs >= 3 * 200, `heartbeat age ${dead.heartbeatAgeMs} ms`);
    assert.equal(stderr, '');

    // A row dead for over a day is pruned by the next heartbeat of any relay.
    await db.pool.query(
      `UPDATE "${db.schema}".relay SET heartbeat_at = now() - interval '25 hours' WHERE owner = $1`,
      [owner],
    );
    await db.store.recordRelay({
      owner: 'pruner',
      host: 'h',
      pid: 2,
      version: 'test',
      wakeup: 'poll',
      transport: 'memory',
      state: 'running',
      heartbeatIntervalMs: 10_000,
    });
    assert.deepEqual(
      (await relays()).map((r) => r.owner),
      ['pruner'],
    );
    await db.store.removeRelay('pruner');
  });
});
