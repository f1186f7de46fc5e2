/**
 * Drain: a pre-filled backlog relayed to RabbitMQ with confirms by 1, 2 and 4 relay processes,
 * for each wake-up mode. Relays run as `mailroom relay` processes so their CPU and memory are
 * measured on their own.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  benchDb,
  brokerSink,
  DATABASE_URL,
  AMQP_URL,
  prefill,
  procStats,
  round,
  sleep,
  type Row,
} from '../lib.js';

const BIN = fileURLToPath(new URL('../../bin/mailroom.js', import.meta.url));

export interface DrainOptions {
  messages: number;
  keys: number;
  instances: number;
  wakeup: 'notify' | 'poll';
  batchSize?: number;
  concurrency?: number;
}

export async function drainOnce(o: DrainOptions): Promise<Row> {
  const db = await benchDb();
  const sink = await brokerSink();
  try {
    await prefill(db, o.messages, o.keys);
    await db.pool.query(`VACUUM ANALYZE "${db.schema}".outbox`);
    const relays: ChildProcess[] = [];
    const peaks = new Map<number, { cpuSeconds: number; peakRssMiB: number }>();
    for (let i = 0; i < o.instances; i++) {
      const child = spawn(
        process.execPath,
        [
          BIN,
          'relay',
          '--database-url',
          DATABASE_URL,
          '--schema',
          db.schema,
          '--transport',
          AMQP_URL,
          '--exchange',
          sink.exchange,
          '--wakeup',
          o.wakeup,
          // Unset: the relay's own defaults, which is what the figures are about.
          ...(o.batchSize === undefined ? [] : ['--batch-size', String(o.batchSize)]),
          ...(o.concurrency === undefined ? [] : ['--concurrency', String(o.concurrency)]),
          '--log-level',
          'error',
        ],
        { stdio: ['ignore', 'ignore', 'inherit'] },
      );
      relays.push(child);
    }
    const sample = () => {
      for (const r of relays) {
        if (r.pid === undefined || r.exitCode !== null) continue;
        try {
          peaks.set(r.pid, procStats(r.pid));
        } catch {
          // exited between the check and the read
        }
      }
    };
    let started = 0;
    for (;;) {
      if (relays.every((r) => r.exitCode !== null || r.signalCode !== null)) {
        throw new Error(`every relay exited before the outbox was empty (${await db.count()} left)`);
      }
      const left = await db.count();
      if (!started && left < o.messages) started = performance.now();
      if (left === 0) break;
      sample();
      await sleep(20);
    }
    const seconds = (performance.now() - started) / 1000;
    sample();
    for (const r of relays) r.kill('SIGTERM');
    await Promise.all(
      relays.map((r) => new Promise((res) => (r.exitCode !== null ? res(null) : r.on('exit', res)))),
    );
    const stats = [...peaks.values()];
    const cpu = stats.reduce((a, s) => a + s.cpuSeconds, 0);
    const depth = await sink.depth();
    return {
      relays: o.instances,
      wakeup: o.wakeup,
      messages: o.messages,
      keys: o.keys,
      'msg/s': round(o.messages / seconds, 0),
      'relay CPU s / 10k': round((cpu / o.messages) * 10_000, 2),
      'peak RSS MiB (max)': round(Math.max(...stats.map((s) => s.peakRssMiB)), 0),
      'in queue': depth,
    };
  } finally {
    await sink.close();
    await db.drop();
  }
}
