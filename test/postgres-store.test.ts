import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { Outbox } from '../src/core/index.js';
import { runReceivingConformance } from '../src/testkit/receiving-conformance.js';
import { runStoreConformance, type StoreHarness } from '../src/testkit/store-conformance.js';
import { createTestDb, DATABASE_URL, inTransaction, type TestDb } from './helpers/postgres.js';

const harness = async (): Promise<StoreHarness> => {
  const db = await createTestDb('conf');
  return { store: db.store, transaction: (fn) => inTransaction(db.pool, fn), close: () => db.drop() };
};
runStoreConformance('PostgreSQL store', { create: harness });
runReceivingConformance('PostgreSQL store', { create: harness });
// The same store, with the enqueues in postgres.js transactions (`sql.begin`), the other driver
// users hold their transactions with.
runStoreConformance('PostgreSQL store, enqueue through postgres.js', {
  create: async (): Promise<StoreHarness> => {
    const db = await createTestDb('confjs');
    const sql = postgres(DATABASE_URL, { max: 2, onnotice: () => {} });
    return {
      store: db.store,
      transaction: <T>(fn: (tx: unknown) => Promise<T>) => sql.begin((tx) => fn(tx)) as Promise<T>,
      close: async () => {
        await sql.end();
        await db.drop();
      },
    };
  },
});

