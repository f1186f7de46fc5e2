import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Outbox } from '../src/core/index.js';
import { PostgresLedger } from '../src/stores/postgres/ledger.js';
import { checkGroups } from '../src/verify/group-check.js';
import { parseSnapshot, verifyDeliveries, visibleIn, type LedgerEntry } from '../src/verify/verify-report.js';
import { createTestDb, inTransaction } from './helpers/postgres.js';

function entry(id: string, key: string | null, xid: number, snapshot: string, seq = xid): LedgerEntry {
  return { id, seq: BigInt(seq), topic: 't', key, xid: BigInt(xid), snapshot: parseSnapshot(snapshot) };
}

describe('verify', () => {
  it('reads snapshots the way PostgreSQL defines visibility', () => {
    const s = parseSnapshot('100:105:101,103');
    assert.equal(visibleIn(99n, s), true);
    assert.equal(visibleIn(100n, s), true);
    assert.equal(visibleIn(101n, s), false, 'in progress');
    assert.equal(visibleIn(102n, s), true);
    assert.equal(visibleIn(105n, s), false, 'not started');
    assert.throws(() => parseSnapshot('garbage'), /not a pg_snapshot/);
  });

  it('finds lost, phantom, duplicated, pending and dead-lettered messages', () => {
    const ledger = [
      entry('a', null, 1, '1:1:'),
      entry('b', null, 2, '2:2:'),
      entry('c', null, 3, '3:3:'),
      entry('d', null, 4, '4:4:'),
    ];
    const report = verifyDeliveries(ledger, ['a', 'x', 'a', 'a'], {
      pending: new Set(['c']),
      dead: new Set(['d']),
    });
    assert.equal(report.ok, false);
    assert.deepEqual(report.lost, ['b']);
    assert.deepEqual(report.phantom, ['x']);
    assert.equal(report.duplicates, 2);
    assert.deepEqual(report.duplicateIds, [{ id: 'a', copies: 3 }]);
    assert.deepEqual(report.pending, ['c']);
    assert.deepEqual(report.deadLettered, ['d']);
  });

  it('flags per-key order only where the earlier transaction had committed first', () => {
    // A (xid 10) committed before B (xid 11) was written: B's snapshot sees 10.
    // C (xid 12) ran concurrently with D (xid 13): D's snapshot has 12 in progress.
    const ledger = [
      entry('A', 'k', 10, '11:11:'),
      entry('B', 'k', 11, '11:11:'),
      entry('C', 'j', 12, '12:13:'),
      entry('D', 'j', 13, '12:14:12'),
    ];
    assert.deepEqual(
      verifyDeliveries(ledger, ['A', 'B', 'D', 'C']).orderViolations,
      [],
      'concurrent C/D may swap',
    );
    const bad = verifyDeliveries(ledger, ['B', 'A', 'C', 'D']);
    assert.deepEqual(bad.orderViolations, [{ key: 'k', late: 'A', overtaken: 'B' }]);
    assert.equal(bad.ok, false);
    // A duplicate of A after B is fine: first deliveries count.
    assert.equal(verifyDeliveries(ledger, ['A', 'B', 'A', 'C', 'D']).ok, true);
  });

  it('owes no order to a message that committed between the other insert and its ledger snapshot', () => {
    // E inserted first (seq 1); F inserted (seq 2) and committed before E's trigger took its
    // snapshot, so F is visible in E's snapshot, but the two were concurrent.
    const ledger = [entry('E', 'k', 20, '21:22:21', 1), entry('F', 'k', 21, '20:22:20', 2)];
    assert.equal(verifyDeliveries(ledger, ['E', 'F']).ok, true);
  });

  it('finds the one swapped pair in a long sequential history', () => {
    // 2000 messages of one key, each committed before the next was written.
    const ledger = Array.from({ length: 2000 }, (_, i) =>
      entry(`m${i}`, 'k', 100 + i, `${100 + i}:${100 + i}:`, i),
    );
    const order = ledger.map((e) => e.id);
    assert.equal(verifyDeliveries(ledger, order).orderViolations.length, 0);
    [order[700], order[701]] = [order[701] as string, order[700] as string];
    assert.deepEqual(verifyDeliveries(ledger, order).orderViolations, [
      { key: 'k', late: 'm700', overtaken: 'm701' },
    ]);
  });

  it('reports baseline entries that never arrived as unverifiable, not lost', () => {
    const ledger = [{ ...entry('G', 'k', 0, '1:1:'), baseline: true }];
    const report = verifyDeliveries(ledger, []);
    assert.deepEqual(report.unverifiable, ['G']);
    assert.deepEqual(report.lost, []);
  });

  it('records committed enqueues in the ledger, not rolled-back ones, with what order needs', async () => {
    const db = await createTestDb('ledger');
    try {
      const ledger = new PostgresLedger(db.pool, db.schema);
      assert.equal(await ledger.enabled(), false, 'off by default');
      const outbox = new Outbox({ store: db.store });
      await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 'before', payload: 1 }));
      await ledger.setEnabled(true);
      assert.equal(await ledger.enabled(), true);
      const a = await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 't', key: 'k', payload: 1 }));
      await assert.rejects(
        inTransaction(db.pool, async (c) => {
          await outbox.enqueue(c, { topic: 't', key: 'k', payload: 2 });
          throw new Error('rollback');
        }),
      );
      const b = await inTransaction(db.pool, (c) => outbox.enqueue(c, { topic: 't', key: 'k', payload: 3 }));
      await db.pool.query(`SELECT "${db.schema}".enqueue('sql', '{}'::jsonb)`);
      const entries = await ledger.entries();
      assert.equal(entries.length, 3, 'two committed enqueues and one from SQL');
      const ea = entries.find((e) => e.id === a) as LedgerEntry;
      const eb = entries.find((e) => e.id === b) as LedgerEntry;
      assert.ok(visibleIn(ea.xid, eb.snapshot), 'a committed before b was written');
      assert.ok(!visibleIn(eb.xid, ea.snapshot));
      const state = await ledger.state();
      assert.equal(state.pending.size, 4);
      assert.deepEqual(verifyDeliveries(entries, [b, a], state).orderViolations.length, 1);
    } finally {
      await db.drop();
    }
  });

  it('records each member of an atomic group in the ledger, and counts them pending and dead with their group', async () => {
    const db = await createTestDb('ledgergrp');
    try {
      const ledger = new PostgresLedger(db.pool, db.schema);
      await ledger.setEnabled(true);
      const outbox = new Outbox({ store: db.store });
      const ids = await inTransaction(db.pool, (c) =>
        outbox.enqueue(
          c,
          [1, 2, 3].map((i) => ({ topic: 'g', key: 'k', payload: i })),
          { atomic: true },
        ),
      );
      const entries = await ledger.entries();
      assert.deepEqual(entries.map((e) => e.id).sort(), [...ids].sort());
      assert.equal(new Set(entries.map((e) => e.seq)).size, 1, 'members share the group row’s seq');
      assert.deepEqual([...(await ledger.state()).pending].sort(), [...ids].sort());
      await db.pool.query(
        `WITH d AS (DELETE FROM "${db.schema}".outbox RETURNING *)
         INSERT INTO "${db.schema}".dead_letter (id, topic, key, type, payload, content_type, headers, created_at, attempts)
         SELECT id, topic, key, type, payload, content_type, headers, created_at, attempts FROM d`,
      );
      const state = await ledger.state();
      assert.deepEqual([...state.dead].sort(), [...ids].sort());
      assert.deepEqual(verifyDeliveries(entries, [], state).lost, []);
    } finally {
      await db.drop();
    }
  });

  it('finds atomic groups seen in part, or out of order', () => {
    const g = (id: string, group: string, index: number, size = 3) => ({
      id,
      group: { id: group, size, index },
    });
    const whole = [g('a0', 'A', 0), { id: 'x' }, g('a1', 'A', 1), g('a2', 'A', 2), g('b0', 'B', 0, 1)];
    assert.deepEqual(checkGroups(whole), { groups: 2, incomplete: [], broken: [] });
    // Published twice (at least once): the copies repeat members already seen.
    assert.deepEqual(checkGroups([...whole, ...whole]).broken, []);
    const part = [g('a0', 'A', 0), g('a1', 'A', 1)];
    assert.deepEqual(checkGroups(part), { groups: 1, incomplete: ['A'], broken: [] });
    assert.deepEqual(checkGroups([g('a1', 'A', 1), g('a2', 'A', 2), g('a0', 'A', 0)]).broken, ['A']);
  });
});
