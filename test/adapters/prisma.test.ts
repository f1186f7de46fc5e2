import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PrismaBetterSqlite3 } from '@prisma/adapter-better-sqlite3';
import { PrismaMariaDb } from '@prisma/adapter-mariadb';
import { PrismaPg } from '@prisma/adapter-pg';
import mysql from 'mysql2/promise';
import { fromPrisma } from '../../src/adapters/prisma.js';
import { isUnreadableResultError } from '../../src/adapters/unreadable-result-error.js';
import { Outbox } from '../../src/core/index.js';
import { MySqlStore } from '../../src/stores/mysql/index.js';
import { DATABASE_URL } from '../helpers/postgres.js';
import { adapterTestBed, notATransaction } from './adapter-bed.js';
import { transactionContract } from './adapter-contract.js';
import { generatedPrismaClient, type GeneratedPrismaClient } from './prisma-client.js';

describe('fromPrisma on PostgreSQL (a Prisma 7 client generated here, driver adapter @prisma/adapter-pg)', () => {
  // The store's defaults (notify on): its enqueue returns a boolean, not pg_notify()'s void,
  // which Prisma's driver adapters cannot read.
  const bed = adapterTestBed('prisma', 'postgres');
  let prisma: GeneratedPrismaClient;
  before(async () => {
    const PrismaClient = await generatedPrismaClient();
    prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: DATABASE_URL, max: 3 }) });
  });
  after(async () => {
    await prisma?.$disconnect();
  });

  prismaContract(bed, () => prisma);

  it("returns rows as plain objects with Prisma's raw values", async () => {
    const { rows } = await prisma.$transaction((tx) =>
      fromPrisma(tx).execute('SELECT $1::int AS a, $2::text[] AS arr, $3::bytea AS bytes', [
        1,
        ['x'],
        Buffer.from('hi'),
      ]),
    );
    assert.deepEqual(rows, [{ a: 1, arr: ['x'], bytes: new Uint8Array(Buffer.from('hi')) }]);
  });

  it("says plainly that Prisma cannot read pg_notify()'s void, and the rollback still takes the row", async () => {
    const { id } = bed.order();
    await assert.rejects(
      prisma.$transaction(async (tx) => {
        await tx.$executeRawUnsafe(`INSERT INTO ${bed.orders} (id) VALUES ($1)`, id);
        await fromPrisma(tx).execute("SELECT pg_notify('mailroom_prisma_test', '')");
      }),
      (err: unknown) => {
        assert.ok(isUnreadableResultError(err), `expected UnreadableResultError, got ${String(err)}`);
        assert.equal(err.code, 'unreadable_result');
        assert.match(err.message, /type void.*roll it back.*notify: false/s);
        return true;
      },
    );
    assert.equal(await bed.orderExists(id), false);
  });

  it('refuses the PrismaClient itself, saying to pass the tx of an interactive transaction', () => {
    assert.throws(
      // @ts-expect-error the client is not a transaction: the compiler refuses it too.
      () => fromPrisma(prisma),
      notATransaction('a PrismaClient', /prisma\.\$transaction\(async \(tx\).*array form/),
    );
  });
});

type Bed = ReturnType<typeof adapterTestBed>;

/**
 * The cases every database runs besides the PostgreSQL-only ones: the rollback contract, and a
 * message whose fields go through Prisma's parameters (a binary key, bytes that are not UTF-8,
 * headers) arrives exactly as written. `client` is read inside the tests (made in `before`).
 */
function prismaContract(bed: Bed, client: () => GeneratedPrismaClient) {
  transactionContract(bed, (fn) =>
    client().$transaction((tx) =>
      fn({
        executor: fromPrisma(tx),
        insertOrder: async (id) => {
          await tx.$executeRawUnsafe(`INSERT INTO ${bed.orders} (id) VALUES (${bed.p(1)})`, id);
        },
      }),
    ),
  );

  it("delivers the key, type, bytes and headers exactly as written through Prisma's parameters", async () => {
    const payload = Buffer.from([0, 0xff, 0xfe, 0x80, 0x0a, 0x27, 0x3f]); // not UTF-8; a quote, a '?'
    const key = 'clé-🔑-?';
    const messageId = await client().$transaction((tx) =>
      bed.enqueue(fromPrisma(tx), {
        topic: 'order.bytes',
        key,
        type: 'order.bytes.v1',
        payload,
        headers: { 'x-trace': 'ünïcode ?' },
      }),
    );
    await bed.delivered(messageId);
    const got = bed.memory.messages.find((m) => m.id === messageId);
    assert.ok(got);
    assert.equal(got.key, key);
    assert.equal(got.type, 'order.bytes.v1');
    assert.deepEqual(Buffer.from(got.payload), payload);
    assert.equal(got.contentType, 'application/octet-stream');
    assert.deepEqual(got.headers, { 'x-trace': 'ünïcode ?' });
  });
}

