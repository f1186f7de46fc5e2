/**
 * Where a log-tailing relay's time goes: one in-process relay (the CLI's store, transport and
 * pool size), with `notify` and with `replication` alternating, every `claim` and every
 * `claimIds` (the log source leasing the rows of the transactions it read) timed.
 *
 * - Drains of a backlog that writers commit while the relay runs, in two writer shapes:
 *   transactions of 100 messages (the live drain's) and of 1 (the source then reads one
 *   transaction per commit). With the CPU of the walsender that decodes the log for the relay,
 *   and of all of PostgreSQL, per 10k messages.
 * - Stages of the latency at 1,000 msg/s (8 paced writers, one message per transaction, as in
 *   the latency scenario): from COMMIT to the start of the call (claim or claimIds) that leased
 *   the message, that call, and from its end to the broker's confirm.
 */
import {
  benchDb,
  benchSlot,
  brokerSink,
  claimColumns,
  dropReplication,
  liveWriters,
  onInterrupt,
  pacedWriters,
  payload256,
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

/** p50 / p99 of `to - from` over the messages that have both, in ms. */
function spread(from: ReadonlyMap<string, number>, to: ReadonlyMap<string, number>): string {
  const xs: number[] = [];
  for (const [id, a] of from) {
    const b = to.get(id);
    if (b !== undefined) xs.push(b - a);
  }
  xs.sort((a, b) => a - b);
  return `${round(percentile(xs, 50))} / ${round(percentile(xs, 99))}`;
}

async function stagesOnce(o: {
  rate: number;
  seconds: number;
  wakeup: 'notify' | 'replication';
}): Promise<Row> {
  const db = await benchDb({ notify: o.wakeup === 'notify' ? 'idle' : false, poolMax: 16 });
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
    const committedAt = new Map<string, number>();
    const callStart = new Map<string, number>();
    const callEnd = new Map<string, number>();
    const confirmedAt = new Map<string, number>();
    const leasedBy = { claim: 0, claimIds: 0 };
    relay = await startTimedRelay({
      schema: db.schema,
      exchange: sink.exchange,
      ...(slot === undefined ? { relay: { wakeup: o.wakeup } } : { slot }),
      onClaimed: (messages, startedAt, endedAt, by) => {
        for (const m of messages) {
          callStart.set(m.id, startedAt);
          callEnd.set(m.id, endedAt);
        }
        leasedBy[by] += messages.length;
      },
      onConfirmed: (messages, at) => {
        for (const m of messages) if (!confirmedAt.has(m.id)) confirmedAt.set(m.id, at);
      },
    });
    const t = relay.timings;
    await pacedWriters(
      db.pool,
      o,
      (client, i) =>
        db.outbox.enqueue(client, { topic: 'bench.latency', key: `k${i % 1000}`, payload: payload256(i) }),
      committedAt,
    );
    const deadline = performance.now() + 30_000;
    while (confirmedAt.size < committedAt.size && performance.now() < deadline) await sleep(20);
    const calls = (ms: number[]) => {
      const sorted = [...ms].sort((a, b) => a - b);
      return `${sorted.length}, p50 ${round(percentile(sorted, 50))} ms`;
    };
    return {
      wakeup: o.wakeup,
      'offered msg/s': o.rate,
      'commit→call start p50 / p99 ms': spread(committedAt, callStart),
      'call p50 / p99 ms': spread(callStart, callEnd),
      'call end→confirm p50 / p99 ms': spread(callEnd, confirmedAt),
      'commit→confirm p50 / p99 ms': spread(committedAt, confirmedAt),
      'claims (with rows)': calls(t.claimMs),
      claimIds: t.claimIdsMs.length ? calls(t.claimIdsMs) : '',
      'ids/claimIds': t.claimIdsMs.length ? round(t.idsNamed / t.claimIdsMs.length, 1) : '',
      'leased by claim / claimIds': `${leasedBy.claim} / ${leasedBy.claimIds}`,
      confirmed: `${confirmedAt.size}/${committedAt.size}`,
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

/** The latency's stages at 1,000 msg/s, notify and replication alternating, two rounds. */
export async function logtailStages(quick: boolean): Promise<Row[]> {
  const rows: Row[] = [];
  const modes = ['notify', 'replication'] as const;
  for (let r = 1; r <= 2; r++) {
    for (const wakeup of r === 1 ? modes : [...modes].reverse()) {
      rows.push({ round: r, ...(await stagesOnce({ rate: 1000, seconds: quick ? 3 : 10, wakeup })) });
    }
  }
  return rows;
}
