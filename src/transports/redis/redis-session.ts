/**
 * The transport's one connection: opened on demand (one attempt at a time, shared by concurrent
 * callers), replaced when lost, never reopened by the client behind the transport's back, and
 * closed for good by `close()` until `reopen()`.
 *
 * Every connection is a new client: a client whose connection ended is dropped, not reused, so
 * no command, timer or listener of an old connection can touch a new one.
 *
 * @module
 */
import { isMailroomError } from '../../core/errors/mailroom-error.js';
import { loadIoredis, type RedisClient, type RedisConnectionOptions } from './redis-client.js';
import { closedError, connectError, connectionLostError } from './redis-errors.js';
import type { ResolvedRedisStreamsTransportOptions } from './redis-options.js';

/** A no-op, for promises whose rejection is handled elsewhere. */
export const noop = (): void => {};

/** How long `close()` waits for QUIT's reply before closing the socket. */
const QUIT_TIMEOUT_MS = 2000;

/** The name connections carry in `CLIENT LIST`, so operators can tell the relay's apart. */
const CONNECTION_NAME = 'mailroom-redis-streams';

export class RedisSessions {
  readonly #options: Readonly<ResolvedRedisStreamsTransportOptions>;
  /** The connected client, or undefined. */
  #client: RedisClient | undefined;
  #opening: Promise<RedisClient> | undefined;
  #closed = false;
  /** Why the last connection ended, for errors of commands that were on it. */
  #lostReason: Error | undefined;
  /** Fails the connection attempt under way. */
  #abandon: ((reason: Error) => void) | undefined;

  constructor(options: Readonly<ResolvedRedisStreamsTransportOptions>) {
    this.#options = options;
  }

  /** The connected client, if any. */
  get current(): RedisClient | undefined {
    return this.#client;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get lostReason(): Error | undefined {
    return this.#lostReason;
  }

  /** The connected client, connecting when there is none. Rejects with a TransportError. */
  open(): Promise<RedisClient> {
    if (this.#closed) return Promise.reject(closedError(this.#options.endpoint.safeUrl));
    if (this.#client !== undefined && this.#client.status === 'ready') return Promise.resolve(this.#client);
    if (this.#opening === undefined) {
      const opening = this.#connect().finally(() => {
        if (this.#opening === opening) this.#opening = undefined;
      });
      this.#opening = opening;
    }
    return this.#opening;
  }

  /**
   * Gives up the connection attempt under way, if any (its caller's signal aborted: a server that
   * does not answer the handshake is not worth waiting on); whoever waits for it gets `reason`,
   * and the next {@link open} starts a new attempt.
   */
  abandonOpening(reason: Error): void {
    this.#abandon?.(reason);
    this.#opening = undefined;
  }

  /** Drops `client` (when it is the current one): closes its socket; the next `open()` connects anew. */
  drop(client: RedisClient, reason: Error): void {
    if (this.#client === client) {
      this.#client = undefined;
      this.#lostReason = reason;
    }
    client.disconnect();
  }

  /**
   * Closes for good (until {@link reopen}): waits for `drain` (the batches in flight), then QUIT
   * with a deadline, then the socket is closed whatever the server does.
   */
  async close(drain: () => Promise<void>): Promise<void> {
    this.#closed = true;
    await drain();
    const opening = this.#opening;
    if (opening) await opening.catch(noop); // #connect sees #closed and disconnects it
    const client = this.#client;
    this.#client = undefined;
    if (client === undefined) return;
    this.#lostReason = closedError(this.#options.endpoint.safeUrl);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      client.quit().catch(noop),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, QUIT_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
    client.disconnect();
  }

  /** Allows connecting again after {@link close}. */
  reopen(): void {
    this.#closed = false;
  }

  async #connect(): Promise<RedisClient> {
    const options = this.#options;
    const { endpoint } = options;
    const factory = options.createClient ?? (await loadIoredis());
    const connection: RedisConnectionOptions = {
      host: endpoint.host,
      port: endpoint.port,
      db: endpoint.db,
      ...(endpoint.username === undefined ? {} : { username: endpoint.username }),
      ...(endpoint.password === undefined ? {} : { password: endpoint.password }),
      ...(endpoint.tls ? { tls: { ...options.tls } } : {}),
      connectTimeout: options.connectTimeoutMs,
      connectionName: CONNECTION_NAME,
      lazyConnect: true,
      enableOfflineQueue: false,
      enableReadyCheck: true,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      retryStrategy: () => null,
      reconnectOnError: null,
    };
    const client = factory(connection);
    // The client reports socket errors as events; the last one says why a connect failed (the
    // promise only says "Connection is closed") and why a connection was lost.
    let lastError: Error | undefined;
    client.on('error', (err) => {
      lastError = err;
    });
    client.on('end', () => {
      if (this.#client !== client) return;
      this.#client = undefined;
      this.#lostReason = connectionLostError(
        endpoint.safeUrl,
        lastError ? lastError.message : 'the server closed the connection',
        lastError,
      );
    });
    // ioredis's connectTimeout covers the TCP connect only: a server (or proxy) that accepts
    // the connection and never answers the handshake (HELLO, the ready check) would keep
    // connect() pending forever. The deadline here covers the whole of it.
    let timer: ReturnType<typeof setTimeout> | undefined;
    let abandon: ((reason: Error) => void) | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer within connectTimeoutMs (${options.connectTimeoutMs} ms)`)),
        options.connectTimeoutMs,
      );
      abandon = (reason) => reject(reason);
      this.#abandon = abandon;
    });
    const connecting = client.connect();
    connecting.catch(noop);
    try {
      await Promise.race([connecting, deadline]);
    } catch (err) {
      client.disconnect();
      if (isMailroomError(err)) throw err; // abandoned
      const timedOut = err instanceof Error && err.message.startsWith('no answer within');
      throw connectError(timedOut ? err : (lastError ?? err), endpoint.safeUrl, options.connectTimeoutMs);
    } finally {
      clearTimeout(timer);
      if (this.#abandon === abandon) this.#abandon = undefined;
    }
    if (this.#closed) {
      client.disconnect();
      throw closedError(endpoint.safeUrl);
    }
    if (client.status !== 'ready') {
      client.disconnect();
      throw connectError(
        lastError ?? new Error('the connection closed during the handshake'),
        endpoint.safeUrl,
        options.connectTimeoutMs,
      );
    }
    this.#client = client;
    this.#lostReason = undefined;
    return client;
  }
}
