/**
 * Acknowledged delivery (issue 13): what `ack` and `callback` cost the relay, side by side with
 * plain messages, and how fast the sender's side applies acknowledgements and sweeps deadlines.
 *
 * - drain: the same 1k-key backlog drained by one in-process relay to RabbitMQ, plain, with
 *   `ack`, and with `ack` + `callback`, alternating (plain, ack, plain, ack…) so drift in the
 *   machine hits both; rate and the ratio to the plain drain of the same round.
 * - apply: `store.applyAck` for every delivered message, one connection, then 4 at once.
 * - sweep: every deadline moved into the past, then `sweepAcks(250)` until none is left (each
 *   message resent once: back into the outbox, same id).
 */
import { randomUUID } from 'node:crypto';
import type { MessageInput } from '../../src/core/types.js';
import { benchDb, brokerSink, payload256, round, sleep, startTimedRelay, type Row } from '../lib.js';

type Kind = 'plain' | 'ack' | 'ack+callback';

function message(kind: Kind, i: number): MessageInput {
  return {
    topic: 'bench.ack',
    key: `k${i % 1000}`,
    payload: payload256(i),
    ...(kind === 'plain' ? {} : { ack: { timeoutMs: 3_600_000 } }),
    ...(kind === 'ack+callback' ? { callback: { url: 'http://127.0.0.1:9/bench' } } : {}),
  };
}

async function drain(kind: Kind, n: number): Promise<{ row: Row; db: Awaited<ReturnType<typeof benchDb>> }> {
  const db = await benchDb();
  const sink = await brokerSink();
  const client = await db.pool.connect();
  try {
    for (let i = 0; i < n; i += 2000) {
      await client.query('BEGIN');
      await db.outbox.enqueue(
        client,
        Array.from({ length: Math.min(2000, n - i) }, (_, j) => message(kind, i + j)),
      );
      await client.query('COMMIT');
    }
  } finally {
    client.release();
  }
  await db.pool.query(`VACUUM ANALYZE "${db.schema}".outbox`);
  const cpu0 = process.cpuUsage();
  const relay = await startTimedRelay({ schema: db.schema, exchange: sink.exchange });
  const t = relay.timings;
  const deadline = performance.now() + 120_000;
  try {
    while (t.delivered < n && performance.now() < deadline) await sleep(20);
  } finally {
    await relay.stop();
    await sink.close();
  }
  const cpu = process.cpuUsage(cpu0);
  return {
    db,
    row: {
      messages: kind,
      delivered: t.delivered,
      'msg/s': round(t.delivered / ((t.lastDeliveredAt - t.firstClaimAt) / 1000), 0),
      'process CPU s / 10k': round(((cpu.user + cpu.system) / 1e6 / Math.max(1, t.delivered)) * 10_000, 2),
    },
  };
}

export async function ackScenario(quick: boolean): Promise<Row[]> {
  const n = quick ? 5_000 : 20_000;
  const rows: Row[] = [];
  await (await drain('plain', 2_000)).db.drop(); // warm-up: compile the relay's code first
  for (let round_ = 1; round_ <= 2; round_++) {
    const plain = await drain('plain', n);
    await plain.db.drop();
    rows.push({ round: round_, ...plain.row, 'of plain': 1 });
    for (const kind of ['ack', 'ack+callback'] as const) {
      const tracked = await drain(kind, n);
      rows.push({
        round: round_,
        ...tracked.row,
        'of plain': round((tracked.row['msg/s'] as number) / (plain.row['msg/s'] as number), 2),
      });
      if (kind === 'ack' && round_ === 1) {
        rows.push(...(await applyAndSweep(tracked.db, n)));
      }
      await tracked.db.drop();
    }
  }
  return rows;
}

async function applyAndSweep(db: Awaited<ReturnType<typeof benchDb>>, n: number): Promise<Row[]> {
  const rows: Row[] = [];
  // Sweep first (every deadline moved into the past): each awaiting message is resent once.
  await db.pool.query(`UPDATE "${db.schema}".ack SET deadline = now() - interval '1 second'`);
  let t0 = performance.now();
  let resent = 0;
  for (;;) {
    const r = await db.store.sweepAcks(250);
    resent += r.resent;
    if (r.resent + r.expired === 0) break;
  }
  rows.push({
    messages: 'sweep (resend)',
    delivered: resent,
    'msg/s': round(resent / ((performance.now() - t0) / 1000), 0),
  });
  const ids = (await db.pool.query(`SELECT id::text AS id FROM "${db.schema}".ack`)).rows.map(
    (r) => r.id as string,
  );
  const half = Math.floor(ids.length / 2);
  t0 = performance.now();
  for (const id of ids.slice(0, half)) await db.store.applyAck({ id, consumer: 'bench' });
  rows.push({
    messages: 'applyAck, 1 connection',
    delivered: half,
    'msg/s': round(half / ((performance.now() - t0) / 1000), 0),
  });
  const rest = ids.slice(half);
  t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < rest.length) {
        const id = rest[next++] as string;
        await db.store.applyAck({ id, consumer: 'bench', result: { receipt: randomUUID() } });
      }
    }),
  );
  rows.push({
    messages: 'applyAck, 4 connections',
    delivered: rest.length,
    'msg/s': round(rest.length / ((performance.now() - t0) / 1000), 0),
  });
  void n;
  return rows;
}
