import { ConfigError } from './errors/config-error.js';

/** How failed deliveries are retried. */
export interface RetryPolicyOptions {
  /** Delay ceiling of the first retry, in ms. Each later attempt doubles it. @default 1000 */
  baseDelayMs?: number;
  /** Largest delay between two attempts, in ms. @default 300000 (5 minutes) */
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

export interface ResolvedRetryPolicy {
  baseDelayMs: number;
  maxDelayMs: number;
  maxAttempts: number;
  jitter: 'full' | 'none';
  random: () => number;
}

function positive(key: string, value: number | undefined, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new ConfigError(key, `${key} must be a number >= ${min}, got ${String(value)}`, { value });
  }
  return value;
}

export function resolveRetryPolicy(options: RetryPolicyOptions = {}): ResolvedRetryPolicy {
  const allowed = ['baseDelayMs', 'maxDelayMs', 'maxAttempts', 'jitter', 'random'];
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) {
      throw new ConfigError(`retry.${key}`, `unknown retry option "${key}"; allowed: ${allowed.join(', ')}`);
    }
  }
  const jitter = options.jitter ?? 'full';
  if (jitter !== 'full' && jitter !== 'none') {
    throw new ConfigError('retry.jitter', `retry.jitter must be 'full' or 'none', got ${String(jitter)}`);
  }
  const maxAttempts = positive('retry.maxAttempts', options.maxAttempts, 12, 1);
  if (!Number.isInteger(maxAttempts)) {
    throw new ConfigError('retry.maxAttempts', `retry.maxAttempts must be an integer, got ${maxAttempts}`);
  }
  return {
    baseDelayMs: positive('retry.baseDelayMs', options.baseDelayMs, 1000),
    maxDelayMs: positive('retry.maxDelayMs', options.maxDelayMs, 300_000),
    maxAttempts,
    jitter,
    random: options.random ?? Math.random,
  };
}

/**
 * Delay before the next attempt after `attempt` attempts failed (1 for the first failure):
 * exponential backoff `min(maxDelayMs, baseDelayMs * 2^(attempt-1))`, with full jitter.
 */
export function retryDelayMs(policy: ResolvedRetryPolicy, attempt: number): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return policy.jitter === 'full' ? Math.floor(policy.random() * exp) : exp;
}
