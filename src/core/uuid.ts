import { randomBytes } from 'node:crypto';

let lastMs = 0;
let seqCounter = 0;

/**
 * A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits. Ids made by one process are
 * strictly increasing (a 12-bit counter in `rand_a` orders ids of the same millisecond), which
 * keeps B-tree inserts at the right edge of the index.
 */
export function uuidv7(now: number = Date.now()): string {
  if (now <= lastMs) {
    seqCounter++;
    if (seqCounter > 0xfff) {
      // Counter exhausted inside one millisecond: borrow the next millisecond.
      lastMs++;
      seqCounter = 0;
    }
    now = lastMs;
  } else {
    lastMs = now;
    seqCounter = 0;
  }
  const b = randomBytes(16);
  b[0] = (now / 2 ** 40) & 0xff;
  b[1] = (now / 2 ** 32) & 0xff;
  b[2] = (now >>> 24) & 0xff;
  b[3] = (now >>> 16) & 0xff;
  b[4] = (now >>> 8) & 0xff;
  b[5] = now & 0xff;
  b[6] = 0x70 | ((seqCounter >>> 8) & 0x0f);
  b[7] = seqCounter & 0xff;
  b[8] = ((b[8] as number) & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** True for any RFC 9562 UUID in canonical text form. */
export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID_RE.test(value);
}
