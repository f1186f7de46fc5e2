/**
 * Transaction ids. pgoutput's Begin message carries the 32-bit `xid` of the transaction; the SQL
 * functions that say whether a transaction is visible (`pg_visible_in_snapshot`,
 * `pg_xact_status`) take the 64-bit `xid8` (epoch in the high 32 bits). The epoch is not on the
 * wire, so it is recovered from a later full id.
 *
 * Why a relay needs this: logical decoding reads the commit record from the WAL, which
 * PostgreSQL writes *before* it marks the transaction committed in shared memory. A relay that
 * reads a streamed transaction's rows back at once can find nothing (the transaction is not yet
 * visible to its snapshot) and, if it then acknowledges, loses them. Waiting until
 * `pg_visible_in_snapshot(xid8, pg_current_snapshot())` is true closes that window.
 */

const XID_SPACE = 1n << 32n;

/**
 * The 64-bit id (`xid8`) of the 32-bit `xid` of a transaction that began before `reference`: the
 * largest id at or below `reference` whose low 32 bits are `xid`. `reference` is a full id known
 * to be later, such as `pg_snapshot_xmax(pg_current_snapshot())` read after the transaction was
 * streamed (its text form or a `bigint`). Correct while the transaction is less than 2^31
 * transactions older than `reference`, which PostgreSQL's wraparound protection guarantees for
 * any transaction that can still be looked up.
 *
 * @example
 * ```ts
 * const { rows } = await pool.query('SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS xmax');
 * const full = xid8Of(tx.xid, rows[0].xmax); // 4294967296n + tx.xid after the first wraparound
 * ```
 */
export function xid8Of(xid: number, reference: bigint | string): bigint {
  if (!Number.isInteger(xid) || xid < 0 || xid >= 2 ** 32) {
    throw new RangeError(`xid ${xid} is not a 32-bit transaction id (an integer from 0 to 4294967295)`);
  }
  const ref = typeof reference === 'bigint' ? reference : parseXid8(reference);
  // Steps back from `reference` to the nearest id with the same low 32 bits: distance 0 means
  // the reference itself, which the transaction cannot be when it began before it, unless the
  // reference is exactly that transaction's id (pg_current_xact_id() inside it).
  const candidate = ref - ((ref - BigInt(xid)) & (XID_SPACE - 1n));
  if (candidate < 0n) {
    throw new RangeError(
      `xid ${xid} cannot precede reference ${ref}: no full id at or below it ends in that xid`,
    );
  }
  return candidate;
}

function parseXid8(text: string): bigint {
  if (!/^[0-9]{1,20}$/.test(text)) {
    throw new TypeError(
      `${JSON.stringify(text)} is not an xid8; expected its decimal text, e.g. "4294967302"`,
    );
  }
  return BigInt(text);
}

/**
 * One statement that answers whether the transaction with 32-bit id `$1` is visible to a new
 * snapshot, doing the epoch arithmetic of {@link xid8Of} in SQL against the same snapshot's xmax.
 * Returns one row, `{ visible: boolean }`. Run it (for example every few milliseconds, with a
 * deadline) before reading back the rows of a streamed transaction.
 *
 * The arithmetic: `xmax` (the first id not yet assigned when the snapshot was taken) is later
 * than every streamed transaction; `xmax - ((xmax - xid) & 0xFFFFFFFF)` is the largest full id at
 * or below it ending in `xid`.
 */
export const XID_VISIBLE_SQL = `SELECT pg_visible_in_snapshot(
  ((x.xmax - ((x.xmax - $1::bigint) & 4294967295))::text)::xid8, x.snap) AS visible
FROM (SELECT s AS snap, pg_snapshot_xmax(s)::text::bigint AS xmax FROM pg_current_snapshot() AS s) AS x`;
