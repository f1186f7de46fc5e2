/**
 * claimIds (schema version 9, sql/postgres/000009_claim_ids.sql): leasing the rows a relay
 * learned of from the transaction log, in key order (guarantee 4), never a row a claim holds,
 * and not before the inserting transaction is visible.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { Outbox, uuidv7 } from '../src/core/index.js';
import { createTestDb, type TestDb } from './helpers/postgres.js';

describe('PostgresStore.claimIds', () => {
  let db: TestDb;
  let outbox: Outbox;
  const owner = 'log-relay';

  before(async () => {
    db = await createTestDb('claimids');
    outbox = new Outbox({ store: db.store });
  });
  after(async () => {
    await db.drop();
  });
  beforeEach(async () => {
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
  });

  /** Enqueues one message per key given (null: keyless), in one transaction; returns their ids. */
  async function enqueue(keys: Array<string | null>, extra: { delayMs?: number } = {}): Promise<string[]> {
    const client = await db.pool.connect();
    try {
      await client.query('BEGIN');
      const ids = await outbox.enqueue(
        client,
        keys.map((key) => ({ topic: 't', key, payload: {}, ...extra })),
      );
      await client.query('COMMIT');
      return ids;
    } finally {
      client.release();
    }
  }

  const claimIds = (ids: readonly string[], maxPerKey = 100) =>
    db.store.claimIds({ ids, owner, limit: 1000, leaseMs: 10_000, maxPerKey });

  it('leases the named due rows in seq order, counts an attempt, and leaves the others', async () => {
    const ids = await enqueue(['a', 'b', null, 'c']);
    const [other] = await enqueue(['d']);
    const { leaseToken, messages } = await claimIds([ids[3]!, ids[0]!, ids[2]!]);
    assert.deepEqual(
      messages.map((m) => m.id),
      [ids[0], ids[2], ids[3]],
    );
    assert.ok(messages.every((m) => m.attempts === 1));
    const leased = await db.pool.query(
      `SELECT id::text AS id FROM "${db.schema}".outbox WHERE lease_token = $1 ORDER BY seq`,
      [leaseToken],
    );
    assert.deepEqual(
      leased.rows.map((r) => r.id),
      [ids[0], ids[2], ids[3]],
    );
    const untouched = await db.pool.query(
      `SELECT count(*)::int AS n FROM "${db.schema}".outbox WHERE id = ANY($1::uuid[]) AND lease_token IS NULL AND attempts = 0`,
      [[ids[1], other]],
    );
    assert.equal(untouched.rows[0].n, 2);
    // Named again while leased: nothing.
    assert.deepEqual(
      (await claimIds(ids)).messages.map((m) => m.id),
      [ids[1]],
    );
  });

  it('takes a row only with every older row of its key: never one behind an unnamed, leased or retrying row', async () => {
    const [a1, a2, a3] = await enqueue(['a', 'a', 'a']);
    // a2 and a3 without a1: a1 is the key's head and was not named.
    assert.deepEqual((await claimIds([a2!, a3!])).messages, []);
    // All three: a run, in order.
    const run = await claimIds([a3!, a1!, a2!]);
    assert.deepEqual(
      run.messages.map((m) => m.id),
      [a1, a2, a3],
    );

    // A head leased by a claim holds the key: its later row is not taken.
    const [b1] = await enqueue(['b']);
    const claimed = await db.store.claim({ owner: 'poller', limit: 10, leaseMs: 10_000 });
    assert.deepEqual(
      claimed.messages.map((m) => m.id),
      [b1],
    );
    const [b2] = await enqueue(['b']);
    assert.deepEqual((await claimIds([b2!])).messages, []);

    // A head waiting for a retry (due later) holds the key too.
    const [c1] = await enqueue(['c'], { delayMs: 60_000 });
    const [c2] = await enqueue(['c']);
    assert.deepEqual((await claimIds([c1!, c2!])).messages, []);
  });

  it('takes at most maxPerKey rows of a key, the oldest', async () => {
    const ids = await enqueue(['k', 'k', 'k', 'k', null, null]);
    const { messages } = await claimIds(ids, 2);
    assert.deepEqual(
      messages.map((m) => m.id),
      [ids[0], ids[1], ids[4], ids[5]],
    );
  });

  it('waits for the inserting transaction to be visible before reading its rows', async () => {
    const writer = await db.pool.connect();
    try {
      await writer.query('BEGIN');
      const id = uuidv7();
      await outbox.enqueue(writer, { id, topic: 't', key: 'v', payload: {} });
      const xid = Number(
        (
          await writer.query<{ x: string }>(
            `SELECT (pg_current_xact_id()::text::bigint & 4294967295)::text AS x`,
          )
        ).rows[0]!.x,
      );
      const started = performance.now();
      const claim = db.store.claimIds({ ids: [id], xids: [xid], owner, limit: 10, leaseMs: 10_000 });
      await new Promise((r) => setTimeout(r, 150));
      await writer.query('COMMIT');
      const { messages } = await claim;
      const waitedMs = performance.now() - started;
      assert.deepEqual(
        messages.map((m) => m.id),
        [id],
      );
      assert.ok(waitedMs >= 140, `waited for the commit (${Math.round(waitedMs)} ms)`);
    } finally {
      writer.release();
    }
  });

  it('gives up waiting after about a second for a transaction that is not visible, taking nothing', async () => {
    const writer = await db.pool.connect();
    try {
      await writer.query('BEGIN');
      const id = uuidv7();
      await outbox.enqueue(writer, { id, topic: 't', key: null, payload: {} });
      const xid = Number(
        (
          await writer.query<{ x: string }>(
            `SELECT (pg_current_xact_id()::text::bigint & 4294967295)::text AS x`,
          )
        ).rows[0]!.x,
      );
      const started = performance.now();
      const { messages } = await db.store.claimIds({
        ids: [id],
        xids: [xid],
        owner,
        limit: 10,
        leaseMs: 10_000,
      });
      const waitedMs = performance.now() - started;
      assert.deepEqual(messages, []);
      assert.ok(waitedMs >= 900 && waitedMs < 5000, `waited about 1 s (${Math.round(waitedMs)} ms)`);
      await writer.query('ROLLBACK');
    } finally {
      writer.release();
    }
  });

  it('xid8_of maps a 32-bit xid to the current epoch', async () => {
    const res = await db.pool.query<{ a: string; b: string }>(
      `SELECT x::text AS a, "${db.schema}".xid8_of((x::text::bigint & 4294967295))::text AS b
       FROM (SELECT pg_snapshot_xmax(pg_current_snapshot()) AS x) s`,
    );
    assert.equal(res.rows[0]!.b, res.rows[0]!.a);
  });
});
