/**
 * Options of {@link SqsConsumer}: the queue, its dead letters, long polling and visibility, and
 * the options every Mailroom consumer takes.
 *
 * @module
 */
import { ConfigError } from '../../core/errors/config-error.js';
import {
  custom,
  integer,
  MAX_TIMER_MS,
  nested,
  oneOf,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import { redactUrl } from '../../core/redact.js';
import * as common from '../../consumer/consumer-options.js';
import type { AwsClientLike } from './aws-client.js';
import { resolveAwsUrl } from './aws-options.js';

export type {
  ConsumerContext,
  ConsumerHandler,
  ConsumerInbox,
  ConsumerRetryOptions,
} from '../../consumer/consumer.js';

/**
 * Options of {@link SqsConsumer}; `url` and `handler` are required. With `inbox`, `Tx` is its
 * transaction type and the handler gets the transaction; without, `undefined`.
 */
export type SqsConsumerOptions<Tx = undefined> = common.ConsumerOptionsOf<SqsConsumerBaseOptions, Tx>;

/** The options of {@link SqsConsumer} besides `inbox` and `handler`. */
export interface SqsConsumerBaseOptions extends common.ConsumerCommonOptions {
  /**
   * The queue consumed: `sqs://[region]/[account-id/]queue-name` as the transport takes it (without
   * `{topic}`: one consumer reads one queue), or the queue's URL as AWS gives it
   * (`https://sqs.eu-west-1.amazonaws.com/123456789012/orders`). A name ending in `.fifo` is a
   * FIFO queue.
   *
   * @example 'sqs://eu-west-1/orders.fifo'
   */
  url: string;
  /** Overrides the URL's region. @example 'eu-west-1' */
  region?: string;
  /**
   * Where the SDK sends requests (LocalStack, ElasticMQ, a VPC endpoint). Without it the SDK
   * reads `AWS_ENDPOINT_URL_SQS`, then `AWS_ENDPOINT_URL`, then uses AWS's regional endpoint.
   * Ignored when a `client` is given.
   */
  endpoint?: string;
  /**
   * An `SQSClient` (or anything with the same `send`) to use instead of one the consumer builds.
   * The consumer never destroys a client it was given.
   */
  client?: AwsClientLike;
  /**
   * Where messages go that failed `retry.maxAttempts` times or cannot be decoded.
   * - `queue`: the consumer sends them to `deadLetterQueueUrl` (`SendMessage`, confirmed) and
   *   only then deletes them from the queue.
   * - `redrive`: the queue's own `RedrivePolicy` moves them: the consumer makes the message visible
   *   again at once and lets SQS count its receives up to `maxReceiveCount`. The queue must have a
   *   redrive policy (start() checks).
   * - `auto`: `queue` when `deadLetterQueueUrl` is given; else `redrive` when the queue has a
   *   redrive policy (read with `GetQueueAttributes` at start), else `queue`.
   *
   * @default 'auto'
   */
  deadLetters?: 'auto' | 'queue' | 'redrive';
  /**
   * The dead-letter queue for `deadLetters: 'queue'`, in the same forms as `url`. A FIFO queue's
   * dead-letter queue is FIFO too.
   *
   * @default the queue's name with `-dead` (before `.fifo`), in its region and account
   */
  deadLetterQueueUrl?: string;
  /**
   * Messages received and not yet deleted, at least `concurrency`: `ReceiveMessage` asks for at
   * most 10, and for no more than leaves this many in hand.
   *
   * @default 2 × concurrency
   */
  prefetch?: number;
  /** Long polling: how long one `ReceiveMessage` waits for messages, in seconds (1 to 20). @default 20 */
  waitTimeSeconds?: number;
  /**
   * The visibility timeout asked for on receive, in seconds: how long a message stays hidden from
   * other consumers. While the consumer holds it (queued, running, waiting for a retry) it
   * extends it every third of this time (`ChangeMessageVisibility`), so a handler may run longer;
   * a consumer that dies lets it come back after at most this long.
   *
   * @default 30
   */
  visibilityTimeoutSeconds?: number;
  /**
   * Limit of each call besides the long poll (delete, visibility, dead letter); a long poll may
   * take `waitTimeSeconds` more.
   *
   * @default 30000
   */
  requestTimeoutMs?: number;
  /** Limit for the calls of start() and of each reconnect (`GetQueueUrl`, `GetQueueAttributes`). @default 10000 */
  connectTimeoutMs?: number;
}

/** A queue as an option names it: by name (looked up with `GetQueueUrl`) or by its URL. */
export type QueueRef =
  | { kind: 'name'; name: string; region: string | undefined; account: string | undefined; safe: string }
  | { kind: 'url'; name: string; url: string; safe: string };

const isClient = (value: unknown): value is AwsClientLike =>
  typeof value === 'object' && value !== null && typeof (value as { send?: unknown }).send === 'function';

const QUEUE_EXPECTED =
  'an sqs://[region]/[account-id/]queue-name URL or a queue URL (https://…/account/name)';

const consumerSchema = optionsSchema<common.ConsumerOptionKeys<SqsConsumerBaseOptions>>()(
  'SqsConsumer',
  {
    url: string({ expected: QUEUE_EXPECTED, required: true }),
    region: string({ pattern: /^[a-z]{2}(-[a-z0-9]+)+-\d+$/, expected: "an AWS region such as 'eu-west-1'" }),
    endpoint: string({
      pattern: /^https?:\/\/[^\s]+$/i,
      expected: 'an http:// or https:// URL',
      secret: true,
    }),
    client: custom('an SDK client with send()', isClient),
    deadLetters: oneOf(['auto', 'queue', 'redrive'], { default: 'auto' }),
    deadLetterQueueUrl: string({ expected: QUEUE_EXPECTED }),
    ...common.handlerFields,
    retry: nested(common.retryOptionsSchema('SqsConsumer')),
    ...common.lifecycleFields,
    waitTimeSeconds: integer({ min: 1, max: 20, default: 20 }),
    visibilityTimeoutSeconds: integer({ min: 1, max: 43_200, default: 30 }),
    requestTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
    ...common.reconnectFields,
    logger: common.loggerField,
  },
  { ordered: common.consumerOrderedOptions },
);

/** Options after defaults and validation. */
export interface ResolvedSqsConsumerOptions extends Omit<
  ResolvedOptions<typeof consumerSchema.fields>,
  'handler' | 'inbox' | 'url' | 'deadLetterQueueUrl'
> {
  queue: QueueRef;
  /** The dead-letter queue for `queue` mode (also kept in `auto`, used when there is no redrive policy). */
  deadLetterQueue: QueueRef;
  /** True: the queue's name ends in `.fifo`. */
  fifo: boolean;
  /** The redacted `url`, for messages. */
  safeUrl: string;
}

/** Reads a queue option: an `sqs://` URL (without `{topic}`) or a queue URL. */
export function resolveQueueRef(value: string, option: string, region: string | undefined): QueueRef {
  const safe = redactUrl(value);
  if (/^https?:\/\//i.test(value)) {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw new ConfigError(option, `SqsConsumer option ${option} ${JSON.stringify(safe)} is not a URL`, {
        value: safe,
      });
    }
    const name =
      url.pathname
        .split('/')
        .filter((s) => s !== '')
        .at(-1) ?? '';
    if (url.username !== '' || url.password !== '' || !/^[A-Za-z0-9_-]{1,75}(\.fifo)?$/.test(name)) {
      throw new ConfigError(
        option,
        `SqsConsumer option ${option} ${JSON.stringify(safe)} is not a queue URL such as ` +
          'https://sqs.eu-west-1.amazonaws.com/123456789012/orders (no credentials; its last path segment is the queue name)',
        { value: safe },
      );
    }
    return { kind: 'url', name, url: value, safe };
  }
  let destination;
  try {
    destination = resolveAwsUrl(value, 'sqs', 'SqsConsumer');
  } catch (err) {
    if (option === 'url') throw err;
    throw new ConfigError(
      option,
      (err as Error).message.replace('SqsConsumer url', `SqsConsumer option ${option}`),
      {
        value: safe,
      },
    );
  }
  if (destination.nameTemplate.includes('{topic}')) {
    throw new ConfigError(
      option,
      `SqsConsumer option ${option} ${JSON.stringify(safe)} has '{topic}'; a consumer reads one queue: name it`,
      { value: safe },
    );
  }
  return {
    kind: 'name',
    name: destination.nameTemplate,
    region: region ?? destination.region,
    account: destination.account,
    safe,
  };
}