describe('fromPrisma on MySQL/MariaDB (a Prisma 7 client generated here, driver adapter @prisma/adapter-mariadb)', () => {
  const bed = adapterTestBed('prisma', 'mysql');
  let prisma: GeneratedPrismaClient;
  before(async () => {
    const PrismaClient = await generatedPrismaClient('mysql');
    const url = new URL(bed.mysqlUrl);
    prisma = new PrismaClient({
      adapter: new PrismaMariaDb({
        host: url.hostname,
        port: Number(url.port || 3306),
        user: decodeURIComponent(url.username),
        password: decodeURIComponent(url.password),
        database: url.pathname.slice(1),
        connectionLimit: 3,
      }),
    });
  });
  after(async () => {
    await prisma?.$disconnect();
  });

  prismaContract(bed, () => prisma);

  it("returns rows as plain objects with Prisma's raw values (bigint, Uint8Array, Date)", async () => {
    const { rows } = await prisma.$transaction((tx) =>
      fromPrisma(tx).execute(
        "SELECT 1 AS a, CAST(? AS SIGNED) AS big, ? AS bytes, CAST('2024-01-02 03:04:05' AS DATETIME) AS d, ? AS s",
        [9007199254740993n, Buffer.from('hi'), 'x'],
      ),
    );
    assert.deepEqual(rows, [
      {
        a: 1,
        big: 9007199254740993n,
        bytes: new Uint8Array(Buffer.from('hi')),
        d: new Date('2024-01-02T03:04:05Z'),
        s: 'x',
      },
    ]);
  });

  it('passes the store check of Outbox({ requireTransaction: true }): MariaDB says the tx is a transaction', async () => {
    // The check reads @@in_transaction through the adapter; Prisma gives it as a bigint.
    const pool = mysql.createPool({ uri: bed.mysqlUrl, connectionLimit: 1 });
    const store = new MySqlStore({ pool, tablePrefix: 'mr_' });
    try {
      const outbox = new Outbox({ store, requireTransaction: true });
      const { id, message } = bed.order();
      const messageId = await prisma.$transaction(async (tx) => {
        await tx.$executeRawUnsafe('INSERT INTO orders (id) VALUES (?)', id);
        return outbox.enqueue(fromPrisma(tx), message);
      });
      await bed.delivered(messageId);
    } finally {
      await store.close();
      await pool.end();
    }
  });
});

describe('fromPrisma on SQLite (a Prisma 7 client generated here, driver adapter @prisma/adapter-better-sqlite3)', () => {
  // Two connections on one file: Prisma's, where the app's transaction runs, and the store's,
  // where the relay claims and settles (the file is in WAL mode).
  const bed = adapterTestBed('prisma', 'sqlite');
  let prisma: GeneratedPrismaClient;
  before(async () => {
    const PrismaClient = await generatedPrismaClient('sqlite');
    prisma = new PrismaClient({ adapter: new PrismaBetterSqlite3({ url: bed.sqliteFile }) });
  });
  after(async () => {
    await prisma?.$disconnect();
  });

  prismaContract(bed, () => prisma);

  it("returns rows as plain objects with Prisma's raw values (bigint for integers, Uint8Array for blobs)", async () => {
    const rows = await prisma.$transaction(async (tx) => {
      const executor = fromPrisma(tx);
      await executor.execute('CREATE TEMP TABLE raw_values (b BLOB, i INTEGER)');
      await executor.execute('INSERT INTO raw_values VALUES (?, ?)', [Buffer.from([0, 0xff]), 5]);
      return (await executor.execute('SELECT b, i, 9007199254740993 AS big, ? AS s FROM raw_values', ['x']))
        .rows;
    });
    assert.deepEqual(rows, [{ b: new Uint8Array([0, 0xff]), i: 5, big: 9007199254740993n, s: 'x' }]);
  });

  it('says plainly that Prisma cannot read bytes from an untyped expression, and the rollback still takes the row', async () => {
    const { id } = bed.order();
    await assert.rejects(
      prisma.$transaction(async (tx) => {
        await tx.$executeRawUnsafe('INSERT INTO orders (id) VALUES (?)', id);
        await fromPrisma(tx).execute('SELECT ? AS bytes', [Buffer.from('secret-ish '.repeat(50))]);
      }),
      (err: unknown) => {
        assert.ok(isUnreadableResultError(err), `expected UnreadableResultError, got ${String(err)}`);
        assert.equal(err.code, 'unreadable_result');
        assert.deepEqual(err.details, { valueType: 'object' });
        assert.match(err.message, /no declared type.*roll it back.*declared BLOB/s);
        assert.doesNotMatch(err.message, /secret-ish/, 'the value itself is not in the message');
        return true;
      },
    );
    assert.equal(await bed.orderExists(id), false);
  });

  it("passes the database's own errors through as they are", async () => {
    await assert.rejects(
      prisma.$transaction((tx) => fromPrisma(tx).execute('SELECT * FROM no_such_table')),
      (err: unknown) => {
        assert.equal(isUnreadableResultError(err), false);
        assert.match(String(err), /no_such_table/);
        return true;
      },
    );
  });
});
