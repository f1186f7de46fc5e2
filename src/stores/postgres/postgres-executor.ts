import { NotATransactionError } from '../../core/errors/not-a-transaction-error.js';
import type { SqlExecutor } from '../../core/ports.js';
import type {
  PgClientState,
  PgQueryable,
  PgQueryResult,
  PostgresJsSql,
  PostgresTransactionHandle,
} from './postgres-driver.js';

/** node-postgres also takes a query config object; `name` makes it a prepared statement. */
export interface PgNamedQueryable {
  query(config: { name: string; text: string; values: unknown[] }): Promise<PgQueryResult>;
}

type Shape = Record<string, unknown>;

/** Whether the handle's connection is inside a transaction block, as far as the driver knows for free. */
type TransactionState = 'in' | 'out' | 'unknown';

const WHAT_TO_PASS =
  'pass the handle your transaction runs on: the client from `await pool.connect()` after ' +
  "`await client.query('BEGIN')`, the `tx` of postgres.js `sql.begin(async (tx) => …)`, the `tx` of " +
  "PGlite `db.transaction(async (tx) => …)`, or an ORM adapter's executor (`execute(sql, params)`)";

const isFunction = (value: unknown): boolean => typeof value === 'function';

/**
 * A `pg.Pool` (pg-pool, and pools built on it such as `@neondatabase/serverless`): it has the
 * client's `connect` and `query`, and also these counters, which no client has.
 */
function isPgPool(o: Shape): boolean {
  return (
    isFunction(o.query) &&
    isFunction(o.connect) &&
    typeof o.totalCount === 'number' &&
    typeof o.idleCount === 'number' &&
    typeof o.waitingCount === 'number'
  );
}

/**
 * The root `sql` of postgres.js: `Postgres()` gives it `begin`, `reserve`, `listen` and `end`.
 * A `sql.begin` transaction has `savepoint` instead and no `begin`; a `sql.reserve()`
 * connection has none of them but `release` (checked as of postgres 3.4).
 */
function isPostgresJsRoot(o: Shape): boolean {
  return isFunction(o.unsafe) && isFunction(o.begin) && isFunction(o.reserve) && !isFunction(o.release);
}

/** A PGlite database (or PGliteWorker) itself; the `tx` that `db.transaction` hands out has no `transaction`. */
function isPGliteDatabase(o: Shape): boolean {
  return isFunction(o.query) && isFunction(o.exec) && isFunction(o.transaction);
}

/**
 * What a node-postgres client knows without asking the server. `getTransactionStatus()` is the
 * status byte of the server's last ReadyForQuery: `I` idle, `T` in a transaction block, `E` in a
 * failed one. It describes the session *now* only while no query is queued or in flight, which
 * `readyForQuery` says: a `client.query('BEGIN')` called without `await` makes it false until
 * the BEGIN finished, and our statement would then run after it, inside the block. Anything
 * else (older pg, pg-native, look-alikes) is `unknown`, never `out`: a correct call must never
 * be turned away on a guess.
 */
function pgTransactionState(client: PgClientState): TransactionState {
  if (typeof client.getTransactionStatus !== 'function' || client.readyForQuery !== true) return 'unknown';
  const status = client.getTransactionStatus();
  if (status === 'I') return 'out';
  return status === 'T' || status === 'E' ? 'in' : 'unknown';
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value !== 'object' && typeof value !== 'function') return `a ${typeof value}`;
  const ctor = (value as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof ctor === 'string' && ctor !== 'Object' && ctor !== 'Function'
    ? `an object of class ${ctor}`
    : 'an object';
}

function rejectPool(o: Shape): never {
  throw new NotATransactionError(
    'a pg.Pool',
    `enqueue got a pg.Pool (totalCount ${String(o.totalCount)}, idleCount ${String(o.idleCount)}), not a ` +
      'transaction: a pool runs each statement on whichever connection is free, in a transaction of its ' +
      'own, so the message would be committed even when your transaction rolls back. ' +
      "Check out a client and enqueue on it inside your transaction: `const client = await pool.connect(); await client.query('BEGIN'); … " +
      "await outbox.enqueue(client, message); await client.query('COMMIT'); client.release()`",
    { details: { totalCount: o.totalCount, idleCount: o.idleCount, waitingCount: o.waitingCount } },
  );
}

function rejectPostgresJsRoot(): never {
  throw new NotATransactionError(
    'the root postgres.js sql',
    'enqueue got the root postgres.js `sql`, not a transaction: it runs each statement on any free ' +
      'connection of its pool, in a transaction of its own, so the message would be committed even when ' +
      'your transaction rolls back. Enqueue with the `tx` of your transaction: ' +
      '`await sql.begin(async (tx) => { …; await outbox.enqueue(tx, message) })`',
  );
}

function rejectPGliteDatabase(): never {
  // Each way of using the database object goes wrong (see docs/stores/postgres.md, "Which handle
  // to pass to enqueue"): inside db.transaction() its queries wait for that very transaction (a
  // hang); outside, the INSERT commits on its own; and after a BEGIN sent through db.query(), every
  // other caller's statement, the relay's claim included, runs inside that open transaction too,
  // so the relay can publish the message before it rolls back.
  throw new NotATransactionError(
    'a PGlite database',
    'enqueue got the PGlite database itself, not a transaction: inside `db.transaction()` its queries wait ' +
      'for that transaction to end, so enqueue would never return; outside, the message commits on its own; ' +
      "and after a BEGIN through `db.query()`, the relay's statements run inside your open transaction and can " +
      'publish the message before you roll back. Enqueue with the `tx` that PGlite hands you: ' +
      '`await db.transaction(async (tx) => { …; await outbox.enqueue(tx, message) })`',
  );
}

