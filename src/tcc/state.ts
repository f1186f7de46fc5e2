import { ConfigError } from '../core/errors/config-error.js';
import type { SqlExecutor } from '../core/ports.js';
import type { JsonValue } from '../core/types.js';
import { quoteIdent } from '../stores/sql-identifier.js';
import type { ParticipantDescriptor } from './participant.js';

/** The kind of a global transaction. */
export type GlobalKind = 'tcc' | 'saga';

/** States of a global transaction; see sql/postgres/000012_tcc.sql. */
export type GlobalState =
  | 'trying'
  | 'confirming'
  | 'confirmed'
  | 'cancelling'
  | 'cancelled'
  | 'running'
  | 'succeeded'
  | 'compensating'
  | 'compensated';

/** States of a branch. */
export type BranchState =
  | 'trying'
  | 'tried'
  | 'refused'
  | 'unknown'
  | 'confirmed'
  | 'cancelled'
  | 'running'
  | 'done'
  | 'failed'
  | 'compensated';

/** A global transaction as stored. */
export interface GlobalRecord {
  gid: string;
  kind: GlobalKind;
  state: GlobalState;
  timeoutAt: Date;
  httpOnly: boolean;
  owner: string | null;
  leaseUntil: Date | null;
  attempts: number;
  nextAttemptAt: Date;
  meta: JsonValue | null;
  reason: string | null;
  lastError: string | null;
  createdAt: Date;
  decidedAt: Date | null;
  finishedAt: Date | null;
}

/** A branch as stored. */
export interface BranchRecord {
  gid: string;
  branch: string;
  seq: number;
  participant: ParticipantDescriptor;
  input: JsonValue | null;
  state: BranchState;
  result: JsonValue | null;
  attempts: number;
  lastError: string | null;
}

/** The store slice the coordinator needs: its own transactions on the app's database. */
export interface TccStore<Tx = unknown> {
  readonly name: string;
  readonly schema: string;
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  executor(tx: NoInfer<Tx>): SqlExecutor;
}

/** Where a global transaction in progress can go, and what it ends as. */
export const FINAL_OF: Partial<Record<GlobalState, GlobalState>> = {
  confirming: 'confirmed',
  cancelling: 'cancelled',
  compensating: 'compensated',
};

const ACTIVE = `('trying', 'confirming', 'cancelling', 'running', 'compensating')`;

type Row = Record<string, unknown>;

const date = (v: unknown): Date => (v instanceof Date ? v : new Date(String(v)));
const dateOrNull = (v: unknown): Date | null => (v === null || v === undefined ? null : date(v));
const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
/** jsonb comes back parsed from pg and PGlite; a string only from drivers that leave it raw. */
const json = (v: unknown): JsonValue | null => (v === undefined ? null : (v as JsonValue | null));

function globalRecord(r: Row): GlobalRecord {
  return {
    gid: String(r.gid),
    kind: r.kind as GlobalKind,
    state: r.state as GlobalState,
    timeoutAt: date(r.timeout_at),
    httpOnly: r.http_only === true,
    owner: strOrNull(r.owner),
    leaseUntil: dateOrNull(r.lease_until),
    attempts: Number(r.attempts),
    nextAttemptAt: date(r.next_attempt_at),
    meta: json(r.meta),
    reason: strOrNull(r.reason),
    lastError: strOrNull(r.last_error),
    createdAt: date(r.created_at),
    decidedAt: dateOrNull(r.decided_at),
    finishedAt: dateOrNull(r.finished_at),
  };
}

function branchRecord(r: Row): BranchRecord {
  return {
    gid: String(r.gid),
    branch: String(r.branch),
    seq: Number(r.seq),
    participant: r.participant as ParticipantDescriptor,
    input: json(r.input),
    state: r.state as BranchState,
    result: json(r.result),
    attempts: Number(r.attempts),
    lastError: strOrNull(r.last_error),
  };
}

/** Text kept from an error for `last_error` / `reason`: enough to act on, never unbounded. */
export function errorText(err: unknown): string {
  const text = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return text.length > 1000 ? `${text.slice(0, 997)}...` : text;
}

