import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { systemClock, type Clock } from '../core/clock.js';
import { ConfigError } from '../core/errors/config-error.js';
import type { Logger } from '../core/logger.js';
import { MAX_DELAY_MS } from '../core/message.js';
import {
  custom,
  func,
  hasMethods,
  integer,
  nested,
  number,
  oneOf,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../core/options-schema.js';
import type { CallbackPort } from '../core/ports.js';
import { secretField, type WebhookSecret } from './webhook-secret.js';

/** How failed callback POSTs are retried: exponential backoff with full jitter, capped. */
export interface CallbackRetryOptions {
  /**
   * Delay ceiling of the first retry, in ms; each later retry doubles it up to `maxDelayMs`.
   * @default 10000
   */
  baseDelayMs?: number;
  /** Largest delay between two attempts, in ms. @default 3600000 (1 hour) */
  maxDelayMs?: number;
  /**
   * `full`: a uniformly random delay between 0 and the ceiling (callbacks that failed together,
   * a receiver's outage, do not all come back at once). `none`: the ceiling itself. @default 'full'
   */
  jitter?: 'full' | 'none';
  /** Source of randomness in [0, 1). Tests inject one. @default Math.random */
  random?: () => number;
}

/** Options of {@link CallbackDispatcher}. */
export interface CallbackDispatcherOptions {
  /** Where callbacks wait: a store with `claimCallbacks`, `settleCallbacks`, `nextCallbackDueInMs`. */
  store: CallbackPort;
  /**
   * The signing secret receivers verify callbacks with: `whsec_<base64>` (the key is the decoded
   * bytes) or a plain string (the key is its UTF-8 bytes), at least 16 bytes. An array signs
   * with each, for a key rotation. Never logged.
   *
   * @example process.env.MAILROOM_CALLBACK_SECRET
   */
  secret: WebhookSecret;
  /** Name of this dispatcher on leased callbacks and in logs. @default `${hostname}:${pid}:${random}` */
  owner?: string;
  /** The fetch used to POST (tests and proxies pass their own). @default globalThis.fetch */
  fetch?: typeof fetch;
  /**
   * Deadline of one POST, from connecting to the end of the answer (of which the first 300 bytes
   * are read, for the error text); past it the attempt failed and is retried. At most 10
   * minutes. @default 10000
   */
  timeoutMs?: number;
  /** Attempts of one callback, the first included, before it is dead. @default 10 */
  maxAttempts?: number;
  /** Backoff between attempts. */
  retry?: CallbackRetryOptions;
  /** Most callbacks claimed at a time (never more than there are free POST slots). @default 50 */
  batchSize?: number;
  /** Most POSTs in flight at once, across receivers. @default 16 */
  concurrency?: number;
  /** How often to look for due callbacks when nothing woke the dispatcher. @default 1000 */
  pollIntervalMs?: number;
  /**
   * How long a claim holds its callbacks; a dispatcher that dies loses them after this long,
   * and another POSTs them again. Must exceed `timeoutMs`, since it is not extended while the
   * POSTs run. @default the larger of 30000 and 3 × timeoutMs
   */
  leaseMs?: number;
  /** How long `stop()` waits for POSTs in flight before it aborts them. @default 10000 */
  shutdownTimeoutMs?: number;
  /** Receives structured log lines (never the secret). @default silent */
  logger?: Logger;
  /** Source of time for every wait. @default the system clock */
  clock?: Clock;
  /** Stops the dispatcher when aborted. */
  signal?: AbortSignal;
}

const HOUR_MS = 3_600_000;
const OWNER = 'CallbackDispatcher';

const callbackRetrySchema = optionsSchema<CallbackRetryOptions>()(
  OWNER,
  {
    baseDelayMs: number({ min: 0, max: MAX_DELAY_MS, default: 10_000 }),
    maxDelayMs: number({ min: 0, max: MAX_DELAY_MS, default: HOUR_MS }),
    jitter: oneOf(['full', 'none'], { default: 'full' }),
    random: func<() => number>('a function returning a number in [0, 1)', { default: Math.random }),
  },
  { ordered: [['baseDelayMs', 'maxDelayMs']] },
);

/** The table of dispatcher options. */
export const callbackDispatcherOptionsSchema = optionsSchema<CallbackDispatcherOptions>()(OWNER, {
  store: custom(
    'a callback store (claimCallbacks, settleCallbacks, nextCallbackDueInMs)',
    hasMethods<CallbackPort>('claimCallbacks', 'settleCallbacks', 'nextCallbackDueInMs'),
    { required: true },
  ),
  secret: secretField(),
  owner: string({ default: () => `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}` }),
  fetch: func<typeof fetch>('a fetch function'),
  timeoutMs: integer({ min: 100, max: 600_000, default: 10_000 }),
  maxAttempts: integer({ min: 1, max: 1000, default: 10 }),
  retry: nested(callbackRetrySchema),
  batchSize: integer({ min: 1, max: 1000, default: 50 }),
  concurrency: integer({ min: 1, max: 256, default: 16 }),
  pollIntervalMs: integer({ min: 10, max: HOUR_MS, default: 1000 }),
  leaseMs: integer({
    min: 1000,
    max: HOUR_MS,
    default: (o) => Math.min(HOUR_MS, Math.max(30_000, 3 * (o.timeoutMs as number))),
  }),
  shutdownTimeoutMs: integer({ min: 0, max: HOUR_MS, default: 10_000 }),
  logger: custom('a Logger (debug, info, warn, error)', hasMethods<Logger>('debug', 'info', 'warn', 'error')),
  clock: custom('a Clock (now, sleep, every)', hasMethods<Clock>('now', 'sleep', 'every'), {
    default: systemClock,
  }),
  signal: custom('an AbortSignal', (v): v is AbortSignal => v instanceof AbortSignal),
});

type Resolved = ResolvedOptions<typeof callbackDispatcherOptionsSchema.fields>;

/** What the dispatcher runs with, as it shows it: without the store, keys, fetch, logger and signal. */
export type ResolvedCallbackDispatcherOptions = Omit<
  Resolved,
  'store' | 'secret' | 'fetch' | 'logger' | 'signal'
>;

/** Every option resolved, and the rules across options checked. */
export function resolveCallbackDispatcherOptions(options: CallbackDispatcherOptions): Resolved {
  const resolved = callbackDispatcherOptionsSchema.resolve(options);
  if (resolved.leaseMs <= resolved.timeoutMs) {
    throw new ConfigError(
      'leaseMs',
      `${OWNER} option leaseMs (${resolved.leaseMs}${options.leaseMs === undefined ? ', the default' : ''}) ` +
        `must exceed timeoutMs (${resolved.timeoutMs}): a claim's lease is not extended while its POSTs run, ` +
        'so a shorter one lets another dispatcher POST the same callbacks meanwhile; raise leaseMs or lower timeoutMs',
      { value: resolved.leaseMs, min: resolved.timeoutMs + 1 },
    );
  }
  return resolved;
}
