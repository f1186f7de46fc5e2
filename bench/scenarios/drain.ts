/**
 * Drain: a pre-filled backlog relayed to RabbitMQ with confirms by 1, 2 and 4 relay processes,
 * for each wake-up mode. Relays run as `mailroom relay` processes so their CPU and memory are
 * measured on their own.
 */
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import {
  benchDb,
  brokerSink,
  prefill,
  procStats,
  round,
  sleep,
  spawnRelay,
  stopProcess,
  type Row,
} from '../lib.js';

export interface DrainOptions {
  messages: number;
  keys: number;
  instances: number;
  wakeup: 'notify' | 'poll';
  batchSize?: number;
  concurrency?: number;
}

/**
 * CPU seconds used so far by every process of the database server and of the broker, from
 * `/proc` (a backend that exits in between takes its share with it: a slight undercount). With
 * the relays' own CPU this shows where a drain's work goes, and whether more relays make the
 * servers work more per message — what decides how relays on other machines would scale.
 */
function serverCpuSeconds(): { postgres: number; rabbitmq: number } {
  const total = { postgres: 0, rabbitmq: 0 };
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const side = comm === 'postgres' ? 'postgres' : comm === 'beam.smp' ? 'rabbitmq' : undefined;
      if (side === undefined) continue;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total[side] += (Number(fields[11]) + Number(fields[12])) / 100;
    } catch {
      // exited while we read
    }
  }
  return total;
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
      const child = spawnRelay({
        schema: db.schema,
        exchange: sink.exchange,
        wakeup: o.wakeup,
        ...(o.batchSize === undefined ? {} : { batchSize: o.batchSize }),
        ...(o.concurrency === undefined ? {} : { concurrency: o.concurrency }),
        logLevel: 'error',
        stdio: ['ignore', 'ignore', 'inherit'],
      });
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
    let serversAtStart = serverCpuSeconds();
    for (;;) {
      if (relays.every((r) => r.exitCode !== null || r.signalCode !== null)) {
        throw new Error(`every relay exited before the outbox was empty (${await db.count()} left)`);
      }
      const left = await db.count();
      if (!started && left < o.messages) {
        started = performance.now();
        serversAtStart = serverCpuSeconds();
      }
      if (left === 0) break;
      sample();
      await sleep(20);
    }
    const seconds = (performance.now() - started) / 1000;
    const serversAtEnd = serverCpuSeconds();
    sample();
    await Promise.all(relays.map((r) => stopProcess(r)));
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
      'PostgreSQL CPU s / 10k': round(
        ((serversAtEnd.postgres - serversAtStart.postgres) / o.messages) * 10_000,
        2,
      ),
      'RabbitMQ CPU s / 10k': round(
        ((serversAtEnd.rabbitmq - serversAtStart.rabbitmq) / o.messages) * 10_000,
        2,
      ),
      'peak RSS MiB (max)': round(Math.max(...stats.map((s) => s.peakRssMiB)), 0),
      'in queue': depth,
    };
  } finally {
    await sink.close();
    await db.drop();
  }
}
