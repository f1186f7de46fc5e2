/**
 * Where a log-tailing relay's time goes: one in-process relay (the CLI's store, transport and
 * pool size) drains a backlog that writers commit while it runs, with `notify` and with
 * `replication` alternating, every `claim` and every `claimIds` (the log source leasing the rows
 * of the transactions it read) timed. Two writer shapes: transactions of 100 messages (the live
 * drain's) and of 1 (the source then reads one transaction per commit). Also the CPU of the
 * walsender that decodes the log for the relay, and of all of PostgreSQL, per 10k messages.
 */
import {
  benchDb,
  benchSlot,
  brokerSink,
  claimColumns,
  dropReplication,
  liveWriters,
  onInterrupt,
  percentile,
  round,
  serverCpuSeconds,
  sleep,
  startTimedRelay,
  walsenderCpuSeconds,
  type Row,
} from '../lib.js';

async function logtailOnce(o: {
  messages: number;
  keys: number;
  writers: number;
  perTx: number;
  wakeup: 'notify' | 'replication';
}): Promise<Row> {
  const db = await benchDb();
  const sink = await brokerSink();
  const slot = o.wakeup === 'replication' ? benchSlot() : undefined;
  let relay: Awaited<ReturnType<typeof startTimedRelay>> | undefined;
  const cleanup = onInterrupt(async () => {
    try {
      await relay?.stop();
      if (slot !== undefined) await dropReplication({ slot, schema: db.schema });
    } finally {
      await sink.close();
      await db.drop();
    }
  });
  try {
    relay = await startTimedRelay({
      schema: db.schema,
      exchange: sink.exchange,
      ...(slot === undefined ? { relay: { wakeup: o.wakeup } } : { slot }),
    });
    const t = relay.timings;
    const walsenderAtStart = slot === undefined ? NaN : await walsenderCpuSeconds(db.pool, slot);
    const serversAtStart = serverCpuSeconds();
    const cpuAtStart = process.cpuUsage();
    const written = await liveWriters(db, o);
    const deadline = performance.now() + 120_000;
    while (t.delivered < o.messages) {
      if (performance.now() > deadline) {
        throw new Error(`delivered ${t.delivered} of ${o.messages} within 120 s of the last commit`);
      }
      await sleep(10);
    }
    const cpu = process.cpuUsage(cpuAtStart);
    const servers = serverCpuSeconds();
    const walsender = slot === undefined ? NaN : await walsenderCpuSeconds(db.pool, slot);
    const per10k = (seconds: number) => round((seconds / o.messages) * 10_000, 2);
    const ids = [...t.claimIdsMs].sort((a, b) => a - b);
    return {
      writers: `${o.writers} × ${o.perTx}/tx`,
      wakeup: o.wakeup,
      messages: o.messages,
      'msg/s': round(o.messages / ((t.lastDeliveredAt - written.firstCommitAt) / 1000), 0),
      'writers msg/s': round(o.messages / ((written.lastCommitAt - written.firstCommitAt) / 1000), 0),
      ...claimColumns(t),
      claimIds: ids.length,
      'ids/claimIds': ids.length ? round(t.idsNamed / ids.length, 1) : '',
      'leased by claimIds': ids.length ? `${round((t.idsLeased / o.messages) * 100, 0)}%` : '',
      'claimIds p50 ms': ids.length ? round(percentile(ids, 50)) : '',
      'claimIds p99 ms': ids.length ? round(percentile(ids, 99)) : '',
      'process CPU s / 10k': per10k((cpu.user + cpu.system) / 1e6),
      'PostgreSQL CPU s / 10k': per10k(servers.postgres - serversAtStart.postgres),
      'walsender CPU s / 10k': Number.isNaN(walsender) ? '' : per10k(walsender - walsenderAtStart),
    };
  } finally {
    await cleanup();
  }
}

/** Two rounds (the second in reverse order), notify and replication alternating. */
export async function logtailScenario(quick: boolean): Promise<Row[]> {
  const rows: Row[] = [];
  const runs: Array<{ perTx: number; writers: number; wakeup: 'notify' | 'replication' }> = [];
  for (const [writers, perTx] of [
    [4, 100],
    [8, 1],
  ] as const) {
    for (const wakeup of ['notify', 'replication'] as const) runs.push({ writers, perTx, wakeup });
  }
  for (let r = 1; r <= 2; r++) {
    for (const run of r === 1 ? runs : [...runs].reverse()) {
      const messages = run.perTx === 1 ? (quick ? 4_000 : 20_000) : quick ? 10_000 : 40_000;
      rows.push({ round: r, ...(await logtailOnce({ messages, keys: 1000, ...run })) });
    }
  }
  return rows;
}
