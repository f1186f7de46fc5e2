/**
 * The claim of schema version 5 (sql/postgres/000005_claim_runs.sql): bounded work whatever the
 * number of keys (guarantee 6), runs of a key's messages in one batch, and per-key order of first
 * deliveries with runs under failures in the middle of a run (guarantee 4).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Outbox, Relay } from '../src/core/index.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import type { OutboxMessage } from '../src/core/types.js';
import { createTestDb, inTransaction, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

/** The first `n` keys of {@link fill}, in key order. */
function expected(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `k${String(i + 1).padStart(6, '0')}`);
}

/** Rows of a hot key first (lowest seqs), then one row each for `keys` other keys. */
async function fill(db: TestDb, hot: number, keys: number): Promise<void> {
  const t = `"${db.schema}".outbox`;
  await db.pool.query(
    `INSERT INTO ${t} (id, topic, key, payload)
     SELECT gen_random_uuid(), 't', 'hot', '\\x7b7d' FROM generate_series(1, $1)`,
    [hot],
  );
  await db.pool.query(
    `INSERT INTO ${t} (id, topic, key, payload)
     SELECT gen_random_uuid(), 't', 'k' || lpad(g::text, 6, '0'), '\\x7b7d' FROM generate_series(1, $1) g`,
    [keys],
  );
  await db.pool.query(`ANALYZE ${t}`);
}

/**
 * Entries a statement read from the outbox and its indexes (sequential reads of the table and
 * index reads, index-only scans included), counted by PostgreSQL in the same transaction.
 */
async function rowsRead(
  db: TestDb,
  sql: string,
  params: unknown[],
  claimed: Array<{ key: string | null }> = [],
): Promise<number> {
  const client = await db.pool.connect();
  try {
    await client.query('BEGIN');
    claimed.push(...(await client.query<{ key: string | null }>(sql, params)).rows);
    const res = await client.query<{ n: string }>(
      `SELECT sum(pg_stat_get_xact_tuples_returned(c.oid))::text AS n FROM pg_class c
       WHERE c.oid = $1::regclass OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = $1::regclass)`,
      [`"${db.schema}".outbox`],
    );
    await client.query('ROLLBACK');
    return Number(res.rows[0]?.n);
  } finally {
    client.release();
  }
}

