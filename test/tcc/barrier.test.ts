import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { ConfigError, StoreError } from '../../src/index.js';
import { PGliteStore } from '../../src/stores/pglite/index.js';
import { PostgresStore } from '../../src/stores/postgres/index.js';
import { BarrierOrderError, TccBarrier, type BarrierStore } from '../../src/tcc/barrier.js';
import { BranchRefusedError, isBranchRefused, type BranchPhase } from '../../src/tcc/participant.js';
import { createTestDb, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';

/** A store, the barrier on it, and the business table the phases write their effects to. */
interface Bed<Tx> {
  store: BarrierStore<Tx> & { schema: string };
  barrier: TccBarrier<Tx>;
  /** The phase's business effect: one row in `effects`, written in the barrier's transaction. */
  effect(tx: Tx, gid: string, branch: string, phase: BranchPhase): Promise<void>;
  /** How many effects of this phase committed for the branch. */
  effects(gid: string, branch: string, phase: BranchPhase): Promise<number>;
  /** The barrier's rows of the branch, `phase:reason`, sorted. */
  rows(gid: string, branch: string): Promise<string[]>;
}

async function makeBed<Tx>(store: BarrierStore<Tx> & { schema: string }): Promise<Bed<Tx>> {
  const effects = `"${store.schema}".effects`;
  const query = (sql: string, params: unknown[] = []) =>
    store.transaction((tx) => store.executor(tx).execute(sql, params));
  await query(`CREATE TABLE ${effects} (gid text NOT NULL, branch text NOT NULL, phase text NOT NULL)`);
  return {
    store,
    barrier: new TccBarrier({ store }),
    async effect(tx, gid, branch, phase) {
      await store.executor(tx).execute(`INSERT INTO ${effects} VALUES ($1, $2, $3)`, [gid, branch, phase]);
    },
    async effects(gid, branch, phase) {
      const res = await query(
        `SELECT count(*)::int AS n FROM ${effects} WHERE gid = $1 AND branch = $2 AND phase = $3`,
        [gid, branch, phase],
      );
      return Number(res.rows[0]?.n);
    },
    async rows(gid, branch) {
      const res = await query(
        `SELECT phase || ':' || reason AS r FROM "${store.schema}".tcc_barrier WHERE gid = $1 AND branch = $2 ORDER BY 1`,
        [gid, branch],
      );
      return res.rows.map((r) => String(r.r));
    },
  };
}

const newGid = () => `g-${randomBytes(6).toString('hex')}`;

/** The cases that need one transaction at a time: run on PostgreSQL and on PGlite. */
function sequentialCases<Tx>(bed: () => Bed<Tx>): void {
  /** Runs `phase` under the barrier with its effect. */
  const run = (gid: string, branch: string, phase: BranchPhase) => {
    const b = bed();
    return b.barrier.run({ gid, branch }, phase, async (tx) => {
      await b.effect(tx, gid, branch, phase);
      return `${phase} ran`;
    });
  };

  it('runs a try and its confirm once each, and returns what the phase returned', async () => {
    const gid = newGid();
    assert.deepEqual(await run(gid, 'stock', 'try'), { status: 'done', value: 'try ran' });
    assert.deepEqual(await run(gid, 'stock', 'confirm'), { status: 'done', value: 'confirm ran' });
    assert.equal(await bed().effects(gid, 'stock', 'try'), 1);
    assert.equal(await bed().effects(gid, 'stock', 'confirm'), 1);
    assert.deepEqual(await bed().rows(gid, 'stock'), ['confirm:confirm', 'try:try']);
  });

  it('answers a repeated try, confirm and cancel as duplicates without running them again', async () => {
    const confirmed = newGid();
    await run(confirmed, 'stock', 'try');
    assert.deepEqual(await run(confirmed, 'stock', 'try'), { status: 'duplicate' });
    await run(confirmed, 'stock', 'confirm');
    assert.deepEqual(await run(confirmed, 'stock', 'confirm'), { status: 'duplicate' });
    assert.equal(await bed().effects(confirmed, 'stock', 'try'), 1);
    assert.equal(await bed().effects(confirmed, 'stock', 'confirm'), 1);

    const cancelled = newGid();
    await run(cancelled, 'stock', 'try');
    assert.equal((await run(cancelled, 'stock', 'cancel')).status, 'done');
    assert.deepEqual(await run(cancelled, 'stock', 'cancel'), { status: 'duplicate' });
    assert.equal(await bed().effects(cancelled, 'stock', 'cancel'), 1);
  });

  it('keeps branches apart: the same branch name in another global transaction runs', async () => {
    const [a, b] = [newGid(), newGid()];
    assert.equal((await run(a, 'stock', 'try')).status, 'done');
    assert.equal((await run(b, 'stock', 'try')).status, 'done');
    assert.equal((await run(a, 'payment', 'try')).status, 'done');
    assert.equal(await bed().effects(a, 'stock', 'try'), 1);
    assert.equal(await bed().effects(b, 'stock', 'try'), 1);
    assert.equal(await bed().effects(a, 'payment', 'try'), 1);
  });

  it('records a cancel without a try as a null compensation, and refuses the try that comes after it', async () => {
    const gid = newGid();
    assert.deepEqual(await run(gid, 'stock', 'cancel'), { status: 'null-compensation' });
    assert.equal(await bed().effects(gid, 'stock', 'cancel'), 0, 'the cancel must not run: nothing to undo');
    assert.deepEqual(await run(gid, 'stock', 'cancel'), { status: 'duplicate' });
    assert.equal(await bed().effects(gid, 'stock', 'cancel'), 0);

    await assert.rejects(run(gid, 'stock', 'try'), (err: unknown) => {
      assert.ok(err instanceof BranchRefusedError);
      assert.ok(isBranchRefused(err));
      assert.match(err.message, /already cancelled/);
      assert.ok(err.message.includes(gid) && err.message.includes('stock'), err.message);
      return true;
    });
    assert.equal(await bed().effects(gid, 'stock', 'try'), 0, 'a hanging try must reserve nothing');
    assert.deepEqual(await bed().rows(gid, 'stock'), ['cancel:cancel', 'try:cancel']);
  });

  it('rolls back the barrier row with a failed try, so the try can run again', async () => {
    const gid = newGid();
    const boom = new Error('the stock table is locked');
    const b = bed();
    await assert.rejects(
      b.barrier.try({ gid, branch: 'stock' }, async (tx) => {
        await b.effect(tx, gid, 'stock', 'try');
        throw boom;
      }),
      (err) => err === boom,
    );
    assert.equal(await b.effects(gid, 'stock', 'try'), 0);
    assert.deepEqual(await b.rows(gid, 'stock'), []);
    assert.equal((await run(gid, 'stock', 'try')).status, 'done');
    assert.equal(await b.effects(gid, 'stock', 'try'), 1);
  });

  it('rethrows a business refusal unchanged and leaves the branch free for a null compensation', async () => {
    const gid = newGid();
    const refusal = new BranchRefusedError('only 1 of A-1 left');
    await assert.rejects(
      bed().barrier.try({ gid, branch: 'stock' }, async () => {
        throw refusal;
      }),
      (err) => err === refusal,
    );
    assert.deepEqual(await run(gid, 'stock', 'cancel'), { status: 'null-compensation' });
  });

  it('gives saga actions and compensations the same protection', async () => {
    const done = newGid();
    assert.equal((await run(done, 'charge', 'action')).status, 'done');
    assert.deepEqual(await run(done, 'charge', 'action'), { status: 'duplicate' });
    assert.equal((await run(done, 'charge', 'compensate')).status, 'done');
    assert.deepEqual(await run(done, 'charge', 'compensate'), { status: 'duplicate' });
    assert.equal(await bed().effects(done, 'charge', 'action'), 1);
    assert.equal(await bed().effects(done, 'charge', 'compensate'), 1);

    const never = newGid();
    assert.deepEqual(await run(never, 'charge', 'compensate'), { status: 'null-compensation' });
    await assert.rejects(run(never, 'charge', 'action'), (err: unknown) => {
      assert.ok(isBranchRefused(err));
      assert.match((err as Error).message, /already compensated/);
      return true;
    });
    assert.equal(await bed().effects(never, 'charge', 'action'), 0);
    assert.equal(await bed().effects(never, 'charge', 'compensate'), 0);
    assert.deepEqual(await bed().rows(never, 'charge'), ['action:compensate', 'compensate:compensate']);
  });

  it('refuses phase orders a correct coordinator never sends, running nothing', async () => {
    const noTry = newGid();
    await assert.rejects(run(noTry, 'stock', 'confirm'), (err: unknown) => {
      assert.ok(err instanceof BarrierOrderError);
      assert.match(err.message, /has no try.*coordinator bug/);
      return true;
    });
    assert.deepEqual(await bed().rows(noTry, 'stock'), [], 'the refused confirm leaves no row');

    const cancelled = newGid();
    await run(cancelled, 'stock', 'try');
    await run(cancelled, 'stock', 'cancel');
    await assert.rejects(run(cancelled, 'stock', 'confirm'), BarrierOrderError);

    const nullCompensated = newGid();
    await run(nullCompensated, 'stock', 'cancel');
    await assert.rejects(run(nullCompensated, 'stock', 'confirm'), BarrierOrderError);

    const confirmed = newGid();
    await run(confirmed, 'stock', 'try');
    await run(confirmed, 'stock', 'confirm');
    await assert.rejects(run(confirmed, 'stock', 'cancel'), /already confirmed.*coordinator bug/);
    assert.equal(await bed().effects(confirmed, 'stock', 'cancel'), 0);
    assert.equal(await bed().effects(cancelled, 'stock', 'confirm'), 0);
  });
}

describe('TccBarrier on PostgreSQL', () => {
  let db: TestDb;
  let bed: Bed<Parameters<PostgresStore['executor']>[0]>;

  before(async () => {
    db = await createTestDb('tcc_bar');
    bed = await makeBed(db.store);
  });
  after(async () => {
    await db.drop();
  });

  sequentialCases(() => bed);

  /** Resolves once a statement on the barrier table of this file's schema waits for a lock. */
  const someoneWaits = () =>
    waitUntil(async () => {
      const res = await db.pool.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND query LIKE $1`,
        [`%"${db.schema}".tcc_barrier%`],
      );
      return res.rows[0].n > 0;
    }, 'a barrier insert waiting for the first transaction');

  /** A phase that holds its transaction open until `release` is called. */
  function held(gid: string, branch: string, phase: BranchPhase, outcome: 'commit' | 'rollback' = 'commit') {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let entered!: () => void;
    const inside = new Promise<void>((resolve) => (entered = resolve));
    const done = bed.barrier.run({ gid, branch }, phase, async (tx) => {
      await bed.effect(tx, gid, branch, phase);
      entered();
      await gate;
      if (outcome === 'rollback') throw new Error('the first copy fails');
      return 'first';
    });
    return { inside, release, done };
  }

  const runEffect = (gid: string, branch: string, phase: BranchPhase) =>
    bed.barrier.run({ gid, branch }, phase, async (tx) => {
      await bed.effect(tx, gid, branch, phase);
      return 'second';
    });

  it('runs two concurrent copies of a try once: the second waits for the first and is a duplicate', async () => {
    const gid = newGid();
    const first = held(gid, 'stock', 'try');
    await first.inside;
    let secondSettled = false;
    const second = runEffect(gid, 'stock', 'try').finally(() => (secondSettled = true));
    await someoneWaits();
    assert.equal(secondSettled, false, 'the second copy must wait for the first transaction');
    first.release();
    assert.deepEqual(await first.done, { status: 'done', value: 'first' });
    assert.deepEqual(await second, { status: 'duplicate' });
    assert.equal(await bed.effects(gid, 'stock', 'try'), 1);
  });

  it('runs the waiting copy when the first copy rolls back', async () => {
    const gid = newGid();
    const first = held(gid, 'stock', 'try', 'rollback');
    await first.inside;
    const second = runEffect(gid, 'stock', 'try');
    await someoneWaits();
    first.release();
    await assert.rejects(first.done, /the first copy fails/);
    assert.deepEqual(await second, { status: 'done', value: 'second' });
    assert.equal(await bed.effects(gid, 'stock', 'try'), 1);
  });

  it('runs two concurrent copies of a cancel once', async () => {
    const gid = newGid();
    await runEffect(gid, 'stock', 'try');
    const first = held(gid, 'stock', 'cancel');
    await first.inside;
    const second = runEffect(gid, 'stock', 'cancel');
    await someoneWaits();
    first.release();
    assert.equal((await first.done).status, 'done');
    assert.deepEqual(await second, { status: 'duplicate' });
    assert.equal(await bed.effects(gid, 'stock', 'cancel'), 1);
  });

  it('makes a cancel that races an open try wait: it undoes a try that commits', async () => {
    const gid = newGid();
    const tryCall = held(gid, 'stock', 'try');
    await tryCall.inside;
    const cancel = runEffect(gid, 'stock', 'cancel');
    await someoneWaits();
    tryCall.release();
    assert.equal((await tryCall.done).status, 'done');
    assert.deepEqual(await cancel, { status: 'done', value: 'second' });
    assert.equal(await bed.effects(gid, 'stock', 'cancel'), 1);
  });

  it('makes a cancel that races an open try wait: a null compensation when the try rolls back', async () => {
    const gid = newGid();
    const tryCall = held(gid, 'stock', 'try', 'rollback');
    await tryCall.inside;
    const cancel = runEffect(gid, 'stock', 'cancel');
    await someoneWaits();
    tryCall.release();
    await assert.rejects(tryCall.done, /the first copy fails/);
    assert.deepEqual(await cancel, { status: 'null-compensation' });
    assert.equal(await bed.effects(gid, 'stock', 'cancel'), 0);
    await assert.rejects(runEffect(gid, 'stock', 'try'), BranchRefusedError);
    assert.equal(await bed.effects(gid, 'stock', 'try'), 0);
  });

  it('refuses a try that waited for a cancel of the same branch which committed first', async () => {
    const gid = newGid();
    // A null compensation held open: its row on the try's key is not yet committed.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let marked!: () => void;
    const inserted = new Promise<void>((resolve) => (marked = resolve));
    const store = db.store;
    const cancel = store.transaction(async (tx) => {
      await store
        .executor(tx)
        .execute(
          `INSERT INTO "${db.schema}".tcc_barrier (gid, branch, phase, reason) VALUES ($1, 'stock', 'try', 'cancel')`,
          [gid],
        );
      marked();
      await gate;
    });
    await inserted;
    // Expected at once: the try rejects as soon as the cancel commits.
    const refused = assert.rejects(runEffect(gid, 'stock', 'try'), BranchRefusedError);
    await someoneWaits();
    release();
    await cancel;
    await refused;
    assert.equal(await bed.effects(gid, 'stock', 'try'), 0);
  });

  it('prunes rows older than the given age, a batch at a time', async () => {
    const old = [newGid(), newGid(), newGid()];
    for (const gid of old) await runEffect(gid, 'prune', 'try');
    const fresh = newGid();
    await runEffect(fresh, 'prune', 'try');
    await db.pool.query(
      `UPDATE "${db.schema}".tcc_barrier SET created_at = now() - interval '8 days' WHERE gid = ANY($1)`,
      [old],
    );
    const before = Number(
      (await db.pool.query(`SELECT count(*)::int AS n FROM "${db.schema}".tcc_barrier`)).rows[0].n,
    );
    assert.equal(await bed.barrier.prune({ limit: 2 }), 3);
    const left = await db.pool.query(`SELECT gid FROM "${db.schema}".tcc_barrier WHERE branch = 'prune'`);
    assert.deepEqual(
      left.rows.map((r) => r.gid),
      [fresh],
    );
    const afterCount = Number(
      (await db.pool.query(`SELECT count(*)::int AS n FROM "${db.schema}".tcc_barrier`)).rows[0].n,
    );
    assert.equal(afterCount, before - 3);
    assert.equal(await bed.barrier.prune({ olderThanMs: 7 * 86_400_000 }), 0);
  });

  it('refuses bad references, phases and stores with errors that name the value', async () => {
    const ref = { gid: newGid(), branch: 'stock' };
    const fn = async () => 'never';
    await assert.rejects(bed.barrier.run({ ...ref, gid: '' }, 'try', fn), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.key, 'gid');
      assert.match(err.message, /1 to 128 bytes, got 0 bytes/);
      return true;
    });
    await assert.rejects(
      bed.barrier.run({ ...ref, branch: 'é'.repeat(65) }, 'try', fn),
      /branch.*got 130 bytes/,
    );
    await assert.rejects(
      bed.barrier.run(ref, 'commit' as BranchPhase, fn),
      /phase must be one of try, confirm, cancel, action, compensate, got "commit"/,
    );
    assert.throws(
      () => new TccBarrier({ store: { schema: 's' } as unknown as BarrierStore }),
      /lacks transaction\(\).*PostgresStore or PGliteStore/,
    );
    assert.throws(
      () => new TccBarrier({ store: db.store, retries: 3 } as never),
      /unknown TccBarrier option "retries"/,
    );

    const unmigrated = new PostgresStore({ pool: db.pool, schema: `${db.schema}_none` });
    await assert.rejects(new TccBarrier({ store: unmigrated }).try(ref, fn), (err: unknown) => {
      assert.ok(err instanceof StoreError);
      assert.equal(err.code, 'schema_missing');
      assert.match(err.message, /run the store's migrations/);
      return true;
    });
  });
});

describe('TccBarrier on PGlite', () => {
  // The concurrent cases need two connections; PGlite is one, so they run on PostgreSQL only.
  let store: PGliteStore;
  let bed: Bed<Parameters<PGliteStore['executor']>[0]>;

  before(async () => {
    store = await PGliteStore.connect();
    await store.migrate();
    bed = await makeBed(store);
  });
  after(async () => {
    await store.close();
  });

  sequentialCases(() => bed);
});
