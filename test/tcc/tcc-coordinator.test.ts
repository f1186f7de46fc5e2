import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { ConfigError } from '../../src/index.js';
import {
  BranchRefusedError,
  GlobalTransactionAbortedError,
  TccCoordinator,
  TccStateStore,
  type BranchCall,
  type DecisionInfo,
  type TccParticipant,
} from '../../src/tcc/index.js';
import { createTestDb, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';

/** An in-process participant that counts its calls and can be told to fail. */
function fake(
  name: string,
  log: string[],
  behaviour: Partial<Record<'try' | 'confirm' | 'cancel', (n: number) => unknown>> = {},
) {
  const calls = { try: 0, confirm: 0, cancel: 0 };
  const p: TccParticipant<{ n: number } | null, string> & { calls: typeof calls } = {
    calls,
    async try(call: BranchCall<{ n: number } | null>) {
      calls.try++;
      log.push(`${name}.try`);
      await behaviour.try?.(calls.try);
      return `${name}:${call.input?.n ?? 0}`;
    },
    async confirm() {
      calls.confirm++;
      log.push(`${name}.confirm`);
      await behaviour.confirm?.(calls.confirm);
    },
    async cancel() {
      calls.cancel++;
      log.push(`${name}.cancel`);
      await behaviour.cancel?.(calls.cancel);
    },
  };
  return p;
}

describe('TccCoordinator on PostgreSQL', () => {
  let db: TestDb;
  const coordinators: TccCoordinator<pg.PoolClient>[] = [];
  const make = (options: Partial<ConstructorParameters<typeof TccCoordinator<pg.PoolClient>>[0]> = {}) => {
    const c = new TccCoordinator<pg.PoolClient>({ store: db.store as never, ...options });
    coordinators.push(c);
    return c;
  };

  before(async () => {
    db = await createTestDb('tcc');
  });
  after(async () => {
    await Promise.all(coordinators.map((c) => c.close()));
    await db.drop();
  });

  const row = async (gid: string) =>
    (await db.pool.query(`SELECT * FROM "${db.schema}".tcc_transaction WHERE gid = $1`, [gid])).rows[0];
  const branchStates = async (gid: string) =>
    Object.fromEntries(
      (
        await db.pool.query(`SELECT branch, state FROM "${db.schema}".tcc_branch WHERE gid = $1`, [gid])
      ).rows.map((r: { branch: string; state: string }) => [r.branch, r.state]),
    );

  it('confirms every branch once after all tries succeed, and enqueues the confirm-only message with the decision', async () => {
    const log: string[] = [];
    const a = fake('inventory', log);
    const b = fake('payment', log);
    const tcc = make();
    const result = await tcc.run(async (t) => {
      const r1 = await t.try('inventory', a, { n: 1 });
      const r2 = await t.try('payment', b, { n: 2 });
      t.publishIfConfirmed({ topic: 'orders.confirmed', key: 'o1', payload: { r1, r2 } });
      return [r1, r2];
    });
    assert.equal(result.state, 'confirmed');
    assert.deepEqual(result.value, ['inventory:1', 'payment:2']);
    assert.deepEqual(log.slice(0, 2), ['inventory.try', 'payment.try']);
    assert.deepEqual(log.slice(2).sort(), ['inventory.confirm', 'payment.confirm']);
    assert.deepEqual(
      [a.calls, b.calls],
      [
        { try: 1, confirm: 1, cancel: 0 },
        { try: 1, confirm: 1, cancel: 0 },
      ],
    );
    assert.equal((await row(result.gid)).state, 'confirmed');
    assert.deepEqual(await branchStates(result.gid), { inventory: 'confirmed', payment: 'confirmed' });
    const out = await db.pool.query(
      `SELECT payload FROM "${db.schema}".outbox WHERE topic = 'orders.confirmed'`,
    );
    assert.equal(out.rows.length, 1);
  });

  it('cancels every started branch (the refusing one too) when a try refuses, and starts no later try', async () => {
    const log: string[] = [];
    const a = fake('inventory', log);
    const b = fake('payment', log, {
      try: () => {
        throw new BranchRefusedError('insufficient funds');
      },
    });
    const c = fake('shipping', log);
    const tcc = make();
    let gid = '';
    await assert.rejects(
      tcc.run(async (t) => {
        gid = t.gid;
        await t.try('inventory', a);
        await t.try('payment', b);
        await t.try('shipping', c);
      }),
      (err: unknown) => {
        assert.ok(err instanceof GlobalTransactionAbortedError);
        assert.equal(err.state, 'cancelled');
        assert.equal(err.branch, 'payment');
        assert.match(err.reason, /payment refused: .*insufficient funds/);
        return true;
      },
    );
    assert.equal(c.calls.try, 0);
    assert.deepEqual([a.calls.cancel, b.calls.cancel, a.calls.confirm, b.calls.confirm], [1, 1, 0, 0]);
    assert.deepEqual(await branchStates(gid), { inventory: 'cancelled', payment: 'cancelled' });
    const r = await row(gid);
    assert.equal(r.state, 'cancelled');
    assert.match(r.reason, /insufficient funds/);
  });

  it('cancels when the body throws, and when an in-process try outlives callTimeoutMs (outcome unknown)', async () => {
    const log: string[] = [];
    const a = fake('inventory', log);
    const tcc = make({ callTimeoutMs: 100 });
    await assert.rejects(
      tcc.run(async (t) => {
        await t.try('inventory', a);
        throw new Error('order validation failed');
      }),
      /body threw: Error: order validation failed/,
    );
    assert.equal(a.calls.cancel, 1);
    const slow = fake('slow', log, { try: () => new Promise((r) => setTimeout(r, 400)) });
    let gid = '';
    await assert.rejects(
      tcc.run(async (t) => {
        gid = t.gid;
        await t.try('slow', slow);
      }),
      (err: unknown) =>
        err instanceof GlobalTransactionAbortedError && /slow failed \(outcome unknown\)/.test(err.reason),
    );
    assert.equal(slow.calls.cancel, 1, 'a try with an unknown outcome is cancelled: it may have run');
    assert.deepEqual(await branchStates(gid), { slow: 'cancelled' });
  });

  it('retries a failing confirm until it succeeds', async () => {
    const log: string[] = [];
    const a = fake('inventory', log, {
      confirm: (n) => {
        if (n < 3) throw new Error(`confirm down (${n})`);
      },
    });
    const tcc = make({ retry: { baseDelayMs: 10, maxDelayMs: 40 } });
    const result = await tcc.run(async (t) => {
      await t.try('inventory', a);
    });
    assert.equal(result.state, 'confirmed');
    assert.equal(a.calls.confirm, 3);
  });

  it('returns "confirming" after settleWaitMs, and a recovery worker with the participant registered finishes it', async () => {
    const log: string[] = [];
    let healthy = false;
    const a = fake('ledger', log, {
      confirm: () => {
        if (!healthy) throw new Error('ledger down');
      },
    });
    const tcc = make({ settleWaitMs: 50, retry: { baseDelayMs: 10, maxDelayMs: 20 } });
    const result = await tcc.run(async (t) => {
      await t.try('ledger', a);
    });
    assert.equal(result.state, 'confirming');
    const stored = await row(result.gid);
    assert.equal(stored.owner, null, 'the lease is given back to recovery');
    assert.match(stored.last_error, /ledger down/);
    healthy = true;
    const recovery = make({
      participants: { ledger: a },
      retry: { baseDelayMs: 10, maxDelayMs: 20 },
    }).start();
    await waitUntil(async () => (await row(result.gid)).state === 'confirmed', 'recovery to confirm', 10_000);
    assert.ok(a.calls.confirm >= 2);
    await recovery.close();
  });

  it('stopped between two confirms, recovery confirms only the branch left, exactly once each', async () => {
    const log: string[] = [];
    const a = fake('inventory', log);
    let paymentUp = false;
    const b = fake('payment', log, {
      confirm: () => {
        if (!paymentUp) throw new Error('payment unreachable');
      },
    });
    // settleWaitMs 0: the run gives up after the first round, as a coordinator that died there.
    const tcc = make({ settleWaitMs: 0 });
    const result = await tcc.run(async (t) => {
      await t.try('inventory', a);
      await t.try('payment', b);
    });
    assert.equal(result.state, 'confirming');
    assert.deepEqual(await branchStates(result.gid), { inventory: 'confirmed', payment: 'tried' });
    paymentUp = true;
    const recovery = make({ participants: { inventory: a, payment: b } });
    await waitUntil(
      async () => (await recovery.recoverOnce()) === 1 && (await row(result.gid)).state === 'confirmed',
      'recovery to confirm',
      10_000,
    );
    assert.equal(a.calls.confirm, 1, 'the confirmed branch is not called again');
    assert.equal(b.calls.confirm, 2);
  });

  it('recovery cancels a transaction whose coordinator died while trying, once its timeout passes', async () => {
    const log: string[] = [];
    const a = fake('inventory', log);
    const state = new TccStateStore(db.store as never);
    const gid = `dead-${Date.now()}`;
    // A coordinator that wrote its branch and then died (lease short, already expired).
    assert.equal(
      await state.begin({
        gid,
        kind: 'tcc',
        timeoutMs: 300,
        owner: 'dead',
        leaseMs: 100,
        meta: { order: 7 },
      }),
      true,
    );
    assert.equal(
      await state.addBranch({
        gid,
        expect: 'trying',
        branch: 'inventory',
        seq: 1,
        participant: { kind: 'local' },
        input: null,
        state: 'trying',
      }),
      'trying',
    );
    const decisions: DecisionInfo[] = [];
    const recovery = make({
      participants: { inventory: a },
      onDecision: async (tx, info) => {
        decisions.push(info);
        await tx.query('SELECT 1');
      },
    });
    assert.equal(await recovery.recoverOnce(), 0, 'not before its timeout');
    await new Promise((r) => setTimeout(r, 350));
    assert.equal(await recovery.recoverOnce(), 1);
    assert.equal((await row(gid)).state, 'cancelled');
    assert.equal(a.calls.cancel, 1);
    assert.equal(decisions.length, 1);
    assert.deepEqual(
      { decision: decisions[0]?.decision, meta: decisions[0]?.meta, byRecovery: decisions[0]?.byRecovery },
      { decision: 'cancel', meta: { order: 7 }, byRecovery: true },
    );
    assert.match(String(decisions[0]?.reason), /timeout/);
  });

  it('recovery leaves a transaction alone while its coordinator renews the lease (a slow confirm in progress)', async () => {
    const log: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const a = fake('inventory', log, { confirm: () => gate });
    const tcc = make({ leaseMs: 300, callTimeoutMs: 5000 });
    const run = tcc.run(async (t) => t.try('inventory', a));
    const other = make({ participants: { inventory: a } });
    await waitUntil(() => a.calls.confirm === 1, 'the confirm to start');
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(await other.recoverOnce(), 0, 'the lease is renewed: recovery must not take it');
    assert.equal(a.calls.confirm, 1);
    release();
    assert.equal((await run).state, 'confirmed');
  });

  it('a run whose transaction recovery cancelled meanwhile neither starts another try nor confirms', async () => {
    const log: string[] = [];
    const a = fake('inventory', log);
    const b = fake('payment', log);
    const tcc = make({ leaseMs: 100 });
    // Renewals stop (as if the coordinator were paused): the lease runs out.
    (tcc as unknown as { hold(gid: string): void }).hold = () => {};
    const other = make({ participants: { inventory: a } });
    let recovered = false;
    const run = tcc.run(
      async (t) => {
        await t.try('inventory', a);
        // Slow application code past the timeout, while recovery cancels.
        await waitUntil(
          async () => (recovered ||= (await other.recoverOnce()) === 1),
          'recovery to take it',
          5000,
        );
        await t.try('payment', b);
      },
      { timeoutMs: 200 },
    );
    await assert.rejects(
      run,
      (err: unknown) => err instanceof GlobalTransactionAbortedError && err.state === 'cancelled',
    );
    assert.equal(b.calls.try, 0, 'no branch is written or called once the transaction is cancelling');
    assert.equal(a.calls.confirm, 0);
    assert.equal(a.calls.cancel, 1);
  });

  it('refuses bad input with typed errors that name the value', async () => {
    const tcc = make();
    const a = fake('x', []);
    assert.throws(() => new TccCoordinator({ store: db.store as never, timeoutMs: -1 }), ConfigError);
    assert.throws(
      () => new TccCoordinator({ store: db.store as never, bogus: 1 } as never),
      /unknown TccCoordinator option "bogus"/,
    );
    assert.throws(
      () =>
        new TccCoordinator({
          store: db.store as never,
          participants: { inv: { try: async () => {} } as never },
        }),
      /lacks confirm, cancel/,
    );
    await assert.rejects(
      tcc.run(async () => {}, { gid: 'has space' }),
      /gid must be 1 to 128 printable/,
    );
    await assert.rejects(
      tcc.run(async () => {}, { bogus: 1 } as never),
      /unknown run option "bogus"/,
    );
    await assert.rejects(
      tcc.run(async (t) => {
        await t.try('x', a);
        await t.try('x', a);
      }),
      (err: unknown) =>
        err instanceof GlobalTransactionAbortedError &&
        /used twice/.test(String((err.cause as Error)?.message ?? err.reason)),
    );
    const gid = `same-${Date.now()}`;
    await tcc.run(async () => {}, { gid });
    await assert.rejects(
      tcc.run(async () => {}, { gid }),
      /exists already \(state confirmed\)/,
    );
  });
});