describe('PostgreSQL store', () => {
  let db: TestDb;
  let outbox: Outbox;
  before(async () => {
    db = await createTestDb('store');
    outbox = new Outbox({ store: db.store });
  });
  after(async () => db.drop());

  it('enqueues inside a pg transaction and keeps nothing after a rollback', async () => {
    const before = await db.count();
    await assert.rejects(
      inTransaction(db.pool, async (client) => {
        await outbox.enqueue(client, { topic: 'rolled.back', payload: { a: 1 } });
        throw new Error('business failure');
      }),
      /business failure/,
    );
    assert.equal(await db.count(), before);
    const id = await inTransaction(db.pool, (client) =>
      outbox.enqueue(client, { topic: 'committed', key: 'k1', payload: { a: 1 }, headers: { h: 'v' } }),
    );
    const row = (await db.pool.query(`SELECT * FROM "${db.schema}".outbox WHERE id = $1`, [id])).rows[0];
    assert.equal(row.topic, 'committed');
    assert.equal(row.key, 'k1');
    assert.deepEqual(row.headers, { h: 'v' });
    assert.equal(row.payload.toString(), '{"a":1}');
    assert.equal(row.content_type, 'application/json');
  });

  it('enqueues inside a postgres.js transaction and keeps nothing after a rollback', async () => {
    const sql = postgres(DATABASE_URL, { max: 2, onnotice: () => undefined });
    try {
      const before = await db.count();
      await assert.rejects(
        sql.begin(async (tx) => {
          await outbox.enqueue(tx, { topic: 'pgjs.rolled', payload: [1, 2] });
          throw new Error('nope');
        }),
        /nope/,
      );
      assert.equal(await db.count(), before);
      const ids = await sql.begin((tx) =>
        outbox.enqueue(tx, [
          { topic: 'pgjs.ok', payload: Buffer.from([0, 1, 2, 255]) },
          { topic: 'pgjs.ok', payload: 'text', key: 'x' },
        ]),
      );
      const rows = (
        await db.pool.query(
          `SELECT id::text, payload, content_type FROM "${db.schema}".outbox WHERE id = ANY($1) ORDER BY seq`,
          [ids],
        )
      ).rows;
      assert.equal(rows.length, 2);
      assert.deepEqual([...rows[0].payload], [0, 1, 2, 255]);
      assert.equal(rows[0].content_type, 'application/octet-stream');
      assert.equal(rows[1].payload.toString(), '"text"');
    } finally {
      await sql.end();
    }
  });

  it('enqueues from SQL with mailroom.enqueue and rejects bad input there too', async () => {
    const res = await db.pool.query(
      `SELECT "${db.schema}".enqueue('sql.topic', '{"x": 1}'::jsonb, 'key-1', '{"h":"v"}'::jsonb) AS id`,
    );
    const id = res.rows[0].id as string;
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const row = (await db.pool.query(`SELECT * FROM "${db.schema}".outbox WHERE id = $1`, [id])).rows[0];
    assert.equal(row.key, 'key-1');
    assert.deepEqual(JSON.parse(row.payload.toString()), { x: 1 });
    await assert.rejects(
      db.pool.query(`SELECT "${db.schema}".enqueue('', '{}'::jsonb)`),
      /topic must be 1 to 255/,
    );
    await assert.rejects(
      db.pool.query(`SELECT "${db.schema}".enqueue('t', '{}'::jsonb, NULL, '{"n": 1}'::jsonb)`),
      /header value must be a JSON string/,
    );
  });

  it('refuses a delay over 365 days in the SQL API too, before computing the due time', async () => {
    const call = (delay: string) =>
      db.pool.query(`SELECT "${db.schema}".enqueue('sql.delay', '1'::jsonb, delay => $1::interval) AS id`, [
        delay,
      ]);
    for (const delay of ['366 days', '1 year', '365 days 00:00:00.001', '1000000 years']) {
      await assert.rejects(call(delay), (err: Error & { code?: string }) => {
        assert.equal(err.code, '22023');
        assert.match(err.message, /mailroom\.enqueue: delay .* is over the limit of 365 days/);
        return true;
      });
    }
    const id = (await call('365 days')).rows[0].id as string;
    const row = await db.pool.query(
      `SELECT extract(epoch FROM available_at - created_at)::int AS s FROM "${db.schema}".outbox WHERE id = $1`,
      [id],
    );
    assert.equal(row.rows[0].s, 365 * 86_400);
    await db.pool.query(`DELETE FROM "${db.schema}".outbox WHERE id = $1`, [id]);
  });

  it('upgrades a version-2 schema by applying 000003 alone, after which the SQL API enforces the limit', async () => {
    const { PostgresStore, loadMigrations } = await import('../src/stores/postgres/index.js');
    const schema = `v2_${Math.random().toString(16).slice(2, 10)}`;
    const store = new PostgresStore({ pool: db.pool, schema });
    try {
      // The schema as a deployment of the previous version left it.
      await db.pool.query(`CREATE SCHEMA "${schema}"`);
      await db.pool.query(
        `CREATE TABLE "${schema}".migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      for (const m of loadMigrations(schema).filter((m) => m.version <= 2)) {
        await db.pool.query(m.sql);
        await db.pool.query(`INSERT INTO "${schema}".migrations (version, name) VALUES ($1, $2)`, [
          m.version,
          m.name,
        ]);
      }
      const tooLong = `SELECT "${schema}".enqueue('t', '1'::jsonb, delay => '400 days')`;
      await db.pool.query(tooLong); // version 2 took it
      await assert.rejects(store.check(), { code: 'schema_outdated' });
      assert.deepEqual(
        (await store.migrate()).map((r) => [r.version, r.status]),
        loadMigrations(schema).map((m) => [m.version, m.version <= 2 ? 'already-applied' : 'applied']),
      );
      await store.check();
      await assert.rejects(db.pool.query(tooLong), /over the limit of 365 days/);
    } finally {
      await db.pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });

  it('holds a key behind its delayed head also when the claim walks keys past a full window', async () => {
    // 1,100 due rows of one deep key fill the claim's first window (1,000 rows) with one head,
    // so the claim takes its second pass, one probe per key. That pass must apply the same rule:
    // the head of key k is the delayed row, so the due row behind it stays.
    const s = `"${db.schema}"`;
    await db.pool.query(`DELETE FROM ${s}.outbox`);
    await inTransaction(db.pool, async (c) => {
      await outbox.enqueue(c, { topic: 'pass2', key: 'k', payload: 'delayed', delayMs: 60_000 });
      const deep = Array.from({ length: 1100 }, (_, i) => ({ topic: 'pass2', key: 'deep', payload: i }));
      for (let i = 0; i < deep.length; i += 500) await outbox.enqueue(c, deep.slice(i, i + 500));
      await outbox.enqueue(c, { topic: 'pass2', key: 'k', payload: 'behind' });
      await outbox.enqueue(c, { topic: 'pass2', key: 'free', payload: 'free' });
    });
    const first = await db.store.claim({ owner: 'r', limit: 10, leaseMs: 60_000 });
    assert.deepEqual(
      first.messages.map((m) => JSON.parse(m.payload.toString())),
      [0, 'free'],
    );
    // Due now, as if its delay had run out: the head goes first, and only then the row behind it.
    await db.pool.query(
      `UPDATE ${s}.outbox SET available_at = now() WHERE key = 'k' AND seq = (SELECT min(seq) FROM ${s}.outbox WHERE key = 'k')`,
    );
    const second = await db.store.claim({ owner: 'r', limit: 10, leaseMs: 60_000 });
    assert.deepEqual(
      second.messages.map((m) => JSON.parse(m.payload.toString())),
      ['delayed'],
    );
    await db.pool.query(`DELETE FROM ${s}.outbox`);
  });

  /** Writes `n` dead letters straight into the table, each with a 1 KiB payload, dead 1 ms apart. */
  async function insertDeadLetters(n: number, topic: string, deadAgo = '1 hour'): Promise<string[]> {
    const res = await db.pool.query(
      `INSERT INTO "${db.schema}".dead_letter (id, topic, payload, content_type, headers, created_at, attempts, dead_at)
       SELECT gen_random_uuid(), $2, convert_to(json_build_object('n', i, 'pad', repeat('x', 1000))::text, 'UTF8'),
              'application/json', '{}', now(), 3, now() - $3::interval + i * interval '1 millisecond'
       FROM generate_series(1, $1::int) AS i
       RETURNING id::text AS id`,
      [n, topic, deadAgo],
    );
    return res.rows.map((r) => r.id as string);
  }

  /** A pool that records the columns of every result row that comes back to the client. */
  function recordingPool(columns: Set<string>) {
    const record = (res: { rows: Array<Record<string, unknown>> }) => {
      for (const row of res.rows) for (const c of Object.keys(row)) columns.add(c);
      return res;
    };
    return {
      query: async (text: string, values?: unknown[]) => record(await db.pool.query(text, values)),
      connect: async () => {
        const client = await db.pool.connect();
        return Object.assign(Object.create(client) as typeof client, {
          query: async (text: string, values?: unknown[]) => record(await client.query(text, values)),
          release: (err?: Error | boolean) => client.release(err),
        });
      },
      end: async () => undefined,
    };
  }

  it('replays a few thousand dead letters in batches of 1,000 without a payload reaching the client', async () => {
    const { PostgresStore } = await import('../src/stores/postgres/index.js');
    const s = `"${db.schema}"`;
    await db.pool.query(`DELETE FROM ${s}.outbox`);
    const ids = await insertDeadLetters(2500, 'bulk.replay');
    const columns = new Set<string>();
    const store = new PostgresStore({ pool: recordingPool(columns) as never, schema: db.schema });
    const batches: number[] = [];
    const results = await store.replayDeadLetters({}, { onBatch: (b) => batches.push(b.length) });
    assert.deepEqual(batches, [1000, 1000, 500]);
    assert.equal(results.length, 2500);
    assert.ok(results.every((r) => r.status === 'replayed'));
    assert.deepEqual(new Set(results.map((r) => r.id)), new Set(ids));
    assert.ok(!columns.has('payload'), `no payload column came back: ${[...columns].join(', ')}`);
    const moved = await db.pool.query(
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE octet_length(payload) > 1000)::int AS whole FROM ${s}.outbox`,
    );
    assert.deepEqual(moved.rows[0], { n: 2500, whole: 2500 }, 'payloads moved inside the database, whole');
    // In the outbox in the order they died, so the oldest dead letter is retried first.
    const order = await db.pool.query(`SELECT id::text AS id FROM ${s}.outbox ORDER BY seq`);
    assert.deepEqual(
      order.rows.map((r) => r.id),
      ids,
    );
    assert.equal(await db.count('dead_letter'), 0);
    await db.pool.query(`DELETE FROM ${s}.outbox`);
  });

  it('ends a replay of all dead letters while others keep dead-lettering, leaving the newer ones', async () => {
    await db.pool.query(`DELETE FROM "${db.schema}".dead_letter`);
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
    const before = await insertDeadLetters(2500, 'busy');
    const later: string[] = [];
    const pending: Array<Promise<unknown>> = [];
    let batches = 0;
    const results = await db.store.replayDeadLetters(
      {},
      {
        batchSize: 500,
        onBatch: () => {
          batches++;
          // Another process dead-letters as fast as the run replays. Bounded here only so that a
          // run without an upper bound fails this test instead of running for ever.
          if (batches <= 20)
            pending.push(insertDeadLetters(500, 'busy', '0 seconds').then((x) => later.push(...x)));
        },
      },
    );
    await Promise.all(pending);
    assert.equal(results.length, 2500, 'exactly the dead letters there were when the run started');
    assert.deepEqual(new Set(results.map((r) => r.id)), new Set(before));
    assert.equal(await db.count('dead_letter'), later.length);
    await db.pool.query(`DELETE FROM "${db.schema}".dead_letter`);
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
  });

  it('purges in batches by filter and by a long id list, honouring a limit across batches', async () => {
    await db.pool.query(`DELETE FROM "${db.schema}".dead_letter`);
    const keep = await insertDeadLetters(300, 'keep');
    const gone = await insertDeadLetters(2200, 'gone');
    const columns = new Set<string>();
    const { PostgresStore } = await import('../src/stores/postgres/index.js');
    const store = new PostgresStore({ pool: recordingPool(columns) as never, schema: db.schema });

    const limited: number[] = [];
    const oldest = await store.purgeDeadLetters(
      { topic: 'gone', limit: 1500 },
      { onBatch: (b) => limited.push(b.length) },
    );
    assert.deepEqual(limited, [1000, 500]);
    assert.deepEqual(
      oldest.map((r) => r.id),
      gone.slice(0, 1500),
      'the oldest 1,500, oldest first',
    );
    assert.deepEqual(await store.countDeadLetters({ topic: 'gone' }).then((c) => c.count), 700);

    const byId: number[] = [];
    const rest = await store.purgeDeadLetters(
      { ids: [...gone, ...keep.slice(0, 10)], topic: 'gone' },
      { onBatch: (b) => byId.push(b.length) },
    );
    assert.deepEqual(new Set(rest.map((r) => r.id)), new Set(gone.slice(1500)));
    assert.equal(
      byId.reduce((a, b) => a + b, 0),
      700,
    );
    assert.ok(!columns.has('payload'));
    assert.equal(await db.count('dead_letter'), 300, 'only the other topic is left');
    await db.pool.query(`DELETE FROM "${db.schema}".dead_letter`);
  });

  it('keeps stats cheap on a big backlog: estimates it says are estimates, and no statement scans a whole table', async () => {
    const { PostgresStore, EXACT_COUNT_LIMIT } = await import('../src/stores/postgres/index.js');
    // A schema of its own: the other tests share db.schema and must not see 270,000 rows.
    const schema = `big_${Math.random().toString(16).slice(2, 10)}`;
    const big = new PostgresStore({ pool: db.pool, schema });
    await big.migrate();
    const s = `"${schema}"`;
    try {
      const backlog = EXACT_COUNT_LIMIT + 50_000;
      // Every fifth message of topic 'small', interleaved, so a block sample sees both.
      await db.pool.query(
        `INSERT INTO ${s}.outbox (id, topic, payload)
         SELECT gen_random_uuid(), CASE WHEN i % 5 = 0 THEN 'small' ELSE 'large' END, '\\x31'
         FROM generate_series(1, $1::int) AS i`,
        [backlog],
      );
      await db.pool.query(
        `INSERT INTO ${s}.dead_letter (id, topic, payload, content_type, headers, created_at, attempts)
         SELECT gen_random_uuid(), 'large', '\\x31', 'application/json', '{}', now(), 3
         FROM generate_series(1, $1::int)`,
        [EXACT_COUNT_LIMIT + 20_000],
      );
      // 700 delayed and 300 leased rows, the sizes the partial indexes are for.
      await db.pool.query(
        `UPDATE ${s}.outbox SET available_at = now() + interval '1 hour' WHERE seq BETWEEN 1001 AND 1700`,
      );
      await db.pool.query(
        `UPDATE ${s}.outbox SET lease_owner = 'r', lease_token = gen_random_uuid(), lease_until = now() + interval '1 hour'
         WHERE seq BETWEEN 2001 AND 2300`,
      );
      await db.pool.query(`ANALYZE ${s}.outbox`);
      await db.pool.query(`ANALYZE ${s}.dead_letter`);

      const statements: Array<{ sql: string; params: unknown[] | undefined }> = [];
      const record = (sql: string, params?: unknown[]) => statements.push({ sql, params });
      const recording = {
        query: (sql: string, params?: unknown[]) => {
          record(sql, params);
          return db.pool.query(sql, params);
        },
        // The store runs each statement on a client it checks out (so that it can tell a failed
        // connect from a failed statement): record those too.
        connect: async () => {
          const client = await db.pool.connect();
          return {
            query: (sql: string, params?: unknown[]) => {
              record(sql, params);
              return client.query(sql, params);
            },
            release: (err?: Error | boolean) => client.release(err),
            on: (event: 'error', listener: (err: Error) => void) => client.on(event, listener),
            removeListener: (event: 'error', listener: (err: Error) => void) =>
              client.removeListener(event, listener),
          };
        },
        end: async () => undefined,
      };
      const store = new PostgresStore({ pool: recording as never, schema });
      const stats = await store.stats();

      assert.equal(stats.approximate, true);
      assert.deepEqual(stats.estimated, ['backlog', 'deadLetters', 'topics']);
      const near = (actual: number, expected: number, tolerance: number, what: string) =>
        assert.ok(
          Math.abs(actual - expected) <= expected * tolerance,
          `${what}: ${actual}, expected about ${expected}`,
        );
      near(stats.backlog, backlog, 0.1, 'backlog');
      near(stats.deadLetters, EXACT_COUNT_LIMIT + 20_000, 0.1, 'dead letters');
      assert.equal(stats.inFlight, 300, 'in flight is exact: few rows, counted through their index');
      assert.equal(stats.scheduled, 700, 'scheduled is exact: few rows, counted through their index');
      assert.ok(stats.oldestAgeMs !== null && stats.oldestAgeMs >= 0);
      assert.deepEqual(
        stats.topics.map((t) => t.topic),
        ['large', 'small'],
      );
      near(stats.topics[0]?.backlog ?? 0, backlog * 0.8, 0.25, 'large');
      near(stats.topics[1]?.backlog ?? 0, backlog * 0.2, 0.35, 'small');

      // The plans, not the time: no statement of stats() reads all of either table.
      assert.ok(statements.length >= 3);
      const scans: string[] = [];
      const walk = (node: Record<string, unknown>) => {
        if (node['Node Type'] === 'Seq Scan') scans.push(String(node['Relation Name']));
        for (const child of (node.Plans as Array<Record<string, unknown>> | undefined) ?? []) walk(child);
      };
      for (const { sql, params } of statements) {
        const plan = await db.pool.query(`EXPLAIN (FORMAT JSON) ${sql}`, params);
        walk((plan.rows[0]['QUERY PLAN'] as Array<{ Plan: Record<string, unknown> }>)[0]?.Plan ?? {});
      }
      assert.deepEqual(
        scans.filter((r) => r === 'outbox' || r === 'dead_letter'),
        [],
        `no Seq Scan on the outbox or the dead letters; statements:\n${statements.map((x) => x.sql).join('\n---\n')}`,
      );
    } finally {
      await db.pool.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
    }
  });

  it('counts exactly while the tables are small, whatever stale statistics say', async () => {
    const { PostgresStore } = await import('../src/stores/postgres/index.js');
    const schema = `small_${Math.random().toString(16).slice(2, 10)}`;
    const store = new PostgresStore({ pool: db.pool, schema });
    await store.migrate();
    const s = `"${schema}"`;
    try {
      await db.pool.query(
        `INSERT INTO ${s}.outbox (id, topic, payload) SELECT gen_random_uuid(), 't' || (i % 3), '\\x31' FROM generate_series(1, 5000) i`,
      );
      await db.pool.query(`ANALYZE ${s}.outbox`);
      // Most of it delivered after the statistics were taken: they still say 5,000.
      await db.pool.query(`DELETE FROM ${s}.outbox WHERE seq > 10`);
      const stats = await store.stats();
      assert.equal(stats.approximate, false);
      assert.deepEqual(stats.estimated, []);
      assert.equal(stats.backlog, 10);
      assert.deepEqual(
        stats.topics.map((t) => [t.topic, t.backlog]),
        [
          ['t1', 4],
          ['t0', 3],
          ['t2', 3],
        ],
      );
      await db.pool.query(`DELETE FROM ${s}.outbox`);
      assert.equal((await store.stats()).backlog, 0);
    } finally {
      await db.pool.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
    }
  });

  it('prepares the one-message enqueue once per connection, and not when told not to', async () => {
    // A connection of its own: pooled ones may have prepared it in earlier tests.
    const pg = (await import('pg')).default;
    const client = new pg.Client({ connectionString: DATABASE_URL });
    await client.connect();
    try {
      const prepared = async () =>
        (
          await client.query(`SELECT name FROM pg_prepared_statements WHERE name LIKE 'mailroom_enqueue1_%'`)
        ).rows.map((r) => r.name as string);
      const { PostgresStore } = await import('../src/stores/postgres/index.js');
      const plain = new Outbox({
        store: new PostgresStore({ pool: db.pool, schema: db.schema, preparedStatements: false }),
      });
      await client.query('BEGIN');
      await plain.enqueue(client, { topic: 'unprepared', payload: 1 });
      await client.query('COMMIT');
      assert.deepEqual(await prepared(), []);
      const outbox = new Outbox({ store: db.store });
      for (let i = 0; i < 3; i++) {
        await client.query('BEGIN');
        await outbox.enqueue(client, { topic: 'prepared', payload: i });
        await client.query('COMMIT');
      }
      assert.deepEqual(await prepared(), [`mailroom_enqueue1_${db.schema}_i`]);
    } finally {
      await client.end();
    }
  });

  it('migrates twice and from two processes at once without error', async () => {
    const { PostgresStore } = await import('../src/stores/postgres/index.js');
    const schema = `mig_${Math.random().toString(16).slice(2, 10)}`;
    const a = new PostgresStore({ pool: db.pool, schema });
    const b = new PostgresStore({ pool: db.pool, schema });
    try {
      const [ra, rb] = await Promise.all([a.migrate(), b.migrate()]);
      const applied = [...ra, ...rb].filter((r) => r.status === 'applied').length;
      assert.equal(applied, ra.length, 'each migration applied exactly once');
      const again = await a.migrate();
      assert.ok(again.every((r) => r.status === 'already-applied'));
      await a.check();
    } finally {
      await db.pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });

  it('reports a missing schema with the command to run', async () => {
    const { PostgresStore } = await import('../src/stores/postgres/index.js');
    const store = new PostgresStore({ pool: db.pool, schema: 'not_migrated_here' });
    await assert.rejects(store.check(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'schema_missing');
      assert.match(err.message, /npx mailroom migrate --schema not_migrated_here/);
      return true;
    });
  });

  it('rejects SQL-looking schema names before touching the database', async () => {
    const { PostgresStore } = await import('../src/stores/postgres/index.js');
    for (const schema of ['a"; DROP TABLE x; --', 'public.outbox', '', '1abc', 'x'.repeat(64)]) {
      assert.throws(() => new PostgresStore({ pool: db.pool, schema }), { name: 'ConfigError' });
    }
  });

  it('rejects schema names whose derived names PostgreSQL would cut, and system schemas, naming the limit', async () => {
    const { PostgresStore, migrate } = await import('../src/stores/postgres/index.js');
    const long = `s${'x'.repeat(43)}`; // 44 bytes: mailroom_enqueue1_<schema>_n would be 64
    const statements: string[] = [];
    const recorder = {
      query: async (sql: string) => {
        statements.push(sql);
        return { rows: [] };
      },
    };
    const expectConfigError = (pattern: RegExp) => (err: Error & { code?: string; key?: string }) => {
      assert.equal(err.name, 'ConfigError');
      assert.equal(err.code, 'invalid_config');
      assert.equal(err.key, 'schema');
      assert.match(err.message, pattern);
      return true;
    };
    const tooLong = new RegExp(
      `schema "${long}" is 44 bytes, over the limit of 43.*mailroom_enqueue1_${long}_n.*63 bytes`,
    );
    assert.throws(() => new PostgresStore({ pool: db.pool, schema: long }), expectConfigError(tooLong));
    await assert.rejects(migrate(recorder, { schema: long }), expectConfigError(tooLong));
    for (const schema of [
      'pg_catalog',
      'information_schema',
      'pg_mailroom',
      'PG_Toast',
      'INFORMATION_SCHEMA',
    ]) {
      const system = new RegExp(`schema "${schema}" is a PostgreSQL system schema name`);
      assert.throws(() => new PostgresStore({ pool: db.pool, schema }), expectConfigError(system));
      await assert.rejects(migrate(recorder, { schema }), expectConfigError(system));
    }
    assert.deepEqual(statements, [], 'nothing reached the database');
  });

  it('works with a schema name of the longest allowed length: both prepared enqueues and the channel stay apart', async () => {
    const { PostgresStore, MAX_SCHEMA_NAME_BYTES } = await import('../src/stores/postgres/index.js');
    assert.equal(MAX_SCHEMA_NAME_BYTES, 43);
    const schema = `l${Math.random().toString(16).slice(2, 10)}${'x'.repeat(34)}`;
    assert.equal(schema.length, 43);
    const notifying = new PostgresStore({ pool: db.pool, schema, notify: true });
    const idle = new PostgresStore({ pool: db.pool, schema });
    const quiet = new PostgresStore({ pool: db.pool, schema, notify: false });
    const pg = (await import('pg')).default;
    const client = new pg.Client({ connectionString: DATABASE_URL });
    await client.connect();
    try {
      await notifying.migrate();
      let wakes = 0;
      const unsubscribe = await notifying.subscribe(
        () => wakes++,
        () => undefined,
      );
      try {
        for (const store of [notifying, quiet, idle, notifying]) {
          await client.query('BEGIN');
          await new Outbox({ store }).enqueue(client, { topic: 'long.schema', payload: 1 });
          await client.query('COMMIT');
        }
        const prepared = await client.query(
          `SELECT name FROM pg_prepared_statements WHERE name LIKE 'mailroom_enqueue1_%' ORDER BY name`,
        );
        assert.deepEqual(
          prepared.rows.map((r) => r.name as string),
          [`mailroom_enqueue1_${schema}_i`, `mailroom_enqueue1_${schema}_n`, `mailroom_enqueue1_${schema}_q`],
        );
        const deadline = Date.now() + 5000;
        while (wakes < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        assert.ok(wakes >= 1, 'a wake-up on the channel of a 43-byte schema');
      } finally {
        await unsubscribe();
      }
      const n = await db.pool.query(`SELECT count(*)::int AS n FROM "${schema}".outbox`);
      assert.equal(n.rows[0].n, 4);
    } finally {
      await client.end();
      await db.pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });

  it('imports nothing from the layers above the stores (verify, cli, server, testkit)', () => {
    const src = fileURLToPath(new URL('../src/', import.meta.url));
    const storesDir = join(src, 'stores');
    const files = (readdirSync(storesDir, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts'));
    assert.ok(files.length > 0);
    const offending: string[] = [];
    for (const file of files) {
      const text = readFileSync(join(storesDir, file), 'utf8');
      for (const [, spec] of text.matchAll(/from '([^']+)'/g)) {
        if (!spec?.startsWith('.')) continue;
        const target = relative(src, join(storesDir, file, '..', spec));
        if (/^(verify|cli|server|testkit)\//.test(target)) offending.push(`${file} -> ${target}`);
      }
    }
    assert.deepEqual(offending, []);
  });
});
