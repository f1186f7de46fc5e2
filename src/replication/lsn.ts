/**
 * Log sequence numbers (LSNs): positions in PostgreSQL's write-ahead log. PostgreSQL writes them
 * as two hexadecimal halves, `16/B374D848` (the high and low 32 bits of a 64-bit byte position);
 * this module reads and writes that form and compares positions as `bigint`s, since a position
 * may exceed 2^53.
 */

/** An LSN in PostgreSQL's text form, `X/Y` with hexadecimal halves of at most 8 digits each. */
export type Lsn = string;

const LSN_RE = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

/** The largest position a 64-bit LSN can hold. */
const MAX_LSN = (1n << 64n) - 1n;

/** True when `value` is an LSN in PostgreSQL's text form (`0/0`, `16/B374D848`). */
export function isLsn(value: unknown): value is Lsn {
  return typeof value === 'string' && LSN_RE.test(value);
}

/**
 * The byte position of an LSN as a `bigint`: `lsnToBigInt('1/0') === 4294967296n`. Throws a
 * `TypeError` naming the value when it is not in the `X/Y` form.
 */
export function lsnToBigInt(lsn: Lsn): bigint {
  const match = LSN_RE.exec(lsn);
  if (!match) {
    throw new TypeError(
      `${JSON.stringify(lsn)} is not an LSN; expected PostgreSQL's form X/Y, e.g. 16/B374D848`,
    );
  }
  return (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`);
}

/** The text form PostgreSQL prints (`%X/%X`: upper-case hex, no leading zeros): `16/B374D848`. */
export function lsnFromBigInt(position: bigint): Lsn {
  if (position < 0n || position > MAX_LSN) {
    throw new RangeError(`${position} is outside the range of an LSN (0 to 2^64 - 1)`);
  }
  const high = position >> 32n;
  const low = position & 0xffffffffn;
  return `${high.toString(16).toUpperCase()}/${low.toString(16).toUpperCase()}`;
}

/** Negative when `a` is before `b`, zero when equal, positive when after; like `Array.sort` wants. */
export function compareLsn(a: Lsn, b: Lsn): number {
  const x = lsnToBigInt(a);
  const y = lsnToBigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The later of two LSNs. */
export function maxLsn(a: Lsn, b: Lsn): Lsn {
  return compareLsn(a, b) >= 0 ? a : b;
}

/** The same position in PostgreSQL's canonical spelling (`0/0000ab` becomes `0/AB`). */
export function normalizeLsn(lsn: Lsn): Lsn {
  return lsnFromBigInt(lsnToBigInt(lsn));
}
