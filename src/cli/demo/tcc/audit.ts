import type { OrderRow, TransactionRow } from './order-service.js';
import type { AccountRow, StockRow } from './participants.js';

/** Everything the audit reads at the end, from the three services' databases. */
export interface TccDemoSnapshot {
  mode: 'tcc' | 'saga';
  initialStock: ReadonlyMap<string, number>;
  initialBalances: ReadonlyMap<string, number>;
  stock: readonly StockRow[];
  accounts: readonly AccountRow[];
  orders: readonly OrderRow[];
  transactions: readonly TransactionRow[];
  /** Keys (order ids) of the "order confirmed" messages in the order service's outbox. */
  messages: readonly string[];
}

export interface SkuAudit extends StockRow {
  initial: number;
  /** Units of the confirmed orders of this SKU: what must have been sold. */
  confirmedQty: number;
  ok: boolean;
}

export interface AccountAudit extends AccountRow {
  initial: number;
  /** The amounts of the confirmed orders on this account: what must have been debited. */
  confirmedAmount: number;
  ok: boolean;
}

export interface TccAudit {
  orders: number;
  confirmed: number;
  cancelled: number;
  /** Orders never decided (must be 0). */
  pending: number;
  /** Why the cancelled ones were cancelled (compensated), from the coordinator's table. */
  cancelReasons: { refused: number; unknown: number; timeout: number; other: number };
  /** Orders decided by a recovery worker: their coordinator was killed, or their run timed out. */
  byRecovery: number;
  /** Orders with other than one recorded decision (must be 0). */
  decidedWrong: number;
  /** Global transactions still trying, confirming, cancelling, running or compensating (must be 0). */
  unfinished: number;
  /** Orders whose status disagrees with their global transaction's end, or that have none (must be 0). */
  mismatched: number;
  skus: SkuAudit[];
  accounts: AccountAudit[];
  /** "order confirmed" messages in the outbox. */
  messages: number;
  /** Confirmed orders without their message, and messages of no confirmed order or repeated. */
  missingMessages: number;
  extraMessages: number;
  /** One line per inconsistency found; empty when the audit passed. */
  problems: string[];
  passed: boolean;
}

const CONFIRMED = new Set(['confirmed', 'succeeded']);
const CANCELLED = new Set(['cancelled', 'compensated']);

/**
 * The demo's audit: money and stock are conserved and nothing is left reserved or frozen,
 * every order is decided exactly once and agrees with its global transaction, the confirmed
 * orders are exactly what was sold and debited, and each has exactly one "order confirmed"
 * message.
 */
