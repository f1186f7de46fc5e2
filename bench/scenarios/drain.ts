/**
 * Drain: a backlog relayed to RabbitMQ with confirms by 1, 2 and 4 relay processes, for each
 * wake-up mode. Relays run as `mailroom relay` processes so their CPU and memory are measured on
 * their own. Two variants:
 *
 * - `prefilled`: the backlog is committed before the relays start; measured from the first
 *   delivery to an empty outbox. What a relay coming back after an outage sees. A replication
 *   relay would deliver such a backlog through its claims (the slot it creates at start holds
 *   nothing from before), so this variant has no replication rows.
 * - `live`: the relays start first (a replication relay creates its slot), then writers commit
 *   the backlog while they run; measured from the first COMMIT to the last delivery (an empty
 *   outbox once every writer finished). Every wake-up mode, so replication stands beside notify
 *   and poll the way it is used: its messages reach it through the log. PostgreSQL's CPU then
 *   includes the writers' inserts (the same in every mode), and for replication the walsender
 *   that decodes the log, also shown on its own.
 *
 * Mode `tableless` is the live variant with the replication relays of `replication`, the writers
 * emitting logical messages (`PostgresStore({ tableless: true })`) instead of inserting rows. The
 * relays create the slot before the writers start (the harness waits for `relay started`). With
 * no rows to count down, such a drain ends when the broker's queue holds every message and the
 * table (the retry path) is empty; the row modes end at an empty outbox, a settle (a delete)
 * after the confirm.
 */
import type { ChildProcess } from 'node:child_process';
import {
  benchDb,
  benchSlot,
  brokerSink,
  dropReplication,
  liveWriters,
  onInterrupt,
  prefill,
  procStats,
  relayStarted,
  round,
  serverCpuSeconds,
  sleep,
  spawnRelay,
  stopProcess,
  stopProcessSurely,
  walsenderCpuSeconds,
  relayWakeup,
  type Mode,
  type Row,
} from '../lib.js';

export interface DrainOptions {
  messages: number;
  keys: number;
  instances: number;
  /** The relays' wake-up, or `tableless` (replication relays, table-less writers; live only). */
  wakeup: Mode;
  /** @default 'prefilled' */
  variant?: 'prefilled' | 'live';
  /** `live`: concurrent writers. @default 4 */
  writers?: number;
  /** `live`: messages per writer transaction. @default 100 */
  messagesPerTx?: number;
  batchSize?: number;
  concurrency?: number;
}

