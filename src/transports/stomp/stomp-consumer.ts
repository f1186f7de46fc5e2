import { toOutboxMessages } from '../../core/broker-transaction.js';
import { systemClock } from '../../core/clock.js';
import { ConfigError } from '../../core/errors/config-error.js';
import { isPermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import type { ResolvedRetryPolicy } from '../../core/retry-policy.js';
import { retryDelayMs } from '../../core/retry-policy.js';
import { TypedEmitter } from '../../core/typed-emitter.js';
import type { MessageInput, OutboxMessage, ReceivedMessage } from '../../core/types.js';
import { AttemptLedger } from '../../consumer/attempt-ledger.js';
import type { ConsumerContext, ConsumerHandler, MessageConsumer } from '../../consumer/consumer.js';
import { HandlerLanes } from '../../consumer/handler-lanes.js';
import type { StompConsumerEvents } from './stomp-consumer-events.js';
import {
  resolveStompConsumerOptions,
  type ResolvedStompConsumerOptions,
  type StompConsumerOptions,
} from './stomp-consumer-options.js';
import {
  openConsumerSession,
  ReceiveTransaction,
  sendAck,
  sendDeadLetter,
  type ConsumerSession,
  type DeadLetterReason,
} from './stomp-consumer-session.js';
import { connectionLostError, messageTooLargeError } from './stomp-errors.js';
import type { StompFrame } from './stomp-frame.js';
import { destinationFor } from './stomp-options.js';
import { decodeMessage, sendHeaders } from './stomp-wire.js';

/** A MESSAGE and the session it came on: only that connection can acknowledge it. */
interface Delivery {
  readonly session: ConsumerSession;
  readonly frame: StompFrame;
}

type RunOutcome = 'processed' | 'duplicate' | 'abandoned';

/**
 * Consumes a STOMP destination of messages sent by Mailroom's relay (or any publisher that sets a
 * UUID `mailroom-id` header) and runs a handler for each, with the shape every Mailroom consumer
 * has ({@link MessageConsumer}): once per message id with an `inbox`, acknowledged (ACK,
 * client-individual) only after the inbox transaction committed; retried in the process with
 * backoff, then sent to the dead-letter destination (with a RECEIPT) and only then acknowledged;
 * serial per key; reconnecting; draining on stop.
 *
 * With `transacted: true` (and no inbox), `context.publish(messages)` sends in a STOMP transaction
 * that also acknowledges the input, committed once the handler returned: a crash never loses the
 * input and never leaves its outputs at the broker with the input still to be handled again.
 *
 * @example
 * ```ts
 * const consumer = new StompConsumer({
 *   url: 'stomp://guest:guest@127.0.0.1:61613',
 *   destination: '/queue/order.created',
 *   transacted: true,
 *   handler: async (message, _tx, context) => {
 *     await context.publish!([{ topic: 'invoice.requested', key: message.key, payload: message.payload }]);
 *   },
 * });
 * await consumer.start();
 * // …
 * await consumer.stop();
 * ```
 */
export class StompConsumer<Tx = undefined>
  extends TypedEmitter<StompConsumerEvents>
  implements MessageConsumer
{
  /** The destination consumed. */
  readonly destination: string;
  /** Where failed and undecodable messages go. */
  readonly deadLetterDestination: string;
  readonly #options: Readonly<ResolvedStompConsumerOptions>;
  readonly #run: (message: ReceivedMessage, context: ConsumerContext) => Promise<'processed' | 'duplicate'>;
  readonly #prune: (() => Promise<number>) | undefined;
  #pruneTimer: ReturnType<typeof setTimeout> | undefined;
  #pruning: Promise<void> | undefined;
  readonly #lanes: HandlerLanes;
  readonly #attempts = new AttemptLedger();
  #state: 'idle' | 'starting' | 'running' | 'stopping' = 'idle';
  #session: ConsumerSession | undefined;
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #reconnecting: Promise<void> | undefined;
  #stopController = new AbortController();
  readonly #inFlight = new Set<Promise<void>>();
  #abandoned = 0;

  constructor(options: StompConsumerOptions<Tx>) {
    const resolved = resolveStompConsumerOptions(options);
    super(resolved.logger);
    this.#options = Object.freeze(resolved);
    this.destination = resolved.destination;
    this.deadLetterDestination = resolved.deadLetterDestination;
    this.#lanes = new HandlerLanes(resolved.concurrency);
    if (options.inbox !== undefined) {
      const { inbox, handler } = options;
      this.#run = async (message, outer) => {
        const result = await inbox.handle(message, (tx, context) =>
          handler(message, tx, { message: context.message, ack: (r) => context.ack(r), ...publishOf(outer) }),
        );
        return result.status;
      };
      const prune = typeof inbox.prune === 'function' ? inbox.prune : undefined;
      this.#prune = prune && (() => prune.call(inbox));
    } else {
      this.#prune = undefined;
      const handler = options.handler as ConsumerHandler<undefined>;
      this.#run = async (message, context) => {
        await handler(message, undefined, context);
        return 'processed';
      };
    }
  }

  /** True between a successful start() and stop(), also while reconnecting. */
  get running(): boolean {
    return this.#state === 'running';
  }

  /** True while a connection is open and subscribed. */
  get connected(): boolean {
    return this.#session?.connection.open === true;
  }

  /**
   * Connects, logs in and subscribes. Idempotent; starts a stopped consumer again. Throws a
   * `TransportError` (`unreachable`, `not_stomp`, `auth_failed`, `vhost_refused`,
   * `subscribe_failed`). Later losses are not thrown: the consumer reconnects.
   */
  async start(): Promise<void> {
    if (this.#stopping) await this.#stopping;
    if (this.#state === 'running') return;
    this.#starting ??= this.#start().finally(() => (this.#starting = undefined));
    return this.#starting;
  }

  /**
   * Stops taking deliveries, waits for running handlers up to `timeoutMs` (default
   * `stopTimeoutMs`) and disconnects. Deliveries not handled are left unacknowledged: the broker
   * redelivers them. Idempotent; never rejects.
   */
  stop(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.#state === 'idle' && !this.#starting) return this.#stopping ?? Promise.resolve();
    this.#stopping ??= this.#shutdown(options.timeoutMs ?? this.#options.stopTimeoutMs).finally(
      () => (this.#stopping = undefined),
    );
    return this.#stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  async #start(): Promise<void> {
    this.#state = 'starting';
    this.#stopController = new AbortController();
    try {
      const session = await this.#open();
      if (this.#state !== 'starting') {
        await session.connection.close(
          connectionLostError(this.#options.endpoint.safeUrl, 'stopped while starting'),
        );
        throw connectionLostError(this.#options.endpoint.safeUrl, 'the consumer was stopped while starting');
      }
      this.#state = 'running';
      this.#adopt(session);
    } catch (err) {
      if (this.#state === 'starting') this.#state = 'idle';
      throw err;
    }
    this.logger.info('consumer started', {
      destination: this.destination,
      url: this.#options.endpoint.safeUrl,
    });
    this.emit('consumer:started', { destination: this.destination });
    this.#schedulePrune(0);
  }

  #open(): Promise<ConsumerSession> {
    return openConsumerSession(this.#options, (session, frame) => this.#onMessage({ session, frame }));
  }

  #adopt(session: ConsumerSession): void {
    this.#session = session;
    const onEnd = () => this.#onLost(session, session.connection.lostReason ?? new Error('connection ended'));
    if (session.connection.ended.aborted) onEnd();
    else session.connection.ended.addEventListener('abort', onEnd, { once: true });
  }

  #schedulePrune(delayMs: number): void {
    const interval = this.#options.pruneIntervalMs;
    const prune = this.#prune;
    if (prune === undefined || interval === 0 || this.#state !== 'running') return;
    this.#pruneTimer = setTimeout(() => {
      this.#pruneTimer = undefined;
      this.#pruning = this.#pruneOnce(prune).finally(() => {
        this.#pruning = undefined;
        this.#schedulePrune(interval);
      });
    }, delayMs);
    this.#pruneTimer.unref();
  }

  async #pruneOnce(prune: () => Promise<number>): Promise<void> {
    const started = performance.now();
    try {
      const deleted = await prune();
      this.emit('consumer:inbox:pruned', { deleted, durationMs: performance.now() - started });
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.logger.warn('inbox prune failed; trying again at the next interval', { error: error.message });
      this.emit('consumer:error', { phase: 'prune', id: null, error });
    }
  }

  async #shutdown(timeoutMs: number): Promise<void> {
    this.#state = 'stopping';
    this.#abandoned = 0;
    this.#stopController.abort();
    clearTimeout(this.#pruneTimer);
    this.#pruneTimer = undefined;
    await this.#starting?.catch(() => {});
    await this.#reconnecting;
    // No UNSUBSCRIBE: a broker may refuse the ACKs of handlers still running once the subscription
    // is gone. New deliveries are ignored from here on and return to the queue when the connection
    // closes.
    const drained = await within(Promise.allSettled([...this.#inFlight]), timeoutMs);
    await this.#pruning;
    const running = drained ? 0 : this.#inFlight.size;
    if (running > 0) {
      this.logger.warn('consumer stop deadline passed with handlers running', {
        destination: this.destination,
        running,
        timeoutMs,
      });
    }
    const session = this.#session;
    this.#session = undefined;
    if (session)
      await session.connection.close(connectionLostError(this.#options.endpoint.safeUrl, 'consumer stopped'));
    this.#state = 'idle';
    const abandoned = this.#abandoned + running;
    this.logger.info('consumer stopped', { destination: this.destination, abandoned });
    this.emit('consumer:stopped', { abandoned });
  }

  #onMessage(delivery: Delivery): void {
    if (this.#state !== 'running' && this.#state !== 'starting') {
      this.#abandoned++;
      return;
    }
    const work = this.#handle(delivery);
    this.#inFlight.add(work);
    void work.finally(() => this.#inFlight.delete(work));
  }

  #handle(delivery: Delivery): Promise<void> {
    const decoded = decodeMessage(delivery.frame);
    if (!decoded.ok) {
      return this.#deadLetter(delivery, null, decoded.id, {
        reason: 'malformed',
        error: decoded.error,
        failedAttempts: 0,
      });
    }
    const { message } = decoded;
    const key = this.#options.serialByKey ? message.key : null;
    return this.#lanes.run(key, () => this.#process(delivery, message));
  }

  #usable(delivery: Delivery): boolean {
    return delivery.session.connection.open && (this.#state === 'running' || this.#state === 'starting');
  }

  async #process(delivery: Delivery, message: ReceivedMessage): Promise<void> {
    const retry = this.#options.retry as ResolvedRetryPolicy;
    for (;;) {
      if (!this.#usable(delivery)) {
        this.#abandoned++;
        return;
      }
      const known = this.#attempts.get(message.id);
      if (known.failures >= retry.maxAttempts) {
        const error = known.lastError ?? new Error(`failed ${known.failures} times`);
        return this.#deadLetter(delivery, message, message.id, {
          reason: 'handler_failed',
          error,
          failedAttempts: known.failures,
        });
      }
      await this.#lanes.acquire();
      let outcome: RunOutcome = 'abandoned';
      let error: Error | undefined;
      const started = performance.now();
      try {
        if (this.#usable(delivery)) outcome = await this.#runOnce(delivery, message);
      } catch (err) {
        error = err instanceof Error ? err : new Error(String(err));
      } finally {
        this.#lanes.release();
      }
      if (error !== undefined && !delivery.session.connection.open && !isPermanentDeliveryError(error)) {
        // The connection ended under the handler (its transaction or ACK could not complete): not a
        // failure of the message; the broker redelivers it.
        outcome = 'abandoned';
        error = undefined;
      }
      if (error === undefined) {
        if (outcome === 'abandoned') {
          this.#abandoned++;
          return;
        }
        this.#attempts.forget(message.id);
        // Transacted: the ACK was part of the committed transaction.
        if (!this.#options.transacted) this.#ack(delivery, message.id);
        if (outcome === 'duplicate') {
          this.logger.debug('duplicate message acknowledged', { id: message.id, topic: message.topic });
          this.emit('consumer:message:duplicate', { message });
        } else {
          const durationMs = performance.now() - started;
          this.logger.debug('message handled', { id: message.id, topic: message.topic, durationMs });
          this.emit('consumer:message:handled', { message, attempt: known.failures + 1, durationMs });
        }
        return;
      }
      const failedAttempts = this.#attempts.fail(message.id, error);
      if (isPermanentDeliveryError(error) || failedAttempts >= retry.maxAttempts) {
        return this.#deadLetter(delivery, message, message.id, {
          reason: 'handler_failed',
          error,
          failedAttempts,
        });
      }
      const delayMs = retryDelayMs(retry, failedAttempts);
      this.logger.warn('handler failed; retrying', {
        id: message.id,
        topic: message.topic,
        failedAttempts,
        delayMs,
        error: error.message,
      });
      this.emit('consumer:message:retry', { message, error, failedAttempts, delayMs });
      await systemClock.sleep(delayMs, this.#endedOrStopped(delivery));
    }
  }

  /** One handler run: plain, through the inbox, or in a broker transaction (transacted receive). */
  async #runOnce(delivery: Delivery, message: ReceivedMessage): Promise<RunOutcome> {
    const ackUnavailable = () => {
      throw new ConfigError(
        'inbox',
        `context.ack() for message ${message.id} needs an inbox: an acknowledgement is enqueued in the inbox ` +
          'transaction; give the StompConsumer an inbox, or do not acknowledge from this handler',
      );
    };
    if (!this.#options.transacted) {
      return this.#run(message, { message, ack: ackUnavailable });
    }
    const tx = new ReceiveTransaction(delivery.session, this.#options);
    await tx.begin();
    const context: ConsumerContext = {
      message,
      ack: ackUnavailable,
      publish: async (messages) => {
        for (const frame of this.#outputFrames(messages)) await tx.send(frame.headers, frame.body);
      },
    };
    try {
      await this.#run(message, context);
    } catch (err) {
      tx.abort();
      throw err;
    }
    await tx.ack(delivery.frame);
    await tx.commit();
    return 'processed';
  }

  /** The SEND frames of a handler's outputs; throws for invalid ones before anything is sent. */
  #outputFrames(messages: ReadonlyArray<OutboxMessage | MessageInput>) {
    const { publishDestination, maxMessageBytes } = this.#options;
    return toOutboxMessages(messages).map((m) => {
      if (m.payload.length > maxMessageBytes) throw messageTooLargeError(m, maxMessageBytes);
      return { headers: sendHeaders(m, destinationFor(publishDestination, m.topic), true), body: m.payload };
    });
  }

  async #deadLetter(
    delivery: Delivery,
    message: ReceivedMessage | null,
    id: string | null,
    why: DeadLetterReason,
  ): Promise<void> {
    const retry = this.#options.retry as ResolvedRetryPolicy;
    for (let failures = 1; ; failures++) {
      if (!delivery.session.connection.open) {
        this.#abandoned++;
        return;
      }
      try {
        await sendDeadLetter(delivery.session, delivery.frame, this.#options, why);
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        this.logger.warn('dead-lettering failed', {
          id,
          deadLetterDestination: this.deadLetterDestination,
          error: error.message,
        });
        this.emit('consumer:error', { phase: 'dead-letter', id, error });
        if (this.#state === 'stopping' || this.#state === 'idle') {
          this.#abandoned++;
          return;
        }
        await systemClock.sleep(retryDelayMs(retry, failures), this.#endedOrStopped(delivery));
        continue;
      }
      if (id !== null) this.#attempts.forget(id);
      this.#ack(delivery, id);
      const topic = message?.topic ?? delivery.frame.headers['destination'] ?? this.destination;
      this.logger.error('message dead-lettered', {
        id,
        topic,
        reason: why.reason,
        failedAttempts: why.failedAttempts,
        deadLetterDestination: this.deadLetterDestination,
        error: why.error.message,
      });
      this.emit('consumer:message:dead', {
        id,
        topic,
        message,
        ...why,
        deadLetterDestination: this.deadLetterDestination,
      });
      return;
    }
  }

  /** ACK on the delivery's connection; reports it lost when that connection is gone. */
  #ack(delivery: Delivery, id: string | null): void {
    sendAck(delivery.session, delivery.frame).catch((err: unknown) => {
      const error = connectionLostError(
        this.#options.endpoint.safeUrl,
        err instanceof Error ? err.message : String(err),
        err,
      );
      this.logger.warn('acknowledgement lost; the broker redelivers the message', {
        id,
        error: error.message,
      });
      this.emit('consumer:ack:lost', { id, error });
    });
  }

  #endedOrStopped(delivery: Delivery): AbortSignal {
    return AbortSignal.any([this.#stopController.signal, delivery.session.connection.ended]);
  }

  #onLost(session: ConsumerSession, error: Error): void {
    if (session !== this.#session) return;
    this.#session = undefined;
    if (this.#state !== 'running') return;
    this.logger.warn('consumer connection lost; reconnecting', {
      destination: this.destination,
      error: error.message,
    });
    this.emit('consumer:connection:lost', { error });
    this.#reconnecting ??= this.#reconnect(error);
  }

  async #reconnect(lost: Error): Promise<void> {
    const { reconnectDelayMs, maxReconnectDelayMs } = this.#options;
    const downAt = performance.now();
    let error = lost;
    try {
      for (let attempt = 1; this.#state === 'running'; attempt++) {
        const cap = Math.min(maxReconnectDelayMs, reconnectDelayMs * 2 ** (attempt - 2));
        const delayMs = attempt === 1 ? 0 : Math.round(cap / 2 + (Math.random() * cap) / 2);
        this.emit('consumer:reconnecting', { attempt, delayMs, error });
        if (!(await systemClock.sleep(delayMs, this.#stopController.signal))) return;
        let session: ConsumerSession;
        try {
          session = await this.#open();
        } catch (err) {
          error = err instanceof Error ? err : new Error(String(err));
          this.logger.warn('consumer reconnect failed', {
            destination: this.destination,
            attempt,
            error: error.message,
          });
          continue;
        }
        if (this.#state !== 'running') {
          await session.connection.close(
            connectionLostError(this.#options.endpoint.safeUrl, 'consumer stopped'),
          );
          return;
        }
        const downMs = performance.now() - downAt;
        this.#reconnecting = undefined;
        this.#adopt(session);
        this.logger.info('consumer reconnected', {
          destination: this.destination,
          attempts: attempt,
          downMs,
        });
        this.emit('consumer:reconnected', { downMs, attempts: attempt });
        return;
      }
    } finally {
      this.#reconnecting = undefined;
    }
  }
}

/** `{ publish }` when the outer context has one (transacted receive), `{}` otherwise. */
function publishOf(context: ConsumerContext): Partial<Pick<ConsumerContext, 'publish'>> {
  return context.publish ? { publish: context.publish } : {};
}

/** True when `promise` settled within `ms`, false when the time ran out first. Never rejects. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const settled = promise.then(
    () => true,
    () => true,
  );
  const expired = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  const result = await Promise.race([settled, expired]);
  clearTimeout(timer);
  return result;
}