/** The queue named `name` in the region and account of `queue`. */
function siblingQueue(queue: QueueRef, name: string): QueueRef {
  const safe = queue.safe.replace(/[^/]+\/?$/, name);
  return queue.kind === 'name'
    ? { ...queue, name, safe }
    : { kind: 'url', name, url: queue.url.replace(/[^/]+\/?$/, name), safe };
}

/** `<name>-dead`, before a `.fifo` suffix. */
export function defaultDeadLetterName(name: string): string {
  return name.endsWith('.fifo') ? `${name.slice(0, -'.fifo'.length)}-dead.fifo` : `${name}-dead`;
}

/**
 * Applies defaults and validates; throws a {@link ConfigError} naming the option at fault. The
 * handler and inbox are checked here but kept by the caller, which knows their types.
 */
export function resolveSqsConsumerOptions<Tx>(options: SqsConsumerOptions<Tx>): ResolvedSqsConsumerOptions {
  const { handler, url, deadLetterQueueUrl, inbox: _inbox, ...resolved } = consumerSchema.resolve(options);
  common.requireHandler('SqsConsumer', handler);
  const queue = resolveQueueRef(url, 'url', resolved.region);
  // A dead-letter queue named: the consumer sends its dead letters there.
  if (resolved.deadLetters === 'auto' && deadLetterQueueUrl !== undefined) resolved.deadLetters = 'queue';
  if (resolved.deadLetters === 'redrive' && deadLetterQueueUrl !== undefined) {
    throw new ConfigError(
      'deadLetterQueueUrl',
      "SqsConsumer option deadLetterQueueUrl is not used with deadLetters: 'redrive' (the queue's RedrivePolicy " +
        "names its dead-letter queue); remove it, or use deadLetters: 'queue'",
    );
  }
  const deadLetterQueue =
    deadLetterQueueUrl !== undefined
      ? resolveQueueRef(deadLetterQueueUrl, 'deadLetterQueueUrl', resolved.region)
      : siblingQueue(queue, defaultDeadLetterName(queue.name));
  common.requireDistinctDeadLetters('SqsConsumer', {
    option: 'deadLetterQueueUrl',
    value: deadLetterQueue.name,
    source: 'url',
    sourceValue: queue.name,
    where: 'on the queue they failed on',
  });
  const fifo = queue.name.endsWith('.fifo');
  if (fifo !== deadLetterQueue.name.endsWith('.fifo')) {
    throw new ConfigError(
      'deadLetterQueueUrl',
      `SqsConsumer option deadLetterQueueUrl names ${fifo ? 'a standard' : 'a FIFO'} queue ` +
        `(${JSON.stringify(deadLetterQueue.name)}) for ${fifo ? 'a FIFO' : 'a standard'} queue ` +
        `(${JSON.stringify(queue.name)}); SQS wants the dead-letter queue of the same type`,
      { value: deadLetterQueue.safe },
    );
  }
  return { ...resolved, queue, deadLetterQueue, fifo, safeUrl: queue.safe };
}
