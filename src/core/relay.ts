import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { ConfigError } from './errors/config-error.js';
import { isPermanentDeliveryError } from './errors/permanent-delivery-error.js';
import { silentLogger, type Logger } from './logger.js';
import type { OutboxStore, PublishOutcome, Settlement, Transport, Unsubscribe } from './ports.js';
import {
  resolveRetryPolicy,
  retryDelayMs,
  type ResolvedRetryPolicy,
  type RetryPolicyOptions,
} from './retry-policy.js';
import { TypedEmitter } from './typed-emitter.js';
import type { OutboxMessage } from './types.js';

/** Options of {@link Relay}. */
export interface RelayOptions {
  store: OutboxStore;
  transport: Transport;
  /** Most messages claimed (and published as one pipelined batch) at a time. @default 250 */
  batchSize?: number;
  /**
   * Batches in flight at once: while one batch waits for confirms the next is claimed and
   * published. @default 4
   */
  concurrency?: number;
  /**
   * How long a claim holds its messages, on the database clock. A relay that dies loses them
   * after this long; a live relay extends it while it publishes. @default 10000
   */
  leaseMs?: number;
  /**
   * `notify`: wake at commit of every enqueueing transaction (PostgreSQL LISTEN/NOTIFY) and poll
   * as a backstop. `poll`: poll only. @default 'notify' when the store supports it
   */
  wakeup?: 'notify' | 'poll';
  /** Poll interval, the backstop in `notify` mode. @default 1000 (notify), 250 (poll) */
  pollIntervalMs?: number;
  /** Retry schedule and attempts before dead-lettering. */
  retry?: RetryPolicyOptions;
  /** How long `stop()` waits for in-flight batches before giving up on them. @default 10000 */
  shutdownTimeoutMs?: number;
  /** Name of this relay on leased rows and in logs. @default `${hostname}:${pid}:${random}` */
  owner?: string;
  /** Stops the relay when aborted. */
  signal?: AbortSignal;
  /** Receives structured log lines. @default silent */
  logger?: Logger;
}

export interface ResolvedRelayOptions {
  batchSize: number;
  concurrency: number;
  leaseMs: number;
  wakeup: 'notify' | 'poll';
  pollIntervalMs: number;
  retry: ResolvedRetryPolicy;
  shutdownTimeoutMs: number;
  owner: string;
}

/** Events a relay emits. Listeners that throw are logged and ignored. */
export interface RelayEvents {
  'relay:started': { owner: string; wakeup: 'notify' | 'poll' };
  'relay:stopped': { owner: string; abandoned: number };
  'relay:batch:claimed': { count: number; leaseToken: string };
  'relay:batch:settled': {
    count: number;
    delivered: number;
    retried: number;
    dead: number;
    publishMs: number;
    /** Delivered messages of this batch (references, do not mutate). */
    messages: readonly OutboxMessage[];
  };
  'relay:message:retry': { message: OutboxMessage; error: Error; delayMs: number };
  'relay:message:dead': { message: OutboxMessage; error: Error };
  'relay:wakeup': { source: 'notify' | 'poll' | 'settled' | 'due' };
  'relay:error': { phase: 'claim' | 'publish' | 'settle' | 'lease' | 'listen' | 'start'; error: unknown };
}

const ALLOWED_OPTIONS = new Set([
  'store',
  'transport',
  'batchSize',
  'concurrency',
  'leaseMs',
  'wakeup',
  'pollIntervalMs',
  'retry',
  'shutdownTimeoutMs',
  'owner',
  'signal',
  'logger',
]);

function int(key: string, value: number | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(key, `${key} must be an integer from ${min} to ${max}, got ${String(value)}`, {
      value,
    });
  }
  return value;
}