describe('claim: bounded whatever the number of keys', () => {
  let db: TestDb;
  before(async () => {
    db = await createTestDb('claimb');
    await fill(db, 3000, 30_000);
    // The hot key's head is in flight: the window of the oldest rows holds only its blocked rows.
    await db.pool.query(
      `UPDATE "${db.schema}".outbox SET lease_token = gen_random_uuid(), lease_until = now() + interval '1 hour'
       WHERE seq = (SELECT min(seq) FROM "${db.schema}".outbox)`,
    );
  });
  after(async () => {
    await db.drop();
  });

  it('reads a bounded number of rows per claim with 30k keys behind a blocked hot key', async () => {
    const s = `"${db.schema}"`;
    const claimed: Array<{ key: string | null }> = [];
    const bounded = await rowsRead(
      db,
      `SELECT * FROM ${s}.claim(250, 'r', gen_random_uuid(), 10000, 250, NULL)`,
      [],
      claimed,
    );
    // Window + a walk of 250 keys + keyless probe + runs: a few thousand rows at most.
    assert.ok(bounded < 6000, `the claim read ${bounded} rows`);
    // The walk found a full batch behind the blocked hot key (the last row is the cursor row).
    const keys = claimed.slice(0, -1).map((r) => r.key);
    assert.equal(new Set(keys).size, 250);
    assert.ok(!keys.includes('hot'));
    // Version 1's claim walks every key: the same backlog costs it every one of the 30k keys.
    const unbounded = await rowsRead(db, `SELECT * FROM ${s}.claim(250, 'r', gen_random_uuid(), 10000)`, []);
    assert.ok(unbounded > 30_000, `version 1 read ${unbounded} rows (the test must be able to fail)`);
  });

  it('reaches every key: each claim that walks keys goes on where the last one stopped', async () => {
    const seen: string[] = [];
    for (let i = 0; i < 10; i++) {
      // The window holds only the hot key's blocked rows, so every head comes from the walk,
      // which stops once it has the 25 it needs and resumes there at the next claim.
      const batch = await db.store.claim({ owner: 'walker', limit: 25, leaseMs: 60_000 });
      seen.push(...batch.messages.map((m) => m.key as string));
    }
    // Keys in walk order, none skipped, none twice, the blocked hot key not among them.
    assert.deepEqual([...seen].sort(), expected(250));
  });

  it('starts the walk over from the first key once it has reached the last', async () => {
    // 300 keys, fewer than one walk's budget (500). Lease every key but the first ten: the walk
    // finds those ten, runs to the end of the keys looking for more, and the next claim walks
    // from the start again.
    const s = `"${db.schema}"`;
    await db.pool.query(`DELETE FROM ${s}.outbox WHERE key > 'k000300' AND key <> 'hot'`);
    await db.pool.query(
      `UPDATE ${s}.outbox SET lease_token = NULL, lease_until = NULL WHERE key <> 'hot' OR seq > (SELECT min(seq) FROM ${s}.outbox)`,
    );
    await db.pool.query(
      `UPDATE ${s}.outbox SET lease_token = gen_random_uuid(), lease_until = now() + interval '1 hour'
       WHERE key > 'k000010' AND key <> 'hot'`,
    );
    const fresh = db.makeStore();
    const first = await fresh.claim({ owner: 'w', limit: 25, leaseMs: 1 });
    assert.deepEqual(
      first.messages.map((m) => m.key),
      expected(10),
    );
    await db.pool.query(
      `UPDATE ${s}.outbox SET lease_until = now() - interval '1 second' WHERE lease_token IS NOT NULL AND key <= 'k000010' AND key <> 'hot'`,
    );
    const again = await fresh.claim({ owner: 'w', limit: 25, leaseMs: 60_000 });
    assert.deepEqual(
      again.messages.map((m) => m.key),
      expected(10),
      'the walk wrapped around to the first key',
    );
  });
});

describe('claim: runs of a key', () => {
  let db: TestDb;
  before(async () => {
    db = await createTestDb('claimr');
  });
  after(async () => {
    await db.drop();
  });

  async function enqueue(messages: Array<{ key: string | null; payload: unknown; delayMs?: number }>) {
    const outbox = new Outbox({ store: db.store });
    return inTransaction(db.pool, (c) =>
      outbox.enqueue(
        c,
        messages.map((m) => ({
          topic: 't',
          key: m.key,
          payload: m.payload,
          ...(m.delayMs ? { delayMs: m.delayMs } : {}),
        })),
      ),
    );
  }

  it('takes a run in order and stops it at a message not due', async () => {
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
    const ids = await enqueue([
      { key: 'a', payload: 1 },
      { key: 'a', payload: 2 },
      { key: 'b', payload: 1 },
      { key: 'a', payload: 3 },
      { key: 'a', payload: 4, delayMs: 60_000 },
      { key: 'a', payload: 5 },
      { key: 'b', payload: 2 },
    ]);
    const one = await db.store.claim({ owner: 'r', limit: 10, leaseMs: 60_000 });
    assert.deepEqual(
      one.messages.map((m) => m.id),
      [ids[0], ids[2]],
      'maxPerKey 1: only heads',
    );
    await db.pool.query(`UPDATE "${db.schema}".outbox SET lease_until = NULL, lease_token = NULL`);
    const runs = await db.store.claim({ owner: 'r', limit: 10, leaseMs: 60_000, maxPerKey: 10 });
    assert.deepEqual(
      runs.messages.map((m) => m.id),
      [ids[0], ids[1], ids[2], ids[3], ids[6]],
      'a runs to its delayed message; b whole',
    );
    // Another relay gets nothing of a key whose run is leased.
    const other = await db.store.claim({ owner: 'r2', limit: 10, leaseMs: 60_000, maxPerKey: 10 });
    assert.deepEqual(other.messages, []);
  });

  it('fills a batch with whole runs, oldest key first, within the limit', async () => {
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
    const ids = await enqueue([
      { key: 'a', payload: 1 },
      { key: 'a', payload: 2 },
      { key: 'a', payload: 3 },
      { key: 'b', payload: 1 },
      { key: null, payload: 'x' },
    ]);
    const batch = await db.store.claim({ owner: 'r', limit: 4, leaseMs: 60_000, maxPerKey: 10 });
    assert.deepEqual(
      batch.messages.map((m) => m.id),
      [ids[0], ids[1], ids[2], ids[3]],
    );
  });
});

