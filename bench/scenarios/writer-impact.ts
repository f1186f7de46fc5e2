/**
 * Writer impact: application transactions per second (one business row + one outbox message)
 * with 8 and 32 writers; without Mailroom, with it (NOTIFY on and off), with and without a relay
 * draining at the same time, and in table-less mode (the message emitted into the log with
 * `pg_logical_emit_message`, no outbox row). The ratio to "business row only" is the cost of
 * using Mailroom.
 *
 * The table-less variants create their slot (`mr_bench_…`, pgoutput) before the writers start:
 * a table-less enqueue refuses to write while it does not exist. Without a relay nobody reads
 * the slot (what the writer pays, with no walsender decoding beside it); with one, an in-process
 * replication relay reads it. Either way the slot and the publication the relay creates are
 * dropped right after the variant (a slot keeps WAL). The row variant with a replication relay
 * stands beside them: the same relay and slot, the message as a row.
 *
 * Variants run in turn, in reverse order on even rounds; with more than one round a row gives
 * the median of the rounds and their range.
 */
import type pg from 'pg';
import { Relay } from '../../src/core/index.js';
import { PostgresLogSource } from '../../src/replication/postgres-log-source.js';
import { RabbitMqTransport } from '../../src/transports/rabbitmq/index.js';
import {
  AMQP_URL,
  DATABASE_URL,
  benchDb,
  benchSlot,
  brokerSink,
  createBenchSlot,
  dropReplication,
  onInterrupt,
  payload256,
  round,
  type Row,
} from '../lib.js';

export interface Variant {
  name: string;
  /** What each transaction writes beside its business row. */
  message: 'none' | 'row' | 'tableless';
  /** The writers' NOTIFY (table store `notify`); table-less writers never notify. */
  notify: boolean;
  /** The relay delivering meanwhile, by its wake-up. */
  relay: 'none' | 'poll' | 'notify' | 'replication';
}

export const VARIANTS: Variant[] = [
  { name: 'business row only', message: 'none', notify: false, relay: 'none' },
  { name: '+ outbox, NOTIFY off, no relay', message: 'row', notify: false, relay: 'none' },
  { name: '+ outbox, NOTIFY on, no relay', message: 'row', notify: true, relay: 'none' },
  { name: '+ outbox, NOTIFY off, relay polling', message: 'row', notify: false, relay: 'poll' },
  { name: '+ outbox, NOTIFY on, relay notified', message: 'row', notify: true, relay: 'notify' },
  { name: '+ outbox, NOTIFY off, relay replication', message: 'row', notify: false, relay: 'replication' },
  { name: '+ table-less (emit), no relay', message: 'tableless', notify: false, relay: 'none' },
  { name: '+ table-less, relay replication', message: 'tableless', notify: false, relay: 'replication' },
];

export async function writerImpactOnce(
  writers: number,
  variant: Variant,
  seconds: number,
): Promise<{ tps: number }> {
  // Table-less writers need the slot before their first enqueue; a replication relay over rows
  // takes the same path (the slot is there, the relay opens it), so the two compare.
  const slot = variant.message === 'tableless' || variant.relay === 'replication' ? benchSlot() : undefined;
  const db = await benchDb({
    notify: variant.notify,
    poolMax: writers + 4,
    ...(variant.message === 'tableless' && slot !== undefined ? { tableless: { slot } } : {}),
  });
  let sink: Awaited<ReturnType<typeof brokerSink>> | undefined;
  let relay: Relay | undefined;
  let transport: RabbitMqTransport | undefined;
  // The relay first (it holds the slot), then the slot and publication, then the rest; on an
  // interrupted bench as on a failed run.
  const cleanup = onInterrupt(async () => {
    try {
      await relay?.stop();
      await transport?.close();
    } finally {
      try {
        if (slot !== undefined) await dropReplication({ slot, schema: db.schema });
      } finally {
        await sink?.close();
        await db.drop();
      }
    }
  });
  try {
    await db.pool.query(
      `CREATE TABLE "${db.schema}".orders (id bigserial PRIMARY KEY, customer text, data jsonb)`,
    );
    if (slot !== undefined) await createBenchSlot(slot);
    if (variant.relay !== 'none') {
      sink = await brokerSink();
      transport = new RabbitMqTransport({ url: AMQP_URL, exchange: sink.exchange });
      relay = new Relay({
        store: db.store,
        transport,
        ...(variant.relay === 'replication' && slot !== undefined
          ? {
              source: new PostgresLogSource({
                connectionString: DATABASE_URL,
                schema: db.schema,
                slot,
                store: db.store,
              }),
            }
          : { wakeup: variant.relay }),
      });
      await relay.start();
    }
    let stop = false;
    let commits = 0;
    const insert = `INSERT INTO "${db.schema}".orders (customer, data) VALUES ($1, $2)`;
    const loop = async (w: number) => {
      const client: pg.PoolClient = await db.pool.connect();
      try {
        let i = 0;
        while (!stop) {
          const data = payload256(i);
          await client.query('BEGIN');
          await client.query(insert, [`c${w}`, data]);
          if (variant.message !== 'none') {
            await db.outbox.enqueue(client, { topic: 'bench.order', key: `c${w}-${i % 50}`, payload: data });
          }
          await client.query('COMMIT');
          commits++;
          i++;
        }
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    };
    const t0 = performance.now();
    const loops = Array.from({ length: writers }, (_, w) => loop(w));
    await new Promise((r) => setTimeout(r, seconds * 1000));
    stop = true;
    await Promise.all(loops);
    return { tps: commits / ((performance.now() - t0) / 1000) };
  } finally {
    await cleanup();
  }
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

export async function writerImpact(seconds: number, rounds = 1): Promise<Row[]> {
  const rows: Row[] = [];
  for (const writers of [8, 32]) {
    const tps = new Map<string, number[]>(VARIANTS.map((v) => [v.name, []]));
    for (let r = 1; r <= rounds; r++) {
      // In turn, reversed on even rounds, so a drift in this shared machine hits every variant.
      const order = r % 2 === 1 ? VARIANTS : [...VARIANTS].reverse();
      for (const v of order) {
        const { tps: t } = await writerImpactOnce(writers, v, seconds);
        tps.get(v.name)?.push(t);
      }
    }
    const base = median(tps.get(VARIANTS[0]?.name ?? '') ?? []);
    for (const v of VARIANTS) {
      const all = tps.get(v.name) ?? [];
      const m = median(all);
      rows.push({
        writers,
        variant: v.name,
        'tx/s': round(m, 0),
        ...(rounds > 1
          ? {
              range: `${round(Math.min(...all), 0)}–${round(Math.max(...all), 0)}`,
              rounds: all.map((x) => round(x, 0)).join(' / '),
            }
          : {}),
        'vs business only': `${round((m / base) * 100, 0)}%`,
      });
    }
  }
  return rows;
}
