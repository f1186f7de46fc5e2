/**
 * Options of {@link WebhookConsumer}: the receiving side's secret and limits, how handlers run,
 * and the server it may start itself.
 *
 * @module
 */
import { secretField, type WebhookSecret } from '../../callbacks/webhook-secret.js';
import {
  integer,
  optionsSchema,
  string,
  type Field,
  type OptionPath,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import * as common from '../../consumer/consumer-options.js';

export type { ConsumerContext, ConsumerHandler, ConsumerInbox } from '../../consumer/consumer.js';

/**
 * Options of {@link WebhookConsumer}; `secret` and `handler` are required. With `inbox`, `Tx` is
 * its transaction type and the handler gets the transaction; without, `undefined`.
 */
export type WebhookConsumerOptions<Tx = undefined> = common.ConsumerOptionsOf<WebhookConsumerBaseOptions, Tx>;

/** Where {@link WebhookConsumer.start} makes its own HTTP server listen. */
export interface WebhookListenOptions {
  /** TCP port; `0` picks a free one (read it from `consumer.address`). */
  port: number;
  /**
   * Interface to bind. The default keeps the endpoint off the network; give `'0.0.0.0'` (or `'::'`)
   * to accept requests from other hosts.
   *
   * @default '127.0.0.1'
   */
  host?: string;
}

/** The options of {@link WebhookConsumer} besides `inbox` and `handler`. */
export interface WebhookConsumerBaseOptions {
  /**
   * The secret the sending `WebhookTransport` signs with (`whsec_…` or a plain string of 16+
   * bytes), or several during a key rotation: a signature made with any one is accepted.
   */
  secret: WebhookSecret;
  /**
   * Requests handled at once (a batch counts as one). One more, once verified, is answered 503
   * with `Retry-After`: the sender counts it as an outage of the endpoint (no attempt spent) and
   * pauses. Give at least the sender's `concurrency` (16 by default).
   *
   * @default 16
   */
  concurrency?: number;
  /**
   * Never run two messages of one key at once, and run them in the order their requests arrived:
   * a request whose key is being handled waits for it (up to `keyWaitMs`). Keyless messages are
   * not ordered.
   *
   * @default true
   */
  serialByKey?: boolean;
  /**
   * How long a request waits for the messages of its key ahead of it (with `serialByKey`); past
   * it, the request is answered 503 with `Retry-After` and the sender sends it again later. Keep
   * it below the sender's `timeoutMs` (10 s by default), or the sender gives up first.
   *
   * @default 5000
   */
  keyWaitMs?: number;
  /**
   * The `Retry-After` (seconds) of the 503s this consumer answers when it is busy, stopping or
   * not started: the sender sends nothing to the endpoint before then.
   *
   * @default 1
   */
  retryAfterSec?: number;
  /**
   * Largest difference between a request's `webhook-timestamp` and this server's clock, either
   * way, in seconds; outside it the request is refused (401) as a possible replay.
   *
   * @default 300
   */
  toleranceSec?: number;
  /** Largest request body; a larger one is answered 413. Match the sender's `maxBodyBytes`. @default 1048576 */
  maxBodyBytes?: number;
  /**
   * Start an HTTP server of the consumer's own on `start()` (closed by `stop()`), serving every
   * path. Without it, mount {@link WebhookConsumer.handler} in your own server.
   */
  listen?: WebhookListenOptions;
  /** How long `stop()` waits for requests being handled. @default 30000 */
  stopTimeoutMs?: number;
  /**
   * How often the consumer calls `inbox.prune()` while running, the first time right after
   * `start()`; `0` leaves pruning to you.
   *
   * @default 900000 (15 minutes)
   */
  pruneIntervalMs?: number;
  /** Receives handler failures (answered 500), refusals and lifecycle lines. @default silent */
  logger?: common.ConsumerCommonOptions['logger'];
}

const listenSchema = optionsSchema<WebhookListenOptions>()('WebhookConsumer', {
  port: integer({ min: 0, max: 65_535, required: true }),
  host: string({ expected: "a host name or address such as '127.0.0.1'", default: '127.0.0.1' }),
});

/** `listen`: absent, or an object resolved by its own schema under the key. */
const listenField: Field<ResolvedOptions<typeof listenSchema.fields> | undefined> = {
  expected: 'an object { port, host? }',
  resolve: (value: unknown, at: OptionPath) =>
    value === undefined ? undefined : listenSchema.resolve(value, at.path),
};

const consumerSchema = optionsSchema<common.ConsumerOptionKeys<WebhookConsumerBaseOptions>>()(
  'WebhookConsumer',
  {
    secret: secretField(),
    inbox: common.handlerFields.inbox,
    handler: common.handlerFields.handler,
    concurrency: integer({ min: 1, max: 10_000, default: 16 }),
    serialByKey: common.handlerFields.serialByKey,
    keyWaitMs: integer({ min: 0, max: 600_000, default: 5_000 }),
    retryAfterSec: integer({ min: 1, max: 86_400, default: 1 }),
    toleranceSec: integer({ min: 1, max: 86_400, default: 300 }),
    maxBodyBytes: integer({ min: 256, max: 2 ** 31 - 1, default: 1024 * 1024 }),
    listen: listenField,
    stopTimeoutMs: common.lifecycleFields.stopTimeoutMs,
    pruneIntervalMs: common.lifecycleFields.pruneIntervalMs,
    logger: common.loggerField,
  },
);

/** Options after defaults and validation; the secret as its keys. */
export type ResolvedWebhookConsumerOptions = Omit<
  ResolvedOptions<typeof consumerSchema.fields>,
  'handler' | 'inbox'
>;

/**
 * Applies defaults and validates; throws a `ConfigError` naming the option at fault. The
 * handler and inbox are checked here but kept by the caller, which knows their types.
 */
export function resolveWebhookConsumerOptions<Tx>(
  options: WebhookConsumerOptions<Tx>,
): ResolvedWebhookConsumerOptions {
  const { handler, inbox: _inbox, ...resolved } = consumerSchema.resolve(options);
  common.requireHandler('WebhookConsumer', handler);
  return resolved;
}