describe('relay with runs: first deliveries in key order', () => {
  let db: TestDb;
  before(async () => {
    db = await createTestDb('runsorder');
  });
  after(async () => {
    await db.drop();
  });

  it('keeps key order of first deliveries when messages fail in the middle of runs, with two relays', async () => {
    const outbox = new Outbox({ store: db.store });
    const keys = 8;
    const perKey = 60;
    const sent = new Map<string, string[]>();
    for (let i = 0; i < perKey; i++) {
      const batch = Array.from({ length: keys }, (_, k) => ({ topic: 't', key: `k${k}`, payload: { i } }));
      const ids = await inTransaction(db.pool, (c) => outbox.enqueue(c, batch));
      ids.forEach((id, k) => sent.set(`k${k}`, [...(sent.get(`k${k}`) ?? []), id]));
    }
    // Every message fails its first attempt with a retryable error, some fail twice; a few
    // batches lose the broker altogether.
    const tries = new Map<string, number>();
    let calls = 0;
    const failWith = (m: OutboxMessage) => {
      const n = (tries.get(m.id) ?? 0) + 1;
      tries.set(m.id, n);
      if (n === 1 && Number.parseInt(m.id.slice(-2), 16) % 3 === 0) return 'retry' as const;
      if (n <= 2 && Number.parseInt(m.id.slice(-2), 16) % 11 === 0) return 'retry' as const;
      if (++calls % 97 === 0) return 'unavailable' as const;
      return undefined;
    };
    // One transport for both relays: its record is one timeline of what the broker took.
    const transport = new MemoryTransport({ failWith });
    const relays = [0, 1].map(
      (i) =>
        new Relay({
          store: db.store,
          transport,
          batchSize: 50,
          owner: `r${i}`,
          retry: { baseDelayMs: 5, maxDelayMs: 20 },
          probeMinDelayMs: 5,
          probeMaxDelayMs: 20,
        }),
    );
    const orderBroken: unknown[] = [];
    for (const r of relays) r.on('relay:error', (e) => orderBroken.push(e.error));
    await Promise.all(relays.map((r) => r.start()));
    try {
      await waitUntil(async () => (await db.count()) === 0, 'the outbox to drain', 60_000);
    } finally {
      await Promise.all(relays.map((r) => r.stop()));
    }
    assert.equal(await db.count('dead_letter'), 0, 'nothing dead-lettered: followers spend no attempts');
    const first = new Map<string, string[]>();
    const seen = new Set<string>();
    for (const m of transport.messages) {
      if (seen.has(m.id)) continue;
      seen.add(m.id);
      first.set(m.key as string, [...(first.get(m.key as string) ?? []), m.id]);
    }
    for (const [key, ids] of sent) assert.deepEqual(first.get(key), ids, `first deliveries of ${key}`);
    assert.deepEqual(
      orderBroken.filter((e) => (e as { code?: string }).code === 'key_order_broken'),
      [],
    );
  });
});
