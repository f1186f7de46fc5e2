import type { ConnectionOptions } from 'node:tls';

import { ConfigError } from '../../core/errors/config-error.js';
import type { Logger } from '../../core/logger.js';
import { silentLogger } from '../../core/logger.js';
import {
  boolean,
  custom,
  func,
  hasMethods,
  integer,
  MAX_TIMER_MS,
  nested,
  number,
  oneOf,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import type {
  ConsumerContext,
  ConsumerHandler,
  ConsumerInbox,
  ConsumerRetryOptions,
} from '../../consumer/consumer.js';
import type { StompEndpoint } from './stomp-connection.js';
import { checkDestinationTemplate, resolveStompUrl } from './stomp-options.js';

export type { ConsumerContext, ConsumerHandler, ConsumerInbox, ConsumerRetryOptions };

/**
 * Options of {@link StompConsumer}; `url`, `destination` and `handler` are required. With `inbox`,
 * `Tx` is its transaction type and the handler gets the transaction; without, `undefined`.
 * `transacted: true` takes no inbox (see {@link StompConsumerBaseOptions.transacted}).
 */
export type StompConsumerOptions<Tx = undefined> =
  | (StompConsumerBaseOptions & {
      /** Records handled message ids in the handler's transaction: copies are acknowledged unrun. */
      inbox: ConsumerInbox<Tx>;
      /** Runs once per message id; write its effects with `tx`. */
      handler: ConsumerHandler<Tx>;
    })
  | (StompConsumerBaseOptions & {
      /** No inbox: the handler must be idempotent itself, or its only effects be `context.publish`. */
      inbox?: undefined;
      /** Runs for every delivery, copies included, with `tx` undefined. */
      handler: ConsumerHandler<undefined>;
    });

/** The options of {@link StompConsumer} besides `inbox` and `handler`. */
export interface StompConsumerBaseOptions {
  /**
   * Broker address, `stomp://` or `stomps://`, as the transport takes it. The password never
   * appears in errors or logs.
   *
   * @example 'stomp://billing:s3cret@rabbit.internal:61613'
   */
  url: string;
  /**
   * What to consume: the destination the relay's transport sends to (its template with the
   * topic filled in), shared by every instance of the service.
   *
   * @example '/queue/order.created'
   */
  destination: string;
  /**
   * Where messages go that failed `retry.maxAttempts` times or cannot be decoded (a SEND with a
   * receipt, then the original is acknowledged).
   *
   * @default `${destination}.dead`
   */
  deadLetterDestination?: string;
  /**
   * Transacted receive: the handler's `context.publish(messages)` sends in a STOMP transaction that
   * also acknowledges the message being handled, committed (COMMIT with a receipt) after the
   * handler returned, aborted when it throws. A crash before the commit leaves the input
   * unacknowledged (the broker redelivers it) and discards the outputs; after it, the input is
   * gone and the outputs are there, once. Takes no `inbox`: the database transaction and the
   * broker transaction cannot commit as one, and whichever commits first could be left alone by a
   * crash (enqueue the outputs with the outbox in the inbox transaction instead).
   *
   * @default false
   */
  transacted?: boolean;
  /**
   * Where `context.publish` sends, from a message's topic, as the transport's `destination`.
   *
   * @default '/queue/{topic}'
   */
  publishDestination?: string;
  /** Handlers running at once (a key's messages still one at a time with `serialByKey`). @default 1 */
  concurrency?: number;
  /**
   * Unacknowledged messages the broker hands over (`prefetch-count` for RabbitMQ,
   * `activemq.prefetchSize` for ActiveMQ), at least `concurrency`.
   *
   * @default 2 × concurrency
   */
  prefetch?: number;
  /** Run a key's messages one at a time, in arrival order, retries included. @default true */
  serialByKey?: boolean;
  /** Retries of a failing handler, then the dead-letter destination. */
  retry?: ConsumerRetryOptions;
  /** How long `stop()` waits for handlers running. @default 30000 */
  stopTimeoutMs?: number;
  /** How often `inbox.prune()` runs, the first time right after `start()`; `0` disables. @default 900000 */
  pruneIntervalMs?: number;
  /** Limit for connecting, logging in and subscribing. @default 10000 */
  connectTimeoutMs?: number;
  /** Heart-beat interval offered both ways, in ms; `0` disables. @default 10000 */
  heartbeatMs?: number;
  /** How long to wait for the RECEIPT of a COMMIT or of a dead letter. @default 30000 */
  receiptTimeoutMs?: number;
  /** Largest frame accepted from the broker; a bigger one ends the connection. @default 67108864 (64 MiB) */
  maxMessageBytes?: number;
  /** TLS options for `stomps://`. @default {} */
  tls?: ConnectionOptions;
  /** Delay before the second reconnect attempt; doubles per failed attempt, jittered. @default 100 */
  reconnectDelayMs?: number;
  /** Upper bound of the reconnect delay. @default 30000 */
  maxReconnectDelayMs?: number;
  logger?: Logger;
}

const retrySchema = optionsSchema<ConsumerRetryOptions>()(
  'StompConsumer',
  {
    maxAttempts: integer({ min: 1, max: 1000, default: 8 }),
    baseDelayMs: number({ min: 0, max: MAX_TIMER_MS, default: 500 }),
    maxDelayMs: number({ min: 0, max: MAX_TIMER_MS, default: 30_000 }),
    jitter: oneOf(['full', 'none'], { default: 'full' }),
    random: func<() => number>('a function returning a number in [0, 1)', { default: Math.random }),
  },
  { ordered: [['baseDelayMs', 'maxDelayMs']] },
);

interface ConsumerOptionKeys extends StompConsumerBaseOptions {
  inbox?: unknown;
  handler: unknown;
}

// eslint-disable-next-line no-control-regex -- control characters are what it refuses
const DESTINATION_RE = /^\/(queue|topic|exchange|amq\/queue)\/[^\u0000-\u001f\u007f]+$/;
const DESTINATION_EXPECTED =
  "a destination such as '/queue/orders' (/queue/, /topic/, /exchange/ or /amq/queue/)";

const consumerSchema = optionsSchema<ConsumerOptionKeys>()(
  'StompConsumer',
  {
    url: string({ expected: 'a stomp:// or stomps:// URL string', secret: true, required: true }),
    destination: string({ pattern: DESTINATION_RE, expected: DESTINATION_EXPECTED, required: true }),
    deadLetterDestination: string({
      pattern: DESTINATION_RE,
      expected: DESTINATION_EXPECTED,
      default: (r) => `${r['destination'] as string}.dead`,
    }),
    transacted: boolean({ default: false }),
    publishDestination: string({
      expected: "a destination template such as '/queue/{topic}'",
      default: '/queue/{topic}',
    }),
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
    retry: nested(retrySchema),
    stopTimeoutMs: integer({ min: 0, max: MAX_TIMER_MS, default: 30_000 }),
    pruneIntervalMs: integer({ min: 0, max: MAX_TIMER_MS, default: 900_000 }),
    connectTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
    heartbeatMs: integer({ min: 0, max: 3_600_000, default: 10_000 }),
    receiptTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
    maxMessageBytes: integer({ min: 1024, max: 2 ** 31 - 1, default: 64 * 1024 * 1024 }),
    tls: custom(
      'an object of TLS options',
      (v): v is ConnectionOptions => typeof v === 'object' && v !== null && !Array.isArray(v),
      { default: () => ({}) },
    ),
    reconnectDelayMs: integer({ min: 0, max: MAX_TIMER_MS, default: 100 }),
    maxReconnectDelayMs: integer({ min: 0, max: MAX_TIMER_MS, default: 30_000 }),
    logger: custom(
      'a logger (debug, info, warn, error)',
      hasMethods<Logger>('debug', 'info', 'warn', 'error'),
      {
        default: silentLogger,
      },
    ),
  },
  {
    ordered: [
      ['concurrency', 'prefetch'],
      ['reconnectDelayMs', 'maxReconnectDelayMs'],
    ],
  },
);

/** Options after defaults and validation. */
export interface ResolvedStompConsumerOptions extends Omit<
  ResolvedOptions<typeof consumerSchema.fields>,
  'handler' | 'inbox' | 'url'
> {
  endpoint: StompEndpoint;
}

/**
 * Applies defaults and validates; throws a {@link ConfigError} naming the option at fault. The
 * handler and inbox are checked here but kept by the caller, which knows their types.
 */
export function resolveStompConsumerOptions<Tx>(
  options: StompConsumerOptions<Tx>,
): ResolvedStompConsumerOptions {
  const { handler, inbox, url, ...resolved } = consumerSchema.resolve(options);
  if (handler === undefined) {
    throw new ConfigError(
      'handler',
      'StompConsumer option handler is missing; give an async function (message, tx, context) => …',
    );
  }
  if (resolved.deadLetterDestination === resolved.destination) {
    throw new ConfigError(
      'deadLetterDestination',
      `StompConsumer option deadLetterDestination must differ from destination (${JSON.stringify(resolved.destination)}): ` +
        'dead letters put back where they failed would fail again forever',
      { value: resolved.deadLetterDestination },
    );
  }
  if (resolved.transacted && inbox !== undefined) {
    throw new ConfigError(
      'transacted',
      'StompConsumer option transacted cannot be used with an inbox: the inbox commits in the database and the ' +
        'transacted receive in the broker, and a crash between the two commits would either lose the outputs (the ' +
        'copy redelivered is a duplicate, and is not handled again) or the effects; with an inbox, enqueue the ' +
        'outputs through the outbox in the inbox transaction (outbox.enqueue(tx, …)) instead of context.publish',
    );
  }
  checkDestinationTemplate(resolved.publishDestination, 'StompConsumer', 'publishDestination');
  return { ...resolved, endpoint: resolveStompUrl(url, 'StompConsumer') };
}
