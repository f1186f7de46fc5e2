import type { ConnectionOptions } from 'node:tls';

import { ConfigError } from '../../core/errors/config-error.js';
import {
  custom,
  integer,
  MAX_TIMER_MS,
  optionsSchema,
  string,
  type ResolvedOptions,
} from '../../core/options-schema.js';
import { redactUrl } from '../../core/redact.js';
import type { RedisClientFactory } from './redis-client.js';

/**
 * Redis's own limit for one argument of a command (`proto-max-bulk-len`, 512 MiB by default). A
 * bigger one is a protocol error, and Redis closes the connection with every command in flight.
 */
export const PROTO_MAX_BULK_LEN = 512 * 1024 * 1024;

/** Longest stream key the transport writes to, in bytes (Redis allows more; nobody needs it). */
export const MAX_STREAM_KEY_BYTES = 1024;

/** `WAIT` after each batch: see {@link RedisStreamsTransportOptions.waitReplicas}. */
export interface RedisWaitReplicas {
  /** Replicas that must have acknowledged the batch's entries. 1 to 1000. */
  count: number;
  /** Longest time Redis waits for them (`WAIT`'s timeout), in ms; at least 1 (0 would wait forever). */
  timeoutMs: number;
}

/** Options of {@link RedisStreamsTransport}. Only `url` is required. */
export interface RedisStreamsTransportOptions {
  /**
   * Server address: `redis://` (plain) or `rediss://` (TLS), with credentials and a database
   * number: `redis://[user:password@]host[:6379][/db]`. A password without a user
   * (`redis://:password@host`) logs in as the default user. The password never appears in errors.
   * Other settings are options, not query parameters (a query is refused).
   *
   * @example 'redis://127.0.0.1:6379'
   * @example 'rediss://relay:s3cret@redis.internal:6380/2'
   */
  url: string;
  /**
   * The stream a message is added to, from its topic: `{topic}` is replaced by the topic. Put a
   * prefix here to keep Mailroom's streams apart from other keys.
   *
   * @default '{topic}'
   * @example 'mailroom:{topic}'
   */
  stream?: string;
  /**
   * Trims each stream to about this many entries as entries are added (`XADD … MAXLEN ~ n`):
   * Redis removes whole internal nodes only, so a stream may hold somewhat more (up to
   * `stream-node-max-entries`, 100 by default, more). Entries trimmed are gone for consumers that
   * had not read them yet: size it for the longest consumer outage. Unset: streams are not trimmed.
   *
   * @default undefined (no trimming)
   * @example 1_000_000
   */
  maxLen?: number;
  /**
   * For servers with replicas: after each batch, `WAIT count timeoutMs`, and report the batch's
   * entries `ok` only when at least `count` replicas acknowledged them. When fewer did in time,
   * they report `unavailable` (the relay pauses, spends no attempt, and publishes them again
   * once a probe sees `count` replicas connected): the entries stay on the primary, so
   * consumers may see them twice (same `mailroom-id`). Unset: `ok` once the primary added them.
   *
   * @default undefined (no WAIT)
   * @example { count: 1, timeoutMs: 1000 }
   */
  waitReplicas?: RedisWaitReplicas;
  /**
   * Largest payload, in bytes, to send; a bigger one reports `permanent` without being sent.
   * Redis refuses an argument over `proto-max-bulk-len` (512 MiB) by closing the connection, and
   * every message in flight on it fails with it; far below that, a huge entry holds the relay's
   * memory and the connection for everyone.
   *
   * @default 16777216 (16 MiB)
   */
  maxPayloadBytes?: number;
  /**
   * How long to wait for the replies of a batch (or of a probe). Messages without one by then
   * report `unavailable` and the connection is dropped; they may still have reached the stream
   * (a later copy carries the same `mailroom-id`). `waitReplicas.timeoutMs` is added to it. The
   * relay's publish deadline, when shorter, ends the wait first.
   *
   * @default 30000
   */
  replyTimeoutMs?: number;
  /** Limit for the TCP/TLS connect and the handshake (HELLO, AUTH, SELECT, ready check). @default 10000 */
  connectTimeoutMs?: number;
  /**
   * TLS options for `rediss://`: `ca`, `cert`, `key`, `servername`, `rejectUnauthorized`.
   *
   * @default {}
   * @example { ca: [readFileSync('ca.pem')] }
   */
  tls?: ConnectionOptions;
  /** How long `close()` waits for batches in flight before closing the connection. @default 10000 */
  closeTimeoutMs?: number;
  /**
   * Makes the client for each connection. @default ioredis's `Redis`, loaded on first use.
   */
  createClient?: RedisClientFactory;
}

const OWNER = 'RedisStreamsTransport';

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const waitReplicasSchema = optionsSchema<RedisWaitReplicas>()(OWNER, {
  count: integer({ min: 1, max: 1000, required: true }),
  timeoutMs: integer({ min: 1, max: MAX_TIMER_MS, required: true }),
});

