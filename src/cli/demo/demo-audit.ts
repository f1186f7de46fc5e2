import type { Receipt } from './demo-receiver.js';
import type { PlacedOrder } from './order-service.js';

/** The demo's verdict: what was committed against what the receiver got. */
export interface DemoAudit {
  placed: number;
  committed: number;
  rolledBack: number;
  /** Committed orders in the `orders` table (must equal `committed`). */
  orderRows: number;
  /** Distinct message ids the receiver accepted. */
  delivered: number;
  /** Committed, never delivered. Must be 0. */
  lost: number;
  /** Delivered, never committed (a rolled-back order's message, or unknown). Must be 0. */
  phantom: number;
  duplicatesSuppressed: number;
  /** Pairs of one customer's messages whose first deliveries came against commit order. */
  outOfOrder: number;
  /** Commit-to-first-delivery latency of delivered committed messages, in ms. */
  latency: { p50: number; p99: number; max: number } | null;
}

/** Nearest-rank percentile of sorted numbers. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}

export function auditDemo(input: {
  orders: readonly PlacedOrder[];
  receipts: ReadonlyMap<string, Receipt>;
  duplicatesSuppressed: number;
  orderRows: number;
}): DemoAudit {
  const committed = input.orders.filter((o) => o.committedAt !== undefined);
  const committedIds = new Set(committed.map((o) => o.messageId));
  const lost = committed.filter((o) => !input.receipts.has(o.messageId)).length;
  let phantom = 0;
  for (const id of input.receipts.keys()) if (!committedIds.has(id)) phantom++;

  const latencies = committed
    .map((o) => {
      const r = input.receipts.get(o.messageId);
      return r ? Math.max(0, r.at - (o.committedAt as number)) : undefined;
    })
    .filter((x): x is number => x !== undefined)
    .sort((a, b) => a - b);

  // Orders commit one at a time (PGlite is one connection), so per customer the commit order
  // is the order of this list; the receiver's first copies must arrive in the same order.
  let outOfOrder = 0;
  const lastSeen = new Map<string, number>();
  for (const o of committed) {
    const r = input.receipts.get(o.messageId);
    if (!r) continue;
    const prev = lastSeen.get(o.customer);
    if (prev !== undefined && r.at < prev) outOfOrder++;
    lastSeen.set(o.customer, Math.max(prev ?? -Infinity, r.at));
  }

  return {
    placed: input.orders.length,
    committed: committed.length,
    rolledBack: input.orders.length - committed.length,
    orderRows: input.orderRows,
    delivered: input.receipts.size - phantom,
    lost,
    phantom,
    duplicatesSuppressed: input.duplicatesSuppressed,
    outOfOrder,
    latency: latencies.length
      ? {
          p50: percentile(latencies, 50),
          p99: percentile(latencies, 99),
          max: latencies[latencies.length - 1] as number,
        }
      : null,
  };
}

/** True when the demo proved its point: nothing lost, nothing invented, order kept. */
export function auditPassed(a: DemoAudit): boolean {
  return a.lost === 0 && a.phantom === 0 && a.outOfOrder === 0 && a.orderRows === a.committed;
}

/** A `payment.requested` message the order service wrote, sent with `ack`. */
export interface PaymentRequestRecord {
  id: string;
  orderId: string;
  /** False when its order rolled back: it must never reach the payment service. */
  committed: boolean;
  /** The one the payment service never answers: it must expire, and its order be cancelled. */
  withheld: boolean;
}

/** The verdict on acknowledged delivery: each committed payment request ended as planned. */
export interface DemoAckAudit {
  /** Committed payment requests. */
  requested: number;
  /** Of them, acknowledged by the payment service. */
  acknowledged: number;
  /** Resends of all of them (same id, after no acknowledgement in time). */
  resent: number;
  /** Of them, expired. */
  expired: number;
  /** Expired requests whose cancellation the order service applied (once each). */
  cancellations: number;
  /** Payment rows written: one per acknowledged request (the inbox drops copies). */
  paymentRows: number;
  /** Committed requests not in their planned end state (acknowledged, or expired for the withheld one). Must be 0. */
  notAsPlanned: number;
  /** Requests of rolled-back orders that reached the payment service. Must be 0. */
  phantom: number;
  /** Orders cancelled other than those whose payment request was withheld, or withheld ones not cancelled. Must be 0. */
  wrongCancellations: number;
}

export function auditAcks(input: {
  requests: readonly PaymentRequestRecord[];
  /** The final state of each committed request, by id (`outbox.status`). */
  states: ReadonlyMap<string, { state: string; resends?: number }>;
  /** Requests the payment service processed. */
  processed: ReadonlySet<string>;
  /** Cancellations the order service applied: expired message id → order id. */
  cancellations: ReadonlyMap<string, string>;
  /** Orders with `cancelled_at`. */
  cancelledOrders: readonly string[];
  paymentRows: number;
}): DemoAckAudit {
  const committed = input.requests.filter((r) => r.committed);
  let acknowledged = 0;
  let expired = 0;
  let resent = 0;
  let notAsPlanned = 0;
  for (const r of committed) {
    const status = input.states.get(r.id);
    resent += status?.resends ?? 0;
    if (status?.state === 'acknowledged') acknowledged++;
    if (status?.state === 'expired') expired++;
    if (status?.state !== (r.withheld ? 'expired' : 'acknowledged')) notAsPlanned++;
  }
  const committedIds = new Set(committed.map((r) => r.id));
  let phantom = 0;
  for (const id of input.processed) if (!committedIds.has(id)) phantom++;

  // Exactly the withheld requests' orders are cancelled, each by its own request's cancellation.
  const withheld = committed.filter((r) => r.withheld);
  const expected = new Set(withheld.map((r) => r.orderId));
  let wrongCancellations = 0;
  for (const orderId of input.cancelledOrders) if (!expected.has(orderId)) wrongCancellations++;
  for (const r of withheld) {
    if (input.cancellations.get(r.id) !== r.orderId || !input.cancelledOrders.includes(r.orderId)) {
      wrongCancellations++;
    }
  }
  return {
    requested: committed.length,
    acknowledged,
    resent,
    expired,
    cancellations: input.cancellations.size,
    paymentRows: input.paymentRows,
    notAsPlanned,
    phantom,
    wrongCancellations,
  };
}

/** True when every payment request ended as planned, was paid once, and only the withheld one was cancelled. */
export function ackAuditPassed(a: DemoAckAudit): boolean {
  return (
    a.notAsPlanned === 0 &&
    a.phantom === 0 &&
    a.wrongCancellations === 0 &&
    a.cancellations === a.expired &&
    a.paymentRows === a.acknowledged
  );
}