export function auditTccDemo(s: TccDemoSnapshot): TccAudit {
  const problems: string[] = [];
  const confirmedOrders = s.orders.filter((o) => o.status === 'confirmed');
  const cancelledOrders = s.orders.filter((o) => o.status === 'cancelled');
  const pending = s.orders.filter((o) => o.status === 'pending');
  if (pending.length > 0) {
    problems.push(`${pending.length} order(s) never decided: ${ids(pending.map((o) => o.id))}`);
  }
  const decidedWrong = s.orders.filter((o) => o.status !== 'pending' && o.decisions !== 1);
  if (decidedWrong.length > 0) {
    problems.push(
      `${decidedWrong.length} order(s) with other than one decision: ${ids(decidedWrong.map((o) => `${o.id}×${o.decisions}`))}`,
    );
  }

  const txById = new Map(s.transactions.map((t) => [t.gid, t]));
  const unfinished = s.transactions.filter((t) => !CONFIRMED.has(t.state) && !CANCELLED.has(t.state));
  if (unfinished.length > 0) {
    problems.push(
      `${unfinished.length} global transaction(s) stuck: ${ids(unfinished.map((t) => `${t.gid} (${t.state})`))}`,
    );
  }
  const mismatched = s.orders.filter((o) => {
    const t = txById.get(o.id);
    if (t === undefined) return true;
    return o.status === 'confirmed'
      ? !CONFIRMED.has(t.state)
      : o.status === 'cancelled' && !CANCELLED.has(t.state);
  });
  if (mismatched.length > 0) {
    problems.push(
      `${mismatched.length} order(s) disagree with their global transaction: ${ids(
        mismatched.map((o) => `${o.id} ${o.status}/${txById.get(o.id)?.state ?? 'none'}`),
      )}`,
    );
  }
  const cancelReasons = { refused: 0, unknown: 0, timeout: 0, other: 0 };
  for (const o of cancelledOrders) {
    const reason = txById.get(o.id)?.reason ?? '';
    if (/^timeout/.test(reason)) cancelReasons.timeout++;
    else if (/ refused: /.test(reason)) cancelReasons.refused++;
    else if (/outcome unknown/.test(reason)) cancelReasons.unknown++;
    else cancelReasons.other++;
  }

  const sum = <K extends string>(key: (o: OrderRow) => K, value: (o: OrderRow) => number) => {
    const m = new Map<string, number>();
    for (const o of confirmedOrders) m.set(key(o), (m.get(key(o)) ?? 0) + value(o));
    return m;
  };
  const soldBySku = sum(
    (o) => o.sku,
    (o) => o.qty,
  );
  const debitedByAccount = sum(
    (o) => o.account,
    (o) => o.amount,
  );

  const skus: SkuAudit[] = s.stock.map((r) => {
    const initial = s.initialStock.get(r.sku) ?? 0;
    const confirmedQty = soldBySku.get(r.sku) ?? 0;
    const ok =
      r.stock + r.reserved + r.sold === initial &&
      r.reserved === 0 &&
      r.sold === confirmedQty &&
      r.stock >= 0;
    if (!ok) {
      problems.push(
        `inventory ${r.sku}: stock ${r.stock} + reserved ${r.reserved} + sold ${r.sold} of ${initial} at the start; ` +
          `confirmed orders bought ${confirmedQty} (must be: the sum equal, reserved 0, sold = confirmed)`,
      );
    }
    return { ...r, initial, confirmedQty, ok };
  });
  const accounts: AccountAudit[] = s.accounts.map((r) => {
    const initial = s.initialBalances.get(r.id) ?? 0;
    const confirmedAmount = debitedByAccount.get(r.id) ?? 0;
    const ok =
      r.balance + r.frozen + r.debited === initial &&
      r.frozen === 0 &&
      r.debited === confirmedAmount &&
      r.balance >= 0;
    if (!ok) {
      problems.push(
        `payment ${r.id}: balance ${r.balance} + frozen ${r.frozen} + debited ${r.debited} of ${initial} at the start; ` +
          `confirmed orders paid ${confirmedAmount} (must be: the sum equal, frozen 0, debited = confirmed)`,
      );
    }
    return { ...r, initial, confirmedAmount, ok };
  });

  const wanted = new Set(confirmedOrders.map((o) => o.id));
  const seen = new Set<string>();
  let extraMessages = 0;
  for (const key of s.messages) {
    if (!wanted.has(key) || seen.has(key)) extraMessages++;
    seen.add(key);
  }
  const missing = [...wanted].filter((id) => !seen.has(id));
  if (missing.length > 0)
    problems.push(`${missing.length} confirmed order(s) without their message: ${ids(missing)}`);
  if (extraMessages > 0) {
    problems.push(`${extraMessages} "order confirmed" message(s) for an order not confirmed, or repeated`);
  }

  return {
    orders: s.orders.length,
    confirmed: confirmedOrders.length,
    cancelled: cancelledOrders.length,
    pending: pending.length,
    cancelReasons,
    byRecovery: s.orders.filter((o) => o.byRecovery).length,
    decidedWrong: decidedWrong.length,
    unfinished: unfinished.length,
    mismatched: mismatched.length,
    skus,
    accounts,
    messages: s.messages.length,
    missingMessages: missing.length,
    extraMessages,
    problems,
    passed: problems.length === 0,
  };
}

function ids(list: readonly string[]): string {
  return list.length <= 5 ? list.join(', ') : `${list.slice(0, 5).join(', ')}…`;
}
