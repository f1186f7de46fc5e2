/**
 * What every Mailroom consumer does the same way, whatever the broker: starting, stopping
 * (draining within a deadline), reconnecting with capped backoff, pruning the inbox, and running
 * each delivery through the handler (and inbox) with per-key lanes, retries with backoff and then
 * a dead letter, acknowledging only once the handler's effects committed.
 *
 * A transport's consumer gives a {@link ConsumerBroker}: how its broker opens and closes a
 * session (a connection with its subscription) and how it decodes, acknowledges and dead-letters
 * a delivery. It keeps a {@link ConsumerCore} privately and forwards `start()`, `stop()`,
 * `running` and `connected` to it.
 *
 * @module
 */
import { systemClock } from '../core/clock.js';
import { isPermanentDeliveryError } from '../core/errors/permanent-delivery-error.js';
import type { Logger } from '../core/logger.js';
import { retryDelayMs, type ResolvedRetryPolicy } from '../core/retry-policy.js';
import type { ReceivedMessage } from '../core/types.js';
import { withProcessSpan } from '../tracing/process-span.js';
import { AttemptLedger } from './attempt-ledger.js';
import type { ConsumerContext, ConsumerHandler, ConsumerInbox } from './consumer.js';
import type { ConsumerEvents, DeadLetterReason } from './consumer-events.js';
import { HandlerLanes } from './handler-lanes.js';

/** A delivery as the broker's session handed it over: only that session can acknowledge it. */
export interface CoreDelivery<S> {
  readonly session: S;
}

/** What decoding a delivery gave: the message, or why it is dead-lettered at once. */
export type DecodedDelivery =
  | {
      ok: true;
      message: ReceivedMessage;
      /** Failed deliveries the broker knows of (a quorum queue's `x-delivery-count`). */
      failedBefore?: number;
    }
  | { ok: false; id: string | null; error: Error };

/** One handler run that did not throw, to be acknowledged. */
export interface HandlerRun {
  status: 'processed' | 'duplicate';
  /**
   * Acknowledges the delivery (with what the run published, on a transacted receive).
   * `'uncommitted'`: a broker transaction holding the acknowledgement failed, the broker
   * redelivers the message, and the run counts for nothing. An Error: the run fails for good
   * (an output that cannot be sent); the message is dead-lettered.
   */
  acknowledge(): Promise<'acked' | 'uncommitted' | Error>;
}

/** Settings of the core, from the consumer's resolved options. */
export interface ConsumerCoreOptions {
  readonly serialByKey: boolean;
  readonly concurrency: number;
  readonly retry: ResolvedRetryPolicy;
  readonly stopTimeoutMs: number;
  readonly pruneIntervalMs: number;
  readonly reconnectDelayMs: number;
  readonly maxReconnectDelayMs: number;
  readonly logger: Logger;
}

