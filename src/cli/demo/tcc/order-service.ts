import type { PGliteStore } from '../../../stores/pglite/pglite-store.js';
import type { PostgresTransactionHandle } from '../../../stores/postgres/postgres-driver.js';
import { quoteIdent } from '../../../stores/sql-identifier.js';
import type { DecisionInfo } from '../../../tcc/coordinator.js';
import type { PlannedOrder } from './plan.js';

/** The topic of the message each confirmed order enqueues with its decision. */
export const ORDER_CONFIRMED_TOPIC = 'order.confirmed';

/** An order as the order service stored it. */
export interface OrderRow {
  id: string;
  sku: string;
  qty: number;
  account: string;
  amount: number;
  status: 'pending' | 'confirmed' | 'cancelled';
  /** How many decisions were recorded for it: exactly 1 once it is decided. */
  decisions: number;
  /** True when a recovery worker decided it (its coordinator was gone, or past its timeout). */
  byRecovery: boolean;
}

/** A global transaction's end, from the coordinator's table. */
export interface TransactionRow {
  gid: string;
  state: string;
  reason: string | null;
}

/**
 * The order service's own data, next to the coordinator's tables in the same database: an
 * `orders` table whose status the coordinator's decision writes (`onDecision`, in the
 * decision's transaction), so an order is confirmed exactly when its global transaction is.
 */
export class TccOrderService {
  readonly #store: PGliteStore;

  constructor(store: PGliteStore) {
    this.#store = store;
  }

  async createSchema(): Promise<void> {
    await this.#store.db.exec(`CREATE TABLE orders (
      id text PRIMARY KEY,
      sku text NOT NULL,
      qty integer NOT NULL,
      account text NOT NULL,
      amount bigint NOT NULL,
      status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'confirmed', 'cancelled')),
      decisions integer NOT NULL DEFAULT 0,
      by_recovery boolean NOT NULL DEFAULT false)`);
  }

  /** The order, before its global transaction starts. */
  async insertPending(order: PlannedOrder): Promise<void> {
    await this.#store.db.query(
      'INSERT INTO orders (id, sku, qty, account, amount) VALUES ($1, $2, $3, $4, $5)',
      [order.id, order.sku, order.qty, order.account, order.amount],
    );
  }

  /** The coordinator's `onDecision`: the order's status, in the decision's own transaction. */
  readonly onDecision = async (tx: PostgresTransactionHandle, info: DecisionInfo): Promise<void> => {
    const orderId = (info.meta as { orderId?: unknown } | null)?.orderId;
    if (typeof orderId !== 'string') return;
    const status = info.decision === 'confirm' || info.decision === 'succeed' ? 'confirmed' : 'cancelled';
    // No `AND status = 'pending'`: a second decision for one order is counted, for the audit.
    await this.#store
      .executor(tx)
      .execute('UPDATE orders SET status = $2, decisions = decisions + 1, by_recovery = $3 WHERE id = $1', [
        orderId,
        status,
        info.byRecovery,
      ]);
  };

  async orders(): Promise<OrderRow[]> {
    const res = await this.#store.db.query('SELECT * FROM orders ORDER BY id');
    return res.rows.map((r) => ({
      id: String(r.id),
      sku: String(r.sku),
      qty: Number(r.qty),
      account: String(r.account),
      amount: Number(r.amount),
      status: r.status as OrderRow['status'],
      decisions: Number(r.decisions),
      byRecovery: r.by_recovery === true,
    }));
  }

  /** The keys (order ids) of the "order confirmed" messages in the outbox, one per message. */
  async confirmedMessages(): Promise<string[]> {
    const res = await this.#store.db.query(
      `SELECT key FROM ${quoteIdent(this.#store.schema)}.outbox WHERE topic = $1 ORDER BY key`,
      [ORDER_CONFIRMED_TOPIC],
    );
    return res.rows.map((r) => String(r.key));
  }

  /** Every global transaction and where it ended (or is). */
  async transactions(): Promise<TransactionRow[]> {
    const res = await this.#store.db.query(
      `SELECT gid, state, reason FROM ${quoteIdent(this.#store.schema)}.tcc_transaction ORDER BY gid`,
    );
    return res.rows.map((r) => ({
      gid: String(r.gid),
      state: String(r.state),
      reason: r.reason === null || r.reason === undefined ? null : String(r.reason),
    }));
  }

  /** Global transactions not yet final (trying, confirming, cancelling, running, compensating). */
  async unfinished(): Promise<number> {
    const res = await this.#store.db.query(
      `SELECT count(*)::int AS n FROM ${quoteIdent(this.#store.schema)}.tcc_transaction
       WHERE state IN ('trying', 'confirming', 'cancelling', 'running', 'compensating')`,
    );
    return Number(res.rows[0]?.n ?? 0);
  }
}
