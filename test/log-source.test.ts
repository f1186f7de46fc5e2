/**
 * The relay in `replication` mode with a LogSource over a scripted log (the transactions a real
 * stream would report, fed by the test) and the real PostgreSQL store: the log's batches are
 * leased through claimIds and settled like claims, a key with a message in the retry path holds
 * its later messages, a transaction the log never reports is still delivered from the table, and
 * the log position is confirmed only past batches the relay finished with.
 * test/replication/ runs the same relay against the real replication stream.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { ConfigError, Outbox, Relay, uuidv7 } from '../src/core/index.js';
import { LogSource, type LogStream, type LogTransaction } from '../src/core/log-source.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import { createTestDb, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

/** A log the test writes to: `report()` what a transaction inserted, read `confirmed`. */
class ScriptedLog implements LogStream {
  readonly confirmed: string[] = [];
  readonly #queue: LogTransaction[] = [];
  #waiter: ((tx: LogTransaction | null) => void) | undefined;
  #stopped = false;
  starts = 0;

  report(tx: LogTransaction): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    if (waiter) waiter(tx);
    else this.#queue.push(tx);
  }

  /** Starts that fail as if another relay held the slot. */
  busyStarts = 0;

  async start(): Promise<void> {
    this.starts++;
    if (this.busyStarts > 0) {
      this.busyStarts--;
      throw Object.assign(new Error('replication slot "s" is active for PID 4242'), { code: 'slot_in_use' });
    }
    this.#stopped = false;
  }

  next(signal: AbortSignal): Promise<LogTransaction | null> {
    if (this.#stopped) return Promise.resolve(null);
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve) => {
      this.#waiter = resolve;
      signal.addEventListener('abort', () => resolve(null), { once: true });
    });
  }

  confirm(lsn: string): void {
    this.confirmed.push(lsn);
  }

  /** What idleLsn() answers (the server's position past other tables' traffic). */
  serverLsn: string | null = null;

  idleLsn(): string | null {
    return this.serverLsn;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#waiter?.(null);
    this.#waiter = undefined;
  }
}