/** What a broker's consumer supplies to the core. */
export interface ConsumerBroker<S, D extends CoreDelivery<S>, Started, DeadLetterTo> {
  /** What is consumed: the payload of `consumer:started`, and a field of the logs. */
  readonly source: Started;
  /** Where dead letters go, as `consumer:message:dead` and the logs name it. */
  readonly deadLetterTo: DeadLetterTo;
  /** The broker's URL with the password hidden, for the logs. */
  readonly safeUrl: string;
  /**
   * Opens a session: connected and consuming, its deliveries passed to
   * {@link ConsumerCore.deliver} and its loss (once watched) to {@link ConsumerCore.lost}.
   * `cancelled()` true means the consumer was stopped meanwhile (the core checks it too).
   */
  open(cancelled: () => boolean): Promise<S>;
  /** True while the session can take deliveries and acknowledge them. */
  isOpen(session: S): boolean;
  /** Aborted when the session ends: waits for its deliveries' retries stop. */
  ended(session: S): AbortSignal;
  /** Reports the session's loss to `lost` (at once when it is gone already). */
  watch(session: S, lost: (error: Error) => void): void;
  /** Closes the session: the consumer stopped (or was stopped while starting). Never rejects. */
  close(session: S, why: 'stopped' | 'stopped while starting'): Promise<void>;
  /** Releases a session that was lost, or replaced. */
  discard(session: S): void;
  /** The error start() throws when stop() was called while it connected. */
  stoppedWhileStarting(): Error;
  /** Before stop() drains: stop taking deliveries on `session`, when the broker can. */
  beforeDrain?(session: S): Promise<void>;
  /** True: a delivery arriving while stopping counts as abandoned in `consumer:stopped`. */
  readonly countsLateDeliveries: boolean;
  decode(delivery: D): DecodedDelivery;
  /**
   * Runs the handler once (the core holds a lane slot meanwhile). `'abandoned'`: the run could
   * not complete for a reason that is not the message's (its connection ended); the broker
   * redelivers it. Throws what the handler threw.
   */
  run(delivery: D, message: ReceivedMessage): Promise<HandlerRun | 'abandoned'>;
  /** The error of a message already failed `failures` times before this copy arrived. */
  exhausted(failures: number): Error;
  /** Sends the delivery to the dead letters, confirmed; throws when that failed. */
  sendDeadLetter(delivery: D, why: DeadLetterReason): Promise<void>;
  /** Acknowledges a delivery that was dead-lettered. */
  acknowledgeDead(delivery: D, id: string | null): Promise<void>;
  /** The topic `consumer:message:dead` names. */
  deadTopic(delivery: D, message: ReceivedMessage | null): string;
}

type Emit<E> = <K extends keyof E>(event: K, payload: E[K]) => void;

/**
 * The state machine, delivery loop and reconnect loop of a consumer. Its owner emits the events
 * through `emit` (its own TypedEmitter).
 */
export class ConsumerCore<S, D extends CoreDelivery<S>, Started extends object, DeadLetterTo extends object> {
  readonly #options: ConsumerCoreOptions;
  readonly #broker: ConsumerBroker<S, D, Started, DeadLetterTo>;
  readonly #emit: Emit<ConsumerEvents<Started, DeadLetterTo>>;
  readonly #logger: Logger;
  /** The inbox's prune(), when it has one. */
  readonly #prune: (() => Promise<number>) | undefined;
  #pruneTimer: ReturnType<typeof setTimeout> | undefined;
  #pruning: Promise<void> | undefined;
  readonly #lanes: HandlerLanes;
  readonly #attempts = new AttemptLedger();
  #state: 'idle' | 'starting' | 'running' | 'stopping' = 'idle';
  #session: S | undefined;
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #reconnecting: Promise<void> | undefined;
  /** Aborted by stop(): ends retry and reconnect waits. */
  #stopController = new AbortController();
  /** One promise per delivery being handled (queued, running, waiting to retry). */
  readonly #inFlight = new Set<Promise<void>>();
  /** Deliveries given up without an ack since the last stop() began. */
  #abandoned = 0;

  constructor(setup: {
    options: ConsumerCoreOptions;
    broker: ConsumerBroker<S, D, Started, DeadLetterTo>;
    emit: Emit<ConsumerEvents<Started, DeadLetterTo>>;
    prune: (() => Promise<number>) | undefined;
  }) {
    this.#options = setup.options;
    this.#broker = setup.broker;
    this.#emit = setup.emit;
    this.#logger = setup.options.logger;
    this.#prune = setup.prune;
    this.#lanes = new HandlerLanes(setup.options.concurrency);
  }

  get running(): boolean {
    return this.#state === 'running';
  }

  get connected(): boolean {
    return this.#session !== undefined && this.#broker.isOpen(this.#session);
  }

