import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PrismaPg } from '@prisma/adapter-pg';
import { fromPrisma } from '../../src/adapters/prisma.js';
import { isUnreadableResultError } from '../../src/adapters/unreadable-result-error.js';
import { DATABASE_URL } from '../helpers/postgres.js';
import { adapterTestBed, notATransaction } from './adapter-bed.js';
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

  const insertOrder = (
    tx: { $executeRawUnsafe(sql: string, ...v: unknown[]): Promise<number> },
    id: string,
  ) => tx.$executeRawUnsafe(`INSERT INTO ${bed.orders} (id) VALUES ($1)`, id);

  it('delivers the message of a committed interactive transaction, and its business row is there', async () => {
    const { id, message } = bed.order();
    const messageId = await prisma.$transaction(async (tx) => {
      await insertOrder(tx, id);
      return bed.enqueue(fromPrisma(tx), message);
    });
    assert.equal(await bed.orderExists(id), true);
    await bed.delivered(messageId);
  });

  it('leaves neither the row nor the message when an error thrown in the callback rolls back', async () => {
    const { id, message } = bed.order();
    let messageId: string | undefined;
    await assert.rejects(
      prisma.$transaction(async (tx) => {
        await insertOrder(tx, id);
        messageId = await bed.enqueue(fromPrisma(tx), message);
        throw new Error('business failure');
      }),
      /business failure/,
    );
    await bed.assertRolledBack(id, messageId, () =>
      prisma.$transaction((tx) => bed.enqueue(fromPrisma(tx), bed.order().message)),
    );
  });

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
        await insertOrder(tx, id);
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
