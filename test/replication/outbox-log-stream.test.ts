import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { uuidv7 } from '../../src/index.js';
import {
  compareLsn,
  isReplicationError,
  lsnFromBigInt,
  lsnToBigInt,
  OutboxLogStream,
  ReplicationError,
  XID_VISIBLE_SQL,
  xid8Of,
  type OutboxLogStreamOptions,
  type OutboxTransaction,
} from '../../src/replication/index.js';
import { TcpProxy } from '../../src/testkit/tcp-proxy.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from '../helpers/postgres.js';

/**
 * The outbox log stream against the real PostgreSQL (wal_level = logical). Every slot and
 * publication here starts with the test schema's random name and is dropped in `after`: a slot
 * left behind keeps WAL on the server for good.
 */
describe('OutboxLogStream on PostgreSQL', () => {
  let db: TestDb;
  let outbox: string;
  const streams: OutboxLogStream[] = [];
  const roles: string[] = [];

  before(async () => {
    db = await createTestDb('repl');
    outbox = `"${db.schema}".outbox`;
    await db.pool.query(`CREATE TABLE "${db.schema}".other_traffic (n int, pad text)`);
  });

  after(async () => {
    for (const s of streams) await s.stop();
    const prefix = `${db.schema}_`;
    // A stream that did not stop (a failed test) still holds its slot: end its backend first.
    await db.pool.query(
      `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE starts_with(slot_name, $1) AND active_pid IS NOT NULL`,
      [prefix],
    );
    for (let attempt = 0; attempt < 50; attempt++) {
      const { rows } = await db.pool.query<{ active: number }>(
        `SELECT count(*)::int AS active FROM pg_replication_slots WHERE starts_with(slot_name, $1) AND active`,
        [prefix],
      );
      if (rows[0]?.active === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await db.pool.query(
      `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE starts_with(slot_name, $1)`,
      [prefix],
    );
    const pubs = await db.pool.query<{ pubname: string }>(
      `SELECT pubname FROM pg_publication WHERE starts_with(pubname, $1)`,
      [prefix],
    );
    for (const { pubname } of pubs.rows) await db.pool.query(`DROP PUBLICATION "${pubname}"`);
    for (const role of roles) await db.pool.query(`DROP ROLE IF EXISTS "${role}"`);
    const left = await db.pool.query(
      `SELECT slot_name FROM pg_replication_slots WHERE starts_with(slot_name, $1)`,
      [prefix],
    );
    await db.drop();
    assert.deepEqual(left.rows, [], 'every slot of this file is dropped');
  });

  /** A stream on a slot of its own (`<schema>_<name>`), the shared publication, quick status updates. */
  function openStream(name: string, extra: Partial<OutboxLogStreamOptions> = {}): OutboxLogStream {
    const stream = new OutboxLogStream({
      ...(extra.connection ? {} : { connectionString: DATABASE_URL }),
      schema: db.schema,
      slot: `${db.schema}_${name}`,
      statusIntervalMs: 200,
      timeoutMs: 10_000,
      ...extra,
    });
    streams.push(stream);
    return stream;
  }

  async function insertRow(client: pg.ClientBase | pg.Pool, key: string | null = null): Promise<string> {
    const id = uuidv7();
    await client.query(
      `INSERT INTO ${outbox} (id, topic, key, payload) VALUES ($1, 'test.topic', $2, '\\x7b7d')`,
      [id, key],
    );
    return id;
  }

  /** One committed transaction inserting `n` rows; their ids in insert order. */
  async function commitRows(n = 1, key: string | null = null): Promise<string[]> {
    return inTransaction(db.pool, async (client) => {
      const ids: string[] = [];
      for (let i = 0; i < n; i++) ids.push(await insertRow(client, key));
      return ids;
    });
  }

  async function nextTx(stream: OutboxLogStream, ms = 10_000): Promise<OutboxTransaction> {
    const tx = await stream.next(AbortSignal.timeout(ms));
    assert.ok(tx, 'the stream yields a transaction, not null');
    return tx;
  }

  async function assertNothingWithin(stream: OutboxLogStream, ms: number): Promise<void> {
    await assert.rejects(stream.next(AbortSignal.timeout(ms)), { name: 'TimeoutError' });
  }

  const ids = (tx: OutboxTransaction) => tx.inserts.map((i) => i.id);

  async function slotRow(slot: string) {
    const { rows } = await db.pool.query<{ confirmed_flush_lsn: string; active_pid: number | null }>(
      `SELECT confirmed_flush_lsn::text AS confirmed_flush_lsn, active_pid FROM pg_replication_slots WHERE slot_name = $1`,
      [slot],
    );
    assert.ok(rows[0], `slot ${slot} exists`);
    return rows[0];
  }

  it('creates the publication and slot, and yields interleaved concurrent transactions in commit order', async () => {
    const stream = openStream('order');
    const started = await stream.start();
    assert.equal(started.slotCreated, true);
    assert.equal(started.publicationCreated, true);
    const pub = await db.pool.query(
      `SELECT pubinsert, pubupdate, pubdelete, pubtruncate,
        (SELECT array_agg(schemaname || '.' || tablename) FROM pg_publication_tables t WHERE t.pubname = p.pubname) AS tables
       FROM pg_publication p WHERE pubname = $1`,
      [stream.publication],
    );
    assert.deepEqual(pub.rows[0], {
      pubinsert: true,
      pubupdate: false,
      pubdelete: false,
      pubtruncate: false,
      tables: [`${db.schema}.outbox`],
    });

    const a = await db.pool.connect();
    const b = await db.pool.connect();
    try {
      await a.query('BEGIN');
      await b.query('BEGIN');
      const a1 = await insertRow(a, 'ka');
      const b1 = await insertRow(b, 'kb');
      const a2 = await insertRow(a, 'ka');
      const b2 = await insertRow(b, 'kb');
      await b.query('COMMIT');
      await a.query('COMMIT');

      const first = await nextTx(stream);
      const second = await nextTx(stream);
      assert.deepEqual(ids(first), [b1, b2], 'B committed first, so B comes first');
      assert.deepEqual(ids(second), [a1, a2]);
      assert.deepEqual(
        first.inserts.map((i) => i.key),
        ['kb', 'kb'],
      );
      assert.ok(compareLsn(first.endLsn, second.commitLsn) <= 0, 'positions grow in yield order');
      assert.ok(
        first.beginLsn && compareLsn(second.beginLsn ?? '0/0', first.beginLsn) < 0,
        'A began before B',
      );
      assert.ok(Number(second.inserts[0]?.seq) < Number(first.inserts[0]?.seq), 'A wrote before B (seq)');
      assert.ok(first.commitTime instanceof Date && first.xid > 0);
    } finally {
      a.release();
      b.release();
    }
  });

  it('never yields a rolled-back transaction', async () => {
    const stream = openStream('rollback');
    await stream.start();
    const client = await db.pool.connect();
    try {
      await client.query('BEGIN');
      const rolledBack = await insertRow(client);
      await client.query('ROLLBACK');
      const [committed] = await commitRows(1);
      const tx = await nextTx(stream);
      assert.deepEqual(ids(tx), [committed]);
      assert.ok(!ids(tx).includes(rolledBack));

      // A rolled-back savepoint inside a committed transaction: its row is not in the stream either.
      await client.query('BEGIN');
      const kept1 = await insertRow(client);
      await client.query('SAVEPOINT s');
      const undone = await insertRow(client);
      await client.query('ROLLBACK TO SAVEPOINT s');
      const kept2 = await insertRow(client);
      await client.query('COMMIT');
      const withSavepoint = await nextTx(stream);
      assert.deepEqual(ids(withSavepoint), [kept1, kept2]);
      assert.ok(!ids(withSavepoint).includes(undone));
      await assertNothingWithin(stream, 500);
    } finally {
      client.release();
    }
  });

  it('yields a long transaction after the many short ones that committed before it, whole', async () => {
    const stream = openStream('long');
    await stream.start();
    const long = await db.pool.connect();
    try {
      await long.query('BEGIN');
      const first = await insertRow(long, 'long');
      const short: string[] = [];
      for (let i = 0; i < 40; i++) short.push(...(await commitRows(1, `k${i % 4}`)));
      const last = await insertRow(long, 'long');
      await long.query('COMMIT');

      const seen: OutboxTransaction[] = [];
      for (let i = 0; i < 41; i++) seen.push(await nextTx(stream));
      assert.deepEqual(seen.slice(0, 40).map(ids).flat(), short, 'short ones in commit order');
      const longTx = seen[40];
      assert.ok(longTx);
      assert.deepEqual(ids(longTx), [first, last], 'the long one whole, after them');
      assert.ok(
        compareLsn(longTx.beginLsn ?? '0/0', seen[0]?.commitLsn ?? '0/0') < 0,
        'it began before them',
      );
      await assertNothingWithin(stream, 300);
    } finally {
      long.release();
    }
  });

  it('holds back reading past highWaterMark and still yields every row in order', async () => {
    const stream = openStream('backpressure', { highWaterMark: 50 });
    await stream.start();
    const expected: string[] = [];
    for (let i = 0; i < 10; i++) expected.push(...(await commitRows(40)));
    const big = await commitRows(2000);
    await new Promise((r) => setTimeout(r, 300)); // let the socket fill while nobody takes
    const got: string[] = [];
    while (got.length < expected.length + big.length) {
      const tx = await nextTx(stream);
      got.push(...ids(tx));
    }
    assert.deepEqual(got, [...expected, ...big]);
  });

  it('after confirm(endLsn of T2), a new stream on the slot resumes with T3: nothing before, everything after', async () => {
    const first = openStream('resume');
    await first.start();
    const t1 = await commitRows(1);
    const t2 = await commitRows(2);
    const t3 = await commitRows(1);
    const y1 = await nextTx(first);
    const y2 = await nextTx(first);
    const y3 = await nextTx(first);
    assert.deepEqual([ids(y1), ids(y2), ids(y3)], [t1, t2, t3]);
    first.confirm(y2.endLsn);
    await first.stop();
    assert.equal((await slotRow(first.slot)).confirmed_flush_lsn, y2.endLsn);

    const t4 = await commitRows(1);
    const second = openStream('resume');
    const started = await second.start();
    assert.equal(started.slotCreated, false);
    assert.equal(started.startLsn, y2.endLsn);
    assert.deepEqual(ids(await nextTx(second)), t3, 'T3 again: it was not confirmed');
    assert.deepEqual(ids(await nextTx(second)), t4);
    await assertNothingWithin(second, 300);
  });

  it('without confirm(), a new stream on the slot yields the same transactions again (at least once)', async () => {
    const first = openStream('again');
    const { startLsn } = await first.start();
    const t1 = await commitRows(1);
    const t2 = await commitRows(1);
    const y1 = await nextTx(first);
    const y2 = await nextTx(first);
    await first.stop();
    assert.equal((await slotRow(first.slot)).confirmed_flush_lsn, startLsn, 'the slot did not move');

    const second = openStream('again');
    await second.start();
    const r1 = await nextTx(second);
    const r2 = await nextTx(second);
    assert.deepEqual([ids(r1), ids(r2)], [t1, t2]);
    assert.deepEqual([r1.endLsn, r2.endLsn], [y1.endLsn, y2.endLsn], 'the same positions');
  });

  it("keeps the slot's confirmed_flush_lsn at the confirmed LSN through idle time and other tables' traffic, and moves it on confirm", async () => {
    // wal_sender_timeout of 1.5 s for this connection: idling 2.5 s proves the status updates keep it.
    const stream = openStream('flush', {
      connection: { connectionString: DATABASE_URL, options: '-c wal_sender_timeout=1500' },
      statusIntervalMs: 200,
    });
    const { startLsn, pid } = await stream.start();
    await commitRows(1);
    await commitRows(1);
    const y1 = await nextTx(stream);
    const y2 = await nextTx(stream);
    stream.confirm(y1.endLsn);

    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(stream.running, true, 'still streaming after idling past wal_sender_timeout');
    let slot = await slotRow(stream.slot);
    assert.equal(slot.active_pid, pid, 'the same connection holds the slot');
    assert.equal(slot.confirmed_flush_lsn, y1.endLsn, 'confirmed, not received (y2 is received)');
    assert.ok(compareLsn(y1.endLsn, startLsn) > 0);

    for (let i = 0; i < 20; i++) {
      await db.pool.query(
        `INSERT INTO "${db.schema}".other_traffic SELECT g, repeat('x', 200) FROM generate_series(1, 100) g`,
      );
    }
    await new Promise((r) => setTimeout(r, 1000));
    slot = await slotRow(stream.slot);
    assert.equal(slot.confirmed_flush_lsn, y1.endLsn, 'other traffic does not move it');
    const stat = await db.pool.query<{ write_lsn: string; flush_lsn: string }>(
      `SELECT write_lsn::text AS write_lsn, flush_lsn::text AS flush_lsn FROM pg_stat_replication WHERE pid = $1`,
      [pid],
    );
    assert.equal(stat.rows[0]?.flush_lsn, y1.endLsn, 'reported flush = confirmed');
    assert.ok(compareLsn(stat.rows[0]?.write_lsn ?? '0/0', y2.endLsn) >= 0, 'reported write = received');

    stream.confirm(y2.endLsn);
    const deadline = Date.now() + 3000;
    while ((await slotRow(stream.slot)).confirmed_flush_lsn !== y2.endLsn && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal((await slotRow(stream.slot)).confirmed_flush_lsn, y2.endLsn, 'confirm() moves it');

    const info = await stream.slotInfo();
    assert.ok(info);
    assert.equal(info.confirmedFlushLsn, y2.endLsn);
    assert.equal(info.active, true);
    assert.equal(info.activePid, pid);
    assert.ok(info.retainedWalBytes !== null && info.retainedWalBytes > 0);
    assert.ok(info.lagBytes !== null && info.lagBytes >= 0);
  });

  it('answers keepalives that request a reply, so it survives wal_sender_timeout with a long status interval', async () => {
    const stream = openStream('keepalive', {
      connection: { connectionString: DATABASE_URL, options: '-c wal_sender_timeout=1000' },
      statusIntervalMs: 30_000,
      timeoutMs: 60_000,
    });
    const { pid } = await stream.start();
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(stream.running, true);
    assert.equal((await slotRow(stream.slot)).active_pid, pid);
    const [id] = await commitRows(1);
    assert.deepEqual(ids(await nextTx(stream)), [id]);
  });

  it('idleLsn() lets the slot move past other tables while nothing is pending; confirm() refuses positions never handed out', async () => {
    const stream = openStream('idle');
    await stream.start();
    await commitRows(1);
    const tx = await nextTx(stream);
    stream.confirm(tx.endLsn);
    assert.throws(
      () => stream.confirm(lsnFromBigInt(lsnToBigInt(tx.endLsn) + 1_000_000n)),
      (err: unknown) => isReplicationError(err) && err.code === 'confirm_ahead',
    );
    await db.pool.query(
      `INSERT INTO "${db.schema}".other_traffic SELECT g, 'y' FROM generate_series(1, 500) g`,
    );
    const deadline = Date.now() + 5000;
    let idle: string | null = null;
    while (Date.now() < deadline) {
      idle = stream.idleLsn();
      if (idle && compareLsn(idle, tx.endLsn) > 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(idle && compareLsn(idle, tx.endLsn) > 0, `idleLsn ${idle} moved past ${tx.endLsn}`);
    stream.confirm(idle);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await slotRow(stream.slot)).confirmed_flush_lsn, idle);
    // Nothing was lost by it: the next outbox transaction still comes.
    const [id] = await commitRows(1);
    assert.deepEqual(ids(await nextTx(stream)), [id]);
  });

  it('yields logical messages with the prefix, transactional and not, and ignores other prefixes', async () => {
    const stream = openStream('messages', { messagePrefix: 'mailroom' });
    await stream.start();
    const id = await inTransaction(db.pool, async (client) => {
      await client.query(`SELECT pg_logical_emit_message(true, 'mailroom', 'first')`);
      await client.query(`SELECT pg_logical_emit_message(true, 'other', 'ignored')`);
      const rowId = await insertRow(client);
      await client.query(`SELECT pg_logical_emit_message(true, 'mailroom', convert_to('zweite ✓', 'UTF8'))`);
      return rowId;
    });
    await db.pool.query(`SELECT pg_logical_emit_message(true, 'other', 'ignored too')`);
    const emitted = await db.pool.query<{ lsn: string }>(
      `SELECT pg_logical_emit_message(false, 'mailroom', 'outside')::text AS lsn`,
    );

    const tx = await nextTx(stream);
    assert.deepEqual(ids(tx), [id]);
    assert.deepEqual(
      tx.messages.map((m) => [m.prefix, m.content.toString('utf8'), m.transactional]),
      [
        ['mailroom', 'first', true],
        ['mailroom', 'zweite ✓', true],
      ],
    );
    const loose = await nextTx(stream);
    assert.equal(loose.xid, 0);
    assert.equal(loose.beginLsn, undefined);
    assert.deepEqual(
      loose.messages.map((m) => [m.prefix, m.content.toString('utf8'), m.transactional]),
      [['mailroom', 'outside', false]],
    );
    assert.equal(loose.messages[0]?.lsn, emitted.rows[0]?.lsn, 'the LSN pg_logical_emit_message returned');
    assert.equal(loose.commitLsn, loose.messages[0]?.lsn);
    assert.equal(loose.endLsn, loose.commitLsn);
    await assertNothingWithin(stream, 300);

    // Confirming the loose message's endLsn marks it (and all before it) done for the next stream,
    // and nothing after it: the next record may start exactly there.
    stream.confirm(loose.endLsn);
    await stream.stop();
    await db.pool.query(`SELECT pg_logical_emit_message(false, 'mailroom', 'later')`);
    // A non-transactional message is not flushed by its own statement (PostgreSQL 15 has no
    // flush argument); a commit after it flushes it, so the walsender can send it.
    await db.pool.query(`SELECT pg_logical_emit_message(true, 'other', 'flush')`);
    const resumed = openStream('messages', { messagePrefix: 'mailroom' });
    await resumed.start();
    const later = await nextTx(resumed);
    assert.deepEqual(
      later.messages.map((m) => m.content.toString('utf8')),
      ['later'],
    );
    await assertNothingWithin(resumed, 300);
  });

  it('confirming a loose message never skips a transaction whose commit record starts right after it', async () => {
    // The edge is exercised when nothing else writes WAL between the message and the commit; on
    // a busy server that may take a few tries. The transaction must come back in every try.
    let exercised = 0;
    for (let attempt = 0; attempt < 8 && exercised < 2; attempt++) {
      const stream = openStream('edge', { messagePrefix: 'mailroom' });
      await stream.start();
      const writer = await db.pool.connect();
      let id: string;
      try {
        await writer.query('BEGIN');
        id = await insertRow(writer);
        await db.pool.query(`SELECT pg_logical_emit_message(false, 'mailroom', 'edge')`);
        await writer.query('COMMIT');
      } finally {
        writer.release();
      }
      const loose = await nextTx(stream);
      assert.equal(loose.xid, 0);
      const committed = await nextTx(stream);
      assert.deepEqual(ids(committed), [id]);
      if (committed.commitLsn === loose.endLsn) exercised++;
      stream.confirm(loose.endLsn);
      await stream.stop();

      const again = openStream('edge');
      await again.start();
      const replayed = await nextTx(again);
      assert.deepEqual(
        ids(replayed),
        [id],
        `attempt ${attempt}: the transaction after the confirmed message is streamed again`,
      );
      again.confirm(replayed.endLsn);
      await again.stop();
    }
    assert.ok(exercised > 0, 'at least one commit record started exactly at the message end');
  });

  it('gives the xid that xid8Of and XID_VISIBLE_SQL turn into a visibility check', async () => {
    const stream = openStream('xid');
    await stream.start();
    const { full, id } = await inTransaction(db.pool, async (client) => {
      const rowId = await insertRow(client);
      const res = await client.query<{ full: string }>(`SELECT pg_current_xact_id()::text AS full`);
      return { full: BigInt(res.rows[0]?.full ?? '0'), id: rowId };
    });
    const tx = await nextTx(stream);
    assert.deepEqual(ids(tx), [id]);
    assert.equal(BigInt(tx.xid), full & 0xffffffffn);
    const xmax = await db.pool.query<{ xmax: string }>(
      `SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS xmax`,
    );
    assert.equal(xid8Of(tx.xid, xmax.rows[0]?.xmax ?? '0'), full);
    const visible = await db.pool.query<{ visible: boolean }>(XID_VISIBLE_SQL, [tx.xid]);
    assert.equal(visible.rows[0]?.visible, true);
    // A transaction still open is not visible.
    const open = await db.pool.connect();
    try {
      await open.query('BEGIN');
      const res = await open.query<{ xid: string }>(
        `SELECT (pg_current_xact_id()::text::bigint & 4294967295)::text AS xid`,
      );
      const notYet = await db.pool.query<{ visible: boolean }>(XID_VISIBLE_SQL, [Number(res.rows[0]?.xid)]);
      assert.equal(notYet.rows[0]?.visible, false);
      await open.query('ROLLBACK');
    } finally {
      open.release();
    }
  });

  it('a second stream on the same slot fails with slot_in_use naming the PID that holds it', async () => {
    const holder = openStream('busy');
    const { pid } = await holder.start();
    assert.ok(pid);
    const second = openStream('busy');
    const err = await second.start().then(
      () => assert.fail('a second stream on a busy slot must not start'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ReplicationError);
    assert.equal(err.code, 'slot_in_use');
    assert.equal(err.details.activePid, pid);
    assert.match(err.message, new RegExp(`PID ${pid}\\b`));
    assert.match(err.message, /mailroom-relay/, 'names the holder by application_name');
    assert.equal(holder.running, true, 'the holder keeps streaming');
    await assert.rejects(
      second.next(),
      { code: 'slot_in_use' },
      'next() on the stream that failed to start says why',
    );
  });

  it('refuses a publication that covers another table or other operations, and leaves it as it was', async () => {
    await db.pool.query(`CREATE TABLE "${db.schema}".elsewhere (n int)`);
    const wrong = `${db.schema}_wrongpub`;
    await db.pool.query(`CREATE PUBLICATION "${wrong}" FOR TABLE "${db.schema}".elsewhere`);
    const stream = openStream('wrongpub', { publication: wrong });
    await assert.rejects(stream.start(), (err: unknown) => {
      assert.ok(isReplicationError(err));
      assert.equal(err.code, 'publication');
      assert.match(err.message, new RegExp(`does not cover ${db.schema}\\.outbox`));
      assert.match(err.message, new RegExp(`also covers ${db.schema}\\.elsewhere`));
      assert.match(err.message, /also publishes update, delete, truncate/);
      assert.match(err.message, /DROP PUBLICATION/);
      return true;
    });
    const still = await db.pool.query(`SELECT tablename FROM pg_publication_tables WHERE pubname = $1`, [
      wrong,
    ]);
    assert.deepEqual(still.rows, [{ tablename: 'elsewhere' }], 'not altered');
    const slots = await db.pool.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [
      stream.slot,
    ]);
    assert.equal(slots.rowCount, 0, 'no slot created for a stream that cannot run');
  });

  it('a role without REPLICATION gets a privilege error saying ALTER ROLE … REPLICATION; with it, but no CREATE, one about the publication', async () => {
    const role = `${db.schema}_norepl`;
    roles.push(role);
    await db.pool.query(`CREATE ROLE "${role}" LOGIN`);
    const url = new URL(DATABASE_URL);
    url.username = role;
    const stream = openStream('norepl', {
      connectionString: url.toString(),
      publication: `${db.schema}_norepl`,
    });
    await assert.rejects(stream.start(), (err: unknown) => {
      assert.ok(isReplicationError(err));
      assert.equal(err.code, 'privilege');
      assert.match(err.message, new RegExp(`ALTER ROLE ${role} REPLICATION`));
      return true;
    });

    await db.pool.query(`ALTER ROLE "${role}" REPLICATION`);
    const again = openStream('norepl', {
      connectionString: url.toString(),
      publication: `${db.schema}_norepl`,
    });
    await assert.rejects(again.start(), (err: unknown) => {
      assert.ok(isReplicationError(err));
      assert.equal(err.code, 'privilege');
      assert.match(err.message, /GRANT CREATE ON DATABASE/);
      assert.match(err.message, new RegExp(`ownership of ${db.schema}\\.outbox`));
      return true;
    });
  });

  it('with createSlot: false, a missing slot is slot_missing instead of a new empty slot', async () => {
    const stream = openStream('nocreate', { createSlot: false });
    await assert.rejects(stream.start(), (err: unknown) => {
      assert.ok(isReplicationError(err));
      assert.equal(err.code, 'slot_missing');
      assert.match(err.message, /outbox table/);
      return true;
    });
  });

  it('a lost connection rejects the pending next() with connection_lost; stop() then returns at once', async () => {
    const stream = openStream('lost');
    const { pid } = await stream.start();
    // The expectation is attached before the connection is cut, so the rejection is never unhandled.
    const pending = assert.rejects(stream.next(), (err: unknown) => {
      assert.ok(isReplicationError(err));
      assert.equal(err.code, 'connection_lost');
      return true;
    });
    await db.pool.query(`SELECT pg_terminate_backend($1)`, [pid]);
    await pending;
    assert.equal(stream.running, false);
    await assert.rejects(stream.next(), { code: 'connection_lost' });
    const t0 = Date.now();
    await stream.stop();
    assert.ok(Date.now() - t0 < 2000);
  });

  it('a server gone silent (network black hole) fails the stream after timeoutMs, and stop() keeps its deadline', async () => {
    const proxy = await TcpProxy.start({ targetPort: 5432 });
    try {
      const url = new URL(DATABASE_URL);
      url.port = String(proxy.port);
      const stream = openStream('silent', {
        connectionString: url.toString(),
        statusIntervalMs: 100,
        timeoutMs: 800,
        stopTimeoutMs: 500,
      });
      await stream.start();
      const pending = assert.rejects(stream.next(), (err: unknown) => {
        assert.ok(isReplicationError(err));
        assert.equal(err.code, 'connection_lost');
        assert.match(err.message, /sent nothing .* for \d+ ms/);
        return true;
      });
      proxy.blackhole();
      await pending;
      const t0 = Date.now();
      await stream.stop();
      assert.ok(Date.now() - t0 < 1500, `stop() took ${Date.now() - t0} ms`);
    } finally {
      await proxy.close();
    }
  });

  it('stop() resolves a pending next() with null, releases the slot, and is idempotent', async () => {
    const stream = openStream('stop');
    await stream.start();
    const pending = stream.next();
    const t0 = Date.now();
    await Promise.all([stream.stop(), stream.stop()]);
    assert.ok(Date.now() - t0 < 2000, 'bounded');
    assert.equal(await pending, null);
    assert.equal(await stream.next(), null);
    assert.equal((await slotRow(stream.slot)).active_pid, null, 'the server released the slot');
    await assert.rejects(stream.start(), { code: 'stopped' });
  });
});
