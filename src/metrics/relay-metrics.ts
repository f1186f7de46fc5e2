import { readFileSync } from 'node:fs';
import { Counter, Gauge, Histogram, Registry, type RegistryContentType } from 'prom-client';
import { ConfigError } from '../core/errors/config-error.js';
import type { RelayEvents } from '../core/relay-events.js';
import type { RelayGroup, RelayGroupObserver } from '../core/relay-group.js';
import type { RelayObserver } from '../core/relay-options.js';
import type { Relay } from '../core/relay.js';
import type { OutboxMessage } from '../core/types.js';
import {
  CLAIM_BUCKETS,
  resolveRelayMetricsOptions,
  type RelayMetricsOptions,
  type ResolvedRelayMetricsOptions,
} from './relay-metrics-options.js';
import type { SlotLagReader } from './slot-lag.js';
import { StatsPoller, type StatsQuery, type StatsStore } from './stats-poller.js';

/** Options of {@link RelayMetrics.observe} for a single relay. */
export interface ObserveRelayOptions {
  /** The relay's store: its `stats()` (and `ackCounts()`) feed the backlog gauges. */
  store: StatsStore;
  /**
   * The `source` label. @default the store's schema (PostgreSQL: `mailroom`), else its name
   * (`mysql`, `sqlite`…)
   */
  source?: string;
  /** Reads the replication slot's lag, for a relay with a log source: see `postgresSlotLag`. */
  slotLag?: SlotLagReader;
}

/** Options of {@link RelayMetrics.observe} for a relay group: each source is labelled by its name. */
export interface ObserveGroupOptions {
  /** Reads the lag of a source's replication slot (called with the source's name); null: none. */
  slotLag?: SlotLagReader;
}

/** What a scrape reads of a running relay, without a database call. */
interface LiveState {
  transportAvailable: boolean;
  transportName: string;
  inFlightBatches: number;
  owner: string;
  wakeup: string;
}

/** One observed source: its stats poller and how to read its relay's state now. */
interface Observed {
  source: string;
  poller: StatsPoller;
  /** The relay's state while it runs; null when it is not running. */
  live(): LiveState | null;
}

type Labels = Record<string, string>;
type CounterChild = { inc(value?: number): void };
type HistogramChild = { observe(value: number): void };

