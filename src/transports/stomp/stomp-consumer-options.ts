import type { ConnectionOptions } from 'node:tls';

import { ConfigError } from '../../core/errors/config-error.js';
import {
  boolean,
  custom,
  integer,
  MAX_TIMER_MS,
  nested,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import * as common from '../../consumer/consumer-options.js';
import type { StompEndpoint } from './stomp-connection.js';
import { checkDestinationTemplate, resolveStompUrl } from './stomp-options.js';

export type {
  ConsumerContext,
  ConsumerHandler,
  ConsumerInbox,
  ConsumerRetryOptions,
} from '../../consumer/consumer.js';

/**
 * Options of {@link StompConsumer}; `url`, `destination` and `handler` are required. With `inbox`,
 * `Tx` is its transaction type and the handler gets the transaction; without, `undefined`.
 * `transacted: true` takes no inbox (see {@link StompConsumerBaseOptions.transacted}).
 */
export type StompConsumerOptions<Tx = undefined> = common.ConsumerOptionsOf<StompConsumerBaseOptions, Tx>;

/** The options of {@link StompConsumer} besides `inbox` and `handler`. */
export interface StompConsumerBaseOptions extends common.ConsumerCommonOptions {
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
  /**
   * Unacknowledged messages the broker hands over (`prefetch-count` for RabbitMQ,
   * `activemq.prefetchSize` for ActiveMQ), at least `concurrency`.
   *
   * @default 2 × concurrency
   */
  prefetch?: number;
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
}

// eslint-disable-next-line no-control-regex -- control characters are what it refuses
const DESTINATION_RE = /^\/(queue|topic|exchange|amq\/queue)\/[^\u0000-\u001f\u007f]+$/;
const DESTINATION_EXPECTED =
  "a destination such as '/queue/orders' (/queue/, /topic/, /exchange/ or /amq/queue/)";

const consumerSchema = optionsSchema<common.ConsumerOptionKeys<StompConsumerBaseOptions>>()(
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
    ...common.handlerFields,
    retry: nested(common.retryOptionsSchema('StompConsumer')),
    ...common.lifecycleFields,
    heartbeatMs: integer({ min: 0, max: 3_600_000, default: 10_000 }),
    receiptTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
    maxMessageBytes: integer({ min: 1024, max: 2 ** 31 - 1, default: 64 * 1024 * 1024 }),
    tls: custom(
      'an object of TLS options',
      (v): v is ConnectionOptions => typeof v === 'object' && v !== null && !Array.isArray(v),
      { default: () => ({}) },
    ),
    ...common.reconnectFields,
    logger: common.loggerField,
  },
  { ordered: common.consumerOrderedOptions },
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
  common.requireHandler('StompConsumer', handler);
  common.requireDistinctDeadLetters('StompConsumer', {
    option: 'deadLetterDestination',
    value: resolved.deadLetterDestination,
    source: 'destination',
    sourceValue: resolved.destination,
    where: 'where they failed',
  });
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
