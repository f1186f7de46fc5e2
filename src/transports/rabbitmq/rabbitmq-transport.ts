import { ConfigError } from '../../core/errors/config-error.js';
import { isMailroomError } from '../../core/errors/mailroom-error.js';
import { PermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { TransportError } from '../../core/errors/transport-error.js';
import type { PublishOutcome, Transport } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import {
  loadAmqplibConnect,
  type AmqpConfirmChannel,
  type AmqpConnection,
  type AmqpPublishOptions,
  type AmqpReturnedMessage,
} from './amqp-client.js';
import {
  resolveRabbitMqOptions,
  type RabbitMqTransportOptions,
  type ResolvedRabbitMqTransportOptions,
} from './rabbitmq-options.js';

/** Header carrying the message key (absent for keyless messages). */
export const KEY_HEADER = 'mailroom-key';
/** Header carrying the delivery attempt, `'1'` for the first, as a decimal string. */
export const ATTEMPT_HEADER = 'mailroom-attempt';

/** One connection with its confirm channel; replaced as a whole when either dies. */
interface Session {
  connection: AmqpConnection;
  channel: AmqpConfirmChannel;
  open: boolean;
  /**
   * Messages the broker returned (mandatory, unroutable), by message id, waiting for their ack.
   * RabbitMQ sends `basic.return` before the `basic.ack` of the same message, so the ack callback
   * finds the return here and turns the outcome into `permanent`.
   */
  returned: Map<string, AmqpReturnedMessage[]>;
  /** The error that ended the session, when the client reported one before 'close'. */
  lostReason: Error | undefined;
  /** Set while the broker blocks publishers (resource alarm); explains confirm timeouts. */
  blockedReason: string | undefined;
}

/** Per-call state of `publish`, shared by the send loop, the confirm callbacks and the timer. */
interface BatchState {
  outcomes: Array<PublishOutcome | undefined>;
  pending: number;
  finished: boolean;
  done: () => void;
  /** Wakes the send loop when it waits for 'drain' and the batch ends early. */
  wake: (() => void) | undefined;
}

const noop = (): void => {};

/**
 * Publishes outbox messages to a RabbitMQ exchange over a confirm channel, with the topic as
 * routing key and the message id as AMQP `message-id`. A message is reported `ok` only after the
 * broker's publisher confirm (`basic.ack`).
 *
 * Reconnects lazily: when the connection or channel is lost, in-flight messages report `retry`
 * and the next `publish` opens a new connection (with backoff after failed attempts).
 *
 * @example
 * ```ts
 * const transport = new RabbitMqTransport({ url: 'amqp://guest:guest@localhost:5672', mandatory: true });
 * await transport.start();
 * const outcomes = await transport.publish(messages);
 * await transport.close();
 * ```
 */
export class RabbitMqTransport implements Transport {
  readonly name = 'rabbitmq';
  // Private: the resolved URL holds the password, and public fields end up in logs.
  readonly #options: Readonly<ResolvedRabbitMqTransportOptions>;

  #session: Session | undefined;
  #connecting: Promise<Session> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #inFlight = new Set<Promise<PublishOutcome[]>>();
  // Reconnect backoff: consecutive failed connect attempts, and when the next may start.
  #failures = 0;
  #retryAt = 0;
  #lastConnectError: Error | undefined;

  constructor(options: RabbitMqTransportOptions) {
    this.#options = Object.freeze(resolveRabbitMqOptions(options));
  }

  /** True while a connection and confirm channel are open. */
  get connected(): boolean {
    return this.#session?.open === true;
  }

  /**
   * Connects, opens a confirm channel and declares the exchange. Idempotent. Reopens a closed
   * transport. Throws a {@link TransportError} (`unreachable`, `auth_failed`, `vhost_refused`,
   * `declare_failed`) or a {@link ConfigError} when amqplib is missing.
   */
  async start(): Promise<void> {
    if (this.#closing) {
      await this.#closing;
      this.#closing = undefined;
      this.#closed = false;
    }
    // An explicit start always tries now, whatever the backoff says.
    await this.#ensureSession(true);
  }

  /** Resolves when a connection is open and the broker does not block publishers. */
  async probe(): Promise<void> {
    const session = await this.#ensureSession(true);
    if (session.blockedReason !== undefined) {
      throw new TransportError(
        'blocked',
        `RabbitMQ at ${this.#options.safeUrl} is blocking publishers (${session.blockedReason})`,
      );
    }
  }

  /**
   * Publishes the batch pipelined on the confirm channel and waits for the broker's confirms.
   * Never throws; returns one outcome per message, in order.
   */
  publish(messages: readonly OutboxMessage[]): Promise<PublishOutcome[]> {
    if (messages.length === 0) return Promise.resolve([]);
    const call = this.#publish(messages);
    this.#inFlight.add(call);
    void call.finally(() => this.#inFlight.delete(call));
    return call;
  }

  /**
   * Waits up to `closeTimeoutMs` for batches in flight, then closes the channel and the
   * connection. Idempotent. Messages still unconfirmed then report `retry`.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #publish(messages: readonly OutboxMessage[]): Promise<PublishOutcome[]> {
    if (this.#closed) {
      const error = new TransportError(
        'closed',
        `RabbitMqTransport for ${this.#options.safeUrl} is closed; call start() to open it again`,
      );
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    let session: Session;
    try {
      session = await this.#ensureSession(false);
    } catch (err) {
      const error = err instanceof Error ? err : new TransportError('unreachable', String(err));
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    return this.#sendBatch(session, messages);
  }

  #sendBatch(session: Session, messages: readonly OutboxMessage[]): Promise<PublishOutcome[]> {
    const { exchange, mandatory, confirmTimeoutMs } = this.#options;
    return new Promise<PublishOutcome[]>((resolve) => {
      const batch: BatchState = {
        outcomes: new Array<PublishOutcome | undefined>(messages.length).fill(undefined),
        pending: messages.length,
        finished: false,
        wake: undefined,
        done: () => {
          batch.finished = true;
          clearTimeout(timer);
          batch.wake?.();
          resolve(batch.outcomes as PublishOutcome[]);
        },
      };
      const settle = (index: number, outcome: PublishOutcome): void => {
        if (batch.outcomes[index] !== undefined) return; // a late confirm after the timeout
        batch.outcomes[index] = outcome;
        if (--batch.pending === 0) batch.done();
      };

      const timer = setTimeout(() => {
        messages.forEach((message, index) => {
          settle(index, { status: 'retry', error: this.#confirmTimeoutError(session, message) });
        });
      }, confirmTimeoutMs);

      const send = async (): Promise<void> => {
        for (let index = 0; index < messages.length; index++) {
          const message = messages[index] as OutboxMessage;
          if (batch.finished) return;
          if (!session.open) {
            settle(index, { status: 'retry', error: this.#channelClosedError(session, message) });
            continue;
          }
          let writable: boolean;
          try {
            writable = session.channel.publish(
              exchange,
              message.topic,
              message.payload,
              this.#properties(message, mandatory),
              (err) => settle(index, this.#confirmOutcome(session, message, err)),
            );
          } catch (err) {
            settle(index, this.#sendFailure(session, message, err));
            continue;
          }
          // Backpressure: the client buffers frames until the socket takes them. Stop when it
          // says its buffer is full, instead of queueing the whole batch in memory.
          if (!writable && index < messages.length - 1) await this.#drained(session, batch);
        }
      };
      send().catch((err: unknown) => {
        // Not expected (the loop catches per message), but a batch must never hang or reject.
        messages.forEach((message, index) => {
          settle(index, { status: 'retry', error: this.#channelClosedError(session, message, err) });
        });
      });
    });
  }

  #properties(message: OutboxMessage, mandatory: boolean): AmqpPublishOptions {
    const headers: Record<string, unknown> = {
      ...message.headers,
      [ATTEMPT_HEADER]: String(message.attempts),
    };
    if (message.key !== null) headers[KEY_HEADER] = message.key;
    else delete headers[KEY_HEADER]; // a user header must not pose as the key
    const properties: AmqpPublishOptions = {
      mandatory,
      persistent: true,
      messageId: message.id,
      contentType: message.contentType,
      timestamp: Math.floor(message.createdAt.getTime() / 1000),
      headers,
    };
    if (message.type !== null) properties.type = message.type;
    return properties;
  }

  #drained(session: Session, batch: BatchState): Promise<void> {
    if (!session.open) return Promise.resolve();
    return new Promise((resolve) => {
      const finish = (): void => {
        session.channel.removeListener('drain', finish);
        session.channel.removeListener('close', finish);
        batch.wake = undefined;
        resolve();
      };
      session.channel.on('drain', finish);
      session.channel.on('close', finish);
      batch.wake = finish;
    });
  }

  #confirmOutcome(session: Session, message: OutboxMessage, err: unknown): PublishOutcome {
    // Take the return even when the outcome is already settled, so the map does not grow.
    const returns = session.returned.get(message.id);
    const returned = returns?.shift();
    if (returns?.length === 0) session.returned.delete(message.id);

    if (err === null || err === undefined) {
      if (returned === undefined) return { status: 'ok' };
      const { exchange } = this.#options;
      const code = returned.fields.replyCode ?? 312;
      const text = returned.fields.replyText ?? 'NO_ROUTE';
      return {
        status: 'permanent',
        error: new PermanentDeliveryError(
          `RabbitMQ returned message ${message.id} as unroutable (${code} ${text}): exchange ` +
            `${JSON.stringify(exchange)} has no queue bound for topic ${JSON.stringify(message.topic)}; ` +
            'bind a queue to the exchange for this topic and replay the dead letter, ' +
            'or set mandatory: false to let the broker drop unroutable messages',
          {
            details: {
              messageId: message.id,
              topic: message.topic,
              exchange,
              replyCode: code,
              replyText: text,
            },
          },
        ),
      };
    }
    // amqplib reports a nack as 'message nacked' and a channel lost with messages unconfirmed as
    // 'channel closed'; anything else is treated as lost too, which is the safe reading (retry).
    if ((err as { message?: unknown }).message === 'message nacked') {
      return {
        status: 'retry',
        error: new TransportError(
          'nacked',
          `RabbitMQ nacked message ${message.id} (topic ${JSON.stringify(message.topic)}) on exchange ` +
            `${JSON.stringify(this.#options.exchange)}: the broker did not take it (a full queue with ` +
            'overflow reject-publish, or an internal error); it will be published again',
          { cause: err, details: { messageId: message.id, topic: message.topic } },
        ),
      };
    }
    return { status: 'retry', error: this.#confirmLostError(session, message, err) };
  }

  #confirmLostError(session: Session, message: OutboxMessage, err: unknown): TransportError {
    const reason = session.lostReason;
    return new TransportError(
      'confirm_lost',
      `the channel to RabbitMQ at ${this.#options.safeUrl} closed before the broker confirmed message ` +
        `${message.id} (topic ${JSON.stringify(message.topic)})${reason ? `: ${reason.message}` : ''}; ` +
        'it will be published again with the same message id, so consumers may see it twice',
      { cause: reason ?? err, details: { messageId: message.id, topic: message.topic } },
    );
  }

  #channelClosedError(session: Session, message: OutboxMessage, cause?: unknown): TransportError {
    const reason = session.lostReason;
    return new TransportError(
      'channel_closed',
      `message ${message.id} was not sent: the channel to RabbitMQ at ${this.#options.safeUrl} closed ` +
        `during the batch${reason ? ` (${reason.message})` : ''}; the next publish reconnects`,
      { cause: reason ?? cause, details: { messageId: message.id, topic: message.topic } },
    );
  }

  #confirmTimeoutError(session: Session, message: OutboxMessage): TransportError {
    const blocked = session.blockedReason;
    return new TransportError(
      'confirm_timeout',
      `no confirm from RabbitMQ at ${this.#options.safeUrl} for message ${message.id} within ` +
        `${this.#options.confirmTimeoutMs} ms` +
        (blocked === undefined
          ? ''
          : `; the broker is blocking publishers (${blocked}): a memory or disk alarm, which clears when consumers catch up`) +
        '; it will be published again with the same message id (the broker may have it already)',
      {
        details: {
          messageId: message.id,
          topic: message.topic,
          confirmTimeoutMs: this.#options.confirmTimeoutMs,
        },
      },
    );
  }

  #sendFailure(session: Session, message: OutboxMessage, err: unknown): PublishOutcome {
    // The client checks the message before writing anything: a RangeError or TypeError means this
    // message can never be encoded (headers over the 64 KiB table limit…), so retrying is useless.
    if (err instanceof RangeError || err instanceof TypeError) {
      return {
        status: 'permanent',
        error: new PermanentDeliveryError(
          `message ${message.id} (topic ${JSON.stringify(message.topic)}) cannot be encoded as an AMQP ` +
            `message: ${err.message}; make its headers smaller`,
          { cause: err, details: { messageId: message.id, topic: message.topic } },
        ),
      };
    }
    // Otherwise the channel is closing or closed (amqplib's IllegalOperationError).
    return { status: 'retry', error: this.#channelClosedError(session, message, err) };
  }

  /** The open session, or a new one; at most one connect runs at a time. */
  #ensureSession(ignoreBackoff: boolean): Promise<Session> {
    if (this.#session?.open) return Promise.resolve(this.#session);
    if (this.#connecting) return this.#connecting;
    const wait = this.#retryAt - Date.now();
    if (!ignoreBackoff && wait > 0 && this.#lastConnectError) {
      const last = this.#lastConnectError;
      return Promise.reject(
        new TransportError(
          isMailroomError(last) ? last.code : 'unreachable',
          `${last.message} (next reconnect attempt in ${wait} ms)`,
          { cause: last },
        ),
      );
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

  /** Runs {@link #connectOnce} under `connectTimeoutMs`; a session that opens too late is closed. */
  #openSession(): Promise<Session> {
    const { connectTimeoutMs, safeUrl } = this.#options;
    return new Promise<Session>((resolve, reject) => {
      let expired = false;
      const timer = setTimeout(() => {
        expired = true;
        reject(
          new TransportError(
            'unreachable',
            `cannot connect to RabbitMQ at ${safeUrl}: no answer within ${connectTimeoutMs} ms; check that ` +
              'the broker is running and reachable from this host (host, port, firewall, TLS)',
            { details: { url: safeUrl, connectTimeoutMs } },
          ),
        );
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
      // amqplib applies `timeout` to the socket until the handshake is done.
      timeout: options.connectTimeoutMs,
      ...options.socketOptions,
      clientProperties: { connection_name: 'mailroom', ...userProperties },
    };

    let connection: AmqpConnection;
    try {
      connection = await connect(options.url, socketOptions);
    } catch (err) {
      throw connectError(err, options.url, options.safeUrl);
    }

    const session: Session = {
      connection,
      channel: undefined as unknown as AmqpConfirmChannel,
      open: false,
      returned: new Map(),
      lostReason: undefined,
      blockedReason: undefined,
    };
    // Listeners go on before anything else can happen: an 'error' event without a listener
    // would throw from the client's socket handler and crash the process.
    connection.on('error', (err) => {
      session.lostReason ??= err;
    });
    connection.on('close', (err) => this.#lost(session, err));
    connection.on('blocked', (reason) => {
      session.blockedReason = reason;
    });
    connection.on('unblocked', () => {
      session.blockedReason = undefined;
    });

    try {
      session.channel = await connection.createConfirmChannel();
    } catch (err) {
      await closeQuietly(connection);
      throw new TransportError(
        'channel_failed',
        `connected to RabbitMQ at ${options.safeUrl} but could not open a confirm channel: ${describe(err)}; ` +
          'check the broker logs (channel_max reached?)',
        { cause: err, details: { url: options.safeUrl } },
      );
    }
    const channel = session.channel;
    channel.on('error', (err) => {
      session.lostReason ??= err;
    });
    channel.on('close', () => this.#lost(session));
    channel.on('return', (returned) => {
      const id = String(returned.properties.messageId);
      const list = session.returned.get(id);
      if (list) list.push(returned);
      else session.returned.set(id, [returned]);
    });
    session.open = true;

    if (options.declareExchange) {
      try {
        await channel.assertExchange(options.exchange, options.exchangeType, { durable: true });
      } catch (err) {
        session.open = false;
        await closeQuietly(connection);
        throw new TransportError(
          'declare_failed',
          `RabbitMQ at ${options.safeUrl} refused to declare exchange ${JSON.stringify(options.exchange)} ` +
            `(type ${options.exchangeType}, durable): ${describe(err)}; if the exchange exists with another ` +
            'type or durability, set exchangeType to match or delete it; if the user may not configure ' +
            'exchanges, create it elsewhere and set declareExchange: false',
          { cause: err, details: { url: options.safeUrl, exchange: options.exchange } },
        );
      }
    }

    if (this.#closed) {
      // close() ran while this connect was in flight: do not leave a connection nobody owns.
      await this.#dispose(session);
      throw new TransportError(
        'closed',
        `RabbitMqTransport for ${options.safeUrl} was closed while connecting`,
      );
    }
    this.#session = session;
    return session;
  }

  /** The connection or the channel ended; forget the session so the next publish reconnects. */
  #lost(session: Session, err?: Error): void {
    if (err) session.lostReason ??= err;
    if (this.#session === session) this.#session = undefined;
    if (!session.open) return;
    session.open = false;
    // When only the channel died (say a publish to a missing exchange), close its connection
    // too: sessions are replaced whole, and a leftover connection would keep the process alive.
    void closeQuietly(session.connection);
  }

  async #dispose(session: Session): Promise<void> {
    if (this.#session === session) this.#session = undefined;
    const wasOpen = session.open;
    session.open = false;
    const limit = Math.max(this.#options.closeTimeoutMs, 1000);
    if (wasOpen) await withTimeout(session.channel.close(), limit).catch(noop);
    await withTimeout(session.connection.close(), limit).catch(noop);
  }

  async #shutdown(): Promise<void> {
    this.#closed = true;
    if (this.#inFlight.size > 0) {
      await withTimeout(Promise.allSettled([...this.#inFlight]), this.#options.closeTimeoutMs).catch(noop);
    }
    // A connect still running sees #closed and disposes of its own session.
    await this.#connecting?.catch(noop);
    const session = this.#session;
    if (session) await this.#dispose(session);
    // Batches cut short by the channel closing settle as retry right away.
    await Promise.allSettled([...this.#inFlight]);
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function closeQuietly(connection: AmqpConnection): Promise<void> {
  try {
    await connection.close();
  } catch {
    // Already closed, or the socket is gone: nothing left to release.
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
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

/** Turns a client's connect failure into an error that says what went wrong and what to do. */
function connectError(err: unknown, url: string, safeUrl: string): Error {
  if (isMailroomError(err)) return err; // already explained (amqplib missing…)
  const message = describe(err);
  const details = { url: safeUrl };
  if (/ACCESS[-_]REFUSED|\b403\b/.test(message)) {
    return new TransportError(
      'auth_failed',
      `RabbitMQ at ${safeUrl} refused the login (${message}); check the user name and password in the ` +
        'URL (percent-encode special characters) and that the user exists: rabbitmqctl list_users',
      { cause: err, details },
    );
  }
  if (/ConnectionOpenOk; got <ConnectionClose|NOT[-_]ALLOWED|\b530\b/.test(message)) {
    let vhost = '/';
    try {
      vhost = decodeURIComponent(new URL(url).pathname.slice(1)) || '/';
    } catch {
      // keep the default
    }
    return new TransportError(
      'vhost_refused',
      `RabbitMQ at ${safeUrl} refused access to virtual host ${JSON.stringify(vhost)}; check that it exists ` +
        `and that the user has permissions on it: rabbitmqctl set_permissions -p ${JSON.stringify(vhost)} <user> ".*" ".*" ".*"`,
      { cause: err, details: { ...details, vhost } },
    );
  }
  // Thrown synchronously by the client for a URL it cannot use; options validation should have
  // caught it, but a custom connect function may have stricter rules.
  if (/Expected amqp: or amqps:/.test(message)) {
    return new ConfigError(
      'url',
      `RabbitMQ client rejected url ${JSON.stringify(safeUrl)}: ${message}`,
      {},
      err,
    );
  }
  return new TransportError(
    'unreachable',
    `cannot connect to RabbitMQ at ${safeUrl}: ${message}; check that the broker is running and reachable ` +
      'from this host, and the host, port and scheme (amqp/amqps) in the URL',
    { cause: err, details },
  );
}