function packageVersion(): string {
  try {
    // Two levels up from both src/metrics and dist/metrics.
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version?: unknown;
    };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

function isGroup(target: Relay | RelayGroup): target is RelayGroup {
  return (
    typeof (target as RelayGroup).status === 'function' &&
    typeof (target as RelayGroup).store === 'function' &&
    Array.isArray((target as RelayGroup).sourceNames)
  );
}

function defaultSource(store: StatsStore): string {
  const schema = (store as { schema?: unknown }).schema;
  if (typeof schema === 'string' && schema !== '') return schema;
  const name = (store as { name?: unknown }).name;
  return typeof name === 'string' && name !== '' ? name : 'outbox';
}

/**
 * Prometheus metrics of relays and relay groups (`prom-client`), named `mailroom_…`, with a
 * `source` label per store so that one registry serves a whole {@link RelayGroup}.
 *
 * Counters and histograms follow the relay's events (nothing is added to the relay's hot path
 * but the listeners). Gauges that need the database (backlog, oldest age, dead letters,
 * acknowledgements, slot lag) are read on a fixed schedule (`statsIntervalMs`), one refresh at a
 * time per store; a scrape only reads the last values, so scraping often costs the database
 * nothing. Failed reads are counted in `mailroom_stats_errors_total`, never thrown. The full
 * list, PromQL and alert rules: docs/metrics.md.
 *
 * @example
 * ```ts
 * import { RelayMetrics } from 'mailroom/metrics';
 * const metrics = new RelayMetrics({ registry }); // your prom-client Registry, or leave it out
 * const relay = new Relay({ store, transport, metrics }); // observed from start to stop
 * // or, for a relay (or RelayGroup) you start yourself:
 * const detach = metrics.observe(relay, { store });
 * app.get('/metrics', async (_req, res) => res.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
 * ```
 */
export class RelayMetrics implements RelayObserver, RelayGroupObserver {
  /** The registry the metrics are in: the one given, or a new one. */
  readonly registry: Registry<RegistryContentType>;
  /** The options in effect, defaults applied. */
  readonly options: Omit<ResolvedRelayMetricsOptions, 'registry'>;
  readonly #observed = new Map<string, Observed>();
  readonly #detachers = new Set<() => void>();
  readonly #version = packageVersion();
  readonly #topicOf: ((topic: string) => string) | undefined;
  readonly #counterChildren = new Map<string, CounterChild>();
  readonly #histogramChildren = new Map<string, HistogramChild>();

  readonly #published: Counter;
  readonly #publishDuration: Histogram;
  readonly #latency: Histogram;
  readonly #claims: Counter;
  readonly #claimDuration: Histogram;
  readonly #outages: Counter;
  readonly #acksSwept: Counter;
  readonly #errors: Counter;
  readonly #statsErrors: Counter;

  constructor(options: RelayMetricsOptions = {}) {
    const { registry, ...resolved } = resolveRelayMetricsOptions(options);
    this.options = resolved;
    this.registry = registry ?? new Registry();
    const { topicLabel } = resolved;
    if (topicLabel === true) this.#topicOf = (topic) => topic;
    else if (Array.isArray(topicLabel)) {
      const allowed = new Set<string>(topicLabel);
      this.#topicOf = (topic) => (allowed.has(topic) ? topic : 'other');
    }
    const p = resolved.prefix;
    const registers = [this.registry];
    const withTopic = this.#topicOf ? ['topic'] : [];

    this.#published = new Counter({
      name: `${p}published_total`,
      help: 'Messages the relay settled, by outcome: delivered (the transport confirmed), retried, dead (dead-lettered), released (given back without spending an attempt: the transport was unavailable)',
      labelNames: ['source', 'outcome', ...withTopic],
      registers,
    });
    this.#publishDuration = new Histogram({
      name: `${p}publish_duration_seconds`,
      help: "Time to publish one batch, from the publish call to the transport's last outcome",
      labelNames: ['source'],
      buckets: [...resolved.publishBuckets],
      registers,
    });
    this.#latency = new Histogram({
      name: `${p}delivery_latency_seconds`,
      help: "Time from a message's created_at (its enqueueing transaction) to the transport's confirm, retries and requested delays included",
      labelNames: ['source'],
      buckets: [...resolved.latencyBuckets],
      registers,
    });
    this.#claims = new Counter({
      name: `${p}claims_total`,
      help: 'Batches taken for publishing: result messages (a claim found some), empty (a claim found none), log (a batch from the transaction log)',
      labelNames: ['source', 'result'],
      registers,
    });
    this.#claimDuration = new Histogram({
      name: `${p}claim_duration_seconds`,
      help: "Duration of one claim statement (in a relay group, with the wait for the group's batch budget)",
      labelNames: ['source'],
      buckets: [...CLAIM_BUCKETS],
      registers,
    });
    this.#outages = new Counter({
      name: `${p}transport_outages_total`,
      help: 'Times the relay found the transport unavailable and paused its claims',
      labelNames: ['source'],
      registers,
    });
    this.#acksSwept = new Counter({
      name: `${p}acks_swept_total`,
      help: 'Messages sent with ack whose deadline passed: resent (same id) or expired',
      labelNames: ['source', 'result'],
      registers,
    });
    this.#errors = new Counter({
      name: `${p}relay_errors_total`,
      help: 'Errors the relay reported, by phase (claim, publish, settle, lease, listen, start, ack, callback, source)',
      labelNames: ['source', 'phase'],
      registers,
    });
    this.#statsErrors = new Counter({
      name: `${p}stats_errors_total`,
      help: "Failed reads of the gauges' values (query: stats, acks, slot); the gauges keep their last values",
      labelNames: ['source', 'query'],
      registers,
    });

    // Gauges: computed at each scrape from what the pollers last read and the relays' state.
    const gauge = (
      name: string,
      help: string,
      labelNames: string[],
      fill: (set: (labels: Labels, value: number) => void) => void,
    ) =>
      new Gauge({
        name: `${p}${name}`,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          fill((labels, value) => this.set(labels, value));
        },
      });
    const snapshots = () =>
      [...this.#observed.values()].map((o) => ({ source: o.source, snapshot: o.poller.snapshot }));
    const live = () =>
      [...this.#observed.values()].flatMap((o) => {
        const state = o.live();
        return state ? [{ source: o.source, state }] : [];
      });

    gauge(
      'backlog',
      `Undelivered messages by state: due (ready to claim), scheduled (waiting for a retry or a delay), in_flight (claimed by a relay). Estimates on big tables: see ${p}stats_estimated`,
      ['source', 'state'],
      (set) => {
        for (const { source, snapshot } of snapshots()) {
          const s = snapshot.stats;
          if (!s) continue;
          set({ source, state: 'due' }, Math.max(0, s.backlog - s.inFlight - s.scheduled));
          set({ source, state: 'scheduled' }, s.scheduled);
          set({ source, state: 'in_flight' }, s.inFlight);
        }
      },
    );
    gauge(
      'oldest_undelivered_age_seconds',
      'Age of the oldest undelivered message (0 when there is none)',
      ['source'],
      (set) => {
        for (const { source, snapshot } of snapshots()) {
          if (snapshot.stats) set({ source }, (snapshot.stats.oldestAgeMs ?? 0) / 1000);
        }
      },
    );
    gauge('dead_letters', 'Dead letters kept (listable, replayable)', ['source'], (set) => {
      for (const { source, snapshot } of snapshots()) {
        if (snapshot.stats) set({ source }, snapshot.stats.deadLetters);
      }
    });
    gauge(
      'stats_estimated',
      '1 when the store estimated some of the backlog and dead-letter counts (big tables), 0 when exact',
      ['source'],
      (set) => {
        for (const { source, snapshot } of snapshots()) {
          if (snapshot.stats) set({ source }, snapshot.stats.approximate === true ? 1 : 0);
        }
      },
    );
    if (this.#topicOf) {
      const topicOf = this.#topicOf;
      const byTopic = (field: 'backlog' | 'deadLetters') => (set: (l: Labels, v: number) => void) => {
        for (const { source, snapshot } of snapshots()) {
          const sums = new Map<string, number>();
          for (const t of snapshot.stats?.topics ?? []) {
            const topic = topicOf(t.topic);
            sums.set(topic, (sums.get(topic) ?? 0) + t[field]);
          }
          for (const [topic, value] of sums) set({ source, topic }, value);
        }
      };
      gauge(
        'topic_backlog',
        'Undelivered messages per topic (the busiest topics the store lists)',
        ['source', 'topic'],
        byTopic('backlog'),
      );
      gauge(
        'topic_dead_letters',
        'Dead letters per topic (the busiest topics the store lists)',
        ['source', 'topic'],
        byTopic('deadLetters'),
      );
    }
    gauge(
      'acks',
      'Messages sent with ack, by state: awaiting (the consumer has not acknowledged yet), acknowledged, expired (kept for ackRetentionMs)',
      ['source', 'state'],
      (set) => {
        for (const { source, snapshot } of snapshots()) {
          const a = snapshot.acks;
          if (!a) continue;
          set({ source, state: 'awaiting' }, a.awaiting);
          set({ source, state: 'acknowledged' }, a.acknowledged);
          set({ source, state: 'expired' }, a.expired);
        }
      },
    );
    gauge(
      'callbacks',
      'Outcome callbacks (callback: { url }): pending (not yet delivered) and dead (gave up)',
      ['source', 'state'],
      (set) => {
        for (const { source, snapshot } of snapshots()) {
          const a = snapshot.acks;
          if (!a) continue;
          set({ source, state: 'pending' }, a.callbacksPending);
          set({ source, state: 'dead' }, a.callbacksDead);
        }
      },
    );
    gauge(
      'replication_slot_lag_bytes',
      "Bytes of WAL written since the position the relay's replication slot confirmed",
      ['source', 'slot'],
      (set) => {
        for (const { source, snapshot } of snapshots()) {
          const lag = snapshot.slot;
          if (lag && lag.bytes !== null) set({ source, slot: lag.slot }, lag.bytes);
        }
      },
    );
    gauge(
      'replication_slot_lag_seconds',
      "Time between the server flushing WAL and the relay's slot confirming it (absent when PostgreSQL does not measure it)",
      ['source', 'slot'],
      (set) => {
        for (const { source, snapshot } of snapshots()) {
          const lag = snapshot.slot;
          if (lag && lag.seconds !== null) set({ source, slot: lag.slot }, lag.seconds);
        }
      },
    );
    gauge(
      'stats_age_seconds',
      'Time since the gauges read from the database were last refreshed',
      ['source'],
      (set) => {
        const now = Date.now();
        for (const { source, snapshot } of snapshots()) {
          if (snapshot.refreshedAt !== null) set({ source }, Math.max(0, now - snapshot.refreshedAt) / 1000);
        }
      },
    );
    gauge(
      'stats_refresh_duration_seconds',
      'Duration of the last refresh of the gauges read from the database',
      ['source'],
      (set) => {
        for (const { source, snapshot } of snapshots()) {
          if (snapshot.refreshMs !== null) set({ source }, snapshot.refreshMs / 1000);
        }
      },
    );
    gauge(
      'transport_up',
      '1 while the transport accepts publishes, 0 while it is unavailable (claims paused, the relay probes it)',
      ['source', 'transport'],
      (set) => {
        for (const { source, state } of live()) {
          set({ source, transport: state.transportName }, state.transportAvailable ? 1 : 0);
        }
      },
    );
    gauge('in_flight_batches', 'Batches between claim and settle now', ['source'], (set) => {
      for (const { source, state } of live()) set({ source }, state.inFlightBatches);
    });
    gauge(
      'relay_info',
      'Always 1, for each running relay: its version, owner name, wake-up mode and transport',
      ['source', 'version', 'owner', 'wakeup', 'transport'],
      (set) => {
        for (const { source, state } of live()) {
          set(
            {
              source,
              version: this.#version,
              owner: state.owner,
              wakeup: state.wakeup,
              transport: state.transportName,
            },
            1,
          );
        }
      },
    );
  }

  /**
   * Starts measuring a relay (with its store) or a relay group (each source under its name).
   * Returns the function that stops: the stats refreshes end and the source's gauges disappear;
   * counters and histograms keep their values (a relay observed again continues them).
   * Throws a {@link ConfigError} when a source of that name is observed already.
   */
  observe(relay: Relay, options: ObserveRelayOptions): () => void;
  observe(group: RelayGroup, options?: ObserveGroupOptions): () => void;
  observe(target: Relay | RelayGroup, options: Partial<ObserveRelayOptions> = {}): () => void {
    const sources = isGroup(target) ? target.sourceNames : [this.#relaySource(options)];
    for (const source of sources) {
      if (this.#observed.has(source)) {
        throw new ConfigError(
          'source',
          `RelayMetrics already observes a source named ${JSON.stringify(source)}; detach it first, or give ` +
            'this relay another name: metrics.observe(relay, { store, source: "billing" })',
          { value: source },
        );
      }
    }
    const unsubscribe = isGroup(target)
      ? this.#watchGroup(target, options)
      : this.#watchRelay(target, options);
    for (const source of sources) this.#observed.get(source)?.poller.start();
    let detached = false;
    const detach = () => {
      if (detached) return;
      detached = true;
      this.#detachers.delete(detach);
      for (const off of unsubscribe) off();
      for (const source of sources) {
        this.#observed.get(source)?.poller.stop();
        this.#observed.delete(source);
      }
    };
    this.#detachers.add(detach);
    return detach;
  }

  /** Stops observing everything (every stats refresh ends). The registry keeps the metrics. */
  close(): void {
    for (const detach of [...this.#detachers]) detach();
  }

  #relaySource(options: Partial<ObserveRelayOptions>): string {
    const { store, source } = options;
    if (typeof store?.stats !== 'function') {
      throw new ConfigError(
        'store',
        "RelayMetrics.observe(relay, { store }) needs the relay's store (an object with stats()), to read the backlog",
      );
    }
    if (source !== undefined && (typeof source !== 'string' || source === '')) {
      throw new ConfigError(
        'source',
        `RelayMetrics.observe option source must be a non-empty string, got ${JSON.stringify(source)}`,
        { value: source },
      );
    }
    return source ?? defaultSource(store);
  }

  #poller(source: string, store: StatsStore, slotLag: SlotLagReader | undefined): StatsPoller {
    return new StatsPoller({
      source,
      store,
      slotLag,
      intervalMs: this.options.statsIntervalMs,
      onError: (query: StatsQuery) => this.#counter(this.#statsErrors, { source, query }).inc(),
    });
  }

  #watchRelay(relay: Relay, options: Partial<ObserveRelayOptions>): Array<() => void> {
    const source = this.#relaySource(options);
    this.#observed.set(source, {
      source,
      poller: this.#poller(source, options.store as StatsStore, options.slotLag),
      live: () =>
        relay.running
          ? {
              transportAvailable: relay.transportAvailable,
              transportName: relay.transportName,
              inFlightBatches: relay.inFlightBatches,
              owner: relay.options.owner,
              wakeup: relay.options.wakeup,
            }
          : null,
    });
    return this.#subscribe((event, listener) => relay.on(event, (payload) => listener(source, payload)));
  }

  #watchGroup(group: RelayGroup, options: ObserveGroupOptions): Array<() => void> {
    for (const source of group.sourceNames) {
      this.#observed.set(source, {
        source,
        poller: this.#poller(source, group.store(source), options.slotLag),
        live: () => {
          const status = group.status().find((s) => s.name === source);
          if (status?.state !== 'running') return null;
          const relay = group.relay(source);
          return {
            transportAvailable: status.transportAvailable,
            transportName: relay.transportName,
            inFlightBatches: status.inFlightBatches,
            owner: relay.options.owner,
            wakeup: relay.options.wakeup,
          };
        },
      });
    }
    return this.#subscribe((event, listener) =>
      group.on(event, (payload) => listener(payload.source, payload)),
    );
  }

  /** The event listeners, the same for a relay and a group (whose events name their source). */
  #subscribe(
    on: <K extends keyof RelayEvents>(
      event: K,
      listener: (source: string, payload: RelayEvents[K]) => void,
    ) => () => void,
  ): Array<() => void> {
    const topicOf = this.#topicOf;
    return [
      on('relay:batch:claimed', (source, { claimMs }) => {
        this.#counter(this.#claims, { source, result: claimMs === null ? 'log' : 'messages' }).inc();
        if (claimMs !== null) this.#histogram(this.#claimDuration, source).observe(claimMs / 1000);
      }),
      on('relay:claim:empty', (source, { claimMs }) => {
        this.#counter(this.#claims, { source, result: 'empty' }).inc();
        this.#histogram(this.#claimDuration, source).observe(claimMs / 1000);
      }),
      on('relay:batch:settled', (source, e) => {
        this.#histogram(this.#publishDuration, source).observe(e.publishMs / 1000);
        if (e.delivered > 0) this.#delivered(source, e.messages);
        if (e.released > 0) {
          const labels: Labels = topicOf
            ? { source, outcome: 'released', topic: '' }
            : { source, outcome: 'released' };
          this.#counter(this.#published, labels).inc(e.released);
        }
      }),
      on('relay:message:retry', (source, { message }) => {
        this.#counter(this.#published, this.#outcomeLabels(source, 'retried', message)).inc();
      }),
      on('relay:message:dead', (source, { message }) => {
        this.#counter(this.#published, this.#outcomeLabels(source, 'dead', message)).inc();
      }),
      on('relay:transport:unavailable', (source) => this.#counter(this.#outages, { source }).inc()),
      on('relay:acks:swept', (source, { resent, expired }) => {
        if (resent > 0) this.#counter(this.#acksSwept, { source, result: 'resent' }).inc(resent);
        if (expired > 0) this.#counter(this.#acksSwept, { source, result: 'expired' }).inc(expired);
      }),
      on('relay:error', (source, { phase }) => this.#counter(this.#errors, { source, phase }).inc()),
    ];
  }

  #delivered(source: string, messages: readonly OutboxMessage[]): void {
    const now = Date.now();
    const latency = this.#histogram(this.#latency, source);
    // Without a topic label the batch is one increment; with it, one per message.
    if (!this.#topicOf) this.#counter(this.#published, { source, outcome: 'delivered' }).inc(messages.length);
    for (const message of messages) {
      // created_at is the database's clock, now the process's: a skew must not go negative.
      latency.observe(Math.max(0, now - message.createdAt.getTime()) / 1000);
      if (this.#topicOf)
        this.#counter(this.#published, this.#outcomeLabels(source, 'delivered', message)).inc();
    }
  }

  #outcomeLabels(source: string, outcome: string, message: OutboxMessage): Labels {
    return this.#topicOf ? { source, outcome, topic: this.#topicOf(message.topic) } : { source, outcome };
  }

  /** A counter's child for these labels, kept: looking labels up costs more than an increment. */
  #counter(counter: Counter, labels: Labels): CounterChild {
    const key = `${this.#metricId(counter)}\u0000${Object.values(labels).join('\u0000')}`;
    let child = this.#counterChildren.get(key);
    if (!child) this.#counterChildren.set(key, (child = counter.labels(labels)));
    return child;
  }

  readonly #metricIds = new Map<object, number>();

  #metricId(metric: object): number {
    let id = this.#metricIds.get(metric);
    if (id === undefined) this.#metricIds.set(metric, (id = this.#metricIds.size));
    return id;
  }

  #histogram(histogram: Histogram, source: string): HistogramChild {
    const key = `${this.#metricId(histogram)}\u0000${source}`;
    let child = this.#histogramChildren.get(key);
    if (!child) this.#histogramChildren.set(key, (child = histogram.labels({ source })));
    return child;
  }
}
