import { CallbackDispatcher } from '../callbacks/callback-dispatcher.js';
import { AckSweeper } from './ack-sweeper.js';
import type { Clock } from './clock.js';
import { RelayStateError } from './errors/relay-state-error.js';
import { isPermanentDeliveryError } from './errors/permanent-delivery-error.js';
import { isTransportError, TransportError } from './errors/transport-error.js';
import { LeaseHeartbeat } from './lease-heartbeat.js';
import { silentLogger } from './logger.js';
import type {
  AckPort,
  CallbackPort,
  MessageSource,
  OutboxStore,
  PublishOutcome,
  Settlement,
  SourceBatch,
  Transport,
} from './ports.js';
import type { RelayEvents } from './relay-events.js';
import {
  detachObserver,
  resolveRelayOptions,
  type RelayObserver,
  type RelayOptions,
  type ResolvedRelayOptions,
} from './relay-options.js';
import { retryDelayMs } from './retry-policy.js';
import { TransportHealth } from './transport-health.js';
import { RelayPresence } from './relay-presence.js';
import { TypedEmitter } from './typed-emitter.js';
import { tracedTransport } from '../tracing/traced-transport.js';
import type { OutboxMessage } from './types.js';
import { decodeGroup, isGroup } from './atomic-group.js';
import { isTransactionalTransport } from './broker-transaction.js';
import { IdleGate, NotifyListener, WakeUp, type WakeSource } from './wakeup.js';

export {
  resolveRelayOptions,
  type RelayObserver,
  type RelayOptions,
  type ResolvedRelayOptions,
} from './relay-options.js';
export type { RelayEvents } from './relay-events.js';

/**
 * How long a transport gets, after its publish was aborted, to hand back the outcomes it already
 * has (confirms that arrived are worth keeping: each one is a duplicate avoided).
 */
const ABORT_GRACE_MS = 1000;

/** A batch between claim and settle: what `stop()` needs to abandon it cleanly. */
interface Batch {
  abort: AbortController;
  /** The lease's heartbeat; none for a source's table-less batch (it holds no lease). */
  heartbeat: LeaseHeartbeat | undefined;
  done: Promise<void>;
}

const OUTCOME_STATUSES = new Set(['ok', 'retry', 'permanent', 'unavailable']);

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/**
 * Moves messages from an outbox store to a transport: claims due messages in batches under
 * leases, publishes each batch pipelined, and settles every message only after the transport
 * answered for it — delete on confirm, retry with backoff, or dead-letter. When the transport is
 * unavailable it stops claiming, spends no attempts, and probes until the transport is back.
 *
 * @example
 * ```ts
 * const relay = new Relay({ store, transport });
 * await relay.start();
 * // … on shutdown:
 * await relay.stop();
 * ```
 */
/** How long `stop()` waits for the relay's presence row to be deleted. */
const PRESENCE_STOP_WAIT_MS = 2000;

export class Relay extends TypedEmitter<RelayEvents> {
  readonly options: ResolvedRelayOptions;
  readonly #store: OutboxStore;
  readonly #transport: Transport;
  readonly #clock: Clock;
  readonly #batches = new Set<Batch>();
  readonly #wakeup: WakeUp;
  readonly #health: TransportHealth;
  #listener: NotifyListener | undefined;
  /** The store's wake gate, held while the loop is idle (stores whose writers notify only then). */
  #gate: IdleGate | undefined;
  /** Resends and expiries of messages with `ack`, on stores that track them. */
  #ackSweeper: AckSweeper | undefined;
  /** POSTs outcomes to callback URLs, when the relay was given `callbacks`. */
  readonly #callbacks: CallbackDispatcher | undefined;
  /** The transaction log, in `replication` mode: batches it leased, in commit order. */
  readonly #source: MessageSource | undefined;
  /**
   * In `replication` mode, whether the table may hold work for a claim: set by wake-ups other
   * than the source's and by idle timeouts, cleared by a claim that found less than a batch.
   */
  #claimWanted = true;
  /** The source left rows in the table since the last claim that found less than a batch. */
  #leftInTable = false;
  /** Claims in a row that found nothing (the poll backs off: `idlePollMaxMs`). */
  #emptyPolls = 0;
  #loop: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #abort = new AbortController();
  /** Set when stop() has returned: abandoned batches then settle once, without retrying. */
  #stopped = false;
  #externalSignal: AbortSignal | undefined;
  /** `options.metrics`: attached from start to the end of stop. */
  readonly #observer: RelayObserver | undefined;
  #unobserve: (() => void) | undefined;
  #onExternalAbort = () => void this.stop();
  /** This relay's row in the store's presence table (stores with `recordRelay`; a no-op otherwise). */
  readonly #presence: RelayPresence;

