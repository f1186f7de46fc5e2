import { systemClock } from '../../core/clock.js';
import { isMailroomError } from '../../core/errors/mailroom-error.js';
import { isPermanentDeliveryError } from '../../core/errors/permanent-delivery-error.js';
import { retryDelayMs } from '../../core/retry-policy.js';
import { TypedEmitter } from '../../core/typed-emitter.js';
import type { OutboxMessage, ReceivedMessage } from '../../core/types.js';
import type { AmqpDelivery } from './amqp-consumer-client.js';
import { AttemptLedger } from '../../consumer/attempt-ledger.js';
import type { MessageConsumer } from '../../consumer/consumer.js';
import { HandlerLanes } from '../../consumer/handler-lanes.js';
import { ackNeedsInboxError, connectionLostError } from './rabbitmq-consumer-errors.js';
import type { RabbitMqConsumerEvents } from './rabbitmq-consumer-events.js';
import {
  resolveRabbitMqConsumerOptions,
  type ConsumerContext,
  type RabbitMqConsumerOptions,
  type ResolvedRabbitMqConsumerOptions,
} from './rabbitmq-consumer-options.js';
import {
  closeConsumerSession,
  openConsumerSession,
  type ConsumerSession,
  type SessionHooks,
} from './rabbitmq-consumer-session.js';
import type { DeadLetterReason } from './rabbitmq-dead-letter.js';
import { brokerDeliveryCount, decodeDelivery } from './rabbitmq-decode.js';
import { RunOutputs } from './rabbitmq-transacted-receive.js';
import { outputReturnedError } from './rabbitmq-transaction-errors.js';

/** A delivery and the session (channel) it came on: only that channel can acknowledge it. */
interface Delivery {
  readonly session: ConsumerSession;
  readonly raw: AmqpDelivery;
}

/** How long stop() waits for the broker to confirm the consumer's cancellation. */
const CANCEL_TIMEOUT_MS = 2000;

/**
 * Consumes a RabbitMQ queue of messages sent by Mailroom's relay (or any publisher that sets a
 * UUID `message-id`) and runs a handler for each: once per message id with an `inbox`, the
 * broker's acknowledgement sent only after the inbox transaction committed.
 *
 * - **Copies**: a message the inbox has processed already is acknowledged without running the
 *   handler, so redeliveries and resends cost nothing and change nothing.
 * - **Order**: with `serialByKey` (the default), two messages of one key never run at once and
 *   run in the order they arrived, also while one waits for a retry.
 * - **Failures**: a throwing handler is retried in the process with exponential backoff and full
 *   jitter, then the message is published to the dead-letter queue (confirmed) and only then
 *   acknowledged. A message that cannot be decoded goes there at once.
 * - **Connections**: a lost connection is reopened with capped backoff; handlers running may
 *   finish, but their acknowledgements are lost, and the broker redelivers those messages (the
 *   inbox drops the copies).
 * - **Transacted receive** (`transacted: true`): the handler's `context.publish` outputs and the
 *   acknowledgement are committed in one AMQP transaction after the handler succeeded, so a
 *   crash never loses the input nor leaves its outputs at the broker twice
 *   (docs/mq-transactions.md).
 *
 * @example
 * ```ts
 * import { Inbox } from 'mailroom';
 * import { RabbitMqConsumer } from 'mailroom/rabbitmq';
 *
 * const consumer = new RabbitMqConsumer({
 *   url: 'amqp://guest:guest@127.0.0.1:5672',
 *   queue: 'billing.orders',
 *   bindings: ['order.*'],
 *   inbox: new Inbox({ store, consumer: 'billing' }),
 *   handler: async (message, tx) => {
 *     await tx.query('INSERT INTO invoices (order_id) VALUES ($1)', [message.key]);
 *   },
 *   concurrency: 4,
 * });
 * await consumer.start();
 * // …
 * await consumer.stop();
 * ```
 */
