/**
 * Metrics overhead: a prefilled backlog drained by one in-process relay into the memory
 * transport (the fastest sink, so the relay's own CPU is what is measured), without and with
 * `RelayMetrics` (default options: no topic label, stats every 15 s). Rounds alternate the order
 * (off/on, on/off, …) so a warming cache or a neighbour's load does not favour one side.
 *
 * Then the listeners' own cost, without a database: the settle event of `messages` messages in
 * batches of 250 fed straight to the metrics' listeners, in CPU time per message (topic label off,
 * and on), which is what the relay pays for metrics on its hot path.
 *
 * Run: `npx tsx bench/metrics.ts [messages=20000] [rounds=3] [keys=1000]`
 */
import { Relay, type OutboxMessage, type OutboxStats, type RelayEvents } from '../src/core/index.js';
import { RelayMetrics } from '../src/metrics/index.js';
import { MemoryTransport } from '../src/transports/memory/index.js';
import { benchDb, machineInfo, prefill } from './lib.js';

const messages = Number(process.argv[2] ?? 20_000);
const rounds = Number(process.argv[3] ?? 3);
const keys = Number(process.argv[4] ?? 1000);

/** Drains `messages` and returns messages per second, from start() to the last settle. */
async function drain(withMetrics: boolean): Promise<{ rate: number; scrapeBytes: number }> {
  const db = await benchDb();
  const metrics = withMetrics ? new RelayMetrics() : undefined;
  try {
    await prefill(db, messages, keys);
    const transport = new MemoryTransport();
    const relay = new Relay({ store: db.store, transport, ...(metrics ? { metrics } : {}) });
    let settled = 0;
    const done = new Promise<void>((resolve) => {
      relay.on('relay:batch:settled', ({ delivered }) => {
        settled += delivered;
        if (settled >= messages) resolve();
      });
    });
    const started = performance.now();
    await relay.start();
    await done;
    const seconds = (performance.now() - started) / 1000;
    const scrapeBytes = metrics ? (await metrics.registry.metrics()).length : 0;
    await relay.stop();
    return { rate: messages / seconds, scrapeBytes };
  } finally {
    metrics?.close();
    await db.drop();
  }
}

const info = machineInfo();
console.log(
  `metrics overhead: ${messages} messages, ${keys} keys, memory transport, ${rounds} rounds; ` +
    `${info.cpus} cpus, load ${info.loadavg.join(' ')}, node ${info.node}`,
);
const off: number[] = [];
const on: number[] = [];
for (let r = 0; r < rounds; r++) {
  const order = r % 2 === 0 ? [false, true] : [true, false];
  for (const withMetrics of order) {
    const { rate, scrapeBytes } = await drain(withMetrics);
    (withMetrics ? on : off).push(rate);
    console.log(
      `round ${r + 1} metrics ${withMetrics ? 'on ' : 'off'}: ${Math.round(rate)} msg/s` +
        (withMetrics ? ` (one scrape: ${scrapeBytes} bytes)` : ''),
    );
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const ratios = on.map((rate, i) => rate / (off[i] as number));
console.log(
  `median msg/s: off ${Math.round(median(off))}, on ${Math.round(median(on))}; ` +
    `on/off per round: ${ratios.map((x) => x.toFixed(3)).join(', ')}; median ratio ${median(ratios).toFixed(3)}`,
);

/** CPU microseconds per delivered message spent in the metrics' listeners. */
function listenerCost(topicLabel: boolean): number {
  const listeners = new Map<string, (payload: unknown) => void>();
  const fakeRelay = {
    on: (event: string, listener: (payload: unknown) => void) => {
      listeners.set(event, listener);
      return () => listeners.delete(event);
    },
    running: false,
  } as unknown as Relay;
  const stats = async (): Promise<OutboxStats> => ({
    backlog: 0,
    inFlight: 0,
    scheduled: 0,
    oldestAgeMs: null,
    deadLetters: 0,
    topics: [],
  });
  const metrics = new RelayMetrics({ topicLabel });
  metrics.observe(fakeRelay, { store: { stats }, source: 'bench' });
  const batch: OutboxMessage[] = Array.from({ length: 250 }, (_, i) => ({
    seq: String(i),
    id: String(i),
    topic: `topic.${i % 8}`,
    key: `k${i}`,
    type: null,
    payload: Buffer.alloc(0),
    contentType: 'application/json',
    headers: {},
    createdAt: new Date(Date.now() - 50),
    attempts: 1,
  }));
  const settled = listeners.get('relay:batch:settled') as (p: RelayEvents['relay:batch:settled']) => void;
  const claimed = listeners.get('relay:batch:claimed') as (p: RelayEvents['relay:batch:claimed']) => void;
  const run = () => {
    for (let sent = 0; sent < messages; sent += batch.length) {
      claimed({ count: batch.length, leaseToken: 't', claimMs: 2 });
      settled({
        count: batch.length,
        delivered: batch.length,
        released: 0,
        retried: 0,
        dead: 0,
        publishMs: 5,
        messages: batch,
      });
    }
  };
  run(); // warm-up
  const before = process.cpuUsage();
  run();
  const used = process.cpuUsage(before);
  metrics.close();
  return (used.user + used.system) / messages;
}

console.log(
  `listeners' CPU per delivered message: ${listenerCost(false).toFixed(2)} µs (no topic label), ` +
    `${listenerCost(true).toFixed(2)} µs (topic label on)`,
);