function rejectAutocommitClient(): never {
  throw new NotATransactionError(
    'a pg client outside BEGIN',
    'enqueue got a pg client that is not inside a transaction (the server reported it idle after its last ' +
      'statement): the INSERT would commit on its own, whatever your business transaction does later. ' +
      "Run `await client.query('BEGIN')` on this client first, do your business writes and the enqueue, then " +
      "`await client.query('COMMIT')`",
  );
}

/**
 * What each executor made here knows about its transaction for free, for
 * {@link requirePostgresTransaction}: node-postgres clients can tell, the others cannot.
 */
const knownState = new WeakMap<SqlExecutor, () => TransactionState>();

/**
 * Wraps what the caller holds in the transaction it already runs:
 * - a node-postgres client (`pg.PoolClient` / `pg.Client` after `BEGIN`),
 * - a postgres.js transaction (`sql.begin(tx => …)`'s `tx`) or reserved connection,
 * - PGlite's `tx` from `db.transaction(tx => …)`,
 * - anything with `execute(sql, params)` (ORM adapters).
 *
 * Throws {@link NotATransactionError} for handles whose statements would each commit on their own
 * (the message would then outlive a rollback): a `pg.Pool`, the root postgres.js `sql`, a PGlite
 * database itself, and a node-postgres client that the server last reported outside any
 * transaction block. The types reject the first three at compile time where the driver's own
 * types allow it (see {@link PostgresTransactionHandle}); these checks catch them at run time
 * always.
 */
export function postgresExecutor(tx: PostgresTransactionHandle): SqlExecutor {
  const handle: unknown = tx;
  if (handle === null || (typeof handle !== 'object' && typeof handle !== 'function')) {
    throw new NotATransactionError(
      describe(handle),
      `enqueue needs the caller's transaction, got ${describe(handle)}: ${WHAT_TO_PASS}`,
    );
  }
  const o = handle as Shape;
  if (isPgPool(o)) rejectPool(o);
  if (isPostgresJsRoot(o)) rejectPostgresJsRoot();
  if (isPGliteDatabase(o)) rejectPGliteDatabase();

  if (isFunction(o.execute)) {
    // An ORM adapter's executor: it already speaks our interface; what it wraps is its business.
    return handle as SqlExecutor;
  }
  if (isFunction(o.unsafe)) {
    const sql = handle as PostgresJsSql;
    return {
      async execute<Row>(text: string, params: readonly unknown[] = [], name?: string) {
        // postgres.js names and caches prepared statements itself; `prepare` asks it to.
        const rows = (await sql.unsafe(
          text,
          params as unknown[],
          name ? { prepare: true } : undefined,
        )) as unknown as Row[];
        return { rows: Array.from(rows) };
      },
    };
  }
  if (isFunction(o.query)) {
    const client = handle as PgQueryable & PgClientState;
    const state = () => pgTransactionState(client);
    const executor: SqlExecutor = {
      async execute<Row>(text: string, params: readonly unknown[] = [], name?: string) {
        // Checked right before the statement is sent, with nothing in between that could let
        // another caller's query run first.
        if (state() === 'out') rejectAutocommitClient();
        // A named statement is parsed and planned once per connection: for the one-message
        // enqueue that is most of its cost (measured: 2,272 → 3,776 tx/s with 8 writers).
        const res = name
          ? await (client as unknown as PgNamedQueryable).query({ name, text, values: params as unknown[] })
          : await client.query(text, params as unknown[]);
        return { rows: res.rows as Row[] };
      },
    };
    knownState.set(executor, state);
    return executor;
  }
  throw new NotATransactionError(
    describe(handle),
    `enqueue needs the caller's transaction, got ${describe(handle)} with no query, unsafe or execute ` +
      `method: ${WHAT_TO_PASS}`,
  );
}

function sqlStateOf(err: unknown): unknown {
  const code = (err as { code?: unknown })?.code;
  // ORM adapters may wrap the driver's error; its SQLSTATE is then on the cause.
  return code ?? (err as { cause?: { code?: unknown } })?.cause?.code;
}

/**
 * Makes sure the executor's connection is inside a transaction block, exactly: free when the
 * driver knows it (node-postgres clients), otherwise one round trip running `lockStatement`, a
 * `LOCK TABLE` that PostgreSQL refuses with SQLSTATE 25P01 outside a transaction block (and that,
 * inside one, takes the lock the enqueue's INSERT takes anyway). Throws
 * {@link NotATransactionError} when the connection is not in one; other errors unchanged.
 *
 * No cheaper exact test exists: a single statement cannot see whether it runs in a block, since
 * every function and CTE runs inside the statement's own transaction either way, and the
 * timestamp tests (`now() <> statement_timestamp()`) go wrong when BEGIN and the next statement
 * share a clock tick or the clock steps.
 */
export async function requirePostgresTransaction(
  executor: SqlExecutor,
  lockStatement: string,
): Promise<void> {
  if (knownState.get(executor)?.() === 'in') return;
  try {
    await executor.execute(lockStatement);
  } catch (err) {
    if (sqlStateOf(err) !== '25P01') throw err;
    throw new NotATransactionError(
      'a connection outside a transaction block',
      "enqueue's handle is not inside a transaction block (requireTransaction is on, and PostgreSQL answered " +
        `25P01 to \`${lockStatement}\`), so the message would commit on its own, whatever your business ` +
        `transaction does. Run BEGIN on that connection first, or ${WHAT_TO_PASS}`,
      { cause: err },
    );
  }
}
