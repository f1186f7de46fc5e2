import type pg from 'pg';
import type { Outbox } from '../../src/core/index.js';

/** What a writer committed, with when it began writing and when its commit returned. */
export interface Written {
  id: string;
  key: string | null;
  writeStart: number;
  committedAt: number;
}

export interface WriterResult {
  committed: Written[];
  rolledBack: string[];
}

/**
 * Runs `writers` concurrent loops of business transactions, each enqueueing 1–4 messages on
 * random keys and rolling back about one in five, until `until()` says stop.
 */
export async function runWriters(options: {
  pool: pg.Pool;
  outbox: Outbox;
  writers: number;
  keys: number;
  topic: string;
  until: () => boolean;
  pauseMs?: number;
}): Promise<WriterResult> {
  const result: WriterResult = { committed: [], rolledBack: [] };
  let n = 0;
  const loop = async () => {
    while (!options.until()) {
      const client = await options.pool.connect();
      try {
        const writeStart = performance.now();
        await client.query('BEGIN');
        const count = 1 + Math.floor(Math.random() * 4);
        const msgs = Array.from({ length: count }, () => {
          const r = Math.floor(Math.random() * (options.keys + 2));
          return {
            topic: options.topic,
            key: r < options.keys ? `k${r}` : null,
            payload: { n: ++n, pad: 'x'.repeat(64) },
          };
        });
        const ids = await options.outbox.enqueue(client, msgs);
        if (Math.random() < 0.2) {
          await client.query('ROLLBACK');
          result.rolledBack.push(...ids);
        } else {
          await client.query('COMMIT');
          const committedAt = performance.now();
          ids.forEach((id, i) =>
            result.committed.push({ id, key: msgs[i]?.key ?? null, writeStart, committedAt }),
          );
        }
      } finally {
        client.release();
      }
      if (options.pauseMs) await new Promise((r) => setTimeout(r, Math.random() * (options.pauseMs ?? 0)));
    }
  };
  await Promise.all(Array.from({ length: options.writers }, loop));
  return result;
}

/** Audit of what a consumer received against what writers committed. */
export interface Audit {
  committed: number;
  received: number;
  lost: string[];
  phantom: string[];
  duplicates: number;
  orderViolations: Array<{ key: string; before: string; after: string }>;
}

/**
 * Lost: committed, never received. Phantom: received, never committed. Order: for two
 * messages A and B of one key where A committed before B was written, A's first delivery must
 * come before B's.
 */
export function audit(written: WriterResult, receivedIds: readonly string[]): Audit {
  const committedIds = new Set(written.committed.map((w) => w.id));
  const firstIndex = new Map<string, number>();
  receivedIds.forEach((id, i) => {
    if (!firstIndex.has(id)) firstIndex.set(id, i);
  });
  const lost = [...committedIds].filter((id) => !firstIndex.has(id));
  const phantom = [...firstIndex.keys()].filter((id) => !committedIds.has(id));
  const byKey = new Map<string, Written[]>();
  for (const w of written.committed) {
    if (w.key === null) continue;
    const list = byKey.get(w.key) ?? [];
    list.push(w);
    byKey.set(w.key, list);
  }
  const orderViolations: Audit['orderViolations'] = [];
  for (const [key, list] of byKey) {
    for (const a of list) {
      for (const b of list) {
        if (a.committedAt < b.writeStart) {
          const ia = firstIndex.get(a.id);
          const ib = firstIndex.get(b.id);
          if (ia !== undefined && ib !== undefined && ia > ib)
            orderViolations.push({ key, before: a.id, after: b.id });
        }
      }
    }
  }
  return {
    committed: committedIds.size,
    received: receivedIds.length,
    lost,
    phantom,
    duplicates: receivedIds.length - firstIndex.size,
    orderViolations,
  };
}
