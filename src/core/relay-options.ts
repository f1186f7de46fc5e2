import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { systemClock, type Clock } from './clock.js';
import { ConfigError } from './errors/config-error.js';
import type { Logger } from './logger.js';
import type { MessageSource, OutboxStore, Transport } from './ports.js';
import {
  custom,
  hasMethods,
  integer,
  oneOf,
  optionsSchema,
  string,
  type ResolvedOptions,
} from './options-schema.js';
import { retryPolicyField, type RetryPolicyOptions } from './retry-policy.js';
import type { CallbackDispatcherOptions } from '../callbacks/callback-dispatcher-options.js';
import type { Relay } from './relay.js';
import type { TracingOptions } from '../tracing/tracing-options.js';

/**
 * Watches a relay while it runs: `RelayMetrics` from `mailroom/metrics` is one. The relay calls
 * `observe` as it starts and the function it returned once it has stopped (or failed to start).
 * Core knows only this shape, so it loads no metrics library.
 */
export interface RelayObserver {
  /** Starts watching `relay`, whose store is `store`; returns the function that stops. */
  observe(relay: Relay, options: { store: OutboxStore }): () => void;
}

/**
 * The callback dispatcher a relay runs: every option of `CallbackDispatcher` except those the
 * relay gives it (its store, owner, logger and clock).
 */
export type RelayCallbackOptions = Omit<
  CallbackDispatcherOptions,
  'store' | 'owner' | 'logger' | 'clock' | 'signal'
>;

/**
 * Calls an observer's detach function; one that throws is logged and ignored, since stopping a
 * relay must not fail for its metrics.
 */
export function detachObserver(unobserve: (() => void) | undefined, logger: Logger): void {
  try {
    unobserve?.();
  } catch (err) {
    logger.error('metrics observer failed to detach; ignored', {
      event: 'metrics_detach_failed',
      error: err,
    });
  }
}

/** Options of {@link Relay}. */
export interface RelayOptions {
  store: OutboxStore;
  transport: Transport;
  /** Most messages claimed (and published as one pipelined batch) at a time. @default 250 */
  batchSize?: number;
  /**
   * Batches in flight at once: while one batch waits for confirms the next is claimed and
   * published. @default 4
   */
  concurrency?: number;
  /**
   * How long a claim holds its messages, on the database clock. A relay that dies loses them
   * after this long; a live relay extends it while it publishes and settles. @default 10000
   */
  leaseMs?: number;
  /**
   * `notify`: wake at commit of every enqueueing transaction (PostgreSQL LISTEN/NOTIFY) and poll
   * as a backstop. `poll`: poll only. `replication`: take new messages from `source` (the
   * transaction log, in commit order) and claim from the table only for retries, rows the source
   * left there, and as a backstop. @default 'replication' with a `source`, else 'notify' when the
   * store supports it, else 'poll'
   */
  wakeup?: 'notify' | 'poll' | 'replication';
  /**
   * Poll interval: the backstop claim in `notify` and `replication` modes.
   *
   * @default 1000 (notify), 250 (poll), 5000 (replication; 1000 while the source is disconnected)
   */
  pollIntervalMs?: number;
  /**
   * Longest wait between polls while claims find nothing: each empty claim doubles the wait,
   * from `pollIntervalMs` up to this; a claim that finds work, a wake-up (`relay.wake()`, a
   * NOTIFY) or a settled batch brings it back to `pollIntervalMs`. For stores without
   * notifications (MySQL, SQLite), where polling is the only trigger: a busy relay polls
   * often, an idle one rarely. Equal to `pollIntervalMs`: no backing off.
   *
   * @default 2000 with `wakeup: 'poll'` (or `pollIntervalMs` when larger); otherwise `pollIntervalMs`
   */
  idlePollMaxMs?: number;
  /**
   * Where new messages come from besides the relay's claims: a log-tailing source such as
   * `PostgresLogSource` from `mailroom/replication`. Implies `wakeup: 'replication'`; the store
   * must have `claimIds`.
   */
  source?: MessageSource;
  /**
   * Most messages of one key in a batch. With a transport that keeps a call's order
   * (`transport.ordering`: RabbitMQ), a key with a backlog moves up to this many messages per
   * claim → publish → confirm → settle round trip, in order; a key is in one batch at a time,
   * so the relay's other batches go to other keys. 1 moves one message per key per round trip. Transports without `ordering` always use
   * 1. Set 1 for RabbitMQ queues with `x-overflow: reject-publish`, where the broker can refuse a
   * message and accept the next (see docs/design.md, "Runs"). @default batchSize (ordering
   * transports), 1 (others)
   */
  maxPerKey?: number;
  /** Retry schedule and attempts before dead-lettering. */
  retry?: RetryPolicyOptions;
  /**
   * Deadline of one publish call. Past it the relay stops waiting, aborts the call (the
   * transport drops its connection), releases the batch without spending attempts and treats
   * the transport as unavailable until a probe succeeds. Keep it above the broker's slowest
   * healthy confirm. @default 30000
   */
  publishTimeoutMs?: number;
  /**
   * First delay between probes of an unavailable transport; it doubles (with jitter) after
   * each failed probe, up to `probeMaxDelayMs`. @default 500
   */
  probeMinDelayMs?: number;
  /** Longest delay between two probes of an unavailable transport. @default 30000 */
  probeMaxDelayMs?: number;
  /**
   * How long `stop()` waits for in-flight batches before abandoning them (their publishes are
   * aborted, their leases no longer extended). @default 10000
   */
  shutdownTimeoutMs?: number;
  /**
   * How often the relay resends or expires messages whose acknowledgement deadline passed
   * (messages sent with `ack`; docs/acknowledged-delivery.md): the resolution of `ack.timeoutMs`.
   * Each tick is one cheap indexed statement, also with no such message. @default 1000
   */
  ackSweepIntervalMs?: number;
  /**
   * How long acknowledged and expired records are kept (for `outbox.status`, `mailroom ack
   * list` and late acknowledgements) before the relay deletes them. @default 604800000 (7 days)
   */
  ackRetentionMs?: number;
  /**
   * POST the outcomes of messages sent with `callback: { url }` (`delivered`, `acknowledged`,
   * `expired`, `dead`), signed with Standard Webhooks headers under `secret`, with retries of
   * their own (docs/callbacks.md). Without it callbacks wait in the store for a relay that has
   * it. `secret`: a `whsec_…` secret (see `generateWebhookSecret()`) or a string of 16 bytes or
   * more, or several for rotation.
   *
   * @example { callbacks: { secret: process.env.MAILROOM_CALLBACK_SECRET! } }
   */
  callbacks?: RelayCallbackOptions;
  /**
   * Watches this relay from its start to its stop: a `RelayMetrics` from `mailroom/metrics`
   * (Prometheus), built on your own registry if you have one. The same as calling
   * `metrics.observe(relay, { store })` yourself, without having to detach after `stop()`.
   *
   * @example { metrics: new RelayMetrics({ registry }) }
   */
  metrics?: RelayObserver;
  /**
   * Traces publishes with OpenTelemetry (docs/tracing.md): a PRODUCER span `publish <topic>` per
   * message, continuing the trace the message carries from `enqueue`. Options go to
   * `tracedTransport` (`tracerProvider`, `relation`). Does nothing without `@opentelemetry/api`.
   *
   * @default true
   * @example { tracing: { relation: 'link' } }
   */
  tracing?: boolean | TracingOptions;
  /** Name of this relay on leased rows and in logs. @default `${hostname}:${pid}:${random}` */
  owner?: string;
  /** Stops the relay when aborted. */
  signal?: AbortSignal;
  /** Receives structured log lines. @default silent */
  logger?: Logger;
  /** Source of time for every wait; tests pass a `ManualClock` from `mailroom/testkit`. @default the system clock */
  clock?: Clock;
}