export async function drainOnce(o: DrainOptions): Promise<Row> {
  const variant = o.variant ?? 'prefilled';
  if (variant === 'prefilled' && (o.wakeup === 'replication' || o.wakeup === 'tableless')) {
    throw new Error(
      "drainOnce: a prefilled backlog is not in a replication relay's log (its slot is created at start); " +
        "measure replication with variant 'live'",
    );
  }
  const live = variant === 'live';
  const writers = o.writers ?? 4;
  const perTx = o.messagesPerTx ?? 100;
  const tableless = o.wakeup === 'tableless';
  const slot = relayWakeup(o.wakeup) === 'replication' ? benchSlot() : undefined;
  const db = await benchDb(tableless && slot !== undefined ? { tableless: { slot } } : {});
  const sink = await brokerSink();
  const relays: ChildProcess[] = [];
  // Relays first, then the slot and the publication; on an interrupted bench as on a failed run.
  const cleanup = onInterrupt(async () => {
    try {
      await Promise.all(relays.map((r) => stopProcessSurely(r)));
      if (slot !== undefined) await dropReplication({ slot, schema: db.schema });
    } finally {
      await sink.close();
      await db.drop();
    }
  });
  try {
    if (!live) {
      await prefill(db, o.messages, o.keys);
      await db.pool.query(`VACUUM ANALYZE "${db.schema}".outbox`);
    }
    const peaks = new Map<number, { cpuSeconds: number; peakRssMiB: number }>();
    for (let i = 0; i < o.instances; i++) {
      const child = spawnRelay({
        schema: db.schema,
        exchange: sink.exchange,
        wakeup: relayWakeup(o.wakeup),
        ...(slot === undefined ? {} : { slot }),
        ...(o.batchSize === undefined ? {} : { batchSize: o.batchSize }),
        ...(o.concurrency === undefined ? {} : { concurrency: o.concurrency }),
        // Live: wait for each relay's "relay started" (LISTEN or slot open) before writing.
        logLevel: live ? 'info' : 'error',
        stdio: ['ignore', 'ignore', live ? 'pipe' : 'inherit'],
      });
      relays.push(child);
    }
    if (live) await Promise.all(relays.map((r) => relayStarted(r)));
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
    // The walsender decoding the log for the replication relay: its CPU is PostgreSQL's, shown
    // on its own too.
    const walsenderAtStart = slot === undefined ? NaN : await walsenderCpuSeconds(db.pool, slot);
    let written: { firstCommitAt: number; lastCommitAt: number } | undefined;
    let writeError: unknown;
    if (live) {
      serversAtStart = serverCpuSeconds();
      liveWriters(db, { messages: o.messages, keys: o.keys, writers, perTx }).then(
        (w) => (written = w),
        (err: unknown) => (writeError = err ?? new Error('writers failed')),
      );
    }
    for (;;) {
      if (relays.every((r) => r.exitCode !== null || r.signalCode !== null)) {
        throw new Error(`every relay exited before the outbox was empty (${await db.count()} left)`);
      }
      if (writeError !== undefined) throw writeError;
      const left = await db.count();
      if (!live && !started && left < o.messages) {
        started = performance.now();
        serversAtStart = serverCpuSeconds();
      }
      if (
        left === 0 &&
        (!live || written !== undefined) &&
        (!tableless || (await sink.depth()) >= o.messages)
      ) {
        break;
      }
      sample();
      await sleep(20);
    }
    const endedAt = performance.now();
    if (live) started = (written as { firstCommitAt: number }).firstCommitAt;
    const seconds = (endedAt - started) / 1000;
    const serversAtEnd = serverCpuSeconds();
    const walsenderAtEnd = slot === undefined ? NaN : await walsenderCpuSeconds(db.pool, slot);
    sample();
    await Promise.all(relays.map((r) => stopProcess(r)));
    const stats = [...peaks.values()];
    const cpu = stats.reduce((a, s) => a + s.cpuSeconds, 0);
    const depth = await sink.depth();
    const writes: Row = written
      ? {
          // How fast the writers committed the backlog beside the relays: the drain can be no
          // faster than this, and is the relays' own rate only when well below it.
          'writers msg/s': round(o.messages / ((written.lastCommitAt - written.firstCommitAt) / 1000), 0),
          'after last commit ms': round(endedAt - written.lastCommitAt, 0),
        }
      : {};
    return {
      variant: live ? `live (${writers} writers × ${perTx}/tx)` : 'prefilled',
      relays: o.instances,
      wakeup: o.wakeup,
      messages: o.messages,
      keys: o.keys,
      'msg/s': round(o.messages / seconds, 0),
      ...writes,
      'relay CPU s / 10k': round((cpu / o.messages) * 10_000, 2),
      'PostgreSQL CPU s / 10k': round(
        ((serversAtEnd.postgres - serversAtStart.postgres) / o.messages) * 10_000,
        2,
      ),
      ...(slot === undefined
        ? {}
        : { 'walsender CPU s / 10k': round(((walsenderAtEnd - walsenderAtStart) / o.messages) * 10_000, 2) }),
      'RabbitMQ CPU s / 10k': round(
        ((serversAtEnd.rabbitmq - serversAtStart.rabbitmq) / o.messages) * 10_000,
        2,
      ),
      'peak RSS MiB (max)': round(Math.max(...stats.map((s) => s.peakRssMiB)), 0),
      'in queue': depth,
    };
  } finally {
    await cleanup();
  }
}
