/**
 * The slice of a Redis client the transport needs, and the loader of the default client
 * (`ioredis`). ioredis's `Redis` satisfies {@link RedisClient} as is, so the transport never
 * imports ioredis's types, and Mailroom builds and type-checks without ioredis installed (it is
 * an optional peer dependency, needed only by users of this transport).
 *
 * @module
 */
import type { ConnectionOptions } from 'node:tls';

import { ConfigError } from '../../core/errors/config-error.js';

/** An argument of a Redis command: bytes travel as they are, strings as UTF-8. */
export type RedisArgument = string | Buffer | number;

/** One reply of a pipeline: the error Redis (or the client) gave the command, or its result. */
export type PipelineReply = [error: Error | null, result: unknown];

/** A pipeline (ioredis's `Pipeline`): commands queued, then written together by `exec()`. */
export interface RedisPipeline {
  /** Queues a command. */
  call(command: string, ...args: RedisArgument[]): unknown;
  /**
   * Writes the queued commands in one go and resolves, once every command has its reply (or
   * failed), with one {@link PipelineReply} per command, in order.
   */
  exec(): Promise<PipelineReply[] | null>;
}

/** A connection to one Redis server (ioredis's `Redis`), as the transport drives it. */
export interface RedisClient {
  /** `'ready'` once connected and the handshake is done; `'end'` once closed for good. */
  readonly status: string;
  /** Connects; resolves when ready, rejects when the connection fails or closes first. */
  connect(): Promise<unknown>;
  pipeline(): RedisPipeline;
  /** Sends one command and resolves with its reply. */
  call(command: string, ...args: RedisArgument[]): Promise<unknown>;
  /** Sends QUIT and closes once Redis answered. */
  quit(): Promise<unknown>;
  /** Closes the socket at once; commands without a reply fail. */
  disconnect(): void;
  on(event: 'error', listener: (err: Error) => void): unknown;
  on(event: 'close' | 'end', listener: () => void): unknown;
}

/**
 * The options the transport opens each connection with (a subset of ioredis's `RedisOptions`).
 * They make a connection that never waits in the background: commands fail at once while it is
 * not connected (`enableOfflineQueue: false`), a lost connection is not reopened by the client
 * (`retryStrategy` returns null: the transport opens a new one when it needs it) and commands
 * without a reply are not sent again on another connection (`autoResendUnfulfilledCommands`).
 */
export interface RedisConnectionOptions {
  host: string;
  port: number;
  username?: string;
  password?: string;
  db: number;
  tls?: ConnectionOptions;
  connectTimeout: number;
  connectionName: string;
  lazyConnect: true;
  enableOfflineQueue: false;
  enableReadyCheck: true;
  maxRetriesPerRequest: 0;
  autoResendUnfulfilledCommands: false;
  retryStrategy: () => null;
  reconnectOnError: null;
}

/**
 * Makes a client, not yet connected (the transport calls `connect()`). The default is ioredis's
 * `new Redis(options)`; pass your own to add instrumentation or use another client with the same
 * methods.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * new RedisStreamsTransport({ url, createClient: (options) => new Redis({ ...options, keepAlive: 10_000 }) });
 * ```
 */
export type RedisClientFactory = (options: RedisConnectionOptions) => RedisClient;

let ioredisFactory: Promise<RedisClientFactory> | undefined;

/**
 * Loads ioredis once. The specifier is a variable so TypeScript does not resolve ioredis at
 * build time.
 */
export function loadIoredis(): Promise<RedisClientFactory> {
  ioredisFactory ??= (async () => {
    const specifier = 'ioredis';
    let mod: { Redis?: unknown; default?: unknown };
    try {
      mod = (await import(specifier)) as typeof mod;
    } catch (err) {
      ioredisFactory = undefined; // a later call succeeds once the package is installed
      throw new ConfigError(
        'createClient',
        'the Redis Streams transport needs the ioredis package, which could not be loaded; ' +
          'install it with `npm install ioredis`, or pass your own `createClient` function',
        {},
        err,
      );
    }
    // ioredis is CommonJS: `Redis` is a named export in v5+, `default` always exists.
    const Redis = mod.Redis ?? mod.default;
    if (typeof Redis !== 'function') {
      ioredisFactory = undefined;
      throw new ConfigError(
        'createClient',
        'the installed ioredis package exports no Redis class; install ioredis 5 or later ' +
          '(`npm install ioredis@latest`), or pass your own `createClient` function',
      );
    }
    const RedisClass = Redis as new (options: RedisConnectionOptions) => RedisClient;
    return (options: RedisConnectionOptions) => new RedisClass(options);
  })();
  return ioredisFactory;
}