  async start(): Promise<void> {
    if (this.#stopping) await this.#stopping;
    if (this.#state === 'running') return;
    this.#starting ??= this.#start().finally(() => (this.#starting = undefined));
    return this.#starting;
  }

  stop(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.#state === 'idle' && !this.#starting) return this.#stopping ?? Promise.resolve();
    this.#stopping ??= this.#shutdown(options.timeoutMs ?? this.#options.stopTimeoutMs).finally(
      () => (this.#stopping = undefined),
    );
    return this.#stopping;
  }

  /** A delivery arrived on `delivery.session`. */
  deliver(delivery: D): void {
    // While stopping: not acknowledged, so the broker redelivers it when the session closes.
    if (this.#state !== 'running' && this.#state !== 'starting') {
      if (this.#broker.countsLateDeliveries) this.#abandoned++;
      return;
    }
    const work = this.#handle(delivery);
    this.#inFlight.add(work);
    void work.finally(() => this.#inFlight.delete(work));
  }

  /** `session` ended without being closed by the core; `error` says why. */
  lost(session: S, error: Error): void {
    if (session !== this.#session) {
      // One still opening, or one replaced already: nobody consumes from it, release it.
      this.#broker.discard(session);
      return;
    }
    this.#session = undefined;
    this.#broker.discard(session);
    if (this.#state !== 'running') return;
    this.#logger.warn('consumer connection lost; reconnecting', {
      event: 'consumer_connection_lost',
      ...this.#broker.source,
      error,
    });
    this.#emit('consumer:connection:lost', { error });
    this.#reconnecting ??= this.#reconnect(error);
  }

  /** A failed run of message `id` that counts against its attempts (a refused commit). */
  failed(id: string, error: Error): void {
    this.#attempts.fail(id, error);
  }

  async #start(): Promise<void> {
    this.#state = 'starting';
    this.#stopController = new AbortController();
    try {
      const session = await this.#broker.open(() => this.#state !== 'starting');
      if (this.#state !== 'starting') {
        await this.#broker.close(session, 'stopped while starting');
        throw this.#broker.stoppedWhileStarting();
      }
      this.#state = 'running';
      this.#adopt(session);
    } catch (err) {
      if (this.#state === 'starting') this.#state = 'idle';
      throw err;
    }
    this.#logger.info('consumer started', {
      event: 'consumer_started',
      ...this.#broker.source,
      url: this.#broker.safeUrl,
    });
    this.#emit('consumer:started', this.#broker.source);
    this.#schedulePrune(0);
  }

  /** Makes `session` the current one and watches for its end. */
  #adopt(session: S): void {
    this.#session = session;
    this.#broker.watch(session, (error) => this.lost(session, error));
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
      this.#emit('consumer:inbox:pruned', { deleted, durationMs: performance.now() - started });
    } catch (err) {
      const error = toError(err);
      this.#logger.warn('inbox prune failed; trying again at the next interval', {
        event: 'inbox_prune_failed',
        error,
      });
      this.#emit('consumer:error', { phase: 'prune', id: null, error });
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
    const current = this.#session;
    if (current !== undefined && this.#broker.isOpen(current)) await this.#broker.beforeDrain?.(current);
    const drained = await within(Promise.allSettled([...this.#inFlight]), timeoutMs);
    // A prune under way finishes: its batches are short, and the store may close after stop().
    await this.#pruning;
    const running = drained ? 0 : this.#inFlight.size;
    if (running > 0) {
      this.#logger.warn('consumer stop deadline passed with handlers running', {
        event: 'consumer_stop_deadline_passed',
        ...this.#broker.source,
        running,
        timeoutMs,
      });
    }
    const session = this.#session;
    this.#session = undefined;
    if (session !== undefined) await this.#broker.close(session, 'stopped');
    this.#state = 'idle';
    const abandoned = this.#abandoned + running;
    this.#logger.info('consumer stopped', { event: 'consumer_stopped', ...this.#broker.source, abandoned });
    this.#emit('consumer:stopped', { abandoned });
  }

  #handle(delivery: D): Promise<void> {
    const decoded = this.#broker.decode(delivery);
    if (!decoded.ok) {
      return this.#deadLetter(delivery, null, decoded.id, {
        reason: 'malformed',
        error: decoded.error,
        failedAttempts: 0,
      });
    }
    const { message } = decoded;
    if (decoded.failedBefore !== undefined) this.#attempts.seed(message.id, decoded.failedBefore);
    const key = this.#options.serialByKey ? message.key : null;
    return this.#lanes.run(key, () => this.#process(delivery, message));
  }

  /** True while a new handler run (or retry) of the delivery makes sense. */
  #usable(delivery: D): boolean {
    return this.#broker.isOpen(delivery.session) && (this.#state === 'running' || this.#state === 'starting');
  }

  async #process(delivery: D, message: ReceivedMessage): Promise<void> {
    const { retry } = this.#options;
    for (;;) {
      if (!this.#usable(delivery)) {
        this.#abandoned++;
        return;
      }
      const known = this.#attempts.get(message.id);
      if (known.failures >= retry.maxAttempts) {
        // Failed as often before (an earlier copy, or the broker's delivery count says so).
        return this.#deadLetter(delivery, message, message.id, {
          reason: 'handler_failed',
          error: known.lastError ?? this.#broker.exhausted(known.failures),
          failedAttempts: known.failures,
        });
      }
      await this.#lanes.acquire();
      let run: HandlerRun | 'abandoned' = 'abandoned';
      let error: Error | undefined;
      const started = performance.now();
      try {
        if (this.#usable(delivery)) run = await this.#broker.run(delivery, message);
      } catch (err) {
        error = toError(err);
      } finally {
        this.#lanes.release();
      }
      if (error === undefined) {
        if (run === 'abandoned') {
          this.#abandoned++;
          return;
        }
        // The inbox transaction committed (or there is none): only now may the broker forget it.
        const acked = await run.acknowledge();
        if (acked instanceof Error) {
          const failedAttempts = this.#attempts.fail(message.id, acked);
          return this.#deadLetter(delivery, message, message.id, {
            reason: 'handler_failed',
            error: acked,
            failedAttempts,
          });
        }
        if (acked === 'uncommitted') return;
        this.#attempts.forget(message.id);
        if (run.status === 'duplicate') {
          this.#logger.debug('duplicate message acknowledged', { id: message.id, topic: message.topic });
          this.#emit('consumer:message:duplicate', { message });
        } else {
          const durationMs = performance.now() - started;
          this.#logger.debug('message handled', { id: message.id, topic: message.topic, durationMs });
          this.#emit('consumer:message:handled', { message, attempt: known.failures + 1, durationMs });
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
      this.#logger.warn('handler failed; retrying', {
        event: 'handler_failed',
        messageId: message.id,
        topic: message.topic,
        attempt: failedAttempts,
        delayMs,
        error,
      });
      this.#emit('consumer:message:retry', { message, error, failedAttempts, delayMs });
      await systemClock.sleep(delayMs, this.#endedOrStopped(delivery));
    }
  }

  /**
   * Sends the delivery to the dead letters and acknowledges it once the broker confirmed. A
   * failed send is tried again after a pause while the delivery's session is open; never
   * acknowledged otherwise.
   */
  async #deadLetter(
    delivery: D,
    message: ReceivedMessage | null,
    id: string | null,
    why: DeadLetterReason,
  ): Promise<void> {
    const { retry } = this.#options;
    const { deadLetterTo } = this.#broker;
    for (let failures = 1; ; failures++) {
      if (!this.#broker.isOpen(delivery.session)) {
        this.#abandoned++;
        return;
      }
      try {
        await this.#broker.sendDeadLetter(delivery, why);
      } catch (err) {
        const error = toError(err);
        this.#logger.warn('dead-lettering failed', {
          event: 'dead_letter_failed',
          messageId: id,
          ...deadLetterTo,
          error,
        });
        this.#emit('consumer:error', { phase: 'dead-letter', id, error });
        if (this.#state === 'stopping' || this.#state === 'idle') {
          this.#abandoned++;
          return;
        }
        await systemClock.sleep(retryDelayMs(retry, failures), this.#endedOrStopped(delivery));
        continue;
      }
      if (id !== null) this.#attempts.forget(id);
      await this.#broker.acknowledgeDead(delivery, id);
      const topic = this.#broker.deadTopic(delivery, message);
      this.#logger.error('message dead-lettered', {
        event: 'handler_dead_lettered',
        messageId: id,
        topic,
        reason: why.reason,
        attempt: why.failedAttempts,
        ...deadLetterTo,
        error: why.error,
      });
      this.#emit('consumer:message:dead', { id, topic, message, ...why, ...deadLetterTo });
      return;
    }
  }

  #endedOrStopped(delivery: D): AbortSignal {
    return AbortSignal.any([this.#stopController.signal, this.#broker.ended(delivery.session)]);
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
        this.#emit('consumer:reconnecting', { attempt, delayMs, error });
        if (!(await systemClock.sleep(delayMs, this.#stopController.signal))) return;
        let session: S;
        try {
          session = await this.#broker.open(() => this.#state !== 'running');
        } catch (err) {
          error = toError(err);
          // The first failure after the loss at warn; the rest (with backoff) at debug.
          this.#logger[attempt === 1 ? 'warn' : 'debug']('consumer reconnect failed', {
            event: 'consumer_reconnect_failed',
            ...this.#broker.source,
            attempt,
            error,
          });
          continue;
        }
        if (this.#state !== 'running') {
          await this.#broker.close(session, 'stopped');
          return;
        }
        if (!this.#broker.isOpen(session)) {
          this.#broker.discard(session);
          continue;
        }
        // Cleared in the same turn as the session is adopted: a loss reported right after starts
        // a new reconnect instead of finding this one still set.
        this.#reconnecting = undefined;
        this.#adopt(session);
        const downMs = performance.now() - downAt;
        this.#logger.info('consumer reconnected', {
          event: 'consumer_reconnected',
          ...this.#broker.source,
          attempt,
          durationMs: Math.round(downMs),
        });
        this.#emit('consumer:reconnected', { downMs, attempts: attempt });
        return;
      }
    } finally {
      this.#reconnecting = undefined;
    }
  }
}

