/**
 * What the audit ledger (migration 000002) records for each committed enqueue, in the shape the
 * verifier compares with deliveries. It lives with the store that writes it: `src/verify` reads
 * these types from here, and the store never imports from `verify` (a lower layer does not
 * depend on a higher one).
 */

/** A pg_snapshot: transactions below `xmin` are settled, `xip` were in progress, `xmax` and above had not started. */
export interface Snapshot {
  xmin: bigint;
  xmax: bigint;
  xip: ReadonlySet<bigint>;
}

/** One committed enqueue, as the ledger recorded it. */
export interface LedgerEntry {
  id: string;
  /** Position in the outbox (insert order). */
  seq: bigint;
  topic: string;
  key: string | null;
  /** The enqueueing transaction. */
  xid: bigint;
  /** The snapshot the enqueueing statement ran under. */
  snapshot: Snapshot;
  /**
   * In the outbox already when the ledger was switched on. Its transaction is unknown, so it is
   * not checked for order; if it never arrives it may have been published before the verifier's
   * queue existed, so it is reported as unverifiable, not lost.
   */
  baseline?: boolean;
}

/** What the verifier knows about messages not (yet) delivered. */
export interface OutboxState {
  /** Ids still in the outbox (not delivered yet). */
  pending: ReadonlySet<string>;
  /** Ids in the dead letters (failed, kept for an operator). */
  dead: ReadonlySet<string>;
}

/** Parses PostgreSQL's text form of a snapshot, `xmin:xmax:xip1,xip2,…`. */
export function parseSnapshot(text: string): Snapshot {
  const m = /^(\d+):(\d+):([\d,]*)$/.exec(text.trim());
  if (!m) throw new Error(`not a pg_snapshot: ${JSON.stringify(text)}`);
  const xip = new Set(
    (m[3] as string)
      .split(',')
      .filter(Boolean)
      .map((x) => BigInt(x)),
  );
  return { xmin: BigInt(m[1] as string), xmax: BigInt(m[2] as string), xip };
}
