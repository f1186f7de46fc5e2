import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { ConnectionOptions } from 'node:tls';

import { ConfigError } from '../../core/errors/config-error.js';
import {
  boolean,
  custom,
  integer,
  MAX_TIMER_MS,
  nested,
  oneOf,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import * as common from '../../consumer/consumer-options.js';
import type { RedisClientFactory } from './redis-client.js';
import {
  checkStreamTemplate,
  MAX_STREAM_KEY_BYTES,
  resolveRedisStreamsOptions,
  resolveRedisUrl,
  streamFor,
  type RedisEndpoint,
  type ResolvedRedisStreamsTransportOptions,
} from './redis-options.js';

export type {
  ConsumerContext,
  ConsumerHandler,
  ConsumerInbox,
  ConsumerRetryOptions,
} from '../../consumer/consumer.js';

/**
 * Options of {@link RedisConsumer}; `url`, `topic`, `group` and `handler` are required. With
 * `inbox`, `Tx` is its transaction type and the handler gets the transaction; without, `undefined`.
 */
export type RedisConsumerOptions<Tx = undefined> = common.ConsumerOptionsOf<RedisConsumerBaseOptions, Tx>;

/** Where a new consumer group starts reading. */
export type RedisStartFrom = 'new' | 'beginning';

/** The options of {@link RedisConsumer} besides `inbox` and `handler`. */
export interface RedisConsumerBaseOptions extends common.ConsumerCommonOptions {
  /**
   * Server address, `redis://` or `rediss://`, as `RedisStreamsTransport` takes it. The password
   * never appears in errors or logs.
   *
   * @example 'redis://billing:s3cret@redis.internal:6379/0'
   */
  url: string;
  /**
   * The topic consumed: the consumer reads the stream the relay's transport writes it to
   * (`stream` with `{topic}` filled in).
   *
   * @example 'order.created'
   */
  topic: string;
  /**
   * The stream name template, the same as the transport's `stream` option: `{topic}` is replaced
   * by the topic.
   *
   * @default '{topic}'
   * @example 'mailroom:{topic}'
   */
  stream?: string;
  /**
   * The consumer group: the name of the receiving service, the same in every one of its
   * instances. Each group gets every entry of the stream once; the instances of a group share
   * them out.
   *
   * @example 'billing'
   */
  group: string;
  /**
   * This instance's name in the group. Entries it read stay pending under this name until it
   * acknowledges them; a stable name (a pod or host name) lets a restarted instance take its own
   * pending entries back at once, while other instances take over an unknown name's entries only
   * after `claimIdleMs`. Two running instances must never share a name.
   *
   * @default `${hostname}-${pid}-${random}`, unique per process
   */
  consumerName?: string;
  /**
   * Where the group starts when `start()` creates it (an existing group keeps its position):
   * `'new'`: entries added from then on (`XGROUP CREATE … $`); `'beginning'`: every entry the
   * stream holds (`0`).
   *
   * @default 'new'
   */
  startFrom?: RedisStartFrom;
  /**
   * Where entries go that failed `retry.maxAttempts` times or cannot be decoded: `XADD` of the
   * original fields plus why, in one `MULTI`/`EXEC` with the `XACK` of the original.
   *
   * @default `${stream}.dead`
   */
  deadLetterStream?: string;
  /**
   * Entries another consumer of the group has held unacknowledged for this long (a crashed or cut
   * off instance) are taken over with `XAUTOCLAIM`, checked every `claimIdleMs / 3`. This
   * consumer keeps its own entries fresh while it holds them (`XCLAIM … JUSTID` every
   * `claimIdleMs / 3`), so a slow handler or a long retry delay is not taken from it. `0`: never
   * take over (a crashed instance's entries wait for an instance with its `consumerName`).
   *
   * @default 60000
   */
  claimIdleMs?: number;
  /**
   * Deletes each entry from the stream once acknowledged (`XACK` and `XDEL` in one `MULTI`), so
   * the stream does not grow. Only for a stream that this group alone reads: the entry is gone for
   * every other group too. Without it, trim the stream with the transport's `maxLen`.
   *
   * @default false
   */
  deleteAfterAck?: boolean;
  /**
   * How long to wait for a reply to a command (an acknowledgement, a claim, a dead letter; a read
   * gets its 2 s block on top). A server that does not answer in time is treated as a lost
   * connection: the consumer reconnects.
   *
   * @default 10000
   */
  replyTimeoutMs?: number;
  /** Limit for the TCP/TLS connect, the handshake and creating the group. @default 10000 */
  connectTimeoutMs?: number;
  /** TLS options for `rediss://`. @default {} */
  tls?: ConnectionOptions;
  /**
   * Makes the client for each connection (the consumer opens two: one for blocking reads, one for
   * everything else). It must have ioredis's `callBuffer`. @default ioredis's `Redis`
   */
  createClient?: RedisClientFactory;
}

const OWNER = 'RedisConsumer';

// eslint-disable-next-line no-control-regex -- control characters are what it refuses
const NAME_RE = /^[^\u0000-\u001f\u007f]{1,255}$/;
const NAME_EXPECTED = 'a name of 1 to 255 characters without control characters';

const consumerSchema = optionsSchema<common.ConsumerOptionKeys<RedisConsumerBaseOptions>>()(
  OWNER,
  {
    url: string({ expected: 'a redis:// or rediss:// URL string', secret: true, required: true }),
    topic: string({ pattern: NAME_RE, expected: NAME_EXPECTED, required: true }),
    stream: string({ expected: "a stream name template such as '{topic}'", default: '{topic}' }),
    group: string({ pattern: NAME_RE, expected: NAME_EXPECTED, required: true }),
    consumerName: string({
      pattern: NAME_RE,
      expected: NAME_EXPECTED,
      default: () => `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`,
    }),
    startFrom: oneOf(['new', 'beginning'], { default: 'new' }),
    deadLetterStream: string({ pattern: NAME_RE, expected: NAME_EXPECTED }),
    ...common.handlerFields,
    retry: nested(common.retryOptionsSchema(OWNER)),
    ...common.lifecycleFields,
    claimIdleMs: integer({ min: 0, max: MAX_TIMER_MS, default: 60_000 }),
    deleteAfterAck: boolean({ default: false }),
    replyTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
    tls: custom(
      'an object of TLS options',
      (v): v is ConnectionOptions => typeof v === 'object' && v !== null && !Array.isArray(v),
      { default: () => ({}) },
    ),
    createClient: custom(
      'a function (options) => client',
      (v): v is RedisClientFactory => typeof v === 'function',
    ),
    ...common.reconnectFields,
    logger: common.loggerField,
  },
  { ordered: common.consumerOrderedOptions },
);

/** Options after defaults and validation. */
export interface ResolvedRedisConsumerOptions extends Omit<
  ResolvedOptions<typeof consumerSchema.fields>,
  'handler' | 'inbox' | 'url' | 'deadLetterStream' | 'tls' | 'createClient'
> {
  endpoint: RedisEndpoint;
  /** The stream key consumed: the template with the topic filled in. */
  streamKey: string;
  deadLetterStream: string;
  /** The settings each connection is opened with (the transport's, through its RedisSessions). */
  connection: ResolvedRedisStreamsTransportOptions;
}

/**
 * Applies defaults and validates; throws a `ConfigError` naming the option at fault. The handler
 * and inbox are checked here but kept by the caller, which knows their types.
 */
export function resolveRedisConsumerOptions<Tx>(
  options: RedisConsumerOptions<Tx>,
): ResolvedRedisConsumerOptions {
  const { handler, inbox, url, deadLetterStream, tls, createClient, ...resolved } =
    consumerSchema.resolve(options);
  void inbox;
  common.requireHandler(OWNER, handler);
  checkStreamTemplate(resolved.stream, OWNER, 'stream');
  const endpoint = resolveRedisUrl(url, OWNER);
  const streamKey = streamFor(resolved.stream, resolved.topic);
  const dead = deadLetterStream ?? `${streamKey}.dead`;
  if (Buffer.byteLength(dead) > MAX_STREAM_KEY_BYTES) {
    throw new ConfigError(
      'deadLetterStream',
      `${OWNER} option deadLetterStream ${JSON.stringify(dead)} is longer than ${MAX_STREAM_KEY_BYTES} bytes; give a shorter name`,
      { value: dead },
    );
  }
  common.requireDistinctDeadLetters(OWNER, {
    option: 'deadLetterStream',
    value: dead,
    source: 'the stream consumed',
    sourceValue: streamKey,
    where: 'on the stream they came from',
  });
  // The connection settings as the transport resolves them: the same URL parsing, TLS and
  // connect deadline, and its RedisSessions opens the consumer's connections.
  const connection = resolveRedisStreamsOptions({
    url,
    stream: resolved.stream,
    connectTimeoutMs: resolved.connectTimeoutMs,
    replyTimeoutMs: resolved.replyTimeoutMs,
    tls,
    ...(createClient === undefined ? {} : { createClient }),
  });
  return { ...resolved, endpoint, streamKey, deadLetterStream: dead, connection };
}
