import { ConfigError } from '../core/errors/config-error.js';
import { MailroomError, type MailroomErrorOptions } from '../core/errors/mailroom-error.js';
import { StoreError } from '../core/errors/store-error.js';
import { silentLogger, type Logger } from '../core/logger.js';
import { custom, hasMethods, integer, optionsSchema } from '../core/options-schema.js';
import type { SqlExecutor } from '../core/ports.js';
import { showValue } from '../core/show-value.js';
import { quoteIdent } from '../stores/sql-identifier.js';
import { BRANCH_PHASES, BranchRefusedError, type BranchPhase } from './participant.js';

/**
 * The sub-transaction barrier (DTM's and Seata's name for it): a participant writes one row per
 * `(gid, branch, phase)` into its own `tcc_barrier` table, in the same transaction as the phase's
 * business effects. The row makes every phase idempotent (a repeated call finds its row and does
 * nothing), turns a cancel whose try never ran into a recorded no-op (a null compensation), and
 * refuses a try that arrives after its cancel (a hanging try), which would otherwise reserve
 * something nobody will ever release. See docs/tcc-participants.md.
 */

/** The slice of a store the barrier needs: PostgresStore and PGliteStore have it. */
export interface BarrierStore<Tx = unknown> {
  readonly name?: string;
  /** Schema holding `tcc_barrier` (created by the store's migrations, schema version 12). */
  readonly schema: string;
  /** Runs `fn` in a transaction; commits when it resolves, rolls back and rethrows when it throws. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  executor(tx: NoInfer<Tx>): SqlExecutor;
}

/** Options of {@link TccBarrier}. */
export interface TccBarrierOptions<Tx = unknown> {
  /**
   * The participant's own database (PostgresStore, PGliteStore), migrated: the barrier rows
   * commit there with the phase's effects.
   */
  store: BarrierStore<Tx>;
  /** Receives prune counts. @default silent */
  logger?: Logger;
}

/** Which branch of which global transaction a call is for. */
export interface BranchRef {
  /** The global transaction's id, 1 to 128 bytes. */
  readonly gid: string;
  /** The branch's name within it, 1 to 128 bytes. */
  readonly branch: string;
}

/**
 * What {@link TccBarrier.run} did:
 * - `done`: the phase ran now, and `value` is what `fn` returned;
 * - `duplicate`: this phase of this branch already ran (and committed); `fn` was not run;
 * - `null-compensation`: a cancel (compensate) for a try (action) that never ran; nothing to
 *   undo, `fn` was not run, and a try arriving later will be refused.
 */
export type BarrierOutcome<T> =
  { status: 'done'; value: T } | { status: 'duplicate' } | { status: 'null-compensation' };

/** Options of {@link TccBarrier.prune}. */
export interface BarrierPruneOptions {
  /**
   * Rows older than this are deleted. Keep them longer than the longest time a coordinator may
   * still call a phase of the branch (its transaction timeout plus its whole retry window, and
   * any outage of the coordinator): a try that arrives after its cancel's row is gone is no
   * longer refused, and a repeated confirm or cancel runs again.
   *
   * @default 604800000 (7 days)
   */
  olderThanMs?: number;
  /** Rows deleted per statement (each its own short transaction). @default 1000 */
  limit?: number;
}

/**
 * The barrier saw an order of phases a correct coordinator never produces (a confirm with no
 * try, a confirm after a cancel, a cancel after a confirm). Nothing ran. This is a bug in the
 * coordinator, or the barrier rows were pruned while the transaction was still open.
 */
export class BarrierOrderError extends MailroomError {
  override name = 'BarrierOrderError';
  constructor(message: string, options: MailroomErrorOptions = {}) {
    super('barrier_out_of_order', message, options);
  }
}

/** True for a {@link BarrierOrderError}, also one thrown by another copy of the package. */
export function isBarrierOrderError(err: unknown): err is BarrierOrderError {
  return err instanceof BarrierOrderError || (err as { name?: unknown } | null)?.name === 'BarrierOrderError';
}

const DAY = 24 * 3_600_000;
/** The bound of the table's CHECK on gid and branch. */
export const MAX_BRANCH_REF_BYTES = 128;

const barrierSchema = optionsSchema<TccBarrierOptions>()('TccBarrier', {
  store: custom(
    'a store with transactions (PostgresStore, PGliteStore)',
    (v): v is BarrierStore => typeof v === 'object' && v !== null,
    { required: true },
  ),
  logger: custom(
    'a Logger (debug, info, warn, error)',
    hasMethods<Logger>('debug', 'info', 'warn', 'error'),
    {
      default: silentLogger,
    },
  ),
});

const pruneSchema = optionsSchema<BarrierPruneOptions>()('barrier.prune', {
  olderThanMs: integer({ min: 1, default: 7 * DAY }),
  limit: integer({ min: 1, max: 100_000, default: 1000 }),
});

/**
 * What is wrong with a gid or branch name, or undefined when it is fine. Shared by the barrier
 * and the HTTP handler (which answers 400 with it).
 */
export function branchRefProblem(field: 'gid' | 'branch', value: unknown): string | undefined {
  const what = field === 'gid' ? "the global transaction's id" : "the branch's name";
  if (typeof value !== 'string') return `${field} must be ${what}, a string, got ${showValue(value)}`;
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes === 0 || bytes > MAX_BRANCH_REF_BYTES) {
    return `${field} must be ${what}, 1 to ${MAX_BRANCH_REF_BYTES} bytes, got ${bytes} bytes: ${showValue(value)}`;
  }
  // PostgreSQL text cannot hold NUL; the insert would fail with an encoding error instead.
  if (value.includes('\u0000')) return `${field} must not contain NUL characters, got ${showValue(value)}`;
  return undefined;
}

