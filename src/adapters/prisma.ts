import { NotATransactionError } from '../core/errors/not-a-transaction-error.js';
import type { SqlExecutor } from '../core/ports.js';
import { describeValue, isFunction, requireObject } from './adapter-support.js';
import { UnreadableResultError } from './unreadable-result-error.js';

/**
 * The slice of a Prisma interactive-transaction client that the adapter uses. Prisma generates
 * its client per project, so there is no one type to import; any generated client's `tx` has
 * this shape. The members typed `never` are what the `PrismaClient` itself has and a `tx` has
 * not (`Prisma.TransactionClient` omits them): passing the client is a compile error.
 */
export interface PrismaTransactionClient {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- Prisma's own signature
  $queryRawUnsafe<T = unknown>(query: string, ...values: any[]): PromiseLike<T>;
  readonly $connect?: never;
  readonly $disconnect?: never;
}

/**
 * Prisma's driver adapters read a result only when they map every column's type, and say so
 * only after the statement ran: the PostgreSQL one refuses the type `void` (`pg_notify()`'s), the
 * SQLite one a column with no declared type whose value is not text or a number (a blob from an
 * expression: `SELECT ? AS x` with bytes). Said plainly, with what to do.
 */
function unreadable(err: unknown): UnreadableResultError | undefined {
  const message = err instanceof Error ? err.message : '';
  const rollBack = "The statement's changes are in your open transaction; let this error roll it back. ";
  const name = /deserialize column of type '([^']+)'/.exec(message)?.[1];
  if (name !== undefined) {
    return new UnreadableResultError(
      `Prisma ran the statement but could not read its result: its driver adapter has no mapping for a column of type ` +
        `${name}. ${rollBack}` +
        (name === 'void'
          ? "A PostgreSQL store whose enqueue returns pg_notify()'s void needs updating: upgrade Mailroom, or set the " +
            'store option notify: false (relays then find messages by polling)'
          : 'Report it to Mailroom with the statement that failed'),
      { cause: err, details: { columnType: name } },
    );
  }
  // @prisma/adapter-better-sqlite3's UnexpectedTypeError; its message also holds the whole value.
  const valueType =
    (err as { name?: unknown } | null)?.name === 'UnexpectedTypeError'
      ? /^unexpected value of type (\w+)/.exec(message)?.[1]
      : undefined;
  if (valueType === undefined) return undefined;
  return new UnreadableResultError(
    `Prisma ran the statement but could not read its result: a column with no declared type held a value of ` +
      `JavaScript type ${valueType} (on SQLite, bytes from an expression such as \`SELECT ? AS x\`), which its driver ` +
      `adapter cannot map. ${rollBack}Select bytes from a table column declared BLOB, or as hex(…)`,
    { cause: err, details: { valueType } },
  );
}

const INSTEAD =
  'pass the `tx` of an interactive transaction: `prisma.$transaction(async (tx) => { …; ' +
  'await outbox.enqueue(fromPrisma(tx), message) })` (the array form `$transaction([…])` cannot run enqueue)';

/**
 * A Prisma interactive transaction as the store's {@link SqlExecutor}: the store's statements
 * run through `tx.$queryRawUnsafe` on the transaction's connection, so the message commits and
 * rolls back with your business rows.
 *
 * Prisma sends raw SQL to its driver adapter (or engine) as it is, so the store's placeholders
 * are already the database's own (`$1` on PostgreSQL, `?` on MySQL/MariaDB and SQLite). Rows are
 * plain objects with Prisma's raw-query values (`bigint` for 64-bit integers, `Uint8Array` for
 * bytes, `Date` for date-times). A result Prisma's driver adapter cannot read (a column of type
 * `void` on PostgreSQL, bytes from an untyped expression on SQLite) is an
 * {@link UnreadableResultError}; the statement ran, so let it roll the transaction back.
 *
 * Only interactive transactions can hold an enqueue: the array form `$transaction([…])` takes
 * Prisma's own query promises, not a function. Prisma ends an interactive transaction after its
 * `timeout` (5 s by default); a rollback then takes the message with it.
 *
 * @param tx - the `tx` of `prisma.$transaction(async (tx) => …)`. The `PrismaClient` itself is
 *   refused (by the compiler, and at run time): each of its statements commits on its own.
 * @throws NotATransactionError when `tx` is not a Prisma transaction client.
 * @throws UnreadableResultError (from `execute`) when Prisma ran a statement but cannot read its result.
 *
 * @example
 * ```ts
 * await prisma.$transaction(async (tx) => {
 *   await tx.order.create({ data: order });
 *   await outbox.enqueue(fromPrisma(tx), { topic: 'order.placed', key: order.id, payload: order });
 * });
 * ```
 */
export function fromPrisma(tx: PrismaTransactionClient): SqlExecutor {
  const o = requireObject(tx, 'fromPrisma', INSTEAD);
  if (!isFunction(o.$queryRawUnsafe)) {
    throw new NotATransactionError(
      describeValue(tx),
      `fromPrisma() needs a Prisma transaction client, got ${describeValue(tx)} (no $queryRawUnsafe): ${INSTEAD}`,
    );
  }
  // A transaction client has no $connect / $disconnect (Prisma leaves them out of `tx`).
  if (isFunction(o.$connect) || isFunction(o.$disconnect)) {
    throw new NotATransactionError(
      'a PrismaClient',
      'fromPrisma() got the PrismaClient, not a transaction: each of its statements runs in a transaction of ' +
        `its own, so the message would be committed even when your transaction rolls back. Instead, ${INSTEAD}`,
    );
  }
  return {
    async execute<Row>(sql: string, params: readonly unknown[] = []) {
      let rows: unknown;
      try {
        rows = await tx.$queryRawUnsafe(sql, ...params);
      } catch (err) {
        throw unreadable(err) ?? err;
      }
      return { rows: (Array.isArray(rows) ? rows : []) as Row[] };
    },
  };
}