const redisOptionsSchema = optionsSchema<RedisStreamsTransportOptions>()(OWNER, {
  url: string({ expected: 'a redis:// or rediss:// URL string', secret: true, required: true }),
  stream: string({ expected: "a stream name template such as '{topic}'", default: '{topic}' }),
  maxLen: integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  waitReplicas: custom('an object { count, timeoutMs }', isPlainObject),
  maxPayloadBytes: integer({ min: 1, max: PROTO_MAX_BULK_LEN, default: 16 * 1024 * 1024 }),
  replyTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 30_000 }),
  connectTimeoutMs: integer({ min: 1, max: MAX_TIMER_MS, default: 10_000 }),
  tls: custom('an object of TLS options', isPlainObject, { default: () => ({}) }),
  closeTimeoutMs: integer({ min: 0, max: MAX_TIMER_MS, default: 10_000 }),
  createClient: custom(
    'a function (options) => client',
    (v): v is RedisClientFactory => typeof v === 'function',
  ),
});

/** Where and how to connect, from the URL. */
export interface RedisEndpoint {
  host: string;
  port: number;
  tls: boolean;
  username: string | undefined;
  password: string | undefined;
  db: number;
  /** The URL with the password masked, for messages. */
  safeUrl: string;
}

/** Options after defaults and validation. */
export interface ResolvedRedisStreamsTransportOptions extends Omit<
  ResolvedOptions<typeof redisOptionsSchema.fields>,
  'url' | 'waitReplicas' | 'tls'
> {
  endpoint: RedisEndpoint;
  waitReplicas: RedisWaitReplicas | undefined;
  tls: ConnectionOptions;
}

/** A stream name template as the transport accepts it. */
export function checkStreamTemplate(template: string, owner: string, key: string): string {
  const fail = (why: string): never => {
    throw new ConfigError(key, `${owner} option ${key} ${JSON.stringify(template)} ${why}`, {
      value: template,
    });
  };
  if (template.split('{topic}').length !== 2) {
    fail("must contain '{topic}' exactly once (e.g. '{topic}' or 'mailroom:{topic}')");
  }
  if (/[{}]/.test(template.replace('{topic}', ''))) {
    fail("has a brace outside '{topic}'; the only placeholder is {topic}");
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(template)) fail('contains a control character');
  if (Buffer.byteLength(template) > MAX_STREAM_KEY_BYTES / 2) {
    fail(`is longer than ${MAX_STREAM_KEY_BYTES / 2} bytes`);
  }
  return template;
}

/**
 * Reads a `redis://` or `rediss://` URL. Parsing here (instead of handing the URL to the client)
 * turns a typo into a ConfigError at construction, and keeps query parameters from changing the
 * connection settings the transport relies on.
 */
export function resolveRedisUrl(value: string, owner: string): RedisEndpoint {
  const safeUrl = redactUrl(value);
  const fail = (why: string, cause?: unknown): never => {
    throw new ConfigError('url', `${owner} url ${JSON.stringify(safeUrl)} ${why}`, { value: safeUrl }, cause);
  };
  let parsed: URL | undefined;
  try {
    parsed = new URL(value);
  } catch (err) {
    fail(
      'is not a valid URL; expected redis://[user:password@]host:6379[/db] (percent-encode special characters in the password)',
      err,
    );
  }
  const url = parsed as URL;
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    fail(
      `has scheme ${JSON.stringify(url.protocol.replace(/:$/, ''))}; use redis:// (plain) or rediss:// (TLS)`,
    );
  }
  if (url.hostname === '') fail('has no host; expected redis://[user:password@]host:6379[/db]');
  if (url.search !== '' || url.hash !== '') {
    fail(
      'has a query or fragment; give TLS, timeouts and trimming as options of the transport, not in the URL',
    );
  }
  let db = 0;
  const path = url.pathname;
  if (path !== '' && path !== '/') {
    const segment = path.slice(1);
    if (!/^\d{1,5}$/.test(segment)) {
      fail(`has path ${JSON.stringify(path)}; the path names a database number (redis://host:6379/0)`);
    }
    db = Number(segment);
  }
  const decode = (text: string): string | undefined => {
    if (text === '') return undefined;
    try {
      return decodeURIComponent(text);
    } catch (err) {
      return fail('has credentials that are not valid percent-encoding', err);
    }
  };
  const tls = url.protocol === 'rediss:';
  return {
    // URL keeps brackets around IPv6 literals; sockets want the bare address.
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port === '' ? 6379 : Number(url.port),
    tls,
    username: decode(url.username),
    password: decode(url.password),
    db,
    safeUrl,
  };
}

/** Applies defaults and validates; throws a {@link ConfigError} naming the option at fault. */
export function resolveRedisStreamsOptions(
  options: RedisStreamsTransportOptions,
): ResolvedRedisStreamsTransportOptions {
  const { url, waitReplicas, tls, ...resolved } = redisOptionsSchema.resolve(options);
  checkStreamTemplate(resolved.stream, OWNER, 'stream');
  return {
    ...resolved,
    tls: tls as ConnectionOptions,
    waitReplicas:
      waitReplicas === undefined ? undefined : waitReplicasSchema.resolve(waitReplicas, 'waitReplicas'),
    endpoint: resolveRedisUrl(url, OWNER),
  };
}

/** The stream key of a topic under a template. */
export function streamFor(template: string, topic: string): string {
  return template.replace('{topic}', () => topic);
}