/**
 * Runs a consumer's handler once per call, through the inbox when there is one, with the
 * context's `publish` when given (transacted receive). `ackNeedsInbox` is what `context.ack()`
 * throws without an inbox. Each call runs in an OpenTelemetry CONSUMER span, `process <topic>`,
 * continuing the trace the message carries (`traceparent`), when `@opentelemetry/api` is
 * installed; `system` names the broker in it (`messaging.system`).
 */
export function handlerRunner<Tx>(
  options: {
    inbox?: ConsumerInbox<Tx> | undefined;
    handler: ConsumerHandler<Tx> | ConsumerHandler<undefined>;
  },
  ackNeedsInbox: (id: string) => Error,
  system?: string,
): {
  run(message: ReceivedMessage, publish?: ConsumerContext['publish']): Promise<'processed' | 'duplicate'>;
  prune: (() => Promise<number>) | undefined;
} {
  const { inbox } = options;
  if (inbox !== undefined) {
    const handler = options.handler as ConsumerHandler<Tx>;
    const prune = typeof inbox.prune === 'function' ? inbox.prune : undefined;
    const span = { system, consumer: typeof inbox.consumer === 'string' ? inbox.consumer : undefined };
    return {
      run: (message, publish) =>
        withProcessSpan(
          message,
          span,
          async () => {
            const result = await inbox.handle(message, (tx, context) =>
              handler(
                message,
                tx,
                publish ? { message: context.message, ack: (r) => context.ack(r), publish } : context,
              ),
            );
            return result.status;
          },
          (status) => status,
        ),
      prune: prune && (() => prune.call(inbox)),
    };
  }
  const handler = options.handler as ConsumerHandler<undefined>;
  return {
    run: (message, publish) =>
      withProcessSpan(message, { system }, async () => {
        const ack = () => {
          throw ackNeedsInbox(message.id);
        };
        await handler(message, undefined, publish ? { message, ack, publish } : { message, ack });
        return 'processed' as const;
      }),
    prune: undefined,
  };
}

/** True when `promise` settled within `ms`, false when the time ran out first. Never rejects. */
export async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
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

export function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
