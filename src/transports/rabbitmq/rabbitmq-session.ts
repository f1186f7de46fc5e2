/**
 * The RabbitMQ transport's connection: one AMQP connection with one confirm channel (a
 * "session"), opened on demand, replaced as a whole when either part dies, with a reconnect
 * backoff after failed attempts.
 *
 * @module
 */
import {
  loadAmqplibConnect,
  type AmqpConfirmChannel,
  type AmqpConnection,
  type AmqpReturnedMessage,
} from './amqp-client.js';
import {
  backoffError,
  channelFailedError,
  closedWhileConnectingError,
  connectError,
  connectTimeoutError,
  declareFailedError,
} from './rabbitmq-errors.js';
import type { ResolvedRabbitMqTransportOptions } from './rabbitmq-options.js';

/** What the connection's listeners learn, kept apart so they can be attached before the channel exists. */
export interface ConnectionState {
  /** The error that ended the connection (socket error, heartbeat timeout, broker closed it). */
  lostReason: Error | undefined;
  /**
   * The channel-level exception the broker closed the channel with while the connection was up
   * (404 NOT_FOUND, 406 PRECONDITION_FAILED…): caused by what was published, not by an outage.
   */
  channelException: ChannelException | undefined;
  /** Set while the broker blocks publishers (resource alarm): the broker's reason. */
  blockedReason: string | undefined;
  /** The connection itself has closed (not only the channel). */
  closed: boolean;
}

/** One connection with its confirm channel; replaced as a whole when either dies. */
export interface Session {
  readonly connection: AmqpConnection;
  readonly channel: AmqpConfirmChannel;
  readonly state: ConnectionState;
  open: boolean;
  /**
   * Messages the broker returned (mandatory, unroutable), by message id, waiting for their ack.
   * RabbitMQ sends `basic.return` before the `basic.ack` of the same message, so the ack callback
   * finds the return here and turns the outcome into `permanent`.
   */
  readonly returned: Map<string, AmqpReturnedMessage[]>;
}

/** An error the broker closed the channel with, and its AMQP reply code. */
export interface ChannelException {
  code: number;
  error: Error;
}

/**
 * AMQP 0-9-1 reply codes of channel ("soft") exceptions: the broker closes the channel and
 * keeps the connection. Every other code is a connection ("hard") exception or comes from the
 * client itself.
 */
export const CHANNEL_EXCEPTION_CODES: ReadonlySet<number> = new Set([
  311, // CONTENT_TOO_LARGE
  312, // NO_ROUTE
  313, // NO_CONSUMERS
  403, // ACCESS_REFUSED: the user may not write to the exchange
  404, // NOT_FOUND: the exchange does not exist
  405, // RESOURCE_LOCKED
  406, // PRECONDITION_FAILED: message over max_message_size, bad header value…
]);

/**
 * How long closing a connection may wait for the broker's close-ok before its socket is
 * destroyed. A broker that answers does so in milliseconds; one that does not must not hold up
 * a shutdown (or keep the process alive) for longer than this.
 */
const CLOSE_HANDSHAKE_MS = 2000;

/** How much later than the connect deadline amqplib's own socket timeout fires. */
const SOCKET_TIMEOUT_MARGIN_MS = 1000;

export const noop = (): void => {};

/** Rejects with a plain error when `promise` has not settled after `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** What {@link untilAborted} returns when the signal aborted first. */
export const ABORTED: unique symbol = Symbol('aborted');

/**
 * `promise`'s value, or {@link ABORTED} as soon as `signal` aborts (the promise goes on, its
 * result unused). Rejects when `promise` rejects first.
 */