/** What is wrong with a phase name, or undefined. */
export function phaseProblem(value: unknown): string | undefined {
  if (typeof value === 'string' && (BRANCH_PHASES as readonly string[]).includes(value)) return undefined;
  return `phase must be one of ${BRANCH_PHASES.join(', ')}, got ${showValue(value)}`;
}

/** The statements of the barrier, as values (one place, reviewable as SQL). */
function barrierSql(schema: string) {
  const t = `${quoteIdent(schema)}.tcc_barrier`;
  return {
    table: t,
    /**
     * One row, or none when `(gid, branch, phase)` is taken. A row written by a transaction still
     * open makes this wait for that transaction: committed, it counts as taken; rolled back, this
     * insert goes ahead. That wait is what serialises two copies of the same call.
     */
    insert: `INSERT INTO ${t} (gid, branch, phase, reason) VALUES ($1, $2, $3, $4)
  ON CONFLICT DO NOTHING RETURNING 1 AS new`,
    /**
     * The branch's rows. A separate statement from the insert on purpose: under READ COMMITTED
     * each statement takes a new snapshot, so this sees the row of a concurrent transaction the
     * insert just waited for; a CTE in the insert's own statement would not.
     */
    rows: `SELECT phase, reason FROM ${t} WHERE gid = $1 AND branch = $2`,
    prune: `DELETE FROM ${t} WHERE (gid, branch, phase) IN (
  SELECT b.gid, b.branch, b.phase FROM ${t} b
  WHERE b.created_at < now() - $1::bigint * interval '1 millisecond'
  ORDER BY b.created_at LIMIT $2)
RETURNING 1`,
  };
}

type Rows = Map<string, string>;

/**
 * The participant's side of TCC and sagas: runs each phase's business effects under a barrier
 * row in the participant's own transaction, so that every phase runs at most once per branch, a
 * cancel without a try is a no-op, and a try after its cancel is refused.
 *
 * @example
 * ```ts
 * const barrier = new TccBarrier({ store }); // the participant's PostgresStore, migrated
 * const outcome = await barrier.try({ gid, branch: 'inventory' }, async (tx) => {
 *   const res = await tx.query('UPDATE stock SET reserved = reserved + $2 WHERE sku = $1 AND free >= $2', [sku, n]);
 *   if (res.rowCount === 0) throw new BranchRefusedError(`only ${free} of ${sku} left`);
 * });
 * // outcome.status: 'done', 'duplicate'
 * ```
 */