/** All relay defaults, in one place. */
export function resolveRelayOptions(options: RelayOptions): ResolvedRelayOptions {
  for (const key of Object.keys(options)) {
    if (!ALLOWED_OPTIONS.has(key)) {
      throw new ConfigError(
        key,
        `unknown relay option "${key}"; allowed: ${[...ALLOWED_OPTIONS].join(', ')}`,
      );
    }
  }
  if (!options.store) throw new ConfigError('store', 'a relay needs a store');
  if (!options.transport) throw new ConfigError('transport', 'a relay needs a transport');
  const canNotify = options.store.capabilities.notify && typeof options.store.subscribe === 'function';
  const wakeup = options.wakeup ?? (canNotify ? 'notify' : 'poll');
  if (wakeup !== 'notify' && wakeup !== 'poll') {
    throw new ConfigError('wakeup', `wakeup must be 'notify' or 'poll', got ${JSON.stringify(wakeup)}`);
  }
  if (wakeup === 'notify' && !canNotify) {
    throw new ConfigError('wakeup', `the ${options.store.name} store cannot notify; use wakeup: 'poll'`);
  }
  const leaseMs = int('leaseMs', options.leaseMs, 10_000, 1000, 3_600_000);
  return {
    batchSize: int('batchSize', options.batchSize, 250, 1, 10_000),
    concurrency: int('concurrency', options.concurrency, 4, 1, 64),
    leaseMs,
    wakeup,
    pollIntervalMs: int(
      'pollIntervalMs',
      options.pollIntervalMs,
      wakeup === 'notify' ? 1000 : 250,
      10,
      3_600_000,
    ),
    retry: resolveRetryPolicy(options.retry),
    shutdownTimeoutMs: int('shutdownTimeoutMs', options.shutdownTimeoutMs, 10_000, 0, 3_600_000),
    owner: options.owner ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`,
  };
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * Moves messages from an outbox store to a transport: claims due messages in batches under
 * leases, publishes each batch pipelined, and settles every message only after the transport
 * answered for it — delete on confirm, retry with backoff, or dead-letter.
 *
 * @example
 * ```ts
 * const relay = new Relay({ store, transport });
 * await relay.start();
 * // … on shutdown:
 * await relay.stop();
 * ```
 */
export class Relay extends TypedEmitter<RelayEvents> {
  readonly options: ResolvedRelayOptions;
  readonly #store: OutboxStore;
  readonly #transport: Transport;
  readonly #inFlight = new Set<Promise<void>>();
  #loop: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #abort = new AbortController();
  /** Resolves the current idle wait early (notify, settled batch, stop). */
  #wake: (() => void) | undefined;
  /** Counts wake-ups, so one that arrives during a claim is not lost. */
  #wakeCount = 0;
  #unlisten: Unsubscribe | undefined;
  /** Set when stop() has returned: abandoned batches then settle once, without retrying. */
  #stopped = false;
  #externalSignal: AbortSignal | undefined;
  #onExternalAbort = () => void this.stop();

  constructor(options: RelayOptions) {
    super(options.logger ?? silentLogger);
    this.options = resolveRelayOptions(options);
    this.#store = options.store;
    this.#transport = options.transport;
    this.#externalSignal = options.signal;
  }

  /** True between `start()` and the end of `stop()`. */
  get running(): boolean {
    return this.#loop !== undefined && this.#stopping === undefined;
  }

  /** Number of batches being published right now. */
  get inFlightBatches(): number {
    return this.#inFlight.size;
  }

  /**
   * Checks the schema, connects the transport, subscribes to wake-ups and starts the loop.
   * Idempotent. Throws (and stays stopped) when the store or transport is not usable.
   */
  async start(): Promise<void> {
    if (this.#loop) return;
    if (this.#stopping) throw new Error('relay was stopped; create a new Relay');
    await this.#store.check();
    await this.#transport.start();
    if (this.#loop) return;
    this.#loop = Promise.resolve(); // mark started before awaits below
    if (this.options.wakeup === 'notify') await this.#listen();
    this.#loop = this.#run();
    this.#externalSignal?.addEventListener('abort', this.#onExternalAbort, { once: true });
    if (this.#externalSignal?.aborted) void this.stop();
    this.logger.info('relay started', { owner: this.options.owner, wakeup: this.options.wakeup });
    this.emit('relay:started', { owner: this.options.owner, wakeup: this.options.wakeup });
  }

  /**
   * Stops claiming, waits for in-flight batches to be published and settled (at most
   * `shutdownTimeoutMs`), then unsubscribes. Idempotent. Messages of batches still in flight at
   * the deadline stay leased and are taken by another relay when the lease runs out.
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
    this.#abort.abort();
    this.#wake?.();
    await this.#loop?.catch(() => undefined);
    let abandoned = 0;
    if (this.#inFlight.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        Promise.allSettled([...this.#inFlight]).then(() => false),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(true), this.options.shutdownTimeoutMs))),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        abandoned = this.#inFlight.size;
        this.logger.warn('stop deadline passed with batches in flight; their leases will expire', {
          abandoned,
        });
      }
    }
    await this.#unlisten?.().catch(() => undefined);
    this.#unlisten = undefined;
    this.#stopped = true;
    this.logger.info('relay stopped', { owner: this.options.owner, abandoned });
    this.emit('relay:stopped', { owner: this.options.owner, abandoned });
  }

  /** Wakes the relay to look for work now (also what a NOTIFY does). */
  wake(source: RelayEvents['relay:wakeup']['source'] = 'notify'): void {
    this.#wakeCount++;
    if (this.listens('relay:wakeup')) this.emit('relay:wakeup', { source });
    this.#wake?.();
  }

  async #listen(): Promise<void> {
    const subscribe = this.#store.subscribe?.bind(this.#store);
    if (!subscribe) return;
    let failures = 0;
    const attempt = async (): Promise<void> => {
      if (this.#abort.signal.aborted) return;
      try {
        this.#unlisten = await subscribe(
          () => this.wake('notify'),
          (err) => {
            this.#unlisten = undefined;
            this.emit('relay:error', { phase: 'listen', error: err });
            this.logger.warn('LISTEN connection lost; polling until it is back', { error: String(err) });
            void retry();
          },
        );
        failures = 0;
        // Notifications sent while we were not listening are gone: look for work now.
        this.wake('notify');
      } catch (err) {
        this.emit('relay:error', { phase: 'listen', error: err });
        this.logger.warn('cannot LISTEN; polling until it works', { error: String(err) });
        void retry();
      }
    };
    const retry = async () => {
      failures++;
      await sleep(Math.min(30_000, 250 * 2 ** Math.min(failures, 8)), this.#abort.signal);
      await attempt();
    };
    await attempt();
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    let claimFailures = 0;
    while (!signal.aborted) {
      if (this.#inFlight.size >= this.options.concurrency) {
        await Promise.race(this.#inFlight);
        continue;
      }
      const wakesBefore = this.#wakeCount;
      let messages: OutboxMessage[];
      let leaseToken: string;
      try {
        ({ messages, leaseToken } = await this.#store.claim({
          owner: this.options.owner,
          limit: this.options.batchSize,
          leaseMs: this.options.leaseMs,
        }));
        claimFailures = 0;
      } catch (err) {
        claimFailures++;
        this.emit('relay:error', { phase: 'claim', error: err });
        this.logger.warn('claim failed; retrying', { error: String(err), failures: claimFailures });
        await sleep(Math.min(5000, 100 * 2 ** Math.min(claimFailures, 6)), signal);
        continue;
      }
      if (messages.length > 0) {
        if (this.listens('relay:batch:claimed')) {
          this.emit('relay:batch:claimed', { count: messages.length, leaseToken });
        }
        const batch = this.#process(messages, leaseToken);
        this.#inFlight.add(batch);
        void batch.finally(() => this.#inFlight.delete(batch));
        // A full batch means there is probably more: claim again at once.
        if (messages.length === this.options.batchSize) continue;
      }
      if (signal.aborted) break;
      if (this.#wakeCount !== wakesBefore) continue;
      await this.#idle(signal);
    }
  }

  /** Waits for a wake-up, a settled batch, the next due message or the poll interval. */
  async #idle(signal: AbortSignal): Promise<void> {
    // Counted before any await: a wake-up that arrives while we ask for the next due time must
    // end this wait at once, not at the next poll.
    const seen = this.#wakeCount;
    let wait = this.options.pollIntervalMs;
    let source: 'poll' | 'due' = 'poll';
    if (this.#inFlight.size === 0) {
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
    if (signal.aborted) return;
    const timedOut = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(true), wait);
      this.#wake = () => {
        clearTimeout(t);
        resolve(false);
      };
      if (this.#wakeCount !== seen) this.#wake();
    });
    this.#wake = undefined;
    if (timedOut && this.listens('relay:wakeup')) this.emit('relay:wakeup', { source });
  }

  async #process(messages: OutboxMessage[], leaseToken: string): Promise<void> {
    const started = performance.now();
    // Keep the lease while the broker is slow, so no other relay takes these messages.
    const heartbeat = setInterval(
      () => {
        this.#store.extendLease(leaseToken, this.options.leaseMs).catch((err: unknown) => {
          this.emit('relay:error', { phase: 'lease', error: err });
        });
      },
      Math.max(250, Math.floor(this.options.leaseMs / 3)),
    );
    let outcomes: PublishOutcome[];
    try {
      outcomes = await this.#transport.publish(messages);
      if (outcomes.length !== messages.length) {
        throw new Error(
          `transport ${this.#transport.name} returned ${outcomes.length} outcomes for ${messages.length} messages`,
        );
      }
    } catch (err) {
      this.emit('relay:error', { phase: 'publish', error: err });
      const error = toError(err);
      outcomes = messages.map(() => ({ status: 'retry', error }));
    } finally {
      clearInterval(heartbeat);
    }
    const publishMs = performance.now() - started;

    const settlement: Settlement = { leaseToken, delivered: [], released: [], retry: [], dead: [] };
    const policy = this.options.retry;
    for (let i = 0; i < messages.length; i++) {
      const message = messages[i] as OutboxMessage;
      const outcome = outcomes[i] as PublishOutcome;
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
        this.logger.warn('message dead-lettered', { id: message.id, topic: message.topic, error: reason });
      } else {
        const delayMs = retryDelayMs(policy, message.attempts);
        settlement.retry.push({ message, delayMs, error: outcome.error.message });
        this.emit('relay:message:retry', { message, error: outcome.error, delayMs });
      }
    }
    await this.#settle(settlement);
    this.emit('relay:batch:settled', {
      count: messages.length,
      delivered: settlement.delivered.length,
      retried: settlement.retry.length,
      dead: settlement.dead.length,
      publishMs,
      messages: settlement.delivered,
    });
    // Settling may have unblocked the next message of each key: look again.
    this.wake('settled');
  }

  /**
   * Settles with retries: the outcome is known, so losing it only costs duplicates (the lease
   * expires and the messages are sent again), but retrying a few times avoids even that.
   */
  async #settle(settlement: Settlement): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#store.settle(settlement);
        return;
      } catch (err) {
        this.emit('relay:error', { phase: 'settle', error: err });
        if (attempt >= 8 || this.#stopped) {
          this.logger.error('cannot settle a batch; its messages will be redelivered after the lease', {
            error: String(err),
          });
          return;
        }
        await new Promise((r) => setTimeout(r, Math.min(5000, 50 * 2 ** attempt)));
      }
    }
  }
}
