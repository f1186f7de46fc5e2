/**
 * `mailroom doctor` against the real PostgreSQL (the built CLI: `npm run build` first): a
 * healthy deployment, a key blocked by a failing head message, a dead relay, a transaction and a
 * replication slot holding back the server, an unreachable broker, a schema not migrated.
 *
 * The server is shared with the other test files, which run at the same time: the checks that
 * read server-wide state (xmin-horizon, replication-slots, notify-queue) may warn about other
 * files' sessions and slots, so the healthy test requires only that they do not fail and do not
 * name this file's schema.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import amqp from 'amqplib';
import pg from 'pg';
import { Outbox, Relay, type OutboxMessage } from '../src/core/index.js';
import { RelayPresence } from '../src/core/relay-presence.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import { CHECK_IDS, type DoctorCheck, type DoctorReport } from '../src/cli/doctor/check.js';
import { AMQP_URL } from './helpers/amqp.js';
import { runCli } from './helpers/cli.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

const SERVER_WIDE = new Set(['xmin-horizon', 'replication-slots', 'notify-queue']);

describe('mailroom doctor', () => {
  let db: TestDb;
  let relay: Relay | undefined;
  /** The test server runs with autovacuum off (steady timings): doctor rightly fails that. */
  let autovacuumOff = false;
  before(async () => {
    db = await createTestDb('mrdoc');
    autovacuumOff = (await db.pool.query("SELECT current_setting('autovacuum') AS v")).rows[0].v !== 'on';
  });
  after(async () => {
    await relay?.stop();
    await db.drop();
  });

  const doctor = async (args: string[] = [], schema?: string) => {
    const r = await runCli([
      'doctor',
      '--database-url',
      DATABASE_URL,
      '--schema',
      schema ?? db.schema,
      '--json',
      ...args,
    ]);
    let report: DoctorReport;
    try {
      report = JSON.parse(r.stdout) as DoctorReport;
    } catch {
      throw new Error(`doctor printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
    }
    const byId = (id: string): DoctorCheck => {
      const c = report.checks.find((x) => x.id === id);
      assert.ok(c, `check ${id} in ${r.stdout}`);
      return c;
    };
    return { ...r, report, byId };
  };

  it('a healthy deployment: every check of this schema ok (exit 0; 1 only on a server with autovacuum off), every check id in the JSON', async () => {
    const transport = new MemoryTransport();
    relay = new Relay({ store: db.store, transport, wakeup: 'poll', pollIntervalMs: 100 });
    new RelayPresence({ store: db.store, transport: transport.name, onError: () => undefined }).attach(relay);
    await relay.start();
    await waitUntil(async () => (await db.store.listRelays()).length === 1, 'the relay presence row');

    const { code, report, byId, stdout } = await doctor();
    assert.equal(code, autovacuumOff ? 1 : 0, stdout);
    assert.deepEqual(
      report.checks.map((c) => c.id),
      [...CHECK_IDS],
    );
    assert.equal(report.schema, db.schema);
    assert.equal(report.store, 'postgres');
    assert.equal(report.exitCode, code);
    for (const c of report.checks) {
      assert.ok(['ok', 'warn', 'fail', 'skip'].includes(c.status));
      assert.ok(Array.isArray(c.detail) && Array.isArray(c.fix));
      if (c.id === 'transport') {
        assert.equal(c.status, 'skip', c.summary);
      } else if (c.id === 'autovacuum' && autovacuumOff) {
        assert.equal(c.status, 'fail');
        assert.equal(
          c.summary,
          "autovacuum is off and track_counts on on this server: the outbox's dead rows are never removed",
        );
      } else if (SERVER_WIDE.has(c.id)) {
        assert.notEqual(c.status, 'fail', `${c.id}: ${c.summary}`);
        assert.ok(!JSON.stringify(c).includes(db.schema), `${c.id} names this schema: ${c.summary}`);
      } else {
        assert.equal(c.status, 'ok', `${c.id}: ${c.summary}\n${c.detail.join('\n')}`);
      }
    }
    assert.match(byId('relays').summary, /^1 relay\(s\) alive$/);
    assert.equal(byId('oldest-message').summary, 'the outbox is empty');

    // The readable form: a table of every check.
    const text = await runCli(['doctor', '--database-url', DATABASE_URL, '--schema', db.schema]);
    assert.equal(text.code, code, text.stderr);
    assert.match(text.stdout, /\nCHECK +STATUS +SUMMARY\n/);
    for (const id of CHECK_IDS) assert.match(text.stdout, new RegExp(`\\n${id} +[A-Z]+ `));
  });

  it('a key blocked by a failing head message: names the blocking message, its retry time and error', async () => {
    // No relay while the scene is set up: it would deliver the messages.
    await relay?.stop();
    relay = undefined;
    const outbox = new Outbox({ store: db.store });
    const key = `order-${randomBytes(3).toString('hex')}`;
    const [head, next] = await inTransaction(db.pool, (c) =>
      outbox.enqueue(c, [
        { topic: 'orders.created', key, payload: { n: 1 } },
        { topic: 'orders.created', key, payload: { n: 2 } },
      ]),
    );
    // The head failed once and waits ten minutes for its retry, as a relay's settle leaves it.
    const batch = await db.store.claim({ owner: 'test-claimer', limit: 1, leaseMs: 60_000 });
    assert.equal(batch.messages[0]?.id, head);
    await db.store.settle({
      leaseToken: batch.leaseToken,
      delivered: [],
      released: [],
      retry: [{ message: batch.messages[0] as OutboxMessage, delayMs: 600_000, error: 'broker said no' }],
      dead: [],
    });
    const transport = new MemoryTransport();
    relay = new Relay({ store: db.store, transport, wakeup: 'poll', pollIntervalMs: 100 });
    new RelayPresence({ store: db.store, transport: transport.name, onError: () => undefined }).attach(relay);
    await relay.start();
    await waitUntil(async () => (await db.store.listRelays()).some((r) => r.alive), 'a relay alive');
    const due = await db.pool.query(`SELECT available_at FROM "${db.schema}".outbox WHERE id = $1`, [head]);
    const retryAt = (due.rows[0].available_at as Date).toISOString();

    const { code, byId, report } = await doctor();
    const oldest = byId('oldest-message');
    assert.equal(oldest.status, 'warn');
    assert.ok(oldest.summary.includes(`message ${head}`), oldest.summary);
    assert.ok(oldest.summary.includes(`in retry until ${retryAt}`), oldest.summary);
    assert.match(oldest.summary, /last error: .*broker said no/);
    assert.ok(oldest.fix.some((f) => f.includes(`WHERE id = '${head}'`)));
    const blocked = byId('blocked-keys');
    assert.equal(blocked.status, 'warn');
    assert.ok(
      blocked.summary.startsWith(
        `message ${next} (topic orders.created, key ${key}) waits behind message ${head}`,
      ),
      blocked.summary,
    );
    assert.ok(blocked.summary.includes(`in retry until ${retryAt}`), blocked.summary);
    assert.equal(code, report.counts.fail > 0 ? 1 : 0, 'warnings alone exit 0');
    assert.equal((await doctor(['--strict'])).code, 1, 'with --strict a warning exits 1');
    await relay?.stop();
    relay = undefined;
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
  });

  it("the outbox's vacuum settings removed: warns with the ALTER TABLE that restores them", async () => {
    await db.pool.query(`ALTER TABLE "${db.schema}".outbox RESET (autovacuum_vacuum_cost_delay)`);
    try {
      const c = (await doctor()).byId('autovacuum');
      assert.equal(c.status, autovacuumOff ? 'fail' : 'warn');
      assert.match(c.summary, /autovacuum_vacuum_cost_delay = default \(expected 0\)/);
      assert.ok(
        c.fix.some((f) =>
          f.startsWith(`ALTER TABLE "${db.schema}".outbox SET (autovacuum_vacuum_scale_factor = 0,`),
        ),
      );
    } finally {
      await db.pool.query(`ALTER TABLE "${db.schema}".outbox SET (autovacuum_vacuum_cost_delay = 0)`);
    }
  });

  it('a relay that stopped heartbeating is reported dead (warn), by owner, with the SQL to remove it', async () => {
    const owner = `stale-${randomBytes(3).toString('hex')}`;
    await db.store.recordRelay({
      owner,
      host: 'gone-host',
      pid: 4242,
      version: '0.0.0',
      wakeup: 'notify',
      transport: 'rabbitmq',
      state: 'running',
      heartbeatIntervalMs: 10_000,
    });
    await db.pool.query(
      `UPDATE "${db.schema}".relay SET heartbeat_at = now() - interval '5 minutes' WHERE owner = $1`,
      [owner],
    );
    const { byId } = await doctor();
    const relays = byId('relays');
    assert.equal(relays.status, 'warn');
    assert.match(relays.summary, /no relay alive .*1 dead relay row/);
    assert.ok(
      relays.detail.some((d) => d.startsWith(`${owner}: DEAD, host gone-host pid 4242`)),
      relays.detail.join('\n'),
    );
    assert.ok(
      relays.fix.some((f) => f.includes(`DELETE FROM "${db.schema}".relay WHERE owner = '${owner}'`)),
    );
    await db.store.removeRelay(owner);
  });

  it('an idle-in-transaction session holding xmin: named with its pid and how long it has been open', async () => {
    const holder = new pg.Client({ connectionString: DATABASE_URL, application_name: 'doctor-test-holder' });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT txid_current()');
      const pid = (await holder.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
      await waitUntil(async () => {
        const r = await db.pool.query(
          "SELECT now() - xact_start > interval '1 second' AS old FROM pg_stat_activity WHERE pid = $1",
          [pid],
        );
        return r.rows[0]?.old === true;
      }, 'the transaction to be a second old');
      const { byId } = await doctor(['--long-transaction-ms', '500']);
      const xmin = byId('xmin-horizon');
      assert.equal(xmin.status, 'warn');
      const line = xmin.detail.find((d) => d.startsWith(`pid ${pid} `));
      assert.ok(line, xmin.detail.join('\n'));
      assert.match(
        line,
        /application doctor-test-holder, idle in transaction\) has had a transaction open for \d/,
      );
      assert.ok(
        xmin.fix.includes(
          `SELECT pg_terminate_backend(${pid});  -- ends the session of pid ${pid}, rolling its transaction back`,
        ),
      );
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await holder.end();
    }
  });

  it('an inactive replication slot is named, with the WAL it keeps', async () => {
    const slot = `${db.schema}_doctor`;
    await db.pool.query("SELECT pg_create_logical_replication_slot($1, 'test_decoding')", [slot]);
    try {
      const { byId } = await doctor();
      const slots = byId('replication-slots');
      assert.equal(slots.status, 'warn');
      assert.ok(
        slots.summary.includes(slot) || slots.detail.some((d) => d.includes(`slot ${slot} is inactive`)),
        slots.summary,
      );
      assert.ok(
        slots.detail.some((d) => d.startsWith(`${slot} (test_decoding): inactive`)),
        slots.detail.join('\n'),
      );
      assert.ok(slots.fix.includes(`mailroom slot drop ${slot}  -- if no relay will read it again`));
      const xmin = byId('xmin-horizon');
      assert.ok(xmin.detail.some((d) => d.startsWith(`slot ${slot} (logical, inactive) holds catalog_xmin`)));
    } finally {
      await db.pool.query('SELECT pg_drop_replication_slot($1)', [slot]);
    }
  });

  it('an unreachable broker fails the transport check with a clear message and no password', async () => {
    const { code, byId, stdout } = await doctor(['--transport', 'amqp://guest:hunter2@127.0.0.1:1']);
    assert.equal(code, 1);
    const t = byId('transport');
    assert.equal(t.status, 'fail');
    assert.match(t.summary, /^rabbitmq at amqp:\/\/guest:\*+@127\.0\.0\.1:1 is unreachable: /);
    assert.ok(!stdout.includes('hunter2'));
  });

  it('RabbitMQ: the exchange is checked passively, and unroutable dead letters say nobody is bound to the topic', async () => {
    const exchange = `doctor_${randomBytes(4).toString('hex')}`;
    const topic = `invoices.${randomBytes(3).toString('hex')}`;
    await db.pool.query(
      `INSERT INTO "${db.schema}".dead_letter (id, topic, payload, content_type, headers, created_at, attempts, last_error)
       VALUES (gen_random_uuid(), $1, '\\x7b7d', 'application/json', '{}', now(), 1, $2)`,
      [
        topic,
        `RabbitMQ returned message x as unroutable (312 NO_ROUTE): no queue bound for routing key ${topic}`,
      ],
    );
    try {
      const missing = await doctor(['--transport', AMQP_URL, '--exchange', exchange]);
      assert.equal(missing.byId('transport').status, 'ok', missing.byId('transport').summary);
      const b = missing.byId('bindings');
      assert.equal(b.status, 'fail');
      assert.equal(b.summary, `exchange "${exchange}" does not exist; nobody is bound to topic ${topic}`);
      assert.ok(b.fix.some((f) => f.endsWith(`then: mailroom dlq replay --topic ${topic}`)));
      assert.equal(missing.code, 1);

      const conn = await amqp.connect(AMQP_URL);
      try {
        const ch = await conn.createChannel();
        await ch.assertExchange(exchange, 'topic', { durable: false, autoDelete: false });
        const present = (await doctor(['--transport', AMQP_URL, '--exchange', exchange])).byId('bindings');
        assert.equal(present.status, 'warn');
        assert.equal(present.summary, `exchange "${exchange}" exists; nobody is bound to topic ${topic}`);
        await ch.deleteExchange(exchange);
      } finally {
        await conn.close();
      }
    } finally {
      await db.pool.query(`DELETE FROM "${db.schema}".dead_letter`);
    }
  });

  it('a schema not migrated fails with "run mailroom migrate"', async () => {
    const schema = `mrdoc_none_${randomBytes(3).toString('hex')}`;
    const { code, byId } = await doctor([], schema);
    assert.equal(code, 1);
    const s = byId('schema');
    assert.equal(s.status, 'fail');
    assert.match(s.summary, /is not migrated/);
    assert.ok(s.fix.some((f) => f.startsWith(`run mailroom migrate --schema ${schema}`)));
    assert.equal(byId('oldest-message').status, 'skip');
  });
});
