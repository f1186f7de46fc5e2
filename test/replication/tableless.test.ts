/**
 * Table-less mode against PostgreSQL's real log: enqueue writes logical decoding messages, no
 * rows; a relay reading the slot publishes them in commit order and confirms the log position
 * only once every message before it is delivered or in the table's retry path. Rolled-back
 * transactions are never delivered, a missing slot refuses the enqueue, failures go to the table
 * (per-key order kept), a relay that dies before confirming loses nothing, an outage spends no
 * attempt and writes nothing into the table. Every slot and publication made here is dropped after.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { after, before, beforeEach, describe, it } from 'node:test';
import type pg from 'pg';
import { InvalidMessageError, Outbox, Relay } from '../../src/core/index.js';
import { PostgresLogSource } from '../../src/replication/postgres-log-source.js';
import { PostgresStore } from '../../src/stores/postgres/index.js';
import type { OutboxMessage, PublishOptions, PublishOutcome } from '../../src/core/index.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import { MemoryTransport } from '../../src/transports/memory/index.js';
import { createTestDb, DATABASE_URL, type TestDb } from '../helpers/postgres.js';
import { dropSlot as dropSlotOf } from '../helpers/slots.js';
import { waitUntil } from '../helpers/wait.js';

/** A memory transport that holds every publish of a message whose payload says "hold" until released. */
class HoldingTransport extends MemoryTransport {
  holding = false;
  #release: () => void = () => undefined;
  readonly #released = new Promise<void>((resolve) => (this.#release = resolve));

  release(): void {
    this.#release();
  }

  override async publish(
    messages: readonly OutboxMessage[],
    options?: PublishOptions,
  ): Promise<PublishOutcome[]> {
    if (messages.some((m) => m.payload.toString('utf8').includes('hold'))) {
      this.holding = true;
      await this.#released;
    }
    return super.publish(messages, options);
  }
}

