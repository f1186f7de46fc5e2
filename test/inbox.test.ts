import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import {
  ConfigError,
  Inbox,
  InvalidMessageError,
  Outbox,
  toReceivedMessage,
  uuidv7,
  type ReceivedMessage,
} from '../src/index.js';
import { PGliteStore } from '../src/stores/pglite/index.js';
import { createTestDb, type TestDb } from './helpers/postgres.js';

function message(id = uuidv7(), extra: Partial<ReceivedMessage> = {}): ReceivedMessage {
  return {
    id,
    topic: 'order.created',
    key: null,
    type: null,
    headers: {},
    contentType: 'application/json',
    body: Buffer.from('{}'),
    payload: {},
    ackTo: null,
    attempt: 1,
    createdAt: new Date(),
    ...extra,
  };
}

describe('Inbox on PostgreSQL', () => {
  let db: TestDb;
  let effects: string;

  before(async () => {
    db = await createTestDb('inbox');
    effects = `"${db.schema}".effects`;
    await db.pool.query(`CREATE TABLE ${effects} (message_id uuid NOT NULL, note text)`);
  });
  after(async () => {
    await db.drop();
  });

  const countEffects = async (id: string) =>
    Number(
      (await db.pool.query(`SELECT count(*)::int AS n FROM ${effects} WHERE message_id = $1`, [id])).rows[0]
        .n,
    );

  it('runs the handler once per id: copies are duplicates, and the effect is written once', async () => {
    const inbox = new Inbox({ store: db.store, consumer: 'billing' });
    const m = message();
    let runs = 0;
    const handler = async (tx: pg.PoolClient) => {
      runs++;
      await tx.query(`INSERT INTO ${effects} (message_id) VALUES ($1)`, [m.id]);
      return 'done';
    };
    const results = [];
    for (let i = 0; i < 3; i++) results.push(await inbox.handle(m, (tx) => handler(tx as pg.PoolClient)));
    assert.deepEqual(results[0], { status: 'processed', value: 'done' });
    assert.deepEqual(results[1], { status: 'duplicate' });
    assert.deepEqual(results[2], { status: 'duplicate' });
    assert.equal(runs, 1);
    assert.equal(await countEffects(m.id), 1);
  });

  it('keeps records per consumer: another service processes the same message too', async () => {
    const m = message();
    const a = new Inbox({ store: db.store, consumer: 'svc-a' });
    const b = new Inbox({ store: db.store, consumer: 'svc-b' });
    assert.equal((await a.handle(m, async () => 1)).status, 'processed');
    assert.equal((await b.handle(m, async () => 1)).status, 'processed');
    assert.equal((await b.handle(m, async () => 1)).status, 'duplicate');
  });

  it('rolls back the record and the effects of a handler that throws, and rethrows; a retry processes it', async () => {
    const inbox = new Inbox({ store: db.store, consumer: 'billing' });
    const m = message();
    const boom = new Error('handler failed');
    await assert.rejects(
      inbox.handle(m, async (tx) => {
        await (tx as pg.PoolClient).query(`INSERT INTO ${effects} (message_id) VALUES ($1)`, [m.id]);
        throw boom;
      }),
      (err) => err === boom,
    );
    assert.equal(await countEffects(m.id), 0);
    const records = await db.pool.query(`SELECT 1 FROM "${db.schema}".inbox WHERE id = $1`, [m.id]);
    assert.equal(records.rowCount, 0, 'no inbox record after a failed handler');
    const retry = await inbox.handle(m, async (tx) => {
      await (tx as pg.PoolClient).query(`INSERT INTO ${effects} (message_id) VALUES ($1)`, [m.id]);
    });
    assert.equal(retry.status, 'processed');
    assert.equal(await countEffects(m.id), 1);
  });

  it('lets two copies handled at once produce one effect: the second waits for the first and is a duplicate', async () => {
    const inbox = new Inbox({ store: db.store, consumer: 'billing' });
    const m = message();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = inbox.handle(m, async (tx) => {
      await (tx as pg.PoolClient).query(`INSERT INTO ${effects} (message_id) VALUES ($1)`, [m.id]);
      await gate;
    });
    await new Promise((r) => setTimeout(r, 100));
    let secondRan = false;
    const second = inbox.handle(m, async () => {
      secondRan = true;
    });
    await new Promise((r) => setTimeout(r, 200));
    release();
    const [r1, r2] = await Promise.all([first, second]);
    assert.equal(r1.status, 'processed');
    assert.equal(r2.status, 'duplicate');
    assert.equal(secondRan, false);
    assert.equal(await countEffects(m.id), 1);
  });

  it('processes a copy whose first handling rolled back while the copy waited', async () => {
    const inbox = new Inbox({ store: db.store, consumer: 'billing' });
    const m = message();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = inbox.handle(m, async () => {
      await gate;
      throw new Error('first copy fails');
    });
    await new Promise((r) => setTimeout(r, 100));
    const second = inbox.handle(m, async (tx) => {
      await (tx as pg.PoolClient).query(`INSERT INTO ${effects} (message_id) VALUES ($1)`, [m.id]);
    });
    release();
    await assert.rejects(first, /first copy fails/);
    assert.equal((await second).status, 'processed');
    assert.equal(await countEffects(m.id), 1);
  });

  it('commits follow-up messages enqueued with tx together with the record, and drops them on rollback', async () => {
    const outbox = new Outbox({ store: db.store });
    const inbox = new Inbox({ store: db.store, consumer: 'billing', outbox });
    const ok = message();
    await inbox.handle(ok, async (tx) => {
      await outbox.enqueue(tx, { topic: 'invoice.created', payload: { for: ok.id } });
    });
    const failed = message();
    await assert.rejects(
      inbox.handle(failed, async (tx) => {
        await outbox.enqueue(tx, { topic: 'invoice.created', payload: { for: failed.id } });
        throw new Error('no');
      }),
    );
    const rows = await db.pool.query(
      `SELECT convert_from(payload, 'UTF8')::jsonb->>'for' AS f FROM "${db.schema}".outbox WHERE topic = 'invoice.created'`,
    );
    assert.deepEqual(
      rows.rows.map((r) => r.f),
      [ok.id],
    );
  });

  it('enqueues the acknowledgement the sender asked for in the handler transaction, with the result, and none on rollback', async () => {
    const inbox = new Inbox({ store: db.store, consumer: 'billing' });
    const asked = message(uuidv7(), { ackTo: 'orders.acks' });
    await inbox.handle(asked, async (_tx, ctx) => ctx.ack({ invoice: 42 }));
    const rolledBack = message(uuidv7(), { ackTo: 'orders.acks' });
    await assert.rejects(
      inbox.handle(rolledBack, async () => {
        throw new Error('rolled back');
      }),
    );
    const notAsked = message();
    await inbox.handle(notAsked, async (_tx, ctx) => ctx.ack('ignored'));
    const acks = await db.pool.query(
      `SELECT topic, type, convert_from(payload, 'UTF8')::jsonb AS p FROM "${db.schema}".outbox WHERE type = 'mailroom.ack'`,
    );
    assert.equal(acks.rowCount, 1, 'one acknowledgement: none for a rollback, none unasked');
    assert.equal(acks.rows[0].topic, 'orders.acks');
    assert.deepEqual(acks.rows[0].p, { id: asked.id, consumer: 'billing', result: { invoice: 42 } });
  });

  it('with autoAck false, acknowledges only when the handler calls ack()', async () => {
    const inbox = new Inbox({ store: db.store, consumer: 'manual', autoAck: false });
    const silent = message(uuidv7(), { ackTo: 'manual.acks' });
    const explicit = message(uuidv7(), { ackTo: 'manual.acks' });
    await inbox.handle(silent, async () => undefined);
    await inbox.handle(explicit, async (_tx, ctx) => ctx.ack());
    const acks = await db.pool.query(
      `SELECT convert_from(payload, 'UTF8')::jsonb->>'id' AS id FROM "${db.schema}".outbox WHERE topic = 'manual.acks'`,
    );
    assert.deepEqual(
      acks.rows.map((r) => r.id),
      [explicit.id],
    );
  });

  it('refuses a retention shorter than the redelivery window, a bad consumer and a message without a UUID id', async () => {
    assert.throws(
      () =>
        new Inbox({ store: db.store, consumer: 'x', retentionMs: 3_600_000, maxRedeliveryMs: 86_400_000 }),
      (err: unknown) =>
        err instanceof ConfigError &&
        /retentionMs \(3600000 ms\) is shorter than maxRedeliveryMs/.test(err.message),
    );
    assert.throws(() => new Inbox({ store: db.store, consumer: '' }), ConfigError);
    assert.throws(
      () => new Inbox({ store: db.store, consumer: 'x', retries: 3 } as never),
      (err: unknown) => err instanceof ConfigError && /retries/.test(err.message),
    );
    const inbox = new Inbox({ store: db.store, consumer: 'x' });
    await assert.rejects(
      inbox.handle(message('not-a-uuid'), async () => 1),
      InvalidMessageError,
    );
  });

  it('prunes records past the retention in bounded batches, and never one inside it', async () => {
    const inbox = new Inbox({
      store: db.store,
      consumer: 'pruner',
      retentionMs: 2 * 86_400_000,
      maxRedeliveryMs: 86_400_000,
      pruneBatchSize: 7,
    });
    const old: string[] = [];
    const recent: string[] = [];
    for (let i = 0; i < 20; i++) {
      const m = message();
      await inbox.handle(m, async () => undefined);
      (i < 15 ? old : recent).push(m.id);
    }
    await db.pool.query(
      `UPDATE "${db.schema}".inbox SET processed_at = now() - interval '3 days' WHERE id = ANY($1::uuid[])`,
      [old],
    );
    // Just inside the retention: must stay.
    await db.pool.query(
      `UPDATE "${db.schema}".inbox SET processed_at = now() - interval '47 hours' WHERE id = ANY($1::uuid[])`,
      [recent],
    );
    assert.equal(await inbox.prune(), 15);
    const left = await db.pool.query(`SELECT id::text FROM "${db.schema}".inbox WHERE consumer = 'pruner'`);
    assert.deepEqual(left.rows.map((r) => r.id).sort(), [...recent].sort());
    // A pruned id is processed again: why retention must outlast every redelivery.
    assert.equal((await inbox.handle(message(old[0]), async () => undefined)).status, 'processed');
    assert.equal((await inbox.handle(message(recent[0]), async () => undefined)).status, 'duplicate');
  });

  it('hands the handler the decoded message of an outbox message', () => {
    const m = toReceivedMessage({
      seq: '1',
      id: uuidv7(),
      topic: 't',
      key: 'k',
      type: 'x',
      payload: Buffer.from('{"a":1}'),
      contentType: 'application/json',
      headers: { 'mailroom-ack-to': 'acks', trace: 'abc' },
      createdAt: new Date(),
      attempts: 2,
    });
    assert.deepEqual(m.payload, { a: 1 });
    assert.deepEqual(m.headers, { trace: 'abc' });
    assert.equal(m.ackTo, 'acks');
    assert.equal(m.attempt, 2);
  });
});

describe('Inbox on PGlite', () => {
  it('processes once, rolls back a failed handler, and enqueues its acknowledgement', async () => {
    const store = await PGliteStore.connect();
    try {
      await store.migrate();
      await store.db.query('CREATE TABLE effects (message_id uuid)');
      const inbox = new Inbox({ store, consumer: 'edge' });
      const m = message(uuidv7(), { ackTo: 'acks' });
      const effect = async (tx: unknown) => {
        await (tx as pg.PoolClient).query('INSERT INTO effects VALUES ($1)', [m.id]);
      };
      await assert.rejects(
        inbox.handle(m, async (tx) => {
          await effect(tx);
          throw new Error('first try fails');
        }),
      );
      assert.equal((await inbox.handle(m, effect)).status, 'processed');
      assert.equal((await inbox.handle(m, effect)).status, 'duplicate');
      const n = await store.db.query('SELECT count(*)::int AS n FROM effects');
      assert.equal(n.rows[0]?.n, 1);
      const acks = await store.db.query(
        "SELECT count(*)::int AS n FROM mailroom.outbox WHERE type = 'mailroom.ack'",
      );
      assert.equal(acks.rows[0]?.n, 1);
    } finally {
      await store.close();
    }
  });
});
