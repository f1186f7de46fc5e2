import { TransportError } from '../../core/errors/transport-error.js';
import type { PublishOptions, PublishOutcome, Transport } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import { blockedError, closedError, probeAbortedError, publishAbortedError } from './rabbitmq-errors.js';
import {
  resolveRabbitMqOptions,
  type RabbitMqTransportOptions,
  type ResolvedRabbitMqTransportOptions,
} from './rabbitmq-options.js';
import { publishBatch } from './rabbitmq-publish.js';
import { noop, SessionManager, withTimeout, type Session } from './rabbitmq-session.js';

export { ATTEMPT_HEADER, KEY_HEADER } from './rabbitmq-publish.js';

/**
 * Publishes outbox messages to a RabbitMQ exchange over a confirm channel, with the topic as
 * routing key and the message id as AMQP `message-id`. A message is reported `ok` only after the
 * broker's publisher confirm (`basic.ack`).
 *
 * Reconnects lazily: when the connection is lost, in-flight messages report `unavailable` and
 * the next `publish` opens a new connection (with backoff after failed attempts). A broker that
 * blocks publishers or does not answer is `unavailable` too; a channel the broker closes over
 * what was published is `retry` (docs/transports/rabbitmq.md has the whole table, and why).
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
  /**
   * One confirm channel: a batch reaches the broker in order, so the relay batches runs of a
   * key's messages (see docs/design.md, "Runs").
   */
  readonly ordering = true;
  // Private: the resolved URL holds the password, and public fields end up in logs.
  readonly #options: Readonly<ResolvedRabbitMqTransportOptions>;
  readonly #sessions: SessionManager;
  #closing: Promise<void> | undefined;
  readonly #inFlight = new Set<Promise<PublishOutcome[]>>();

  constructor(options: RabbitMqTransportOptions) {
    this.#options = Object.freeze(resolveRabbitMqOptions(options));
    this.#sessions = new SessionManager(this.#options);
  }

  /** True while a connection and confirm channel are open. */
  get connected(): boolean {
    return this.#sessions.current !== undefined;
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
      this.#sessions.reopen();
    }
    // An explicit start always tries now, whatever the backoff says.
    await this.#sessions.open(true);
  }

  /**
   * Resolves when a connection is open and the broker does not block publishers; connects when
   * needed, at once whatever the reconnect backoff says (the relay paces its probes itself).
   * Throws a {@link TransportError}: the connect error (`unreachable`, `auth_failed`…), `blocked`
   * naming the broker's alarm, `closed`, or `probe_aborted` when `signal` aborts first.
   */
  async probe(options: PublishOptions = {}): Promise<void> {
    const { signal } = options;
    const { safeUrl } = this.#options;
    if (this.#sessions.closed) throw closedError(safeUrl);
    if (signal?.aborted) throw probeAbortedError(safeUrl, signal);
    const session = await untilAborted(this.#sessions.open(true), signal);
    if (session === ABORTED) throw probeAbortedError(safeUrl, signal as AbortSignal);
    if (session.state.blockedReason !== undefined) {
      throw blockedError(safeUrl, session.state.blockedReason);
    }
  }

  /**
   * Publishes the batch pipelined on the confirm channel and waits for the broker's confirms.
   * Never throws; returns one outcome per message, in order. When `signal` aborts first, resolves
   * at once: messages without an answer report `unavailable` (`publish_timeout`), the connection
   * is dropped (unless the broker said it is blocking publishers), and late confirms are ignored.
   */
  publish(messages: readonly OutboxMessage[], options: PublishOptions = {}): Promise<PublishOutcome[]> {
    if (messages.length === 0) return Promise.resolve([]);
    const call = this.#publish(messages, options.signal);
    this.#inFlight.add(call);
    void call.finally(() => this.#inFlight.delete(call));
    return call;
  }

  /**
   * Waits up to `closeTimeoutMs` for batches in flight, then closes the channel and the
   * connection. Idempotent. Messages still unconfirmed then report `unavailable`.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #publish(
    messages: readonly OutboxMessage[],
    signal: AbortSignal | undefined,
  ): Promise<PublishOutcome[]> {
    const { safeUrl } = this.#options;
    if (this.#sessions.closed) {
      const error = closedError(safeUrl);
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    let session: Session | typeof ABORTED;
    try {
      session = signal?.aborted ? ABORTED : await untilAborted(this.#sessions.open(false), signal);
    } catch (err) {
      const error = err instanceof Error ? err : new TransportError('unreachable', String(err));
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    if (session === ABORTED) {
      const aborted = signal as AbortSignal;
      return messages.map((message) => ({
        status: 'unavailable',
        error: publishAbortedError(safeUrl, message, aborted, 'connecting', undefined),
      }));
    }
    const blocked = session.state.blockedReason;
    if (blocked !== undefined) {
      // Writing into a blocked connection only fills buffers the broker does not read; the
      // relay probes until the alarm clears instead.
      const error = blockedError(this.#options.safeUrl, blocked);
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    const result = await publishBatch(session, messages, this.#options, signal);
    // A broker that did not answer in time (confirm timeout, or the caller gave up) is not worth
    // waiting on again: the next publish reconnects, and a socket nobody reads from would keep
    // the process alive. A blocked one did say why it is silent; keeping its connection lets probe()
    // report the alarm until it clears, and the confirms still come once it does.
    if (result.unanswered && session.state.blockedReason === undefined) {
      void this.#sessions.drop(session);
    }
    return result.outcomes;
  }

  async #shutdown(): Promise<void> {
    // From here on, publish reports 'closed' and a connect still running disposes of its session.
    await this.#sessions.close(async () => {
      if (this.#inFlight.size === 0) return;
      await withTimeout(Promise.allSettled([...this.#inFlight]), this.#options.closeTimeoutMs).catch(noop);
    });
    // Batches cut short by the channel closing settle as unavailable right away.
    await Promise.allSettled([...this.#inFlight]);
  }
}

const ABORTED: unique symbol = Symbol('aborted');

/**
 * `promise`'s value, or {@link ABORTED} as soon as `signal` aborts (the promise goes on, its
 * result unused). Rejects when `promise` rejects first.
 */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T | typeof ABORTED> {
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