describe('Table-less mode (logical messages through the log)', () => {
  let db: TestDb;
  let tableless: PostgresStore;
  let outbox: Outbox;
  let slot: string;
  let publication: string;
  const relays: Relay[] = [];

  before(async () => {
    db = await createTestDb('tableless');
    publication = `${db.schema}_outbox`;
  });

  const dropSlot = (name: string) => dropSlotOf(db.pool, name);

  beforeEach(async () => {
    for (const r of relays.splice(0)) await r.stop();
    if (slot) await dropSlot(slot);
    slot = `mr_test_${randomBytes(4).toString('hex')}`;
    tableless = new PostgresStore({ pool: db.pool, schema: db.schema, tableless: true, slot });
    outbox = new Outbox({ store: tableless });
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
    await db.pool.query(`DELETE FROM "${db.schema}".dead_letter`);
  });

  after(async () => {
    for (const r of relays.splice(0)) await r.stop();
    if (slot) await dropSlot(slot);
    await db.pool.query(`DROP PUBLICATION IF EXISTS "${publication}"`);
    await db.drop();
  });

  function relay(transport: MemoryTransport, options: Record<string, unknown> = {}): Relay {
    const r = new Relay({
      store: db.store,
      transport,
      source: new PostgresLogSource({
        connectionString: DATABASE_URL,
        schema: db.schema,
        slot,
        store: db.store,
        standbyRetryMs: 200,
      }),
      retry: { baseDelayMs: 50, maxDelayMs: 100 },
      ...options,
    });
    relays.push(r);
    return r;
  }

  async function begin(): Promise<pg.PoolClient> {
    const client = await db.pool.connect();
    await client.query('BEGIN');
    return client;
  }
  async function enqueue(
    client: pg.PoolClient,
    key: string | null,
    n = 1,
    topic = 'tl',
    payload?: string,
  ): Promise<string[]> {
    return outbox.enqueue(
      client,
      Array.from({ length: n }, (_, i) => ({ topic, key, payload: payload ?? { i } })),
    );
  }
  async function commit(client: pg.PoolClient): Promise<void> {
    await client.query('COMMIT');
    client.release();
  }
  async function oneTx(key: string | null, n = 1, topic = 'tl', payload?: string): Promise<string[]> {
    const c = await begin();
    const ids = await enqueue(c, key, n, topic, payload);
    await commit(c);
    return ids;
  }
  const rows = async (table: string) =>
    (await db.pool.query(`SELECT count(*)::int AS n FROM "${db.schema}".${table}`)).rows[0].n as number;
  const confirmedLsn = async () =>
    (
      await db.pool.query(
        `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1`,
        [slot],
      )
    ).rows[0]?.lsn as string | undefined;
  const currentLsn = async () =>
    (await db.pool.query(`SELECT pg_current_wal_lsn()::text AS lsn`)).rows[0].lsn as string;
  const lsnGte = async (a: string, b: string) =>
    (await db.pool.query(`SELECT $1::pg_lsn >= $2::pg_lsn AS ok`, [a, b])).rows[0].ok as boolean;

  it('refuses to enqueue while the slot does not exist, and writes nothing', async () => {
    const c = await begin();
    try {
      await assert.rejects(enqueue(c, 'k'), (err: Error) => {
        assert.match(err.message, new RegExp(`replication slot '${slot}'`));
        assert.match(err.message, /--wakeup replication/);
        return true;
      });
    } finally {
      await c.query('ROLLBACK');
      c.release();
    }
    // Delayed and acknowledged messages need the table: a typed error before any SQL.
    const d = await begin();
    try {
      await assert.rejects(
        outbox.enqueue(d, { topic: 'tl', payload: {}, delayMs: 1000 }),
        (err: Error) => err instanceof InvalidMessageError && /needs the outbox table/.test(err.message),
      );
    } finally {
      await d.query('ROLLBACK');
      d.release();
    }
    assert.throws(
      () => new Relay({ store: tableless, transport: new MemoryTransport(), wakeup: 'notify' }),
      /store is tableless/,
    );
  });

  it('delivers committed transactions in commit order, never a rolled-back one, and never writes a row', async () => {
    const transport = new MemoryTransport();
    const r = relay(transport, { concurrency: 1 });
    await r.start();
    const a = await begin();
    const b = await begin();
    const a1 = await enqueue(a, null);
    const b1 = await enqueue(b, 'kb', 2);
    const a2 = await enqueue(a, 'ka');
    await commit(b);
    const rolled = await begin();
    await enqueue(rolled, 'ka');
    await rolled.query('ROLLBACK');
    rolled.release();
    await commit(a);
    const later = await oneTx('ka', 3);
    const expected = [...b1, ...a1, ...a2, ...later];
    await transport.waitFor(expected.length, 10_000);
    await new Promise((res) => setTimeout(res, 300));
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      expected,
    );
    const first = transport.messages[0];
    assert.equal(first?.topic, 'tl');
    assert.deepEqual(JSON.parse(String(first?.payload)), { i: 0 });
    assert.equal(await rows('outbox'), 0, 'no outbox row was ever needed');
    // The slot's position moves past the delivered transactions (the relay confirmed them).
    const lsn = await currentLsn();
    await waitUntil(
      async () => lsnGte((await confirmedLsn()) ?? '0/0', lsn),
      'slot confirmed past the work',
      5000,
    );
  });

  it('the SQL API emit() writes the same messages', async () => {
    const transport = new MemoryTransport();
    const r = relay(transport);
    await r.start();
    const c = await begin();
    await c.query(`SET LOCAL mailroom.slot = '${slot}'`);
    await c.query(`SET LOCAL mailroom.log_prefix = '${db.schema}'`);
    const { rows: out } = await c.query(
      `SELECT "${db.schema}".emit('sql.topic', '{"a": 1}'::jsonb, 'k1', '{"x-h": "v"}'::jsonb, 'T') AS id`,
    );
    await commit(c);
    const [m] = await transport.waitFor(1, 10_000);
    assert.equal(m?.id, out[0].id);
    assert.equal(m?.topic, 'sql.topic');
    assert.equal(m?.key, 'k1');
    assert.equal(m?.type, 'T');
    assert.deepEqual(m?.headers, { 'x-h': 'v' });
    assert.deepEqual(JSON.parse(String(m?.payload)), { a: 1 });
    // Without the slot setting it names the default slot, which does not exist here.
    const d = await begin();
    try {
      await assert.rejects(
        d.query(`SELECT "${db.schema}".emit('t', '{}'::jsonb)`),
        /_relay' which does not exist|_relay', which does not exist/,
      );
    } finally {
      await d.query('ROLLBACK');
      d.release();
    }
  });

  it('puts a failing message into the table retry path; its key follows it there, other keys flow', async () => {
    let poisonId = '';
    const transport = new MemoryTransport({ failWith: (m) => (m.id === poisonId ? 'retry' : undefined) });
    const r = relay(transport, { retry: { baseDelayMs: 50, maxDelayMs: 100, maxAttempts: 3 } });
    await r.start();
    [poisonId] = (await oneTx('poison')) as [string];
    const behind = await oneTx('poison', 2);
    const others = [...(await oneTx('a', 2)), ...(await oneTx(null, 2))];
    // Others flow at once; the poison is retried from the table and dead-lettered; the two
    // behind it wait in the table and go out after it, in order.
    await transport.waitFor(others.length + behind.length, 15_000);
    const dead = await db.pool.query(`SELECT id::text, attempts FROM "${db.schema}".dead_letter`);
    assert.deepEqual(
      dead.rows.map((x) => [x.id, x.attempts]),
      [[poisonId, 3]],
    );
    const ids = transport.messages.map((m) => m.id);
    assert.deepEqual(
      ids.filter((id) => behind.includes(id)),
      behind,
    );
    for (const id of others) assert.ok(ids.includes(id));
    await waitUntil(async () => (await rows('outbox')) === 0, 'table drained', 5000);
  });

  it('loses nothing when the relay dies before confirming: the next one reads the log again', async () => {
    const hung = new MemoryTransport({ hang: true });
    const r1 = relay(hung, { shutdownTimeoutMs: 200 });
    await r1.start();
    const before = await confirmedLsn();
    const ids = [...(await oneTx('x', 3)), ...(await oneTx('y', 2))];
    await waitUntil(async () => hung.publishCalls > 0, 'publish started', 5000);
    // Stopped with the publishes unanswered: abandoned, never confirmed.
    await r1.stop();
    assert.equal(await confirmedLsn(), before, 'nothing confirmed');
    const transport = new MemoryTransport();
    const r2 = relay(transport);
    await r2.start();
    await transport.waitFor(ids.length, 10_000);
    assert.deepEqual(transport.messages.map((m) => m.id).sort(), [...ids].sort());
    // The dead relay may have published them (its read mark says it read them): the next one
    // sends them through the table, which counts their attempts, and empties it as they go.
    await waitUntil(async () => (await rows('outbox')) === 0, 'table drained', 5000);
  });

  it('a cut stream reconnects without sending again what the relay already published or still holds', async () => {
    // The group of a held message keeps the position before it, so what follows it is read again
    // after the cut. The relay knows what it published (and what it still holds) and sends none of
    // it again; a new process would (it cannot know what the dead one published).
    const proxy = await TcpProxy.start({ targetPort: Number(new URL(DATABASE_URL).port || 5432) });
    try {
      const proxied = new URL(DATABASE_URL);
      proxied.port = String(proxy.port);
      const transport = new HoldingTransport();
      const source = new PostgresLogSource({
        connectionString: proxied.toString(),
        schema: db.schema,
        slot,
        store: db.store,
        reconnectDelayMs: 50,
      });
      const r = new Relay({ store: db.store, transport, source, concurrency: 4 });
      relays.push(r);
      await r.start();
      const [held] = await oneTx('h', 1, 'tl', 'hold');
      await waitUntil(() => transport.holding, 'the held publish', 5000);
      const flowed = [...(await oneTx('a', 2)), ...(await oneTx('b', 2)), ...(await oneTx(null, 1))];
      await transport.waitFor(flowed.length, 10_000);
      const connections = proxy.connections;
      proxy.cut();
      await waitUntil(() => proxy.connections > connections && source.connected, 'the stream back', 10_000);
      // The copies read again are known, and the position moves past them once the held one is out.
      transport.release();
      const end = await currentLsn();
      await waitUntil(
        async () => lsnGte((await confirmedLsn()) ?? '0/0', end),
        'the position past them',
        10_000,
      );
      await new Promise((res) => setTimeout(res, 300));
      const sent = transport.messages.map((m) => m.id);
      assert.deepEqual([...sent].sort(), [...flowed, held].sort(), 'each once');
      assert.equal(await rows('outbox'), 0, 'nothing went through the table');
    } finally {
      await proxy.close();
    }
  });

  it('an outage spends no attempt and writes nothing to the table; delivery resumes in order', async () => {
    const transport = new MemoryTransport({ unavailable: true });
    const r = relay(transport, { probeMinDelayMs: 50, probeMaxDelayMs: 100 });
    await r.start();
    const ids = [...(await oneTx('o', 3)), ...(await oneTx('p', 2)), ...(await oneTx(null, 1))];
    await waitUntil(async () => !r.transportAvailable, 'outage seen', 5000);
    await new Promise((res) => setTimeout(res, 500));
    assert.equal(await rows('outbox'), 0, 'nothing spilled into the table');
    assert.equal(await rows('dead_letter'), 0);
    transport.unavailable = false;
    await transport.waitFor(ids.length, 10_000);
    const got = transport.messages.map((m) => m.id);
    assert.deepEqual(
      got.filter((id) => ids.slice(0, 3).includes(id)),
      ids.slice(0, 3),
    );
    for (const m of transport.messages) assert.equal(m.attempts, 1);
  });

  it('delivers an atomic group written table-less in one broker transaction', async () => {
    const transport = new MemoryTransport();
    const r = relay(transport);
    await r.start();
    const c = await begin();
    const ids = await outbox.enqueue(
      c,
      [0, 1, 2].map((i) => ({ topic: 'tl.group', key: 'g', payload: { i } })),
      { atomic: true },
    );
    await commit(c);
    await transport.waitFor(3, 10_000);
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      ids,
    );
    assert.equal(transport.commits, 1);
    assert.equal(await rows('outbox'), 0);
  });

  it('a message whose key has a row in the table (a delayed one) waits behind it', async () => {
    const transport = new MemoryTransport();
    const r = relay(transport);
    await r.start();
    const tableOutbox = new Outbox({ store: db.store });
    const c = await begin();
    const [delayed] = await tableOutbox.enqueue(c, [
      { topic: 'tl', key: 'mixed', payload: {}, delayMs: 1500 },
    ]);
    await commit(c);
    const after = await oneTx('mixed', 2);
    const other = await oneTx('free');
    await transport.waitFor(1, 5000);
    assert.deepEqual(
      transport.messages.map((m) => m.id),
      other,
    );
    await transport.waitFor(4, 10_000);
    assert.deepEqual(transport.messages.map((m) => m.id).slice(1), [delayed, ...after]);
  });

  it(
    'a message that kills the relay is dead-lettered after maxAttempts, and its key flows on (read mark)',
    { timeout: 240_000 },
    async () => {
      // A relay that dies publishing a table-less message never confirms it: without the read mark
      // every restart would read it again as new and die again, for ever. With it, the next relay
      // sends what the dead one may have published through the table, which counts attempts.
      // The slot must exist before a table-less enqueue: a first relay creates it.
      const creator = relay(new MemoryTransport());
      await creator.start();
      await creator.stop();
      const d = await begin();
      const ids = await outbox.enqueue(d, [
        { topic: 'tl', key: 'victim', payload: 'fine' },
        { topic: 'tl', key: 'victim', payload: 'kill-me' },
        { topic: 'tl', key: 'victim', payload: 'after 1' },
        { topic: 'tl', key: 'victim', payload: 'after 2' },
      ]);
      await commit(d);
      const fixture = fileURLToPath(new URL('../fixtures/killer-log-relay.ts', import.meta.url));
      const delivered: string[] = [];
      let kills = 0;
      const deadline = Date.now() + 220_000;
      while (!delivered.includes(ids[3] as string) && Date.now() < deadline) {
        const child = spawn(process.execPath, ['--import', 'tsx', fixture], {
          env: { ...process.env, DATABASE_URL, SCHEMA: db.schema, SLOT: slot, LEASE_MS: '1000' },
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        child.stdout.setEncoding('utf8');
        let buffered = '';
        child.stdout.on('data', (chunk: string) => {
          buffered += chunk;
          const lines = buffered.split('\n');
          buffered = lines.pop() ?? '';
          for (const line of lines)
            if (line.startsWith('delivered ')) delivered.push(line.split(' ')[1] as string);
        });
        const exited = new Promise<NodeJS.Signals | null>((r) =>
          child.once('exit', (_code, signal) => r(signal)),
        );
        const done = waitUntil(
          () => delivered.includes(ids[3] as string),
          'the key to flow',
          220_000,
          100,
        ).then(() => 'done' as const);
        const result = await Promise.race([exited, done.catch(() => 'timeout' as const)]);
        if (result === 'SIGKILL') kills++;
        else {
          child.kill('SIGTERM');
          await exited;
        }
      }
      const dead = await db.pool.query(`SELECT id::text, last_error FROM "${db.schema}".dead_letter`);
      // Killed once publishing it straight from the log, then once per claim from the table.
      assert.ok(kills >= 12 && kills <= 13, `killed ${kills} times`);
      assert.deepEqual(
        dead.rows.map((r) => r.id),
        [ids[1]],
      );
      assert.match(String(dead.rows[0]?.last_error), /claimed 12 times/);
      const firsts = [...new Set(delivered)];
      assert.deepEqual(firsts, [ids[0], ids[2], ids[3]], 'the key went on in order past the poison');
    },
  );
});
