import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import {
  BranchRefusedError,
  GlobalTransactionAbortedError,
  messageStep,
  SAGA_BRANCH_HEADER,
  SAGA_GID_HEADER,
  SAGA_PHASE_HEADER,
  SagaCoordinator,
  sagaReply,
  TccStateStore,
  type SagaParticipant,
} from '../../src/tcc/index.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';
import { waitUntil } from '../helpers/wait.js';

function step(
  name: string,
  log: string[],
  fail: { action?: (n: number) => unknown; compensate?: (n: number) => unknown } = {},
) {
  const calls = { action: 0, compensate: 0 };
  const p: SagaParticipant<null, string> & { calls: typeof calls } = {
    calls,
    async action() {
      calls.action++;
      log.push(`${name}.action`);
      await fail.action?.(calls.action);
      return name;
    },
    async compensate() {
      calls.compensate++;
      log.push(`${name}.compensate`);
      await fail.compensate?.(calls.compensate);
    },
  };
  return p;
}

describe('SagaCoordinator on PostgreSQL', () => {
  let db: TestDb;
  const coordinators: SagaCoordinator<pg.PoolClient>[] = [];
  const make = (options: Partial<ConstructorParameters<typeof SagaCoordinator<pg.PoolClient>>[0]> = {}) => {
    const c = new SagaCoordinator<pg.PoolClient>({ store: db.store as never, ...options });
    coordinators.push(c);
    return c;
  };
  before(async () => {
    db = await createTestDb('saga');
  });
  after(async () => {
    await Promise.all(coordinators.map((c) => c.close()));
    await db.drop();
  });
  const state = async (gid: string) =>
    String(
      (await db.pool.query(`SELECT state FROM "${db.schema}".tcc_transaction WHERE gid = $1`, [gid])).rows[0]
        ?.state,
    );
  const outbox = async (topic: string) =>
    (
      await db.pool.query(
        `SELECT key, headers, payload FROM "${db.schema}".outbox WHERE topic = $1 ORDER BY seq`,
        [topic],
      )
    ).rows;

  it('runs the steps in order and records success with its messages; nothing is compensated', async () => {
    const log: string[] = [];
    const saga = make();
    const result = await saga.run(async (s) => {
      await s.step('reserve', step('reserve', log));
      const value = await s.step(
        'charge',
        async () => {
          log.push('charge.action');
          return 'receipt-1';
        },
        async () => {
          log.push('charge.compensate');
        },
      );
      s.publishIfSucceeded({ topic: 'saga.orders.placed', payload: { value } });
      return value;
    });
    assert.equal(result.state, 'succeeded');
    assert.equal(result.value, 'receipt-1');
    assert.deepEqual(log, ['reserve.action', 'charge.action']);
    assert.equal(await state(result.gid), 'succeeded');
    assert.equal((await outbox('saga.orders.placed')).length, 1);
  });

  it('compensates every started step newest first when one fails, the failed one included', async () => {
    const log: string[] = [];
    const saga = make();
    let gid = '';
    await assert.rejects(
      saga.run(async (s) => {
        gid = s.gid;
        await s.step('reserve', step('reserve', log));
        await s.step('charge', step('charge', log));
        await s.step(
          'ship',
          step('ship', log, { action: () => Promise.reject(new BranchRefusedError('no courier')) }),
        );
        await s.step('notify', step('notify', log));
      }),
      (err: unknown) =>
        err instanceof GlobalTransactionAbortedError && err.state === 'compensated' && err.branch === 'ship',
    );
    assert.deepEqual(log, [
      'reserve.action',
      'charge.action',
      'ship.action',
      'ship.compensate',
      'charge.compensate',
      'reserve.compensate',
    ]);
    assert.equal(await state(gid), 'compensated');
  });

  it('keeps the reverse order while a compensation is retried: an older step waits for the newer one', async () => {
    const log: string[] = [];
    const saga = make({ retry: { baseDelayMs: 5, maxDelayMs: 20 } });
    const charge = step('charge', log, {
      compensate: (n) => {
        if (n < 3) throw new Error('refund service down');
      },
    });
    await assert.rejects(
      saga.run(async (s) => {
        await s.step('reserve', step('reserve', log));
        await s.step('charge', charge);
        throw new Error('address invalid');
      }),
      GlobalTransactionAbortedError,
    );
    assert.deepEqual(log, [
      'reserve.action',
      'charge.action',
      'charge.compensate',
      'charge.compensate',
      'charge.compensate',
      'reserve.compensate',
    ]);
  });

  it('message steps: the action goes out with the step, the reply completes it, a missing reply compensates by message', async () => {
    const saga = make();
    const shipping = messageStep({
      topic: 'saga.shipping',
      compensateTopic: 'saga.shipping.cancel',
      replyTo: 'saga.replies',
    });
    const billing = messageStep({ topic: 'saga.billing', replyTo: 'saga.replies' });
    const log: string[] = [];
    // The receiving side: answers the shipping request (as an inbox handler would, in its tx).
    let answered = false;
    const receiver = (async () => {
      await waitUntil(async () => (await outbox('saga.shipping')).length === 1, 'the shipping request');
      const [request] = await outbox('saga.shipping');
      assert.equal(request.headers[SAGA_PHASE_HEADER], 'action');
      const reply = sagaReply({ headers: request.headers }, { ok: true, result: { tracking: 'T1' } });
      assert.equal(reply.topic, 'saga.replies');
      await inTransaction(db.pool, async (tx) => {
        const payload = reply.payload as { gid: string; branch: string; result: { tracking: string } };
        answered = await saga.reply(tx, {
          gid: payload.gid,
          branch: payload.branch,
          ok: true,
          result: payload.result,
        });
      });
    })();
    let gid = '';
    await assert.rejects(
      saga.run(
        async (s) => {
          gid = s.gid;
          await s.step('reserve', step('reserve', log));
          const shipped = await s.step('ship', shipping, { parcel: 1 });
          assert.deepEqual(shipped, { tracking: 'T1' });
          await s.step('bill', billing, { amount: 5 }); // nobody answers: the saga times out
        },
        { timeoutMs: 1500 },
      ),
      (err: unknown) => err instanceof GlobalTransactionAbortedError && err.branch === 'bill',
    );
    await receiver;
    assert.equal(answered, true);
    const cancels = await outbox('saga.shipping.cancel');
    assert.equal(cancels.length, 1, 'the shipped step is compensated by a message');
    assert.equal(cancels[0].key, gid, 'keyed by the saga, so it cannot overtake its action');
    assert.equal(cancels[0].headers[SAGA_GID_HEADER], gid);
    assert.equal(cancels[0].headers[SAGA_BRANCH_HEADER], 'ship');
    const billCancels = (await outbox('saga.billing')).filter(
      (m) => m.headers[SAGA_PHASE_HEADER] === 'compensate',
    );
    assert.equal(billCancels.length, 1, 'an unanswered step is compensated too: its action may have run');
    assert.deepEqual(log, ['reserve.action', 'reserve.compensate']);
    // A late reply to the compensated step records nothing.
    const late = await inTransaction(db.pool, (tx) => saga.reply(tx, { gid, branch: 'bill', ok: true }));
    assert.equal(late, false);
  });

  it('recovery compensates a saga whose coordinator died mid-way, after its timeout', async () => {
    const log: string[] = [];
    const reserve = step('reserve', log);
    const s = new TccStateStore(db.store as never);
    const gid = `saga-dead-${Date.now()}`;
    await s.begin({ gid, kind: 'saga', timeoutMs: 200, owner: 'dead', leaseMs: 50, meta: null });
    await s.addBranch({
      gid,
      expect: 'running',
      branch: 'reserve',
      seq: 1,
      participant: { kind: 'local' },
      input: null,
      state: 'running',
    });
    await s.setBranch(gid, 'reserve', { state: 'done' });
    const recovery = make({ participants: { reserve }, recoveryIntervalMs: 50 }).start();
    await waitUntil(async () => (await state(gid)) === 'compensated', 'recovery to compensate');
    assert.equal(reserve.calls.compensate, 1);
    await recovery.close();
  });
});
