/**
 * The SQL API's payload limit (migration 000004): `<schema>.enqueue(…)` refuses what
 * `Outbox.enqueue` refuses, at the same byte, and `mailroom.max_payload_bytes` moves the limit
 * per session, role or database as `maxPayloadBytes` does in TypeScript.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import { DEFAULT_MAX_PAYLOAD_BYTES, Outbox } from '../src/core/index.js';
import { PGliteStore } from '../src/stores/pglite/index.js';
import { createTestDb, type TestDb } from './helpers/postgres.js';

/** A JSON string payload whose stored text (quotes included) is exactly `bytes` long. */
function jsonStringOf(bytes: number): string {
  return 'x'.repeat(bytes - 2);
}

function isSqlError(pattern: RegExp) {
  return (err: Error & { code?: string }) => {
    assert.equal(err.code, '22023', `SQLSTATE of: ${err.message}`);
    assert.match(err.message, pattern);
    return true;
  };
}

describe('the SQL API payload limit', () => {
  let db: TestDb;
  let outbox: Outbox;
  const enqueueSql = () => `SELECT "${db.schema}".enqueue('sql.size', $1::jsonb) AS id`;

  before(async () => {
    db = await createTestDb('sql_limit');
    outbox = new Outbox({ store: db.store });
  });
  after(async () => db.drop());

  it('refuses a payload over 1 MiB at the same byte as Outbox.enqueue, naming the size and the limit', async () => {
    assert.equal(DEFAULT_MAX_PAYLOAD_BYTES, 1_048_576, 'the limit the migration spells out');
    const atLimit = jsonStringOf(DEFAULT_MAX_PAYLOAD_BYTES);
    const overLimit = jsonStringOf(DEFAULT_MAX_PAYLOAD_BYTES + 1);

    // The library's verdicts on the same payloads.
    outbox.encode([{ topic: 'sql.size', payload: atLimit }]);
    assert.throws(() => outbox.encode([{ topic: 'sql.size', payload: overLimit }]), {
      name: 'PayloadTooLargeError',
    });

    const res = await db.pool.query(enqueueSql(), [JSON.stringify(atLimit)]);
    const stored = await db.pool.query(
      `SELECT octet_length(payload) AS n FROM "${db.schema}".outbox WHERE id = $1`,
      [res.rows[0].id],
    );
    assert.equal(stored.rows[0].n, DEFAULT_MAX_PAYLOAD_BYTES);

    await assert.rejects(
      db.pool.query(enqueueSql(), [JSON.stringify(overLimit)]),
      isSqlError(/mailroom\.enqueue: payload is 1048577 bytes, over the limit of 1048576 bytes/),
    );
    assert.equal(await db.count(), 1, 'the refused message wrote nothing');
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
  });

  it('moves the limit with SET mailroom.max_payload_bytes, for a session or one transaction', async () => {
    const big = JSON.stringify(jsonStringOf(1_500_000));
    const client = await db.pool.connect();
    try {
      // SET LOCAL: raised for this transaction only.
      await client.query('BEGIN');
      await client.query(`SET LOCAL mailroom.max_payload_bytes = '2000000'`);
      await client.query(enqueueSql(), [big]);
      await client.query('COMMIT');
      // After it the session's setting is '' (not unset): the default applies again.
      await assert.rejects(
        client.query(enqueueSql(), [big]),
        isSqlError(/payload is 1500000 bytes, over the limit of 1048576 bytes/),
      );
      // SET: for the rest of the session, lower as well as higher.
      await client.query(`SET mailroom.max_payload_bytes = '10'`);
      await client.query(enqueueSql(), [JSON.stringify('12345678')]); // 10 bytes
      await assert.rejects(
        client.query(enqueueSql(), [JSON.stringify('123456789')]),
        isSqlError(/payload is 11 bytes, over the limit of 10 bytes/),
      );
    } finally {
      await client.query('ROLLBACK').catch(() => undefined);
      await client.query('RESET mailroom.max_payload_bytes').catch(() => undefined);
      client.release();
    }
    assert.equal(await db.count(), 2);
    await db.pool.query(`DELETE FROM "${db.schema}".outbox`);
  });

  it('refuses a mailroom.max_payload_bytes that is not a whole number of bytes, naming the value', async () => {
    const client = await db.pool.connect();
    try {
      for (const value of ['lots', '0', '-5', '1.5', '1e6', '9999999999999999999']) {
        await client.query(`SELECT set_config('mailroom.max_payload_bytes', $1, false)`, [value]);
        await assert.rejects(
          client.query(enqueueSql(), ['1']),
          isSqlError(
            new RegExp(
              `setting mailroom\\.max_payload_bytes must be a whole number of bytes, at least 1, got '${value.replace('.', '\\.')}'`,
            ),
          ),
        );
      }
    } finally {
      await client.query('RESET mailroom.max_payload_bytes').catch(() => undefined);
      client.release();
    }
    assert.equal(await db.count(), 0);
  });
});

describe('the SQL API payload limit on PGlite', () => {
  let pglite: PGlite;
  before(async () => {
    pglite = await PGlite.create();
  });
  after(async () => pglite.close());

  it('is applied by PGliteStore.migrate() as on PostgreSQL', async () => {
    const store = new PGliteStore({ db: pglite, schema: `lim_${randomBytes(4).toString('hex')}` });
    await store.migrate();
    await store.check();
    const call = (payload: string) =>
      pglite.query(`SELECT "${store.schema}".enqueue('t', $1::jsonb) AS id`, [payload]);
    await call(JSON.stringify(jsonStringOf(DEFAULT_MAX_PAYLOAD_BYTES)));
    await assert.rejects(
      call(JSON.stringify(jsonStringOf(DEFAULT_MAX_PAYLOAD_BYTES + 1))),
      isSqlError(/payload is 1048577 bytes, over the limit of 1048576 bytes/),
    );
    await pglite.query(`SET mailroom.max_payload_bytes = '4'`);
    await assert.rejects(call('"abc"'), isSqlError(/payload is 5 bytes, over the limit of 4 bytes/));
    await pglite.query('RESET mailroom.max_payload_bytes');
    await store.close();
  });
});
