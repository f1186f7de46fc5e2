import { MAX_DELAY_MS } from './message.js';
import {
  func,
  integer,
  nested,
  number,
  oneOf,
  optionsSchema,
  type ResolvedOptions,
} from './options-schema.js';

/** How failed deliveries are retried. */
export interface RetryPolicyOptions {
  /**
   * Delay ceiling of the first retry, in ms, at most `maxDelayMs`. Each later attempt doubles it.
   * @default 1000
   */
  baseDelayMs?: number;
  /** Largest delay between two attempts, in ms, at most 365 days. @default 300000 (5 minutes) */
  maxDelayMs?: number;
  /**
   * Attempts before a message becomes a dead letter, the first delivery included.
   * @default 12
   */
  maxAttempts?: number;
  /**
   * `full`: a uniformly random delay between 0 and the ceiling (spreads retries of many failed
   * messages over time, so a recovering broker is not hit by all of them at once). `none`: the
   * ceiling itself, for predictable schedules. @default 'full'
   */
  jitter?: 'full' | 'none';
  /** Source of randomness in [0, 1). Tests inject one. @default Math.random */
  random?: () => number;
}

const retryPolicySchema = optionsSchema<RetryPolicyOptions>()(
  'Relay',
  {
    // At most 365 days, as `delayMs`: a delay goes to the database as bigint milliseconds added
    // to now(), where an unbounded one would run past the last timestamp and fail the settle.
    baseDelayMs: number({ min: 0, max: MAX_DELAY_MS, default: 1000 }),
    maxDelayMs: number({ min: 0, max: MAX_DELAY_MS, default: 300_000 }),
    maxAttempts: integer({ min: 1, default: 12 }),
    jitter: oneOf(['full', 'none'], { default: 'full' }),
    random: func<() => number>('a function returning a number in [0, 1)', { default: Math.random }),
  },
  // A first delay above the largest one would be cut to the largest at once: a mistake (the two
  // values swapped, or milliseconds given as seconds), not a schedule anyone means.
  { ordered: [['baseDelayMs', 'maxDelayMs']] },
);

/** {@link RetryPolicyOptions} with every default applied. */
export type ResolvedRetryPolicy = ResolvedOptions<typeof retryPolicySchema.fields>;

/** Retry options resolved and checked, as under the relay's `retry` key (errors name `retry.…`). */
export function resolveRetryPolicy(options: RetryPolicyOptions = {}): ResolvedRetryPolicy {
  return retryPolicySchema.resolve(options, 'retry');
}

/** The schema, for the relay's `retry` option. */
export const retryPolicyField = nested(retryPolicySchema);

/**
 * Delay before the next attempt after `attempt` attempts failed (1 for the first failure):
 * exponential backoff `min(maxDelayMs, baseDelayMs * 2^(attempt-1))`, with full jitter.
 */
export function retryDelayMs(policy: ResolvedRetryPolicy, attempt: number): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return policy.jitter === 'full' ? Math.floor(policy.random() * exp) : exp;
}
