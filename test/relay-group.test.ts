import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import {
  ConfigError,
  Outbox,
  RelayGroup,
  RelayStateError,
  type MessageInput,
  type RelayGroupEvents,
  type Transport,
} from '../src/core/index.js';
import { PostgresStore } from '../src/stores/postgres/index.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import { createTestDb, inTransaction, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

/** A PostgreSQL URL where nothing listens: the "database is down" of these tests. */
const CLOSED_PORT_URL = 'postgres://postgres@127.0.0.1:1/test';

async function enqueue(db: TestDb, messages: MessageInput[]): Promise<void> {
  const outbox = new Outbox({ store: db.store });
  await inTransaction(db.pool, (client) => outbox.enqueue(client, messages));
}

function many(topic: string, n: number): MessageInput[] {
  return Array.from({ length: n }, (_, i) => ({ topic, key: `k${i % 50}`, payload: { i } }));
}

describe('RelayGroup: several schemas through one transport', () => {
  let busy: TestDb;
  let quiet: TestDb;
  let third: TestDb;
  const groups: RelayGroup[] = [];
  const track = (group: RelayGroup) => {
    groups.push(group);
    return group;
  };
  const clean = async () => {
    await Promise.all(groups.splice(0).map((g) => g.stop()));
    for (const db of [busy, quiet, third]) {
      await db.pool.query(`TRUNCATE "${db.schema}".outbox, "${db.schema}".dead_letter`);
    }
  };

  before(async () => {
    [busy, quiet, third] = await Promise.all([createTestDb('rgb'), createTestDb('rgq'), createTestDb('rgt')]);
  });
  after(async () => {
    await Promise.all(groups.map((g) => g.stop()));
    await Promise.all([busy.drop(), quiet.drop(), third.drop()]);
  });

  it('refuses a duplicate, a malformed or a missing source name, the same store twice, and no sources', () => {
    const transport = new MemoryTransport();
    const refused = (sources: unknown[], match: RegExp) =>
      assert.throws(
        () => new RelayGroup({ transport, sources: sources as never }),
        (err: unknown) => err instanceof ConfigError && err.key === 'sources' && match.test(err.message),
      );
    refused(
      [
        { name: 'a', store: busy.store },
        { name: 'a', store: quiet.store },
      ],
      /two sources named "a"/,
    );
    refused([{ name: 'tenant a', store: busy.store }], /"tenant a".*letters, digits/);
    refused([{ name: '', store: busy.store }], /source 1 has the name ""/);
    refused([{ store: busy.store }], /source 1 has the name null/);
    refused(
      [
        { name: 'a', store: busy.store },
        { name: 'b', store: busy.store },
      ],
      /same store object/,
    );
    refused([], /at least one source/);
    // A source's own relay options are checked by the constructor, not at a later start.
    assert.throws(
      () => new RelayGroup({ transport, sources: [{ name: 'a', store: busy.store, batchSize: 0 }] }),
      /batchSize/,
    );
  });

  it("delivers a quiet source's message while a busy source's backlog of thousands is still draining", async () => {
    await clean();
    // A broker that takes 40 ms per batch: the busy backlog (40 batches of 250) takes several
    // rounds of `concurrency` batches to drain.
    const transport = new MemoryTransport({ latencyMs: 40 });
    const group = track(
      new RelayGroup({
        transport,
        sources: [
          { name: 'busy', store: busy.store },
          { name: 'quiet', store: quiet.store },
        ],
      }),
    );
    const claimed: string[] = [];
    group.on('relay:batch:claimed', ({ source }) => claimed.push(source));
    const total = 10_000;
    await enqueue(busy, many('busy.topic', total));
    await group.start();
    await waitUntil(() => (group.status()[0]?.delivered ?? 0) >= 250, 'the first busy batch');
    const busyClaimsBefore = claimed.filter((s) => s === 'busy').length;
    await enqueue(quiet, [{ topic: 'quiet.topic', payload: { hello: 'tenant' } }]);
    await waitUntil(() => transport.messages.some((m) => m.topic === 'quiet.topic'), 'the quiet message');
    const busyDelivered = transport.messages.filter((m) => m.topic === 'busy.topic').length;
    const busyClaimsUntil = claimed.indexOf('quiet');
    assert.ok(busyClaimsUntil >= 0, 'the quiet source claimed a batch');
    const busyClaimsBetween =
      claimed.slice(0, busyClaimsUntil).filter((s) => s === 'busy').length - busyClaimsBefore;
    assert.ok(
      busyDelivered < total,
      `the quiet message arrived while the busy backlog drained (busy delivered ${busyDelivered} of ${total})`,
    );
    // Bounded: the quiet claim came within two rounds of the busy source's batches (the time for
    // the NOTIFY and the quiet claim's own round trip, while the busy loop keeps claiming), not
    // after the backlog's 40 batches.
    assert.ok(
      busyClaimsBetween <= 2 * group.maxInFlightBatches,
      `the quiet source waited behind ${busyClaimsBetween} busy claims (at most ${2 * group.maxInFlightBatches})`,
    );
    // It never had to wait for a slot: the default budget leaves one beside a busy source's batches.
    assert.equal(group.status()[1]?.budget.waitedMs, 0);
    await waitUntil(
      () => group.status()[0]?.delivered === total && group.status()[1]?.delivered === 1,
      'the busy backlog settled',
    );
    const [busyStatus, quietStatus] = group.status();
    assert.equal(busyStatus?.delivered, total);
    assert.equal(quietStatus?.delivered, 1);
    assert.equal(quietStatus?.state, 'running');
    assert.ok((busyStatus?.budget.granted ?? 0) >= total / 250);
  });

  it('hands a budget of one batch round-robin: two busy sources do not hold a quiet one back', async () => {
    await clean();
    const transport = new MemoryTransport({ latencyMs: 20 });
    const group = track(
      new RelayGroup({
        transport,
        maxInFlightBatches: 1,
        sources: [
          { name: 'a', store: busy.store },
          { name: 'b', store: third.store },
          { name: 'q', store: quiet.store },
        ],
      }),
    );
    const claimed: Array<RelayGroupEvents['relay:batch:claimed']> = [];
    let most = 0;
    group.on('relay:batch:claimed', (e) => {
      claimed.push(e);
      most = Math.max(
        most,
        group.status().reduce((n, s) => n + s.budget.held, 0),
      );
    });
    await enqueue(busy, many('a.topic', 2000));
    await enqueue(third, many('b.topic', 2000));
    await group.start();
    await waitUntil(() => claimed.filter((c) => c.source === 'b').length >= 2, 'both busy sources under way');
    const before = claimed.length;
    await enqueue(quiet, [{ topic: 'q.topic', payload: 1 }]);
    await waitUntil(() => transport.messages.some((m) => m.topic === 'q.topic'), 'the quiet message');
    const at = claimed.findIndex((c) => c.source === 'q');
    // Its turn comes after at most one batch of each busy source (plus the one out when it asked).
    assert.ok(at - before <= 3, `the quiet source waited behind ${at - before} batches`);
    assert.ok(
      transport.messages.filter((m) => m.topic !== 'q.topic').length < 4000,
      'the busy backlogs were still draining',
    );
    // Alternation while both busy sources have work: no source gets two turns in a row while
    // another waits (the first few claims, before either ran out).
    const bothWaiting = claimed.findIndex((c) => c.source === 'b');
    const turns = claimed
      .slice(bothWaiting, bothWaiting + 8)
      .map((c) => c.source)
      .filter((s) => s !== 'q');
    for (let i = 1; i < turns.length; i++)
      assert.notEqual(turns[i], turns[i - 1], `turns: ${turns.join(',')}`);
    assert.equal(most, 1, 'never more than one batch in flight across the group');
    assert.ok((group.status()[2]?.budget.granted ?? 0) >= 1);
  });

  it('keeps delivering from one source while another cannot reach its database, and retries that one', async () => {
    await clean();
    const deadPool = new pg.Pool({
      connectionString: CLOSED_PORT_URL,
      max: 2,
      connectionTimeoutMillis: 1000,
    });
    deadPool.on('error', () => undefined);
    try {
      const down = new PostgresStore({ pool: deadPool, schema: 'mailroom' });
      const transport = new MemoryTransport();
      const group = track(
        new RelayGroup({
          transport,
          probeMinDelayMs: 50,
          probeMaxDelayMs: 100,
          sources: [
            { name: 'down', store: down },
            { name: 'up', store: quiet.store },
          ],
        }),
      );
      const startErrors: string[] = [];
      group.on('relay:error', ({ source, phase }) => phase === 'start' && startErrors.push(source));
      await group.start();
      await enqueue(quiet, [{ topic: 'up.topic', payload: 1 }]);
      await transport.waitFor(1);
      await waitUntil(() => group.status()[1]?.delivered === 1, 'the delivery settled');
      // Retried with backoff, reported under its name each time.
      await waitUntil(() => startErrors.length >= 2, 'a second start attempt of the down source');
      assert.ok(startErrors.every((s) => s === 'down'));
      const [downStatus, upStatus] = group.status();
      assert.equal(downStatus?.state, 'retrying');
      assert.equal(downStatus?.lastError?.phase, 'start');
      assert.match(downStatus?.lastError?.message ?? '', /ECONNREFUSED|connect|refused/i);
      assert.equal(upStatus?.state, 'running');
      assert.equal(upStatus?.delivered, 1);
      const backlog = await group.backlog(2000);
      assert.equal(backlog[0]?.stats, null);
      assert.ok(backlog[0]?.error);
      assert.equal(backlog[1]?.stats?.backlog, 0);
      await group.stop();
      assert.deepEqual(
        group.status().map((s) => s.state),
        ['stopped', 'stopped'],
      );
    } finally {
      await deadPool.end();
    }
  });

  it('keeps delivering from one schema after another schema is dropped under its running relay', async () => {
    await clean();
    const doomed = await createTestDb('rgd');
    try {
      const transport = new MemoryTransport();
      const group = track(
        new RelayGroup({
          transport,
          pollIntervalMs: 50,
          sources: [
            { name: 'doomed', store: doomed.store },
            { name: 'alive', store: quiet.store },
          ],
        }),
      );
      const claimErrors: string[] = [];
      group.on('relay:error', ({ source, phase }) => phase === 'claim' && claimErrors.push(source));
      await group.start();
      await doomed.pool.query(`DROP SCHEMA "${doomed.schema}" CASCADE`);
      await waitUntil(() => claimErrors.length > 0, 'a failed claim on the dropped schema');
      await enqueue(quiet, [{ topic: 'alive.topic', payload: 1 }]);
      const [got] = await transport.waitFor(1);
      assert.equal(got?.topic, 'alive.topic');
      assert.ok(claimErrors.every((s) => s === 'doomed'));
      // The claim's error, or the acknowledgement sweep's on the same missing tables.
      assert.match(group.status()[0]?.lastError?.message ?? '', new RegExp(doomed.schema));
      assert.equal(group.status()[1]?.lastError, null);
      await group.stop();
    } finally {
      await doomed.drop();
    }
  });

  it('fails start() naming each source when no source can start, and runs nothing', async () => {
    const pools = [1, 2].map(() => {
      const pool = new pg.Pool({ connectionString: CLOSED_PORT_URL, max: 1, connectionTimeoutMillis: 1000 });
      pool.on('error', () => undefined);
      return pool;
    });
    try {
      const group = new RelayGroup({
        transport: new MemoryTransport(),
        sources: pools.map((pool, i) => ({
          name: `t${i}`,
          store: new PostgresStore({ pool, schema: 'mailroom' }),
        })),
      });
      await assert.rejects(
        group.start(),
        (err: unknown) =>
          err instanceof RelayStateError &&
          err.code === 'no_source_started' &&
          /t0: .*; t1: /.test(err.message),
      );
      assert.deepEqual(
        group.status().map((s) => s.state),
        ['stopped', 'stopped'],
      );
      await group.stop();
      await assert.rejects(group.start(), /stopped/);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  it('fails start() when the shared transport does not start, and starts on the next call', async () => {
    await clean();
    const inner = new MemoryTransport();
    let starts = 0;
    const transport: Transport = {
      name: inner.name,
      probe: (o) => inner.probe(o),
      close: () => inner.close(),
      publish: (m, o) => inner.publish(m, o),
      async start() {
        if (++starts === 1) throw new Error('broker refused the connection');
        await inner.start();
      },
    };
    const group = track(new RelayGroup({ transport, sources: [{ name: 'one', store: quiet.store }] }));
    await assert.rejects(group.start(), /broker refused/);
    await group.start();
    assert.equal(group.status()[0]?.state, 'running');
  });

  it('wake() makes a polling source claim now', async () => {
    await clean();
    const transport = new MemoryTransport();
    const group = track(
      new RelayGroup({
        transport,
        wakeup: 'poll',
        pollIntervalMs: 600_000,
        sources: [
          { name: 'one', store: busy.store },
          { name: 'two', store: quiet.store },
        ],
      }),
    );
    await group.start();
    await enqueue(quiet, [{ topic: 'woken', payload: 1 }]);
    // The poll is ten minutes away: only the wake-up can deliver it within waitFor's 5 s.
    group.wake('two');
    const [got] = await transport.waitFor(1);
    assert.equal(got?.topic, 'woken');
  });

  it('tags forwarded events and log lines with the source name', async () => {
    await clean();
    const lines: Array<Record<string, unknown> | undefined> = [];
    const logger = {
      debug: () => undefined,
      info: (_m: string, f?: Record<string, unknown>) => lines.push(f),
      warn: () => undefined,
      error: () => undefined,
    };
    const transport = new MemoryTransport();
    const group = track(
      new RelayGroup({
        transport,
        logger,
        owner: 'host-1',
        sources: [
          { name: 'one', store: busy.store },
          { name: 'two', store: quiet.store },
        ],
      }),
    );
    const started: Array<RelayGroupEvents['relay:started']> = [];
    const settled: string[] = [];
    group.on('relay:started', (e) => started.push(e));
    group.on('relay:batch:settled', ({ source, delivered }) => delivered > 0 && settled.push(source));
    await group.start();
    assert.deepEqual(started.map((e) => [e.source, e.owner]).sort(), [
      ['one', 'host-1:one'],
      ['two', 'host-1:two'],
    ]);
    assert.ok(lines.some((f) => f?.source === 'one') && lines.some((f) => f?.source === 'two'));
    await enqueue(quiet, [{ topic: 't', payload: 1 }]);
    await transport.waitFor(1);
    await waitUntil(() => settled.length > 0, 'a settled batch');
    assert.deepEqual(settled, ['two']);
    assert.equal(group.relay('two').running, true);
    assert.throws(() => group.relay('three'), /no source "three"; it has one, two/);
  });
});
