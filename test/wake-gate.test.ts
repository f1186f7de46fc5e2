// The wake gate (postgresSql().wakeGate, enqueue(…, 'idle') and the SQL API's enqueue() from
// migration 000006): writers NOTIFY only while a relay holds the gate, and a relay that claims
// after its `arm` returned never sleeps past a committed message that did not notify. Real PostgreSQL: the property rests on how its lock
// manager orders a session lock after transaction-scoped shared holders.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { encodeMessage } from '../src/core/message.js';
import { postgresSql, type PostgresSql } from '../src/stores/postgres/postgres-sql.js';
import { notifyChannel } from '../src/stores/postgres/schema-name.js';
import { createTestDb, DATABASE_URL, type TestDb } from './helpers/postgres.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A client of its own (not from the pool): the gate and LISTEN are session state. */
async function connect(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: DATABASE_URL });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

/** Counts the notifications a LISTEN session receives. */
async function listener(channel: string): Promise<{ client: pg.Client; count: () => number }> {
  const client = await connect();
  let n = 0;
  client.on('notification', () => n++);
  await client.query(`LISTEN "${channel}"`);
  return { client, count: () => n };
}

/** Whether `promise` settles within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((r) => {
    timer = setTimeout(() => r(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

describe('wake gate: NOTIFY only while a relay is idle, no lost wake-up', () => {
  let db: TestDb;
  let sql: PostgresSql;
  let channel: string;
  const clients: pg.Client[] = [];
  const enqueue = (client: pg.Client, topic = 'gate') => {
    const s = sql.enqueue([encodeMessage({ topic, payload: { n: 1 } })], 'idle', false);
    return client.query(s.sql, s.params as unknown[]);
  };
  const open = async () => {
    const c = await connect();
    clients.push(c);
    return c;
  };

  before(async () => {
    db = await createTestDb('mrgate');
    channel = notifyChannel(db.schema);
    sql = postgresSql(db.schema, channel);
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    await db.drop();
  });

  it('a relay arming waits for a writer that skipped the NOTIFY, and its claim then sees the row', async () => {
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
    const listen = await listener(channel);
    clients.push(listen.client);
    const [writer, other, gate] = [await open(), await open(), await open()];

    // No relay idle: the writer takes the shared gate lock and skips the NOTIFY.
    await writer.query('BEGIN');
    await enqueue(writer);

    // The relay is about to sleep and asks for the gate: not granted while the writer runs.
    const arm = gate.query(sql.wakeGate.arm);
    assert.equal(await settlesWithin(arm, 300), false, 'arm returned while a non-notifying writer was open');
    // What a claim would see now: nothing (the writer has not committed). A relay that claimed
    // here, before its arm returned, and then slept would leave the row to the poll.
    assert.equal(await db.count(), 0);

    // While the relay waits for the gate, another writer neither blocks nor skips the NOTIFY.
    await other.query('BEGIN');
    assert.equal(await settlesWithin(enqueue(other), 2_000), true, 'a writer blocked on the gate');
    await other.query('COMMIT');

    await writer.query('COMMIT');
    await arm;
    // Granted only after the writer ended: the claim made now sees both rows.
    assert.equal(await db.count(), 2);
    await sleep(200);
    assert.equal(listen.count(), 1, 'exactly the writer that found the gate taken notified');

    // Gate held (the relay sleeps): every writer notifies.
    await enqueue(writer);
    await enqueue(other);
    await sleep(200);
    assert.equal(listen.count(), 3);

    // Gate released (the relay is busy again): writers stop notifying.
    const res = await gate.query(sql.wakeGate.disarm);
    assert.equal(res.rows[0]?.released, true);
    await enqueue(writer);
    await sleep(200);
    assert.equal(listen.count(), 3);
  });

  it('the SQL API enqueue() uses the same gate by default; mailroom.notify = on always notifies, off never', async () => {
    const listen = await listener(channel);
    clients.push(listen.client);
    const [writer, gate] = [await open(), await open()];
    const sqlEnqueue = (setting?: string) =>
      (async () => {
        await writer.query('BEGIN');
        if (setting !== undefined)
          await writer.query(`SELECT set_config('mailroom.notify', $1, true)`, [setting]);
        await writer.query(`SELECT "${db.schema}".enqueue('sql.gate', '1'::jsonb)`);
        await writer.query('COMMIT');
        await sleep(150);
        return listen.count();
      })();
    // Gate open (no relay idle): the default and 'idle' skip the NOTIFY, 'on' sends one.
    assert.equal(await sqlEnqueue(), 0);
    assert.equal(await sqlEnqueue('idle'), 0);
    assert.equal(await sqlEnqueue('off'), 0);
    assert.equal(await sqlEnqueue('on'), 1);
    // Gate held: every mode but 'off' notifies.
    await gate.query(sql.wakeGate.arm);
    assert.equal(await sqlEnqueue(), 2);
    assert.equal(await sqlEnqueue('idle'), 3);
    assert.equal(await sqlEnqueue('off'), 3);
    assert.equal(await sqlEnqueue('on'), 4);
    await gate.query(sql.wakeGate.disarm);

    // The same lock as the library's: a relay arming waits for an SQL-API writer that skipped.
    await writer.query('BEGIN');
    await writer.query(`SELECT "${db.schema}".enqueue('sql.gate', '1'::jsonb)`);
    const arm = gate.query(sql.wakeGate.arm);
    assert.equal(
      await settlesWithin(arm, 300),
      false,
      'arm returned while an SQL-API writer that skipped was open',
    );
    await writer.query('COMMIT');
    await arm;
    await gate.query(sql.wakeGate.disarm);
    assert.equal(listen.count(), 4);
  });

  it('a rolled-back savepoint gives the shared gate lock back with the row', async () => {
    const [writer, gate] = [await open(), await open()];
    await writer.query('BEGIN');
    await writer.query('SAVEPOINT s');
    await enqueue(writer);
    await writer.query('ROLLBACK TO SAVEPOINT s');
    // The row is gone, so nothing is left for the relay to wait for.
    assert.equal(await settlesWithin(gate.query(sql.wakeGate.arm), 2_000), true);
    await writer.query('ROLLBACK');
    await gate.query(sql.wakeGate.disarm);
  });

  it('writers racing a relay that arms, claims, sleeps and disarms at random: no message waits for the poll', async () => {
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
    const listen = await listener(channel);
    clients.push(listen.client);
    const gate = await open();
    const claimer = await open();
    const watcher = await open();
    let wakes = 0;
    let wake: (() => void) | undefined;
    listen.client.on('notification', () => {
      wakes++;
      wake?.();
    });

    // The relay: claims everything due (a DELETE stands for claim + publish + settle). It has no
    // poll backstop at all: a message that did not wake it stays until the test notices.
    let stop = false;
    let armed = false;
    let claimed = 0;
    const claim = async () => {
      const res = await claimer.query(`DELETE FROM "${db.schema}".outbox RETURNING 1`);
      claimed += res.rows.length;
      return res.rows.length;
    };
    const relayLoop = (async () => {
      while (!stop) {
        const seen = wakes;
        if ((await claim()) > 0 && Math.random() < 0.5) {
          // Busy: give the gate back, so writers stop notifying, and claim again at once.
          if (armed) await gate.query(sql.wakeGate.disarm);
          armed = false;
          continue;
        }
        if (!armed) {
          // About to sleep: take the gate, then look once more before sleeping.
          await gate.query(sql.wakeGate.arm);
          armed = true;
          if ((await claim()) > 0) continue;
        }
        if (wakes !== seen || stop) continue;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    })();

    // Rounds: 4 writers each commit (or now and then roll back) a few messages at once, some
    // lingering in the transaction after the enqueue (the window a relay going idle must wait
    // for); then the outbox must drain with no help but the wake-ups. Pauses of random length
    // between rounds catch the relay in every state.
    const writers = await Promise.all(Array.from({ length: 4 }, () => open()));
    const rounds = 80;
    let written = 0;
    const stuck: number[] = [];
    for (let r = 0; r < rounds; r++) {
      await Promise.all(
        writers.map(async (c, w) => {
          const n = 1 + Math.floor(Math.random() * 3);
          for (let i = 0; i < n; i++) {
            await c.query('BEGIN');
            await enqueue(c, `w${w}`);
            if (Math.random() < 0.5) await sleep(Math.floor(Math.random() * 10));
            if (Math.random() < 0.1) {
              await c.query('ROLLBACK');
            } else {
              await c.query('COMMIT');
              written++;
            }
          }
        }),
      );
      const t0 = performance.now();
      for (;;) {
        const res = await watcher.query(`SELECT count(*)::int AS n FROM "${db.schema}".outbox`);
        if (res.rows[0]?.n === 0) break;
        if (performance.now() - t0 > 1_500) {
          stuck.push(r);
          break;
        }
        await sleep(5);
      }
      await sleep(Math.floor(Math.random() * 25));
    }
    stop = true;
    wake?.();
    await relayLoop;
    await claim();
    if (armed) await gate.query(sql.wakeGate.disarm);

    assert.deepEqual(stuck, [], `rounds whose messages were left waiting for a poll: ${stuck.join(', ')}`);
    assert.equal(claimed, written);
  });
});
