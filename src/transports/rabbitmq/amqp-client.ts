/**
 * The slice of an AMQP 0-9-1 client that the RabbitMQ transport uses. amqplib's promise API
 * (`import * as amqplib from 'amqplib'`) satisfies it as is, so the transport never has to
 * import amqplib's types, and Mailroom builds and type-checks without amqplib installed.
 *
 * @module
 */
import { ConfigError } from '../../core/errors/config-error.js';

/** Properties the transport sets on each published message (a subset of amqplib's `Options.Publish`). */
export interface AmqpPublishOptions {
  /** Routes unroutable messages back to the publisher with `basic.return`. */
  mandatory: boolean;
  /** Delivery mode 2: queues that are durable write the message to disk. */
  persistent: boolean;
  messageId: string;
  contentType: string;
  /** Seconds since the Unix epoch (AMQP timestamps have no finer unit). */
  timestamp: number;
  type?: string;
  headers: Record<string, unknown>;
}

/** A message the broker handed back with `basic.return` (amqplib's `Message`). */
export interface AmqpReturnedMessage {
  fields: { replyCode?: number; replyText?: string; exchange: string; routingKey: string };
  properties: { messageId?: unknown };
}

/** A channel in confirm mode (amqplib's `ConfirmChannel`). */
export interface AmqpConfirmChannel {
  assertExchange(exchange: string, type: string, options: { durable: boolean }): Promise<unknown>;
  /**
   * Sends one message without waiting. `callback` runs once the broker confirmed it (`err` null),
   * nacked it, or the channel closed first (`err` set). Returns false when the write buffer is
   * full: the caller should wait for `'drain'` before sending more.
   */
  publish(
    exchange: string,
    routingKey: string,
    content: Buffer,
    options: AmqpPublishOptions,
    callback: (err: unknown) => void,
  ): boolean;
  close(): Promise<void>;
  on(event: 'return', listener: (message: AmqpReturnedMessage) => void): unknown;
  on(event: 'drain', listener: () => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  removeListener(event: 'drain' | 'close', listener: () => void): unknown;
}

/**
 * A plain channel (amqplib's `Channel`), which broker transactions put in transaction mode: its
 * publishes wait on the broker until `tx.commit`, so there is no confirm per message.
 */
export interface AmqpChannel {
  /**
   * Sends one message without waiting; in transaction mode the broker holds it until the
   * commit. Returns false when the write buffer is full: wait for `'drain'` before sending more.
   */
  publish(exchange: string, routingKey: string, content: Buffer, options: AmqpPublishOptions): boolean;
  close(): Promise<void>;
  on(event: 'return', listener: (message: AmqpReturnedMessage) => void): unknown;
  on(event: 'drain', listener: () => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  removeListener(event: 'drain' | 'close', listener: () => void): unknown;
}

/** The AMQP `tx` class on one channel: each method resolves on the broker's `-ok`. */
export interface AmqpTxMethods {
  /** `tx.select`: puts the channel in transaction mode (for good: it cannot leave it). */
  select(): Promise<void>;
  /** `tx.commit`: everything published and acknowledged since the last commit or rollback. */
  commit(): Promise<void>;
  /** `tx.rollback`: discards it. */
  rollback(): Promise<void>;
}

// AMQP 0-9-1 method ids, as amqplib numbers them: class id (tx = 90) << 16 | method id.
const TX_SELECT = (90 << 16) | 10;
const TX_SELECT_OK = (90 << 16) | 11;
const TX_COMMIT = (90 << 16) | 20;
const TX_COMMIT_OK = (90 << 16) | 21;
const TX_ROLLBACK = (90 << 16) | 30;
const TX_ROLLBACK_OK = (90 << 16) | 31;

/**
 * The `tx` methods of a channel. amqplib has no named methods for them, only the generic
 * `rpc(method, fields, expectedReply)` its own methods are built on (present in amqplib 0.10
 * and 2.x, absent from its type declarations); another client may offer `txSelect`, `txCommit`
 * and `txRollback` instead. Throws a {@link ConfigError} for a client with neither.
 */
export function txMethods(channel: object): AmqpTxMethods {
  const c = channel as {
    txSelect?: unknown;
    txCommit?: unknown;
    txRollback?: unknown;
    rpc?: unknown;
  };
  if (
    typeof c.txSelect === 'function' &&
    typeof c.txCommit === 'function' &&
    typeof c.txRollback === 'function'
  ) {
    const { txSelect, txCommit, txRollback } = c as Record<
      'txSelect' | 'txCommit' | 'txRollback',
      () => Promise<unknown>
    >;
    return {
      select: async () => void (await txSelect.call(channel)),
      commit: async () => void (await txCommit.call(channel)),
      rollback: async () => void (await txRollback.call(channel)),
    };
  }
  if (typeof c.rpc === 'function') {
    const rpc = c.rpc as (method: number, fields: object, expect: number) => Promise<unknown>;
    return {
      select: async () => void (await rpc.call(channel, TX_SELECT, {}, TX_SELECT_OK)),
      commit: async () => void (await rpc.call(channel, TX_COMMIT, {}, TX_COMMIT_OK)),
      rollback: async () => void (await rpc.call(channel, TX_ROLLBACK, {}, TX_ROLLBACK_OK)),
    };
  }
  throw new ConfigError(
    'connect',
    "the AMQP client's channels have no way to send tx.select/tx.commit/tx.rollback (amqplib's rpc, " +
      'or txSelect/txCommit/txRollback), so broker transactions cannot be used; install amqplib 0.10 ' +
      'or later, or give your connect function channels with those methods',
  );
}

/** An open connection (amqplib's `ChannelModel`). */
export interface AmqpConnection {
  /**
   * amqplib's connection object underneath. When it holds the socket as `stream`, the transport
   * destroys that socket if the broker does not answer a close, so a black-holed connection
   * cannot keep the process alive. Other clients may leave it out.
   */
  readonly connection?: object;
  createConfirmChannel(): Promise<AmqpConfirmChannel>;
  /**
   * Opens a plain channel; needed only for broker transactions (`begin()`), which put it in
   * transaction mode. A connect function whose connections lack it can still publish.
   */
  createChannel?(): Promise<AmqpChannel>;
  close(): Promise<void>;
  on(event: 'close', listener: (err?: Error) => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  on(event: 'blocked', listener: (reason: string) => void): unknown;
  on(event: 'unblocked', listener: () => void): unknown;
}

/**
 * Socket and client options handed to the connect function (amqplib's `SocketOptions`): TLS
 * settings (`ca`, `cert`, `key`, `servername`…), `noDelay`, `keepAlive`, `clientProperties`.
 */
export type AmqpSocketOptions = Record<string, unknown>;

/**
 * Opens a connection. The default is amqplib's `connect`, loaded on first use; pass your own to
 * use another client, add instrumentation or reuse a custom TLS setup.
 *
 * @example
 * ```ts
 * import * as amqplib from 'amqplib';
 * new RabbitMqTransport({ url, connect: (url, socketOptions) => amqplib.connect(url, socketOptions) });
 * ```
 */
export type AmqpConnect = (url: string, socketOptions: AmqpSocketOptions) => Promise<AmqpConnection>;

let amqplibConnect: Promise<AmqpConnect> | undefined;

/**
 * Loads amqplib's `connect` once. The specifier is a variable so TypeScript does not resolve
 * amqplib at build time: it is an optional peer dependency, needed only by users of this
 * transport who do not pass their own `connect`.
 */
export function loadAmqplibConnect(): Promise<AmqpConnect> {
  amqplibConnect ??= (async () => {
    const specifier = 'amqplib';
    let mod: { connect?: unknown; default?: { connect?: unknown } };
    try {
      mod = (await import(specifier)) as typeof mod;
    } catch (err) {
      amqplibConnect = undefined; // let a later call succeed once the package is installed
      throw new ConfigError(
        'connect',
        'the RabbitMQ transport needs the amqplib package, which could not be loaded; ' +
          'install it with `npm install amqplib`, or pass your own `connect` function',
        {},
        err,
      );
    }
    // amqplib is CommonJS: the named export exists when Node detects it, `default` always does.
    const connect = mod.connect ?? mod.default?.connect;
    if (typeof connect !== 'function') {
      amqplibConnect = undefined;
      throw new ConfigError(
        'connect',
        'the installed amqplib package has no connect function; install amqplib 0.10 or later ' +
          '(`npm install amqplib@latest`), or pass your own `connect` function',
      );
    }
    return connect as AmqpConnect;
  })();
  return amqplibConnect;
}
