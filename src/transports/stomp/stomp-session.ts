/**
 * The STOMP transport's connections: one for publishing, opened on demand and forgotten when it
 * dies so the next caller reconnects (with a backoff after failed connects), and a small pool for
 * broker transactions, each used by one transaction at a time so that a transaction's failure
 * (an ERROR frame ends a STOMP connection) never takes publishes or other transactions with it.
 *
 * @module
 */
import { backoffError, closedError } from './stomp-errors.js';
import { StompConnection } from './stomp-connection.js';
import type { ResolvedStompTransportOptions } from './stomp-options.js';

/** Idle transaction connections kept for the next transaction; more are closed. */
const MAX_IDLE_TRANSACTION_CONNECTIONS = 4;

/** Largest frame accepted from the broker: the transport receives only RECEIPT and ERROR frames. */
const MAX_INCOMING_FRAME_BYTES = 1024 * 1024;

export const noop = (): void => {};

export class StompSessions {
  readonly #options: Readonly<ResolvedStompTransportOptions>;
  #current: StompConnection | undefined;
  #connecting: Promise<StompConnection> | undefined;
  /** Every connection open or opening, to close them all. */
  readonly #all = new Set<StompConnection>();
  readonly #idle: StompConnection[] = [];
  /** Connects under way, so close() can wait for them. */
  readonly #opening = new Set<Promise<unknown>>();
  #closed = false;
  #failures = 0;
  #retryAt = 0;
  #lastConnectError: Error | undefined;

  constructor(options: Readonly<ResolvedStompTransportOptions>) {
    this.#options = options;
  }

  /** The publishing connection, while it is open. */
  get current(): StompConnection | undefined {
    return this.#current?.open === true ? this.#current : undefined;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Lets {@link open} connect again after {@link close}. */
  reopen(): void {
    this.#closed = false;
  }

  /**
   * The open publishing connection, or a new one; at most one connect runs at a time. Unless
   * `ignoreBackoff`, fails at once with the last connect error while the reconnect backoff runs.
   */
  open(ignoreBackoff: boolean): Promise<StompConnection> {
    if (this.#closed) return Promise.reject(closedError(this.#options.endpoint.safeUrl));
    if (this.#current?.open) return Promise.resolve(this.#current);
    if (this.#connecting) return this.#connecting;
    const connecting = this.#connect(ignoreBackoff).then((connection) => {
      this.#current = connection;
      connection.ended.addEventListener('abort', () => {
        if (this.#current === connection) this.#current = undefined;
      });
      return connection;
    });
    this.#connecting = connecting;
    void connecting.then(
      () => (this.#connecting = undefined),
      () => (this.#connecting = undefined),
    );
    return connecting;
  }

  /** A connection of its own for one transaction: an idle one, or a new one. Give it back with {@link release}. */
  async take(): Promise<StompConnection> {
    if (this.#closed) throw closedError(this.#options.endpoint.safeUrl);
    for (let idle = this.#idle.pop(); idle; idle = this.#idle.pop()) {
      if (idle.open) return idle;
    }
    return this.#connect(false);
  }

  /** Back from a transaction: kept for the next one when it is healthy and there is room, else closed. */
  release(connection: StompConnection): void {
    if (connection.open && !this.#closed && this.#idle.length < MAX_IDLE_TRANSACTION_CONNECTIONS) {
      this.#idle.push(connection);
      return;
    }
    void connection.close(new Error('transaction connection released'));
  }

  /** Ends a connection that does not answer or is in an unknown state; the next caller reconnects. */
  drop(connection: StompConnection, reason: Error): void {
    connection.destroy(reason);
  }

  /**
   * Stops handing out connections, lets `drain` wait for the work still using them, then closes
   * every connection (DISCONNECT, at most 2 s each, then the socket is destroyed).
   */
  async close(drain: () => Promise<void>): Promise<void> {
    this.#closed = true;
    await drain();
    await Promise.allSettled([...this.#opening]);
    const reason = closedError(this.#options.endpoint.safeUrl);
    this.#idle.length = 0;
    this.#current = undefined;
    await Promise.all([...this.#all].map((connection) => connection.close(reason)));
  }

  /** Opens a connection, honouring (unless told not to) and updating the reconnect backoff. */
  #connect(ignoreBackoff: boolean): Promise<StompConnection> {
    const wait = this.#retryAt - Date.now();
    if (!ignoreBackoff && wait > 0 && this.#lastConnectError) {
      return Promise.reject(backoffError(this.#lastConnectError, wait));
    }
    const options = this.#options;
    const opening = StompConnection.open({
      endpoint: options.endpoint,
      tls: options.tls,
      connectTimeoutMs: options.connectTimeoutMs,
      heartbeatMs: options.heartbeatMs,
      maxFrameBytes: MAX_INCOMING_FRAME_BYTES,
    }).then(
      (connection) => {
        this.#failures = 0;
        this.#retryAt = 0;
        this.#lastConnectError = undefined;
        if (this.#closed) {
          void connection.close(closedError(options.endpoint.safeUrl));
          throw closedError(options.endpoint.safeUrl);
        }
        this.#all.add(connection);
        connection.ended.addEventListener('abort', () => {
          this.#all.delete(connection);
          const at = this.#idle.indexOf(connection);
          if (at >= 0) this.#idle.splice(at, 1);
        });
        return connection;
      },
      (err: unknown) => {
        this.#failures++;
        const cap = Math.min(
          options.maxReconnectDelayMs,
          options.reconnectDelayMs * 2 ** (this.#failures - 1),
        );
        this.#retryAt = Date.now() + Math.round(cap / 2 + (Math.random() * cap) / 2);
        this.#lastConnectError = err instanceof Error ? err : new Error(String(err));
        throw err;
      },
    );
    this.#opening.add(opening);
    void opening.then(
      () => this.#opening.delete(opening),
      () => this.#opening.delete(opening),
    );
    return opening;
  }
}