export class TccBarrier<Tx = unknown> {
  readonly store: BarrierStore<Tx>;
  readonly #sql: ReturnType<typeof barrierSql>;
  readonly #logger: Logger;

  constructor(options: TccBarrierOptions<Tx>) {
    const resolved = barrierSchema.resolve(options as TccBarrierOptions);
    const store = options.store;
    const storeName = typeof store.name === 'string' ? `the ${store.name} store` : 'the store';
    for (const method of ['transaction', 'executor'] as const) {
      if (typeof store[method] !== 'function') {
        throw new ConfigError(
          'store',
          `TccBarrier option store: ${storeName} lacks ${method}(); give the participant's own ` +
            'PostgresStore or PGliteStore (migrated: the barrier table comes with schema version 12)',
        );
      }
    }
    if (typeof store.schema !== 'string' || store.schema === '') {
      throw new ConfigError(
        'store',
        `TccBarrier option store: ${storeName} has no schema (got ${showValue(store.schema)}); ` +
          'give a PostgresStore or PGliteStore, whose schema holds the tcc_barrier table',
      );
    }
    this.store = store;
    this.#sql = barrierSql(store.schema);
    this.#logger = resolved.logger;
  }

  /**
   * Runs `fn(tx)` for this phase of this branch at most once, in one transaction of the store
   * with the barrier row. `fn` throwing rolls back the row with its effects, so the call can be
   * made again; its error is rethrown unchanged (a {@link BranchRefusedError} from a try or
   * action is a business refusal). A try (action) whose cancel (compensate) came first throws a
   * `BranchRefusedError` without running. A copy of a call that is running now waits for it and
   * then returns `duplicate` (or runs, if the first one rolled back).
   */
  async run<T>(ref: BranchRef, phase: BranchPhase, fn: (tx: Tx) => Promise<T>): Promise<BarrierOutcome<T>> {
    const { gid, branch } = checkRef(ref);
    const phaseError = phaseProblem(phase);
    if (phaseError !== undefined)
      throw new ConfigError('phase', `barrier.run: ${phaseError}`, { value: phase });
    if (typeof fn !== 'function') {
      throw new ConfigError('fn', 'barrier.run(ref, phase, fn): fn must be an async function (tx) => …');
    }
    return this.store.transaction(async (tx) => {
      const executor = this.store.executor(tx);
      const insert = (rowPhase: BranchPhase, reason: BranchPhase) =>
        this.#execute(executor, this.#sql.insert, [gid, branch, rowPhase, reason]).then(
          (r) => r.length === 1,
        );
      const rows = async (): Promise<Rows> => {
        const found = await this.#execute(executor, this.#sql.rows, [gid, branch]);
        return new Map(found.map((r) => [String(r.phase), String(r.reason)]));
      };
      const where = `branch ${showValue(branch)} of global transaction ${showValue(gid)}`;
      const details = { gid, branch, phase };

      switch (phase) {
        case 'try':
        case 'action': {
          if (!(await insert(phase, phase))) {
            const reason = (await rows()).get(phase);
            if (reason === phase) return { status: 'duplicate' };
            // The row is the cancel's (compensate's) mark: it ran first, so this call is late.
            throw new BranchRefusedError(
              `${where} was already ${phase === 'try' ? 'cancelled' : 'compensated'} before this ${phase} ` +
                `arrived (a hanging ${phase}): refused, nothing was done`,
              { details: { ...details, reason: reason ?? null } },
            );
          }
          break;
        }
        case 'cancel':
        case 'compensate': {
          const first: BranchPhase = phase === 'cancel' ? 'try' : 'action';
          // Takes the try's (action's) row when it is free: the try never ran, and this row both
          // records that and refuses the try if it comes later.
          const nullCompensation = await insert(first, phase);
          if (!(await insert(phase, phase))) return { status: 'duplicate' };
          if (nullCompensation) return { status: 'null-compensation' };
          const other = phase === 'cancel' ? 'confirm' : undefined;
          if (other !== undefined && (await rows()).has(other)) {
            throw new BarrierOrderError(
              `${where} was already confirmed, and now a cancel came: a coordinator decides one of ` +
                'confirm and cancel, so this is a coordinator bug; the cancel did not run',
              { details },
            );
          }
          break;
        }
        case 'confirm': {
          if (!(await insert('confirm', 'confirm'))) return { status: 'duplicate' };
          const found = await rows();
          const problem = !found.has('try')
            ? 'has no try on this participant (a coordinator confirms only branches whose try ' +
              'succeeded, so this is a coordinator bug, or the barrier rows were pruned too early)'
            : found.get('try') !== 'try' || found.has('cancel')
              ? 'was cancelled, and now a confirm came (a coordinator decides one of confirm and ' +
                'cancel, so this is a coordinator bug)'
              : undefined;
          if (problem !== undefined) {
            throw new BarrierOrderError(`${where} ${problem}; the confirm did not run`, { details });
          }
          break;
        }
      }
      const value = await fn(tx);
      return { status: 'done', value };
    });
  }

  /** {@link run} for a TCC try. */
  try<T>(ref: BranchRef, fn: (tx: Tx) => Promise<T>): Promise<BarrierOutcome<T>> {
    return this.run(ref, 'try', fn);
  }

  /** {@link run} for a TCC confirm. */
  confirm<T>(ref: BranchRef, fn: (tx: Tx) => Promise<T>): Promise<BarrierOutcome<T>> {
    return this.run(ref, 'confirm', fn);
  }

  /** {@link run} for a TCC cancel. */
  cancel<T>(ref: BranchRef, fn: (tx: Tx) => Promise<T>): Promise<BarrierOutcome<T>> {
    return this.run(ref, 'cancel', fn);
  }

  /** {@link run} for a saga action. */
  action<T>(ref: BranchRef, fn: (tx: Tx) => Promise<T>): Promise<BarrierOutcome<T>> {
    return this.run(ref, 'action', fn);
  }

  /** {@link run} for a saga compensation. */
  compensate<T>(ref: BranchRef, fn: (tx: Tx) => Promise<T>): Promise<BarrierOutcome<T>> {
    return this.run(ref, 'compensate', fn);
  }

  /**
   * Deletes barrier rows older than `olderThanMs`, `limit` per statement, until none is left;
   * returns how many. See {@link BarrierPruneOptions.olderThanMs} for how long to keep them.
   */
  async prune(options: BarrierPruneOptions = {}): Promise<number> {
    const { olderThanMs, limit } = pruneSchema.resolve(options);
    let total = 0;
    for (;;) {
      const n = await this.store.transaction(async (tx) => {
        const executor = this.store.executor(tx);
        const res = await this.#execute(executor, this.#sql.prune, [olderThanMs, limit]);
        return res.length;
      });
      total += n;
      if (n < limit) break;
    }
    if (total > 0) this.#logger.info('tcc barrier pruned', { schema: this.store.schema, deleted: total });
    return total;
  }

  /** Runs one of the barrier's own statements; a missing table says to migrate. */
  async #execute(executor: SqlExecutor, sql: string, params: unknown[]): Promise<Record<string, unknown>[]> {
    try {
      return (await executor.execute(sql, params)).rows;
    } catch (err) {
      if ((err as { code?: unknown } | null)?.code === '42P01') {
        throw new StoreError(
          'schema_missing',
          `the barrier table ${this.#sql.table} does not exist: run the store's migrations ` +
            `(await store.migrate(), or npx mailroom migrate --schema ${this.store.schema}); it comes with schema version 12`,
          { cause: err, details: { schema: this.store.schema } },
        );
      }
      throw err;
    }
  }
}

function checkRef(ref: BranchRef): BranchRef {
  if (typeof ref !== 'object' || ref === null) {
    throw new ConfigError('ref', `barrier: ref must be { gid, branch }, got ${showValue(ref)}`);
  }
  for (const field of ['gid', 'branch'] as const) {
    const problem = branchRefProblem(field, ref[field]);
    if (problem !== undefined) {
      throw new ConfigError(
        field,
        `barrier: ${problem}; pass the call's own gid and branch (BranchCall.gid, BranchCall.branch)`,
        { value: ref[field] },
      );
    }
  }
  return { gid: ref.gid, branch: ref.branch };
}
