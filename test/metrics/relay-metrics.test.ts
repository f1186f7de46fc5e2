import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import {
  ConfigError,
  Outbox,
  Relay,
  RelayGroup,
  type MessageInput,
  type OutboxStats,
} from '../../src/core/index.js';
import { postgresSlotLag, RelayMetrics } from '../../src/metrics/index.js';
import { MemoryTransport } from '../../src/transports/memory/index.js';
import { createTestDb, inTransaction, type TestDb } from '../helpers/postgres.js';
import { dropSlot } from '../helpers/slots.js';
import { waitUntil } from '../helpers/wait.js';
import { find, scrape, scrapeUntil, value } from './scrape.js';

async function enqueue(db: TestDb, messages: MessageInput[]): Promise<void> {
  const outbox = new Outbox({ store: db.store });
  await inTransaction(db.pool, (client) => outbox.enqueue(client, messages));
}

function many(topic: string, n: number): MessageInput[] {
  return Array.from({ length: n }, (_, i) => ({ topic, key: `k${i}`, payload: { i } }));
}

describe('RelayMetrics on PostgreSQL and the memory transport', () => {
  let db: TestDb;
  let other: TestDb;
  const running: Array<{ stop(): Promise<void> }> = [];
  const metricsToClose: RelayMetrics[] = [];
  const track = <T extends { stop(): Promise<void> }>(r: T): T => {
    running.push(r);
    return r;
  };
  const newMetrics = (options: ConstructorParameters<typeof RelayMetrics>[0] = {}) => {
    const metrics = new RelayMetrics(options);
    metricsToClose.push(metrics);
    return metrics;
  };

  before(async () => {
    [db, other] = await Promise.all([createTestDb('mtr'), createTestDb('mto')]);
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((r) => r.stop()));
    for (const m of metricsToClose.splice(0)) m.close();
    for (const d of [db, other]) {
      await d.pool.query(`TRUNCATE "${d.schema}".outbox, "${d.schema}".dead_letter`);
    }
  });
  after(async () => {
    await Promise.all([db.drop(), other.drop()]);
  });

  it('counts delivered, retried and dead-lettered messages, and times every delivery and publish', async () => {
    const transport = new MemoryTransport();
    let flakyFailures = 0;
    transport.failWith = (m) => {
      if (m.topic === 'bad') return 'permanent';
      if (m.topic === 'flaky' && flakyFailures === 0) {
        flakyFailures++;
        return 'retry';
      }
      return undefined;
    };
    const metrics = newMetrics();
    const relay = track(
      new Relay({ store: db.store, transport, metrics, retry: { baseDelayMs: 10, maxDelayMs: 20 } }),
    );
    await enqueue(db, [...many('ok', 10), { topic: 'flaky', payload: {} }, { topic: 'bad', payload: {} }]);
    await relay.start();
    await transport.waitFor(11);
    const source = { source: db.schema };
    const samples = await scrapeUntil(
      metrics.registry,
      (s) =>
        value(s, 'mailroom_published_total', { ...source, outcome: 'delivered' }) === 11 &&
        value(s, 'mailroom_published_total', { ...source, outcome: 'dead' }) === 1,
      'the counters to show 11 delivered and 1 dead letter',
    );
    assert.equal(value(samples, 'mailroom_published_total', { ...source, outcome: 'retried' }), 1);
    assert.equal(value(samples, 'mailroom_published_total', { ...source, outcome: 'released' }), undefined);
    assert.equal(value(samples, 'mailroom_delivery_latency_seconds_count', source), 11);
    const latencySum = value(samples, 'mailroom_delivery_latency_seconds_sum', source) as number;
    assert.ok(latencySum > 0 && latencySum < 11 * 60, `latency sum ${latencySum}`);
    const batches = value(samples, 'mailroom_publish_duration_seconds_count', source) as number;
    assert.ok(batches >= 2, `publish batches ${batches}`);
    const claims = value(samples, 'mailroom_claims_total', { ...source, result: 'messages' }) as number;
    assert.ok(claims >= 2, `claims ${claims}`);
    // Every claim is timed: those that found messages and those that found none.
    const timed = value(samples, 'mailroom_claim_duration_seconds_count', source) as number;
    const empty = value(samples, 'mailroom_claims_total', { ...source, result: 'empty' }) ?? 0;
    assert.equal(timed, claims + empty);
    // No topic label unless the operator allows it.
    assert.ok(find(samples, 'mailroom_published_total').every((s) => !('topic' in s.labels)));
    const [info] = find(samples, 'mailroom_relay_info', source);
    assert.deepEqual(info?.labels, {
      ...source,
      version: info?.labels.version,
      owner: relay.options.owner,
      wakeup: 'notify',
      transport: 'memory',
    });
    assert.match(info?.labels.version ?? '', /^\d+\.\d+\.\d+/);
    assert.equal(value(samples, 'mailroom_transport_up', { ...source, transport: 'memory' }), 1);

    // Stopped: the relay is gone from the gauges, its counters stay.
    await relay.stop();
    const afterStop = await scrape(metrics.registry);
    assert.equal(find(afterStop, 'mailroom_relay_info').length, 0);
    assert.equal(find(afterStop, 'mailroom_transport_up').length, 0);
    assert.equal(find(afterStop, 'mailroom_backlog').length, 0);
    assert.equal(value(afterStop, 'mailroom_published_total', { ...source, outcome: 'delivered' }), 11);
  });

  it('shows the transport down during an outage, counts it once, and up again after', async () => {
    const transport = new MemoryTransport({ unavailable: true });
    const metrics = newMetrics();
    const relay = track(
      new Relay({ store: db.store, transport, metrics, probeMinDelayMs: 20, probeMaxDelayMs: 100 }),
    );
    await relay.start();
    await enqueue(db, many('t', 3));
    const up = async () =>
      value(await scrape(metrics.registry), 'mailroom_transport_up', { source: db.schema });
    await waitUntil(async () => (await up()) === 0, 'transport_up to be 0 during the outage');
    // The batch that met the outage is given back without spending attempts (its settle ends
    // after the relay marked the transport down).
    const during = await scrapeUntil(
      metrics.registry,
      (s) => (value(s, 'mailroom_published_total', { source: db.schema, outcome: 'released' }) ?? 0) >= 1,
      'the released batch to be counted',
    );
    assert.equal(value(during, 'mailroom_transport_outages_total', { source: db.schema }), 1);
    assert.equal(
      value(during, 'mailroom_published_total', { source: db.schema, outcome: 'retried' }),
      undefined,
    );

    transport.unavailable = false;
    await transport.waitFor(3);
    // The broker has them before the relay settles them: wait for the settle.
    const afterwards = await scrapeUntil(
      metrics.registry,
      (s) => value(s, 'mailroom_published_total', { source: db.schema, outcome: 'delivered' }) === 3,
      'three deliveries counted',
    );
    assert.equal(value(afterwards, 'mailroom_transport_up', { source: db.schema }), 1);
    assert.equal(value(afterwards, 'mailroom_transport_outages_total', { source: db.schema }), 1);
  });

  it('refreshes the database gauges on its schedule, however often it is scraped', async () => {
    let calls = 0;
    const store = {
      stats: (): Promise<OutboxStats> => {
        calls++;
        return db.store.stats();
      },
    };
    const metrics = newMetrics({ statsIntervalMs: 1000 });
    // Not started: the gauges come from the store alone.
    const relay = new Relay({ store: db.store, transport: new MemoryTransport() });
    await enqueue(db, many('t', 5));
    await db.pool.query(`UPDATE "${db.schema}".outbox SET created_at = now() - interval '30 seconds'`);
    metrics.observe(relay, { store, source: 'billing' });
    const gauge = (samples: Awaited<ReturnType<typeof scrape>>, state: string) =>
      value(samples, 'mailroom_backlog', { source: 'billing', state });
    const first = await scrapeUntil(
      metrics.registry,
      (s) => gauge(s, 'due') === 5,
      'the backlog gauge to show 5 due messages',
    );
    assert.equal(gauge(first, 'scheduled'), 0);
    assert.equal(gauge(first, 'in_flight'), 0);
    assert.equal(value(first, 'mailroom_dead_letters', { source: 'billing' }), 0);
    const age = value(first, 'mailroom_oldest_undelivered_age_seconds', { source: 'billing' }) as number;
    assert.ok(age >= 29 && age < 120, `oldest age ${age}`);
    // A relay that is not running has no live gauges.
    assert.equal(find(first, 'mailroom_relay_info').length, 0);

    const before = calls;
    await Promise.all(Array.from({ length: 50 }, () => scrape(metrics.registry)));
    assert.ok(calls - before <= 2, `50 scrapes made ${calls - before} stats() calls`);

    await enqueue(db, many('t', 3));
    await waitUntil(
      async () => gauge(await scrape(metrics.registry), 'due') === 8,
      'the next scheduled refresh to show 8 due messages',
    );
    const refreshes = calls;
    assert.ok(refreshes >= 2 && refreshes <= 10, `${refreshes} refreshes`);
    metrics.close();
    const closedAt = calls;
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(calls <= closedAt + 1, 'no refresh after close()');
    assert.equal(find(await scrape(metrics.registry), 'mailroom_backlog').length, 0);
  });

  it('counts a failing stats read instead of throwing, and keeps scraping', async () => {
    let fail = false;
    const store = {
      stats: (): Promise<OutboxStats> =>
        fail ? Promise.reject(new Error('database down')) : db.store.stats(),
    };
    const metrics = newMetrics({ statsIntervalMs: 1000 });
    const relay = new Relay({ store: db.store, transport: new MemoryTransport() });
    metrics.observe(relay, { store, source: 'flaky_db' });
    await waitUntil(
      async () =>
        value(await scrape(metrics.registry), 'mailroom_backlog', { source: 'flaky_db', state: 'due' }) === 0,
      'a first good refresh',
    );
    fail = true;
    await waitUntil(
      async () =>
        (value(await scrape(metrics.registry), 'mailroom_stats_errors_total', {
          source: 'flaky_db',
          query: 'stats',
        }) ?? 0) >= 1,
      'the failed refresh to be counted',
    );
    // The last good values stay, with their age.
    const samples = await scrape(metrics.registry);
    assert.equal(value(samples, 'mailroom_backlog', { source: 'flaky_db', state: 'due' }), 0);
    assert.ok((value(samples, 'mailroom_stats_age_seconds', { source: 'flaky_db' }) ?? -1) >= 0);
  });

  it('labels topics only when allowed: every topic, or a list and "other"', async () => {
    const transport = new MemoryTransport();
    const metrics = newMetrics({ topicLabel: ['orders'], statsIntervalMs: 1000 });
    const relay = track(new Relay({ store: db.store, transport, metrics }));
    await enqueue(db, [...many('orders', 2), ...many('audit', 3), ...many('billing', 1)]);
    // Before the relay runs: the backlog per topic, through a metrics of its own.
    const before = newMetrics({ topicLabel: ['orders'], statsIntervalMs: 1000 });
    const detach = before.observe(relay, { store: db.store });
    const backlog = await scrapeUntil(
      before.registry,
      (s) => find(s, 'mailroom_topic_backlog').length > 0,
      'the per-topic backlog to be read',
    );
    assert.equal(value(backlog, 'mailroom_topic_backlog', { source: db.schema, topic: 'orders' }), 2);
    assert.equal(value(backlog, 'mailroom_topic_backlog', { source: db.schema, topic: 'other' }), 4);
    detach();
    await relay.start();
    await transport.waitFor(6);
    const samples = await scrapeUntil(
      metrics.registry,
      (s) => value(s, 'mailroom_published_total', { outcome: 'delivered' }) === 6,
      'six deliveries counted',
    );
    assert.equal(value(samples, 'mailroom_published_total', { outcome: 'delivered', topic: 'orders' }), 2);
    assert.equal(value(samples, 'mailroom_published_total', { outcome: 'delivered', topic: 'other' }), 4);
    assert.equal(find(samples, 'mailroom_published_total', { topic: 'audit' }).length, 0);

    const all = newMetrics({ topicLabel: true });
    const t2 = new MemoryTransport();
    const relay2 = track(new Relay({ store: other.store, transport: t2, metrics: all }));
    await relay2.start();
    await enqueue(other, [...many('audit', 2), ...many('billing', 1)]);
    await t2.waitFor(3);
    const s2 = await scrapeUntil(
      all.registry,
      (s) => value(s, 'mailroom_published_total', { outcome: 'delivered' }) === 3,
      'three deliveries counted',
    );
    assert.equal(value(s2, 'mailroom_published_total', { topic: 'audit' }), 2);
    assert.equal(value(s2, 'mailroom_published_total', { topic: 'billing' }), 1);
  });
  it('measures a relay group under one registry, each source by its name', async () => {
    const registry = new Registry();
    const metrics = newMetrics({ registry, statsIntervalMs: 1000 });
    const transport = new MemoryTransport();
    const group = track(
      new RelayGroup({
        transport,
        metrics,
        sources: [
          { name: 'tenant_a', store: db.store },
          { name: 'tenant_b', store: other.store },
        ],
      }),
    );
    await group.start();
    await enqueue(db, many('a', 4));
    await enqueue(other, many('b', 2));
    await transport.waitFor(6);
    const samples = await scrapeUntil(
      registry,
      (s) => value(s, 'mailroom_published_total', { outcome: 'delivered' }) === 6,
      'six deliveries counted',
    );
    assert.equal(value(samples, 'mailroom_published_total', { source: 'tenant_a', outcome: 'delivered' }), 4);
    assert.equal(value(samples, 'mailroom_published_total', { source: 'tenant_b', outcome: 'delivered' }), 2);
    assert.equal(value(samples, 'mailroom_delivery_latency_seconds_count', { source: 'tenant_b' }), 2);
    assert.deepEqual(
      find(samples, 'mailroom_relay_info')
        .map((s) => [s.labels.source, s.labels.owner])
        .sort(),
      [
        ['tenant_a', group.relay('tenant_a').options.owner],
        ['tenant_b', group.relay('tenant_b').options.owner],
      ],
    );
    await waitUntil(async () => {
      const s = await scrape(registry);
      return (
        find(s, 'mailroom_backlog', { source: 'tenant_a' }).length === 3 &&
        find(s, 'mailroom_backlog', { source: 'tenant_b' }).length === 3
      );
    }, 'the backlog gauges of both sources');
    await group.stop();
    const stopped = await scrape(registry);
    assert.equal(find(stopped, 'mailroom_relay_info').length, 0);
    assert.equal(find(stopped, 'mailroom_backlog').length, 0);
  });

  it('refuses bad options and a source observed twice, naming the value', () => {
    const refused = (options: object, key: string, match: RegExp) =>
      assert.throws(
        () => new RelayMetrics(options as never),
        (err: unknown) => err instanceof ConfigError && err.key === key && match.test(err.message),
      );
    refused({ prefix: 'mail-room' }, 'prefix', /letters, digits and _/);
    refused({ statsIntervalMs: 10 }, 'statsIntervalMs', /10/);
    refused({ topicLabel: ['orders', 'other'] }, 'topicLabel', /"other"/);
    refused({ topicLabel: 'yes' }, 'topicLabel', /true, false, or a list/);
    refused({ latencyBuckets: [1, 0.5] }, 'latencyBuckets', /increasing/);
    refused({ registry: {} }, 'registry', /Registry/);
    refused({ topiclabel: true }, 'topiclabel', /did you mean topicLabel/);

    const metrics = newMetrics();
    const relay = new Relay({ store: db.store, transport: new MemoryTransport() });
    metrics.observe(relay, { store: db.store, source: 'one' });
    assert.throws(
      () => metrics.observe(relay, { store: db.store, source: 'one' }),
      (err: unknown) =>
        err instanceof ConfigError && /already observes a source named "one"/.test(err.message),
    );
    assert.throws(
      () => metrics.observe(relay, {} as never),
      (err: unknown) => err instanceof ConfigError && err.key === 'store',
    );
    assert.throws(
      () => new Relay({ store: db.store, transport: new MemoryTransport(), metrics: {} as never }),
      (err: unknown) => err instanceof ConfigError && err.key === 'metrics',
    );
  });

  it('puts its metrics in your registry, under your prefix, next to yours', async () => {
    const registry = new Registry();
    const metrics = newMetrics({ registry, prefix: 'outbox_' });
    assert.equal(metrics.registry, registry);
    const text = await registry.metrics();
    assert.match(text, /^# TYPE outbox_published_total counter$/m);
    assert.match(text, /^# TYPE outbox_delivery_latency_seconds histogram$/m);
    assert.match(text, /^# TYPE outbox_backlog gauge$/m);
    assert.doesNotMatch(text, /mailroom_/);
    // Two instances on one registry clash, as two metrics of the same name would.
    assert.throws(() => new RelayMetrics({ registry, prefix: 'outbox_' }), /already been registered/);
  });
  it("reports a replication slot's lag in bytes, and nothing for a slot that does not exist", async (t) => {
    const slot = `mr_metrics_${randomBytes(4).toString('hex')}`;
    await db.pool.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
    t.after(() => dropSlot(db.pool, slot));
    // WAL after the slot's position: the slot is behind by at least these bytes.
    await enqueue(db, many('wal', 20));
    const lag = await postgresSlotLag(db.pool, slot)('any');
    assert.ok(lag !== null && lag.slot === slot && (lag.bytes ?? 0) > 0, `lag ${JSON.stringify(lag)}`);
    // Nobody streams it: PostgreSQL measures no lag in time.
    assert.equal(lag.seconds, null);
    assert.equal(await postgresSlotLag(db.pool, `${slot}_missing`)('any'), null);

    const metrics = newMetrics({ statsIntervalMs: 1000 });
    const relay = new Relay({ store: db.store, transport: new MemoryTransport() });
    metrics.observe(relay, { store: db.store, slotLag: postgresSlotLag(db.pool, slot) });
    const samples = await scrapeUntil(
      metrics.registry,
      (s) => find(s, 'mailroom_replication_slot_lag_bytes').length === 1,
      'the slot lag gauge',
    );
    assert.ok((value(samples, 'mailroom_replication_slot_lag_bytes', { source: db.schema, slot }) ?? 0) > 0);
    assert.equal(find(samples, 'mailroom_replication_slot_lag_seconds').length, 0);
    // The store's acknowledgement counts are read too (PostgreSQL keeps acks).
    assert.equal(value(samples, 'mailroom_acks', { source: db.schema, state: 'awaiting' }), 0);
    assert.equal(value(samples, 'mailroom_callbacks', { source: db.schema, state: 'dead' }), 0);
  });
});