  constructor(options: RelayOptions) {
    super(options.logger ?? silentLogger);
    this.options = resolveRelayOptions(options);
    this.#store = options.store;
    const tracing = options.tracing ?? true;
    this.#transport =
      tracing === false
        ? options.transport
        : tracedTransport(options.transport, tracing === true ? {} : tracing);
    this.#source = options.source;
    this.#clock = this.options.clock;
    this.#externalSignal = options.signal;
    this.#observer = options.metrics;
    const emit = this.emit.bind(this) as typeof this.emit;
    this.#wakeup = new WakeUp(this.#clock, emit, () => this.listens('relay:wakeup'));
    this.#health = new TransportHealth({
      transport: this.#transport,
      clock: this.#clock,
      logger: this.logger,
      emit,
      probeMinDelayMs: this.options.probeMinDelayMs,
      probeMaxDelayMs: this.options.probeMaxDelayMs,
      probeTimeoutMs: this.options.publishTimeoutMs,
    });
    if (options.callbacks !== undefined) {
      this.#callbacks = new CallbackDispatcher({
        ...options.callbacks,
        store: options.store as unknown as CallbackPort,
        owner: `${this.options.owner}:callbacks`,
        logger: this.logger,
        clock: this.#clock,
      });
      this.#callbacks.on('callback:error', ({ error }) =>
        this.emit('relay:error', { phase: 'callback', error }),
      );
    }
    this.#presence = new RelayPresence({
      store: options.store,
      transport: options.transport.name,
      onError: (error) => this.emit('relay:error', { phase: 'presence', error }),
    });
    this.#presence.attach(this);
  }

  /** The relay's callback dispatcher (events `callback:*`), when it was given `callbacks`. */
  get callbacks(): CallbackDispatcher | undefined {
    return this.#callbacks;
  }

  /** True between `start()` and the end of `stop()`. */
  get running(): boolean {
    return this.#loop !== undefined && this.#stopping === undefined;
  }

  /** Number of batches between claim and settle right now. */
  get inFlightBatches(): number {
    return this.#batches.size;
  }

  /** The transport's name (`rabbitmq`, `memory`…), for logs and metric labels. */
  get transportName(): string {
    return this.#transport.name;
  }

  /** False while the transport is unavailable and claims are paused. */
  get transportAvailable(): boolean {
    return this.#health.available;
  }

  /**
   * Checks the schema, connects the transport, subscribes to wake-ups and starts the loop.
   * Idempotent. Throws (and stays stopped) when the store or transport is not usable.
   */
  async start(): Promise<void> {
    if (this.#loop) return;
    if (this.#stopping) {
      throw new RelayStateError('stopped', 'this relay was stopped; create a new Relay to start again');
    }
    // The observer sees the start itself (relay:started, a failed start's relay:error).
    this.#unobserve ??= this.#observer?.observe(this, { store: this.#store });
    try {
      await this.#start();
    } catch (err) {
      if (!this.#loop) this.#detachObserver();
      throw err;
    }
  }

  #detachObserver(): void {
    const unobserve = this.#unobserve;
    this.#unobserve = undefined;
    detachObserver(unobserve, this.logger);
  }

  async #start(): Promise<void> {
    await this.#store.check();
    await this.#transport.start();
    if (this.#loop) return;
    this.#loop = Promise.resolve(); // mark started before awaits below
    // The source first: a log it cannot read (wal_level, privilege) fails the start, with nothing
    // else started yet.
    if (this.#source) {
      await this.#source
        .start({
          owner: this.options.owner,
          batchSize: this.options.batchSize,
          leaseMs: this.options.leaseMs,
          maxPerKey: this.options.maxPerKey,
          ready: () => this.wake('log'),
          leftInTable: () => {
            this.#leftInTable = true;
            this.wake('table');
          },
          error: (error) => this.emit('relay:error', { phase: 'source', error }),
        })
        .catch((err: unknown) => {
          this.#loop = undefined;
          throw err;
        });
    }
    if (this.options.wakeup === 'notify') {
      this.#listener = new NotifyListener({
        store: this.#store,
        clock: this.#clock,
        logger: this.logger,
        emit: this.emit.bind(this) as typeof this.emit,
        onWake: () => this.wake('notify'),
      });
      const gate = this.#store.wakeGate?.();
      if (gate) {
        this.#gate = new IdleGate({
          gate,
          clock: this.#clock,
          logger: this.logger,
          emit: this.emit.bind(this) as typeof this.emit,
          onArmed: () => this.#wakeup.nudge(),
        });
      }
      await this.#listener.start();
    }
    if (typeof this.#store.sweepAcks === 'function') {
      this.#ackSweeper = new AckSweeper({
        store: this.#store as unknown as AckPort,
        clock: this.#clock,
        emit: this.emit.bind(this) as typeof this.emit,
        logger: this.logger,
        intervalMs: this.options.ackSweepIntervalMs,
        batchSize: this.options.batchSize,
        retentionMs: this.options.ackRetentionMs,
      });
      this.#ackSweeper.start();
    }
    this.#callbacks?.start();
    this.#loop = this.#run();
    this.#externalSignal?.addEventListener('abort', this.#onExternalAbort, { once: true });
    if (this.#externalSignal?.aborted) void this.stop();
    this.logger.info('relay started', {
      event: 'relay_started',
      owner: this.options.owner,
      wakeup: this.options.wakeup,
    });
    this.emit('relay:started', { owner: this.options.owner, wakeup: this.options.wakeup });
  }

  /**
   * Stops claiming, waits for in-flight batches to be published and settled (at most
   * `shutdownTimeoutMs`), then unsubscribes. Idempotent. Batches still in flight at the deadline
   * are abandoned: their publishes are aborted and their leases no longer extended, so another
   * relay takes their messages when the leases run out.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#shutdown();
    return this.#stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  async #shutdown(): Promise<void> {
    this.#externalSignal?.removeEventListener('abort', this.#onExternalAbort);
    this.#presence.markStopping();
    this.#abort.abort();
    // No new batches from the log; those it leased and the loop did not take are released. The
    // source stops after the batches in flight are settled: a table-less batch's settle goes
    // through it, and its position is confirmed then.
    await this.#source?.pause?.();
    // One deadline for everything: the loop's last claim (a database that does not answer must
    // not hold stop() forever) and the batches in flight.
    const finished = new AbortController();
    const drain = async () => {
      await this.#loop?.catch(() => undefined);
      while (this.#batches.size > 0) await Promise.allSettled([...this.#batches].map((b) => b.done));
      finished.abort();
    };
    void drain();
    await this.#clock.sleep(this.options.shutdownTimeoutMs, finished.signal);
    let abandoned = 0;
    if (!finished.signal.aborted) {
      abandoned = this.#batches.size;
      for (const batch of this.#batches) {
        batch.heartbeat?.stop();
        batch.abort.abort();
      }
      this.logger.warn('stop deadline passed with work in flight; leases of abandoned batches will expire', {
        event: 'relay_stop_deadline_passed',
        abandoned,
      });
    }
    await Promise.all([
      this.#source?.stop(),
      this.#listener?.stop(),
      this.#gate?.stop(),
      this.#ackSweeper?.stop(),
      this.#callbacks?.stop(),
    ]);
    this.#stopped = true;
    // The presence row goes before stop() resolves (relay:stopped would remove it only later),
    // but a database that does not answer gets PRESENCE_STOP_WAIT_MS: the row then shows
    // alive=false once its heartbeat is old.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, PRESENCE_STOP_WAIT_MS);
      timer.unref?.();
      void this.#presence.stop().finally(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.logger.info('relay stopped', { event: 'relay_stopped', owner: this.options.owner, abandoned });
    this.emit('relay:stopped', { owner: this.options.owner, abandoned });
    this.#detachObserver();
  }

  /** Wakes the relay to look for work now (also what a NOTIFY does). */
  wake(source: WakeSource = 'notify'): void {
    if (source !== 'log') this.#claimWanted = true;
    this.#wakeup.wake(source);
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    let claimFailures = 0;
    /** When the current run of failed claims began: for `claim_recovered`'s `durationMs`. */
    let claimFailingSince = 0;
    while (!signal.aborted) {
      if (!this.#health.available) {
        // Guarantee 7: nothing is claimed while the transport is down, so nothing spends an
        // attempt and no row stays leased; batches already out come back as released. The
        // source leases nothing either, and gives back what it leased ahead.
        await this.#source?.pause?.();
        const back = await this.#health.waitUntilAvailable(signal);
        this.#source?.resume?.();
        if (back) this.wake('available');
        continue;
      }
      if (this.#batches.size >= this.options.concurrency) {
        await Promise.race([...this.#batches].map((b) => b.done));
        continue;
      }
      const wakesBefore = this.#wakeup.count;
      if (this.#source) {
        // Replication: the log's batches first (commit order), claims only when the table may
        // hold work (retries due, rows the source left, the backstop poll, a settle).
        const ready = this.#source.take();
        if (ready) {
          if (this.listens('relay:batch:claimed')) {
            this.emit('relay:batch:claimed', {
              count: ready.messages.length,
              leaseToken: ready.leaseToken,
              claimMs: null,
            });
          }
          this.#startBatch(ready.messages, ready.leaseToken, ready.claimedAt, ready);
          continue;
        }
        if (!this.#claimWanted) {
          if (signal.aborted) break;
          if (this.#wakeup.count !== wakesBefore) continue;
          await this.#idle(signal, wakesBefore);
          continue;
        }
        this.#claimWanted = false;
      }
      const inFlightBefore = this.#batches.size;
      const claimedAt = this.#clock.now();
      let messages: OutboxMessage[];
      let leaseToken: string;
      try {
        ({ messages, leaseToken } = await this.#store.claim({
          owner: this.options.owner,
          limit: this.options.batchSize,
          leaseMs: this.options.leaseMs,
          maxPerKey: this.options.maxPerKey,
        }));
        if (claimFailures > 0) {
          // One line per change of state: the first failure (warn) and this one, not each retry.
          this.logger.info('claims succeed again', {
            event: 'claim_recovered',
            attempt: claimFailures,
            durationMs: Math.round(this.#clock.now() - claimFailingSince),
          });
        }
        claimFailures = 0;
        if (messages.length === 0 && this.listens('relay:claim:empty')) {
          this.emit('relay:claim:empty', { claimMs: this.#clock.now() - claimedAt });
        }
        this.#emptyPolls = messages.length === 0 ? this.#emptyPolls + 1 : 0;
        if (this.#source) {
          // Claim again at once after a full batch, or while claims find work the table is known
          // to hold (a backlog after an outage, keys held behind a retry: `leftInTable`), up to
          // `concurrency` batches, as the other modes do. Not otherwise: fresh rows are the log's,
          // and a claim chain fed by them would race it. An empty claim: nothing left there.
          if (messages.length === this.options.batchSize || (messages.length > 0 && this.#leftInTable)) {
            this.#claimWanted = true;
          } else if (messages.length === 0) {
            this.#leftInTable = false;
          }
          if (messages.length < this.options.batchSize) this.#source.caughtUp?.();
        }
      } catch (err) {
        this.#claimWanted = true;
        claimFailures++;
        if (claimFailures === 1) claimFailingSince = this.#clock.now();
        this.emit('relay:error', { phase: 'claim', error: err });
        // The first failure of a run at warn, the retries (every ≤ 5 s while the database is
        // down) at debug: `claim_recovered` closes the run.
        this.logger[claimFailures === 1 ? 'warn' : 'debug']('claim failed; retrying', {
          event: 'claim_failed',
          error: err,
          attempt: claimFailures,
        });
        await this.#clock.sleep(Math.min(5000, 100 * 2 ** Math.min(claimFailures, 6)), signal);
        continue;
      }
      if (messages.length > 0 && signal.aborted) {
        // stop() came while this claim was in flight: give its rows back at once (no attempt
        // spent) instead of publishing work claimed after the stop. If that fails, the lease runs out.
        await this.#store
          .settle({
            leaseToken,
            delivered: [],
            released: messages.map((message) => ({ message, error: 'relay stopping' })),
            retry: [],
            dead: [],
          })
          .catch((err: unknown) => this.emit('relay:error', { phase: 'settle', error: err }));
        break;
      }
      if (messages.length > 0) {
        if (this.listens('relay:batch:claimed')) {
          this.emit('relay:batch:claimed', {
            count: messages.length,
            leaseToken,
            claimMs: this.#clock.now() - claimedAt,
          });
        }
        this.#startBatch(messages, leaseToken, claimedAt, undefined);
        // A full batch means there is probably more: claim again at once. Busy: writers need
        // not wake anyone, so the wake gate goes back.
        if (messages.length === this.options.batchSize) {
          this.#gate?.release();
          continue;
        }
        if (this.#gate) {
          // Work found while another batch was out: messages come faster than a batch's round
          // trip, and each settle wakes the loop to claim again, so writers need not either.
          if (inFlightBefore > 0) this.#gate.release();
          // Without the gate no writer wakes the loop: while claims find work, claim again at
          // once (up to `concurrency` batches), as a NOTIFY would have had it do.
          if (!this.#gate.armed) continue;
        }
      }
      if (signal.aborted) break;
      if (this.#wakeup.count !== wakesBefore) continue;
      // About to sleep with nothing in flight, so nothing but a writer will wake it: take the
      // wake gate, so writers do. Taking it may wait for writers that skipped their NOTIFY; the
      // sleep goes on meanwhile, and when the gate is taken the wake-up count moves, so the loop
      // claims once more before sleeping for good: the claim that sees those writers' messages.
      // With a batch in flight its settle wakes the loop (docs/design.md, "Wake-ups").
      if (this.#gate && !this.#gate.armed && this.#batches.size === 0) this.#gate.request();
      await this.#idle(signal, wakesBefore);
    }
  }

  /** Waits for a wake-up, a settled batch, the next due message or the poll interval. */
  async #idle(signal: AbortSignal, seen: number): Promise<void> {
    // Backing off while polls find nothing (idlePollMaxMs): 1×, 2×, 4×… the interval.
    let wait = Math.min(
      this.options.idlePollMaxMs,
      this.options.pollIntervalMs * 2 ** Math.min(Math.max(this.#emptyPolls - 1, 0), 16),
    );
    // With its source down, the relay leans on the table: claims at most a second apart.
    if (this.#source && !this.#source.connected) wait = Math.min(wait, 1000);
    let source: 'poll' | 'due' = 'poll';
    if (this.#batches.size === 0) {
      try {
        const due = await this.#store.nextDueInMs();
        if (due !== null && due < wait) {
          wait = Math.max(1, Math.ceil(due));
          source = 'due';
        }
      } catch {
        // The claim will meet the same problem and report it.
      }
    }
    const timedOut = await this.#wakeup.idle(wait, seen, signal);
    // Woken (a NOTIFY, relay.wake(), a settled batch): poll at the full rate again.
    if (!timedOut) this.#emptyPolls = 0;
    if (timedOut) this.#claimWanted = true;
    if (timedOut && this.listens('relay:wakeup')) this.emit('relay:wakeup', { source });
  }

  /** `from`: the source's batch, told when it is settled (or given up on). */
  #startBatch(
    messages: OutboxMessage[],
    leaseToken: string,
    claimedAt: number,
    from: SourceBatch | undefined,
  ): void {
    const heartbeat =
      from?.settle !== undefined
        ? undefined
        : new LeaseHeartbeat(this.#store, leaseToken, {
            leaseMs: this.options.leaseMs,
            clock: this.#clock,
            claimedAt,
            onError: (err) => this.emit('relay:error', { phase: 'lease', error: err }),
          });
    // The lease is kept from claim until settle: also while settling, so a database blip after
    // the broker confirmed does not let another relay publish the batch again.
    heartbeat?.start();
    const batch: Batch = { abort: new AbortController(), heartbeat, done: Promise.resolve() };
    batch.done = this.#process(messages, leaseToken, batch, from)
      .catch((err: unknown) => {
        // Not expected: #process reports its own failures. A batch must never reject, since the
        // loop races on it.
        this.emit('relay:error', { phase: 'settle', error: err });
        this.logger.error('batch failed unexpectedly; its leases will expire', {
          event: 'batch_failed',
          error: err,
        });
      })
      .finally(() => {
        heartbeat?.stop();
        this.#batches.delete(batch);
        from?.done();
      });
    this.#batches.add(batch);
  }

  async #process(
    messages: OutboxMessage[],
    leaseToken: string,
    batch: Batch,
    from: SourceBatch | undefined,
  ): Promise<void> {
    const started = this.#clock.now();
    const policy = this.options.retry;
    const settlement: Settlement = { leaseToken, delivered: [], released: [], retry: [], dead: [] };

    // Guarantee 1 without a loop: attempts are counted at claim, so a message claimed more times
    // than allowed was never answered for (the relay died or gave up on it each time, e.g. a
    // message that crashes the process). It becomes a dead letter instead of being tried again.
    const toPublish: OutboxMessage[] = [];
    for (const message of messages) {
      if (message.attempts > policy.maxAttempts) {
        const reason =
          `claimed ${message.attempts - 1} times (maxAttempts ${policy.maxAttempts}) without an outcome: ` +
          'each time the relay holding it stopped, crashed or was killed before the transport answered. ' +
          'If this message crashes the relay, fix the cause before replaying it';
        settlement.dead.push({ message, error: reason });
        this.emit('relay:message:dead', {
          message,
          error: new RelayStateError('abandoned_too_often', reason),
        });
        this.logger.warn('message dead-lettered', {
          event: 'message_dead_lettered',
          messageId: message.id,
          topic: message.topic,
          error: reason,
        });
      } else {
        toPublish.push(message);
      }
    }

    const outcomes = toPublish.length > 0 ? await this.#publishAll(toPublish, batch.abort) : [];
    const publishMs = this.#clock.now() - started;
    const stopping = this.#abort.signal.aborted;
    let answered = false;
    // Runs (maxPerKey > 1): the keys whose message failed earlier in this batch, with that
    // message's id. Their later messages wait behind it, as they would have in later batches.
    const blocked = this.options.maxPerKey > 1 ? new Map<string, string>() : undefined;
    for (let i = 0; i < toPublish.length; i++) {
      const message = toPublish[i] as OutboxMessage;
      const outcome = outcomes[i] as PublishOutcome;
      const blocker = blocked !== undefined && message.key !== null ? blocked.get(message.key) : undefined;
      if (blocker !== undefined && outcome.status !== 'permanent') {
        this.#settleBehind(settlement, message, outcome, blocker);
        if (outcome.status !== 'unavailable') answered = true;
        else if (!stopping) this.#health.markUnavailable(outcome.error);
        continue;
      }
      if (outcome.status === 'unavailable') {
        settlement.released.push({ message, error: outcome.error.message });
        if (!stopping) this.#health.markUnavailable(outcome.error);
        if (blocked !== undefined && message.key !== null) blocked.set(message.key, message.id);
        continue;
      }
      answered = true;
      if (outcome.status === 'ok') {
        settlement.delivered.push(message);
      } else if (
        outcome.status === 'permanent' ||
        isPermanentDeliveryError(outcome.error) ||
        message.attempts >= policy.maxAttempts
      ) {
        const reason =
          outcome.status === 'permanent' || isPermanentDeliveryError(outcome.error)
            ? outcome.error.message
            : `gave up after ${message.attempts} attempts: ${outcome.error.message}`;
        settlement.dead.push({ message, error: reason });
        this.emit('relay:message:dead', { message, error: outcome.error });
        this.logger.warn('message dead-lettered', {
          event: 'message_dead_lettered',
          messageId: message.id,
          topic: message.topic,
          error: outcome.error,
        });
      } else {
        const delayMs = retryDelayMs(policy, message.attempts);
        settlement.retry.push({ message, delayMs, error: outcome.error.message });
        this.emit('relay:message:retry', { message, error: outcome.error, delayMs });
        if (blocked !== undefined && message.key !== null) blocked.set(message.key, message.id);
      }
    }
    if (answered) this.#health.markHealthy();
    // A table-less batch is in no table: its source settles it (failures into the table).
    if (from?.settle) await from.settle(settlement);
    else await this.#settle(settlement, batch.heartbeat);
    this.emit('relay:batch:settled', {
      count: messages.length,
      delivered: settlement.delivered.length,
      released: settlement.released.length,
      retried: settlement.retry.length,
      dead: settlement.dead.length,
      publishMs,
      messages: settlement.delivered,
    });
    // Settling may have unblocked the next message of each key: look again. In replication mode a
    // batch that was all delivered unblocks nothing in the table unless the source left rows there.
    const clean = settlement.delivered.length === messages.length;
    if (this.#source && clean && !this.#leftInTable) this.#wakeup.nudge();
    else this.wake('settled');
  }

  /**
   * A message of a run whose key had an earlier message fail in the same batch (guarantee 4:
   * a failing message blocks the later messages of its key). Not its own failure, so it spends
   * no attempt: it is released, due now, and waits behind the failed one, which stays the key's
   * head. If the broker took it anyway (it refused the earlier message and accepted this one,
   * e.g. a RabbitMQ queue with `x-overflow: reject-publish`), it is delivered out of key order:
   * settled as delivered, and said loudly, since only `maxPerKey: 1` avoids that.
   */
  #settleBehind(
    settlement: Settlement,
    message: OutboxMessage,
    outcome: PublishOutcome,
    blocker: string,
  ): void {
    if (outcome.status !== 'ok') {
      settlement.released.push({
        message,
        error: `waiting behind message ${blocker} of key ${JSON.stringify(message.key)}, which failed in the same batch: ${outcome.error.message}`,
      });
      return;
    }
    settlement.delivered.push(message);
    const error = new RelayStateError(
      'key_order_broken',
      `the ${this.#transport.name} broker refused message ${blocker} of key ${JSON.stringify(message.key)} and then ` +
        `accepted the later message ${message.id} of the same key in the same batch, so it was delivered first. ` +
        'Brokers do this when they refuse single messages (a RabbitMQ queue with x-overflow reject-publish); ' +
        'set maxPerKey: 1 (--max-per-key 1) for such queues',
      { details: { key: message.key, refused: blocker, delivered: message.id } },
    );
    this.emit('relay:error', { phase: 'publish', error });
    this.logger.warn('key order broken by the broker', {
      event: 'key_order_broken',
      key: message.key,
      refused: blocker,
      delivered: message.id,
    });
  }

  /**
   * Publishes a batch in which atomic groups may be: plain messages as one call, each group in a
   * broker transaction of its own, in batch order (a key's run may hold both, and the broker
   * must see them in order). Never throws; one outcome per message.
   */
  async #publishAll(messages: OutboxMessage[], abort: AbortController): Promise<PublishOutcome[]> {
    if (!messages.some(isGroup)) return this.#publish(messages, abort);
    const outcomes: PublishOutcome[] = [];
    // As an ordered transport does within one call: once a key's message failed (not for good),
    // its later messages in the batch are not sent (they wait behind it); after an outage,
    // nothing more is.
    const stopped = new Map<string, string>();
    let outage: Error | undefined;
    const note = (message: OutboxMessage, outcome: PublishOutcome) => {
      if (outcome.status === 'unavailable') outage ??= outcome.error;
      else if (outcome.status === 'retry' && message.key !== null) stopped.set(message.key, message.id);
    };
    const held = (message: OutboxMessage): PublishOutcome | undefined => {
      if (outage) return { status: 'unavailable', error: outage };
      const blocker = message.key === null ? undefined : stopped.get(message.key);
      if (blocker === undefined) return undefined;
      return {
        status: 'retry',
        error: new TransportError(
          'key_stopped',
          `message ${message.id} not sent: the earlier message ${blocker} of its key failed in the same batch`,
        ),
      };
    };
    let run: number[] = [];
    const flush = async () => {
      if (run.length === 0) return;
      const indexes = run;
      run = [];
      const send = indexes.filter((i) => {
        const kept = held(messages[i] as OutboxMessage);
        if (kept) outcomes[i] = kept;
        return kept === undefined;
      });
      if (send.length === 0) return;
      const got = await this.#publish(
        send.map((i) => messages[i] as OutboxMessage),
        abort,
      );
      send.forEach((i, j) => {
        outcomes[i] = got[j] as PublishOutcome;
        note(messages[i] as OutboxMessage, outcomes[i]);
      });
    };
    for (let i = 0; i < messages.length; i++) {
      const message = messages[i] as OutboxMessage;
      if (!isGroup(message)) {
        run.push(i);
        continue;
      }
      await flush();
      const kept = held(message);
      const outcome = kept ?? (await this.#publishGroup(message, abort));
      outcomes[i] = outcome;
      if (!kept) note(message, outcome);
    }
    await flush();
    return outcomes;
  }

  /**
   * One atomic group: its members in one broker transaction, committed under the publish
   * deadline. The commit's failure says what happens (see `BrokerTransaction.commit`): an outage
   * (no attempt spent), a dead letter, or a retry of the whole group.
   */
  async #publishGroup(group: OutboxMessage, abort: AbortController): Promise<PublishOutcome> {
    const transport = this.#transport;
    if (!isTransactionalTransport(transport)) {
      return {
        status: 'permanent',
        error: new TransportError(
          'no_transactions',
          `message ${group.id} is an atomic group, and the ${transport.name} transport has no broker transactions, ` +
            'so it cannot deliver the group all or none; run a relay with a transport that has them (RabbitMQ, STOMP) ' +
            'and replay the dead letter',
          { details: { id: group.id, transport: transport.name } },
        ),
      };
    }
    let members: OutboxMessage[];
    try {
      members = decodeGroup(group);
    } catch (err) {
      return { status: 'permanent', error: toError(err) };
    }
    const { publishTimeoutMs } = this.options;
    const timer = new AbortController();
    const onAbort = () => timer.abort();
    abort.signal.addEventListener('abort', onAbort, { once: true });
    const call = transport
      .transaction((tx) => tx.publish(members), { signal: abort.signal })
      .then(
        (): PublishOutcome => ({ status: 'ok' }),
        (err: unknown): PublishOutcome => {
          const error = toError(err);
          if (isPermanentDeliveryError(error)) return { status: 'permanent', error };
          if (isTransportError(error)) return { status: 'unavailable', error };
          return { status: 'retry', error };
        },
      );
    const expired = this.#clock
      .sleep(publishTimeoutMs, timer.signal)
      .then((slept): PublishOutcome | undefined =>
        slept
          ? {
              status: 'unavailable',
              error: new TransportError(
                'publish_timeout',
                `transport ${transport.name} did not commit atomic group ${group.id} (${members.length} messages) within ` +
                  `publishTimeoutMs (${publishTimeoutMs} ms); the group is released without spending an attempt`,
                { details: { publishTimeoutMs, id: group.id } },
              ),
            }
          : undefined,
      );
    const outcome = await Promise.race([call, expired.then((o) => o ?? call)]);
    timer.abort();
    abort.signal.removeEventListener('abort', onAbort);
    if (
      outcome.status === 'unavailable' &&
      outcome.error instanceof TransportError &&
      outcome.error.code === 'publish_timeout'
    ) {
      // Our deadline: stop the call; whatever it did is rolled back by the broker or, if the
      // commit went through, delivered once more later (at least once).
      abort.abort();
      this.emit('relay:error', { phase: 'publish', error: outcome.error });
    }
    return outcome;
  }

  /**
   * Publishes under the publish deadline and checks what the transport returned. Never throws;
   * always one valid outcome per message.
   */
  async #publish(messages: OutboxMessage[], abort: AbortController): Promise<PublishOutcome[]> {
    const { publishTimeoutMs } = this.options;
    const transportName = this.#transport.name;
    let call: Promise<PublishOutcome[]>;
    try {
      call = Promise.resolve(this.#transport.publish(messages, { signal: abort.signal }));
    } catch (err) {
      call = Promise.reject(err);
    }
    const timer = new AbortController();
    const expired = this.#clock.sleep(publishTimeoutMs, timer.signal);
    // stop() abandoning the batch aborts the call too: end the deadline wait then.
    const onAbort = () => timer.abort();
    abort.signal.addEventListener('abort', onAbort, { once: true });
    type Result =
      { kind: 'answer'; outcomes: unknown } | { kind: 'error'; error: unknown } | { kind: 'deadline' };
    const answer: Promise<Result> = call.then(
      (outcomes) => ({ kind: 'answer', outcomes }),
      (error: unknown) => ({ kind: 'error', error }),
    );
    let result = await Promise.race([answer, expired.then((): Result => ({ kind: 'deadline' }))]);
    timer.abort();
    abort.signal.removeEventListener('abort', onAbort);
    if (result.kind === 'deadline' || abort.signal.aborted) {
      abort.abort();
      // Give the transport a moment to hand back what it already knows, then stop waiting.
      if (result.kind === 'deadline') {
        const grace = new AbortController();
        result = await Promise.race([
          answer,
          this.#clock.sleep(ABORT_GRACE_MS, grace.signal).then((): Result => ({ kind: 'deadline' })),
        ]);
        grace.abort();
      }
    }
    const unavailable = (error: Error) =>
      messages.map((): PublishOutcome => ({ status: 'unavailable', error }));
    if (result.kind === 'deadline') {
      const error = new TransportError(
        'publish_timeout',
        `transport ${transportName} did not answer a batch of ${messages.length} within publishTimeoutMs ` +
          `(${publishTimeoutMs} ms); the batch is released without spending attempts and the transport ` +
          'is probed until it answers. Raise publishTimeoutMs if the broker is only slow',
        { details: { publishTimeoutMs, count: messages.length } },
      );
      this.emit('relay:error', { phase: 'publish', error });
      return unavailable(error);
    }
    if (result.kind === 'error') {
      // The port says publish never throws; one that does broke its contract. A TransportError
      // is taken for what it says (the broker is out of reach); anything else is a failure of
      // this batch that spends attempts, so a transport bug cannot stall the relay forever.
      this.emit('relay:error', { phase: 'publish', error: result.error });
      const error = toError(result.error);
      if (isTransportError(error)) return unavailable(error);
      return messages.map((): PublishOutcome => ({ status: 'retry', error }));
    }
    return this.#checkOutcomes(messages, result.outcomes);
  }

  /** A transport that answers with the wrong shape fails its batch loudly, never the relay. */
  #checkOutcomes(messages: OutboxMessage[], outcomes: unknown): PublishOutcome[] {
    const name = this.#transport.name;
    if (!Array.isArray(outcomes) || outcomes.length !== messages.length) {
      const got = Array.isArray(outcomes) ? `${outcomes.length} outcomes` : typeof outcomes;
      const error = new TransportError(
        'bad_outcomes',
        `transport ${name} answered a batch of ${messages.length} messages with ${got}; a transport must ` +
          'return one outcome per message, in order. The batch is retried; fix the transport',
        { details: { transport: name, expected: messages.length } },
      );
      this.emit('relay:error', { phase: 'publish', error });
      return messages.map((): PublishOutcome => ({ status: 'retry', error }));
    }
    return messages.map((message, i): PublishOutcome => {
      const outcome = outcomes[i] as Partial<PublishOutcome> | null | undefined;
      const status = outcome?.status;
      if (status === 'ok') return { status: 'ok' };
      if (
        typeof status === 'string' &&
        OUTCOME_STATUSES.has(status) &&
        (outcome as { error?: unknown }).error instanceof Error
      ) {
        return outcome as PublishOutcome;
      }
      const error = new TransportError(
        'bad_outcomes',
        `transport ${name} answered message ${message.id} with ${JSON.stringify(outcome ?? null)}; expected ` +
          "{ status: 'ok' } or { status: 'retry' | 'permanent' | 'unavailable', error: Error }. Retried; fix the transport",
        { details: { transport: name, messageId: message.id } },
      );
      this.emit('relay:error', { phase: 'publish', error });
      return { status: 'retry', error };
    });
  }

  /**
   * Settles, retrying while the lease holds (the heartbeat keeps extending it): the outcome is
   * known, so losing it only costs duplicates, and retrying every second at most wins the race
   * against other relays' claims as soon as the database is back.
   */
  async #settle(settlement: Settlement, heartbeat: LeaseHeartbeat | undefined): Promise<void> {
    const started = this.#clock.now();
    const giveUpAfter = Math.max(60_000, this.options.leaseMs * 3);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#store.settle(settlement);
        return;
      } catch (err) {
        this.emit('relay:error', { phase: 'settle', error: err });
        const elapsed = this.#clock.now() - started;
        if (this.#stopped || heartbeat?.running !== true || elapsed >= giveUpAfter) {
          this.logger.error('cannot settle a batch; its messages will be redelivered after the lease', {
            event: 'settle_failed',
            error: err,
            attempt,
          });
          return;
        }
        await this.#clock.sleep(Math.min(1000, 50 * 2 ** attempt));
      }
    }
  }
}