describe('Relay with a log source (replication mode)', () => {
  let db: TestDb;
  let outbox: Outbox;
  let lsn = 0;
  const relays: Relay[] = [];

  before(async () => {
    db = await createTestDb('logsrc');
    outbox = new Outbox({ store: db.store });
  });
  after(async () => {
    await db.drop();
  });
  beforeEach(async () => {
    for (const r of relays.splice(0)) await r.stop();
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
  });

  /** Commits one transaction with these keys; returns what the log would report for it. */
  async function commit(keys: Array<string | null>): Promise<LogTransaction & { ids: string[] }> {
    const client = await db.pool.connect();
    try {
      await client.query('BEGIN');
      const ids = await outbox.enqueue(
        client,
        keys.map((key, i) => ({ topic: 'log.test', key, payload: { i } })),
      );
      const xid = Number(
        (
          await client.query<{ x: string }>(
            `SELECT (pg_current_xact_id()::text::bigint & 4294967295)::text AS x`,
          )
        ).rows[0]!.x,
      );
      await client.query('COMMIT');
      lsn += 16;
      return { xid, endLsn: `0/${lsn.toString(16).toUpperCase()}`, inserts: ids.map((id) => ({ id })), ids };
    } finally {
      client.release();
    }
  }

  function relay(log: ScriptedLog, transport: MemoryTransport, options: Record<string, unknown> = {}): Relay {
    const r = new Relay({
      store: db.store,
      transport,
      source: new LogSource({ openStream: () => log, store: db.store }),
      retry: { baseDelayMs: 50, maxDelayMs: 100 },
      ...options,
    });
    relays.push(r);
    return r;
  }

  it("delivers what the log reports through claimIds, and confirms a transaction's position once read (its rows are in the table's retry path)", async () => {
    const log = new ScriptedLog();
    const transport = new MemoryTransport({ latencyMs: 300 });
    const r = relay(log, transport);
    await r.start();
    const tx = await commit(['a', null]);
    log.report(tx);
    await waitUntil(async () => r.inFlightBatches === 1, 'the batch in flight');
    await waitUntil(async () => log.confirmed.includes(tx.endLsn), 'confirmed while the batch is out');
    await transport.waitFor(2);
    await waitUntil(async () => (await db.count()) === 0, 'settled');
    // A crash now would leave the rows leased in the table: a claim takes them after the lease.
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      tx.ids,
    );
  });

  it('behind a backlog, leaves the rows the log names to the claims until a claim finds less than a batch', async () => {
    const log = new ScriptedLog();
    const transport = new MemoryTransport({ latencyMs: 100 });
    const source = new LogSource({ openStream: () => log, store: db.store });
    let named = 0;
    const claimIds = db.store.claimIds.bind(db.store);
    db.store.claimIds = async (request) => {
      named++;
      return claimIds(request);
    };
    try {
      const r = new Relay({ store: db.store, transport, source, batchSize: 5, concurrency: 1 });
      relays.push(r);
      await r.start();
      // Faster than one batch of 5 per 100 ms: the batches ahead fill, then the buffer overflows.
      const first: string[] = [];
      for (let i = 0; i < 60; i++) {
        const tx = await commit([`k${i}`]);
        first.push(...tx.ids);
        log.report(tx);
      }
      await waitUntil(() => source.behind, 'the source to fall behind', 10_000, 10);
      const namedWhenBehind = named;
      const more: string[] = [];
      for (let i = 0; i < 10; i++) {
        const tx = await commit([`m${i}`]);
        more.push(...tx.ids);
        log.report(tx);
      }
      await new Promise((res) => setTimeout(res, 300));
      assert.equal(named, namedWhenBehind, 'rows read while behind are left to the claims');
      await transport.waitFor(first.length + more.length, 30_000);
      await waitUntil(() => !source.behind, 'a claim that found less than a batch', 10_000, 10);
      const tx = await commit(['late']);
      log.report(tx);
      await waitUntil(() => named > namedWhenBehind, 'the log naming rows again', 5000, 10);
      await transport.waitFor(first.length + more.length + 1, 5000);
    } finally {
      db.store.claimIds = claimIds;
    }
  });

  it('table-less messages a dead relay may have published go through the table, more than a buffer full of them', async () => {
    const log = new ScriptedLog();
    const transport = new MemoryTransport();
    // The read mark a relay that died would have left: everything below goes through the table.
    await db.store.markLogRead('marked', '0/FFFFFF');
    const source = new LogSource({ openStream: () => log, store: db.store, markName: 'marked' });
    const r = new Relay({ store: db.store, transport, source, batchSize: 5 });
    relays.push(r);
    await r.start();
    const ids: string[] = [];
    for (let i = 0; i < 50; i++) {
      lsn += 16;
      const id = uuidv7();
      ids.push(id);
      log.report({
        xid: 0,
        endLsn: `0/${lsn.toString(16).toUpperCase()}`,
        inserts: [],
        emitted: [
          {
            seq: String(lsn),
            id,
            topic: 'log.tableless',
            key: `t${i}`,
            type: null,
            payload: Buffer.from('{}'),
            contentType: 'application/json',
            headers: {},
            createdAt: new Date(),
            attempts: 1,
          },
        ],
      });
    }
    // Four times the batch size fill the buffer; all of them go into the table (no batch for the
    // relay to take), and reading must go on.
    await transport.waitFor(50, 15_000);
    assert.deepEqual(new Set(transport.messages.map((m) => m.id)), new Set(ids));
  });

  it("with confirmAfter 'settle', confirms a position only once its batch settled", async () => {
    const log = new ScriptedLog();
    const transport = new MemoryTransport({ latencyMs: 300 });
    const r = new Relay({
      store: db.store,
      transport,
      source: new LogSource({ openStream: () => log, store: db.store, confirmAfter: 'settle' }),
    });
    relays.push(r);
    const claims: number[] = [];
    const claim = db.store.claim.bind(db.store);
    db.store.claim = async (request) => {
      claims.push(Date.now());
      return claim(request);
    };
    try {
      await r.start();
      assert.equal(r.options.wakeup, 'replication');
      assert.equal(r.options.pollIntervalMs, 5000);
      const tx = await commit(['a', 'b', null]);
      log.report(tx);
      // In flight (the transport takes 300 ms): nothing confirmed yet.
      await waitUntil(async () => r.inFlightBatches === 1, 'the batch in flight');
      assert.deepEqual(log.confirmed, []);
      await transport.waitFor(3);
      await waitUntil(async () => log.confirmed.length === 1, 'the position confirmed');
      assert.deepEqual(log.confirmed, [tx.endLsn]);
      assert.deepEqual(
        transport.messages.map((m) => m.id),
        tx.ids,
      );
      assert.equal(await db.count(), 0, 'delivered rows deleted');
      // Idle: no claims beyond the one at start and the backstop (5 s).
      const before = claims.length;
      await new Promise((res) => setTimeout(res, 1000));
      assert.ok(claims.length - before <= 1, `${claims.length - before} claims in a quiet second`);
    } finally {
      db.store.claim = claim;
    }
  });

  it('keeps a key behind its message in the retry path while other keys flow, then delivers it in order', async () => {
    const log = new ScriptedLog();
    let failing = true;
    const transport = new MemoryTransport({
      failWith: (m) => (failing && m.key === 'poison' ? 'retry' : undefined),
    });
    const r = relay(log, transport);
    await r.start();
    const first = await commit(['poison']);
    log.report(first);
    await waitUntil(async () => {
      const res = await db.pool.query(`SELECT attempts FROM "${db.schema}".outbox WHERE id = $1`, [
        first.ids[0],
      ]);
      return (res.rows[0]?.attempts ?? 0) >= 2;
    }, 'the poison message retried');
    const second = await commit(['poison', 'fine']);
    log.report(second);
    await waitUntil(async () => transport.messages.some((m) => m.key === 'fine'), 'the other key delivered');
    assert.ok(!transport.messages.some((m) => m.key === 'poison'), 'poison key held');
    failing = false;
    await waitUntil(
      async () => transport.messages.filter((m) => m.key === 'poison').length === 2,
      'poison key drained',
    );
    assert.deepEqual(
      transport.messages.filter((m) => m.key === 'poison').map((m) => m.id),
      [first.ids[0], second.ids[0]],
      'in order',
    );
    await waitUntil(async () => log.confirmed.includes(second.endLsn), 'position confirmed past both');
  });

  it('delivers a transaction the log never reports, from the table (a lost slot loses nothing)', async () => {
    const log = new ScriptedLog();
    const transport = new MemoryTransport();
    const r = relay(log, transport, { pollIntervalMs: 200 });
    await r.start();
    const missed = await commit(['x', null]);
    await transport.waitFor(2, 3000);
    assert.deepEqual(transport.messages.map((m) => m.id).sort(), [...missed.ids].sort());
  });

  it('waits as a hot standby while another relay holds the log, claiming from the table, then takes the log over', async () => {
    const log = new ScriptedLog();
    log.busyStarts = 3;
    const transport = new MemoryTransport();
    const source = new LogSource({
      openStream: () => log,
      store: db.store,
      isStandbyError: (e) => (e as { code?: string }).code === 'slot_in_use',
      standbyRetryMs: 200,
    });
    const r = new Relay({ store: db.store, transport, source });
    relays.push(r);
    await r.start();
    assert.equal(source.standby, true);
    assert.equal(source.connected, false);
    // Meanwhile the table path delivers (claims at most a second apart while the log is not read).
    const meanwhile = await commit(['s1']);
    await transport.waitFor(1, 3000);
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      meanwhile.ids,
    );
    await waitUntil(async () => source.connected, 'the log taken over', 5000);
    assert.equal(source.standby, false);
    assert.equal(log.starts, 4);
    const after = await commit(['s2']);
    log.report(after);
    await transport.waitFor(2, 3000);
    await waitUntil(async () => log.confirmed.includes(after.endLsn), 'confirmed after takeover');
  });

  it('a start error that is not a standby one fails the relay start', async () => {
    const log = new ScriptedLog();
    log.busyStarts = 1;
    const r = new Relay({
      store: db.store,
      transport: new MemoryTransport(),
      source: new LogSource({ openStream: () => log, store: db.store }),
    });
    await assert.rejects(r.start(), /is active for PID 4242/);
    await r.stop();
  });

  it("moves the position to the server's while nothing is pending, never while a batch is out", async () => {
    const log = new ScriptedLog();
    const transport = new MemoryTransport({ latencyMs: 400 });
    const r = new Relay({
      store: db.store,
      transport,
      source: new LogSource({
        openStream: () => log,
        store: db.store,
        idleConfirmMs: 100,
        confirmAfter: 'settle',
      }),
    });
    relays.push(r);
    await r.start();
    const tx = await commit(['i']);
    log.serverLsn = '0/FFFF0000';
    log.report(tx);
    await waitUntil(async () => r.inFlightBatches === 1, 'in flight');
    await new Promise((res) => setTimeout(res, 250));
    assert.deepEqual(log.confirmed, [], 'nothing confirmed while the batch is out');
    await transport.waitFor(1);
    await waitUntil(async () => log.confirmed.includes('0/FFFF0000'), 'the idle position confirmed');
    assert.equal(log.confirmed[0], tx.endLsn);
  });

  it('leases nothing while the transport is unavailable, gives back what it leased ahead, and delivers it after the outage', async () => {
    const log = new ScriptedLog();
    const transport = new MemoryTransport({ unavailable: true });
    const r = new Relay({
      store: db.store,
      transport,
      source: new LogSource({ openStream: () => log, store: db.store }),
      probeMinDelayMs: 50,
      probeMaxDelayMs: 100,
    });
    relays.push(r);
    await r.start();
    // The first batch finds the broker down: the relay pauses the source.
    const first = await commit(['o1']);
    log.report(first);
    await waitUntil(async () => !r.transportAvailable, 'the outage noticed');
    const during: string[] = [];
    for (let i = 0; i < 5; i++) {
      const tx = await commit([`o${i}`, null]);
      log.report(tx);
      during.push(...tx.ids);
    }
    await new Promise((res) => setTimeout(res, 500));
    const rows = await db.pool.query(
      `SELECT count(*)::int AS n, coalesce(max(attempts), 0)::int AS max_attempts,
              count(*) FILTER (WHERE lease_token IS NOT NULL)::int AS leased
       FROM "${db.schema}".outbox`,
    );
    assert.deepEqual(rows.rows[0], { n: 11, max_attempts: 0, leased: 0 }, 'no attempt spent, nothing leased');
    transport.unavailable = false;
    await transport.waitFor(11, 10_000);
    assert.deepEqual(new Set(transport.messages.map((m) => m.id)), new Set([...first.ids, ...during]));
  });

  it('refuses replication without a source, and a source with another wakeup', () => {
    const transport = new MemoryTransport();
    assert.throws(
      () => new Relay({ store: db.store, transport, wakeup: 'replication' }),
      (e: unknown) => e instanceof ConfigError && /no source was given/.test(e.message),
    );
    const log = new ScriptedLog();
    assert.throws(
      () =>
        new Relay({
          store: db.store,
          transport,
          wakeup: 'notify',
          source: new LogSource({ openStream: () => log, store: db.store }),
        }),
      (e: unknown) => e instanceof ConfigError && /a source was given/.test(e.message),
    );
  });
});
