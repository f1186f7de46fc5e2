import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { systemClock, type Clock } from './clock.js';
import { ConfigError } from './errors/config-error.js';
import type { Logger } from './logger.js';
import type { OutboxStore, Transport } from './ports.js';
import { resolveRetryPolicy, type ResolvedRetryPolicy, type RetryPolicyOptions } from './retry-policy.js';

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
   * as a backstop. `poll`: poll only. @default 'notify' when the store supports it
   */
  wakeup?: 'notify' | 'poll';
  /** Poll interval, the backstop in `notify` mode. @default 1000 (notify), 250 (poll) */
  pollIntervalMs?: number;
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
  /** Name of this relay on leased rows and in logs. @default `${hostname}:${pid}:${random}` */
  owner?: string;
  /** Stops the relay when aborted. */
  signal?: AbortSignal;
  /** Receives structured log lines. @default silent */
  logger?: Logger;
  /** Source of time for every wait; tests pass a `ManualClock` from `mailroom/testkit`. @default the system clock */
  clock?: Clock;
}

export interface ResolvedRelayOptions {
  batchSize: number;
  concurrency: number;
  leaseMs: number;
  wakeup: 'notify' | 'poll';
  pollIntervalMs: number;
  retry: ResolvedRetryPolicy;
  publishTimeoutMs: number;
  probeMinDelayMs: number;
  probeMaxDelayMs: number;
  shutdownTimeoutMs: number;
  owner: string;
  clock: Clock;
}

const ALLOWED_OPTIONS = new Set([
  'store',
  'transport',
  'batchSize',
  'concurrency',
  'leaseMs',
  'wakeup',
  'pollIntervalMs',
  'retry',
  'publishTimeoutMs',
  'probeMinDelayMs',
  'probeMaxDelayMs',
  'shutdownTimeoutMs',
  'owner',
  'signal',
  'logger',
  'clock',
]);

function int(key: string, value: number | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(key, `${key} must be an integer from ${min} to ${max}, got ${String(value)}`, {
      value,
    });
  }
  return value;
}

/** All relay defaults, in one place. */
export function resolveRelayOptions(options: RelayOptions): ResolvedRelayOptions {
  for (const key of Object.keys(options)) {
    if (!ALLOWED_OPTIONS.has(key)) {
      throw new ConfigError(
        key,
        `unknown relay option "${key}"; allowed: ${[...ALLOWED_OPTIONS].join(', ')}`,
      );
    }
  }
  if (!options.store) throw new ConfigError('store', 'a relay needs a store');
  if (!options.transport) throw new ConfigError('transport', 'a relay needs a transport');
  if (typeof options.transport.probe !== 'function') {
    throw new ConfigError(
      'transport',
      `transport ${JSON.stringify(options.transport.name)} has no probe() method; transports written ` +
        'for Mailroom before 0.2 must add one (see the Transport port in the CHANGELOG)',
    );
  }
  const canNotify = options.store.capabilities.notify && typeof options.store.subscribe === 'function';
  const wakeup = options.wakeup ?? (canNotify ? 'notify' : 'poll');
  if (wakeup !== 'notify' && wakeup !== 'poll') {
    throw new ConfigError('wakeup', `wakeup must be 'notify' or 'poll', got ${JSON.stringify(wakeup)}`);
  }
  if (wakeup === 'notify' && !canNotify) {
    throw new ConfigError('wakeup', `the ${options.store.name} store cannot notify; use wakeup: 'poll'`);
  }
  const leaseMs = int('leaseMs', options.leaseMs, 10_000, 1000, 3_600_000);
  const probeMinDelayMs = int('probeMinDelayMs', options.probeMinDelayMs, 500, 1, 3_600_000);
  const probeMaxDelayMs = int('probeMaxDelayMs', options.probeMaxDelayMs, 30_000, 1, 3_600_000);
  if (probeMaxDelayMs < probeMinDelayMs) {
    throw new ConfigError(
      'probeMaxDelayMs',
      `probeMaxDelayMs (${probeMaxDelayMs}) must not be less than probeMinDelayMs (${probeMinDelayMs})`,
    );
  }
  return {
    batchSize: int('batchSize', options.batchSize, 250, 1, 10_000),
    concurrency: int('concurrency', options.concurrency, 4, 1, 64),
    leaseMs,
    wakeup,
    pollIntervalMs: int(
      'pollIntervalMs',
      options.pollIntervalMs,
      wakeup === 'notify' ? 1000 : 250,
      10,
      3_600_000,
    ),
    retry: resolveRetryPolicy(options.retry),
    publishTimeoutMs: int('publishTimeoutMs', options.publishTimeoutMs, 30_000, 100, 3_600_000),
    probeMinDelayMs,
    probeMaxDelayMs,
    shutdownTimeoutMs: int('shutdownTimeoutMs', options.shutdownTimeoutMs, 10_000, 0, 3_600_000),
    owner: options.owner ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`,
    clock: options.clock ?? systemClock,
  };
}
