/**
 * The physical limits, measured in the same run as everything else: each broker's own client
 * publishing with confirms as fast as it can, and PostgreSQL claiming-and-deleting batches.
 */
import amqp from 'amqplib';
import { Redis } from 'ioredis';
import { connect as natsConnect } from 'nats';
import {
  benchDb,
  brokerSink,
  payload256,
  prefill,
  randomName,
  round,
  type ScenarioResult,
  AMQP_URL,
} from '../lib.js';

const body = Buffer.from(JSON.stringify(payload256(0)));

/** amqplib on a confirm channel, pipelined, persistent messages to a durable queue. */
export async function rabbitCeiling(n = 50_000): Promise<number> {
  const sink = await brokerSink();
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createConfirmChannel();
  const t0 = performance.now();
  let outstanding = 0;
  let resolveWindow: (() => void) | undefined;
  const window = 2000;
  await new Promise<void>((resolve, reject) => {
    let sent = 0;
    let confirmed = 0;
    const onConfirm = (err: unknown) => {
      if (err) return reject(err as Error);
      confirmed++;
      outstanding--;
      if (outstanding < window / 2) resolveWindow?.();
      if (confirmed === n) resolve();
    };
    const pump = async () => {
      while (sent < n) {
        if (outstanding >= window) await new Promise<void>((r) => (resolveWindow = r));
        const ok = ch.publish(
          sink.exchange,
          'bench.ceiling',
          body,
          { persistent: true, messageId: String(sent) },
          onConfirm,
        );
        sent++;
        outstanding++;
        if (!ok) await new Promise<void>((r) => ch.once('drain', () => r()));
      }
    };
    pump().catch(reject);
  });
  const rate = n / ((performance.now() - t0) / 1000);
  await conn.close();
  await sink.close();
  return rate;
}

/** JetStream publishes with acks, many in flight. */
export async function natsCeiling(n = 50_000): Promise<number> {
  const nc = await natsConnect({ servers: process.env.NATS_URL ?? '127.0.0.1:4222' });
  const jsm = await nc.jetstreamManager();
  const stream = randomName('BENCH').toUpperCase();
  await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] });
  const js = nc.jetstream();
  const t0 = performance.now();
  const inflight = new Set<Promise<unknown>>();
  for (let i = 0; i < n; i++) {
    const p = js.publish(`${stream}.ceiling`, body, { msgID: `${i}` });
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
    if (inflight.size >= 1000) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  const rate = n / ((performance.now() - t0) / 1000);
  await jsm.streams.delete(stream);
  await nc.close();
  return rate;
}

/** XADD in pipelines of 500. */
export async function redisCeiling(n = 50_000): Promise<number> {
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  const key = randomName('bench_stream');
  const t0 = performance.now();
  for (let i = 0; i < n; i += 500) {
    const p = redis.pipeline();
    for (let j = i; j < Math.min(n, i + 500); j++) p.xadd(key, '*', 'id', String(j), 'payload', body);
    await p.exec();
  }
  const rate = n / ((performance.now() - t0) / 1000);
  await redis.del(key);
  redis.disconnect();
  return rate;
}

/** PostgreSQL alone: claim-and-delete 500-row batches (SKIP LOCKED) from a 100k backlog, one connection. */
export async function postgresCeiling(n = 100_000): Promise<number> {
  const db = await benchDb();
  await prefill(db, n, 0);
  const t0 = performance.now();
  let done = 0;
  for (;;) {
    const r = await db.pool.query(
      `DELETE FROM "${db.schema}".outbox WHERE seq IN (
         SELECT seq FROM "${db.schema}".outbox ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED)
       RETURNING id, payload`,
    );
    if (!r.rowCount) break;
    done += r.rowCount;
  }
  const rate = done / ((performance.now() - t0) / 1000);
  await db.drop();
  return rate;
}

export async function ceiling(): Promise<
  ScenarioResult & { ceilings: { rabbitmq: number; nats: number; redis: number; postgres: number } }
> {
  const rabbitmq = await rabbitCeiling();
  const nats = await natsCeiling().catch(() => NaN);
  const redis = await redisCeiling().catch(() => NaN);
  const postgres = await postgresCeiling();
  const ceilings = { rabbitmq, nats, redis, postgres };
  return {
    scenario: 'ceiling',
    ceilings,
    rows: [
      { what: 'RabbitMQ: amqplib confirm channel, persistent, durable queue', 'msg/s': round(rabbitmq, 0) },
      { what: 'NATS JetStream: js.publish with acks, 1000 in flight', 'msg/s': round(nats, 0) },
      { what: 'Redis Streams: XADD, pipelines of 500', 'msg/s': round(redis, 0) },
      { what: 'PostgreSQL: claim-and-delete batches of 500 (SKIP LOCKED)', 'msg/s': round(postgres, 0) },
    ],
    notes: ['256-byte JSON payloads; relay figures are reported as a fraction of min(RabbitMQ, PostgreSQL)'],
  };
}