const HOUR_MS = 3_600_000;

function canNotify(store: OutboxStore): boolean {
  return store.capabilities.notify && typeof store.subscribe === 'function';
}

/** The table of relay options; the CLI's relay flags take their bounds and defaults from it. */
export const relayOptionsSchema = optionsSchema<RelayOptions>()(
  'Relay',
  {
    store: custom(
      'an outbox store (PostgresStore, PGliteStore…)',
      hasMethods<OutboxStore>('claim', 'settle'),
      {
        required: true,
      },
    ),
    transport: custom('a transport (RabbitMqTransport, MemoryTransport…)', hasMethods<Transport>('publish'), {
      required: true,
    }),
    batchSize: integer({ min: 1, max: 10_000, default: 250 }),
    concurrency: integer({ min: 1, max: 64, default: 4 }),
    leaseMs: integer({ min: 1000, max: HOUR_MS, default: 10_000 }),
    source: custom(
      'a message source (PostgresLogSource…): an object with start, take and stop',
      hasMethods<MessageSource>('start', 'take', 'stop'),
    ),
    wakeup: oneOf(['notify', 'poll', 'replication'], {
      default: (o) =>
        o.source !== undefined ? 'replication' : canNotify(o.store as OutboxStore) ? 'notify' : 'poll',
    }),
    pollIntervalMs: integer({
      min: 10,
      max: HOUR_MS,
      default: (o) => (o.wakeup === 'notify' ? 1000 : o.wakeup === 'replication' ? 5000 : 250),
    }),
    idlePollMaxMs: integer({
      min: 10,
      max: HOUR_MS,
      default: (o) =>
        o.wakeup === 'poll' ? Math.max(2000, o.pollIntervalMs as number) : (o.pollIntervalMs as number),
    }),
    maxPerKey: integer({
      min: 1,
      max: 10_000,
      default: (o) => ((o.transport as Transport).ordering === true ? (o.batchSize as number) : 1),
    }),
    retry: retryPolicyField,
    publishTimeoutMs: integer({ min: 100, max: HOUR_MS, default: 30_000 }),
    probeMinDelayMs: integer({ min: 1, max: HOUR_MS, default: 500 }),
    probeMaxDelayMs: integer({ min: 1, max: HOUR_MS, default: 30_000 }),
    shutdownTimeoutMs: integer({ min: 0, max: HOUR_MS, default: 10_000 }),
    ackSweepIntervalMs: integer({ min: 100, max: HOUR_MS, default: 1000 }),
    ackRetentionMs: integer({ min: HOUR_MS, default: 7 * 24 * HOUR_MS }),
    // The dispatcher checks each of its options (and the secret) when the relay makes it.
    callbacks: custom(
      'an object of callback options with a secret: { secret: "whsec_…" }',
      (v): v is RelayCallbackOptions => typeof v === 'object' && v !== null && !Array.isArray(v),
    ),
    owner: string({ default: () => `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}` }),
    signal: custom('an AbortSignal', (v): v is AbortSignal => v instanceof AbortSignal),
    logger: custom(
      'a Logger (debug, info, warn, error)',
      hasMethods<Logger>('debug', 'info', 'warn', 'error'),
    ),
    clock: custom('a Clock (now, sleep, every)', hasMethods<Clock>('now', 'sleep', 'every'), {
      default: systemClock,
    }),
    // Last: the list of allowed keys in an unknown-option error keeps its order.
    metrics: custom(
      'an observer with an observe(relay) method, such as new RelayMetrics() from mailroom/metrics',
      hasMethods<RelayObserver>('observe'),
    ),
    tracing: custom(
      "true, false, or tracing options ({ tracerProvider, relation: 'parent' | 'link' })",
      (v): v is boolean | TracingOptions =>
        typeof v === 'boolean' || (typeof v === 'object' && v !== null && !Array.isArray(v)),
    ),
  },
  {
    ordered: [
      ['probeMinDelayMs', 'probeMaxDelayMs'],
      ['pollIntervalMs', 'idlePollMaxMs'],
    ],
  },
);

