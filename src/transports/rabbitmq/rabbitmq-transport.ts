import { TransportError } from '../../core/errors/transport-error.js';
import type { PublishOutcome, Transport } from '../../core/ports.js';
import type { OutboxMessage } from '../../core/types.js';
import { blockedError, closedError } from './rabbitmq-errors.js';
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
 * the next `publish` opens a new connection (with backoff after failed attempts). See
 * {@link publishBatch} for how each failure is classified.
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

  /** Resolves when a connection is open and the broker does not block publishers. */
  async probe(): Promise<void> {
    const session = await this.#sessions.open(true);
    if (session.state.blockedReason !== undefined) {
      throw blockedError(this.#options.safeUrl, session.state.blockedReason);
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
   * connection. Idempotent. Messages still unconfirmed then report `unavailable`.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #publish(messages: readonly OutboxMessage[]): Promise<PublishOutcome[]> {
    if (this.#sessions.closed) {
      const error = closedError(this.#options.safeUrl);
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    let session: Session;
    try {
      session = await this.#sessions.open(false);
    } catch (err) {
      const error = err instanceof Error ? err : new TransportError('unreachable', String(err));
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    const blocked = session.state.blockedReason;
    if (blocked !== undefined) {
      // Writing into a blocked connection only fills buffers the broker does not read; the
      // relay probes until the alarm clears instead.
      const error = blockedError(this.#options.safeUrl, blocked);
      return messages.map(() => ({ status: 'unavailable', error }));
    }
    const result = await publishBatch(session, messages, this.#options);
    // A broker that did not answer in time is not worth waiting on again: the next publish
    // reconnects. A blocked one did say why it is silent; keeping its connection lets probe()
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