export class RabbitMqConsumer<Tx = undefined>
  extends TypedEmitter<RabbitMqConsumerEvents>
  implements MessageConsumer
{
  /** The queue consumed. */
  readonly queue: string;
  /** Where failed and undecodable messages go. */
  readonly deadLetterQueue: string;
  // Private: the resolved URL holds the password, and public fields end up in logs.
  readonly #options: Readonly<ResolvedRabbitMqConsumerOptions>;
  /**
   * Runs the handler for one message, through the inbox when there is one; `outputs` collects
   * what it publishes with `context.publish` (transacted receive only).
   */
  readonly #run: (
    message: ReceivedMessage,
    outputs: RunOutputs | undefined,
  ) => Promise<'processed' | 'duplicate'>;
  /** The inbox's prune(), when it has one. */
  readonly #prune: (() => Promise<number>) | undefined;
  #pruneTimer: ReturnType<typeof setTimeout> | undefined;
  #pruning: Promise<void> | undefined;
  readonly #lanes: HandlerLanes;
  readonly #attempts = new AttemptLedger();
  readonly #hooks: SessionHooks;
  #state: 'idle' | 'starting' | 'running' | 'stopping' = 'idle';
  #session: ConsumerSession | undefined;
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #reconnecting: Promise<void> | undefined;
  /** Aborted by stop(): ends retry and reconnect waits. */
  #stopController = new AbortController();
  /** One promise per delivery being handled (queued, running, waiting to retry). */
  readonly #inFlight = new Set<Promise<void>>();
  /** Deliveries given up without an ack since the last stop() began. */
  #abandoned = 0;

  constructor(options: RabbitMqConsumerOptions<Tx>) {
    const resolved = resolveRabbitMqConsumerOptions(options);
    super(resolved.logger);
    this.#options = Object.freeze(resolved);
    this.queue = resolved.queue;
    this.deadLetterQueue = resolved.deadLetterQueue;
    this.#lanes = new HandlerLanes(resolved.concurrency);
    if (options.inbox !== undefined) {
      const { inbox, handler } = options;
      this.#run = async (message, outputs) => {
        const result = await inbox.handle(message, (tx, context) =>
          handler(message, tx, withPublish(context, outputs)),
        );
        return result.status;
      };
      const prune = typeof inbox.prune === 'function' ? inbox.prune : undefined;
      this.#prune = prune && (() => prune.call(inbox));
    } else {
      this.#prune = undefined;
      const { handler } = options;
      this.#run = async (message, outputs) => {
        const context: ConsumerContext = {
          message,
          ack: () => {
            throw ackNeedsInboxError(message.id);
          },
        };
        await handler(message, undefined, withPublish(context, outputs));
        return 'processed';
      };
    }
    this.#hooks = {
      onDelivery: (session, raw) => this.#onDelivery({ session, raw }),
      onLost: (session, error) => this.#onLost(session, error),
    };
  }

  /** True between a successful start() and stop(), also while reconnecting. */
  get running(): boolean {
    return this.#state === 'running';
  }

  /** True while a connection is open and consuming. */
  get connected(): boolean {
    return this.#session?.open === true;
  }

  /**
   * Connects, declares the exchange, queue, dead-letter queue and bindings (unless `declare` is
   * false) and starts consuming. Idempotent; starts a stopped consumer again. Throws a
   * `TransportError` (`unreachable`, `auth_failed`, `vhost_refused`, `not_amqp`,
   * `declare_failed`, `consume_failed`) naming the redacted URL and what to do, or a
   * `ConfigError` when amqplib is missing. Later losses are not thrown: the consumer reconnects.
   */
  async start(): Promise<void> {
    if (this.#stopping) await this.#stopping;
    if (this.#state === 'running') return;
    this.#starting ??= this.#start().finally(() => (this.#starting = undefined));
    return this.#starting;
  }

  /**
   * Stops consuming, waits for running handlers up to `timeoutMs` (default `stopTimeoutMs`)
   * and closes the connection. Deliveries not yet started or waiting for a retry are left
   * unacknowledged: the broker gives them to another consumer. A handler still running at the
   * deadline may commit, but its acknowledgement is lost; with an inbox its redelivery is a
   * duplicate. Idempotent; never rejects.
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
      const session = await openConsumerSession(this.#options, this.#hooks, () => this.#state !== 'starting');
      this.#state = 'running';
      this.#adopt(session);
    } catch (err) {
      if (this.#state === 'starting') this.#state = 'idle';
      throw err;
    }
    this.logger.info('consumer started', { queue: this.queue, url: this.#options.safeUrl });
    this.emit('consumer:started', { queue: this.queue });
    this.#schedulePrune(0);
  }

  /** Runs `inbox.prune()` after `delayMs`, then every `pruneIntervalMs`, while running. */
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
    // Pruning alone never keeps the process alive.
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

  /** Makes `session` the current one; one that died on the way in is replaced at once. */
  #adopt(session: ConsumerSession): void {
    this.#session = session;
    if (!session.open) this.#onLost(session, connectionLostError(this.#options.safeUrl, undefined));
  }

  async #shutdown(timeoutMs: number): Promise<void> {
    this.#state = 'stopping';
    this.#abandoned = 0;
    this.#stopController.abort();
    clearTimeout(this.#pruneTimer);
    this.#pruneTimer = undefined;
    await this.#starting?.catch(() => {});
    await this.#reconnecting;
    const session = this.#session;
    if (session?.open && session.consumerTag !== undefined) {
      // No new deliveries; those already sent stay unacknowledged and return to the queue
      // when the channel closes.
      await within(session.channel.cancel(session.consumerTag), CANCEL_TIMEOUT_MS);
    }
    const drained = await within(Promise.allSettled([...this.#inFlight]), timeoutMs);
    // A prune under way finishes: its batches are short, and the store may close after stop().
    await this.#pruning;
    const running = drained ? 0 : this.#inFlight.size;
    if (running > 0) {
      this.logger.warn('consumer stop deadline passed with handlers running', {
        queue: this.queue,
        running,
        timeoutMs,
      });
    }
    this.#session = undefined;
    if (session) await closeConsumerSession(session);
    this.#state = 'idle';
    const abandoned = this.#abandoned + running;
    this.logger.info('consumer stopped', { queue: this.queue, abandoned });
    this.emit('consumer:stopped', { abandoned });
  }

  #onDelivery(delivery: Delivery): void {
    // While stopping: not acknowledged, so the broker requeues it when the channel closes.
    if (this.#state !== 'running' && this.#state !== 'starting') return;
    const work = this.#handle(delivery);
    this.#inFlight.add(work);
    void work.finally(() => this.#inFlight.delete(work));
  }

  #handle(delivery: Delivery): Promise<void> {
    const decoded = decodeDelivery(delivery.raw);
    if (!decoded.ok) {
      return this.#deadLetter(delivery, null, decoded.id, {
        reason: 'malformed',
        error: decoded.error,
        failedAttempts: 0,
      });
    }
    const { message } = decoded;
    this.#attempts.seed(message.id, brokerDeliveryCount(delivery.raw));
    const key = this.#options.serialByKey ? message.key : null;
    return this.#lanes.run(key, () => this.#process(delivery, message));
  }

  /** True while a new handler run (or retry) of the delivery makes sense. */
  #usable(delivery: Delivery): boolean {
    return delivery.session.open && (this.#state === 'running' || this.#state === 'starting');
  }

  async #process(delivery: Delivery, message: ReceivedMessage): Promise<void> {
    const { retry } = this.#options;
    for (;;) {
      if (!this.#usable(delivery)) {
        this.#abandoned++;
        return;
      }
      const known = this.#attempts.get(message.id);
      if (known.failures >= retry.maxAttempts) {
        // Failed as often before (an earlier copy, or the broker's delivery count says so).
        const error =
          known.lastError ??
          new Error(`delivered ${known.failures} times without being acknowledged (x-delivery-count)`);
        return this.#deadLetter(delivery, message, message.id, {
          reason: 'handler_failed',
          error,
          failedAttempts: known.failures,
        });
      }
      await this.#lanes.acquire();
      let outcome: 'processed' | 'duplicate' | 'abandoned' = 'abandoned';
      let error: Error | undefined;
      const started = performance.now();
      // Transacted receive: a fresh set of outputs per run; a run that throws drops its own.
      const outputs = this.#options.transacted ? new RunOutputs(message.id) : undefined;
      try {
        if (this.#usable(delivery)) outcome = await this.#run(message, outputs);
      } catch (err) {
        error = err instanceof Error ? err : new Error(String(err));
      } finally {
        outputs?.seal();
        this.#lanes.release();
      }
      if (error === undefined) {
        if (outcome === 'abandoned') {
          this.#abandoned++;
          return;
        }
        // The inbox transaction committed (or there is none): only now may the broker forget it.
        // A duplicate's handler did not run, so it has no outputs to send.
        const acked = await this.#acknowledge(
          delivery,
          message.id,
          outcome === 'processed' ? (outputs?.messages ?? []) : [],
        );
        if (acked instanceof Error) {
          // An output the client cannot encode: the run fails for good.
          const failedAttempts = this.#attempts.fail(message.id, acked);
          return this.#deadLetter(delivery, message, message.id, {
            reason: 'handler_failed',
            error: acked,
            failedAttempts,
          });
        }
        if (acked === 'lost' && this.#options.transacted) return;
        this.#attempts.forget(message.id);
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

  /**
   * Publishes the delivery to the dead-letter queue and acknowledges it once the broker
   * confirmed. A failed publish is tried again after a pause while the delivery's channel is
   * open; never acknowledged otherwise.
   */
  async #deadLetter(
    delivery: Delivery,
    message: ReceivedMessage | null,
    id: string | null,
    why: Omit<DeadLetterReason, 'queue' | 'deadAt'>,
  ): Promise<void> {
    const { deadLetterQueue, retry } = this.#options;
    for (let failures = 1; ; failures++) {
      if (!delivery.session.open) {
        this.#abandoned++;
        return;
      }
      try {
        await delivery.session.deadLetters.publish(delivery.raw, {
          ...why,
          queue: this.queue,
          deadAt: new Date(),
        });
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        this.logger.warn('dead-lettering failed', { id, deadLetterQueue, error: error.message });
        this.emit('consumer:error', { phase: 'dead-letter', id, error });
        if (this.#state === 'stopping' || this.#state === 'idle') {
          this.#abandoned++;
          return;
        }
        await systemClock.sleep(retryDelayMs(retry, failures), this.#endedOrStopped(delivery));
        continue;
      }
      if (id !== null) this.#attempts.forget(id);
      await this.#acknowledge(delivery, id, []);
      const topic = delivery.raw.fields.routingKey;
      this.logger.error('message dead-lettered', {
        id,
        topic,
        reason: why.reason,
        failedAttempts: why.failedAttempts,
        deadLetterQueue,
        error: why.error.message,
      });
      this.emit('consumer:message:dead', { id, topic, message, ...why, deadLetterQueue });
      return;
    }
  }

  /**
   * Acknowledges the delivery: a plain `basic.ack`, or with transacted receive, `basic.ack` and
   * `outputs` in a transaction on the delivery's channel, committed. `'lost'` when it did not
   * happen (reported as `consumer:ack:lost`; the broker redelivers); a `PermanentDeliveryError`
   * when an output cannot be encoded (nothing of the run was committed).
   */
  async #acknowledge(
    delivery: Delivery,
    id: string | null,
    outputs: readonly OutboxMessage[],
  ): Promise<'acked' | 'lost' | Error> {
    const transactions = delivery.session.transactions;
    if (transactions === undefined) return this.#ack(delivery, id) ? 'acked' : 'lost';
    let returned;
    try {
      returned = await transactions.commit(delivery.raw, outputs);
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      if (isPermanentDeliveryError(error)) return error;
      // The broker refused what was published (its channel exception): count it as a failed
      // attempt, so a message whose outputs can never be committed ends as a dead letter rather
      // than being redelivered forever.
      if (id !== null && isMailroomError(error) && error.code === 'transaction_refused') {
        this.#attempts.fail(id, error);
      }
      this.logger.warn('transaction commit failed; the broker redelivers the message', {
        id,
        error: error.message,
      });
      this.emit('consumer:ack:lost', { id, error });
      return 'lost';
    }
    for (const { output, returned: r } of returned) {
      const error = outputReturnedError(id ?? '', output, this.#options.exchange, r);
      this.logger.error('output returned as unroutable; the rest of the transaction was committed', {
        id,
        output: output.id,
        topic: output.topic,
        error: error.message,
      });
      this.emit('consumer:output:returned', { id: id ?? '', output, error });
    }
    return 'acked';
  }

  /**
   * Sends basic.ack on the delivery's channel; false (and reported lost) when that channel is
   * gone.
   */
  #ack(delivery: Delivery, id: string | null): boolean {
    const { session, raw } = delivery;
    let error: Error | undefined;
    if (session.open) {
      try {
        session.channel.ack(raw);
        return true;
      } catch (err) {
        error = err instanceof Error ? err : new Error(String(err));
      }
    }
    error = connectionLostError(this.#options.safeUrl, error);
    this.logger.warn('acknowledgement lost; the broker redelivers the message', { id, error: error.message });
    this.emit('consumer:ack:lost', { id, error });
    return false;
  }

  #endedOrStopped(delivery: Delivery): AbortSignal {
    return AbortSignal.any([this.#stopController.signal, delivery.session.ended.signal]);
  }

  #onLost(session: ConsumerSession, error: Error): void {
    if (session !== this.#session) {
      // One still opening, or one replaced already: nobody consumes from it, release it.
      void closeConsumerSession(session);
      return;
    }
    this.#session = undefined;
    void closeConsumerSession(session); // when only a channel died, the connection goes too
    if (this.#state !== 'running') return;
    this.logger.warn('consumer connection lost; reconnecting', { queue: this.queue, error: error.message });
    this.emit('consumer:connection:lost', { error });
    this.#reconnecting ??= this.#reconnect(error);
  }

  /**
   * Opens a new session: at once, then after capped exponential delays with "equal jitter"
   * (half to all of the delay) while attempts fail, until one succeeds or stop() is called.
   */
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
          session = await openConsumerSession(this.#options, this.#hooks, () => this.#state !== 'running');
        } catch (err) {
          error = err instanceof Error ? err : new Error(String(err));
          this.logger.warn('consumer reconnect failed', { queue: this.queue, attempt, error: error.message });
          continue;
        }
        if (!session.open) {
          void closeConsumerSession(session);
          continue;
        }
        this.#session = session;
        const downMs = performance.now() - downAt;
        this.logger.info('consumer reconnected', { queue: this.queue, attempts: attempt, downMs });
        this.emit('consumer:reconnected', { downMs, attempts: attempt });
        return;
      }
    } finally {
      // Cleared before the promise settles, in the same turn as the session is adopted: a loss
      // reported right after starts a new reconnect instead of finding this one still set.
      this.#reconnecting = undefined;
    }
  }
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

/**
 * The context a handler gets: as given, or with transacted receive, with `publish` adding to the
 * run's outputs.
 */
function withPublish(context: ConsumerContext, outputs: RunOutputs | undefined): ConsumerContext {
  if (outputs === undefined) return context;
  return {
    message: context.message,
    ack: (result) => context.ack(result),
    publish: async (messages) => outputs.add(messages),
  };
}
