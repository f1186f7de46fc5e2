/**
 * The options every Mailroom consumer takes, whatever the broker: their types, their schema
 * fields (ranges, defaults, messages) and the checks made after resolving. A transport's consumer
 * declares its broker's own options and puts these fields in its schema, in its own order (the
 * order options are resolved and listed in errors).
 *
 * @module
 */
import { ConfigError } from '../core/errors/config-error.js';
import type { Logger } from '../core/logger.js';
import { silentLogger } from '../core/logger.js';
import {
  boolean,
  custom,
  func,
  hasMethods,
  integer,
  MAX_TIMER_MS,
  number,
  oneOf,
  optionsSchema,
} from '../core/options-schema.js';
import type { ConsumerHandler, ConsumerInbox, ConsumerRetryOptions } from './consumer.js';

/**
 * A consumer's options from its broker's own (`Base`): with `inbox`, `Tx` is its transaction type
 * and the handler gets the transaction; without, the handler gets `undefined`.
 */
export type ConsumerOptionsOf<Base, Tx> =
  | (Base & {
      /**
       * Where handled message ids are recorded, in the handler's transaction: a copy of a
       * message already processed is acknowledged to the broker without running the handler.
       */
      inbox: ConsumerInbox<Tx>;
      /** Runs once per message id; write its effects with `tx`. */
      handler: ConsumerHandler<Tx>;
    })
  | (Base & {
      /** No inbox: the handler must be idempotent itself (as `AckReceiver` is). */
      inbox?: undefined;
      /** Runs for every delivery, copies included, with `tx` undefined. */
      handler: ConsumerHandler<undefined>;
    });

/** Every key of a consumer's options, as its schema checks them; `inbox` and `handler` are typed by the caller. */
export type ConsumerOptionKeys<Base> = Base & { inbox?: unknown; handler: unknown };

/** The options every consumer has besides `inbox`, `handler` and its broker's own. */
export interface ConsumerCommonOptions {
  /** Handlers running at once (a key's messages still one at a time with `serialByKey`). @default 1 */
  concurrency?: number;
  /**
   * Messages the broker hands over before they are acknowledged, at least `concurrency`:
   * messages waiting behind a busy key or a retry hold one each.
   *
   * @default 2 × concurrency
   */
  prefetch?: number;
  /**
   * Never run two messages of one key at once, and run them in the order they arrived, also
   * while one waits to be retried: the sender's per-key order holds on the receiving side too.
   * Keyless messages are not ordered.
   *
   * @default true
   */
  serialByKey?: boolean;
  /** Retries of a failing handler, then the dead letters. */
  retry?: ConsumerRetryOptions;
  /** How long `stop()` waits for handlers running. @default 30000 */
  stopTimeoutMs?: number;
  /**
   * How often the consumer calls `inbox.prune()` while running, the first time right after
   * `start()`; `0` leaves pruning to you. Several consumers of one inbox may all prune: each
   * batch deletes different rows or none.
   *
   * @default 900000 (15 minutes)
   */
  pruneIntervalMs?: number;
  /** Limit for connecting and setting up what is consumed. @default 10000 */
  connectTimeoutMs?: number;
  /**
   * Delay before the second reconnect attempt after the connection was lost (the first is
   * immediate); doubled per failed attempt up to `maxReconnectDelayMs`, jittered.
   *
   * @default 100
   */
  reconnectDelayMs?: number;
  /** Upper bound of the reconnect delay. @default 30000 */
  maxReconnectDelayMs?: number;
  logger?: Logger;
}

/** The schema of `retry`, its messages naming `owner` (the consumer's class). */
export function retryOptionsSchema(owner: string) {
  return optionsSchema<ConsumerRetryOptions>()(
    owner,
    {
      maxAttempts: integer({ min: 1, max: 1000, default: 8 }),
      baseDelayMs: number({ min: 0, max: MAX_TIMER_MS, default: 500 }),
      maxDelayMs: number({ min: 0, max: MAX_TIMER_MS, default: 30_000 }),
      jitter: oneOf(['full', 'none'], { default: 'full' }),
      random: func<() => number>('a function returning a number in [0, 1)', { default: Math.random }),
    },
    { ordered: [['baseDelayMs', 'maxDelayMs']] },
  );
}

/** `inbox`, `handler` and how handlers run: `concurrency`, `prefetch`, `serialByKey`. */
export const handlerFields = {
  inbox: custom(
    'an Inbox (an object with handle(message, handler))',
    hasMethods<ConsumerInbox<unknown>>('handle'),
  ),
  handler: func<ConsumerHandler<never>>('an async function (message, tx, context) => …'),
  concurrency: integer({ min: 1, max: 10_000, default: 1 }),
  prefetch: integer({
    min: 1,
    max: 65_535,
    default: (r) => Math.min(65_535, 2 * (r['concurrency'] as number)),
  }),
  serialByKey: boolean({ default: true }),
};

/** `stop()`'s deadline, the inbox's pruning and the connect limit. */
export const lifecycleFields = {
  stopTimeoutMs: integer({ min: 0, max: MAX_TIMER_MS, default: 30_000 }),
  pruneIntervalMs: integer({ min: 0, max: MAX_TIMER_MS, default: 900_000 }),
  connectTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
};

/** The reconnect backoff. */
export const reconnectFields = {
  reconnectDelayMs: integer({ min: 0, max: MAX_TIMER_MS, default: 100 }),
  maxReconnectDelayMs: integer({ min: 0, max: MAX_TIMER_MS, default: 30_000 }),
};

export const loggerField = custom(
  'a logger (debug, info, warn, error)',
  hasMethods<Logger>('debug', 'info', 'warn', 'error'),
  { default: silentLogger },
);

/** The pairs of options where the first may not exceed the second. */
export const consumerOrderedOptions = [
  ['concurrency', 'prefetch'],
  ['reconnectDelayMs', 'maxReconnectDelayMs'],
] as const;

/** Throws the ConfigError of a consumer made without a handler. */
export function requireHandler(owner: string, handler: unknown): void {
  if (handler !== undefined) return;
  throw new ConfigError(
    'handler',
    `${owner} option handler is missing; give an async function (message, tx, context) => …`,
  );
}

/** Throws when dead letters would go back where they failed. */
export function requireDistinctDeadLetters(
  owner: string,
  names: { option: string; value: string; source: string; sourceValue: string; where: string },
): void {
  if (names.value !== names.sourceValue) return;
  throw new ConfigError(
    names.option,
    `${owner} option ${names.option} must differ from ${names.source} (${JSON.stringify(names.sourceValue)}): ` +
      `dead letters put back ${names.where} would fail again forever`,
    { value: names.value },
  );
}