/** jsonb parameters go as text: every driver passes a string through unchanged. */
const jsonParam = (v: unknown): string | null => (v === undefined || v === null ? null : JSON.stringify(v));

/**
 * The coordinator's SQL. Every transition is a conditional UPDATE (`WHERE state = from`) under
 * the row lock, so two deciders (a coordinator and a recovery worker) never both win.
 */
export class TccStateStore<Tx = unknown> {
  readonly store: TccStore<Tx>;
  readonly #t: string;
  readonly #b: string;

  constructor(store: TccStore<Tx>) {
    for (const method of ['transaction', 'executor'] as const) {
      if (typeof (store as unknown as Record<string, unknown> | null)?.[method] !== 'function') {
        throw new ConfigError(
          'store',
          `a TCC/saga coordinator needs a store with transactions (PostgresStore, PGliteStore); ` +
            `the one given has no ${method}()`,
        );
      }
    }
    if (typeof store.schema !== 'string') {
      throw new ConfigError('store', 'a TCC/saga coordinator needs a PostgreSQL store (it has a `schema`)');
    }
    this.store = store;
    this.#t = `${quoteIdent(store.schema)}.tcc_transaction`;
    this.#b = `${quoteIdent(store.schema)}.tcc_branch`;
  }

  async #run<T>(fn: (ex: SqlExecutor, tx: Tx) => Promise<T>): Promise<T> {
    return this.store.transaction((tx) => fn(this.store.executor(tx), tx));
  }

  /** Creates the global transaction, owned (leased) by the caller. False when the gid is taken. */
  async begin(input: {
    gid: string;
    kind: GlobalKind;
    timeoutMs: number;
    owner: string;
    leaseMs: number;
    meta: JsonValue | undefined;
  }): Promise<boolean> {
    const state = input.kind === 'tcc' ? 'trying' : 'running';
    return this.#run(async (ex) => {
      const res = await ex.execute(
        `INSERT INTO ${this.#t} (gid, kind, state, timeout_at, owner, lease_until, meta)
         VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond', $5,
                 now() + $6 * interval '1 millisecond', $7::jsonb)
         ON CONFLICT (gid) DO NOTHING RETURNING 1 AS created`,
        [input.gid, input.kind, state, input.timeoutMs, input.owner, input.leaseMs, jsonParam(input.meta)],
      );
      return res.rows.length === 1;
    });
  }

  /**
   * Writes a branch before its first call, if the transaction is still in its first phase
   * (`expect`). Returns the state found: anything but `expect` means the branch was not written
   * (recovery cancelled the transaction meanwhile). `also` runs in the same transaction (a
   * message step enqueues its message there).
   */
  async addBranch(
    input: {
      gid: string;
      expect: 'trying' | 'running';
      branch: string;
      seq: number;
      participant: ParticipantDescriptor;
      input: JsonValue | null;
      state: BranchState;
    },
    also?: (tx: Tx) => Promise<void>,
  ): Promise<GlobalState | 'missing'> {
    return this.#run(async (ex, tx) => {
      const found = await ex.execute<Row>(`SELECT state FROM ${this.#t} WHERE gid = $1 FOR UPDATE`, [
        input.gid,
      ]);
      const state = found.rows[0]?.state as GlobalState | undefined;
      if (state === undefined) return 'missing';
      if (state !== input.expect) return state;
      await ex.execute(
        `INSERT INTO ${this.#b} (gid, branch, seq, participant, input, state)
         VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6)`,
        [
          input.gid,
          input.branch,
          input.seq,
          JSON.stringify(input.participant),
          jsonParam(input.input),
          input.state,
        ],
      );
      if (input.participant.kind === 'local') {
        await ex.execute(`UPDATE ${this.#t} SET http_only = false, updated_at = now() WHERE gid = $1`, [
          input.gid,
        ]);
      }
      if (also) await also(tx);
      return state;
    });
  }

  /** Records a branch's outcome. `also` runs in the same transaction. */
  async setBranch(
    gid: string,
    branch: string,
    update: {
      state?: BranchState;
      result?: JsonValue | undefined;
      error?: string | null;
      attempted?: boolean;
    },
    also?: (tx: Tx) => Promise<void>,
  ): Promise<void> {
    await this.#run(async (ex, tx) => {
      await ex.execute(
        `UPDATE ${this.#b} SET state = coalesce($3, state), result = coalesce($4::jsonb, result),
           last_error = CASE WHEN $5::boolean THEN $6 ELSE last_error END,
           attempts = attempts + CASE WHEN $7::boolean THEN 1 ELSE 0 END, updated_at = now()
         WHERE gid = $1 AND branch = $2`,
        [
          gid,
          branch,
          update.state ?? null,
          jsonParam(update.result),
          update.error !== undefined,
          update.error ?? null,
          update.attempted === true,
        ],
      );
      if (also) await also(tx);
    });
  }

  /**
   * Moves the transaction from `from` to `to` if it is still in `from`, and runs `also` (the
   * application's writes and messages that belong to the decision) in the same transaction.
   * Returns the state the transaction is in afterwards: `to` when this call decided.
   */
  async decide(
    gid: string,
    from: GlobalState,
    to: GlobalState,
    reason: string | null,
    also?: (tx: Tx, record: GlobalRecord) => Promise<void>,
  ): Promise<GlobalState | 'missing'> {
    const final = to === 'succeeded' || to === 'confirmed' || to === 'cancelled' || to === 'compensated';
    return this.#run(async (ex, tx) => {
      const res = await ex.execute<Row>(
        `UPDATE ${this.#t} SET state = $3, reason = coalesce($4, reason), decided_at = now(),
           finished_at = CASE WHEN $5::boolean THEN now() ELSE NULL END,
           attempts = 0, next_attempt_at = now(), updated_at = now()
         WHERE gid = $1 AND state = $2 RETURNING *`,
        [gid, from, to, reason, final],
      );
      const row = res.rows[0];
      if (row === undefined) {
        const now = await ex.execute<Row>(`SELECT state FROM ${this.#t} WHERE gid = $1`, [gid]);
        return (now.rows[0]?.state as GlobalState | undefined) ?? 'missing';
      }
      if (also) await also(tx, globalRecord(row));
      return to;
    });
  }

  /** The end of a phase: every branch confirmed (cancelled, compensated). */
  async finish(gid: string, from: GlobalState, to: GlobalState): Promise<boolean> {
    return this.#run(async (ex) => {
      const res = await ex.execute(
        `UPDATE ${this.#t} SET state = $3, finished_at = now(), owner = NULL, lease_until = NULL,
           last_error = NULL, updated_at = now()
         WHERE gid = $1 AND state = $2 RETURNING 1 AS done`,
        [gid, from, to],
      );
      return res.rows.length === 1;
    });
  }

  /**
   * Gives an unfinished phase back to recovery: the next round may start after `delayMs`. Only
   * the owner's lease is released.
   */
  async postpone(gid: string, owner: string, delayMs: number, error: string | null): Promise<void> {
    await this.#run(async (ex) => {
      await ex.execute(
        `UPDATE ${this.#t} SET attempts = attempts + 1,
           next_attempt_at = now() + $3 * interval '1 millisecond',
           last_error = coalesce($4, last_error), owner = NULL, lease_until = NULL, updated_at = now()
         WHERE gid = $1 AND owner = $2`,
        [gid, owner, Math.max(0, Math.round(delayMs)), error],
      );
    });
  }

  /** Keeps the lease of transactions this owner is working on. */
  async extendLeases(gids: readonly string[], owner: string, leaseMs: number): Promise<void> {
    if (gids.length === 0) return;
    await this.#run(async (ex) => {
      await ex.execute(
        `UPDATE ${this.#t} SET lease_until = now() + $3 * interval '1 millisecond'
         WHERE gid = ANY($1::text[]) AND owner = $2`,
        [gids, owner, leaseMs],
      );
    });
  }

  /**
   * Takes unfinished transactions whose lease has expired: those in a second phase whose next
   * round is due, and those still in their first phase past their timeout.
   */
  async claim(input: {
    owner: string;
    leaseMs: number;
    limit: number;
    httpOnly: boolean;
    kind: GlobalKind;
  }): Promise<GlobalRecord[]> {
    return this.#run(async (ex) => {
      const res = await ex.execute<Row>(
        `UPDATE ${this.#t} t SET owner = $1, lease_until = now() + $2 * interval '1 millisecond', updated_at = now()
         WHERE t.gid IN (
           SELECT gid FROM ${this.#t}
           WHERE state IN ${ACTIVE}
             AND (lease_until IS NULL OR lease_until < now())
             AND CASE WHEN state IN ('trying', 'running') THEN timeout_at <= now()
                      ELSE next_attempt_at <= now() END
             AND (NOT $4::boolean OR http_only)
             AND kind = $5
           ORDER BY next_attempt_at
           LIMIT $3
           FOR UPDATE SKIP LOCKED)
         RETURNING t.*`,
        [input.owner, input.leaseMs, input.limit, input.httpOnly, input.kind],
      );
      return res.rows.map(globalRecord);
    });
  }

  /** How long until recovery has something to do (null: nothing unfinished). */
  async nextDueInMs(httpOnly: boolean, kind: GlobalKind): Promise<number | null> {
    return this.#run(async (ex) => {
      const res = await ex.execute<Row>(
        `SELECT greatest(0, extract(epoch FROM (min(greatest(
             CASE WHEN state IN ('trying', 'running') THEN timeout_at ELSE next_attempt_at END,
             coalesce(lease_until, '-infinity'))) - now())) * 1000)::float8 AS ms
         FROM ${this.#t} WHERE state IN ${ACTIVE} AND (NOT $1::boolean OR http_only) AND kind = $2`,
        [httpOnly, kind],
      );
      const ms = res.rows[0]?.ms;
      return ms === null || ms === undefined ? null : Number(ms);
    });
  }

  async get(gid: string): Promise<GlobalRecord | null> {
    return this.#run(async (ex) => {
      const res = await ex.execute<Row>(`SELECT * FROM ${this.#t} WHERE gid = $1`, [gid]);
      return res.rows[0] ? globalRecord(res.rows[0]) : null;
    });
  }

  async branches(gid: string): Promise<BranchRecord[]> {
    return this.#run(async (ex) => {
      const res = await ex.execute<Row>(`SELECT * FROM ${this.#b} WHERE gid = $1 ORDER BY seq`, [gid]);
      return res.rows.map(branchRecord);
    });
  }

  /** Transactions, newest first, optionally in some states. */
  async list(
    filter: { states?: readonly GlobalState[]; kind?: GlobalKind; limit?: number } = {},
  ): Promise<GlobalRecord[]> {
    return this.#run(async (ex) => {
      const res = await ex.execute<Row>(
        `SELECT * FROM ${this.#t}
         WHERE ($1::text[] IS NULL OR state = ANY($1::text[])) AND ($2::text IS NULL OR kind = $2)
         ORDER BY created_at DESC, gid LIMIT $3`,
        [filter.states ? [...filter.states] : null, filter.kind ?? null, filter.limit ?? 100],
      );
      return res.rows.map(globalRecord);
    });
  }

  /** How many transactions are in each state. */
  async counts(): Promise<Record<string, number>> {
    return this.#run(async (ex) => {
      const res = await ex.execute<Row>(`SELECT state, count(*)::int AS n FROM ${this.#t} GROUP BY state`);
      return Object.fromEntries(res.rows.map((r) => [String(r.state), Number(r.n)]));
    });
  }

  /** Deletes finished transactions (and their branches) older than `olderThanMs`, up to `limit`. */
  async prune(olderThanMs: number, limit: number): Promise<number> {
    return this.#run(async (ex) => {
      const res = await ex.execute<Row>(
        `DELETE FROM ${this.#t} WHERE gid IN (
           SELECT gid FROM ${this.#t}
           WHERE finished_at IS NOT NULL AND finished_at < now() - $1 * interval '1 millisecond'
           ORDER BY finished_at LIMIT $2)
         RETURNING 1 AS gone`,
        [Math.round(olderThanMs), limit],
      );
      return res.rows.length;
    });
  }
}