/** {@link RelayOptions} with every default applied; what the relay runs with. */
export type ResolvedRelayOptions = Omit<
  ResolvedOptions<typeof relayOptionsSchema.fields>,
  'store' | 'transport' | 'signal' | 'logger' | 'callbacks' | 'source' | 'metrics' | 'tracing'
>;

/** All relay defaults and checks, in one place: the schema above, and the rules across options. */
export function resolveRelayOptions(options: RelayOptions): ResolvedRelayOptions {
  const {
    store,
    transport,
    signal: _signal,
    logger: _logger,
    callbacks,
    source,
    metrics: _metrics,
    tracing: _tracing,
    ...resolved
  } = relayOptionsSchema.resolve(options);
  if (resolved.wakeup === 'replication' && source === undefined) {
    throw new ConfigError(
      'wakeup',
      "Relay option wakeup is 'replication', but no source was given: pass source: new PostgresLogSource({ … }) " +
        "from 'mailroom/replication' (the CLI does this for --wakeup replication)",
      { value: 'replication' },
    );
  }
  if (source !== undefined && resolved.wakeup !== 'replication') {
    throw new ConfigError(
      'wakeup',
      `Relay option wakeup is '${resolved.wakeup}', but a source was given; leave wakeup out (a source means 'replication')`,
      { value: resolved.wakeup },
    );
  }
  if (source !== undefined && typeof store.claimIds !== 'function') {
    throw new ConfigError(
      'source',
      `Relay option source: the ${store.name} store cannot lease named rows (no claimIds()); ` +
        'log tailing needs a store that has it (PostgresStore, schema version 9: run migrate)',
    );
  }
  if ((store as { tableless?: unknown }).tableless === true && resolved.wakeup !== 'replication') {
    throw new ConfigError(
      'wakeup',
      `Relay option wakeup is '${resolved.wakeup}', but the store is tableless: its messages are only in the ` +
        "database's log, which only wakeup 'replication' reads (source: new PostgresLogSource({ … }))",
      { value: resolved.wakeup },
    );
  }
  if (typeof transport.probe !== 'function') {
    throw new ConfigError(
      'transport',
      `Relay option transport: ${JSON.stringify(transport.name)} has no probe() method; transports written ` +
        'for Mailroom before 0.2 must add one (see the Transport port in the CHANGELOG)',
    );
  }
  if (resolved.maxPerKey > 1 && transport.ordering !== true) {
    throw new ConfigError(
      'maxPerKey',
      `Relay option maxPerKey is ${resolved.maxPerKey}, but the ${transport.name} transport does not keep a ` +
        "batch's order (transport.ordering), so a key's messages could reach the broker out of order; " +
        'leave maxPerKey out (1) for this transport',
      { value: resolved.maxPerKey },
    );
  }
  if (callbacks !== undefined && typeof store.claimCallbacks !== 'function') {
    throw new ConfigError(
      'callbacks',
      `Relay option callbacks: the ${store.name} store keeps no callbacks (no claimCallbacks()); ` +
        'remove the option, or use a store that has them (PostgresStore, PGliteStore)',
    );
  }
  if (resolved.wakeup === 'notify' && !canNotify(store)) {
    throw new ConfigError(
      'wakeup',
      `Relay option wakeup is 'notify', but the ${store.name} store cannot notify; use wakeup: 'poll'`,
      { value: 'notify' },
    );
  }
  return resolved;
}
