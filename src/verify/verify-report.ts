/**
 * The comparison behind `mailroom verify`: what the outbox says was committed (the ledger)
 * against what a consumer received from the transport, in the order it received it.
 */

import type { LedgerEntry, OutboxState, Snapshot } from '../stores/postgres/ledger-entry.js';

// Defined beside the store that writes the ledger; re-exported so this module's API is unchanged.
export { parseSnapshot } from '../stores/postgres/ledger-entry.js';
export type { LedgerEntry, OutboxState, Snapshot };

export interface OrderViolation {
  key: string;
  /** Committed before `overtaken` was written, yet first delivered after it. */
  late: string;
  overtaken: string;
}

/** Result of a verification. `ok` is true when nothing is lost, phantom or out of order. */
export interface VerifyReport {
  ok: boolean;
  /** Messages the ledger holds (committed enqueues). */
  committed: number;
  /** Deliveries the consumer saw, duplicates included. */
  received: number;
  /** Distinct ids delivered. */
  delivered: number;
  /** Committed, not delivered, not pending, not dead-lettered. */
  lost: string[];
  /** Delivered but never committed (not in the ledger). */
  phantom: string[];
  /** Extra copies delivered (received − delivered); each copy carries its message's id. */
  duplicates: number;
  /** Ids delivered more than once, with the number of copies (at most 100 listed). */
  duplicateIds: Array<{ id: string; copies: number }>;
  orderViolations: OrderViolation[];
  /** Committed and still waiting in the outbox. */
  pending: string[];
  /** Committed and dead-lettered. */
  deadLettered: string[];
  /** Baseline entries (in flight when the ledger was switched on) that never arrived. */
  unverifiable: string[];
}

/** True when transaction `xid` had committed (or aborted) before `snapshot` was taken. */
export function visibleIn(xid: bigint, snapshot: Snapshot): boolean {
  if (xid < snapshot.xmin) return true;
  if (xid >= snapshot.xmax) return false;
  return !snapshot.xip.has(xid);
}

/**
 * Compares the ledger with the deliveries. Per-key order: for messages A and B of one key in
 * different transactions, when A's transaction had committed before B's enqueue ran (A is
 * visible in B's snapshot, and A was inserted first), A's first delivery must come before B's.
 */
export function verifyDeliveries(
  ledger: readonly LedgerEntry[],
  receivedIds: readonly string[],
  state: OutboxState = { pending: new Set(), dead: new Set() },
): VerifyReport {
  const byId = new Map(ledger.map((e) => [e.id, e]));
  const first = new Map<string, number>();
  const copies = new Map<string, number>();
  receivedIds.forEach((id, i) => {
    if (!first.has(id)) first.set(id, i);
    copies.set(id, (copies.get(id) ?? 0) + 1);
  });

  const lost: string[] = [];
  const pending: string[] = [];
  const deadLettered: string[] = [];
  const unverifiable: string[] = [];
  for (const e of ledger) {
    if (first.has(e.id)) continue;
    if (state.pending.has(e.id)) pending.push(e.id);
    else if (state.dead.has(e.id)) deadLettered.push(e.id);
    else if (e.baseline) unverifiable.push(e.id);
    else lost.push(e.id);
  }
  const phantom = [...first.keys()].filter((id) => !byId.has(id));

  const byKey = new Map<string, LedgerEntry[]>();
  for (const e of ledger) {
    if (e.key === null || e.baseline || !first.has(e.id)) continue;
    const list = byKey.get(e.key) ?? [];
    list.push(e);
    byKey.set(e.key, list);
  }
  const orderViolations: OrderViolation[] = [];
  for (const [key, list] of byKey) {
    list.sort((a, b) => (first.get(a.id) as number) - (first.get(b.id) as number));
    // A violation needs an inversion: `later` delivered after `earlier` but with a lower seq
    // (a message that committed before another was written was also inserted before it). Walk
    // the deliveries keeping those seen so far sorted by seq; the ones above the new message's
    // seq are exactly its inversions. A correct run is nearly sorted, so this is about
    // O(n log n) rather than the O(n²) of comparing every pair — which matters for soaks.
    const seen: LedgerEntry[] = [];
    for (const later of list) {
      let lo = 0;
      let hi = seen.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if ((seen[mid] as LedgerEntry).seq <= later.seq) lo = mid + 1;
        else hi = mid;
      }
      for (let i = lo; i < seen.length; i++) {
        const earlier = seen[i] as LedgerEntry;
        // Visible in the earlier message's snapshot: `later` had committed before `earlier`
        // was written, so it was owed the first delivery.
        if (later.xid !== earlier.xid && visibleIn(later.xid, earlier.snapshot)) {
          orderViolations.push({ key, late: later.id, overtaken: earlier.id });
        }
      }
      seen.splice(lo, 0, later);
    }
  }

  const duplicateIds = [...copies]
    .filter(([, n]) => n > 1)
    .slice(0, 100)
    .map(([id, n]) => ({ id, copies: n }));
  return {
    ok: lost.length === 0 && phantom.length === 0 && orderViolations.length === 0,
    committed: ledger.length,
    received: receivedIds.length,
    delivered: first.size,
    lost,
    phantom,
    duplicates: receivedIds.length - first.size,
    duplicateIds,
    orderViolations,
    pending,
    deadLettered,
    unverifiable,
  };
}