export function untilAborted<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
): Promise<T | typeof ABORTED> {
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.resolve(ABORTED);
  return new Promise<T | typeof ABORTED>((resolve, reject) => {
    const onAbort = (): void => resolve(ABORTED);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

async function closeQuietly(connection: AmqpConnection): Promise<void> {
  try {
    await connection.close();
  } catch {
    // Already closed, or the socket is gone: nothing left to release.
  }
}

/**
 * Destroys the socket under an amqplib connection (`connection.stream`), for a close the broker
 * did not answer: amqplib waits for close-ok forever, and the open socket would keep the process
 * alive. Destroying it with an error lets amqplib run its own socket-error path (it emits
 * 'close' and stops the heartbeat timers). Clients without such a socket are left alone.
 */
function destroySocket(connection: AmqpConnection, reason: string): void {
  const inner: unknown = connection.connection;
  if (typeof inner !== 'object' || inner === null || !('stream' in inner)) return;
  const stream = inner.stream as { destroyed?: unknown; destroy?: unknown } | null;
  if (typeof stream?.destroy !== 'function' || stream.destroyed === true) return;
  (stream.destroy as (err: Error) => void).call(stream, new Error(reason));
}

/**
 * Closes the connection politely within `ms`, then makes sure its socket is gone: when the
 * broker did not answer in time, or when amqplib skipped the handshake because the connection
 * was blocked (the broker then does not read the socket, so it would stay half-open).
 */
async function release(session: Session, ms: number): Promise<void> {
  const answered = await withTimeout(closeQuietly(session.connection), ms).then(
    () => true,
    () => false,
  );
  if (!answered) {
    destroySocket(session.connection, `mailroom: RabbitMQ sent no close-ok within ${ms} ms`);
  } else if (session.state.blockedReason !== undefined) {
    destroySocket(session.connection, 'mailroom: closed a connection the broker blocks');
  }
}

/**
 * Owns the transport's session: opens it (at most one connect at a time), forgets it when it
 * dies so the next caller reconnects, backs off after failed connects, and closes it.
 */
export class SessionManager {
  readonly #options: Readonly<ResolvedRabbitMqTransportOptions>;
  #session: Session | undefined;
  #connecting: Promise<Session> | undefined;
  /** Set by {@link close}; a connect that finishes afterwards closes its own session. */
  #closed = false;
  // Reconnect backoff: consecutive failed connect attempts, and when the next may start.
  #failures = 0;
  #retryAt = 0;
  #lastConnectError: Error | undefined;

  constructor(options: Readonly<ResolvedRabbitMqTransportOptions>) {
    this.#options = options;
  }

  /** The session, while it is open. */
  get current(): Session | undefined {
    return this.#session?.open === true ? this.#session : undefined;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Lets {@link open} connect again after {@link close}. */
  reopen(): void {
    this.#closed = false;
  }

  /**
   * The open session, or a new one; at most one connect runs at a time. Unless `ignoreBackoff`,
   * fails at once with the last connect error while the reconnect backoff runs.
   */
  open(ignoreBackoff: boolean): Promise<Session> {
    if (this.#session?.open) return Promise.resolve(this.#session);
    if (this.#connecting) return this.#connecting;
    const wait = this.#retryAt - Date.now();
    if (!ignoreBackoff && wait > 0 && this.#lastConnectError) {
      return Promise.reject(backoffError(this.#lastConnectError, wait));
    }
    const connecting = this.#openSession().then(
      (session) => {
        this.#failures = 0;
        this.#retryAt = 0;
        this.#lastConnectError = undefined;
        return session;
      },
      (err: unknown) => {
        this.#failures++;
        // "Equal jitter": between half and all of the exponential delay. The jitter spreads the
        // reconnects of many relays; the floor keeps a broker that is down from being hammered.
        const cap = Math.min(
          this.#options.maxReconnectDelayMs,
          this.#options.reconnectDelayMs * 2 ** (this.#failures - 1),
        );
        this.#retryAt = Date.now() + Math.round(cap / 2 + (Math.random() * cap) / 2);
        this.#lastConnectError = err instanceof Error ? err : new Error(String(err));
        throw err;
      },
    );
    this.#connecting = connecting;
    void connecting.then(
      () => (this.#connecting = undefined),
      () => (this.#connecting = undefined),
    );
    return connecting;
  }

  /**
   * Stops handing out sessions, lets `drain` wait for the work still using the current one,
   * then closes it. A connect still running sees the flag and closes its own session when it
   * completes.
   */
  async close(drain: () => Promise<void>): Promise<void> {
    this.#closed = true;
    await drain();
    await this.#connecting?.catch(noop);
    const session = this.#session;
    if (session) await this.#dispose(session);
  }

  /** Runs {@link #connectOnce} under `connectTimeoutMs`; a session that opens too late is closed. */
  #openSession(): Promise<Session> {
    const { connectTimeoutMs, safeUrl } = this.#options;
    return new Promise<Session>((resolve, reject) => {
      let expired = false;
      const timer = setTimeout(() => {
        expired = true;
        reject(connectTimeoutError(safeUrl, connectTimeoutMs));
      }, connectTimeoutMs);
      this.#connectOnce().then(
        (session) => {
          clearTimeout(timer);
          if (expired) void this.#dispose(session);
          else resolve(session);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }

  async #connectOnce(): Promise<Session> {
    const options = this.#options;
    const connect = options.connect ?? (await loadAmqplibConnect());
    const userProperties = (options.socketOptions['clientProperties'] ?? {}) as Record<string, unknown>;
    const socketOptions = {
      // amqplib applies `timeout` to the socket until the handshake is done. A second past ours:
      // our deadline fires first and says "did not answer within"; amqplib's, a backstop, would
      // destroy the socket and read as "closed the connection" (a race a loaded machine lost).
      timeout: options.connectTimeoutMs + SOCKET_TIMEOUT_MARGIN_MS,
      // amqplib leaves Nagle's algorithm on: the second small publish of a batch then waits for
      // the broker to acknowledge the first segment, which it often does only with the confirm.
      // Off, confirms of small batches come back sooner (measured: p99 of 1–4-message batches
      // 13.5 → 10.3 ms, median of five runs). A user's `noDelay` still wins.
      noDelay: true,
      ...options.socketOptions,
      clientProperties: { connection_name: 'mailroom', ...userProperties },
    };

    let connection: AmqpConnection;
    try {
      connection = await connect(options.url, socketOptions);
    } catch (err) {
      throw connectError(err, options.url, options.safeUrl, options.connectTimeoutMs);
    }

    // Listeners go on before anything else can happen: an 'error' event without a listener
    // would throw from the client's socket handler and crash the process. The session does not
    // exist yet, so 'close' reaches it through `opened` once it does.
    const state: ConnectionState = {
      lostReason: undefined,
      channelException: undefined,
      blockedReason: undefined,
      closed: false,
    };
    const opened: { session?: Session } = {};
    connection.on('error', (err) => {
      state.lostReason ??= err;
    });
    connection.on('close', (err) => {
      if (err) state.lostReason ??= err;
      state.closed = true;
      if (opened.session) this.#lost(opened.session);
    });
    connection.on('blocked', (reason) => {
      state.blockedReason = reason;
    });
    connection.on('unblocked', () => {
      state.blockedReason = undefined;
    });

    let channel: AmqpConfirmChannel;
    try {
      channel = await connection.createConfirmChannel();
    } catch (err) {
      await closeQuietly(connection);
      throw channelFailedError(options.safeUrl, err);
    }
    const session: Session = { connection, channel, state, open: true, returned: new Map() };
    opened.session = session;
    channel.on('error', (err) => {
      // amqplib emits the broker's channel.close as an 'error' with the reply code, before the
      // channel's 'close' and before it fails the unconfirmed messages: by then the publish side
      // can tell a channel exception from a lost connection.
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'number' && CHANNEL_EXCEPTION_CODES.has(code) && !state.closed) {
        state.channelException ??= { code, error: err };
      } else {
        state.lostReason ??= err;
      }
    });
    channel.on('close', () => this.#lost(session));
    channel.on('return', (returned) => {
      const id = String(returned.properties.messageId);
      const list = session.returned.get(id);
      if (list) list.push(returned);
      else session.returned.set(id, [returned]);
    });
    if (state.closed) this.#lost(session);

    if (options.declareExchange) {
      try {
        await channel.assertExchange(options.exchange, options.exchangeType, { durable: true });
      } catch (err) {
        session.open = false;
        await closeQuietly(connection);
        throw declareFailedError(options.safeUrl, options.exchange, options.exchangeType, err);
      }
    }

    if (this.#closed) {
      // close() ran while this connect was in flight: do not leave a connection nobody owns.
      await this.#dispose(session);
      throw closedWhileConnectingError(options.safeUrl);
    }
    this.#session = session;
    return session;
  }

  /**
   * Forgets the session and closes its connection without waiting for anything it carries: the
   * broker did not answer (confirm timeout, aborted publish), so the next caller reconnects.
   * Unconfirmed messages on it fail as a lost connection. Resolves once the socket is gone.
   */
  drop(session: Session): Promise<void> {
    if (this.#session === session) this.#session = undefined;
    session.open = false;
    return release(session, CLOSE_HANDSHAKE_MS);
  }

  /** The connection or the channel ended; forget the session so the next caller reconnects. */
  #lost(session: Session): void {
    if (this.#session === session) this.#session = undefined;
    if (!session.open) return;
    session.open = false;
    // When only the channel died (say a publish to a missing exchange), close its connection
    // too: sessions are replaced whole, and a leftover connection would keep the process alive.
    void release(session, CLOSE_HANDSHAKE_MS);
  }

  async #dispose(session: Session): Promise<void> {
    if (this.#session === session) this.#session = undefined;
    session.open = false;
    // Closing the connection closes its channel too, in one handshake, so one bound covers both.
    await release(session, CLOSE_HANDSHAKE_MS);
  }
}
